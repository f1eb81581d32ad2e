//! End-to-end: the real `chorus` binary on loopback, Rust WebRTC clients (str0m, client role) that join
//! through the WebSocket protocol, send Opus tones or speech over DTLS-SRTP, and check what they hear
//! (`speech`: PESQ-WB over real UDP, clean and through an impairment proxy).

use std::collections::HashMap;
use std::time::Duration;

use chorus_tests::{AudioClient, Server, Signal, SAMPLE_RATE};

mod broadcast;
mod cluster;
mod faults;
mod hls;
mod ingest;
mod interop;
mod ops;
mod playout;
mod ptt;
mod recording;
mod resume;
mod span;
mod spatial;
mod speech;
mod tcp;
mod teams;
mod whip;
use media_core::audio;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// `input` (a file or a URL) decoded by ffmpeg to mono 48 kHz samples in -1..1: all of it, or its first
/// `seconds`. ffmpeg's stderr is the error when it fails.
pub async fn ffmpeg_pcm(
    input: impl AsRef<std::ffi::OsStr>,
    seconds: Option<u32>,
) -> anyhow::Result<Vec<f32>> {
    let mut command = tokio::process::Command::new("ffmpeg");
    command
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(input);
    if let Some(seconds) = seconds {
        command.arg("-t").arg(seconds.to_string());
    }
    let out = command
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .map_err(|_| anyhow::anyhow!("ffmpeg did not finish in 30 s"))??;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out
        .stdout
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect())
}

const DEV_KEY: &str = "devkey";
const DEV_SECRET: &str = "chorus-development-secret-do-not-use-in-production";
const SECONDS: Duration = Duration::from_secs(5);

/// A participant's tone, in a range Opus carries cleanly and far from the others' harmonics.
const TONES: [f32; 3] = [440.0, 660.0, 880.0];

struct Participant {
    signal: Signal,
    client: AudioClient,
    sid: String,
    freq: f32,
}

async fn join(
    server: &Server,
    room: &str,
    identity: &str,
    freq: f32,
    amplitude: f32,
) -> anyhow::Result<Participant> {
    let token = server.token(room, identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"]
        .as_u64()
        .expect("joined.room.slots is a number") as usize;
    let sid = joined["participant"]["sid"]
        .as_str()
        .expect("joined.participant.sid")
        .to_owned();
    let client = AudioClient::start(&mut signal, slots, freq, amplitude).await?;
    Ok(Participant {
        signal,
        client,
        sid,
        freq,
    })
}

/// The latest `slots` message a participant received, by draining its signaling queue briefly.
async fn latest_slots(p: &mut Participant) -> Option<Value> {
    let mut last = None;
    while let Ok(Some(v)) = p.signal.recv(Duration::from_millis(200)).await {
        if v["type"] == "slots" {
            last = Some(v);
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_hear_each_other_and_never_themselves() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let mut people = Vec::new();
    for (i, freq) in TONES.iter().enumerate() {
        people.push(join(&server, "tones", &format!("user{i}"), *freq, 0.3).await?);
    }
    for p in &mut people {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ssrc_of: HashMap<u32, (String, f32)> = people
        .iter()
        .map(|p| {
            (
                p.client
                    .mic_ssrc
                    .expect("a publishing client has a mic SSRC"),
                (p.sid.clone(), p.freq),
            )
        })
        .collect();
    for p in &mut people {
        let own = p
            .client
            .mic_ssrc
            .expect("a publishing client has a mic SSRC");
        let slots = latest_slots(p)
            .await
            .expect("the server sent slot assignments");
        let heard = p
            .client
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        assert!(
            !heard.pcm_by_csrc.contains_key(&own),
            "{} hears itself",
            p.sid
        );
        for (ssrc, (sid, freq)) in &ssrc_of {
            if *ssrc == own {
                continue;
            }
            let pcm = heard.pcm_by_csrc.get(ssrc).unwrap_or_else(|| {
                panic!(
                    "{} does not hear {sid}; heard {:?}",
                    p.sid,
                    heard.pcm_by_csrc.keys()
                )
            });
            assert!(
                pcm.len() > SAMPLE_RATE as usize,
                "{} heard only {} samples of {sid}",
                p.sid,
                pcm.len()
            );
            // Skip the decoder's start-up, then check the tone is the speaker's and nobody else's.
            let tail = &pcm[pcm.len() / 2..];
            let analysis = audio::ToneAnalysis::analyze(tail, SAMPLE_RATE, &TONES);
            assert_eq!(
                analysis.present_default(),
                vec![*freq],
                "{} hears {sid} as {analysis:?}",
                p.sid
            );
            assert!(
                analysis.relative(*freq) > 0.5,
                "{} hears {sid} weakly: {analysis:?}",
                p.sid
            );
            // The signaling slot map names the same participant and SSRC the CSRC carries.
            let listed = slots["slots"]
                .as_array()
                .expect("slots.slots is an array")
                .iter()
                .any(|s| s["sid"] == sid.as_str() && s["ssrc"] == *ssrc);
            assert!(listed, "{} slot map {slots} lacks {sid}/{ssrc}", p.sid);
        }
        // Each slot is one continuous stream: sequence numbers increase by one.
        let mut last_seq: HashMap<usize, u64> = HashMap::new();
        for (slot, seq, _, _) in &heard.packets {
            if let Some(prev) = last_seq.insert(*slot, *seq) {
                assert_eq!(
                    *seq,
                    prev + 1,
                    "{} slot {slot}: seq jumped {prev} -> {seq}",
                    p.sid
                );
            }
        }
    }
    for p in people {
        p.client.stop().await?;
    }
    Ok(())
}

fn now_secs() -> u64 {
    signaling::auth::unix_now()
}

fn token(room: &str, exp: u64, secret: &str) -> String {
    let claims = signaling::auth::Claims {
        exp,
        iat: None,
        ..signaling::auth::Claims::valid_for(room, "mallory", 0)
    };
    signaling::auth::create_token(DEV_KEY, secret.as_bytes(), &claims)
        .expect("signing a token with a valid key works")
}

async fn error_code(signal: &mut Signal) -> anyhow::Result<String> {
    let v = signal.expect("error", SECONDS).await?;
    Ok(v["code"].as_str().unwrap_or_default().to_owned())
}

async fn join_error(server: &Server, token: &str, room: &str) -> anyhow::Result<(String, bool)> {
    let mut s = Signal::connect(&server.ws_url()).await?;
    s.send(json!({"type": "join", "protocol": 1, "token": token, "room": room}))
        .await?;
    let code = error_code(&mut s).await?;
    let closed = s.recv(SECONDS).await?.is_none();
    Ok((code, closed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_never_disturbs_a_call() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    // A call in progress that must not notice anything.
    let mut a = join(&server, "calm", "alice", 440.0, 0.3).await?;
    let mut b = join(&server, "calm", "bob", 660.0, 0.3).await?;
    a.client.wait_connected(SECONDS).await?;
    b.client.wait_connected(SECONDS).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = b.client.heard.lock().expect("lock").packets.len();

    // Malformed JSON, unknown type, a known type with bad fields, a message before join.
    let mut s = Signal::connect(&server.ws_url()).await?;
    s.send_raw(Message::text("{not json")).await?;
    assert_eq!(error_code(&mut s).await?, "bad_json");
    s.send(json!({"type": "teleport"})).await?;
    assert_eq!(error_code(&mut s).await?, "unknown_type");
    s.send(json!({"type": "join", "protocol": "one"})).await?;
    assert_eq!(error_code(&mut s).await?, "bad_message");
    s.send(json!({"type": "mute", "muted": true})).await?;
    assert_eq!(error_code(&mut s).await?, "not_joined");
    // Oversized frame: typed error, then the socket is closed.
    s.send_raw(Message::text(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    )))
    .await?;
    assert_eq!(error_code(&mut s).await?, "frame_too_large");
    assert!(
        s.recv(SECONDS).await?.is_none(),
        "socket stays open after frame_too_large"
    );

    // Tokens: garbage, wrong signature, expired, wrong room.
    assert_eq!(
        join_error(&server, "garbage", "calm").await?,
        ("invalid_token".into(), true)
    );
    let forged = token(
        "calm",
        now_secs() + 600,
        "not-the-secret-not-the-secret-not-the-secret",
    );
    assert_eq!(
        join_error(&server, &forged, "calm").await?,
        ("invalid_token".into(), true)
    );
    let expired = token("calm", now_secs() - 60, DEV_SECRET);
    assert_eq!(
        join_error(&server, &expired, "calm").await?,
        ("token_expired".into(), true)
    );
    let elsewhere = token("other", now_secs() + 600, DEV_SECRET);
    assert_eq!(
        join_error(&server, &elsewhere, "calm").await?,
        ("room_mismatch".into(), true)
    );

    // Garbage UDP at the media port: counted drops, no effect on the call.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let dropped_before = server
        .metric("chorus_packets_dropped_total{reason=\"unknown_source\"}")
        .await?;
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 300 + 1)).map(|j| (j * 31 + i * 7) as u8).collect();
        udp.send_to(&junk, server.media).await?;
    }
    // A STUN-shaped datagram naming no peer.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    udp.send_to(&stun, server.media).await?;
    udp.send_to(&vec![0u8; 3000], server.media).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let dropped_after = server
        .metric("chorus_packets_dropped_total{reason=\"unknown_source\"}")
        .await?;
    assert!(
        dropped_after - dropped_before >= 190.0,
        "garbage not counted: {dropped_before} -> {dropped_after}"
    );
    assert!(
        server
            .metric("chorus_packets_dropped_total{reason=\"oversized\"}")
            .await?
            >= 1.0
    );
    assert!(
        server
            .metric("chorus_signaling_errors_total{code=\"bad_json\"}")
            .await?
            >= 1.0
    );

    // The call carried on throughout: bob kept hearing alice, and the server is healthy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = b.client.heard.lock().expect("lock").packets.len();
    assert!(
        after > before + 50,
        "bob's audio stalled: {before} -> {after} packets"
    );
    assert_eq!(server.http_get("/healthz").await?.0, 200);
    let _ = latest_slots(&mut a).await;
    a.client.stop().await?;
    b.client.stop().await?;
    Ok(())
}
