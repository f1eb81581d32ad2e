//! The Icecast source protocol into a room: `PUT /live/{room}.opus` (Icecast 2.4, ffmpeg's `icecast://`) or
//! the legacy `SOURCE` method, HTTP basic auth (user `source`, password an access token for the room that
//! may publish), then an Ogg/Opus stream until the source hangs up.
//!
//! A source's request body has no HTTP framing (no Content-Length, not chunked: it is the rest of the
//! connection), which an HTTP/1.1 server reads as an empty body. So the accept loop hands the connection
//! here when its first bytes are such a request ([`Sources::take`]), and it is served raw: the request
//! head parsed with httparse, `100 Continue` for a client that expects it, the Ogg headers checked
//! before `200 OK` (or a 4xx naming what is wrong), then pages demuxed and paced in real time by their
//! granule positions (`pacer.rs`) into the room's media worker. Reading waits while the paced packets
//! are not due, so a source faster than real time waits on its own (small) socket buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use signaling::auth::{unix_now, verify_token};
use signaling::{SourceEnd, SourceRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, warn};

use super::pacer::Pacer;
use super::{Kind, Source, StartError};
use crate::broadcast::ogg_reader::{OggItem, OggReader};
use crate::state::AppState;

/// The largest request head read.
const MAX_HEAD: usize = 8192;
/// How much of the stream is read at once.
const READ_CHUNK: usize = 4096;

/// What the accept loop needs to recognise and serve source connections.
#[derive(Clone)]
pub struct Sources(pub Arc<AppState>);

impl Sources {
    /// Serves `stream` if its first bytes are an Icecast source request and returns `None`; otherwise
    /// hands it back untouched (only peeked) for HTTP.
    pub async fn take(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        header_timeout: Duration,
    ) -> Option<TcpStream> {
        if !is_source_request(&stream, header_timeout).await {
            return Some(stream);
        }
        serve(stream, peer, &self.0, header_timeout).await;
        None
    }
}

/// Peeks at the request line until it can tell whether it starts `PUT /live/` or `SOURCE /live/`.
async fn is_source_request(stream: &TcpStream, limit: Duration) -> bool {
    const PREFIXES: [&[u8]; 2] = [b"PUT /live/", b"SOURCE /live/"];
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 13];
    loop {
        let n = match timeout(limit, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            // Closed, failed or silent: HTTP's own handling reports it.
            _ => return false,
        };
        let seen = &buf[..n];
        if PREFIXES.iter().any(|p| seen.starts_with(p)) {
            return true;
        }
        if !PREFIXES.iter().any(|p| p.starts_with(seen)) || Instant::now() >= deadline {
            return false;
        }
        // A request line arriving a few bytes at a time: look again shortly.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Why a source request was refused before streaming.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("malformed request head")]
    BadRequest,
    #[error("no such mount: sources publish to /live/{{room}}.opus")]
    NotFound,
    #[error("user `source` and an access token for this room that may publish are required")]
    Unauthorized,
    #[error(
        "chunked request bodies are not supported: send the stream unframed, as Icecast sources do"
    )]
    Chunked,
}

impl Refusal {
    fn status(&self) -> &'static str {
        match self {
            Refusal::BadRequest => "400 Bad Request",
            Refusal::NotFound => "404 Not Found",
            Refusal::Unauthorized => "401 Unauthorized",
            Refusal::Chunked => "501 Not Implemented",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::NotFound => "not_found",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Chunked => "unsupported",
        }
    }
}

/// A source request's head, checked.
struct Head {
    room: String,
    request: SourceRequest,
    expects_continue: bool,
    /// A body with a declared length ends there; without one, at the end of the connection.
    body: Body,
}

/// How much of the request body is left to read.
#[derive(Clone, Copy, Debug)]
struct Body {
    remaining: Option<u64>,
}

impl Body {
    /// Reads the next part of the body into `buf`: 0 at its end.
    async fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = match self.remaining {
            Some(0) => return Ok(0),
            Some(n) => buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = stream.read(&mut buf[..max]).await?;
        if let Some(left) = self.remaining.as_mut() {
            *left -= n as u64;
        }
        Ok(n)
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, state: &Arc<AppState>, limit: Duration) {
    let ingest = &state.ingest;
    let head = match timeout(limit, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(_)) | Err(_) => {
            ingest.metrics.request(Kind::Icecast, "bad_request");
            debug!(%peer, "source request head incomplete or unreadable");
            return;
        }
    };
    let head = match check(state, &head) {
        Ok(head) => head,
        Err(refusal) => {
            ingest.metrics.request(Kind::Icecast, refusal.label());
            info!(%peer, error = %refusal, "Icecast source refused");
            let auth = matches!(refusal, Refusal::Unauthorized)
                .then_some("WWW-Authenticate: Basic realm=\"chorus\"\r\n")
                .unwrap_or("");
            respond(&mut stream, refusal.status(), auth, &refusal.to_string()).await;
            return;
        }
    };
    let _ = socket2::SockRef::from(&stream)
        .set_recv_buffer_size(ingest.config.source_receive_buffer_bytes);
    // A client that waits for `100 Continue` gets its final status once its stream is checked (or over);
    // a legacy `SOURCE` client waits for `200 OK` before it sends anything.
    let first = if head.expects_continue {
        "HTTP/1.1 100 Continue\r\n\r\n"
    } else {
        "HTTP/1.0 200 OK\r\n\r\n"
    };
    if stream.write_all(first.as_bytes()).await.is_err() {
        return;
    }
    // The stream must be Ogg/Opus before the source enters the room.
    let mut reader = OggReader::default();
    let silence = Duration::from_millis(ingest.config.source_timeout_ms);
    let mut body = head.body;
    if let Err(e) = read_headers(&mut stream, &mut body, &mut reader, silence).await {
        ingest.metrics.error(Kind::Icecast, e.as_str());
        ingest.metrics.request(Kind::Icecast, "unsupported");
        info!(%peer, room = %head.room, error = %e, "Icecast source stream refused");
        if head.expects_continue {
            respond(
                &mut stream,
                "415 Unsupported Media Type",
                "",
                &e.to_string(),
            )
            .await;
        }
        return;
    }
    let source = match Source::start(
        ingest,
        &state.signaling,
        &state.sessions,
        Kind::Icecast,
        head.request,
    )
    .await
    {
        Ok(source) => source,
        Err(e) => {
            ingest.metrics.request(Kind::Icecast, e.as_str());
            info!(%peer, room = %head.room, error = %e, "Icecast source refused");
            let status = match &e {
                StartError::Admit(signaling::registry::AdmitError::Banned { .. }) => {
                    "403 Forbidden"
                }
                _ => "503 Service Unavailable",
            };
            if head.expects_continue {
                respond(&mut stream, status, "", &e.to_string()).await;
            }
            return;
        }
    };
    ingest.metrics.request(Kind::Icecast, "accepted");
    info!(%peer, room = %head.room, sid = source.member.sid(), "Icecast source connected");
    let end = stream_into(&mut stream, body, peer, state, reader, source).await;
    if head.expects_continue && end == SourceEnd::Finished {
        let ok = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let _ = timeout(Duration::from_secs(1), stream.write_all(ok.as_bytes())).await;
    }
    debug!(%peer, ?end, "Icecast source connection closed");
}

/// Why a source's stream was refused before it entered the room.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error(transparent)]
    Ogg(#[from] crate::broadcast::ogg_reader::OggError),
    #[error("the source sent no Ogg/Opus headers within the source timeout")]
    Timeout,
    #[error("the source closed before its Ogg/Opus headers")]
    Closed,
}

impl HeaderError {
    fn as_str(&self) -> &'static str {
        match self {
            HeaderError::Ogg(e) => e.as_str(),
            HeaderError::Timeout => "timeout",
            HeaderError::Closed => "truncated",
        }
    }
}

/// Reads until the stream's OpusHead and OpusTags are in and valid; what follows stays in `reader`.
async fn read_headers(
    stream: &mut TcpStream,
    body: &mut Body,
    reader: &mut OggReader,
    silence: Duration,
) -> Result<(), HeaderError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.next_item() {
            Some(Ok(OggItem::Headers { .. })) => return Ok(()),
            // Audio comes only after the headers.
            Some(Ok(OggItem::Audio { .. })) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
        match timeout(silence, body.read(stream, &mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeaderError::Closed),
            Ok(Ok(n)) => reader.push(&buf[..n]),
            Err(_) => return Err(HeaderError::Timeout),
        }
    }
}

/// Reads the request head (up to the blank line) and leaves the stream at the body.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing of the body may be consumed here, and a head is a few hundred bytes.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

fn check(state: &AppState, raw: &[u8]) -> Result<Head, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Refusal::BadRequest),
    }
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let room = path
        .strip_prefix("/live/")
        .and_then(|f| f.strip_suffix(".opus"))
        .filter(|r| signaling::auth::is_valid_room_name(r))
        .ok_or(Refusal::NotFound)?
        .to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if header("transfer-encoding").is_some_and(|te| !te.eq_ignore_ascii_case("identity")) {
        return Err(Refusal::Chunked);
    }
    let (user, password) = header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        .ok_or(Refusal::Unauthorized)?;
    let claims = verify_token(&password, state.signaling.api_keys(), unix_now())
        .map_err(|_| Refusal::Unauthorized)?;
    if user != "source" || claims.room != room || !claims.can_publish {
        return Err(Refusal::Unauthorized);
    }
    // The name the room sees: the stream's Icecast name, else the token's, else its identity.
    let name = header("ice-name")
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.chars().count() <= 128 && !n.chars().any(char::is_control))
        .map(str::to_owned)
        .or_else(|| claims.name.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| claims.sub.clone());
    let expects_continue = header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let remaining = match header("content-length") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| Refusal::BadRequest)?),
        None => None,
    };
    Ok(Head {
        body: Body { remaining },
        request: SourceRequest {
            room: room.clone(),
            identity: claims.sub,
            name,
        },
        room,
        expects_continue,
    })
}

/// Writes a final response with a text body (best effort: the connection closes after it).
async fn respond(stream: &mut TcpStream, status: &str, extra: &str, text: &str) {
    let body = format!("{text}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

/// Streams the body into the room until the source hangs up, fails, goes silent or is removed; leaves.
async fn stream_into(
    stream: &mut TcpStream,
    mut body: Body,
    peer: SocketAddr,
    state: &Arc<AppState>,
    mut reader: OggReader,
    mut source: Source,
) -> SourceEnd {
    let ingest = &state.ingest;
    let silence = Duration::from_millis(ingest.config.source_timeout_ms);
    let delay = Duration::from_millis(ingest.config.source_delay_ms);
    let seed = rand_u32(peer);
    let mut pacer = Pacer::new(delay, seed as u16, seed.rotate_left(16));
    let mut buf = vec![0u8; READ_CHUNK];
    let end = 'stream: loop {
        // What the last read completed, paced: nothing more is read until it is due.
        while let Some(item) = reader.next_item() {
            let (packet, granule, last) = match item {
                Ok(OggItem::Audio {
                    packet,
                    granule,
                    last,
                }) => (packet, granule, last),
                // The next link of a chained stream (its headers checked): the timeline goes on.
                Ok(OggItem::Headers { .. }) => continue,
                Err(e) => {
                    ingest.metrics.error(Kind::Icecast, e.as_str());
                    warn!(%peer, room = source.member.room(), error = %e, "Icecast source stream refused");
                    break 'stream SourceEnd::Failed;
                }
            };
            let Some((samples, _)) = media_core::mixer::opus_packet_info(&packet) else {
                ingest.metrics.error(Kind::Icecast, "bad_packet");
                continue;
            };
            for paced in pacer.push(Instant::now().into_std(), packet, samples, granule, last) {
                if paced.late {
                    ingest
                        .metrics
                        .late
                        .with_label_values(&[Kind::Icecast.as_str()])
                        .inc();
                }
                tokio::select! {
                    end = source.member.removed() => break 'stream end,
                    () = sleep_until(paced.due.into()) => {}
                }
                if source.packets.send(paced.packet).await.is_err() {
                    break 'stream SourceEnd::Failed;
                }
                ingest
                    .metrics
                    .packets
                    .with_label_values(&[Kind::Icecast.as_str()])
                    .inc();
            }
        }
        let read = tokio::select! {
            end = source.member.removed() => break 'stream end,
            read = timeout(silence, body.read(stream, &mut buf)) => read,
        };
        match read {
            // Hung up (a reset too: encoders close abruptly): fine between pages; inside one, the rest
            // of it is lost.
            ref r if hung_up(r) => match reader.finish() {
                Ok(()) => break 'stream SourceEnd::Finished,
                Err(e) => {
                    ingest.metrics.error(Kind::Icecast, e.as_str());
                    info!(%peer, error = %e, "Icecast source disconnected mid-page");
                    break 'stream SourceEnd::Failed;
                }
            },
            Ok(Ok(n)) => reader.push(&buf[..n]),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "Icecast source read failed");
                break 'stream SourceEnd::Failed;
            }
            Err(_) => {
                ingest.metrics.error(Kind::Icecast, "timeout");
                info!(%peer, silent_ms = silence.as_millis() as u64, "Icecast source went silent");
                break 'stream SourceEnd::Failed;
            }
        }
    };
    source.leave(end.clone()).await;
    end
}

/// Whether a read result means the source is gone: end of stream, or a reset.
fn hung_up(read: &Result<std::io::Result<usize>, tokio::time::error::Elapsed>) -> bool {
    match read {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

/// A sequence/timestamp start that differs per connection (not security relevant).
fn rand_u32(peer: SocketAddr) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ u32::from(peer.port()).rotate_left(7)
}
