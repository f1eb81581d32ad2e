//! The worker's ICE-TCP side: its listener, the open connections and their deadlines, and connection events.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::time::{Duration, Instant};

use tracing::debug;

use media_core::core::net::NetPath;

use super::Worker;
use crate::metrics::MediaMetrics;
use crate::tcp::{self, CloseReason, ConnHandle, TcpEvent};

/// A non-blocking TCP listener whose connections get a small kernel send buffer (they inherit it): audio
/// queued in the kernel is only latency, and a client that does not read fills the connection's write
/// queue soon after.
pub(super) fn tcp_listener(addr: SocketAddr) -> io::Result<StdTcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_send_buffer_size(tcp::SEND_BUFFER_BYTES)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The worker's ICE-TCP connections.
pub(super) struct TcpState {
    /// The TCP candidate's address (as advertised).
    pub(super) candidate: SocketAddr,
    pub(super) stun_timeout: Duration,
    /// Open connections by their remote address.
    pub(super) conns: HashMap<SocketAddr, Conn>,
}

pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) handle: ConnHandle,
    pub(super) opened: Instant,
    pub(super) last_heard: Instant,
    /// A STUN request on this connection was verified by a peer (the core learned its path).
    pub(super) verified: bool,
}

impl TcpState {
    /// Close connections with no verified STUN in time, and verified ones silent for the idle timeout.
    pub(super) fn sweep(&mut self, now: Instant, metrics: &MediaMetrics) {
        let stun_timeout = self.stun_timeout;
        self.conns.retain(|remote, c| {
            let reason = if !c.verified && now.saturating_duration_since(c.opened) > stun_timeout {
                CloseReason::NoStun
            } else if c.verified && now.saturating_duration_since(c.last_heard) > tcp::IDLE_TIMEOUT
            {
                CloseReason::Idle
            } else {
                return true;
            };
            debug!(%remote, reason = reason.as_str(), "closing ICE-TCP connection");
            metrics.tcp_closed(reason);
            false
        });
    }
}

impl Worker {
    /// A connection opened, closed or sent a frame. Returns the core's next wake-up after a frame.
    pub(super) fn tcp_event(&mut self, event: TcpEvent) -> Option<Instant> {
        let tcp = self.tcp.as_mut()?;
        let now = Instant::now();
        match event {
            TcpEvent::Opened { id, remote, conn } => {
                tcp.conns.insert(
                    remote,
                    Conn {
                        id,
                        handle: conn,
                        opened: now,
                        last_heard: now,
                        verified: false,
                    },
                );
                None
            }
            TcpEvent::Closed { id, remote } => {
                if tcp.conns.get(&remote).is_some_and(|c| c.id == id) {
                    tcp.conns.remove(&remote);
                }
                None
            }
            TcpEvent::Frame { id, remote, data } => {
                // A frame from a connection the worker already closed is stale.
                let conn = tcp.conns.get_mut(&remote).filter(|c| c.id == id)?;
                conn.last_heard = now;
                let path = NetPath::tcp(tcp.candidate, remote);
                self.core.handle_datagram_via(now, path, &data);
                if !conn.verified {
                    conn.verified = self.core.path_bound(&path);
                }
                let deadline = self.drain();
                let sent = self.flush();
                let latency = now.elapsed().as_secs_f64();
                for _ in 0..sent {
                    self.forwarding.observe(latency);
                }
                Some(deadline)
            }
        }
    }
}
