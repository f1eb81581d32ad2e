//! Push-to-talk and moderation through the real `chorus` binary with Rust WebRTC clients (str0m over real
//! UDP): a push-to-talk talker is heard only while its key is down; a key flood gets typed errors and
//! costs nobody else anything; a moderator mutes (a server mute the participant cannot undo), deafens,
//! moves (the moved client re-offers in the new room and is heard there) and kicks. Real-time: named
//! `real_udp_` so they run one at a time.

use std::time::Duration;

use chorus_tests::{AudioClient, MediaOptions, Mic, Server, SAMPLE_RATE};
use media_core::audio;

use super::{join, Participant, SECONDS};

/// Samples of `talker`'s audio `listener` has decoded so far.
pub(super) fn heard_of(listener: &Participant, talker: &Participant) -> usize {
    let ssrc = talker.client.mic_ssrc.expect("a publishing client");
    let heard = listener.client.heard.lock().expect("heard lock");
    heard.pcm_by_csrc.get(&ssrc).map_or(0, Vec::len)
}

/// Packets `listener` has received in all.
fn packets(listener: &Participant) -> usize {
    listener
        .client
        .heard
        .lock()
        .expect("heard lock")
        .packets
        .len()
}

/// Joins with extra `chorus token create` flags (`--ptt`, `--moderator`).
pub(super) async fn join_with(
    server: &Server,
    room: &str,
    identity: &str,
    freq: f32,
    flags: &[&str],
) -> anyhow::Result<Participant> {
    let mic = if freq > 0.0 {
        Mic::Tone {
            freq_hz: freq,
            amplitude: 0.3,
        }
    } else {
        Mic::Off
    };
    let mut p = join_with_mic(server, room, identity, mic, flags).await?;
    p.freq = freq;
    Ok(p)
}

/// Joins with extra `chorus token create` flags and the microphone `mic`.
pub(super) async fn join_with_mic(
    server: &Server,
    room: &str,
    identity: &str,
    mic: Mic,
    flags: &[&str],
) -> anyhow::Result<Participant> {
    let token = server.token(room, identity, flags)?;
    let mut signal = chorus_tests::Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"].as_u64().expect("slots") as usize;
    let sid = joined["participant"]["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let options = MediaOptions {
        slots,
        mic,
        via: None,
        play_slot: None,
        red: 0,
    };
    let client = AudioClient::start_with(&mut signal, options).await?;
    Ok(Participant {
        signal,
        client,
        sid,
        freq: 0.0,
    })
}

/// Reads `p`'s messages until a pong for `id`, returning the error codes received meanwhile.
pub(super) async fn errors_until_pong(p: &mut Participant, id: u64) -> anyhow::Result<Vec<String>> {
    p.signal
        .send(serde_json::json!({"type": "ping", "id": id}))
        .await?;
    let mut codes = Vec::new();
    loop {
        let v = p
            .signal
            .recv(SECONDS)
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed"))?;
        match v["type"].as_str() {
            Some("pong") if v["id"] == id => return Ok(codes),
            Some("error") => codes.push(v["code"].as_str().unwrap_or_default().to_owned()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_push_to_talk_is_heard_only_while_the_key_is_down_and_a_key_flood_harms_nobody(
) -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    // ada's token forces push-to-talk; she sends a tone all the time.
    let mut ada = join_with(&server, "ptt", "ada", 440.0, &["--ptt"]).await?;
    let mut bob = join(&server, "ptt", "bob", 660.0, 0.3).await?;
    for p in [&mut ada, &mut bob] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(heard_of(&bob, &ada), 0, "key up, yet bob hears ada");
    assert!(
        heard_of(&ada, &bob) > SAMPLE_RATE as usize / 2,
        "ada does not hear bob"
    );

    // Key down: bob hears ada's tone for as long as it is held.
    ada.signal.client().ptt_key(true).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = heard_of(&bob, &ada);
    assert!(
        held > SAMPLE_RATE as usize,
        "1.5 s with the key down, bob heard {held} samples of ada"
    );
    {
        let ssrc = ada.client.mic_ssrc.expect("publishing");
        let heard = bob.client.heard.lock().expect("heard lock");
        let pcm = &heard.pcm_by_csrc[&ssrc];
        let analysis =
            audio::ToneAnalysis::analyze(&pcm[pcm.len() / 2..], SAMPLE_RATE, &[440.0, 660.0]);
        assert_eq!(analysis.present_default(), vec![440.0], "{analysis:?}");
    }
    // Key up: nothing more (after what was in flight).
    ada.signal.client().ptt_key(false).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_up = heard_of(&bob, &ada);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heard_of(&bob, &ada), after_up, "key up, yet forwarded");

    // A flood of 200 presses: typed errors for the key-downs beyond the rate, the session stays, bob keeps
    // being heard by ada throughout, and ada's gate ends closed.
    let bob_before = heard_of(&ada, &bob);
    for _ in 0..100 {
        ada.signal.client().ptt_key(true).await?;
        ada.signal.client().ptt_key(false).await?;
    }
    let codes = errors_until_pong(&mut ada, 77).await?;
    assert!(
        codes.len() >= 80 && codes.iter().all(|c| c == "rate_limited"),
        "{} errors: {codes:?}",
        codes.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ada_now = heard_of(&bob, &ada);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        heard_of(&bob, &ada),
        ada_now,
        "the flood left the gate open"
    );
    assert!(
        heard_of(&ada, &bob) > bob_before + SAMPLE_RATE as usize,
        "bob's audio to ada suffered from ada's flood"
    );
    let flood = server
        .metric("chorus_session_limits_total{reason=\"ptt_key_flood\"}")
        .await?;
    assert!(flood >= 80.0, "flood counted {flood}");
    // Still a push-to-talk participant that works: press again.
    ada.signal.client().ptt_key(true).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(heard_of(&bob, &ada) > ada_now + SAMPLE_RATE as usize / 2);
    for p in [ada, bob] {
        p.client.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_a_moderator_mutes_deafens_moves_and_kicks() -> anyhow::Result<()> {
    use signaling::protocol::ModerateAction;
    let _rt = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let admin = server.admin_token()?;
    let mut mo = join_with(&server, "lobby", "mo", 0.0, &["--moderator"]).await?;
    let mut bob = join(&server, "lobby", "bob", 440.0, 0.3).await?;
    let mut carol = join(&server, "lobby", "carol", 660.0, 0.3).await?;
    for p in [&mut mo, &mut bob, &mut carol] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(heard_of(&carol, &bob) > SAMPLE_RATE as usize / 2);

    // carol has no grant.
    carol
        .signal
        .client()
        .moderate(ModerateAction::Mute, &bob.sid, None)
        .await?;
    assert_eq!(errors_until_pong(&mut carol, 1).await?, ["forbidden"]);

    // A server mute: carol stops hearing bob, and bob cannot unmute himself.
    mo.signal
        .client()
        .moderate(ModerateAction::Mute, &bob.sid, None)
        .await?;
    let muted = bob.signal.expect("participant_muted", SECONDS).await?;
    assert_eq!(muted["by_moderator"], true, "{muted}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mark = heard_of(&carol, &bob);
    bob.signal.client().mute(false).await?;
    assert_eq!(errors_until_pong(&mut bob, 2).await?, ["server_muted"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        heard_of(&carol, &bob),
        mark,
        "a server-muted participant is heard"
    );
    // The operator unmutes him.
    let (status, body) = server
        .admin(
            "POST",
            &format!("/admin/v1/rooms/lobby/participants/{}/mute", bob.sid),
            Some(&admin),
            Some(r#"{"muted": false}"#),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(heard_of(&carol, &bob) > mark + SAMPLE_RATE as usize / 2);

    // Deafen carol: she is sent nothing, bob still hears her.
    mo.signal
        .client()
        .moderate(ModerateAction::Deafen, &carol.sid, None)
        .await?;
    let updated = carol.signal.expect("participant_updated", SECONDS).await?;
    assert_eq!(updated["participant"]["deafened"], true, "{updated}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let carol_packets = packets(&carol);
    let bob_hears = heard_of(&bob, &carol);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        packets(&carol),
        carol_packets,
        "a deafened participant is sent audio"
    );
    assert!(heard_of(&bob, &carol) > bob_hears + SAMPLE_RATE as usize / 2);

    // Move bob to the breakout room through the admin API: he re-offers there and dave hears him.
    let (status, body) = server
        .admin(
            "POST",
            &format!("/admin/v1/rooms/lobby/participants/{}/move", bob.sid),
            Some(&admin),
            Some(r#"{"room": "breakout"}"#),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let moved = bob.signal.expect("moved", SECONDS).await?;
    assert_eq!(moved["room"]["name"], "breakout");
    let left = mo.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(left["reason"], "moved");
    let slots = moved["room"]["slots"].as_u64().expect("slots") as usize;
    let Participant {
        mut signal,
        client: old,
        ..
    } = bob;
    old.stop().await?;
    let client = AudioClient::start(&mut signal, slots, 440.0, 0.3).await?;
    let mut bob = Participant {
        signal,
        client,
        sid: moved["participant"]["sid"]
            .as_str()
            .expect("sid")
            .to_owned(),
        freq: 440.0,
    };
    let mut dave = join(&server, "breakout", "dave", 880.0, 0.3).await?;
    for p in [&mut bob, &mut dave] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        heard_of(&dave, &bob) > SAMPLE_RATE as usize / 2,
        "dave does not hear bob"
    );
    assert!(
        heard_of(&bob, &dave) > SAMPLE_RATE as usize / 2,
        "bob does not hear dave"
    );

    // Kick carol.
    mo.signal
        .client()
        .moderate(ModerateAction::Kick, &carol.sid, None)
        .await?;
    let left = carol.signal.expect("left", SECONDS).await?;
    assert_eq!(left["reason"], "kicked");
    let actions = server
        .metric("chorus_moderation_actions_total{action=\"mute\",by=\"moderator\"}")
        .await?;
    assert_eq!(actions, 1.0);
    for p in [mo, bob, carol, dave] {
        p.client.stop().await?;
    }
    Ok(())
}
