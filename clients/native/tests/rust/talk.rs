//! Volumes and talk targets through the SDK: in a forwarding room a game hears a participant at the volume
//! it set (the SDK scales the slot's audio: −12 is −6 dB, +12 is +6 dB, −50 silent); the server's refusals
//! of a talk target or a volume arrive as events with their code; malformed ones are refused before
//! anything is sent. A listen-only client's microphone reaches nobody, and its session goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, Config, Error, Event, TalkError, TalkTarget};
use chorus_tests::Server;

use super::capture;
use crate::{loudness, wait_connected, wait_event, SECONDS};

/// The RMS of the pulls in `from..to`.
fn rms_between(levels: &[(Instant, f32)], from: Instant, to: Instant) -> f32 {
    let window: Vec<f32> = levels
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|(_, rms)| rms * rms)
        .collect();
    (window.iter().sum::<f32>() / window.len().max(1) as f32).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_sets_the_level_a_game_hears_and_refusals_carry_their_code() -> anyhow::Result<()>
{
    let server = Server::start(&[]).await?;
    let room = "volume-native";
    let url = server.ws_url();
    let mut ada = Client::new(Config {
        input_rate_hz: 16_000,
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    // bob joins listen-only: what his game pushes is heard by nobody.
    let mut bob = Client::new(Config {
        listen_only: true,
        ..Config::default()
    })?;
    ada.connect(&url, &server.token(room, "ada", &[])?, None)?;
    bob.connect(&url, &server.token(room, "bob", &[])?, None)?;
    // carol, listening only, is on a team and has the shout role: a game sees both in her participant
    // object (and neither in bob's).
    let mut carol = Client::new(Config {
        listen_only: true,
        ..Config::default()
    })?;
    let carol_token = server.token(room, "carol", &["--team", "blue", "--shout"])?;
    carol.connect(&url, &carol_token, None)?;
    let (mut ada, mut bob, carol, ada_sid) = tokio::task::spawn_blocking(move || {
        let mut ada_seen = Vec::new();
        let ada_sid = wait_connected(&ada, &mut ada_seen)?;
        let bob_sid = wait_connected(&bob, &mut Vec::new())?;
        let carol_sid = wait_connected(&carol, &mut Vec::new())?;
        let mut roster = std::collections::HashMap::new();
        let mut joined = |e: &Event| {
            if let Event::ParticipantJoined(p) = e {
                roster.insert(p.sid.clone(), (p.team.clone(), p.shout));
            }
            (roster.contains_key(&bob_sid) && roster.contains_key(&carol_sid)).then_some(())
        };
        if !ada_seen.iter().any(|e| joined(e).is_some()) {
            wait_event(&ada, &mut ada_seen, SECONDS, &mut joined)?;
        }
        let blue = vocab::TeamId::new("blue").expect("a valid team");
        assert_eq!(roster[&carol_sid], (Some(blue), true), "{ada_seen:#?}");
        assert_eq!(roster[&bob_sid], (None, false), "{ada_seen:#?}");
        anyhow::Ok((ada, bob, carol, ada_sid))
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let capture_thread = {
        let (mic, stop) = (ada.take_microphone().expect("a microphone"), stop.clone());
        std::thread::spawn(move || capture(mic, 16_000, 440.0, stop))
    };
    let bob_capture = {
        let (mic, stop) = (bob.take_microphone().expect("a microphone"), stop.clone());
        std::thread::spawn(move || capture(mic, 48_000, 660.0, stop))
    };
    let ada_ear = {
        let (speaker, stop) = (ada.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || loudness(speaker, stop))
    };
    let ear = {
        let (speaker, stop) = (bob.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || loudness(speaker, stop))
    };
    let settle = Duration::from_millis(500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut marks = vec![Instant::now()];
    for volume in [-12, 12, -50] {
        bob.set_volume(&ada_sid, volume)?;
        marks.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    marks.push(Instant::now());
    stop.store(true, Ordering::Relaxed);
    capture_thread.join().expect("capture does not panic");
    bob_capture.join().expect("capture does not panic");
    let (ada_levels, _) = ada_ear.join().expect("playback does not panic");
    let (heard_bob, _) = crate::loud_span(&ada_levels);
    assert!(
        heard_bob < 0.1,
        "ada heard listen-only bob for {heard_bob:.2} s"
    );
    assert_eq!(bob.stats().frames_sent, 0, "listen-only bob sent");
    let (levels, _) = ear.join().expect("playback does not panic");
    let unchanged = rms_between(&levels, marks[0] - settle, marks[0]);
    let db = |i: usize| {
        let rms = rms_between(&levels, marks[i] + settle, marks[i + 1]);
        20.0 * (rms / unchanged).log10()
    };
    let (quieter, louder, silent) = (db(1), db(2), db(3));
    println!("bob hears ada at {unchanged:.3} RMS; volume -12: {quieter:+.1} dB, +12: {louder:+.1} dB, -50: {silent:+.1} dB");
    assert!(unchanged > 0.1, "bob hears ada at {unchanged} RMS");
    assert!((quieter + 6.0).abs() <= 1.5, "volume -12: {quieter:+.1} dB");
    assert!((louder - 6.0).abs() <= 1.5, "volume +12: {louder:+.1} dB");
    assert!(silent < -40.0, "volume -50: {silent:+.1} dB");

    // Refused before anything is sent.
    assert!(matches!(
        bob.set_volume(&ada_sid, 51),
        Err(Error::Talk(TalkError::BadVolume))
    ));
    assert!(matches!(
        bob.talk_to(TalkTarget::Whisper(Vec::new())),
        Err(Error::Talk(TalkError::WhisperTargets))
    ));
    // Refused by the room: events with the protocol's codes, and the session goes on.
    let nobody = "PA_000000000000".to_owned();
    bob.talk_to(TalkTarget::Whisper(vec![nobody.clone()]))?;
    bob.set_volume(&nobody, 10)?;
    bob.talk_to(TalkTarget::Team)?;
    let codes = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut codes = Vec::new();
        while codes.len() < 3 {
            codes.push(wait_event(&bob, &mut seen, SECONDS, |e| match e {
                Event::Error {
                    code: Some(code), ..
                } => Some(code.clone()),
                _ => None,
            })?);
        }
        anyhow::Ok(codes)
    })
    .await??;
    assert_eq!(
        codes,
        ["bad_target", "participant_not_found", "bad_target"],
        "a whisper to nobody, a volume for nobody, team talk without a team"
    );
    drop(carol);
    Ok(())
}
