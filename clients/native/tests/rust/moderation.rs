//! Moderation from the SDK: a game client with the moderator grant server-mutes another, who stops being
//! heard (and is told); a client without the grant is refused with `forbidden`, and its session goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, Config, Event, ModerateAction};
use chorus_tests::Server;

use super::capture;
use crate::{loudness, tones_in, wait_connected, wait_event, SECONDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_mutes_a_talker_who_stops_being_heard_and_others_are_refused(
) -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "moderation-native";
    let url = server.ws_url();
    let mut talker = Client::new(Config {
        input_rate_hz: 16_000,
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    let mut moderator = Client::new(Config::default())?;
    let mut player = Client::new(Config {
        listen_only: true,
        ..Config::default()
    })?;
    talker.connect(&url, &server.token(room, "talker", &[])?, None)?;
    moderator.connect(&url, &server.token(room, "mod", &["--moderator"])?, None)?;
    player.connect(&url, &server.token(room, "player", &[])?, None)?;
    let (talker, moderator, player, talker_sid) = tokio::task::spawn_blocking(move || {
        let sid = wait_connected(&talker, &mut Vec::new())?;
        wait_connected(&moderator, &mut Vec::new())?;
        wait_connected(&player, &mut Vec::new())?;
        anyhow::Ok((talker, moderator, player, sid))
    })
    .await??;
    let (mut talker, mut moderator) = (talker, moderator);
    let stop = Arc::new(AtomicBool::new(false));
    let capture_thread = {
        let (mic, stop) = (
            talker.take_microphone().expect("a microphone"),
            stop.clone(),
        );
        std::thread::spawn(move || capture(mic, 16_000, 440.0, stop))
    };
    let ear = {
        let (speaker, stop) = (moderator.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || loudness(speaker, stop))
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Without the grant: refused with its code, nothing changes.
    player.moderate(&talker_sid, ModerateAction::Mute, None)?;
    let (player, code) = tokio::task::spawn_blocking(move || {
        let code = wait_event(&player, &mut Vec::new(), SECONDS, |e| match e {
            Event::Error { code, .. } => Some(code.clone()),
            _ => None,
        })?;
        anyhow::Ok((player, code))
    })
    .await??;
    assert_eq!(code.as_deref(), Some("forbidden"));
    tokio::time::sleep(Duration::from_millis(700)).await;

    // With it: the talker is server-muted (and told), and the moderator stops hearing it.
    let muted_at = Instant::now();
    moderator.moderate(&talker_sid, ModerateAction::Mute, None)?;
    let sid = talker_sid.clone();
    let talker = tokio::task::spawn_blocking(move || {
        wait_event(&talker, &mut Vec::new(), SECONDS, |e| {
            matches!(e, Event::ParticipantMuted { sid: s, muted: true } if *s == sid).then_some(())
        })?;
        anyhow::Ok(talker)
    })
    .await??;
    assert!(
        talker.is_muted(),
        "a moderator's mute holds for the talker's SDK too"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    capture_thread.join().expect("capture does not panic");
    let (levels, pcm) = ear.join().expect("playback does not panic");

    let loud = |from: Instant, to: Instant| {
        let window: Vec<f32> = levels
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, rms)| *rms)
            .collect();
        window.iter().filter(|rms| **rms > 0.05).count() as f32 / window.len().max(1) as f32
    };
    let before = loud(muted_at - Duration::from_millis(1000), muted_at);
    // Past the mute's way through the server and the jitter buffer.
    let after = loud(muted_at + Duration::from_millis(500), Instant::now());
    assert!(
        before > 0.8,
        "the moderator heard the talker only {before:.2} of the time before the mute"
    );
    assert_eq!(
        after, 0.0,
        "the moderator still heard the talker after the mute"
    );
    // What was heard before was the talker's tone.
    let (present, analysis) = tones_in(&pcm[..pcm.len() / 2], chorus_tests::SAMPLE_RATE);
    assert_eq!(present, vec![440.0], "{analysis:?}");
    drop((talker, moderator, player));
    Ok(())
}
