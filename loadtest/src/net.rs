//! One UDP socket for many simulated participants, with batched I/O.
//!
//! Every participant has its own loopback address (127.a.b.c) but they all share one socket bound to the
//! wildcard address on one port: `IP_PKTINFO` tells, for each received datagram, which participant it was
//! addressed to, and sets, for each sent datagram, the participant's source address. `recvmmsg(2)` reads
//! up to [`BATCH`] datagrams per system call and `sendmmsg(2)` sends up to [`BATCH`] per call, so the tool
//! costs a few system calls per batch rather than two per packet and per participant.
//!
//! The socket is bound to the `lo` device (`SO_BINDTODEVICE`) unless told otherwise, so nothing outside
//! the machine can reach it even though it is bound to 0.0.0.0.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Datagrams per `recvmmsg` / `sendmmsg` call.
pub const BATCH: usize = 64;
/// Largest datagram handled (the server drops larger ones as well).
pub const MAX_DATAGRAM: usize = 1500;

const CMSG_SPACE: usize = 128;

/// A datagram to send from a participant's address.
#[derive(Debug)]
pub struct Outgoing {
    pub source: Ipv4Addr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// The shared socket.
pub struct MultiSocket {
    fd: OwnedFd,
    port: u16,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    sources: Vec<SocketAddr>,
    destinations: Vec<Ipv4Addr>,
    /// Kernel receive time of each datagram of the last batch, on the monotonic clock.
    arrivals: Vec<Instant>,
    /// Datagrams the kernel dropped because this socket's receive queue was full (`SO_RXQ_OVFL`).
    dropped: u32,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_opt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the given size for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

impl MultiSocket {
    /// Bind 0.0.0.0:`port` (0: any free port), nonblocking, with `IP_PKTINFO`. `device`: restrict the
    /// socket to this interface (normally "lo"); `None` only inside a private network namespace.
    pub fn bind(port: u16, device: Option<&str>) -> io::Result<MultiSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        set_opt(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, &one)?;
        // Kernel receive timestamps: latency is measured to the datagram's arrival, not to when this
        // thread got round to reading it.
        set_opt(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one)?;
        // The kernel's count of datagrams dropped on a full receive queue, with every datagram read.
        set_opt(raw, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &one)?;
        let bufsize: libc::c_int = 4 << 20;
        // Larger buffers absorb bursts; FORCE needs CAP_NET_ADMIN, the plain option is capped by rmem_max.
        if set_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bufsize).is_err() {
            set_opt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &bufsize)?;
        }
        if set_opt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &bufsize).is_err() {
            set_opt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &bufsize)?;
        }
        if let Some(dev) = device {
            // SAFETY: the pointer and length describe `dev`'s bytes, alive for the call.
            check(unsafe {
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    dev.as_ptr() as *const libc::c_void,
                    dev.len() as libc::socklen_t,
                )
            })?;
        }
        let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        // SAFETY: `sa` is a valid sockaddr_in of the stated size.
        check(unsafe {
            libc::bind(
                raw,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
        // SAFETY: sockaddr_in is plain data; getsockname fills it.
        let mut bound: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `bound` and `len` are valid for writing.
        check(unsafe {
            libc::getsockname(
                raw,
                &mut bound as *mut libc::sockaddr_in as *mut libc::sockaddr,
                &mut len,
            )
        })?;
        Ok(MultiSocket {
            fd,
            port: u16::from_be(bound.sin_port),
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            lens: vec![0; BATCH],
            sources: vec![SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            destinations: vec![Ipv4Addr::UNSPECIFIED; BATCH],
            arrivals: vec![Instant::now(); BATCH],
            dropped: 0,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wait until the socket is readable or `timeout_ms` passes. Returns whether it is readable.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Read up to [`BATCH`] datagrams without blocking; returns how many (0: nothing waiting).
    pub fn recv_batch(&mut self) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value for these plain-data C structs.
        let mut names: [libc::sockaddr_in; BATCH] = unsafe { zeroed() };
        let mut controls = [[0u8; CMSG_SPACE]; BATCH];
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = self.bufs[i].as_mut_ptr() as *mut libc::c_void;
            iovs[i].iov_len = MAX_DATAGRAM;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG_SPACE as _;
        }
        // SAFETY: every header points into arrays that live until the call returns.
        let rc = unsafe {
            libc::recvmmsg(
                self.raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // A previous send drew an ICMP error (e.g. a peer that left); nothing to read.
                io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        let n = rc as usize;
        // Kernel timestamps are CLOCK_REALTIME; map them to the monotonic clock through a pair of readings.
        let mono_now = Instant::now();
        let real_now = realtime_ns();
        for i in 0..n {
            self.arrivals[i] = mono_now;
            self.lens[i] = msgs[i].msg_len as usize;
            let sa = &names[i];
            self.sources[i] = SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ));
            self.destinations[i] = Ipv4Addr::UNSPECIFIED;
            let h = &msgs[i].msg_hdr;
            // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsgs.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                        let info =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                        self.destinations[i] = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    }
                    if (*c).cmsg_level == libc::SOL_SOCKET
                        && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                    {
                        let ts =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                        let kernel = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
                        let age = real_now - kernel;
                        // A datagram is at most seconds old; anything else is a clock step: ignore it.
                        if (0..10_000_000_000).contains(&age) {
                            self.arrivals[i] = mono_now
                                .checked_sub(Duration::from_nanos(age as u64))
                                .unwrap_or(mono_now);
                        }
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
        }
        Ok(n)
    }

    /// Datagram `i` of the last batch: (source, destination address it was sent to, bytes).
    pub fn datagram(&self, i: usize) -> (SocketAddr, Ipv4Addr, &[u8]) {
        (
            self.sources[i],
            self.destinations[i],
            &self.bufs[i][..self.lens[i]],
        )
    }

    /// Datagrams dropped so far because the receive queue was full (as of the last datagram read).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// When datagram `i` of the last batch reached the socket (kernel timestamp), on the monotonic clock.
    pub fn arrival(&self, i: usize) -> Instant {
        self.arrivals[i]
    }

    /// Send everything in `out` (in batches), each from its own source address. Datagrams the kernel
    /// refuses are dropped and counted in the result, as a network would drop them.
    pub fn send_all(&self, out: &[Outgoing]) -> io::Result<SendReport> {
        let mut report = SendReport::default();
        for chunk in out.chunks(BATCH) {
            let mut start = 0;
            while start < chunk.len() {
                match self.send_chunk(&chunk[start..]) {
                    Ok(n) => {
                        report.sent += n;
                        start += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The send buffer is full: wait briefly for room, as a blocking socket would.
                        let mut pfd = libc::pollfd {
                            fd: self.raw_fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut pfd, 1, 5) };
                        report.would_block += 1;
                        if report.would_block > 100 {
                            report.dropped += chunk.len() - start;
                            break;
                        }
                    }
                    Err(_) => {
                        // The first datagram of the chunk failed (e.g. unreachable): skip it.
                        report.dropped += 1;
                        start += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    fn send_chunk(&self, chunk: &[Outgoing]) -> io::Result<usize> {
        let n = chunk.len().min(BATCH);
        // SAFETY: all-zero is a valid value for these plain-data C structs.
        let mut names: [libc::sockaddr_in; BATCH] = unsafe { zeroed() };
        let mut controls = [[0u8; CMSG_SPACE]; BATCH];
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        // SAFETY: pure arithmetic on a constant.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        for (i, o) in chunk.iter().take(n).enumerate() {
            let SocketAddr::V4(dst) = o.destination else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the load tester speaks IPv4 loopback only",
                ));
            };
            names[i] = sockaddr_in(dst);
            iovs[i].iov_base = o.contents.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = o.contents.len();
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = space as _;
            // SAFETY: the control buffer is CMSG_SPACE bytes (≤ CMSG_SPACE const), enough for one
            // in_pktinfo cmsg; CMSG_FIRSTHDR of a buffer that size is non-null.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let mut info: libc::in_pktinfo = zeroed();
                info.ipi_spec_dst.s_addr = u32::from(o.source).to_be();
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in_pktinfo, info);
            }
        }
        // SAFETY: the first n headers point into arrays (and `chunk`'s buffers) alive for the call.
        let rc = unsafe { libc::sendmmsg(self.raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

fn realtime_ns() -> i128 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// What a [`MultiSocket::send_all`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SendReport {
    pub sent: usize,
    pub dropped: usize,
    pub would_block: usize,
}

/// The loopback address of participant `index` (0-based): 127.77.0.1, 127.77.0.2, ... (65,534 of them).
pub fn participant_ip(index: usize) -> Ipv4Addr {
    let n = index as u32 + 1;
    Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xff) as u8)
}

/// The participant index of a loopback address made by [`participant_ip`].
pub fn participant_index(ip: Ipv4Addr) -> Option<usize> {
    let o = ip.octets();
    if o[0] != 127 || o[1] != 77 {
        return None;
    }
    let n = (u32::from(o[2]) << 8) | u32::from(o[3]);
    (n >= 1).then(|| n as usize - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0usize, 1, 254, 255, 256, 1000, 65_000] {
            assert_eq!(participant_index(participant_ip(i)), Some(i));
        }
        assert_eq!(participant_index(Ipv4Addr::new(127, 0, 0, 1)), None);
    }

    #[test]
    fn one_socket_sends_from_and_receives_for_many_addresses() {
        let a = MultiSocket::bind(0, Some("lo")).expect("bind a");
        let mut b = MultiSocket::bind(0, Some("lo")).expect("bind b");
        let out: Vec<Outgoing> = (0..100)
            .map(|i| Outgoing {
                source: participant_ip(i),
                destination: SocketAddr::from((participant_ip(1000 + i), b.port())),
                contents: vec![i as u8; 10 + i],
            })
            .collect();
        let r = a.send_all(&out).expect("send");
        assert_eq!(r.sent, 100);
        let mut seen = 0;
        while seen < 100 {
            assert!(b.wait_readable(1000).expect("poll"), "datagrams arrive");
            let n = b.recv_batch().expect("recv");
            let read_at = Instant::now();
            for k in 0..n {
                assert!(
                    b.arrival(k) <= read_at,
                    "a datagram arrives before it is read"
                );
                let (src, dst, data) = b.datagram(k);
                let i = participant_index(dst).expect("a participant address") - 1000;
                assert_eq!(src, SocketAddr::from((participant_ip(i), a.port())));
                assert_eq!(data, &vec![i as u8; 10 + i][..]);
                seen += 1;
            }
        }
    }
}
