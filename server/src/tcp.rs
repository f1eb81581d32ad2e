//! ICE-TCP for clients whose network drops UDP: one listener per media worker, offered as a passive TCP
//! host candidate (RFC 6544), each connection carrying datagrams (STUN, DTLS, SRTP, SRTCP) framed by a
//! 2-byte big-endian length (RFC 4571).
//!
//! A connection is a task on the worker's runtime. It reads frames and hands them to the worker's loop
//! ([`TcpEvent::Frame`]); the worker feeds them to its core as datagrams on the TCP path and queues the
//! core's transmits to the connection's writer. Everything a misbehaving client can do costs that one
//! connection, never the worker:
//! - a frame length of 0 or above [`MAX_DATAGRAM`] closes the connection (`bad_frame`);
//! - a reader that does not drain: the worker bounds each connection's queued bytes
//!   ([`WRITE_QUEUE_BYTES`]) and closes the connection when a transmit would exceed it (`slow_reader`);
//!   a write stuck on a full socket is abandoned as soon as the worker closes the connection;
//! - a connection with no STUN request verified by a peer's ICE agent within the configured time (idle,
//!   half-open, or not ICE at all) is closed (`no_stun`), and a verified one that falls silent for
//!   [`IDLE_TIMEOUT`] too (`idle`);
//! - a worker accepts at most its configured number of connections; more are closed at once (`limit`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use media_core::core::MAX_DATAGRAM;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::metrics::MediaMetrics;

/// Bytes queued for one connection's writer at most: about 8 s of a five-slot subscriber's audio.
pub const WRITE_QUEUE_BYTES: usize = 64 * 1024;
/// The kernel send buffer asked for on each connection.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;
/// A verified connection that sends nothing this long is closed: the ICE consent timeout (RFC 7675), after
/// which its peer is gone anyway.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 4096;
/// Events from connections waiting for the worker's loop; beyond this, connections wait to read more.
pub const EVENT_QUEUE: usize = 1024;

/// Why a connection closed (the `reason` label of `chorus_tcp_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or reset the connection.
    PeerClosed,
    /// A frame length of 0 or above the largest datagram.
    BadFrame,
    /// The client did not read what was sent to it: its write queue was full.
    SlowReader,
    /// No STUN request verified by a peer's ICE agent in time: idle, half-open or not ICE.
    NoStun,
    /// Verified once, then silent for [`IDLE_TIMEOUT`].
    Idle,
    /// The worker already holds its maximum of connections.
    Limit,
    /// A socket error.
    Error,
    /// The worker closed it (for one of the reasons above, counted there) or stopped.
    Closed,
}

impl CloseReason {
    /// The reasons that are counted (every label value exists from start-up).
    pub const COUNTED: [CloseReason; 7] = [
        CloseReason::PeerClosed,
        CloseReason::BadFrame,
        CloseReason::SlowReader,
        CloseReason::NoStun,
        CloseReason::Idle,
        CloseReason::Limit,
        CloseReason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::NoStun => "no_stun",
            CloseReason::Idle => "idle",
            CloseReason::Limit => "limit",
            CloseReason::Error => "error",
            CloseReason::Closed => "closed",
        }
    }
}

/// A frame length the connection cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of length 0")]
    Empty,
    #[error("a frame of {0} bytes, more than a datagram")]
    TooLong(usize),
}

/// RFC 4571 de-framing of one connection's byte stream. Holds at most one partial frame plus one read.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    at: usize,
}

impl Framer {
    /// Append bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` until more bytes arrive. A bad length is an error as soon as its
    /// two bytes are in, before its body is waited for.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.at..];
        let Some(header) = rest.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_DATAGRAM {
            return Err(FrameError::TooLong(len));
        }
        if rest.len() < 2 + len {
            return Ok(None);
        }
        let start = self.at + 2;
        self.at = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }
}

/// Append `data` to `out` as one RFC 4571 frame. `data` is one datagram: at most [`MAX_DATAGRAM`] bytes
/// is what the core sends, and anything up to 65,535 bytes fits a frame.
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
}

/// What connections tell their worker, in order per connection.
pub enum TcpEvent {
    Opened {
        id: u64,
        remote: SocketAddr,
        conn: ConnHandle,
    },
    Frame {
        id: u64,
        remote: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        id: u64,
        remote: SocketAddr,
    },
}

/// The worker's side of a connection. Dropping it closes the connection.
pub struct ConnHandle {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued for the writer and not yet written.
    queued: Arc<AtomicUsize>,
    /// Dropped: the connection stops, even in the middle of a write to a client that does not read.
    _close: oneshot::Sender<()>,
}

impl ConnHandle {
    /// Queue one datagram. `Err(())`: the write queue is full (or the connection is gone); the caller
    /// closes the connection.
    pub fn send(&self, data: Vec<u8>) -> Result<(), ()> {
        let len = data.len() + 2;
        if self.queued.load(Ordering::Relaxed) + len > WRITE_QUEUE_BYTES {
            return Err(());
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.writer.send(data).map_err(|_| ())
    }
}

/// Accept connections on `listener` for one worker until the worker stops, at most `max_connections` at
/// once.
pub async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    max_connections: usize,
    metrics: Arc<MediaMetrics>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut next_id = 0u64;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = events.closed() => return,
        };
        if live.load(Ordering::Relaxed) >= max_connections {
            metrics.tcp_closed(CloseReason::Limit);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        live.fetch_add(1, Ordering::Relaxed);
        metrics.tcp_connections.inc();
        let id = next_id;
        next_id += 1;
        let events = events.clone();
        let live = live.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let reason = connection(id, stream, remote, &events).await;
            if reason != CloseReason::Closed {
                metrics.tcp_closed(reason);
            }
            debug!(%remote, reason = reason.as_str(), "ICE-TCP connection closed");
            live.fetch_sub(1, Ordering::Relaxed);
            metrics.tcp_connections.dec();
            let _ = events.send(TcpEvent::Closed { id, remote }).await;
        });
    }
}

/// Run one connection until it closes; returns why.
async fn connection(
    id: u64,
    mut stream: TcpStream,
    remote: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
) -> CloseReason {
    let (writer, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let (close_tx, mut close) = oneshot::channel::<()>();
    let queued = Arc::new(AtomicUsize::new(0));
    let conn = ConnHandle {
        writer,
        queued: queued.clone(),
        _close: close_tx,
    };
    if events
        .send(TcpEvent::Opened { id, remote, conn })
        .await
        .is_err()
    {
        return CloseReason::Closed;
    }
    // Reading and writing run side by side: a write stuck on a client that does not read never stops
    // the reading (so its write queue fills and the worker closes it).
    let (mut rd, mut wr) = stream.split();
    tokio::select! {
        _ = &mut close => CloseReason::Closed,
        reason = read_frames(id, remote, &mut rd, events) => reason,
        reason = write_frames(&mut wr, &mut outgoing, &queued) => reason,
    }
}

/// Read frames and hand them to the worker until the connection ends or breaks the framing.
async fn read_frames(
    id: u64,
    remote: SocketAddr,
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    events: &mpsc::Sender<TcpEvent>,
) -> CloseReason {
    let mut framer = Framer::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) => return CloseReason::PeerClosed,
            Ok(n) => n,
            Err(e) if is_reset(&e) => return CloseReason::PeerClosed,
            Err(_) => return CloseReason::Error,
        };
        framer.push(&chunk[..n]);
        loop {
            let data = match framer.next_frame() {
                Ok(Some(f)) => f.to_vec(),
                Ok(None) => break,
                Err(e) => {
                    debug!(%remote, error = %e, "bad ICE-TCP framing");
                    return CloseReason::BadFrame;
                }
            };
            if events
                .send(TcpEvent::Frame { id, remote, data })
                .await
                .is_err()
            {
                return CloseReason::Closed;
            }
        }
    }
}

/// Write what the worker queues, framed, until the worker lets go of the connection.
async fn write_frames(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    outgoing: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    queued: &AtomicUsize,
) -> CloseReason {
    let mut out = Vec::with_capacity(READ_CHUNK);
    while let Some(first) = outgoing.recv().await {
        out.clear();
        frame(&first, &mut out);
        while out.len() < 16 * 1024 {
            match outgoing.try_recv() {
                Ok(more) => frame(&more, &mut out),
                Err(_) => break,
            }
        }
        match wr.write_all(&out).await {
            Ok(()) => {}
            Err(e) if is_reset(&e) => return CloseReason::PeerClosed,
            Err(_) => return CloseReason::Error,
        }
        let written = out.len();
        let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            Some(q.saturating_sub(written))
        });
    }
    CloseReason::Closed
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut v = Vec::new();
        while let Some(d) = f.next_frame()? {
            v.push(d.to_vec());
        }
        Ok(v)
    }

    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            frame(p, &mut out);
        }
        out
    }

    #[test]
    fn several_frames_in_one_read_come_out_in_order() {
        let mut f = Framer::default();
        f.push(&framed(&[b"one", b"two", &[7; 1500]]));
        assert_eq!(
            frames(&mut f),
            Ok(vec![b"one".to_vec(), b"two".to_vec(), vec![7; 1500]])
        );
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn a_frame_split_across_reads_waits_for_its_rest() {
        let bytes = framed(&[b"hello", b"world!"]);
        // Every split point, including inside the length prefix.
        for cut in 0..bytes.len() {
            let mut f = Framer::default();
            f.push(&bytes[..cut]);
            let mut got = frames(&mut f).expect("good framing");
            f.push(&bytes[cut..]);
            got.extend(frames(&mut f).expect("good framing"));
            assert_eq!(
                got,
                vec![b"hello".to_vec(), b"world!".to_vec()],
                "cut {cut}"
            );
        }
        // One byte at a time.
        let mut f = Framer::default();
        let mut got = Vec::new();
        for b in &bytes {
            f.push(std::slice::from_ref(b));
            got.extend(frames(&mut f).expect("good framing"));
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world!".to_vec()]);
        assert!(f.buf.len() <= bytes.len());
    }

    #[test]
    fn a_zero_or_oversized_length_is_an_error_before_its_body() {
        let mut f = Framer::default();
        f.push(&framed(&[b"ok"]));
        f.push(&[0, 0]);
        assert_eq!(f.next_frame(), Ok(Some(&b"ok"[..])));
        assert_eq!(f.next_frame(), Err(FrameError::Empty));

        let mut f = Framer::default();
        let too_long = (MAX_DATAGRAM as u16 + 1).to_be_bytes();
        f.push(&too_long);
        assert_eq!(f.next_frame(), Err(FrameError::TooLong(MAX_DATAGRAM + 1)));

        let mut f = Framer::default();
        f.push(&[0xff]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&[0xff]);
        assert_eq!(f.next_frame(), Err(FrameError::TooLong(65_535)));
    }

    #[test]
    fn the_buffer_stays_bounded_by_one_frame_and_one_read() {
        let mut f = Framer::default();
        let one = framed(&[&[1; 1000]]);
        for _ in 0..1000 {
            f.push(&one[..600]);
            assert_eq!(frames(&mut f), Ok(vec![]));
            f.push(&one[600..]);
            assert_eq!(frames(&mut f).expect("good framing").len(), 1);
        }
        assert!(f.buf.len() <= 2 + MAX_DATAGRAM + READ_CHUNK);
    }

    #[test]
    fn a_full_write_queue_refuses_the_next_datagram() {
        let (writer, _rx) = mpsc::unbounded_channel();
        let (close, _closed) = oneshot::channel();
        let conn = ConnHandle {
            writer,
            queued: Arc::new(AtomicUsize::new(0)),
            _close: close,
        };
        let per = 1000;
        let fits = WRITE_QUEUE_BYTES / (per + 2);
        for _ in 0..fits {
            conn.send(vec![0; per]).expect("room in the queue");
        }
        assert_eq!(conn.send(vec![0; per]), Err(()));
    }
}
