//! Resuming a dropped signaling session (issue 12 item 4): the real binary, two str0m clients talking;
//! one client's WebSocket is dropped without a close frame while its media goes on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Participant, SECONDS, TONES};
use chorus_tests::{AudioClient, Server, Signal, SAMPLE_RATE};

/// The resume window of these tests' server: short, so that the expiry case is quick.
const WINDOW_MS: u64 = 3000;

/// Join and negotiate media; also returns `joined.resume_token`.
async fn join(server: &Server, identity: &str, freq: f32) -> anyhow::Result<(Participant, String)> {
    let token = server.token("resume", identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, "resume").await?;
    assert_eq!(joined["resume_window_ms"], WINDOW_MS, "{joined}");
    let resume_token = joined["resume_token"]
        .as_str()
        .expect("joined.resume_token")
        .to_owned();
    let slots = joined["room"]["slots"].as_u64().expect("slots") as usize;
    let sid = joined["participant"]["sid"]
        .as_str()
        .expect("joined.participant.sid")
        .to_owned();
    let client = AudioClient::start(&mut signal, slots, freq, 0.3).await?;
    let p = Participant {
        signal,
        client,
        sid,
        freq,
    };
    Ok((p, resume_token))
}

/// Samples `listener` has decoded from the speaker with microphone SSRC `ssrc`.
fn heard_from(listener: &Participant, ssrc: u32) -> usize {
    listener
        .client
        .heard
        .lock()
        .expect("no panic while holding the heard lock")
        .pcm_by_csrc
        .get(&ssrc)
        .map_or(0, Vec::len)
}

/// Every signaling message `p` receives within `period`.
async fn messages_within(p: &mut Participant, period: Duration) -> Vec<Value> {
    let deadline = Instant::now() + period;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return seen;
        }
        match p.signal.recv(left).await {
            Ok(Some(v)) => seen.push(v),
            _ => return seen,
        }
    }
}

async fn resume(server: &Server, resume_token: &str) -> anyhow::Result<(Signal, Value)> {
    let mut signal = Signal::connect(&server.ws_url()).await?;
    signal
        .send(json!({"type": "resume", "protocol": 1, "resume_token": resume_token}))
        .await?;
    let reply = signal
        .recv(SECONDS)
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed before the resume reply"))?;
    Ok((signal, reply))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_is_resumed_and_audio_never_stops() -> anyhow::Result<()> {
    let config = std::env::temp_dir().join(format!("chorus-resume-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("[session]\nresume_window_ms = {WINDOW_MS}\n"),
    )?;
    let server = Server::start(&["--config", &config.to_string_lossy()]).await?;
    let _ = std::fs::remove_file(&config);
    let (mut ada, ada_token) = join(&server, "ada", TONES[0]).await?;
    let (mut bob, _) = join(&server, "bob", TONES[1]).await?;
    for p in [&mut ada, &mut bob] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    ada.signal.expect("participant_joined", SECONDS).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ada_ssrc = ada.client.mic_ssrc.expect("ada publishes");
    let before = heard_from(&bob, ada_ssrc);
    assert!(before > SAMPLE_RATE as usize / 2, "bob hears ada: {before}");

    // ada's socket drops: the TCP stream ends without a close frame; her media goes on.
    let Participant {
        signal,
        client: ada_media,
        sid: ada_sid,
        freq,
    } = ada;
    drop(signal);
    assert_eq!(
        server
            .metric_becomes("chorus_sessions_suspended", 1.0, SECONDS)
            .await?,
        1.0
    );
    assert_eq!(
        server
            .metric("chorus_participants{mode=\"forward\"}")
            .await?,
        2.0
    );

    let (signal, resumed) = resume(&server, &ada_token).await?;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(
        resumed["participant"]["sid"],
        ada_sid.as_str(),
        "the same participant"
    );
    assert_eq!(resumed["media"], true, "{resumed}");
    assert_eq!(resumed["participants"][0]["sid"], bob.sid.as_str());
    let ada_token = resumed["resume_token"]
        .as_str()
        .expect("a new token")
        .to_owned();
    let mut ada = Participant {
        signal,
        client: ada_media,
        sid: ada_sid,
        freq,
    };

    // bob is told nothing, and keeps hearing ada throughout: every second adds most of a second.
    let mut last = before;
    let told = messages_within(&mut bob, Duration::from_secs(2)).await;
    for m in &told {
        assert!(
            m["type"] != "participant_left" && m["type"] != "participant_joined",
            "bob saw {m}"
        );
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = heard_from(&bob, ada_ssrc);
        assert!(
            now > last + SAMPLE_RATE as usize * 8 / 10,
            "bob heard {} samples of ada in a second",
            now - last
        );
        last = now;
    }
    // The slot carrying ada never skipped a packet across the drop and the resume.
    {
        let heard = bob
            .client
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        let mut last_seq = None;
        for (_, seq, _, _) in heard.packets.iter().filter(|p| p.3 == Some(ada_ssrc)) {
            if let Some(prev) = last_seq {
                assert_eq!(*seq, prev + 1, "ada's slot at bob skipped {prev} -> {seq}");
            }
            last_seq = Some(*seq);
        }
    }
    assert_eq!(server.metric("chorus_sessions_resumed_total").await?, 1.0);
    assert_eq!(server.metric("chorus_sessions_suspended").await?, 0.0);
    // The resumed session is a normal one: it pings, and its old token is spent.
    ada.signal.send(json!({"type": "ping", "id": 1})).await?;
    ada.signal.expect("pong", SECONDS).await?;

    // Then the window passes without a resume: bob is told ada left.
    let Participant {
        signal,
        client: ada_media,
        sid: ada_sid,
        ..
    } = ada;
    drop(signal);
    let dropped = Instant::now();
    let left = bob.signal.expect("participant_left", SECONDS * 2).await?;
    assert_eq!(
        (left["sid"].as_str(), left["reason"].as_str()),
        (Some(ada_sid.as_str()), Some("disconnected")),
        "{left}"
    );
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(WINDOW_MS - 100),
        "ada left after {waited:?}, before the window"
    );
    let (_late, refused) = resume(&server, &ada_token).await?;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "resume_failed", "{refused}");
    assert_eq!(
        server
            .metric("chorus_session_resume_failures_total{reason=\"unknown\"}")
            .await?,
        1.0
    );
    ada_media.stop().await?;
    bob.client.stop().await?;
    Ok(())
}
