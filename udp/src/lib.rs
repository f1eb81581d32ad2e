//! Batched UDP I/O, written once for the server's media workers and the load tester.
//!
//! `recvmmsg(2)` reads up to [`BATCH`] datagrams per system call, with each one's source address and,
//! when the socket asks for them, its destination address (`IP_PKTINFO`), its kernel receive time
//! (`SO_TIMESTAMPNS`) and the kernel's count of datagrams dropped on a full receive queue (`SO_RXQ_OVFL`).
//! `sendmmsg(2)` sends up to [`BATCH`] datagrams per system call, each to its own destination and
//! optionally from its own source address. A forwarded packet fans out to every subscriber, so one batch
//! of inputs costs a few system calls rather than one per datagram.
//!
//! Why not quinn-udp: its `send` is one `sendmsg` per destination (GSO batches only equal-sized datagrams
//! to one destination), while the server's output is one datagram to each of many destinations; and it
//! reports neither kernel receive times nor the drop counter the load tester shows. socket2 creates and
//! binds sockets; the batched calls and their control messages are here.
//!
//! Linux only, like the rest of the media path.

// The one place of the workspace where `unsafe` is allowed: recvmmsg/sendmmsg, their control messages
// and socket options have no safe wrapper that batches across destinations. Every block states why it
// is sound.
#![allow(unsafe_code)]

mod addr;
mod pair;
mod recv;
mod send;

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

pub use pair::{bind_pair, SocketPair};
pub use recv::{Datagram, RecvBatch};
pub use send::{send_all, Packet, SendOutcome, WhenFull};

/// Datagrams per system call.
pub const BATCH: usize = 64;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor (borrowed); the value is a c_int of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn get_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open descriptor; `value` and `len` are valid for writes of their sizes.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Ask for `bytes` of kernel receive and send buffer on `socket` and return what the kernel granted
/// (receive, send). `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` exceed `net.core.rmem_max`/`wmem_max` when the process
/// may (root or CAP_NET_ADMIN); otherwise the plain options give what the limits allow. A worker that fans
/// one packet out to hundreds of subscribers must not lose incoming packets while it sends.
pub fn set_buffer_sizes(socket: impl AsFd, bytes: usize) -> (usize, usize) {
    let fd = socket.as_fd();
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(fd, libc::SOL_SOCKET, force, value).is_err() {
            // Without the privilege the plain option is capped by the sysctl limit; its failure leaves
            // the default, which the returned size reports.
            let _ = set_int(fd, libc::SOL_SOCKET, plain, value);
        }
    }
    let granted = |option| {
        get_int(fd, libc::SOL_SOCKET, option)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0)
    };
    (granted(libc::SO_RCVBUF), granted(libc::SO_SNDBUF))
}

/// Send every datagram of `socket` with the don't-fragment bit and without path-MTU discovery
/// (`IP_PMTUDISC_PROBE`, and its IPv6 counterpart on an IPv6 socket). A datagram that may be fragmented
/// needs a fresh IPv4 identification, which the kernel draws from a shared, hashed counter per packet
/// (`__ip_select_ident`, ≈ 2.5 % of a forwarding worker's CPU, issue 15); with DF set it writes 0 (RFC 6864).
/// Media datagrams are far below any path MTU (str0m and the DTLS handshake keep under 1,200 bytes), and
/// browsers send theirs with DF as well.
pub fn set_dont_fragment(socket: impl AsFd) -> io::Result<()> {
    let fd = socket.as_fd();
    let ipv4 = set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    // An IPv6 socket (dual-stack included) takes the IPv6 option; an IPv4 one refuses it.
    let ipv6 = set_int(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        libc::IPV6_PMTUDISC_PROBE,
    );
    ipv4.or(ipv6)
}

/// Ask for `bytes` of receive buffer with `SO_RCVBUFFORCE` only (root or CAP_NET_ADMIN); without the
/// privilege the error is returned and the buffer keeps its default.
pub fn force_receive_buffer(socket: impl AsFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(
        socket.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        value,
    )
}

/// What [`RecvBatch::recv`] reports beside each datagram, once the socket asks the kernel for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancillary {
    /// The address each datagram was sent to (`IP_PKTINFO`): one socket bound to the wildcard address
    /// serves many local addresses. Sending from a chosen address ([`Packet::source`]) needs no option.
    DestinationAddress,
    /// The kernel's receive time of each datagram (`SO_TIMESTAMPNS`), so latency is measured to the
    /// datagram's arrival rather than to when the thread got round to reading it.
    KernelTimestamp,
    /// The kernel's count of datagrams dropped because this socket's receive queue was full
    /// (`SO_RXQ_OVFL`), carried with every datagram read.
    DropCounter,
}

/// Make the kernel report `what` with every datagram [`RecvBatch::recv`] reads from `socket`.
pub fn enable(socket: impl AsFd, what: Ancillary) -> io::Result<()> {
    let (level, name) = match what {
        Ancillary::DestinationAddress => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        Ancillary::KernelTimestamp => (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
        Ancillary::DropCounter => (libc::SOL_SOCKET, libc::SO_RXQ_OVFL),
    };
    set_int(socket.as_fd(), level, name, 1)
}

/// A non-blocking IPv4 UDP socket bound to `addr`; with `device` (e.g. "lo") it is restricted to that
/// interface (`SO_BINDTODEVICE`, set before the bind so nothing from elsewhere is ever queued).
pub fn bind_ipv4(addr: SocketAddrV4, device: Option<&str>) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Wait until one of `fds` is readable or `timeout` passes; returns which are readable (all `false` on
/// a timeout or a signal).
pub fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Duration,
) -> io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    if poll(&mut polled, timeout)? {
        Ok(polled.map(|p| p.revents & libc::POLLIN != 0))
    } else {
        Ok([false; N])
    }
}

/// Wait until `fd` has room to send or `timeout` passes.
fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) {
    let mut polled = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    }];
    // Whether room came or not, the caller retries the send and counts what fails.
    let _ = poll(&mut polled, timeout);
}

/// `ppoll(2)`; `Ok(false)` on a timeout or a signal.
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<bool> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds the kernel may write; `ts` is a valid
    // timespec; a null signal mask leaves the mask unchanged.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn buffers_grow_at_least_to_the_default_limit() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (rcv, snd) = set_buffer_sizes(&socket, 4 << 20);
        // Root gets the full request (doubled by the kernel for bookkeeping); others get rmem_max.
        assert!(rcv >= 200_000 && snd >= 200_000, "{rcv} {snd}");
    }

    #[test]
    fn datagrams_leave_with_the_dont_fragment_bit_and_still_arrive() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        set_dont_fragment(&tx).expect("IPv4 takes IP_MTU_DISCOVER");
        let mode = get_int(tx.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).expect("get");
        assert_eq!(mode, libc::IP_PMTUDISC_PROBE);
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"media", rx.local_addr().expect("bound"))
            .expect("send");
        let mut buf = [0u8; 16];
        rx.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let (n, _) = rx.recv_from(&mut buf).expect("the datagram arrives");
        assert_eq!(&buf[..n], b"media");
    }

    #[test]
    fn waiting_sees_a_readable_socket_and_times_out_on_a_quiet_one() {
        let quiet = bind_ipv4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), Some("lo")).expect("bind");
        let busy = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"x", busy.local_addr().expect("bound"))
            .expect("send");
        let ready =
            wait_readable([quiet.as_fd(), busy.as_fd()], Duration::from_secs(1)).expect("poll");
        assert_eq!(ready, [false, true]);
        let ready = wait_readable([quiet.as_fd()], Duration::from_millis(5)).expect("poll");
        assert_eq!(ready, [false]);
    }
}
