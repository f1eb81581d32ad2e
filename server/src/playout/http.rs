//! Playout's admin routes (docs/openapi.json): a room's playback (start, status, stop, skip), its
//! announcements and its hold music. Behind the admin API's token check (`admin::router`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use signaling::media::SourceRole;

use super::{Control, JobKind, MediaError, PlayoutError, Request, Status, MIN_DUCK_DB};
use crate::admin::ApiError;
use crate::state::AppState;

/// The playout routes (with the admin API's, `admin::ROUTES`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/admin/v1/rooms/{room}/playback",
            post(start).get(status).delete(stop),
        )
        .route("/admin/v1/rooms/{room}/playback/skip", post(skip))
        .route(
            "/admin/v1/rooms/{room}/announce",
            post(announce).get(announcement),
        )
        .route(
            "/admin/v1/rooms/{room}/hold_music",
            put(set_hold).get(hold).delete(clear_hold),
        )
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        let (status, code) = match &e {
            MediaError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "playout_disabled"),
            MediaError::BadName(_) => (StatusCode::BAD_REQUEST, "media_bad_name"),
            MediaError::Outside(_) => (StatusCode::FORBIDDEN, "media_outside"),
            MediaError::NotFound(_) => (StatusCode::NOT_FOUND, "media_not_found"),
            MediaError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "media_unsupported"),
            MediaError::TooLong(..) => (StatusCode::UNPROCESSABLE_ENTITY, "playlist_too_long"),
            MediaError::Unreadable(..) => (StatusCode::UNPROCESSABLE_ENTITY, "media_unreadable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<PlayoutError> for ApiError {
    fn from(e: PlayoutError) -> Self {
        let (status, code) = match &e {
            PlayoutError::Media(m) => return m.clone().into(),
            PlayoutError::RoomNotFound(_) => (StatusCode::NOT_FOUND, "room_not_found"),
            PlayoutError::Busy => (StatusCode::CONFLICT, "announcement_playing"),
            PlayoutError::Capacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "playout_capacity"),
            PlayoutError::Empty => (StatusCode::UNPROCESSABLE_ENTITY, "playlist_empty"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn not_playing(kind: JobKind) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "playback_not_found",
        format!("no {} in this room", kind.as_str()),
    )
}

/// `POST /admin/v1/rooms/{room}/playback`: `files` (names in the media directory, `.m3u` playlists
/// expanded) or `playlist` (one `.m3u`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartPlayback {
    #[serde(default, deserialize_with = "crate::admin::present")]
    files: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::admin::present")]
    playlist: Option<String>,
    #[serde(default, rename = "loop", deserialize_with = "crate::admin::present")]
    looping: Option<bool>,
    #[serde(default, deserialize_with = "crate::admin::present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "crate::admin::present")]
    start_at_unix_ms: Option<u64>,
}

/// A display name from a request: 1 to 128 characters, no control characters.
fn display_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    match name {
        Some(n)
            if n.trim().is_empty()
                || n.chars().count() > 128
                || n.chars().any(char::is_control) =>
        {
            Err(ApiError::bad_request(
                "name must be 1 to 128 characters, none a control character",
            ))
        }
        other => Ok(other),
    }
}

/// A JSON object body, read as `T` (a schema mismatch is 400).
fn object<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<T, ApiError> {
    let Json(object) = body?;
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn start(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    let req: StartPlayback = object(body)?;
    let names = match (req.files, req.playlist) {
        (Some(files), None) if !files.is_empty() => files,
        (None, Some(playlist)) => vec![playlist],
        _ => {
            return Err(ApiError::bad_request(
                "give either \"files\" (a non-empty list) or \"playlist\"",
            ))
        }
    };
    let status = state.playout.start(
        &state,
        Request {
            room,
            kind: JobKind::Playback,
            names,
            looping: req.looping.unwrap_or(false),
            name: display_name(req.name)?,
            start_at_unix_ms: req.start_at_unix_ms,
            role: SourceRole::Plain,
        },
    )?;
    Ok((StatusCode::CREATED, Json(status)))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<Status>, ApiError> {
    state
        .playout
        .status(&room, JobKind::Playback)
        .map(Json)
        .ok_or_else(|| not_playing(JobKind::Playback))
}

async fn stop(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .playout
        .control(&room, JobKind::Playback, Control::Stop)
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_playing(JobKind::Playback))
    }
}

async fn skip(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .playout
        .control(&room, JobKind::Playback, Control::Skip)
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_playing(JobKind::Playback))
    }
}

/// `POST /admin/v1/rooms/{room}/announce`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Announce {
    file: String,
    /// How much the room's other voices are lowered, dB (−60..=0); the server's `playout.duck_db` if
    /// absent.
    #[serde(default, deserialize_with = "crate::admin::present")]
    duck_db: Option<f32>,
    #[serde(default, deserialize_with = "crate::admin::present")]
    name: Option<String>,
}

async fn announce(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    let req: Announce = object(body)?;
    let duck_db = req.duck_db.unwrap_or(state.playout.config.duck_db);
    if !(MIN_DUCK_DB..=0.0).contains(&duck_db) {
        return Err(ApiError::bad_request("duck_db must be -60 to 0"));
    }
    let status = state.playout.start(
        &state,
        Request {
            room,
            kind: JobKind::Announcement,
            names: vec![req.file],
            looping: false,
            name: display_name(req.name)?,
            start_at_unix_ms: None,
            role: SourceRole::Announcement { duck_db },
        },
    )?;
    Ok((StatusCode::CREATED, Json(status)))
}

async fn announcement(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<Status>, ApiError> {
    state
        .playout
        .status(&room, JobKind::Announcement)
        .map(Json)
        .ok_or_else(|| not_playing(JobKind::Announcement))
}

/// `PUT /admin/v1/rooms/{room}/hold_music`: the room's `hold_music` setting, as at its creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHold {
    /// A file or `.m3u` playlist in the media directory.
    hold_music: String,
}

/// A room's hold-music setting (`null`: none).
#[derive(Debug, Serialize)]
struct Hold {
    room: String,
    hold_music: Option<String>,
}

/// The room, if this node has it.
fn existing(state: &AppState, room: String) -> Result<String, ApiError> {
    if state.signaling.has_room(&room) {
        Ok(room)
    } else {
        Err(PlayoutError::RoomNotFound(room).into())
    }
}

async fn set_hold(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<Json<Hold>, ApiError> {
    let req: SetHold = object(body)?;
    let room = existing(&state, room)?;
    state
        .playout
        .set_hold_music(&room, Some(req.hold_music.clone()))?;
    Ok(Json(Hold {
        room,
        hold_music: Some(req.hold_music),
    }))
}

async fn hold(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<Hold>, ApiError> {
    let room = existing(&state, room)?;
    let hold_music = state.playout.hold_music(&room);
    Ok(Json(Hold { room, hold_music }))
}

async fn clear_hold(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    let room = existing(&state, room)?;
    state.playout.set_hold_music(&room, None)?;
    Ok(StatusCode::NO_CONTENT)
}
