//! One UDP address served by two sockets: one receives everything sent to it, the other only sends.
//!
//! Why: a socket a process waits on through epoll carries the epoll entry on its wait queue, and the
//! kernel walks that queue for every datagram the socket sent once the datagram is freed (`sock_wfree`,
//! the write-space callback), even when the entry asks only for readability. A media worker sends tens to
//! hundreds of datagrams per one it reads, so that walk is paid per datagram sent. A sibling socket on the
//! same address that nobody waits on skips it: measured with 120-byte datagrams to 200 loopback receivers
//! in batches of 50, 3.26–3.37 µs of CPU per datagram from the registered socket against 3.08–3.15 µs
//! from its sibling (six interleaved pairs; `scripts/sibling-send.c`; docs/loadtest.md, "2026-12-04
//! (thirteenth session)").
//!
//! How: both sockets are bound with `SO_REUSEPORT`, the receiver first, and a one-instruction classic BPF
//! program on the group (`SO_ATTACH_REUSEPORT_CBPF`) picks the group's first socket for every datagram,
//! so the sender never receives. `SO_REUSEPORT` would let another process of the same user bind the
//! address too, so the address is first bound exclusively: a port someone else holds fails as a plain
//! bind does. A kernel that refuses any step gets one plain socket, as before.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::check;

/// A bound, non-blocking receiving socket and, where the kernel allows it, a sending sibling on its address.
#[derive(Debug)]
pub struct SocketPair {
    /// Receives every datagram sent to the address.
    pub receiver: UdpSocket,
    /// Sends from the address and receives nothing; `None` when the kernel refused the pair.
    pub sender: Option<UdpSocket>,
}

/// Bind `addr` (port 0: any free port) exclusively first, so a port in use fails with the plain bind's
/// error; then serve it with a receiver and a sending sibling ([`SocketPair`]).
pub fn bind_pair(addr: SocketAddr) -> io::Result<SocketPair> {
    let bound = UdpSocket::bind(addr)?.local_addr()?;
    match reuseport_pair(bound) {
        Ok((receiver, sender)) => Ok(SocketPair {
            receiver,
            sender: Some(sender),
        }),
        Err(_) => {
            let receiver = UdpSocket::bind(bound)?;
            receiver.set_nonblocking(true)?;
            Ok(SocketPair {
                receiver,
                sender: None,
            })
        }
    }
}

fn reuseport_pair(addr: SocketAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    let receiver = reuseport_socket(addr)?;
    // Attached before the sender joins, so no datagram is ever hashed to it.
    steer_to_first(receiver.as_fd())?;
    let sender = reuseport_socket(addr)?;
    Ok((receiver, sender))
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `SO_ATTACH_REUSEPORT_CBPF` (`asm-generic/socket.h`; the same on every architecture the server runs on).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Every datagram for the reuseport group of `fd` goes to the group's first socket.
fn steer_to_first(fd: BorrowedFd<'_>) -> io::Result<()> {
    // `return 0`: the index of the socket in the group, which is the order of binding.
    let mut program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fd` is an open descriptor; `fprog` points at `program`, which outlives the call (the kernel
    // copies the program), and the size passed is the struct's.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive_all(socket: &UdpSocket) -> usize {
        let mut buf = [0u8; 64];
        let mut n = 0;
        while socket.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn the_receiver_gets_every_datagram_and_the_sender_sends_from_the_same_address() {
        let pair = bind_pair("127.0.0.1:0".parse().expect("an address")).expect("a pair binds");
        let sender = pair.sender.as_ref().expect("this kernel allows the pair");
        let addr = pair.receiver.local_addr().expect("bound");
        assert_eq!(sender.local_addr().expect("bound"), addr);
        // Datagrams from many source ports: a hash over the group would send some to the sender.
        let peers: Vec<UdpSocket> = (0..32)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for (i, peer) in peers.iter().enumerate() {
            peer.send_to(&[i as u8; 20], addr).expect("send");
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(receive_all(&pair.receiver), peers.len());
        sender.set_nonblocking(true).expect("nonblocking");
        assert_eq!(receive_all(sender), 0, "the sender received");
        // What the sibling sends comes from the pair's address.
        let peer = &peers[0];
        UdpSocket::send_to(sender, b"hello", peer.local_addr().expect("bound")).expect("send");
        peer.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).expect("the reply arrives");
        assert_eq!((&buf[..n], from), (&b"hello"[..], addr));
    }

    #[test]
    fn an_address_in_use_fails_as_a_plain_bind_does() {
        let pair = bind_pair("127.0.0.1:0".parse().expect("an address")).expect("a pair binds");
        let addr = pair.receiver.local_addr().expect("bound");
        let again = bind_pair(addr).expect_err("a second pair on the same address");
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
        let plain = UdpSocket::bind(addr).expect_err("a plain socket on the pair's address");
        assert_eq!(plain.kind(), io::ErrorKind::AddrInUse);
        // And a port a plain socket holds is refused to a pair.
        let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let err = bind_pair(taken.local_addr().expect("bound")).expect_err("a taken port");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn ipv6_pairs_work_too() {
        let Ok(pair) = bind_pair("[::1]:0".parse().expect("an address")) else {
            return; // no IPv6 loopback on this host
        };
        let addr = pair.receiver.local_addr().expect("bound");
        let peer = UdpSocket::bind("[::1]:0").expect("bind");
        for _ in 0..8 {
            peer.send_to(b"x", addr).expect("send");
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(receive_all(&pair.receiver), 8);
        if let Some(sender) = &pair.sender {
            assert_eq!(receive_all(sender), 0);
        }
    }
}
