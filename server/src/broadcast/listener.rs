//! One listener: `GET /live/{room}.opus` — access (shared by both paths), the response headers Icecast
//! clients expect, ICY interleaving (a metadata block every `icy-metaint` bytes when the client asked for
//! it, `Icy-MetaData: 1`), and the body of a listener served by its HTTP connection (a `GET` after another
//! request on a keep-alive connection; the others are served by the mount's fan-out, `fanout.rs`): header
//! pages, the last page, then live pages from the mount's ring.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};
use tracing::debug;

use super::{Broadcasts, ListenerSlot, Mount, Page};
use crate::state::AppState;

/// What a request may ask of the HTTP connection it came on (the accept loop, `conn.rs`, hands one to
/// every request): to be closed — how a listener whose client stopped reading is dropped even while its
/// connection waits for the socket, not for data — and a smaller kernel send buffer, so that what a
/// listener does not read piles up in its bounded queue, where it is seen, rather than in the kernel
/// (loopback's autotuning grows a send buffer past a megabyte: minutes of audio).
#[derive(Clone, Debug, Default)]
pub struct ConnectionControl(Arc<ControlState>);

#[derive(Debug, Default)]
struct ControlState {
    kill: Notify,
    send_buffer_bytes: AtomicUsize,
}

impl ConnectionControl {
    pub fn kill(&self) {
        self.0.kill.notify_one();
    }

    /// Resolves once [`ConnectionControl::kill`] was called (before or after).
    pub async fn killed(&self) {
        self.0.kill.notified().await;
    }

    /// Ask for a kernel send buffer of `bytes`; applied by the connection before its next write.
    pub fn set_send_buffer(&self, bytes: usize) {
        self.0.send_buffer_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The send buffer asked for since the last call, if any.
    pub fn take_send_buffer(&self) -> Option<usize> {
        match self.0.send_buffer_bytes.load(Ordering::Relaxed) {
            0 => None,
            _ => Some(self.0.send_buffer_bytes.swap(0, Ordering::Relaxed)).filter(|b| *b > 0),
        }
    }
}

/// The listener route (served when `broadcast.enabled`): `HEAD`, and a `GET` on a connection that already
/// served another request (keep-alive). A `GET` that opens its connection is taken before hyper
/// (`raw.rs`) and served by the mount's fan-out (`fanout.rs`).
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/live/{file}", get(listen))
}

#[derive(Deserialize)]
pub(super) struct ListenQuery {
    pub(super) token: Option<String>,
}

/// Why a listener is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("no such mount")]
    NoMount,
    #[error("no such room")]
    NoRoom,
    #[error(
        "this mount needs a token: ?token=<access token for the room> or Authorization: Bearer"
    )]
    Unauthorized,
    #[error("the server has its maximum of listeners")]
    OverCapacity,
}

impl Refused {
    fn status(self) -> StatusCode {
        match self {
            Refused::NoMount | Refused::NoRoom => StatusCode::NOT_FOUND,
            Refused::Unauthorized => StatusCode::UNAUTHORIZED,
            Refused::OverCapacity => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `result` label of `chorus_broadcast_requests_total`.
    fn label(self) -> &'static str {
        match self {
            Refused::NoMount | Refused::NoRoom => "not_found",
            Refused::Unauthorized => "unauthorized",
            Refused::OverCapacity => "over_capacity",
        }
    }
}

/// Whether a listener for mount file `file` (`{room}.opus`) may listen, with `token` (the query's, else the
/// `Authorization: Bearer` one): its room, or why not. Nothing is counted here (the caller does).
pub(super) fn admit<'a>(
    state: &AppState,
    file: &'a str,
    token: Option<&str>,
) -> Result<&'a str, Refused> {
    let broadcasts = &state.broadcasts;
    let room = file.strip_suffix(".opus").ok_or(Refused::NoMount)?;
    if state.signaling.room(room).is_none() && broadcasts.mount(room).is_none() {
        return Err(Refused::NoRoom);
    }
    if !broadcasts.is_public(room) && !token.is_some_and(|t| token_admits(state, room, t)) {
        return Err(Refused::Unauthorized);
    }
    if broadcasts.listeners_now.load(Ordering::Relaxed) >= broadcasts.config.max_listeners {
        return Err(Refused::OverCapacity);
    }
    Ok(room)
}

/// The token of a request: the query's, else the `Authorization: Bearer` header's.
pub(super) fn request_token<'a>(
    query: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    query.or_else(|| {
        authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    })
}

/// Whether a request for a listener stream asks for ICY metadata (`Icy-MetaData: 1`).
pub(super) fn wants_icy(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| v.trim_ascii() == b"1")
}

/// Whether the mount is public, on a listener's response: how a node relaying it (`relay.rs`) learns
/// whether its own listeners need a token.
pub(super) const PUBLIC_HEADER: &str = "chorus-public";

/// The headers of a listener's `200` response, beside the status line: the same on both paths.
pub(super) fn response_headers(
    room: &str,
    icy_metaint: Option<usize>,
    public: bool,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("content-type", "audio/ogg".to_owned()),
        ("cache-control", "no-cache, no-store".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
        ("icy-name", room.to_owned()),
        ("icy-pub", "0".to_owned()),
        (PUBLIC_HEADER, if public { "1" } else { "0" }.to_owned()),
    ];
    if let Some(metaint) = icy_metaint {
        h.push(("icy-metaint", metaint.to_string()));
    }
    h
}

async fn listen(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    Query(query): Query<ListenQuery>,
    kill: Option<Extension<ConnectionControl>>,
    headers: HeaderMap,
) -> Response {
    let broadcasts = &state.broadcasts;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = request_token(query.token.as_deref(), authorization);
    let room = match admit(&state, &file, token) {
        Ok(room) => room,
        // A room another node of the cluster hosts: its mount is relayed here, once for all listeners.
        Err(Refused::NoRoom) if state.cluster.is_some() => {
            if let Err(e) = super::relay::ensure(&state, &file).await {
                debug!(file, error = %e, "no mount to relay");
                return refuse(broadcasts, Refused::NoRoom);
            }
            match admit(&state, &file, token) {
                Ok(room) => room,
                Err(refused) => return refuse(broadcasts, refused),
            }
        }
        Err(refused) => return refuse(broadcasts, refused),
    };
    broadcasts
        .metrics
        .requests
        .with_label_values(&["accepted"])
        .inc();
    let icy = wants_icy(headers.get("icy-metadata").map(HeaderValue::as_bytes));
    let kill = kill.map(|Extension(k)| k).unwrap_or_default();
    kill.set_send_buffer(broadcasts.config.listener_send_buffer_bytes);
    let metaint = broadcasts.config.icy_metaint_bytes;
    let stream = ListenerStream::start(state.broadcasts.clone(), room, kill, icy);
    let mut response = Response::new(Body::from_stream(futures_util::stream::unfold(
        stream,
        ListenerStream::next,
    )));
    let h = response.headers_mut();
    for (name, value) in response_headers(room, icy.then_some(metaint), broadcasts.is_public(room))
    {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    }
    response
}

/// A refused listener: its status, a one-line text body, counted.
fn refuse(broadcasts: &Broadcasts, refused: Refused) -> Response {
    broadcasts
        .metrics
        .requests
        .with_label_values(&[refused.label()])
        .inc();
    let mut response = (refused.status(), format!("{refused}\n")).into_response();
    if refused == Refused::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"chorus-broadcast\""),
        );
    }
    response
}

/// A token for this room (an access token whose `room` is it) or an admin token, in the query or the
/// `Authorization: Bearer` header.
pub(crate) fn authorized(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> bool {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    request_token(query, authorization).is_some_and(|t| token_admits(state, room, t))
}

/// Whether `token` is an access token for `room` or an admin token.
fn token_admits(state: &AppState, room: &str, token: &str) -> bool {
    let keys = state.signaling.api_keys();
    let now = signaling::auth::unix_now();
    signaling::auth::verify_token(token, keys, now).is_ok_and(|c| c.room == room)
        || signaling::auth::verify_admin_token(token, keys, now).is_ok()
}

/// ICY interleaving state of one listener: a metadata block after every `metaint` bytes of the body.
#[derive(Clone, Debug)]
pub(super) struct Icy {
    metaint: usize,
    /// Audio bytes until the next metadata block.
    until: usize,
    /// The block last sent (a block is sent again only when it changed; otherwise a zero length byte).
    sent: Option<Bytes>,
}

/// The byte a metadata interval carries when the title did not change.
static NO_META: &[u8] = &[0];

impl Icy {
    pub(super) fn new(metaint: usize) -> Self {
        Icy {
            metaint,
            until: metaint,
            sent: None,
        }
    }

    /// Audio bytes that may go before the next metadata block.
    pub(super) fn room(&self) -> usize {
        self.until
    }

    /// `n` audio bytes went out (at most [`Icy::room`]): the metadata block due after them, if one is —
    /// `meta`, the mount's block now, when it differs from the last one sent; a zero byte otherwise.
    pub(super) fn after(&mut self, n: usize, meta: &Bytes) -> Option<Bytes> {
        self.until -= n;
        if self.until > 0 {
            return None;
        }
        self.until = self.metaint;
        if self.sent.as_ref() == Some(meta) {
            return Some(Bytes::from_static(NO_META));
        }
        self.sent = Some(meta.clone());
        Some(meta.clone())
    }
}

/// One listener's body on an HTTP connection (the keep-alive case, see [`router`]).
struct ListenerStream {
    broadcasts: Arc<Broadcasts>,
    mount: Arc<Mount>,
    id: u64,
    slot: Arc<ListenerSlot>,
    rx: broadcast::Receiver<Page>,
    /// Chunks ready to hand to the connection.
    out: VecDeque<Bytes>,
    icy: Option<Icy>,
    done: bool,
}

impl ListenerStream {
    fn start(broadcasts: Arc<Broadcasts>, room: &str, kill: ConnectionControl, icy: bool) -> Self {
        let mount = broadcasts.mount_or_create(room);
        let id = broadcasts.next_listener.fetch_add(1, Ordering::Relaxed);
        let (rx, headers, last, joined) = {
            let pager = mount.lock_pager();
            (
                mount.pages.subscribe(),
                pager.headers.clone(),
                pager.recent.back().cloned(),
                pager.next_number,
            )
        };
        let slot = Arc::new(ListenerSlot {
            taken: Default::default(),
            kill,
            joined,
        });
        mount
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, slot.clone());
        broadcasts.listener_joined(&mount);
        debug!(room, listener = id, icy, "broadcast listener connected");
        let metaint = broadcasts.config.icy_metaint_bytes;
        let mut stream = ListenerStream {
            broadcasts,
            mount,
            id,
            slot,
            rx,
            out: VecDeque::new(),
            icy: icy.then(|| Icy::new(metaint)),
            done: false,
        };
        stream.push(headers);
        if let Some(page) = last {
            stream.push(page.bytes);
        }
        stream
    }

    /// Queue `data` for the connection, with a metadata block every `metaint` audio bytes.
    fn push(&mut self, mut data: Bytes) {
        let Some(icy) = &mut self.icy else {
            self.out.push_back(data);
            return;
        };
        let meta = self.mount.meta();
        while !data.is_empty() {
            let n = icy.room().min(data.len());
            self.out.push_back(data.split_to(n));
            if let Some(block) = icy.after(n, &meta) {
                self.out.push_back(block);
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        loop {
            if let Some(chunk) = self.out.pop_front() {
                self.broadcasts.count_sent(&self.mount, chunk.len());
                return Some((Ok(chunk), self));
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Ok(page) => {
                    self.slot.taken.store(page.number + 1, Ordering::Relaxed);
                    self.push(page.bytes);
                }
                Err(RecvError::Lagged(missed)) => {
                    // The ring overtook this listener: it reads too slowly for live audio.
                    self.broadcasts
                        .drop_slow(&self.mount, self.id, &self.slot.kill, missed);
                    self.done = true;
                    let error = std::io::Error::other("listener too slow: dropped");
                    return Some((Err(error), self));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for ListenerStream {
    fn drop(&mut self) {
        self.mount
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.broadcasts.listener_left(&self.mount);
        debug!(room = %self.mount.room, listener = self.id, "broadcast listener gone");
    }
}
