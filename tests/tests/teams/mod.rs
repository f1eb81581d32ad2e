//! Teams and whisper through the real `chorus` binary with Rust WebRTC clients (str0m over real UDP): a
//! team talk reaches the team only, a whisper only its target, and a whisper to someone of another room
//! is a typed error that changes nothing. Real-time: named `real_udp_` so it runs alone.

use std::time::Duration;

use chorus_tests::SAMPLE_RATE;
use serde_json::json;

use super::ptt::{errors_until_pong, heard_of, join_with};
use super::{join, SECONDS};

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
