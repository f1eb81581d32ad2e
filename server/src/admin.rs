//! The admin REST API (docs/openapi.json): rooms, participants, drain. JSON in and out; every request needs
//! `Authorization: Bearer <admin token>` (an HS256 JWT with `"admin": true`, signed with an API secret:
//! `chorus token create --admin`). Refusals are typed JSON errors and counted in
//! `chorus_admin_requests_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use signaling::media::{MixSettings, RoomMode, RoomSettings, SpatialSettings};
use signaling::protocol::{ModerateAction, ParticipantInfo};
use signaling::{AdminError, RoomOrigin, RoomSnapshot, RoomSpec};
use tracing::{info, warn};
use vocab::room::{MIX_BITRATE_BPS, MIX_MAX_COMPLEXITY, MIX_MAX_JITTER_MS};
use vocab::MAX_SLOTS;

use crate::broadcast::MountView;
use crate::config::{MAX_EMPTY_TIMEOUT_SECS, MAX_ROOM_PARTICIPANTS};
use crate::recording::RecordSettings;
use crate::state::{begin_drain, AppState};

/// A refused admin request: HTTP status, stable code, human message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The request matches the schema but its settings contradict each other (the one rule JSON Schema
    /// cannot state: `jitter_min_ms <= jitter_max_ms`, after the server's defaults fill absent fields).
    fn invalid_settings(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            message,
        )
    }
}

/// The admin API's status and error code for `e`: the one mapping, also read back when another node's
/// admin API refuses a moderation (`cluster::remote`).
pub(crate) fn admin_error_status(e: &AdminError) -> (StatusCode, &'static str) {
    match e {
        AdminError::InvalidRoomName => (StatusCode::BAD_REQUEST, "bad_request"),
        AdminError::RoomExists => (StatusCode::CONFLICT, "room_exists"),
        AdminError::RoomSettingsConflict => (StatusCode::CONFLICT, "room_settings_conflict"),
        AdminError::RoomNotFound => (StatusCode::NOT_FOUND, "room_not_found"),
        AdminError::ParticipantNotFound => (StatusCode::NOT_FOUND, "participant_not_found"),
        // Not this node's participant (a room spanning nodes): not found here, the message says where.
        AdminError::RemoteParticipant => (StatusCode::NOT_FOUND, "participant_not_found"),
        AdminError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        AdminError::MediaUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "media_unavailable"),
        AdminError::SameRoom => (StatusCode::CONFLICT, "same_room"),
        AdminError::NodeUnavailable => (StatusCode::BAD_GATEWAY, "cluster_unavailable"),
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let (status, code) = admin_error_status(&e);
        ApiError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    /// A body over [`MAX_BODY_BYTES`] is 413, one without `Content-Type: application/json` 415; a body
    /// that is not JSON or does not match the schema is 400.
    fn from(e: JsonRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            ),
            _ => ApiError::bad_request(e.body_text()),
        }
    }
}

/// An admin request body: a JSON object, deserialized into `T`. Serde alone would also take an array for a
/// struct (its fields in order, `[true]` for `{"muted": true}`); the API documents objects, so an array or
/// any other JSON value is 400 like every body that does not match the schema.
pub struct JsonObject<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S>
    for JsonObject<T>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(object) =
            Json::<serde_json::Map<String, serde_json::Value>>::from_request(req, state).await?;
        serde_json::from_value(serde_json::Value::Object(object))
            .map(JsonObject)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "Failed to deserialize the JSON body into the target type: {e}"
                ))
            })
    }
}

/// Largest admin request body; the largest valid one (a room with every setting) is under 1 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A method the path does not serve: 405 with the JSON error shape (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not serve that method (see the Allow header)",
    )
}

/// An optional field that, when present, must be a value (`null` is refused, as the schema says; leave
/// the field out for the server's default). With `#[serde(default)]` for the absent case.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// As [`present`] for a settings object: a JSON object only (serde would also read a struct from an
/// array of its fields in order, which the schema does not allow).
pub(crate) fn present_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let object = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    T::deserialize(serde_json::Value::Object(object))
        .map(Some)
        .map_err(D::Error::custom)
}

/// A path nobody serves: 404 with the JSON error shape.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// Integer fields accept any JSON number with a zero fractional part (`15` and `15.0` alike), as JSON
/// Schema's `integer` does; fractions, negatives and values out of the field's range are refused.
/// Like every optional field, `null` is refused: the schema says integer, and leaving the field out is
/// how to ask for the server's default.
mod integer {
    use serde::de::{Deserialize, Deserializer, Error};

    pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let n = serde_json::Number::deserialize(d)?;
        let value = match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u,
            // 2^64 as f64 is exact; below it every integer-valued f64 converts to u64 without loss.
            (None, Some(f))
                if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) =>
            {
                f as u64
            }
            _ => {
                return Err(D::Error::custom(format!(
                    "expected a non-negative integer, found {n}"
                )))
            }
        };
        T::try_from(value)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"chorus-admin\""),
            );
        }
        response
    }
}

/// Every admin route (method, path), as docs/openapi.json documents them.
#[cfg(test)]
const ROUTES: [(&str, &str); 35] = [
    ("GET", "/admin/v1/rooms"),
    ("POST", "/admin/v1/rooms"),
    ("GET", "/admin/v1/rooms/{room}"),
    ("DELETE", "/admin/v1/rooms/{room}"),
    ("GET", "/admin/v1/rooms/{room}/participants"),
    ("DELETE", "/admin/v1/rooms/{room}/participants/{sid}"),
    ("POST", "/admin/v1/rooms/{room}/participants/{sid}/mute"),
    ("POST", "/admin/v1/rooms/{room}/participants/{sid}/deafen"),
    ("POST", "/admin/v1/rooms/{room}/participants/{sid}/move"),
    ("GET", "/admin/v1/drain"),
    ("POST", "/admin/v1/drain"),
    ("GET", "/admin/v1/broadcasts"),
    ("GET", "/admin/v1/rooms/{room}/broadcast"),
    ("PUT", "/admin/v1/rooms/{room}/broadcast"),
    ("GET", "/admin/v1/cluster/nodes"),
    ("GET", "/admin/v1/recordings"),
    ("GET", "/admin/v1/recordings/{id}"),
    ("DELETE", "/admin/v1/recordings/{id}"),
    ("GET", "/admin/v1/recordings/{id}/audio"),
    ("GET", "/admin/v1/recordings/{id}/metadata"),
    ("GET", "/admin/v1/rooms/{room}/recordings"),
    ("POST", "/admin/v1/rooms/{room}/recordings"),
    ("DELETE", "/admin/v1/rooms/{room}/recordings"),
    ("POST", "/admin/v1/rooms/{room}/rtp"),
    ("GET", "/admin/v1/rtp"),
    ("DELETE", "/admin/v1/rtp/{id}"),
    ("POST", "/admin/v1/rooms/{room}/playback"),
    ("GET", "/admin/v1/rooms/{room}/playback"),
    ("DELETE", "/admin/v1/rooms/{room}/playback"),
    ("POST", "/admin/v1/rooms/{room}/playback/skip"),
    ("POST", "/admin/v1/rooms/{room}/announce"),
    ("GET", "/admin/v1/rooms/{room}/announce"),
    ("PUT", "/admin/v1/rooms/{room}/hold_music"),
    ("GET", "/admin/v1/rooms/{room}/hold_music"),
    ("DELETE", "/admin/v1/rooms/{room}/hold_music"),
];

/// The admin routes, under `/admin/v1` (the same as [`ROUTES`]).
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/rooms", get(list_rooms).post(create_room))
        .route("/admin/v1/rooms/{room}", get(get_room).delete(delete_room))
        .route(
            "/admin/v1/rooms/{room}/participants",
            get(list_participants),
        )
        .route(
            "/admin/v1/rooms/{room}/participants/{sid}",
            axum::routing::delete(kick_participant),
        )
        .route(
            "/admin/v1/rooms/{room}/participants/{sid}/mute",
            post(mute_participant),
        )
        .route(
            "/admin/v1/rooms/{room}/participants/{sid}/deafen",
            post(deafen_participant),
        )
        .route(
            "/admin/v1/rooms/{room}/participants/{sid}/move",
            post(move_participant),
        )
        .route("/admin/v1/drain", get(drain_status).post(start_drain))
        .route("/admin/v1/broadcasts", get(list_broadcasts))
        .route(
            "/admin/v1/rooms/{room}/broadcast",
            get(get_broadcast).put(set_broadcast),
        )
        .route(
            "/admin/v1/cluster/nodes",
            get(crate::cluster::admin::list_nodes),
        )
        .merge(crate::recording::routes())
        .merge(crate::ingest::rtp_routes())
        .merge(crate::playout::http::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Inside the token check: only authorised requests are forwarded.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::admin::forward_room_requests,
        ))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

/// Checks the admin token, then counts the request by result.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = match check_token(&state, request.headers()) {
        Ok(subject) => {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let response = next.run(request).await;
            if !response.status().is_success() {
                info!(subject = ?subject, %method, %path, status = response.status().as_u16(), "admin request refused");
            } else if method != axum::http::Method::GET {
                info!(subject = ?subject, %method, %path, "admin request");
            }
            response
        }
        Err(e) => {
            warn!(code = e.code, "admin request not authorised");
            e.into_response()
        }
    };
    let result = match response.status() {
        s if s.is_success() => "ok",
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::PAYLOAD_TOO_LARGE => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    state
        .metrics
        .admin_requests
        .with_label_values(&[result])
        .inc();
    response
}

/// The subject of a valid admin token in the `Authorization` header.
fn check_token(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an admin token is required: Authorization: Bearer <token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))?;
    let now = signaling::auth::unix_now();
    match signaling::auth::verify_admin_token(token, state.signaling.api_keys(), now) {
        Ok(claims) => Ok(claims.sub),
        Err(signaling::auth::AuthError::NotAdmin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token carries no admin grant",
        )),
        Err(e) => Err(unauthorized(&e.to_string())),
    }
}

/// A room as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct RoomView {
    pub name: String,
    pub mode: RoomMode,
    pub slots: u8,
    pub max_participants: usize,
    pub empty_timeout_secs: u64,
    pub origin: RoomOrigin,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Being deleted.
    pub closing: bool,
    pub num_participants: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixSettings>,
    /// Positional voice, in a spatial room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spatial: Option<SpatialSettings>,
    /// What the room records automatically (its `record` setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSettings>,
    /// What the room plays while it has one person (its `hold_music` setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_music: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantInfo>>,
}

impl RoomView {
    fn new(state: &AppState, room: RoomSnapshot, with_participants: bool) -> Self {
        RoomView {
            record: state.recordings.record_settings(&room.name),
            hold_music: state.playout.hold_music(&room.name),
            mode: room.settings.mode,
            slots: room.settings.slots,
            max_participants: room.max_participants,
            empty_timeout_secs: room.empty_timeout.as_secs(),
            origin: room.origin,
            created_at: room.created_at_unix,
            closing: room.closing,
            num_participants: room.participants.len() + room.remote_participants.len(),
            mix: (room.settings.mode == RoomMode::Mix).then_some(room.settings.mix),
            spatial: room.settings.spatial,
            participants: with_participants.then(|| room.all_participants().cloned().collect()),
            name: room.name,
        }
    }
}

async fn list_rooms(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let rooms: Vec<RoomView> = state
        .signaling
        .rooms()
        .into_iter()
        .map(|r| RoomView::new(&state, r, false))
        .collect();
    Json(serde_json::json!({ "rooms": rooms }))
}

/// `POST /admin/v1/rooms`: every field but `name` is optional (server defaults). `slots` and `mix` are
/// settings of one mode, so they need `mode`: a request means the same whatever the server's default mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub name: String,
    #[serde(default, deserialize_with = "present")]
    pub mode: Option<RoomMode>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub slots: Option<u8>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub max_participants: Option<usize>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub empty_timeout_secs: Option<u64>,
    #[serde(default, deserialize_with = "present_object")]
    pub mix: Option<MixPatch>,
    /// Positional voice (either mode); absent fields take the defaults of [`SpatialSettings`], not the
    /// server's `[room.spatial]`. Absent: the room is not spatial.
    #[serde(default, deserialize_with = "present_object")]
    pub spatial: Option<SpatialSettings>,
    /// Recorded from its creation on (docs/broadcast.md, "Recording"). Absent: not recorded.
    #[serde(default, deserialize_with = "present_object")]
    pub record: Option<RecordSettings>,
    /// Played while the room has one person (docs/broadcast.md, "Playout"): a file or `.m3u` playlist in
    /// the media directory. Absent: none.
    #[serde(default, deserialize_with = "present")]
    pub hold_music: Option<String>,
}

/// Mixer settings of a new room; absent fields take the server's `[room.mix]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixPatch {
    #[serde(default, deserialize_with = "integer::opt")]
    pub bitrate_bps: Option<u32>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub complexity: Option<u8>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub shared_complexity: Option<u8>,
    #[serde(default, deserialize_with = "present")]
    pub fec: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub dtx: Option<bool>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub jitter_min_ms: Option<u32>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub jitter_max_ms: Option<u32>,
}

impl MixPatch {
    /// The ranges docs/openapi.json states for each field on its own (400 when out of range).
    fn check_ranges(&self) -> Result<(), ApiError> {
        if self
            .bitrate_bps
            .is_some_and(|b| !MIX_BITRATE_BPS.contains(&b))
        {
            return Err(ApiError::bad_request(
                "mix bitrate_bps must be 6000 to 128000",
            ));
        }
        if self.complexity.is_some_and(|c| c > MIX_MAX_COMPLEXITY) {
            return Err(ApiError::bad_request("mix complexity must be 0 to 10"));
        }
        if self
            .shared_complexity
            .is_some_and(|c| c > MIX_MAX_COMPLEXITY)
        {
            return Err(ApiError::bad_request(
                "mix shared_complexity must be 0 to 10",
            ));
        }
        if [self.jitter_min_ms, self.jitter_max_ms]
            .iter()
            .flatten()
            .any(|&ms| ms > MIX_MAX_JITTER_MS)
        {
            return Err(ApiError::bad_request(
                "mix jitter_min_ms and jitter_max_ms must be 0 to 1000",
            ));
        }
        Ok(())
    }

    fn apply(self, base: MixSettings) -> MixSettings {
        MixSettings {
            bitrate_bps: self.bitrate_bps.unwrap_or(base.bitrate_bps),
            complexity: self.complexity.unwrap_or(base.complexity),
            shared_complexity: self.shared_complexity.unwrap_or(base.shared_complexity),
            fec: self.fec.unwrap_or(base.fec),
            dtx: self.dtx.unwrap_or(base.dtx),
            jitter_min_ms: self.jitter_min_ms.unwrap_or(base.jitter_min_ms),
            jitter_max_ms: self.jitter_max_ms.unwrap_or(base.jitter_max_ms),
        }
    }
}

/// The spec of a room to create, checked against the server's limits.
pub fn room_spec(
    req: CreateRoom,
    defaults: &crate::config::RoomDefaults,
) -> Result<RoomSpec, ApiError> {
    if req.mode.is_none() && (req.slots.is_some() || req.mix.is_some()) {
        return Err(ApiError::bad_request(
            "\"slots\" and \"mix\" need \"mode\" (the server's default mode is configuration)",
        ));
    }
    let mode = req.mode.unwrap_or(defaults.default_mode);
    let settings = match mode {
        RoomMode::Forward => {
            if req.mix.is_some() {
                return Err(ApiError::bad_request("mix settings need \"mode\": \"mix\""));
            }
            let slots = req.slots.unwrap_or(defaults.slots);
            let settings = RoomSettings::forward(slots);
            if settings.validate().is_err() {
                return Err(ApiError::bad_request(format!(
                    "slots must be 1 to {MAX_SLOTS}"
                )));
            }
            settings
        }
        RoomMode::Mix => {
            if req.slots.is_some_and(|s| s != 1) {
                return Err(ApiError::bad_request("a mixed room has exactly one slot"));
            }
            let patch = req.mix.unwrap_or_default();
            patch.check_ranges()?;
            let mix = patch.apply(defaults.mix);
            // Every field is in range, so what remains is the order of the jitter bounds.
            mix.validate()
                .map_err(|why| ApiError::invalid_settings(why.to_string()))?;
            RoomSettings::mix(mix)
        }
    };
    let settings = match req.spatial {
        Some(spatial) => {
            // Each field's own range (docs/openapi.json states them): 400. What remains is the one rule
            // between fields, audible_distance >= conversational_distance: 422, like the mixer's jitter
            // bounds.
            let alone = SpatialSettings {
                audible_distance: spatial.audible_distance,
                conversational_distance: spatial
                    .conversational_distance
                    .min(spatial.audible_distance),
                ..spatial
            };
            let in_range = spatial.conversational_distance.is_finite()
                && spatial.conversational_distance > 0.0;
            match alone.validate() {
                Err(why) => return Err(ApiError::bad_request(why.to_string())),
                Ok(()) if !in_range => {
                    return Err(ApiError::bad_request(
                        "spatial conversational_distance must be finite and > 0",
                    ))
                }
                Ok(()) => {}
            }
            spatial
                .validate()
                .map_err(|why| ApiError::invalid_settings(why.to_string()))?;
            settings.with_spatial(spatial)
        }
        None => settings,
    };
    let max_participants = req.max_participants.unwrap_or(defaults.max_participants);
    if !(1..=MAX_ROOM_PARTICIPANTS).contains(&max_participants) {
        return Err(ApiError::bad_request(
            "max_participants must be 1 to 100000",
        ));
    }
    let empty_timeout_secs = req
        .empty_timeout_secs
        .unwrap_or(defaults.empty_timeout_secs);
    if empty_timeout_secs > MAX_EMPTY_TIMEOUT_SECS {
        return Err(ApiError::bad_request(
            "empty_timeout_secs must be at most 86400",
        ));
    }
    Ok(RoomSpec {
        settings,
        max_participants,
        empty_timeout: Duration::from_secs(empty_timeout_secs),
    })
}

async fn create_room(
    State(state): State<Arc<AppState>>,
    JsonObject(req): JsonObject<CreateRoom>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    let name = req.name.clone();
    let record = req.record;
    if record.is_some() && !state.recordings.enabled() {
        return Err(crate::recording::RecordError::Disabled.into());
    }
    let hold_music = req.hold_music.clone();
    if let Some(hold) = &hold_music {
        // Checked before the room exists: a bad name creates nothing.
        state.playout.expand(std::slice::from_ref(hold))?;
    }
    let spec = room_spec(req, &state.room_defaults)?;
    let room = state.signaling.create_room(&name, spec)?;
    if let Some(settings) = record {
        state.recordings.record_room(&name, settings).await;
    }
    if hold_music.is_some() {
        state.playout.set_hold_music(&name, hold_music)?;
    }
    Ok((StatusCode::CREATED, Json(RoomView::new(&state, room, true))))
}

async fn get_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    let room = state
        .signaling
        .room(&room)
        .ok_or(AdminError::RoomNotFound)?;
    Ok(Json(RoomView::new(&state, room, true)))
}

async fn delete_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.signaling.delete_room(&room)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_participants(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = state
        .signaling
        .room(&room)
        .ok_or(AdminError::RoomNotFound)?;
    let participants: Vec<&ParticipantInfo> = room.all_participants().collect();
    Ok(Json(serde_json::json!({ "participants": participants })))
}

async fn kick_participant(
    State(state): State<Arc<AppState>>,
    Path((room, sid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.signaling.kick_participant(&room, &sid)?;
    state
        .signaling
        .metrics()
        .moderated(ModerateAction::Kick, true);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    pub muted: bool,
}

async fn mute_participant(
    State(state): State<Arc<AppState>>,
    Path((room, sid)): Path<(String, String)>,
    JsonObject(req): JsonObject<MuteRequest>,
) -> Result<Json<ParticipantInfo>, ApiError> {
    let participant = state
        .signaling
        .mute_participant(&room, &sid, req.muted)
        .await?;
    let action = if req.muted {
        ModerateAction::Mute
    } else {
        ModerateAction::Unmute
    };
    state.signaling.metrics().moderated(action, true);
    Ok(Json(participant))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeafenRequest {
    pub deafened: bool,
}

async fn deafen_participant(
    State(state): State<Arc<AppState>>,
    Path((room, sid)): Path<(String, String)>,
    JsonObject(req): JsonObject<DeafenRequest>,
) -> Result<Json<ParticipantInfo>, ApiError> {
    let participant = state
        .signaling
        .deafen_participant(&room, &sid, req.deafened)
        .await?;
    let action = if req.deafened {
        ModerateAction::Deafen
    } else {
        ModerateAction::Undeafen
    };
    state.signaling.metrics().moderated(action, true);
    Ok(Json(participant))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub room: String,
}

async fn move_participant(
    State(state): State<Arc<AppState>>,
    Path((room, sid)): Path<(String, String)>,
    JsonObject(req): JsonObject<MoveRequest>,
) -> Result<StatusCode, ApiError> {
    state.signaling.move_participant(&room, &sid, &req.room)?;
    state
        .signaling
        .metrics()
        .moderated(ModerateAction::Move, true);
    Ok(StatusCode::ACCEPTED)
}

/// The drain state.
#[derive(Debug, Serialize)]
pub struct DrainView {
    pub draining: bool,
    pub rooms: usize,
    pub participants: usize,
    /// How long calls may continue once a drain begins.
    pub grace_period_secs: u64,
    /// While draining: seconds until the grace period ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_secs: Option<u64>,
}

pub fn drain_view(state: &AppState) -> DrainView {
    let remaining_secs = state
        .signaling
        .drain_deadline()
        .map(|d| d.saturating_duration_since(Instant::now()).as_secs());
    DrainView {
        draining: state.signaling.is_draining(),
        rooms: state.signaling.room_count(),
        participants: state.signaling.participant_count(),
        grace_period_secs: state.grace.as_secs(),
        remaining_secs,
    }
}

async fn drain_status(State(state): State<Arc<AppState>>) -> Json<DrainView> {
    Json(drain_view(&state))
}

/// `POST /admin/v1/drain`: begin draining now, as SIGTERM would, without ending the process (a later
/// SIGTERM keeps the same deadline and exits when the server is empty).
async fn start_drain(State(state): State<Arc<AppState>>) -> Json<DrainView> {
    begin_drain(&state);
    Json(drain_view(&state))
}

/// Listener mounts (docs/broadcast.md): every mount the server has (rooms listened to or configured).
async fn list_broadcasts(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "broadcasts": state.broadcasts.views() }))
}

/// The room's mount, as it is or would be (a room no one listens to yet has the defaults).
fn broadcast_view(state: &AppState, room: &str) -> Result<MountView, ApiError> {
    match state.broadcasts.mount(room) {
        Some(mount) => Ok(mount.view(state.broadcasts.config())),
        None if state.signaling.room(room).is_some() => {
            Ok(MountView::unused(room, state.broadcasts.config()))
        }
        None => Err(AdminError::RoomNotFound.into()),
    }
}

async fn get_broadcast(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<MountView>, ApiError> {
    broadcast_view(&state, &room).map(Json)
}

/// What `PUT /admin/v1/rooms/{room}/broadcast` may set; a field left out stays, `null` restores the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBroadcast {
    #[serde(default, deserialize_with = "present")]
    public: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
}

/// Longest StreamTitle the admin API accepts, in characters (an ICY block holds 4,080 bytes).
const MAX_TITLE_CHARS: usize = 256;

async fn set_broadcast(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<Json<MountView>, ApiError> {
    // An object, not whatever serde would read the struct from (it also takes a JSON array).
    let Json(object) = body?;
    let req: SetBroadcast = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.signaling.room(&room).is_none() && state.broadcasts.mount(&room).is_none() {
        return Err(AdminError::RoomNotFound.into());
    }
    if let Some(Some(title)) = &req.title {
        if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
            return Err(ApiError::invalid_settings(format!(
                "title must be at most {MAX_TITLE_CHARS} characters with no control characters"
            )));
        }
    }
    state.broadcasts.configure(&room, req.public, req.title);
    broadcast_view(&state, &room).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomDefaults;

    /// The OpenAPI document describes exactly the routes and methods the router serves.
    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/openapi.json")).expect("valid JSON");
        let mut documented: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    documented.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn room_specs_take_defaults_and_refuse_bad_values() {
        let defaults = RoomDefaults::default();
        let parse = |json: &str| {
            let req: CreateRoom = serde_json::from_str(json).expect("parses");
            room_spec(req, &defaults)
        };
        let spec = parse(r#"{"name": "a"}"#).expect("defaults are valid");
        assert_eq!(spec.settings, RoomSettings::forward(3));
        assert_eq!(spec.empty_timeout, Duration::from_secs(300));
        let spec = parse(r#"{"name": "a", "mode": "forward", "slots": 5.0}"#)
            .expect("an integer-valued float is an integer");
        assert_eq!(spec.settings, RoomSettings::forward(5));
        let spec =
            parse(r#"{"name": "a", "mode": "mix", "mix": {"complexity": 9}}"#).expect("valid");
        assert_eq!(spec.settings.mode, RoomMode::Mix);
        assert_eq!(spec.settings.mix.complexity, 9);
        assert_eq!(
            spec.settings.mix.shared_complexity,
            defaults.mix.shared_complexity
        );
        let spec = parse(r#"{"name": "a", "mode": "mix", "mix": {"shared_complexity": 10}}"#)
            .expect("valid");
        assert_eq!(
            (
                spec.settings.mix.complexity,
                spec.settings.mix.shared_complexity
            ),
            (defaults.mix.complexity, 10)
        );
        assert_eq!(spec.settings.mix.bitrate_bps, defaults.mix.bitrate_bps);
        for bad in [
            r#"{"name": "a", "slots": 0}"#,
            r#"{"name": "a", "mode": "mix", "slots": 2}"#,
            r#"{"name": "a", "mix": {"fec": false}}"#,
            r#"{"name": "a", "mode": "mix", "mix": {"jitter_min_ms": 300, "jitter_max_ms": 100}}"#,
            r#"{"name": "a", "max_participants": 0}"#,
            r#"{"name": "a", "empty_timeout_secs": 100000}"#,
            r#"{"name": "a", "slots": 3}"#,
            r#"{"name": "a", "mode": "mix", "mix": {"complexity": 11}}"#,
            r#"{"name": "a", "mode": "mix", "mix": {"shared_complexity": 11}}"#,
            r#"{"name": "a", "spatial": {"max_audible": 0}}"#,
            r#"{"name": "a", "spatial": {"audible_distance": 0.5}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"{"name": "a", "spatial": {"fade_model": "cubic"}}"#,
            r#"{"name": "a", "spatial": {"range": 4}}"#,
            r#"{"name": "a", "spatial": null}"#,
        ] {
            assert!(serde_json::from_str::<CreateRoom>(bad).is_err(), "{bad}");
        }
        let err = parse(
            r#"{"name": "a", "spatial": {"audible_distance": 5, "conversational_distance": 10}}"#,
        )
        .expect_err("audible below conversational");
        assert_eq!(
            (err.status, err.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings")
        );
        let spec = parse(r#"{"name": "a", "mode": "mix", "spatial": {"audible_distance": 50}}"#)
            .expect("valid");
        assert_eq!(spec.settings.mode, RoomMode::Mix);
        let spatial = spec.settings.spatial.expect("spatial");
        assert_eq!(spatial.audible_distance, 50.0);
        assert_eq!(spatial.max_audible, SpatialSettings::default().max_audible);
        let err = parse(r#"{"name": "a", "mode": "mix", "mix": {"jitter_min_ms": 201}}"#)
            .expect_err("above the default jitter_max_ms");
        assert_eq!(
            (err.status, err.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings")
        );
    }

    #[test]
    fn integers_may_be_written_as_floats_but_not_as_fractions_or_null() {
        let parse = |json: &str| serde_json::from_str::<CreateRoom>(json).map(|r| r.slots);
        assert_eq!(parse(r#"{"name": "a", "slots": 3}"#).ok(), Some(Some(3)));
        assert_eq!(parse(r#"{"name": "a", "slots": 3.0}"#).ok(), Some(Some(3)));
        assert_eq!(parse(r#"{"name": "a", "slots": -0.0}"#).ok(), Some(Some(0)));
        assert_eq!(parse(r#"{"name": "a"}"#).ok(), Some(None));
        for bad in [
            "3.5", "-1", "-1.0", "256", "256.0", "1e300", "null", "\"3\"",
        ] {
            assert!(
                parse(&format!(r#"{{"name": "a", "slots": {bad}}}"#)).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<CreateRoom>(r#"{"name": "a", "mode": null}"#).is_err());
    }

    /// Settings objects are objects: serde alone would read `mix` from an array of its fields
    /// (schemathesis sent `"mix": []` and got 201).
    #[test]
    fn settings_must_be_objects_not_arrays() {
        let parse = |json: &str| serde_json::from_str::<CreateRoom>(json);
        for bad in [
            r#"{"name": "a", "mode": "mix", "mix": []}"#,
            r#"{"name": "a", "mode": "mix", "mix": [48000]}"#,
            r#"{"name": "a", "spatial": []}"#,
            r#"{"name": "a", "mix": null}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let room =
            parse(r#"{"name": "a", "mode": "mix", "mix": {"complexity": 3}, "spatial": {}}"#)
                .expect("objects are accepted");
        assert_eq!(room.mix.and_then(|m| m.complexity), Some(3));
        assert!(room.spatial.is_some());
    }

    /// Bodies are objects: serde alone would read a struct from an array of its fields (schemathesis sent
    /// `[]` to `POST /rooms/{room}/rtp` and got 201).
    #[tokio::test]
    async fn bodies_must_be_objects_not_arrays() {
        async fn extract<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ApiError> {
            let req = Request::builder()
                .method("POST")
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body.to_owned()))
                .expect("a valid request");
            let JsonObject(value) =
                <JsonObject<T> as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
            Ok(value)
        }
        for bad in [
            "[]",
            "[true]",
            "true",
            "null",
            "\"x\"",
            "{\"muted\": 1}",
            "{",
        ] {
            let err = extract::<MuteRequest>(bad).await.expect_err(bad);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        for bad in [r#"["a"]"#, r#"{"name": "a", "extra": 1}"#] {
            assert!(extract::<CreateRoom>(bad).await.is_err(), "{bad}");
        }
        let ok = extract::<MuteRequest>(r#"{"muted": true}"#)
            .await
            .expect("an object");
        assert!(ok.muted);
    }
}
