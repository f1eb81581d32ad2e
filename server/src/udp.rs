//! The media workers' batched UDP I/O, on the workspace's one implementation ([`chorus_udp`]):
//! `recvmmsg(2)` reads up to a batch of datagrams per system call, and one `sendmmsg(2)` sends everything
//! a batch of inputs produced (a forwarded packet fans out to every subscriber), instead of one system
//! call per datagram.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use media_core::core::net::NetTransmit;

pub use chorus_udp::SendOutcome;

/// Set up a media socket: `bytes` of kernel buffers (returns what was granted: receive, send), the
/// don't-fragment bit on what it sends ([`chorus_udp::set_dont_fragment`]: no IPv4 identification drawn
/// per packet), and the kernel's receive time on what it reads, so the core measures network jitter from
/// when a datagram arrived, not from when the worker got round to reading it (a mixer tick or a large
/// fan-out in between would count as jitter, issue 15). Either option failing costs only that gain.
pub fn set_up_media_socket(socket: impl AsFd, bytes: usize) -> (usize, usize) {
    let fd = socket.as_fd();
    let granted = chorus_udp::set_buffer_sizes(fd, bytes);
    if let Err(e) = chorus_udp::set_dont_fragment(fd) {
        tracing::debug!(error = %e, "cannot set the don't-fragment bit on a media socket");
    }
    if let Err(e) = chorus_udp::enable(fd, chorus_udp::Ancillary::KernelTimestamp) {
        tracing::debug!(error = %e, "no kernel receive timestamps on a media socket");
    }
    granted
}

/// Larger than any datagram the core accepts, so an oversized one is seen (and counted) rather than cut.
const RECV_BUFFER: usize = 2048;

/// Send every datagram in `batch` on the non-blocking UDP `socket`. Realtime audio is not retried: a
/// datagram the kernel refuses (full buffer, unreachable destination) is counted as failed.
pub fn send_all(socket: impl AsFd, batch: &[NetTransmit]) -> SendOutcome {
    chorus_udp::send_all(
        socket,
        batch,
        |t| chorus_udp::Packet {
            source: None,
            destination: t.destination,
            contents: &t.contents,
        },
        chorus_udp::WhenFull::Skip,
    )
}

/// Buffers for receiving up to a batch of datagrams per system call, allocated once per worker.
pub struct RecvBatch(chorus_udp::RecvBatch);

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch(chorus_udp::RecvBatch::new(RECV_BUFFER))
    }
}

impl RecvBatch {
    /// Read whatever is queued on the non-blocking `socket`, up to a batch. `Ok(0)`: nothing queued.
    pub fn recv(&mut self, socket: impl AsFd) -> io::Result<usize> {
        self.0.recv(socket)
    }

    /// The datagrams of the last [`recv`](Self::recv) with their sources and, on a socket set up by
    /// [`set_up_media_socket`], their kernel receive times (unknown address families skipped).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, Option<Instant>, &[u8])> {
        self.0
            .datagrams()
            .map(|d| (d.source, d.arrival, d.contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn transmits_go_out_and_datagrams_come_back_with_their_sources() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        set_up_media_socket(&tx, 1 << 20);
        set_up_media_socket(&rx, 1 << 20);
        let before = Instant::now();
        let batch: Vec<NetTransmit> = (0..100)
            .map(|i| NetTransmit {
                transport: media_core::core::net::Transport::Udp,
                source: tx.local_addr().expect("bound"),
                destination: rx.local_addr().expect("bound"),
                contents: vec![i as u8; 1 + i],
            })
            .collect();
        assert_eq!(
            send_all(&tx, &batch),
            SendOutcome {
                sent: 100,
                failed: 0,
                would_block: 0
            }
        );
        let mut recv = RecvBatch::default();
        let mut seen = Vec::new();
        while seen.len() < 100 {
            recv.recv(&rx).expect("recv");
            for (from, arrival, data) in recv.datagrams() {
                assert_eq!(from, tx.local_addr().expect("bound"));
                let arrival = arrival.expect("a media socket reports kernel receive times");
                assert!(arrival <= Instant::now(), "arrived before it was read");
                // The realtime-to-monotonic mapping is exact to a few µs; allow a millisecond.
                assert!(arrival + std::time::Duration::from_millis(1) >= before);
                seen.push(data.to_vec());
            }
        }
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
        }
    }
}
