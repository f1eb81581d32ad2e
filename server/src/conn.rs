//! The HTTP accept loop: connection caps (global and per client IP), a header read timeout, and an accept
//! loop that survives running out of file descriptors, so `/healthz`, `/metrics` and joins keep being
//! served while idle or slow connections pile up (issue 10 item 3).
//!
//! Every connection holds a [`Permit`] inside its socket for as long as it lives, WebSocket upgrades
//! included (the upgraded stream owns the socket), so the caps count WebSockets too. A connection over a
//! cap gets `503` and is closed at once. Request headers must be complete within the header timeout, on
//! every request of a keep-alive connection; a WebSocket's own deadlines are the session's (join and
//! first offer, docs/protocol.md).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounterVec, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::broadcast::ConnectionControl;
use crate::metrics::ServerMetrics;

/// The connection limits in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open connections against the caps.
pub struct Tracker {
    limits: Limits,
    counts: Mutex<Counts>,
    open: IntGauge,
}

impl Tracker {
    pub fn new(limits: Limits, open: IntGauge) -> Arc<Self> {
        Arc::new(Tracker {
            limits,
            counts: Mutex::new(Counts::default()),
            open,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Nothing panics while holding the lock.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for a new connection from `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut counts = self.counts();
        if counts.total >= self.limits.max_connections {
            return Err(Refusal::MaxConnections);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.limits.max_connections_per_ip {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        *from_ip += 1;
        counts.total += 1;
        self.open.inc();
        Ok(Permit {
            tracker: Arc::clone(self),
            ip,
        })
    }

    /// Open connections now.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts().total
    }
}

/// One admitted connection; released on drop.
pub struct Permit {
    tracker: Arc<Tracker>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.tracker.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        self.tracker.open.dec();
    }
}

/// A socket that holds its connection's permit, and applies what its requests ask of it.
struct Counted {
    stream: TcpStream,
    _permit: Permit,
    control: ConnectionControl,
}

impl Counted {
    /// A send buffer size a request asked for (a listener stream), set before the next write.
    fn apply_control(&self) {
        if let Some(bytes) = self.control.take_send_buffer() {
            if let Err(e) = socket2::SockRef::from(&self.stream).set_send_buffer_size(bytes) {
                debug!(error = %e, "cannot set the connection's send buffer");
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.apply_control();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.apply_control();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What a refused connection is told (written without waiting: a full socket buffer just loses it).
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n";

/// After a failed accept (e.g. EMFILE), wait this long before the next one instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` (HTTP/1.1 with upgrades) under `limits`; runs until the task is dropped.
/// With `sources`, a connection whose first bytes are an Icecast source request (`PUT`/`SOURCE /live/…`)
/// is served by the ingest (its body is not HTTP-framed; `ingest/icecast.rs`), still holding its permit.
/// With `listeners`, a connection that opens with an admitted `GET /live/…` is handed, with its permit, to
/// the mount's fan-out (`broadcast/raw.rs`): no HTTP connection is kept for a listener.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: ServerMetrics,
    sources: Option<crate::ingest::icecast::Sources>,
    listeners: Option<Arc<crate::state::AppState>>,
) {
    let tracker = Tracker::new(limits, metrics.http_connections.clone());
    let counted = metrics.http_connection_limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut accept_errors: u64 = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                count(&counted, "accept_error");
                accept_errors += 1;
                // One line per 100 failures: the metric carries the rate.
                if accept_errors % 100 == 1 {
                    warn!(error = %e, failures = accept_errors, "accepting an HTTP connection failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match tracker.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                count(&counted, refusal.as_str());
                debug!(%peer, reason = refusal.as_str(), "HTTP connection refused");
                let _ = stream.try_write(REFUSED);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if sources.is_some() || listeners.is_some() {
            let (sources, listeners, app, http, counted) = (
                sources.clone(),
                listeners.clone(),
                app.clone(),
                http.clone(),
                counted.clone(),
            );
            tokio::spawn(async move {
                let limit = limits.header_timeout;
                let stream = match &sources {
                    Some(sources) => match sources.take(stream, peer, limit).await {
                        Some(stream) => stream,
                        None => return drop(permit),
                    },
                    None => stream,
                };
                let (stream, permit) = match &listeners {
                    Some(state) => {
                        match crate::broadcast::take_listener(state, stream, permit, limit).await {
                            Some(back) => back,
                            None => return,
                        }
                    }
                    None => (stream, permit),
                };
                serve_http(stream, peer, permit, app, http, counted).await
            });
            continue;
        }
        tokio::spawn(serve_http(
            stream,
            peer,
            permit,
            app.clone(),
            http.clone(),
            counted.clone(),
        ));
    }
}

/// One HTTP connection, until it ends.
async fn serve_http(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    permit: Permit,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    counted: IntCounterVec,
) {
    {
        // The connection's control rides on each of its requests: a listener stream that must be dropped
        // (its client stopped reading) closes the connection even while it waits on a full socket.
        let control = ConnectionControl::default();
        let io = TokioIo::new(Counted {
            stream,
            _permit: permit,
            control: control.clone(),
        });
        let service = {
            let control = control.clone();
            let app = app.clone();
            tower::service_fn(move |mut request: axum::extract::Request<Incoming>| {
                request.extensions_mut().insert(control.clone());
                app.clone().oneshot(request)
            })
        };
        let connection = http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        {
            let result = tokio::select! {
                result = connection => result,
                () = control.killed() => {
                    debug!(%peer, "HTTP connection closed by the server (a listener that did not read)");
                    return;
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    count(&counted, "header_timeout");
                    debug!(%peer, "HTTP request headers not complete in time; connection closed");
                } else {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
        }
    }
}

fn count(counter: &IntCounterVec, reason: &str) {
    counter.with_label_values(&[reason]).inc();
}

/// Raises the soft file-descriptor limit to the hard one; returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is RLIM_INFINITY.
    let limit = getrlimit(Resource::Nofile);
    let value = |v: Option<u64>| v.unwrap_or(u64::MAX);
    if value(limit.current) < value(limit.maximum) {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Some(value(raised.current));
        }
    }
    Some(value(limit.current))
}

/// File descriptors kept out of the connection cap: media sockets, webhooks, logs, the listener.
pub const FD_RESERVE: u64 = 256;

/// The connection cap that fits under `fd_limit` with [`FD_RESERVE`] to spare.
pub fn cap_for_fd_limit(max_connections: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let room = limit.saturating_sub(FD_RESERVE).max(1);
            max_connections.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize, per_ip: usize) -> Arc<Tracker> {
        let limits = Limits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            header_timeout: Duration::from_secs(1),
        };
        Tracker::new(limits, IntGauge::new("open", "open").expect("valid name"))
    }

    #[test]
    fn caps_count_per_ip_and_in_total_and_free_on_drop() {
        let t = tracker(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("an IP");
        let b: IpAddr = "192.0.2.2".parse().expect("an IP");
        let a1 = t.admit(a).expect("first");
        let _a2 = t.admit(a).expect("second");
        assert_eq!(t.admit(a).err(), Some(Refusal::MaxConnectionsPerIp));
        let _b1 = t.admit(b).expect("another IP");
        assert_eq!(t.admit(b).err(), Some(Refusal::MaxConnections));
        assert_eq!(t.total(), 3);
        assert_eq!(t.open.get(), 3);
        drop(a1);
        assert_eq!(t.total(), 2);
        assert_eq!(t.open.get(), 2);
        let _a3 = t.admit(a).expect("a slot was freed");
        assert_eq!(t.counts().per_ip.len(), 2);
    }

    #[test]
    fn the_cap_leaves_room_under_the_fd_limit() {
        assert_eq!(
            cap_for_fd_limit(10_000, Some(1024)),
            1024 - FD_RESERVE as usize
        );
        assert_eq!(cap_for_fd_limit(100, Some(1_048_576)), 100);
        assert_eq!(cap_for_fd_limit(100, None), 100);
        assert_eq!(cap_for_fd_limit(100, Some(10)), 1);
    }
}
