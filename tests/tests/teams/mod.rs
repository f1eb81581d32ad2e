//! Teams and whisper through the real `chorus` binary with Rust WebRTC clients (str0m over real UDP): a
//! team talk reaches the team only, a whisper only its target, and a whisper to someone of another room
//! is a typed error that changes nothing; speaking events reach only those who hear the talker (by team
//! and by distance).
//! Real-time: named `real_udp_` so they run alone.

use std::sync::Arc;
use std::time::Duration;

use chorus_tests::{Mic, SAMPLE_RATE};
use media_core::audio::ToneGenerator;
use serde_json::json;

use super::ptt::{errors_until_pong, heard_of, join_with, join_with_mic};
use super::{join, Participant, SECONDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_team_talk_reaches_the_team_and_a_whisper_its_target_only() -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let server = chorus_tests::Server::start(&[]).await?;
    // ada and bob are team red (their tokens say so), carl team blue; ada talks all the time.
    let mut ada = join_with(&server, "arena", "ada", 440.0, &["--team", "red"]).await?;
    let mut bob = join_with(&server, "arena", "bob", 0.0, &["--team", "red"]).await?;
    let mut carl = join_with(&server, "arena", "carl", 0.0, &["--team", "blue"]).await?;
    let mut eve = join(&server, "elsewhere", "eve", 0.0, 0.0).await?;
    for p in [&mut ada, &mut bob, &mut carl, &mut eve] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let half = SAMPLE_RATE as usize / 2;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(heard_of(&bob, &ada) > half / 2 && heard_of(&carl, &ada) > half / 2);

    // Team talk: bob keeps hearing ada, carl stops.
    ada.signal
        .send(json!({"type": "talk", "target": "team"}))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bob_mark, carl_mark) = (heard_of(&bob, &ada), heard_of(&carl, &ada));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        heard_of(&bob, &ada) > bob_mark + half,
        "bob, of ada's team, stopped hearing her"
    );
    assert_eq!(
        heard_of(&carl, &ada),
        carl_mark,
        "carl, of another team, hears ada's team talk"
    );

    // A whisper to someone of another room: a typed error, the team talk goes on.
    ada.signal
        .send(json!({"type": "talk", "target": "whisper", "to": [eve.sid]}))
        .await?;
    assert_eq!(errors_until_pong(&mut ada, 1).await?, ["bad_target"]);

    // A whisper to carl: carl hears ada, bob no longer does.
    ada.signal
        .send(json!({"type": "talk", "target": "whisper", "to": [carl.sid]}))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bob_mark, carl_mark) = (heard_of(&bob, &ada), heard_of(&carl, &ada));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        heard_of(&carl, &ada) > carl_mark + half,
        "carl does not hear the whisper"
    );
    assert_eq!(
        heard_of(&bob, &ada),
        bob_mark,
        "bob hears a whisper to carl"
    );
    assert_eq!(heard_of(&eve, &ada), 0, "another room hears ada");
    for p in [ada, bob, carl, eve] {
        p.client.stop().await?;
    }
    Ok(())
}

/// `seconds` of a `freq_hz` tone at 48 kHz.
fn tone(freq_hz: f64, seconds: usize) -> Arc<[f32]> {
    let mut pcm = vec![0.0f32; SAMPLE_RATE as usize * seconds];
    ToneGenerator::new(freq_hz, 0.3, SAMPLE_RATE).fill(&mut pcm);
    pcm.into()
}

/// The speakers named in every `speakers` message `p` receives for `duration`.
async fn speakers_seen(
    p: &mut Participant,
    duration: Duration,
) -> anyhow::Result<Vec<Vec<String>>> {
    let deadline = tokio::time::Instant::now() + duration;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(seen);
        }
        let v = match p.signal.recv(left).await {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(seen),
            // Nothing more before the deadline.
            Err(_) if tokio::time::Instant::now() >= deadline => return Ok(seen),
            Err(e) => return Err(e),
        };
        if v["type"] == "speakers" {
            let sids = v["speakers"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|s| s["sid"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            seen.push(sids);
        }
    }
}

/// Whether any of the `speakers` messages `seen` names `sid`.
fn names(seen: &[Vec<String>], sid: &str) -> bool {
    seen.iter().any(|s| s.iter().any(|x| x == sid))
}

/// Speaking events go only to those who hear the talker: ada (team red) talks to her team, so bob (red)
/// hears her and is told she speaks, while carl (blue) neither hears her nor is told — yet carl is told
/// when dave (blue, talking to the room), whom he does hear, speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_speaking_events_go_only_to_those_who_hear_the_talker() -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let server = chorus_tests::Server::start(&[]).await?;
    let mut ada = join_with_mic(&server, "arena", "ada", Mic::Speech, &["--team", "red"]).await?;
    let mut bob = join_with_mic(&server, "arena", "bob", Mic::Speech, &["--team", "red"]).await?;
    let mut carl =
        join_with_mic(&server, "arena", "carl", Mic::Speech, &["--team", "blue"]).await?;
    let mut dave =
        join_with_mic(&server, "arena", "dave", Mic::Speech, &["--team", "blue"]).await?;
    for p in [&mut ada, &mut bob, &mut carl, &mut dave] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    // Team talk before ada makes a sound (the fence's pong: the server has taken it).
    ada.signal
        .send(json!({"type": "talk", "target": "team"}))
        .await?;
    assert!(errors_until_pong(&mut ada, 1).await?.is_empty());
    ada.client.speak(tone(440.0, 3), 0)?;
    dave.client.speak(tone(660.0, 3), 0)?;
    let (bob_saw, carl_saw) = tokio::try_join!(
        speakers_seen(&mut bob, Duration::from_millis(2_500)),
        speakers_seen(&mut carl, Duration::from_millis(2_500)),
    )?;
    assert!(
        names(&bob_saw, &ada.sid),
        "bob, ada's teammate: {bob_saw:?}"
    );
    assert!(names(&carl_saw, &dave.sid), "carl hears dave: {carl_saw:?}");
    assert!(
        !names(&carl_saw, &ada.sid),
        "carl, of another team, is told ada speaks: {carl_saw:?}"
    );
    // And what they are told is what they hear.
    assert!(
        heard_of(&bob, &ada) > SAMPLE_RATE as usize,
        "bob does not hear ada"
    );
    assert!(
        heard_of(&carl, &dave) > SAMPLE_RATE as usize,
        "carl does not hear dave"
    );
    assert_eq!(heard_of(&carl, &ada), 0, "carl hears ada's team talk");
    for p in [ada, bob, carl, dave] {
        p.client.stop().await?;
    }
    Ok(())
}

/// By distance too: in a spatial room ada and bob stand 5 apart, carl and dave 3 apart and 100 away from
/// them; ada and dave talk. Each listener is told only of the talker in its range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_speaking_events_stay_within_audible_range() -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let server = chorus_tests::Server::start(&[]).await?;
    let body = json!({"name": "field", "mode": "forward", "slots": 2,
        "spatial": {"audible_distance": 20, "conversational_distance": 1, "fade_model": "linear"}});
    server.create_room(&body).await?;
    let mut people = Vec::new();
    for (who, x) in [("ada", 0.0), ("bob", 5.0), ("carl", 100.0), ("dave", 103.0)] {
        let mut p = join_with_mic(&server, "field", who, Mic::Speech, &[]).await?;
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
        p.signal
            .send(json!({"type": "position", "x": x, "y": 0.0, "z": 0.0, "yaw_deg": 0.0}))
            .await?;
        people.push(p);
    }
    // The audible sets follow within 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let [ada, mut bob, mut carl, dave] =
        <[Participant; 4]>::try_from(people).map_err(|_| anyhow::anyhow!("four participants"))?;
    ada.client.speak(tone(440.0, 3), 0)?;
    dave.client.speak(tone(660.0, 3), 0)?;
    let (bob_saw, carl_saw) = tokio::try_join!(
        speakers_seen(&mut bob, Duration::from_millis(2_500)),
        speakers_seen(&mut carl, Duration::from_millis(2_500)),
    )?;
    assert!(names(&bob_saw, &ada.sid), "bob, 5 from ada: {bob_saw:?}");
    assert!(
        !names(&bob_saw, &dave.sid),
        "bob, 98 from dave: {bob_saw:?}"
    );
    assert!(
        names(&carl_saw, &dave.sid),
        "carl, 3 from dave: {carl_saw:?}"
    );
    assert!(
        !names(&carl_saw, &ada.sid),
        "carl, 100 from ada: {carl_saw:?}"
    );
    assert!(
        heard_of(&bob, &ada) > SAMPLE_RATE as usize,
        "bob does not hear ada"
    );
    assert!(
        heard_of(&carl, &dave) > SAMPLE_RATE as usize,
        "carl does not hear dave"
    );
    assert_eq!(heard_of(&carl, &ada), 0, "carl hears ada from 100 away");
    for p in [ada, bob, carl, dave] {
        p.client.stop().await?;
    }
    Ok(())
}
