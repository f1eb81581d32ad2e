//! Listener streams (docs/broadcast.md) with clients we did not write: ffmpeg decodes a room's mount while a
//! Rust WebRTC client talks a tone in the room; ICY metadata names the speaker, then the title the admin API
//! set; a protected mount refuses a listener without a token for the room; a listener that never reads is
//! dropped and counted while another keeps its audio.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chorus_tests::{AudioClient, Server, Signal, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub(crate) const TONE: f32 = 660.0;
pub(crate) const OTHER_TONES: [f32; 3] = [440.0, 660.0, 880.0];

/// A server with `[broadcast]` settings `toml`, and a mixed room `room` where Alice talks a 660 Hz tone.
pub(crate) async fn server_with_talker(
    room: &str,
    toml: &str,
) -> anyhow::Result<(Server, Signal, AudioClient, std::path::PathBuf)> {
    server_with_talker_in(room, "mix", toml).await
}

/// A server with `[broadcast]` settings `toml`, and a room `room` of `mode` where Alice talks a 660 Hz
/// tone.
async fn server_with_talker_in(
    room: &str,
    mode: &str,
    toml: &str,
) -> anyhow::Result<(Server, Signal, AudioClient, std::path::PathBuf)> {
    let path = std::env::temp_dir().join(format!(
        "chorus-broadcast-{}-{room}.toml",
        std::process::id()
    ));
    std::fs::write(&path, format!("[broadcast]\n{toml}\n"))?;
    let path_str = path.to_str().context("a UTF-8 temp path")?.to_owned();
    let server = Server::start(&["--config", &path_str]).await?;
    server
        .create_room(&json!({"name": room, "mode": mode}))
        .await?;
    let token = server.token(room, "alice", &["--name", "Alice"])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"].as_u64().context("slots")? as usize;
    let mut client = AudioClient::start(&mut signal, slots, TONE, 0.3).await?;
    client
        .wait_connected(Duration::from_secs(5))
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    Ok((server, signal, client, path))
}

/// A raw listener: sends the request, returns the stream after the response head, and the head.
pub(crate) async fn open_listener(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    receive_buffer: Option<u32>,
) -> anyhow::Result<(TcpStream, String, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let mut s = socket.connect(server.http).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", server.http);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await??;
        ensure!(n > 0, "the connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    Ok((s, head, buf[head_end..].to_vec()))
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The stream of a response: `body` as is, or undone of its chunked transfer coding when `head` says so
/// (a listener served by its HTTP connection after another request on it).
fn stream_of(head: &str, body: &[u8]) -> Vec<u8> {
    match header(head, "transfer-encoding") {
        Some(te) if te.eq_ignore_ascii_case("chunked") => dechunk(body),
        _ => body.to_vec(),
    }
}

/// The Ogg pages in `stream` (complete ones): sequence number, granule position, packets ending in it.
pub(crate) fn ogg_pages(stream: &[u8]) -> Vec<(u32, u64, usize)> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at + 27 <= stream.len() && &stream[at..at + 4] == b"OggS" {
        let segments = stream[at + 26] as usize;
        let Some(table) = stream.get(at + 27..at + 27 + segments) else {
            break;
        };
        let len = 27 + segments + table.iter().map(|b| *b as usize).sum::<usize>();
        if at + len > stream.len() {
            break;
        }
        let u32_at = |i: usize| u32::from_le_bytes(stream[i..i + 4].try_into().expect("4 bytes"));
        let granule = u64::from_le_bytes(stream[at + 6..at + 14].try_into().expect("8 bytes"));
        let packets = table.iter().filter(|b| **b < 255).count();
        pages.push((u32_at(at + 18), granule, packets));
        at += len;
    }
    pages
}

/// Undo HTTP/1.1 chunked transfer coding of `body` (complete chunks only): the payload bytes.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(eol) = body[at..].windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[at..at + eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let start = at + eol + 2;
        if size == 0 || start + size > body.len() {
            break;
        }
        out.extend_from_slice(&body[start..start + size]);
        at = start + size + 2;
    }
    out
}

/// The StreamTitles in an ICY stream with metadata every `metaint` audio bytes.
fn icy_titles(stream: &[u8], metaint: usize) -> Vec<String> {
    let mut titles = Vec::new();
    let mut at = metaint;
    while at < stream.len() {
        let len = stream[at] as usize * 16;
        if at + 1 + len > stream.len() {
            break;
        }
        let block = String::from_utf8_lossy(&stream[at + 1..at + 1 + len]);
        if let Some(rest) = block.strip_prefix("StreamTitle='") {
            if let Some(end) = rest.find("';") {
                titles.push(rest[..end].to_owned());
            }
        }
        at += 1 + len + metaint;
    }
    titles
}

/// Read from `s` for `how_long` (or until it closes); the bytes.
pub(crate) async fn read_for(s: &mut TcpStream, how_long: Duration) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + how_long;
    while let Ok(read) = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
        let n = read?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// Three seconds of `url` decoded by ffmpeg (mono, 48 kHz).
async fn ffmpeg_decode(server: &Server, url: &str) -> anyhow::Result<Vec<f32>> {
    let started = Instant::now();
    let pcm = crate::ffmpeg_pcm(url, Some(3))
        .await
        .with_context(|| server.log_tail())?;
    assert!(
        pcm.len() >= 2 * SAMPLE_RATE as usize,
        "ffmpeg decoded {} samples in {:?}",
        pcm.len(),
        started.elapsed()
    );

    Ok(pcm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_broadcast_a_forwarding_room_is_mixed_for_its_mount() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, _signal, client, config) =
        server_with_talker_in("fwd", "forward", "public = true").await?;
    let pcm = ffmpeg_decode(&server, &format!("http://{}/live/fwd.opus", server.http)).await?;
    let tail = &pcm[pcm.len() / 3..];
    let analysis = ToneAnalysis::analyze(tail, SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_broadcast_ffmpeg_hears_the_mix_and_icy_names_the_speaker() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, _signal, client, config) =
        server_with_talker("radio", "icy_metaint_bytes = 1000").await?;
    let token = server.token("radio", "listener", &["--no-publish"])?;
    let other_room = server.token("elsewhere", "listener", &[])?;

    // A protected mount (the default): no token, or a token for another room, is refused.
    let (status, _) = server.http_get("/live/radio.opus").await?;
    assert_eq!(status, 401, "no token");
    let (status, _) = server
        .http_get(&format!("/live/radio.opus?token={other_room}"))
        .await?;
    assert_eq!(status, 401, "a token for another room");
    let (status, _) = server.http_get("/live/nowhere.opus").await?;
    assert_eq!(status, 404, "no such room");

    // ffmpeg, a client we did not write, decodes three seconds of the mount: Alice's tone, nothing else.
    let url = format!("http://{}/live/radio.opus?token={token}", server.http);
    let started = Instant::now();
    let pcm = ffmpeg_decode(&server, &url).await?;
    eprintln!("ffmpeg decoded 3 s of the mount in {:?}", started.elapsed());
    let tail = &pcm[pcm.len() / 3..];
    let analysis = ToneAnalysis::analyze(tail, SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");
    // ICY: the response announces the interval; the first metadata block names who speaks.
    let (mut s, head, early) = open_listener(
        &server,
        &format!("/live/radio.opus?token={token}"),
        &[("Icy-MetaData", "1")],
        None,
    )
    .await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("audio/ogg"));
    assert_eq!(header(&head, "icy-metaint"), Some("1000"));
    let mut body = early;
    body.extend(read_for(&mut s, Duration::from_millis(1500)).await?);
    assert_eq!(
        header(&head, "transfer-encoding"),
        None,
        "close-delimited, as Icecast"
    );
    let stream = stream_of(&head, &body);
    assert_eq!(&stream[..4], b"OggS", "the stream starts with a page");
    let titles = icy_titles(&stream, 1000);
    assert_eq!(
        titles.first().map(String::as_str),
        Some("Alice"),
        "{titles:?}"
    );

    // The admin API sets the title; listeners see it at their next block.
    let admin = server.admin_token()?;
    let (status, reply) = server
        .admin(
            "PUT",
            "/admin/v1/rooms/radio/broadcast",
            Some(&admin),
            Some(r#"{"title": "Morning show"}"#),
        )
        .await?;
    assert_eq!(status, 200, "{reply}");
    let view: serde_json::Value = serde_json::from_str(&reply)?;
    assert_eq!(view["listeners"], 1, "{view}");
    assert!(view["bytes_sent"].as_u64().unwrap_or(0) > 0, "{view}");
    body.extend(read_for(&mut s, Duration::from_millis(1500)).await?);
    let titles = icy_titles(&stream_of(&head, &body), 1000);
    assert_eq!(
        titles.last().map(String::as_str),
        Some("Morning show"),
        "{titles:?}"
    );
    drop(s);

    // A public mount needs no token.
    let (status, reply) = server
        .admin(
            "PUT",
            "/admin/v1/rooms/radio/broadcast",
            Some(&admin),
            Some(r#"{"public": true}"#),
        )
        .await?;
    assert_eq!(status, 200, "{reply}");
    let (mut s, head, _) = open_listener(&server, "/live/radio.opus", &[], None).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(s.shutdown().await);
    assert!(
        server
            .metric("chorus_broadcast_requests_total{result=\"unauthorized\"}")
            .await?
            >= 2.0
    );
    assert!(server.metric("chorus_broadcast_pages_total").await? > 10.0);
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_broadcast_a_listener_that_never_reads_is_dropped_and_others_keep_their_audio(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, _signal, client, config) =
        server_with_talker("stuck", "public = true\nlistener_queue_pages = 5").await?;
    // The first listener reads its head, then never again (a small receive buffer fills fast).
    let (stuck, head, _) = open_listener(&server, "/live/stuck.opus", &[], Some(4096)).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut reader, head, mut got) = open_listener(&server, "/live/stuck.opus", &[], None).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let dropped = "chorus_broadcast_listeners_dropped_total{reason=\"slow\"}";
    let start = Instant::now();
    while server.metric(dropped).await? < 1.0 {
        if start.elapsed() > Duration::from_secs(90) {
            bail!("the stuck listener was not dropped: {}", server.log_tail());
        }
        // The reading listener keeps reading meanwhile.
        got.extend(read_for(&mut reader, Duration::from_millis(500)).await?);
    }
    let (heard, took) = (got.len(), start.elapsed());
    assert_eq!(server.metric(dropped).await?, 1.0, "only the stuck one");
    // The other one still gets audio: about 4 kB/s of Opus at the default bitrate.
    let after = read_for(&mut reader, Duration::from_secs(2)).await?;
    assert!(
        after.len() > 2_000,
        "the reading listener got {} bytes in 2 s (before: {heard} in {took:?})",
        after.len()
    );
    // Every page, in order, before, during and after the drop: the header pages, then audio pages with
    // consecutive sequence numbers and growing granule positions.
    got.extend(after);
    let pages = ogg_pages(&stream_of(&head, &got));
    assert!(pages.len() > 20, "{} pages", pages.len());
    assert_eq!((pages[0].0, pages[1].0), (0, 1), "the header pages first");
    for w in pages[2..].windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0 + 1,
            "pages in order, none missing: {pages:?}"
        );
        assert!(w[1].1 > w[0].1, "granule positions grow: {pages:?}");
    }
    assert_eq!(server.metric("chorus_broadcast_listeners").await?, 1.0);
    assert!(
        server.log_tail().contains("broadcast listener dropped"),
        "the drop is logged"
    );
    // The stuck connection was closed by the server: reading it now ends after what was buffered.
    let mut stuck = stuck;
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = Vec::new();
        stuck.read_to_end(&mut buf).await.map(|_| buf.len())
    })
    .await;
    assert!(
        matches!(rest, Ok(Ok(_)) | Ok(Err(_))),
        "the dropped listener's connection is closed"
    );
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_broadcast_first_audio_comes_with_the_first_frame_and_joiners_start_on_the_last_page(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, _signal, client, config) = server_with_talker("prompt", "public = true").await?;
    // The first listener starts the tap: after the header pages, its first audio page is the first frame
    // of the mix alone (one packet), not a whole page's worth of frames waited for.
    let (mut first, head, mut got) = open_listener(&server, "/live/prompt.opus", &[], None).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    let mut pages = Vec::new();
    while pages.len() < 8 {
        let more = read_for(&mut first, Duration::from_millis(300)).await?;
        ensure!(!more.is_empty(), "no audio: {}", server.log_tail());
        got.extend(more);
        pages = ogg_pages(&got);
    }
    assert_eq!(
        (pages[0].0, pages[1].0, pages[0].1, pages[1].1),
        (0, 1, 0, 0),
        "header pages"
    );
    assert_eq!(
        pages[2].2, 1,
        "the first audio page holds the first frame: {pages:?}"
    );
    assert_eq!(
        pages[3].2, 5,
        "then pages of page_ms (100 ms: five frames): {pages:?}"
    );
    // A listener joining a running mount gets, in the same write as its response head, the header pages
    // and the last page published: audio at once, not at the next page.
    let (_second, _, early) = open_listener(&server, "/live/prompt.opus", &[], None).await?;
    let joined = ogg_pages(&early);
    assert!(joined.len() >= 3, "with the head: {joined:?}");
    assert_eq!((joined[0].0, joined[1].0), (0, 1), "header pages");
    assert!(joined[2].1 > 0, "then audio: {joined:?}");
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}
