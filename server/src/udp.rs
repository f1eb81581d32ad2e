//! The media workers' batched UDP I/O, on the workspace's one implementation ([`chorus_udp`]):
//! `recvmmsg(2)` reads up to a batch of datagrams per system call, and one `sendmmsg(2)` sends everything
//! a batch of inputs produced (a forwarded packet fans out to every subscriber), instead of one system
//! call per datagram.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use media_core::core::net::NetTransmit;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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

/// [`set_up_media_socket`] for both sockets of a pair; returns what the receiver was granted.
pub fn set_up_media_pair(pair: &chorus_udp::SocketPair, bytes: usize) -> (usize, usize) {
    if let Some(sender) = &pair.sender {
        set_up_media_socket(sender, bytes);
    }
    set_up_media_socket(&pair.receiver, bytes)
}

/// A media socket as a worker's runtime sees it: registered for reading only, and sending from a sibling.
///
/// `tokio::net::UdpSocket` registers for writability too. On a socket that sends hundreds of datagrams
/// per received one, that costs per datagram sent: each one the kernel frees wakes the socket's
/// waiters for write space (`sock_wfree`), which adds the socket to the worker's epoll ready list, and
/// the edge-triggered writable event then returns `epoll_wait` for nothing. The workers never wait for
/// write space through the runtime ([`send_all`] does not wait at all), so they read through an
/// [`AsyncFd`] registered for [`Interest::READABLE`]. Even so, the epoll entry on the socket's wait queue is
/// still visited for every datagram freed, so the worker sends on a sibling socket of the same address that
/// nobody waits on ([`chorus_udp::SocketPair`]), where the kernel allows one, else on the read socket.
pub struct MediaSocket {
    read: AsyncFd<std::net::UdpSocket>,
    send: Option<std::net::UdpSocket>,
}

impl MediaSocket {
    /// Wait until the socket may have datagrams; [`read`] reads them and clears the readiness.
    pub async fn readable(&self) -> io::Result<()> {
        // The guard only says so: dropping it leaves the readiness to `read`.
        self.read.readable().await.map(drop)
    }

    /// The socket to send from (the sibling, else the read socket).
    pub fn send_fd(&self) -> BorrowedFd<'_> {
        self.send.as_ref().unwrap_or(self.read.get_ref()).as_fd()
    }
}

/// Register a media socket pair ([`chorus_udp::bind_pair`]) with the current runtime: its receiver for
/// reading only, its sender not at all ([`MediaSocket`]).
// tokio's safe constructors are deprecated (an `AsRawFd` could hand back another descriptor later).
#[allow(unsafe_code)]
pub fn register(pair: chorus_udp::SocketPair) -> io::Result<MediaSocket> {
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open and the same until it is dropped.
    let read = unsafe { AsyncFd::register_with_interest(pair.receiver, Interest::READABLE) }
        .map_err(io::Error::from)?;
    Ok(MediaSocket {
        read,
        send: pair.sender,
    })
}

/// Read what is queued on a worker's media socket into `batch`, up to a batch; `WouldBlock` when nothing
/// is (the runtime's readiness is then cleared, as `try_io` does).
///
/// A read that returns less than a full batch also marks the socket not readable: `recvmmsg(2)` on a
/// non-blocking socket returns fewer datagrams than asked only when the queue ran dry (an unconnected socket
/// without `IP_RECVERR`, as the media sockets are, is never handed ICMP errors that could end a batch
/// early), so the read that would follow only to get `EAGAIN` is skipped. Sound on the workers'
/// current-thread runtime: the reactor does not run while the worker reads, so a datagram arriving after the
/// read is a new edge that `epoll_wait` reports after this clear. A full batch leaves the socket readable.
pub fn read(socket: &MediaSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    let count = socket
        .read
        .try_io(Interest::READABLE, |s| match batch.recv(s) {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            other => other,
        })?;
    if count < chorus_udp::BATCH {
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(mut guard)) = socket.read.poll_read_ready(&mut cx) {
            guard.clear_ready();
        }
    }
    Ok(count)
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
        // A worker's pair sends, from the sibling that nobody reads.
        let tx = chorus_udp::bind_pair(([127, 0, 0, 1], 0).into()).expect("a pair binds");
        assert!(tx.sender.is_some(), "this kernel allows a sending sibling");
        let from_addr = tx.receiver.local_addr().expect("bound");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        set_up_media_pair(&tx, 1 << 20);
        set_up_media_socket(&rx, 1 << 20);
        let before = Instant::now();
        let batch: Vec<NetTransmit> = (0..100)
            .map(|i| NetTransmit {
                transport: media_core::core::net::Transport::Udp,
                source: from_addr,
                destination: rx.local_addr().expect("bound"),
                contents: vec![i as u8; 1 + i],
            })
            .collect();
        assert_eq!(
            send_all(tx.sender.as_ref().expect("checked above"), &batch),
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
                assert_eq!(from, from_addr);
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

    /// A worker's read of a media socket: wait until it is readable, then read.
    async fn read_once(socket: &MediaSocket, recv: &mut RecvBatch) -> usize {
        readable_within(socket, 2_000)
            .await
            .expect("a datagram was sent");
        read(socket, recv).expect("the socket had a datagram")
    }

    async fn readable_within(socket: &MediaSocket, ms: u64) -> Option<()> {
        let wait = std::time::Duration::from_millis(ms);
        match tokio::time::timeout(wait, socket.readable()).await {
            Ok(ready) => ready.ok(),
            Err(_) => None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_drained_socket_waits_for_the_next_datagram_and_wakes_on_it() {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx = chorus_udp::bind_pair(([127, 0, 0, 1], 0).into()).expect("a pair binds");
        let to = rx.receiver.local_addr().expect("bound");
        let rx = register(rx).expect("registers with the runtime");
        let mut recv = RecvBatch::default();
        for round in 0..3 {
            for i in 0..=round {
                tx.send_to(&[round, i], to).expect("send");
            }
            assert_eq!(read_once(&rx, &mut recv).await, round as usize + 1);
            // Drained: no wake-up (and no read) until another datagram comes.
            assert_eq!(readable_within(&rx, 100).await, None, "round {round}");
        }
        // A full batch leaves the socket readable: what is still queued is read on the next pass.
        for i in 0..chorus_udp::BATCH + 5 {
            tx.send_to(&[i as u8], to).expect("send");
        }
        assert_eq!(read_once(&rx, &mut recv).await, chorus_udp::BATCH);
        assert_eq!(read_once(&rx, &mut recv).await, 5);
        assert_eq!(readable_within(&rx, 100).await, None);
    }
}
