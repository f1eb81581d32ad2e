//! `GET /hls/{room}/index.m3u8`, `init.mp4` and `{n}.m4s`: access (the listener mounts' rules), blocking
//! playlist reloads (`_HLS_msn`), and headers for an origin behind a CDN — immutable segments, short-lived
//! playlists, `ETag`/`Last-Modified` with 304s, CORS for browser players.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use super::playlist::{token_query, Playlist, INIT_FILE, SEGMENT_SUFFIX};
use super::Hls;
use crate::broadcast::ogg::crc;
use crate::state::AppState;

/// How long a CDN or player may keep a segment or the init segment: their bytes never change under
/// their URL (segment numbers only grow, across restarts too).
const IMMUTABLE_MAX_AGE_SECS: u64 = 86_400;

/// The playlist file.
const PLAYLIST_FILE: &str = "index.m3u8";

/// The HLS routes (served when `hls.enabled`).
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/hls/{room}/{file}", get(serve).options(preflight))
}

#[derive(Deserialize)]
struct HlsQuery {
    token: Option<String>,
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
}

/// What a request names.
enum File {
    Playlist,
    Init,
    Segment(u64),
}

fn parse_file(file: &str) -> Option<File> {
    match file {
        PLAYLIST_FILE => Some(File::Playlist),
        INIT_FILE => Some(File::Init),
        _ => {
            let n = file.strip_suffix(SEGMENT_SUFFIX)?;
            // Digits only: `+1` or `01` are not the names the playlist gives.
            if n.is_empty()
                || !n.bytes().all(|b| b.is_ascii_digit())
                || (n.len() > 1 && n.starts_with('0'))
            {
                return None;
            }
            n.parse().ok().map(File::Segment)
        }
    }
}

/// Headers every response carries: any origin may read it (browser players).
fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag, Last-Modified, Retry-After"),
    );
}

/// A refusal: its status, a one-line text body, counted by reason.
fn refuse(hls: &Hls, status: StatusCode, reason: &str, text: &'static str) -> Response {
    hls.metrics.refused.with_label_values(&[reason]).inc();
    let mut response = (status, text).into_response();
    let h = response.headers_mut();
    cors(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// CORS preflight: a player sending `Authorization` (hls.js `xhrSetup`) asks first.
async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, If-None-Match, If-Modified-Since"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn serve(
    State(state): State<Arc<AppState>>,
    Path((room, file)): Path<(String, String)>,
    query: Result<Query<HlsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let hls = &state.hls;
    let Ok(Query(query)) = query else {
        return refuse(
            hls,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed query\n",
        );
    };
    let Some(file) = parse_file(&file) else {
        return refuse(hls, StatusCode::NOT_FOUND, "not_found", "no such file\n");
    };
    if state.signaling.room(&room).is_none() && hls.stream(&room).is_none() {
        return refuse(hls, StatusCode::NOT_FOUND, "not_found", "no such room\n");
    }
    let public = state.broadcasts.is_public(&room);
    if !public && !crate::broadcast::authorized(&state, &room, &headers, query.token.as_deref()) {
        let mut response = refuse(
            hls,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this stream needs a token: ?token=<access token for the room> or Authorization: Bearer\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"chorus-hls\""),
        );
        return response;
    }
    match file {
        File::Playlist => playlist(hls, &room, &query, public, &headers).await,
        File::Init => {
            let init = hls.init.clone();
            let etag = format!("\"{:08x}\"", crc(&init));
            let cache = immutable(public);
            content(hls, "init", init, &etag, None, &cache, &headers)
        }
        File::Segment(msn) => {
            let segment = hls.stream(&room).and_then(|s| s.lock().get(msn));
            let Some(segment) = segment else {
                return refuse(
                    hls,
                    StatusCode::NOT_FOUND,
                    "outside_window",
                    "no such segment: not yet made, or it left the window\n",
                );
            };
            segment.hits.fetch_add(1, Ordering::Relaxed);
            let etag = format!("\"{:08x}\"", segment.crc);
            let cache = immutable(public);
            let bytes = segment.bytes.clone();
            content(
                hls,
                "segment",
                bytes,
                &etag,
                Some(segment.made_ms),
                &cache,
                &headers,
            )
        }
    }
}

fn immutable(public: bool) -> String {
    let scope = if public { "public" } else { "private" };
    format!("{scope}, max-age={IMMUTABLE_MAX_AGE_SECS}, immutable")
}

/// The playlist: started on demand; a blocking reload (`_HLS_msn=N`) waits until segment N is complete,
/// at most three target durations (then 503); the first viewer waits for the first segment alike.
async fn playlist(
    hls: &Hls,
    room: &str,
    query: &HlsQuery,
    public: bool,
    headers: &HeaderMap,
) -> Response {
    let msn = match query.msn.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return refuse(
                hls,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_msn must be a segment number\n",
            );
        }
    };
    // This server has no partial segments: `_HLS_part` waits for the whole segment, and is an error
    // without `_HLS_msn` (RFC 8216bis §6.2.5.2).
    if query.part.is_some() && msn.is_none() {
        return refuse(
            hls,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "_HLS_part needs _HLS_msn\n",
        );
    }
    let Some(stream) = hls.watch(room) else {
        return refuse(
            hls,
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "the server segments its maximum of rooms (hls.max_streams)\n",
        );
    };
    let target = hls.config.target_duration_s();
    let mut newest = stream.newest.subscribe();
    if let (Some(n), Some(last)) = (msn, *newest.borrow()) {
        // A client may ask for at most the segment after the next (RFC 8216bis §6.2.5.2).
        if n > last + 2 {
            return refuse(
                hls,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_msn is more than two segments past the newest\n",
            );
        }
    }
    let ready = |n: &Option<u64>| match (n, msn) {
        (Some(newest), Some(wanted)) => *newest >= wanted,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let wait = Duration::from_secs(3 * target);
    let waited = tokio::time::timeout(wait, newest.wait_for(ready)).await;
    if !matches!(waited, Ok(Ok(_))) {
        let mut response = refuse(
            hls,
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the segment is not ready: the room sends no audio\n",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(target));
        return response;
    }
    let (segments, discontinuity_sequence) = stream.lock().window();
    let made_ms = segments.last().map(|s| s.made_ms);
    let q = token_query(query.token.as_deref());
    let text = Playlist {
        segments: &segments,
        discontinuity_sequence,
        target_duration_s: target,
        query: &q,
    }
    .render();
    let etag = format!("\"{:08x}\"", crc(text.as_bytes()));
    // Half a target duration (at least a second): a CDN asks again about once per segment.
    let scope = if public { "public" } else { "private" };
    let cache = format!("{scope}, max-age={}", (target / 2).max(1));
    let mut response = content(
        hls,
        "playlist",
        Bytes::from(text),
        &etag,
        made_ms,
        &cache,
        headers,
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    response
}

/// A 200 with `bytes` (or a 304 when the client has them: `If-None-Match`, else `If-Modified-Since`).
fn content(
    hls: &Hls,
    kind: &str,
    bytes: Bytes,
    etag: &str,
    made_ms: Option<u64>,
    cache: &str,
    headers: &HeaderMap,
) -> Response {
    hls.metrics.requests.with_label_values(&[kind]).inc();
    let modified = made_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let not_modified = match headers.get(header::IF_NONE_MATCH) {
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .zip(modified)
            .is_some_and(|(since, m)| truncate_secs(m) <= since),
    };
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        hls.metrics
            .bytes
            .with_label_values(&[kind])
            .inc_by(bytes.len() as u64);
        let mut r = Response::new(Body::from(bytes));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mp4"));
        r
    };
    let h = response.headers_mut();
    cors(h);
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(m) = modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// HTTP dates have whole seconds.
fn truncate_secs(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_the_playlist_gives_are_files() {
        assert!(matches!(parse_file("index.m3u8"), Some(File::Playlist)));
        assert!(matches!(parse_file("init.mp4"), Some(File::Init)));
        assert!(matches!(
            parse_file("881000123.m4s"),
            Some(File::Segment(881_000_123))
        ));
        assert!(matches!(parse_file("0.m4s"), Some(File::Segment(0))));
        for bad in [
            "",
            ".m4s",
            "01.m4s",
            "+1.m4s",
            "-1.m4s",
            "1.mp4",
            "99999999999999999999999.m4s",
            "a.m4s",
            "../init.mp4",
        ] {
            assert!(parse_file(bad).is_none(), "{bad}");
        }
    }
}
