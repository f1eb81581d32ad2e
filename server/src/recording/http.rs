//! The recordings' admin routes (docs/openapi.json): start, stop, list, delete, and the files — the Ogg
//! audio with range requests, the JSON side file. Behind the admin API's token check (`admin::router`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::range::{ranged, Ranged};
use super::{RecordError, RecordingId, RecordingView};
use crate::admin::ApiError;
use crate::state::AppState;

/// Bytes read from a recording's file per body chunk.
const CHUNK: usize = 64 * 1024;

/// The recording routes (with the admin API's, `admin::ROUTES`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/recordings", get(list_all))
        .route("/admin/v1/recordings/{id}", get(get_one).delete(delete_one))
        .route("/admin/v1/recordings/{id}/audio", get(audio))
        .route("/admin/v1/recordings/{id}/metadata", get(metadata))
        .route(
            "/admin/v1/rooms/{room}/recordings",
            get(list_room).post(start).delete(stop_room),
        )
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        let (status, code) = match &e {
            RecordError::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "recording_disabled"),
            RecordError::RoomNotFound => (StatusCode::NOT_FOUND, "room_not_found"),
            RecordError::ParticipantNotFound => (StatusCode::NOT_FOUND, "participant_not_found"),
            RecordError::AlreadyRecording(_) => (StatusCode::CONFLICT, "recording_exists"),
            RecordError::Capacity => (StatusCode::SERVICE_UNAVAILABLE, "recording_capacity"),
            RecordError::Write(_) => (StatusCode::SERVICE_UNAVAILABLE, "recording_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "recording_not_found",
        "no such recording",
    )
}

/// A recording id from a path: anything else is not found (ids, never paths).
fn recording_id(id: &str) -> Result<RecordingId, ApiError> {
    id.parse().map_err(|_| not_found())
}

fn listing(recordings: Vec<RecordingView>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "recordings": recordings }))
}

async fn list_all(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    listing(state.recordings.list(None))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<RecordingView>, ApiError> {
    let id = recording_id(&id)?;
    state.recordings.get(&id).map(Json).ok_or_else(not_found)
}

async fn delete_one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = recording_id(&id)?;
    if state.recordings.delete(&id).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// A room's recordings; 404 for a room that does not exist and has none.
async fn list_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let recordings = state.recordings.list(Some(&room));
    if recordings.is_empty() && state.signaling.room(&room).is_none() {
        return Err(RecordError::RoomNotFound.into());
    }
    Ok(listing(recordings))
}

/// `POST /admin/v1/rooms/{room}/recordings`: `{}` records the mix, `{"participant": sid}` one participant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecording {
    #[serde(default, deserialize_with = "crate::admin::present")]
    participant: Option<String>,
}

async fn start(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Result<(StatusCode, Json<RecordingView>), ApiError> {
    let Json(object) = body?;
    let req: StartRecording = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = state
        .recordings
        .start(&room, req.participant.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Stop the room's running recordings; the ones stopped.
async fn stop_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let exists = state.signaling.room(&room).is_some();
    let stopped = state.recordings.stop_room(&room).await;
    if stopped.is_empty() && !exists {
        return Err(RecordError::RoomNotFound.into());
    }
    Ok(listing(stopped))
}

/// The side file (`chorus-recording/1`); while recording, as last written (at most 5 s old).
async fn metadata(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = recording_id(&id)?;
    let path = state.recordings.meta_path(&id).ok_or_else(not_found)?;
    let body = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The Ogg file: 200 whole, 206 for one `bytes` range (`If-Range` with the ETag honoured), 416 for a
/// malformed range or one past the end. A running recording's file grows: the length is the one at the
/// request, and the ETag (id and length) changes as it grows.
async fn audio(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = recording_id(&id)?;
    let view = state.recordings.get(&id).ok_or_else(not_found)?;
    let path = state.recordings.audio_path(&id).ok_or_else(not_found)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let len = file.metadata().await.map_err(|_| not_found())?.len();
    let etag = format!("\"{id}-{len}\"");
    let if_range = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    // A Range value that is not text is malformed.
    let range = headers
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap_or("bytes=?"));
    let (status, start, count) = match ranged(range, len, if_range) {
        Ranged::Full => (StatusCode::OK, 0, len),
        Ranged::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Ranged::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the Range must be one bytes range within the file's {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|_| not_found())?;
    let body = futures_util::stream::unfold(file.take(count), |mut reader| async move {
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let disposition = format!("attachment; filename=\"{}-{id}.opus\"", view.room);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(v) = HeaderValue::from_str(&range) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}
