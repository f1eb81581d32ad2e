//! Ingest (docs/broadcast.md, "Publishing into a room") with tools we did not write: ffmpeg publishes a tone
//! as an Icecast source (`icecast://…`) into a room where a Rust WebRTC client hears it as a participant;
//! a stream sent faster than real time is paced; bad sources (wrong password, garbage, another codec, a
//! truncated page, a corrupt page) get clear errors and leave while a call in the room goes on. Real-time:
//! named `real_udp_` so they run one at a time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chorus_tests::{Server, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{join, Participant, SECONDS};

mod srtp;

const SOURCE_TONE: f32 = 523.0;

/// A server and `bob`, a connected participant without a microphone in `room`.
async fn server_and_listener(room: &str) -> anyhow::Result<(Server, Participant)> {
    let server = Server::start(&[]).await?;
    let mut bob = join(&server, room, "bob", 0.0, 0.0).await?;
    bob.client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    Ok((server, bob))
}

/// What `p` heard of the one other participant it heard.
fn source_audio(p: &Participant) -> Option<Vec<f32>> {
    let heard = p.client.heard.lock().expect("heard lock");
    heard.pcm_by_csrc.values().next().cloned()
}

/// `seconds` of a tone as Ogg/Opus bytes, encoded by ffmpeg (pages of 100 ms).
async fn ogg_tone(seconds: u32, codec: &str) -> anyhow::Result<Vec<u8>> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={SOURCE_TONE}:duration={seconds}"))
        .args([
            "-c:a",
            codec,
            "-page_duration",
            "100000",
            "-f",
            "ogg",
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ffmpeg (scripts/test.sh installs it)")?;
    ensure!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A raw source connection: sends the request head (with `Expect: 100-continue`), returns the stream and
/// what the server answered first.
async fn source_request(
    server: &Server,
    path: &str,
    password: &str,
) -> anyhow::Result<(TcpStream, String)> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("source:{password}"));
    let mut s = TcpStream::connect(server.http).await?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/ogg\r\n\
         Expect: 100-continue\r\nIce-Name: Raw source\r\n\r\n",
        server.http
    );
    s.write_all(head.as_bytes()).await?;
    let first = read_response(&mut s).await?;
    Ok((s, first))
}

/// One response head (and a short body, if the server sent and closed).
async fn read_response(s: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + SECONDS;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // A final error response has a body: read it to the close.
    if !buf.starts_with(b"HTTP/1.1 100") && !buf.starts_with(b"HTTP/1.1 200") {
        let _ = tokio::time::timeout_at(deadline, s.read_to_end(&mut buf)).await;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Waits for `participant_joined` then `participant_left` of the same participant; returns its name, the
/// leave reason and how long it stayed.
async fn source_visit(
    p: &mut Participant,
    within: Duration,
) -> anyhow::Result<(String, String, Duration)> {
    let joined = p.signal.expect("participant_joined", within).await?;
    let since = Instant::now();
    let sid = joined["participant"]["sid"]
        .as_str()
        .context("sid")?
        .to_owned();
    let name = joined["participant"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let left = p.signal.expect("participant_left", within).await?;
    ensure!(
        left["sid"] == sid.as_str(),
        "another participant left: {left}"
    );
    let reason = left["reason"].as_str().unwrap_or_default().to_owned();
    Ok((name, reason, since.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_ingest_ffmpeg_publishes_as_an_icecast_source_and_a_client_hears_it(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, mut bob) = server_and_listener("radio").await?;
    let key = server.token("radio", "studio", &["--name", "Studio A"])?;
    let url = format!("icecast://source:{key}@{}/live/radio.opus", server.http);
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("sine=frequency={SOURCE_TONE}:duration=4"))
        .args(["-c:a", "libopus", "-b:a", "32k", "-f", "ogg", &url])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ffmpeg (scripts/test.sh installs it)")?;

    // The source is a participant: joined with the token's name, heard in bob's slot, gone when ffmpeg ends.
    let (name, reason, stayed) = source_visit(&mut bob, Duration::from_secs(10))
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    let status = ffmpeg.wait().await?;
    let mut err = String::new();
    if let Some(mut stderr) = ffmpeg.stderr.take() {
        stderr.read_to_string(&mut err).await?;
    }
    ensure!(
        status.success(),
        "ffmpeg failed: {err}\n{}",
        server.log_tail()
    );
    assert_eq!(name, "Studio A");
    assert_eq!(reason, "left");
    assert!(
        (3.0..8.0).contains(&stayed.as_secs_f64()),
        "a 4 s stream (ffmpeg pages of 1 s) stayed {stayed:?}"
    );
    let pcm = source_audio(&bob).context("bob heard no source")?;
    assert!(
        pcm.len() > 2 * SAMPLE_RATE as usize,
        "bob heard {} samples",
        pcm.len()
    );
    let a = ToneAnalysis::analyze(
        &pcm[pcm.len() / 4..],
        SAMPLE_RATE,
        &[SOURCE_TONE, 440.0, 660.0],
    );
    assert_eq!(a.present_default(), vec![SOURCE_TONE], "{a:?}");
    let packets = server
        .metric("chorus_ingest_packets_total{kind=\"icecast\"}")
        .await?;
    assert!(packets > 150.0, "{packets} packets ingested");
    assert_eq!(
        server
            .metric("chorus_ingest_sources{kind=\"icecast\"}")
            .await?,
        0.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_ingest_a_fast_source_is_paced_and_bad_sources_get_clear_errors(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    // A call that must not notice anything.
    let mut alice = join(&server, "studio", "alice", 440.0, 0.3).await?;
    let mut bob = join(&server, "studio", "bob", 0.0, 0.0).await?;
    for p in [&mut alice, &mut bob] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let key = server.token("studio", "encoder", &[])?;
    let alice_ssrc = alice.client.mic_ssrc;

    // Wrong password, wrong user, a token for another room, a path that is no mount: refused up front.
    let (_, r) = source_request(&server, "/live/studio.opus", "not-a-token").await?;
    assert!(
        r.starts_with("HTTP/1.1 401") && r.contains("WWW-Authenticate: Basic"),
        "{r}"
    );
    let other = server.token("elsewhere", "encoder", &[])?;
    let (_, r) = source_request(&server, "/live/studio.opus", &other).await?;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let (_, r) = source_request(&server, "/live/studio.mp3", &key).await?;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");

    // Garbage after 100 Continue: 415 naming the problem; the source never became a participant.
    let (mut s, r) = source_request(&server, "/live/studio.opus", &key).await?;
    assert!(r.starts_with("HTTP/1.1 100"), "{r}");
    s.write_all(b"this is not an ogg stream at all, just bytes and more bytes....")
        .await?;
    let r = read_response(&mut s).await?;
    assert!(
        r.starts_with("HTTP/1.1 415") && r.contains("not an Ogg stream"),
        "{r}"
    );

    // Another codec in Ogg (FLAC): refused by name.
    let flac = ogg_tone(1, "flac").await?;
    let (mut s, _) = source_request(&server, "/live/studio.opus", &key).await?;
    s.write_all(&flac).await?;
    let r = read_response(&mut s).await?;
    assert!(
        r.starts_with("HTTP/1.1 415") && r.contains("FLAC, not Opus"),
        "{r}"
    );

    // A whole 3 s stream sent at once: paced, so the source stays about 3 s, not a moment.
    let tone = ogg_tone(3, "libopus").await?;
    let (mut s, r) = source_request(&server, "/live/studio.opus", &key).await?;
    assert!(r.starts_with("HTTP/1.1 100"), "{r}");
    s.write_all(&tone).await?;
    s.shutdown().await?;
    let (name, reason, stayed) = source_visit(&mut bob, SECONDS).await?;
    // Its final status comes once its stream is over.
    let r = read_response(&mut s).await?;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!((name.as_str(), reason.as_str()), ("Raw source", "left"));
    assert!(
        (2.5..4.5).contains(&stayed.as_secs_f64()),
        "3 s of audio sent at once stayed {stayed:?}"
    );

    // Disconnecting mid-page: the source leaves as disconnected, counted as truncated.
    let (mut s, _) = source_request(&server, "/live/studio.opus", &key).await?;
    s.write_all(&tone[..tone.len() / 2 + 7]).await?;
    drop(s);
    let (_, reason, _) = source_visit(&mut bob, SECONDS).await?;
    assert_eq!(reason, "disconnected");
    let truncated = server
        .metric("chorus_ingest_errors_total{error=\"truncated\",kind=\"icecast\"}")
        .await?;
    assert_eq!(truncated, 1.0);

    // A corrupt page in the middle: the source is ended, counted as a CRC error.
    let mut corrupt = tone.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    let (mut s, _) = source_request(&server, "/live/studio.opus", &key).await?;
    s.write_all(&corrupt).await?;
    let (_, reason, _) = source_visit(&mut bob, SECONDS).await?;
    assert_eq!(reason, "disconnected");
    assert_eq!(
        server
            .metric("chorus_ingest_errors_total{error=\"crc\",kind=\"icecast\"}")
            .await?,
        1.0
    );

    // All along, bob heard alice, and still does.
    let alice_ssrc = alice_ssrc.context("alice publishes")?;
    let heard_of_alice = |bob: &Participant| {
        let heard = bob.client.heard.lock().expect("heard lock");
        heard
            .pcm_by_csrc
            .get(&alice_ssrc)
            .cloned()
            .unwrap_or_default()
    };
    let before = heard_of_alice(&bob).len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pcm = heard_of_alice(&bob);
    assert!(
        pcm.len() > before + SAMPLE_RATE as usize / 2,
        "bob stopped hearing alice"
    );
    let a = ToneAnalysis::analyze(
        &pcm[pcm.len() - SAMPLE_RATE as usize..],
        SAMPLE_RATE,
        &[440.0, SOURCE_TONE],
    );
    assert_eq!(a.present_default(), vec![440.0], "{a:?}");
    Ok(())
}

/// Plain RTP/Opus (docs/broadcast.md, "Plain RTP/Opus"): the admin API opens an endpoint, ffmpeg sends a
/// tone with `-f rtp`, a WebRTC client hears it; garbage before, and packets from another address after
/// the sender is latched, are dropped and counted; `DELETE` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_ingest_rtp_from_ffmpeg_is_heard_and_strangers_are_dropped() -> anyhow::Result<()>
{
    let _alone = chorus_tests::real_time_call().await;
    let (server, mut bob) = server_and_listener("phone").await?;
    let admin = server.admin_token()?;
    let (status, body) = server
        .admin(
            "POST",
            "/admin/v1/rooms/phone/rtp",
            Some(&admin),
            Some(r#"{"identity": "sip-1", "name": "Phone line"}"#),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let endpoint: serde_json::Value = serde_json::from_str(&body)?;
    let port = endpoint["port"].as_u64().context("port")?;
    let id = endpoint["id"].as_str().context("id")?.to_owned();
    let target = format!("127.0.0.1:{port}");
    let joined = bob.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(joined["participant"]["name"], "Phone line");

    // Garbage first: dropped, and it latches nothing.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    stranger
        .send_to(b"INVITE sip:nobody SIP/2.0", &target)
        .await?;
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("sine=frequency={SOURCE_TONE}:duration=3"))
        .args(["-c:a", "libopus", "-b:a", "32k", "-f", "rtp"])
        .arg(format!("rtp://{target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ffmpeg (scripts/test.sh installs it)")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A well-formed Opus packet from another address once ffmpeg is latched: dropped.
    let mut forged = vec![0x80, 97, 0, 1, 0, 0, 0, 0, 9, 9, 9, 9];
    forged.extend_from_slice(&[0xf8, 0xff, 0xfe]);
    for _ in 0..5 {
        stranger.send_to(&forged, &target).await?;
    }
    let status = ffmpeg.wait().await?;
    ensure!(status.success(), "ffmpeg failed\n{}", server.log_tail());
    let pcm = source_audio(&bob).context("bob heard no RTP source")?;
    assert!(
        pcm.len() > 2 * SAMPLE_RATE as usize,
        "bob heard {} samples",
        pcm.len()
    );
    let a = ToneAnalysis::analyze(&pcm[pcm.len() / 4..], SAMPLE_RATE, &[SOURCE_TONE, 440.0]);
    assert_eq!(a.present_default(), vec![SOURCE_TONE], "{a:?}");
    let errors = |e: &'static str| {
        let sample = format!("chorus_ingest_errors_total{{error=\"{e}\",kind=\"rtp\"}}");
        let server = &server;
        async move { server.metric(&sample).await }
    };
    assert_eq!(errors("not_rtp").await?, 1.0);
    assert_eq!(errors("foreign_source").await?, 5.0);
    let packets = server
        .metric("chorus_ingest_packets_total{kind=\"rtp\"}")
        .await?;
    assert!(packets > 120.0, "{packets} packets");

    // Listed, then closed: the participant leaves; a second close is 404.
    let (status, body) = server
        .admin("GET", "/admin/v1/rtp", Some(&admin), None)
        .await?;
    assert!(status == 200 && body.contains(&id), "{status} {body}");
    let path = format!("/admin/v1/rtp/{id}");
    let (status, body) = server.admin("DELETE", &path, Some(&admin), None).await?;
    assert_eq!(status, 204, "{body}");
    let left = bob.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(left["sid"], joined["participant"]["sid"]);
    let (status, _) = server.admin("DELETE", &path, Some(&admin), None).await?;
    assert_eq!(status, 404);
    assert_eq!(
        server.metric("chorus_ingest_sources{kind=\"rtp\"}").await?,
        0.0
    );
    Ok(())
}
