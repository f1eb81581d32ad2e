//! One UDP socket for many simulated participants, with batched I/O.
//!
//! Every participant has its own loopback address (127.a.b.c) but they all share one socket bound to the
//! wildcard address on one port: `IP_PKTINFO` tells, for each received datagram, which participant it was
//! addressed to, and sets, for each sent datagram, the participant's source address. `recvmmsg(2)` reads
//! up to [`BATCH`] datagrams per system call and `sendmmsg(2)` sends up to [`BATCH`] per call, so the tool
//! costs a few system calls per batch rather than two per packet and per participant. The batched calls
//! are the workspace's one implementation, [`chorus_udp`].
//!
//! The socket is bound to the `lo` device (`SO_BINDTODEVICE`) unless told otherwise, so nothing outside
//! the machine can reach it even though it is bound to 0.0.0.0.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use chorus_udp::{Ancillary, Packet, RecvBatch, WhenFull};

/// Datagrams per `recvmmsg` / `sendmmsg` call.
pub const BATCH: usize = chorus_udp::BATCH;
/// Largest datagram handled (the server drops larger ones as well).
pub const MAX_DATAGRAM: usize = 1500;

/// A full send buffer: wait this long for room, as a blocking socket would ...
const SEND_WAIT: Duration = Duration::from_millis(5);
/// ... at most this many times per [`MultiSocket::send_all`], then drop what is refused.
const SEND_WAITS: usize = 100;

/// A datagram to send from a participant's address.
#[derive(Debug)]
pub struct Outgoing {
    pub source: Ipv4Addr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// The shared socket.
pub struct MultiSocket {
    socket: UdpSocket,
    port: u16,
    batch: RecvBatch,
}

impl MultiSocket {
    /// Bind 0.0.0.0:`port` (0: any free port), nonblocking, with `IP_PKTINFO`. `device`: restrict the
    /// socket to this interface (normally "lo"); `None` only inside a private network namespace.
    pub fn bind(port: u16, device: Option<&str>) -> io::Result<MultiSocket> {
        let socket = chorus_udp::bind_ipv4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), device)?;
        chorus_udp::enable(&socket, Ancillary::DestinationAddress)?;
        // Kernel receive timestamps: latency is measured to the datagram's arrival, not to when this
        // thread got round to reading it.
        chorus_udp::enable(&socket, Ancillary::KernelTimestamp)?;
        // The kernel's count of datagrams dropped on a full receive queue, with every datagram read.
        chorus_udp::enable(&socket, Ancillary::DropCounter)?;
        // Larger buffers absorb bursts; FORCE needs CAP_NET_ADMIN, the plain option is capped by rmem_max.
        // One socket takes every participant's traffic: in a room of 2,000 with three talkers each talker's
        // packet comes back as 2,000 datagrams within a few milliseconds, and with 4 MB the queue overflowed
        // on such bursts (20,000–140,000 datagrams a run, counted as loss; docs/loadtest.md).
        chorus_udp::set_buffer_sizes(&socket, 32 << 20);
        let port = socket.local_addr()?.port();
        Ok(MultiSocket {
            socket,
            port,
            batch: RecvBatch::new(MAX_DATAGRAM),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wait until the socket is readable or `timeout_ms` passes. Returns whether it is readable.
    pub fn wait_readable(&self, timeout_ms: u64) -> io::Result<bool> {
        let [readable] =
            chorus_udp::wait_readable([self.as_fd()], Duration::from_millis(timeout_ms))?;
        Ok(readable)
    }

    /// Read up to [`BATCH`] datagrams without blocking; returns how many (0: nothing waiting).
    pub fn recv_batch(&mut self) -> io::Result<usize> {
        match self.batch.recv(&self.socket) {
            // A previous send drew an ICMP error (e.g. a peer that left); nothing to read.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(0),
            other => other,
        }
    }

    /// Datagram `i` of the last batch: (source, destination address it was sent to, bytes).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, Ipv4Addr, &[u8])> {
        let d = self.batch.datagram(i)?;
        let destination = match d.destination {
            Some(IpAddr::V4(ip)) => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        Some((d.source, destination, d.contents))
    }

    /// Datagrams dropped so far because the receive queue was full (as of the last datagram read).
    pub fn dropped(&self) -> u32 {
        self.batch.kernel_drops()
    }

    /// When datagram `i` of the last batch reached the socket (kernel timestamp), on the monotonic clock.
    pub fn arrival(&self, i: usize) -> Instant {
        self.batch
            .datagram(i)
            .and_then(|d| d.arrival)
            .unwrap_or_else(Instant::now)
    }

    /// Send everything in `out` (in batches), each from its own source address. Datagrams the kernel
    /// refuses are dropped and counted in the result, as a network would drop them.
    pub fn send_all(&self, out: &[Outgoing]) -> io::Result<SendReport> {
        let outcome = chorus_udp::send_all(
            &self.socket,
            out,
            |o| Packet {
                source: Some(o.source),
                destination: o.destination,
                contents: &o.contents,
            },
            WhenFull::Wait {
                each: SEND_WAIT,
                attempts: SEND_WAITS,
            },
        );
        Ok(SendReport {
            sent: outcome.sent,
            dropped: outcome.failed,
            would_block: outcome.would_block,
        })
    }
}

impl AsFd for MultiSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
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
                let (src, dst, data) = b.datagram(k).expect("a datagram of the batch");
                let i = participant_index(dst).expect("a participant address") - 1000;
                assert_eq!(src, SocketAddr::from((participant_ip(i), a.port())));
                assert_eq!(data, &vec![i as u8; 10 + i][..]);
                seen += 1;
            }
        }
    }
}
