//! The WHIP/WHEP routes (docs/broadcast.md, "WHIP and WHEP"):
//!
//! - `POST /whip/{room}`, `POST /whep/{room}`: `Content-Type: application/sdp`, `Authorization: Bearer
//!   <access token>` → `201 Created`, `Location: /whip/{room}/{id}`, `ETag`, `Link` (TURN servers), the
//!   answer;
//! - `DELETE /whip/{room}/{id}`: the session leaves the room (`200`), `404` for no such session;
//! - `PATCH /whip/{room}/{id}`: `application/trickle-ice-sdpfrag` with `If-Match`: candidates `204`, an
//!   ICE restart `200` with the server's new fragment;
//! - `OPTIONS` on both: `204` with `Allow` and the CORS headers every response carries.
//!
//! Refusals are the admin API's JSON error shape, counted in `chorus_whip_requests_total`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use media_core::core::offer::MAX_OFFER_BYTES;
use signaling::auth::{is_valid_room_name, unix_now, verify_token};
use signaling::media::MediaError;
use signaling::registry::AdmitError;
use signaling::{SourceEnd, SourceRequest};
use tokio::sync::oneshot;
use tracing::info;

use super::sdp::{self, Etag, Patch, PatchError, Patched};
use super::{Control, Kind, ResourceId, Session, StartError};
use crate::state::AppState;

const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";
/// How long a `DELETE` or `PATCH` waits for its session.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The WHIP and WHEP routes, with their CORS headers.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/whip/{room}",
            post(|s, p, h, b| create(Kind::Whip, s, p, h, b)).options(endpoint_options),
        )
        .route(
            "/whep/{room}",
            post(|s, p, h, b| create(Kind::Whep, s, p, h, b)).options(endpoint_options),
        )
        .route(
            "/whip/{room}/{id}",
            axum::routing::delete(|s, p| delete(Kind::Whip, s, p))
                .patch(|s, p, h, b| patch(Kind::Whip, s, p, h, b))
                .options(resource_options),
        )
        .route(
            "/whep/{room}/{id}",
            axum::routing::delete(|s, p| delete(Kind::Whep, s, p))
                .patch(|s, p, h, b| patch(Kind::Whep, s, p, h, b))
                .options(resource_options),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(middleware::map_response(cors))
}

/// A refused request: status, stable code (the metric's `result`), message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized(message: &str) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn not_found() -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such session")
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chorus\", error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<StartError> for Refusal {
    fn from(e: StartError) -> Refusal {
        let (status, code) = match &e {
            StartError::Admit(AdmitError::Banned { .. }) => (StatusCode::FORBIDDEN, "forbidden"),
            StartError::Admit(_) | StartError::Full => (StatusCode::SERVICE_UNAVAILABLE, "full"),
            StartError::Media(MediaError::BadSdp(_)) => (StatusCode::BAD_REQUEST, "bad_sdp"),
            StartError::Media(_) => (StatusCode::SERVICE_UNAVAILABLE, "media_unavailable"),
        };
        Refusal::new(status, code, e.to_string())
    }
}

impl From<PatchError> for Refusal {
    fn from(e: PatchError) -> Refusal {
        let (status, code) = match &e {
            PatchError::PreconditionRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "precondition_failed")
            }
            PatchError::PreconditionFailed => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            PatchError::BadFragment | PatchError::Restart(MediaError::BadSdp(_)) => {
                (StatusCode::BAD_REQUEST, "bad_sdp")
            }
            PatchError::Restart(_) => (StatusCode::SERVICE_UNAVAILABLE, "media_unavailable"),
        };
        Refusal::new(status, code, e.to_string())
    }
}

/// Counts the outcome by kind and result.
fn counted(
    state: &AppState,
    kind: Kind,
    result: Result<(&'static str, Response), Refusal>,
) -> Response {
    let (label, response) = match result {
        Ok((label, response)) => (label, response),
        Err(refusal) => {
            info!(kind = kind.as_str(), code = refusal.code, message = %refusal.message, "WHIP/WHEP request refused");
            (refusal.code, refusal.into_response())
        }
    };
    state.whip.metrics.request(kind, label);
    response
}

/// Whether the request's `Content-Type` is `expected` (parameters ignored).
fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// The request's body as text: too large is 413, not UTF-8 is 400.
fn text(body: Result<Bytes, BytesRejection>) -> Result<String, Refusal> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {MAX_OFFER_BYTES} bytes"),
            )
        } else {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_sdp",
                "the body could not be read",
            )
        }
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "bad_sdp", "the body is not UTF-8"))
}

/// The access token's claims, checked for `room` and the grant `kind` needs.
fn authorize(
    state: &AppState,
    kind: Kind,
    room: &str,
    headers: &HeaderMap,
) -> Result<(signaling::Claims, (bool, bool)), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Refusal::unauthorized("Authorization: Bearer <access token> is required"))?;
    let claims = verify_token(token.trim(), state.signaling.api_keys(), unix_now())
        .map_err(|e| Refusal::unauthorized(&format!("the access token is not valid: {e}")))?;
    if claims.room != room {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the access token is for another room",
        ));
    }
    let grants = kind.grants(&claims).ok_or_else(|| {
        let need = match kind {
            Kind::Whip => "publish",
            Kind::Whep => "subscribe",
        };
        Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the access token may not {need}"),
        )
    })?;
    Ok((claims, grants))
}

async fn create(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = start(kind, &state, room, &headers, body).await;
    counted(&state, kind, result.map(|r| ("created", r)))
}

async fn start(
    kind: Kind,
    state: &Arc<AppState>,
    room: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let whip = &state.whip;
    if !whip.enabled || !is_valid_room_name(&room) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        ));
    }
    if !content_type_is(headers, SDP) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the offer must be Content-Type: application/sdp",
        ));
    }
    let (claims, (can_publish, can_subscribe)) = authorize(state, kind, &room, headers)?;
    let offer = text(body)?;
    if sdp::audio_lines(&offer) == 0 {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_audio",
            "the offer has no audio m-line",
        ));
    }
    let seat = whip.seat(kind).ok_or(StartError::Full)?;
    let name = claims
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| claims.sub.clone());
    let request = SourceRequest {
        room: room.clone(),
        identity: claims.sub,
        name,
    };
    let mut member = state
        .signaling
        .admit_server_member(request, can_publish, can_subscribe)
        .map_err(StartError::from)?;
    let (answer, events) = match member.connect_peer(offer.clone()).await {
        Ok(connected) => connected,
        Err(e) => {
            member.leave(SourceEnd::Failed).await;
            return Err(StartError::from(e).into());
        }
    };
    let id = ResourceId::random();
    let etag = Etag::random();
    let location = format!("/{}/{room}/{id}", kind.as_str());
    let ice_servers = state
        .signaling
        .config()
        .turn
        .ice_servers(member.sid(), unix_now());
    info!(kind = kind.as_str(), room = %room, sid = member.sid(), %id, "WHIP/WHEP session created");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    insert(h, header::LOCATION, &location);
    insert(h, header::ETAG, etag.as_str());
    h.insert(
        HeaderName::from_static("accept-patch"),
        HeaderValue::from_static(SDP_FRAG),
    );
    for server in ice_servers {
        for url in server.urls {
            let link = format!(
                "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; \
                 credential-type=\"password\"",
                server.username, server.credential
            );
            if let Ok(value) = HeaderValue::from_str(&link) {
                h.append(header::LINK, value);
            }
        }
    }
    Session {
        id,
        kind,
        member,
        events,
        offer,
        etag,
        seat,
        guard: state.sessions.open(),
    }
    .spawn(whip);
    Ok(response)
}

/// Sets a header from text the server made (a path, an entity tag): always a valid value.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

async fn delete(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        let control = ResourceId::parse(&id)
            .and_then(|id| state.whip.control(kind, &room, &id))
            .ok_or_else(Refusal::not_found)?;
        let (reply, done) = oneshot::channel();
        // A session that ends meanwhile is gone: the same 404 as one that never was.
        control
            .send(Control::Delete(reply))
            .await
            .map_err(|_| Refusal::not_found())?;
        let _ = tokio::time::timeout(CONTROL_TIMEOUT, done).await;
        Ok(("deleted", StatusCode::OK.into_response()))
    }
    .await;
    counted(&state, kind, result)
}

async fn patch(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let control = ResourceId::parse(&id)
            .and_then(|id| state.whip.control(kind, &room, &id))
            .ok_or_else(Refusal::not_found)?;
        if !content_type_is(&headers, SDP_FRAG) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a PATCH must be Content-Type: application/trickle-ice-sdpfrag",
            ));
        }
        let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
        let patch = Patch::new(&text(body)?, if_match)?;
        let (reply, done) = oneshot::channel();
        control
            .send(Control::Patch { patch, reply })
            .await
            .map_err(|_| Refusal::not_found())?;
        let patched = match tokio::time::timeout(CONTROL_TIMEOUT, done).await {
            Ok(Ok(patched)) => patched?,
            _ => return Err(Refusal::not_found()),
        };
        Ok(match patched {
            Patched::Trickled => ("trickle", StatusCode::NO_CONTENT.into_response()),
            Patched::Restarted { fragment, etag } => {
                let mut response = (StatusCode::OK, fragment).into_response();
                let h = response.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP_FRAG));
                insert(h, header::ETAG, etag.as_str());
                ("ice_restart", response)
            }
        })
    }
    .await;
    counted(&state, kind, result)
}

async fn endpoint_options() -> Response {
    options("POST, OPTIONS", Some(SDP))
}

async fn resource_options() -> Response {
    options("PATCH, DELETE, OPTIONS", None)
}

fn options(allow: &'static str, accept_post: Option<&'static str>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    if let Some(types) = accept_post {
        h.insert(
            HeaderName::from_static("accept-post"),
            HeaderValue::from_static(types),
        );
    }
    response
}

/// Every WHIP/WHEP response may be read by a page of another origin (a browser publisher or player):
/// the token, not the origin, is what admits.
async fn cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag, Accept-Patch, Accept-Post, Allow"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}
