//! The RTP endpoints' admin routes (docs/openapi.json): open one for a room, list them, close one. Behind
//! the admin API's token check (`admin::router`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use signaling::auth::{is_safe_text, is_valid_room_name};
use signaling::registry::AdmitError;
use signaling::SourceRequest;

use super::rtp::{self, EndpointId, EndpointView, OpenError};
use super::{Kind, Source, StartError};
use crate::admin::{present, ApiError, JsonObject};
use crate::state::AppState;

/// The longest identity or name (as a token's).
const MAX_TEXT_CHARS: usize = 128;

/// The RTP routes (with the admin API's, `admin::ROUTES`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/rooms/{room}/rtp", post(open))
        .route("/admin/v1/rtp", get(list))
        .route("/admin/v1/rtp/{id}", delete(close))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    /// The source's identity (a second source with the same identity replaces the first).
    #[serde(default, deserialize_with = "present")]
    identity: Option<String>,
    /// Its display name; the identity if absent.
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        let (status, code) = match &e {
            StartError::Admit(AdmitError::Banned { .. }) => (StatusCode::FORBIDDEN, "banned"),
            StartError::Admit(AdmitError::RoomFull { .. }) => (StatusCode::CONFLICT, "room_full"),
            StartError::Admit(AdmitError::RoomClosed) => (StatusCode::CONFLICT, "room_closed"),
            StartError::Admit(AdmitError::Draining) => {
                (StatusCode::SERVICE_UNAVAILABLE, "draining")
            }
            StartError::TooMany(_) => (StatusCode::SERVICE_UNAVAILABLE, "ingest_capacity"),
            StartError::Media(_) => (StatusCode::SERVICE_UNAVAILABLE, "media_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn valid_text(field: &str, text: &str) -> Result<(), ApiError> {
    if (1..=MAX_TEXT_CHARS).contains(&text.chars().count()) && is_safe_text(text) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{field} must be 1 to {MAX_TEXT_CHARS} characters without control characters"
    )))
}

async fn open(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    JsonObject(req): JsonObject<OpenRequest>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    if !is_valid_room_name(&room) {
        return Err(ApiError::bad_request("invalid room name"));
    }
    let identity = match req.identity {
        Some(identity) => identity,
        None => format!("rtp-{}", crate::random::hex(4)),
    };
    valid_text("identity", &identity)?;
    let name = req.name.unwrap_or_else(|| identity.clone());
    valid_text("name", &name)?;
    let request = SourceRequest {
        room,
        identity,
        name: name.clone(),
    };
    let ingest = &state.ingest;
    let source = Source::start(
        ingest,
        &state.signaling,
        &state.sessions,
        Kind::Rtp,
        request,
    )
    .await
    .inspect_err(|e| ingest.metrics.request(Kind::Rtp, e.as_str()))?;
    match rtp::open(ingest, source, name).await {
        Ok(view) => Ok((StatusCode::CREATED, Json(view))),
        Err(e @ OpenError::Bind(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest_unavailable",
            e.to_string(),
        )),
    }
}

async fn list(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "endpoints": state.ingest.rtp.list() }))
}

async fn close(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "rtp_not_found",
            "no such RTP endpoint",
        )
    };
    let id = EndpointId::parse(&id).ok_or_else(not_found)?;
    if state.ingest.rtp.stop(&id).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}
