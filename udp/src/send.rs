//! Sending: `sendmmsg(2)` of up to a batch of datagrams, each to its own destination.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::addr::{mmsghdr, to_sockaddr};
use crate::BATCH;

/// Control bytes for one `IP_PKTINFO` message.
// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const PKTINFO_SPACE: usize =
    unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;

/// A control buffer, aligned for the `cmsghdr` written into it.
#[repr(C, align(8))]
struct Control([u8; PKTINFO_SPACE]);

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Send from this local address (`IP_PKTINFO`) rather than the socket's: one socket bound to the
    /// wildcard address speaks for many local addresses. IPv4 destinations only.
    pub source: Option<Ipv4Addr>,
    pub destination: SocketAddr,
    pub contents: &'a [u8],
}

/// What to do when the kernel's send buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Count the datagram as failed and go on: realtime audio is not retried (the server).
    Skip,
    /// Wait up to `each` for room and retry, as a blocking socket would; after `attempts` waits in one
    /// [`send_all`], the rest of a refused batch fails (the load tester, which must not stall).
    Wait { each: Duration, attempts: usize },
}

/// What a [`send_all`] achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub sent: usize,
    /// Datagrams the kernel refused (full buffer, unreachable destination) or that could not be sent
    /// (an IPv6 destination with a chosen source); they are not retried.
    pub failed: usize,
    /// Times the send buffer was full.
    pub would_block: usize,
}

/// Send `packet(item)` for every item of `batch` on the non-blocking UDP `socket`, in as few system calls
/// as the batch size allows.
pub fn send_all<'a, T>(
    socket: impl AsFd,
    batch: &'a [T],
    packet: impl Fn(&'a T) -> Packet<'a>,
    when_full: WhenFull,
) -> SendOutcome {
    let fd = socket.as_fd();
    let mut outcome = SendOutcome::default();
    let mut rest = batch;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(BATCH)];
        let skipped = match send_chunk(fd, window, &packet) {
            Ok(n) if n > 0 => {
                outcome.sent += n;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                outcome.would_block += 1;
                match when_full {
                    WhenFull::Skip => {
                        outcome.failed += 1;
                        1
                    }
                    WhenFull::Wait { each, attempts } => {
                        if outcome.would_block > attempts {
                            outcome.failed += window.len();
                            window.len()
                        } else {
                            crate::wait_writable(fd, each);
                            0
                        }
                    }
                }
            }
            // The first datagram of the window failed (e.g. unreachable): skip it, carry on.
            Ok(_) | Err(_) => {
                outcome.failed += 1;
                1
            }
        };
        rest = &rest[skipped..];
    }
    outcome
}

/// One `sendmmsg` of `window` (at most [`BATCH`] items); how many the kernel took.
fn send_chunk<'a, T>(
    fd: BorrowedFd<'_>,
    window: &'a [T],
    packet: &impl Fn(&'a T) -> Packet<'a>,
) -> io::Result<usize> {
    let mut names: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
        [const { MaybeUninit::uninit() }; BATCH];
    let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut controls: [MaybeUninit<Control>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut count = 0;
    for (i, item) in window.iter().enumerate() {
        let p = packet(item);
        if p.source.is_some() && !p.destination.is_ipv4() {
            // Stop the window before it; alone, it fails.
            if i == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a chosen source address needs an IPv4 destination",
                ));
            }
            break;
        }
        let (storage, len) = to_sockaddr(&p.destination);
        let name = names[i].write(storage);
        let iov = iovecs[i].write(libc::iovec {
            iov_base: p.contents.as_ptr().cast_mut().cast(),
            iov_len: p.contents.len(),
        });
        let mut msg = mmsghdr(name, len, iov);
        if let Some(source) = p.source {
            let control = controls[i].write(Control([0; PKTINFO_SPACE]));
            msg.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = PKTINFO_SPACE as _;
            // SAFETY: the control buffer is aligned and CMSG_SPACE(in_pktinfo) bytes long, so
            // CMSG_FIRSTHDR of the header that points at it is non-null and has room for one cmsghdr
            // followed by one in_pktinfo, written unaligned.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(source.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .write_unaligned(info);
            }
        }
        msgs[i].write(msg);
        count += 1;
    }
    // SAFETY: the first `count` headers are initialised above and point at initialised addresses,
    // iovecs and control buffers of this frame and at the contents borrowed from `window`, all alive
    // for the call; the kernel only reads them (and writes msg_len).
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr().cast(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enable, Ancillary, RecvBatch};
    use std::net::UdpSocket;

    fn plain(t: &(SocketAddr, Vec<u8>)) -> Packet<'_> {
        Packet {
            source: None,
            destination: t.0,
            contents: &t.1,
        }
    }

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let batch: Vec<(SocketAddr, Vec<u8>)> = (0..150)
            .map(|i| {
                (
                    rx[i % 3].local_addr().expect("bound"),
                    vec![i as u8; 10 + i],
                )
            })
            .collect();
        let out = send_all(&tx, &batch, plain, WhenFull::Skip);
        assert_eq!(
            out,
            SendOutcome {
                sent: 150,
                failed: 0,
                would_block: 0,
            }
        );
        let mut buf = [0u8; 256];
        for i in 0..150 {
            let (n, _) = rx[i % 3].recv_from(&mut buf).expect("recv");
            assert_eq!(&buf[..n], &batch[i].1[..]);
        }
    }

    #[test]
    fn ipv6_destinations_work() {
        let Ok(tx) = UdpSocket::bind("[::1]:0") else {
            return;
        }; // no IPv6 loopback here
        let rx = UdpSocket::bind("[::1]:0").expect("bind");
        let batch = vec![(rx.local_addr().expect("bound"), b"hello".to_vec())];
        assert_eq!(send_all(&tx, &batch, plain, WhenFull::Skip).sent, 1);
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf).expect("recv"), 5);
    }

    #[test]
    fn one_socket_sends_from_many_addresses() {
        let tx = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let rx = UdpSocket::bind("0.0.0.0:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        enable(&rx, Ancillary::DestinationAddress).expect("option");
        let port = |s: &UdpSocket| s.local_addr().expect("bound").port();
        let addr = |i: u8| Ipv4Addr::new(127, 66, 0, i);
        let batch: Vec<(u8, SocketAddr)> = (1..=100)
            .map(|i| (i, SocketAddr::from((addr(i), port(&rx)))))
            .collect();
        let contents: Vec<[u8; 1]> = (1..=100).map(|i| [i]).collect();
        let out = send_all(
            &tx,
            &batch,
            |(i, to)| Packet {
                source: Some(addr(*i)),
                destination: *to,
                contents: &contents[usize::from(*i) - 1],
            },
            WhenFull::Skip,
        );
        assert_eq!(out.sent, 100);
        let mut recv = RecvBatch::new(1500);
        let mut seen = 0;
        while seen < 100 {
            crate::wait_readable([rx.as_fd()], Duration::from_secs(1)).expect("poll");
            recv.recv(&rx).expect("recv");
            for d in recv.datagrams() {
                let i = d.contents[0];
                assert_eq!(d.source, SocketAddr::from((addr(i), port(&tx))));
                assert_eq!(d.destination, Some(addr(i).into()));
                seen += 1;
            }
        }
    }

    #[test]
    fn a_chosen_source_with_an_ipv6_destination_fails_alone() {
        let tx = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let v4 = rx.local_addr().expect("bound");
        let v6: SocketAddr = "[::1]:9".parse().expect("an address");
        let batch = [v4, v6, v4];
        let out = send_all(
            &tx,
            &batch,
            |to| Packet {
                source: Some(Ipv4Addr::LOCALHOST),
                destination: *to,
                contents: b"x",
            },
            WhenFull::Skip,
        );
        assert_eq!((out.sent, out.failed), (2, 1));
    }
}
