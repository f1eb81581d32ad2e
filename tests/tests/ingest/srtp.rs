//! SRTP (SDES) on plain RTP endpoints (docs/broadcast.md, "Plain RTP/Opus"): ffmpeg's own SRTP sender
//! (`-srtp_out_suite … srtp://`) with the key the admin API handed out is heard; a replayed copy of its
//! packets is dropped and counted; ffmpeg with the wrong key is silence and `srtp_auth` drops; requests
//! for an unknown suite or a key of the wrong length are refused. Real-time: named `real_udp_`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};
use base64::Engine;
use chorus_tests::{Server, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::process::Child;

use super::{server_and_listener, source_audio, SOURCE_TONE};
use crate::SECONDS;

/// The wrong sender's tone: never to be heard.
const WRONG_TONE: f32 = 740.0;
/// Every this many packets the relay sends one twice.
const REPLAY_EVERY: u64 = 10;

/// ffmpeg sending `seconds` of a tone as SRTP (AES_CM_128_HMAC_SHA1_80) with `key` to `target`.
fn ffmpeg_srtp(freq: f32, seconds: u32, key: &str, target: &str) -> anyhow::Result<Child> {
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi"])
        .arg("-i")
        .arg(format!("sine=frequency={freq}:duration={seconds}"))
        .args(["-c:a", "libopus", "-b:a", "32k", "-f", "rtp"])
        .args(["-srtp_out_suite", "AES_CM_128_HMAC_SHA1_80"])
        .args(["-srtp_out_params", key])
        .arg(format!("srtp://{target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ffmpeg (scripts/test.sh installs it)")
}

/// Relays datagrams from `inbound` to `target`, sending every [`REPLAY_EVERY`]th twice (a replay);
/// returns how many it replayed once `inbound` has been quiet for a second.
async fn replaying_relay(inbound: UdpSocket, target: String) -> anyhow::Result<u64> {
    let out = UdpSocket::bind("127.0.0.1:0").await?;
    let mut buf = vec![0u8; 2048];
    let (mut relayed, mut replayed) = (0u64, 0u64);
    loop {
        let wait = if relayed == 0 {
            SECONDS
        } else {
            Duration::from_secs(1)
        };
        let Ok(received) = tokio::time::timeout(wait, inbound.recv_from(&mut buf)).await else {
            return Ok(replayed);
        };
        let (n, _) = received?;
        out.send_to(&buf[..n], &target).await?;
        relayed += 1;
        if relayed % REPLAY_EVERY == 0 {
            out.send_to(&buf[..n], &target).await?;
            replayed += 1;
        }
    }
}

async fn open(server: &Server, admin: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let (status, reply) = server
        .admin("POST", "/admin/v1/rooms/phone/rtp", Some(admin), Some(body))
        .await?;
    let value = serde_json::from_str(&reply).with_context(|| format!("{status} {reply}"))?;
    Ok((status, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_ingest_srtp_from_ffmpeg_is_heard_and_a_wrong_key_or_a_replay_is_dropped(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, bob) = server_and_listener("phone").await?;
    let admin = server.admin_token()?;

    // Bad SRTP requests open nothing.
    for body in [
        r#"{"srtp": {"suite": "NULL"}}"#,
        r#"{"srtp": {"key": "c2hvcnQ="}}"#,
        r#"{"srtp": {"key": "not base64!"}}"#,
        r#"{"srtp": true}"#,
    ] {
        let (status, reply) = open(&server, &admin, body).await?;
        assert_eq!(status, 400, "{body}: {reply}");
    }

    // The key the server made, as ffmpeg takes it.
    let (status, secure) = open(
        &server,
        &admin,
        r#"{"identity": "sip-s", "name": "Secure line", "srtp": {}}"#,
    )
    .await?;
    assert_eq!(status, 201, "{secure}");
    assert_eq!(secure["srtp"], "AES_CM_128_HMAC_SHA1_80");
    let key = secure["crypto"]["key"].as_str().context("crypto.key")?;
    assert_eq!(
        secure["crypto"]["attribute"],
        format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}")
    );
    let secure_port = secure["port"].as_u64().context("port")?;
    // A key of the caller's; ffmpeg will send with another.
    let given = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
    let (status, locked) = open(
        &server,
        &admin,
        &format!(r#"{{"identity": "sip-w", "srtp": {{"key": "{given}"}}}}"#),
    )
    .await?;
    assert_eq!(status, 201, "{locked}");
    assert_eq!(locked["crypto"]["key"], given.as_str());
    let locked_port = locked["port"].as_u64().context("port")?;
    // Neither key is listed.
    let (_, list) = server
        .admin("GET", "/admin/v1/rtp", Some(&admin), None)
        .await?;
    ensure!(!list.contains(key) && !list.contains(&given), "{list}");

    let relay_in = UdpSocket::bind("127.0.0.1:0").await?;
    let relay_addr = relay_in.local_addr()?.to_string();
    let relay = tokio::spawn(replaying_relay(
        relay_in,
        format!("127.0.0.1:{secure_port}"),
    ));
    let wrong_key = base64::engine::general_purpose::STANDARD.encode([9u8; 30]);
    let mut right = ffmpeg_srtp(SOURCE_TONE, 3, key, &relay_addr)?;
    let mut wrong = ffmpeg_srtp(
        WRONG_TONE,
        3,
        &wrong_key,
        &format!("127.0.0.1:{locked_port}"),
    )?;
    ensure!(right.wait().await?.success(), "ffmpeg (right key) failed");
    ensure!(wrong.wait().await?.success(), "ffmpeg (wrong key) failed");
    let replayed = relay.await??;

    let heard = bob
        .client
        .heard
        .lock()
        .expect("heard lock")
        .pcm_by_csrc
        .len();
    assert_eq!(heard, 1, "bob heard {heard} sources: the wrong key's too?");
    let pcm = source_audio(&bob).context("bob heard no SRTP source")?;
    assert!(
        pcm.len() > 2 * SAMPLE_RATE as usize,
        "bob heard {} samples",
        pcm.len()
    );
    let a = ToneAnalysis::analyze(
        &pcm[pcm.len() / 4..],
        SAMPLE_RATE,
        &[SOURCE_TONE, WRONG_TONE],
    );
    assert_eq!(a.present_default(), vec![SOURCE_TONE], "{a:?}");
    let errors = |e: &'static str| {
        let sample = format!("chorus_ingest_errors_total{{error=\"{e}\",kind=\"rtp\"}}");
        let server = &server;
        async move { server.metric(&sample).await }
    };
    // 3 s of 20 ms packets from the wrong key: every one dropped.
    let auth = errors("srtp_auth").await?;
    assert!((140.0..=160.0).contains(&auth), "{auth} srtp_auth drops");
    assert!(replayed >= 14, "the relay replayed {replayed}");
    assert_eq!(errors("srtp_replay").await?, replayed as f64);
    Ok(())
}
