//! One listener: `GET /live/{room}.opus` — access, the response headers Icecast clients expect, and the
//! body: header pages, the last page, then live pages from the mount's ring, with ICY metadata interleaved
//! every `icy-metaint` bytes when the client asked for it (`Icy-MetaData: 1`).

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

/// The listener route (served when `broadcast.enabled`).
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/live/{file}", get(listen))
}

#[derive(Deserialize)]
struct ListenQuery {
    token: Option<String>,
}

/// The reason a listener is refused, as its status and a one-line text body.
fn refuse(
    broadcasts: &Broadcasts,
    status: StatusCode,
    result: &str,
    text: &'static str,
) -> Response {
    broadcasts
        .metrics
        .requests
        .with_label_values(&[result])
        .inc();
    (status, text).into_response()
}

async fn listen(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    Query(query): Query<ListenQuery>,
    kill: Option<Extension<ConnectionControl>>,
    headers: HeaderMap,
) -> Response {
    let broadcasts = &state.broadcasts;
    let Some(room) = file.strip_suffix(".opus") else {
        return refuse(
            broadcasts,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such mount\n",
        );
    };
    if state.signaling.room(room).is_none() && broadcasts.mount(room).is_none() {
        return refuse(
            broadcasts,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such room\n",
        );
    }
    if !broadcasts.is_public(room) && !authorized(&state, room, &headers, query.token.as_deref()) {
        let mut response = refuse(
            broadcasts,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this mount needs a token: ?token=<access token for the room> or Authorization: Bearer\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"chorus-broadcast\""),
        );
        return response;
    }
    if broadcasts.listeners_now.load(Ordering::Relaxed) >= broadcasts.config.max_listeners {
        return refuse(
            broadcasts,
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "the server has its maximum of listeners\n",
        );
    }
    broadcasts
        .metrics
        .requests
        .with_label_values(&["accepted"])
        .inc();
    let icy = headers
        .get("icy-metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1");
    let kill = kill.map(|Extension(k)| k).unwrap_or_default();
    kill.set_send_buffer(broadcasts.config.listener_send_buffer_bytes);
    let stream = ListenerStream::start(state.broadcasts.clone(), room, kill, icy);
    let metaint = broadcasts.config.icy_metaint_bytes;
    let mut response = Response::new(Body::from_stream(futures_util::stream::unfold(
        stream,
        ListenerStream::next,
    )));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(name) = HeaderValue::from_str(room) {
        h.insert("icy-name", name);
    }
    h.insert("icy-pub", HeaderValue::from_static("0"));
    if icy {
        h.insert("icy-metaint", HeaderValue::from(metaint));
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
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = query.or(bearer) else {
        return false;
    };
    let keys = state.signaling.api_keys();
    let now = signaling::auth::unix_now();
    signaling::auth::verify_token(token, keys, now).is_ok_and(|c| c.room == room)
        || signaling::auth::verify_admin_token(token, keys, now).is_ok()
}

/// ICY interleaving state of one listener.
struct Icy {
    metaint: usize,
    /// Audio bytes until the next metadata block.
    until: usize,
    /// The block last sent (a block is sent again only when it changed; otherwise a zero length byte).
    sent: Option<Bytes>,
}

/// One listener's body.
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

/// The byte a metadata interval carries when the title did not change.
static NO_META: &[u8] = &[0];

impl ListenerStream {
    fn start(broadcasts: Arc<Broadcasts>, room: &str, kill: ConnectionControl, icy: bool) -> Self {
        let mount = broadcasts.mount_or_create(room);
        let id = broadcasts.next_listener.fetch_add(1, Ordering::Relaxed);
        let (rx, headers, last, joined) = {
            let pager = mount.lock_pager();
            (
                mount.pages.subscribe(),
                pager.headers.clone(),
                pager.last.clone(),
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
        mount.listeners_now.fetch_add(1, Ordering::Relaxed);
        mount.listeners_total.fetch_add(1, Ordering::Relaxed);
        broadcasts.listeners_now.fetch_add(1, Ordering::Relaxed);
        broadcasts.metrics.listeners.inc();
        broadcasts.update_taps();
        debug!(room, listener = id, icy, "broadcast listener connected");
        let metaint = broadcasts.config.icy_metaint_bytes;
        let mut stream = ListenerStream {
            broadcasts,
            mount,
            id,
            slot,
            rx,
            out: VecDeque::new(),
            icy: icy.then_some(Icy {
                metaint,
                until: metaint,
                sent: None,
            }),
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
        while !data.is_empty() {
            let n = icy.until.min(data.len());
            self.out.push_back(data.split_to(n));
            icy.until -= n;
            if icy.until == 0 {
                icy.until = icy.metaint;
                let meta = self.mount.meta();
                if icy.sent.as_ref() == Some(&meta) {
                    self.out.push_back(Bytes::from_static(NO_META));
                } else {
                    icy.sent = Some(meta.clone());
                    self.out.push_back(meta);
                }
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        loop {
            if let Some(chunk) = self.out.pop_front() {
                let n = chunk.len() as u64;
                self.mount.bytes_sent.fetch_add(n, Ordering::Relaxed);
                self.broadcasts.metrics.bytes.inc_by(n);
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
        if self.mount.listeners_now.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The tap stops: the next listener must not start on a page from before the pause.
            let mut pager = self.mount.lock_pager();
            pager.last = None;
            pager.packets.clear();
        }
        self.broadcasts
            .listeners_now
            .fetch_sub(1, Ordering::Relaxed);
        self.broadcasts.metrics.listeners.dec();
        self.broadcasts.update_taps();
        debug!(room = %self.mount.room, listener = self.id, "broadcast listener gone");
    }
}
