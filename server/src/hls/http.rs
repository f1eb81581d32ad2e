//! `GET /hls/{room}/index.m3u8`, `init.mp4`, `{n}.m4s` and parts `{n}.{i}.m4s`: access (the listener
//! mounts' rules), blocking playlist reloads (`_HLS_msn`, `_HLS_part`) and preload-hinted parts, and
//! headers for an origin behind a CDN — immutable segments and parts, short-lived playlists,
//! `ETag`/`Last-Modified` with 304s, CORS for browser players.

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

use super::playlist::{token_query, Parts, Playlist, INIT_FILE, SEGMENT_SUFFIX};
use super::{Hls, Progress};
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
    Part(u64, u32),
}

/// A number as the playlist writes it: digits, no sign, no leading zero.
fn number<T: std::str::FromStr>(n: &str) -> Option<T> {
    let canonical = !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (n.len() == 1 || !n.starts_with('0'));
    canonical.then(|| n.parse().ok()).flatten()
}

fn parse_file(file: &str) -> Option<File> {
    match file {
        PLAYLIST_FILE => Some(File::Playlist),
        INIT_FILE => Some(File::Init),
        _ => {
            let name = file.strip_suffix(SEGMENT_SUFFIX)?;
            match name.split_once('.') {
                None => number(name).map(File::Segment),
                Some((msn, part)) => Some(File::Part(number(msn)?, number(part)?)),
            }
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
        File::Part(msn, index) => part(hls, &room, msn, index, public, &headers).await,
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

/// A part: served if made; the part a playlist hints at next (`EXT-X-PRELOAD-HINT`) is waited for, at
/// most three target durations; any other is not found.
async fn part(
    hls: &Hls,
    room: &str,
    msn: u64,
    index: u32,
    public: bool,
    headers: &HeaderMap,
) -> Response {
    let Some(stream) = hls.stream(room) else {
        return refuse(
            hls,
            StatusCode::NOT_FOUND,
            "outside_window",
            "no such part\n",
        );
    };
    let mut found = stream.lock().part(msn, index);
    let hinted = stream.progress.borrow().position == Some((msn, index));
    if found.is_none() && hinted {
        let mut progress = stream.progress.subscribe();
        let wait = Duration::from_secs(3 * hls.config.target_duration_s());
        let past = |p: &Progress| p.position.is_some_and(|at| at > (msn, index));
        let _ = tokio::time::timeout(wait, progress.wait_for(past)).await;
        found = stream.lock().part(msn, index);
    }
    let Some((bytes, crc, made_ms)) = found else {
        return refuse(
            hls,
            StatusCode::NOT_FOUND,
            "outside_window",
            "no such part: not yet made, or it left the window\n",
        );
    };
    if index == 0 {
        stream.lock().hit(msn);
    }
    let etag = format!("\"{crc:08x}\"");
    content(
        hls,
        "part",
        bytes,
        &etag,
        Some(made_ms),
        &immutable(public),
        headers,
    )
}

/// The playlist: started on demand; a blocking reload (`_HLS_msn=N`, `_HLS_part=P`) waits until segment N
/// (part P of it) is made, at most three target durations (then 503); the first viewer waits for the
/// first segment alike.
async fn playlist(
    hls: &Hls,
    room: &str,
    query: &HlsQuery,
    public: bool,
    headers: &HeaderMap,
) -> Response {
    let msn = match query.msn.as_deref().map(number::<u64>) {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => {
            return refuse(
                hls,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_msn must be a segment number\n",
            );
        }
    };
    let parts_on = hls.config.part_ms != 0;
    let max_parts = hls.config.segment_frames() / hls.config.part_frames();
    // `_HLS_part` is an error without `_HLS_msn` (RFC 8216bis §6.2.5.2), and past a segment's parts;
    // without parts on this server, it waits for the whole segment.
    let part = match query.part.as_deref().map(number::<u32>) {
        None => None,
        Some(Some(p)) if msn.is_some() && p < max_parts => Some(p).filter(|_| parts_on),
        Some(_) => {
            return refuse(
                hls,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_part must be a part index of a segment, with _HLS_msn\n",
            );
        }
    };
    let Some(stream) = hls.watch(room) else {
        return refuse(
            hls,
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "the server segments its maximum of rooms (hls.max_streams)\n",
        );
    };
    let target = hls.config.target_duration_s();
    let mut progress = stream.progress.subscribe();
    let newest = progress.borrow().newest;
    if let (Some(n), Some(last)) = (msn, newest) {
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
    // Segment N is complete, or part P of it made; without a wish, a first segment exists.
    let ready = |p: &Progress| match (p.newest, p.position, msn, part) {
        (_, Some(at), Some(n), Some(i)) => at > (n, i),
        (_, Some(at), Some(n), None) => at > (n, u32::MAX),
        (Some(_), _, None, _) => true,
        _ => false,
    };
    let wait = Duration::from_secs(3 * target);
    let waited = tokio::time::timeout(wait, progress.wait_for(ready)).await;
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
    let ((segments, discontinuity_sequence), open) = {
        let s = stream.lock();
        (s.window(), parts_on.then(|| s.open()).flatten())
    };
    let made_ms = segments.last().map(|s| s.made_ms);
    let q = token_query(query.token.as_deref());
    let text = Playlist {
        segments: &segments,
        discontinuity_sequence,
        target_duration_s: target,
        query: &q,
        parts: parts_on.then_some(Parts {
            target_ms: hls.config.part_ms,
            open: open.as_ref(),
        }),
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
        assert!(matches!(parse_file("12.3.m4s"), Some(File::Part(12, 3))));
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
            "1.01.m4s",
            "1..m4s",
            "1.2.3.m4s",
            "1.99999999999.m4s",
        ] {
            assert!(parse_file(bad).is_none(), "{bad}");
        }
    }
}
