//! Receiving: `recvmmsg(2)` into buffers allocated once, with each datagram's ancillary data.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::addr::{from_sockaddr, mmsghdr};
use crate::BATCH;

/// Control bytes per datagram: room for a packet-info, a timestamp and a drop-counter message (88 bytes).
const CONTROL: usize = 128;

/// A control buffer, aligned for the `cmsghdr`s the kernel writes into it.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL]);

/// A kernel timestamp more than this old is a clock step, not a datagram's age.
const MAX_AGE_NS: i128 = 10_000_000_000;

/// One datagram of the last [`RecvBatch::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub source: SocketAddr,
    /// The address it was sent to, when the socket asked ([`crate::Ancillary::DestinationAddress`]).
    pub destination: Option<IpAddr>,
    /// When it reached the socket on the monotonic clock, when the socket asked
    /// ([`crate::Ancillary::KernelTimestamp`]).
    pub arrival: Option<Instant>,
    pub contents: &'a [u8],
}

/// Buffers for receiving up to [`BATCH`] datagrams per system call, allocated once per socket user.
pub struct RecvBatch {
    buffer_bytes: usize,
    /// [`BATCH`] buffers of `buffer_bytes` each, end to end.
    buffers: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    lengths: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    destinations: [Option<IpAddr>; BATCH],
    arrivals: [Option<Instant>; BATCH],
    kernel_drops: u32,
    count: usize,
}

impl RecvBatch {
    /// Buffers of `buffer_bytes` per datagram: a longer datagram is cut to that size.
    pub fn new(buffer_bytes: usize) -> RecvBatch {
        RecvBatch {
            buffer_bytes,
            buffers: vec![0; BATCH * buffer_bytes],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (unspecified) value.
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            controls: vec![Control([0; CONTROL]); BATCH],
            lengths: [0; BATCH],
            sources: [None; BATCH],
            destinations: [None; BATCH],
            arrivals: [None; BATCH],
            kernel_drops: 0,
            count: 0,
        }
    }

    /// Read whatever is queued on the non-blocking `socket`, up to a batch. `Ok(0)`: nothing queued (or
    /// a signal came first).
    pub fn recv(&mut self, socket: impl AsFd) -> io::Result<usize> {
        self.count = 0;
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (i, buffer) in self.buffers.chunks_exact_mut(self.buffer_bytes).enumerate() {
            iovecs[i].write(libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            });
            let mut msg = mmsghdr(&mut self.names[i], name_len, iovecs[i].as_mut_ptr());
            msg.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = CONTROL as _;
            msgs[i].write(msg);
        }
        // SAFETY: all BATCH headers are initialised above and point at buffers, addresses and control
        // buffers owned by `self` (not otherwise borrowed until the call returns) and at `iovecs`; the
        // kernel writes at most iov_len, msg_namelen and msg_controllen bytes to them.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_fd().as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        // Read once per batch, and only when a datagram carries a kernel timestamp.
        let mut clocks = None;
        for (i, msg) in msgs[..n].iter().enumerate() {
            // SAFETY: every header was initialised before the call; recvmmsg filled the first n.
            let msg = unsafe { msg.assume_init_ref() };
            self.lengths[i] = (msg.msg_len as usize).min(self.buffer_bytes);
            self.sources[i] = from_sockaddr(&self.names[i]);
            self.destinations[i] = None;
            self.arrivals[i] = None;
            // SAFETY: the kernel wrote msg_controllen bytes of well-formed control messages into the
            // aligned buffer msg_control points at; CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length and
            // return null at its end; each payload is read unaligned at the size its type defines.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                while !c.is_null() {
                    let data = libc::CMSG_DATA(c);
                    match ((*c).cmsg_level, (*c).cmsg_type) {
                        (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                            let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                            self.destinations[i] =
                                Some(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()).into());
                        }
                        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                            let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                            self.destinations[i] =
                                Some(Ipv6Addr::from(info.ipi6_addr.s6_addr).into());
                        }
                        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                            let ts = data.cast::<libc::timespec>().read_unaligned();
                            let kernel_ns =
                                i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
                            let (mono_now, real_now) =
                                *clocks.get_or_insert_with(|| (Instant::now(), realtime_ns()));
                            self.arrivals[i] = Some(arrival(mono_now, real_now - kernel_ns));
                        }
                        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                            self.kernel_drops = data.cast::<u32>().read_unaligned();
                        }
                        _ => {}
                    }
                    c = libc::CMSG_NXTHDR(&msg.msg_hdr, c);
                }
            }
        }
        self.count = n;
        Ok(n)
    }

    /// How many datagrams the last [`recv`](Self::recv) read.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last [`recv`](Self::recv); `None` past its end or for a source address of
    /// another family than IPv4 and IPv6.
    pub fn datagram(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.count {
            return None;
        }
        let start = i * self.buffer_bytes;
        Some(Datagram {
            source: self.sources[i]?,
            destination: self.destinations[i],
            arrival: self.arrivals[i],
            contents: &self.buffers[start..start + self.lengths[i]],
        })
    }

    /// The datagrams of the last [`recv`](Self::recv) (unknown address families skipped).
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.count).filter_map(|i| self.datagram(i))
    }

    /// The kernel's count of datagrams dropped on this socket's full receive queue, as of the last
    /// datagram that carried it ([`crate::Ancillary::DropCounter`]); 0 until then.
    pub fn kernel_drops(&self) -> u32 {
        self.kernel_drops
    }
}

/// The monotonic time of an arrival `age_ns` before `mono_now`: kernel timestamps are CLOCK_REALTIME,
/// mapped through a pair of readings. An age outside a few seconds is a clock step: the read time then.
fn arrival(mono_now: Instant, age_ns: i128) -> Instant {
    if (0..MAX_AGE_NS).contains(&age_ns) {
        mono_now
            .checked_sub(Duration::from_nanos(age_ns as u64))
            .unwrap_or(mono_now)
    } else {
        mono_now
    }
}

fn realtime_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enable, Ancillary};
    use std::net::UdpSocket;

    #[test]
    fn a_receive_batch_returns_datagrams_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut batch = RecvBatch::new(2048);
        assert_eq!(batch.recv(&rx).expect("recv"), 0);
        for i in 0..100u8 {
            tx.send_to(&vec![i; 1 + i as usize], rx.local_addr().expect("bound"))
                .expect("send");
        }
        let big = vec![7u8; 1800];
        tx.send_to(&big, rx.local_addr().expect("bound"))
            .expect("send");
        let mut seen = Vec::new();
        loop {
            let n = batch.recv(&rx).expect("recv");
            if n == 0 {
                break;
            }
            assert!(n <= BATCH);
            for d in batch.datagrams() {
                assert_eq!(d.source, tx.local_addr().expect("bound"));
                assert_eq!(d.destination, None);
                assert_eq!(d.arrival, None);
                seen.push(d.contents.to_vec());
            }
        }
        assert_eq!(seen.len(), 101);
        for (i, d) in seen[..100].iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
        }
        assert_eq!(seen[100], big);
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_is_cut() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(&[9; 300], rx.local_addr().expect("bound"))
            .expect("send");
        let mut batch = RecvBatch::new(100);
        while batch.recv(&rx).expect("recv") == 0 {}
        assert_eq!(batch.datagram(0).expect("one").contents, &[9; 100][..]);
        assert_eq!(batch.datagram(1), None);
    }

    #[test]
    fn ancillary_data_gives_destination_arrival_and_drops() {
        let rx = UdpSocket::bind("0.0.0.0:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        for what in [
            Ancillary::DestinationAddress,
            Ancillary::KernelTimestamp,
            Ancillary::DropCounter,
        ] {
            enable(&rx, what).expect("option");
        }
        // A small queue: forced where privileged; else the plain option, which the kernel honours
        // downward (to its minimum) whatever `net.core.rmem_default` is.
        if crate::force_receive_buffer(&rx, 4096).is_err() {
            crate::set_int(rx.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).expect("SO_RCVBUF");
        }
        let port = rx.local_addr().expect("bound").port();
        let to: SocketAddr = (Ipv4Addr::new(127, 0, 0, 9), port).into();
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sent_at = Instant::now();
        // More than a small receive queue holds: the kernel drops the rest, and the next datagram queued
        // after the queue is read carries the count of those drops.
        let burst = 1000;
        for _ in 0..burst {
            tx.send_to(&[1; 1000], to).expect("send");
        }
        let mut batch = RecvBatch::new(1500);
        let mut read = 0;
        let mut check = |batch: &RecvBatch| {
            let read_at = Instant::now();
            for d in batch.datagrams() {
                assert_eq!(d.destination, Some(Ipv4Addr::new(127, 0, 0, 9).into()));
                let arrival = d.arrival.expect("a kernel timestamp");
                assert!(arrival <= read_at && arrival + Duration::from_millis(1) >= sent_at);
                read += 1;
            }
        };
        while batch.recv(&rx).expect("recv") > 0 {
            check(&batch);
        }
        tx.send_to(&[1; 1000], to).expect("send");
        while batch.recv(&rx).expect("recv") == 0 {}
        check(&batch);
        assert!(batch.kernel_drops() > 0, "a full queue drops");
        assert_eq!(read + batch.kernel_drops() as usize, burst + 1);
    }

    #[test]
    fn an_implausible_timestamp_age_gives_the_read_time() {
        let now = Instant::now();
        assert_eq!(arrival(now, -5), now);
        assert_eq!(arrival(now, MAX_AGE_NS), now);
        assert_eq!(arrival(now, 1_000), now - Duration::from_nanos(1_000));
    }
}
