//! The media workers' batched UDP I/O, on the workspace's one implementation ([`chorus_udp`]):
//! `recvmmsg(2)` reads up to a batch of datagrams per system call, and one `sendmmsg(2)` sends everything
//! a batch of inputs produced (a forwarded packet fans out to every subscriber), instead of one system
//! call per datagram.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use media_core::core::net::NetTransmit;

pub use chorus_udp::{set_buffer_sizes, SendOutcome};

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

    /// The datagrams of the last [`recv`](Self::recv) with their sources (unknown address families skipped).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.0.datagrams().map(|d| (d.source, d.contents))
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
            for (from, data) in recv.datagrams() {
                assert_eq!(from, tx.local_addr().expect("bound"));
                seen.push(data.to_vec());
            }
        }
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
        }
    }
}
