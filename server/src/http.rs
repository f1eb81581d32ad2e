//! HTTP: the demo page and SDK, WebSocket signaling, metrics, health, the admin API, and (development mode)
//! tokens.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{future, SinkExt, StreamExt};
use serde::Deserialize;
use signaling::session::{ProtocolViolation, WsFrame};
use tracing::Instrument;

use crate::state::AppState;

/// Largest WebSocket message the transport accepts; signaling refuses anything over its own 64 KiB limit
/// with a typed error, so the transport limit only needs to be above it.
const WS_TRANSPORT_LIMIT: usize = 1 << 20;

/// What each WebSocket's read buffer starts at. tungstenite's default (128 KiB, allocated and zero-filled
/// on the first read) was the largest single cost of a participant (issue 15); signaling messages are a
/// few hundred bytes, an offer a few KiB, and a longer frame still arrives whole: tungstenite reserves a
/// frame's announced length before reading it (up to [`WS_TRANSPORT_LIMIT`]), and the patched tungstenite
/// (vendor/tungstenite/PATCHES.md) goes back to this size once such a frame is read. 1 KiB holds every
/// message a session sends after its offer (moves, mutes, pings: tens to hundreds of bytes); an offer
/// costs one more read and a short-lived larger buffer, once per join. 4 KiB before (2026-12-06): 3 KiB
/// of every participant that only an offer ever used.
pub(crate) const WS_READ_BUFFER_BYTES: usize = 1024;

/// How many bytes of outgoing frames tungstenite gathers before writing them to the socket. Signaling
/// flushes after every message, so this only ever held one message. A larger message (the `joined` of a
/// big room) grows the buffer for as long as it takes to write it; the patched tungstenite
/// (vendor/tungstenite/PATCHES.md) then frees it, as it frees a read buffer grown by a large frame.
pub(crate) const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// The routes of the page, the SDK, signaling, metrics, health and development tokens (the admin API and
/// the fallbacks are added by the caller: lib.rs).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/chorus.js", get(sdk))
        .route("/demo.js", get(demo_js))
        .route("/demo.css", get(demo_css))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/dev-token", get(dev_token))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../clients/web/index.html"),
    )
}

async fn sdk() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../clients/web/chorus.js"),
    )
}

async fn demo_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../clients/web/demo.js"),
    )
}

async fn demo_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../clients/web/demo.css"),
    )
}

async fn ws(upgrade: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    upgrade
        .max_message_size(WS_TRANSPORT_LIMIT)
        .max_frame_size(WS_TRANSPORT_LIMIT)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| run_ws(socket, state))
}

async fn run_ws(socket: WebSocket, state: Arc<AppState>) {
    // Held until the session has left its room: a drain waits for these.
    let _open = state.sessions.open();
    let transport = socket
        .with(|frame: WsFrame| future::ready(Ok::<_, axum::Error>(to_message(frame))))
        .map(|m| m.map(from_message).or_else(violation));
    signaling::session::run_session(transport, state.signaling.clone())
        .instrument(signaling::session::session_span())
        .await;
}

fn from_message(m: Message) -> WsFrame {
    match m {
        Message::Text(t) => WsFrame::Text(t.as_str().to_owned()),
        Message::Binary(b) => WsFrame::Binary(b.to_vec()),
        Message::Ping(b) => WsFrame::Ping(b.to_vec()),
        Message::Pong(b) => WsFrame::Pong(b.to_vec()),
        Message::Close(c) => WsFrame::Close(c.map(|c| (c.code, c.reason.as_str().to_owned()))),
    }
}

/// A read error that is the client's WebSocket protocol violation becomes [`WsFrame::Violation`], which
/// the session counts and answers with a close frame; other errors (I/O) stay errors.
fn violation(e: axum::Error) -> Result<WsFrame, axum::Error> {
    let inner = e.into_inner();
    let kind = match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Utf8(_)) => ProtocolViolation::InvalidUtf8,
        // The TCP connection ended without a close frame: a dropped socket, not a bad frame (the session
        // is suspended for a resume, docs/protocol.md).
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => return Err(axum::Error::new(inner)),
        Some(tungstenite::Error::Protocol(_)) => ProtocolViolation::BadFrame,
        Some(tungstenite::Error::Capacity(_)) => ProtocolViolation::TooLarge,
        _ => return Err(axum::Error::new(inner)),
    };
    Ok(WsFrame::Violation(kind))
}

fn to_message(f: WsFrame) -> Message {
    match f {
        WsFrame::Text(t) => Message::Text(t.into()),
        WsFrame::Binary(b) => Message::Binary(b.into()),
        WsFrame::Ping(b) => Message::Ping(b.into()),
        WsFrame::Pong(b) => Message::Pong(b.into()),
        WsFrame::Close(c) => Message::Close(c.map(|(code, reason)| CloseFrame {
            code,
            reason: reason.into(),
        })),
        WsFrame::Violation(v) => Message::Close(Some(CloseFrame {
            code: v.close_code(),
            reason: v.as_str().into(),
        })),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let families = state.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.signaling.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: String,
    name: Option<String>,
}

/// Development mode only: mint a one-day token so the demo page can join without a backend.
async fn dev_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<DevTokenQuery>,
) -> Response {
    let Some((key, secret)) = &state.dev_key else {
        return (StatusCode::NOT_FOUND, "development mode is off\n").into_response();
    };
    let claims = signaling::auth::Claims {
        name: q.name,
        ..signaling::auth::Claims::valid_for(&q.room, &q.identity, 24 * 3600)
    };
    match signaling::auth::create_token(key, secret.as_bytes(), &claims) {
        Ok(token) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1:7880");
            Json(serde_json::json!({ "token": token, "ws_url": format!("ws://{host}/ws") }))
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests;
