//! A listener's request taken before hyper: the accept loop (`conn.rs`) peeks at the first bytes of every
//! connection; a `GET /live/…` whose head is complete and admitted (the checks of the HTTP route,
//! `listener::admit`) has its head read off the socket, gets its `200` head, and its socket goes to the
//! mount's fan-out (`fanout.rs`): no HTTP connection state is kept for it. Anything else — another path, a
//! refused listener (the route answers it with its status), a head that does not come at once or that
//! the route must decode (percent-encoding), `HEAD` — is handed back untouched for hyper.
//!
//! The body is close-delimited for every client (`Connection: close`, no chunking), as Icecast sends it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::Uri;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout_at, Instant};
use tracing::debug;

use super::fanout::{hand_over, Arrival};
use super::listener::{admit, request_token, response_headers, wants_icy, ListenQuery};
use crate::conn::Permit;
use crate::state::AppState;

/// The request line's start of a listener.
const PREFIX: &[u8] = b"GET /live/";

/// The largest request head taken here (a larger one is hyper's to refuse).
const MAX_HEAD: usize = 8192;

/// The longest pause between two looks at a head that arrives in parts.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Serves `stream` as a listener if it is one this path takes (returns `None`); otherwise hands it back,
/// only peeked at, with its permit.
pub(crate) async fn take(
    state: &Arc<AppState>,
    stream: TcpStream,
    permit: Permit,
    limit: Duration,
) -> Option<(TcpStream, Permit)> {
    let Some(mut head) = peek_head(&stream, limit).await else {
        return Some((stream, permit));
    };
    let Some(listener) = parse(state, &head) else {
        return Some((stream, permit));
    };
    // The head is in the socket's receive buffer (peeked): read it off, leaving nothing of it for later.
    let mut stream = stream;
    if stream.read_exact(&mut head).await.is_err() {
        return None;
    }
    let broadcasts = &state.broadcasts;
    broadcasts
        .metrics
        .requests
        .with_label_values(&["accepted"])
        .inc();
    if let Err(e) = socket2::SockRef::from(&stream)
        .set_send_buffer_size(broadcasts.config.listener_send_buffer_bytes)
    {
        debug!(error = %e, "cannot set a listener's send buffer");
    }
    let mount = broadcasts.mount_or_create(&listener.room);
    let arrival = Arrival {
        stream,
        permit,
        head: listener.head,
        icy: listener.icy,
    };
    hand_over(broadcasts, &mount, arrival);
    None
}

/// The request head, if the connection starts with a complete `GET /live/…` head within `limit`.
async fn peek_head(stream: &TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut start = [0u8; PREFIX.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = timeout_at(deadline, stream.peek(&mut start))
            .await
            .ok()?
            .ok()?;
        if n == 0 || !start[..n].starts_with(&PREFIX[..n]) {
            return None;
        }
        if n == PREFIX.len() {
            break;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    let mut buf = vec![0u8; MAX_HEAD];
    loop {
        let n = timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Some(buf);
        }
        if n == MAX_HEAD || Instant::now() >= deadline {
            return None;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// An admitted listener, as taken here.
struct Admitted {
    room: String,
    icy: bool,
    /// Its response head.
    head: Bytes,
}

/// The listener `head` asks to be, if it is admitted and this path can serve it.
fn parse(state: &AppState, head: &[u8]) -> Option<Admitted> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) || req.method != Some("GET") {
        return None;
    }
    let target = req.path?;
    let uri: Uri = target.parse().ok()?;
    let file = uri.path().strip_prefix("/live/")?;
    // A segment the route would decode (or not match) is the route's.
    if file.contains(['/', '%']) {
        return None;
    }
    let query = Query::<ListenQuery>::try_from_uri(&uri).ok()?;
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let authorization = header("authorization").and_then(|v| std::str::from_utf8(v).ok());
    let token = request_token(query.token.as_deref(), authorization);
    let room = admit(state, file, token).ok()?;
    let icy = wants_icy(header("icy-metadata"));
    let config = &state.broadcasts.config;
    let version = if req.version == Some(0) { "1.0" } else { "1.1" };
    let mut out = format!("HTTP/{version} 200 OK\r\n");
    for (name, value) in response_headers(
        room,
        icy.then_some(config.icy_metaint_bytes),
        state.broadcasts.is_public(room),
    ) {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&value);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    Some(Admitted {
        room: room.to_owned(),
        icy,
        head: Bytes::from(out),
    })
}
