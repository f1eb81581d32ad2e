//! Push-to-talk through the SDK: a game client with push-to-talk on is heard only while its key is down
//! (the server gates it, and the SDK sends nothing while the key is up); a moderator's move renegotiates
//! media in the new room on the same socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_native::{Client, Config, Event};
use chorus_tests::{Server, SAMPLE_RATE};

use super::capture;
use crate::{audio_client, tones_in, wait_connected, wait_event, SECONDS};

/// Decoded samples `heard` holds of everyone.
fn heard_total(client: &chorus_tests::AudioClient) -> usize {
    let heard = client.heard.lock().expect("heard lock");
    heard.pcm_by_csrc.values().map(Vec::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_talk_game_client_is_heard_only_while_its_key_is_down_and_follows_a_move(
) -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "ptt-native";
    let url = server.ws_url();
    let (_carol_signal, mut carol, _) = audio_client(&server, room, "carol", 660.0).await?;
    carol.wait_connected(SECONDS).await?;

    let mut ada = Client::new(Config {
        input_rate_hz: 16_000,
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    ada.set_ptt(true)?;
    ada.connect(&url, &server.token(room, "ada", &[])?, Some(room))?;
    let (ada, mut seen, ada_sid) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let sid = wait_connected(&ada, &mut seen)?;
        // The server confirms push-to-talk for ada (before or after the media connected).
        let confirms =
            |e: &Event| matches!(e, Event::ParticipantUpdated { sid: s, ptt: true, .. } if *s == sid);
        if !seen.iter().any(confirms) {
            wait_event(&ada, &mut seen, SECONDS, |e| confirms(e).then_some(()))?;
        }
        anyhow::Ok((ada, seen, sid))
    })
    .await??;
    let mut ada = ada;
    let stop = Arc::new(AtomicBool::new(false));
    let mic = ada
        .take_microphone()
        .expect("a new client has its microphone");
    let capture_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || capture(mic, 16_000, 440.0, stop))
    };

    // Key up: the game captures, nothing is sent, carol hears nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(heard_total(&carol), 0, "key up, yet carol hears ada");
    assert_eq!(ada.stats().frames_sent, 0, "key up, yet the SDK sends");

    // Key down: carol hears ada's tone.
    ada.set_ptt_key(true)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = heard_total(&carol);
    assert!(
        held > SAMPLE_RATE as usize,
        "key down 1.5 s: carol heard {held} samples"
    );
    {
        let heard = carol.heard.lock().expect("heard lock");
        let pcm = heard.pcm_by_csrc.values().next().expect("one talker");
        assert_eq!(tones_in(pcm, SAMPLE_RATE).0, vec![440.0]);
    }

    // Key up: silence again.
    ada.set_ptt_key(false)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = heard_total(&carol);
    let sent = ada.stats().frames_sent;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(heard_total(&carol), after, "key up, yet forwarded");
    assert_eq!(ada.stats().frames_sent, sent, "key up, yet the SDK sends");

    // An operator moves ada: the SDK renegotiates in the new room, where dave hears her (key down).
    let admin = server.admin_token()?;
    let (status, body) = server
        .admin(
            "POST",
            &format!("/admin/v1/rooms/{room}/participants/{ada_sid}/move"),
            Some(&admin),
            Some(r#"{"room": "ptt-breakout"}"#),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let (_dave_signal, mut dave, _) = audio_client(&server, "ptt-breakout", "dave", 880.0).await?;
    let ada = tokio::task::spawn_blocking(move || {
        wait_event(&ada, &mut seen, SECONDS, |e| match e {
            Event::Moved { room, .. } => Some(room.clone()),
            _ => None,
        })
        .map(|room| assert_eq!(room, "ptt-breakout"))?;
        wait_event(&ada, &mut seen, SECONDS, |e| {
            (*e == Event::ConnectionState(chorus_native::ConnectionState::Connected)).then_some(())
        })?;
        anyhow::Ok(ada)
    })
    .await??;
    dave.wait_connected(SECONDS).await?;
    // The moved participant is a new one: push-to-talk is off there unless the game turns it on again.
    assert!(!ada.is_ptt());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        heard_total(&dave) > SAMPLE_RATE as usize / 2,
        "dave does not hear ada after the move"
    );
    stop.store(true, Ordering::Relaxed);
    capture_thread
        .join()
        .expect("the capture thread does not panic");
    drop(ada);
    carol.stop().await?;
    dave.stop().await?;
    Ok(())
}
