//! The RTP endpoints' admin routes (docs/openapi.json): open one for a room, list them, close one. Behind
//! the admin API's token check (`admin::router`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use media_core::sdes::{SdesSuite, SrtpReceiver};
use serde::{Deserialize, Serialize};
use signaling::auth::{is_safe_text, is_valid_room_name};
use signaling::registry::AdmitError;
use signaling::SourceRequest;

use super::rtp::{self, EndpointId, EndpointView, OpenError};
use super::{Kind, Source, StartError};
use crate::admin::{present, present_object, ApiError, JsonObject};
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
    /// Protect the packets with SRTP keyed by SDES (`{}`: a new key of the default suite).
    #[serde(default, deserialize_with = "present_object")]
    srtp: Option<SrtpRequest>,
}

/// `srtp` of an open request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SrtpRequest {
    /// The crypto suite; `AES_CM_128_HMAC_SHA1_80` if absent.
    #[serde(default, deserialize_with = "present")]
    suite: Option<String>,
    /// The master key and salt, base64 as in `a=crypto`'s `inline:`; a new random one if absent.
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
}

/// The SDES parameters of an endpoint opened with SRTP: what the sender is configured with. Only in the
/// response that opened it (the key is a secret: no `Debug`, never logged).
#[derive(Serialize)]
struct CryptoView {
    suite: &'static str,
    /// The master key and salt, base64 (ffmpeg's `-srtp_out_params`).
    key: String,
    /// The SDP attribute (RFC 4568) for a SIP gateway's offer.
    attribute: String,
}

/// The `201` of an open request: the endpoint, and its SRTP parameters.
#[derive(Serialize)]
struct Opened {
    #[serde(flatten)]
    endpoint: EndpointView,
    #[serde(skip_serializing_if = "Option::is_none")]
    crypto: Option<CryptoView>,
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The suite and master key an `srtp` request asks for (a key of its own, or a new one).
fn srtp_keys(req: SrtpRequest) -> Result<(SdesSuite, Vec<u8>), ApiError> {
    let suite = match req.suite.as_deref() {
        None => SdesSuite::AesCm128HmacSha1_80,
        Some(name) => SdesSuite::parse(name).ok_or_else(|| {
            let known: Vec<&str> = SdesSuite::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("srtp.suite must be one of {}", known.join(", ")))
        })?,
    };
    let key = match req.key {
        None => crate::random::bytes(suite.master_len()),
        Some(text) => BASE64
            .decode(text.trim())
            .map_err(|_| ApiError::bad_request("srtp.key is not base64"))?,
    };
    Ok((suite, key))
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
) -> Result<(StatusCode, Json<Opened>), ApiError> {
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
    // Checked before the source joins: a bad key opens nothing.
    let srtp = match req.srtp {
        None => None,
        Some(srtp) => {
            let (suite, key) = srtp_keys(srtp)?;
            let receiver =
                SrtpReceiver::new(suite, &key).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some((suite, key, receiver))
        }
    };
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
    let (receiver, crypto) = match srtp {
        None => (None, None),
        Some((suite, key, receiver)) => {
            let key = BASE64.encode(key);
            let crypto = CryptoView {
                suite: suite.as_str(),
                attribute: format!("a=crypto:1 {} inline:{key}", suite.as_str()),
                key,
            };
            (Some((suite, receiver)), Some(crypto))
        }
    };
    match rtp::open(ingest, source, name, receiver).await {
        Ok(endpoint) => Ok((StatusCode::CREATED, Json(Opened { endpoint, crypto }))),
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
