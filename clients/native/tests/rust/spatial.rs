//! Positional voice through the SDK and the real binary: three game clients in a spatial forwarding room
//! set their positions with `set_position`; each hears exactly the one in range, receives `positions`
//! naming it and where it is, and the one far away hears nobody and is heard by nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_native::{Client, Config, Event, Position};
use chorus_tests::Server;
use serde_json::json;

use super::{capture, playback};
use crate::{tones_in, wait_connected, wait_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_clients_hear_only_who_is_in_range_and_get_their_positions() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "arena-native";
    let body = json!({"name": room, "mode": "forward", "slots": 2,
        "spatial": {"audible_distance": 20, "conversational_distance": 1, "fade_model": "linear"}});
    server.create_room(&body).await?;

    // Ada (440 Hz) and Bob (660 Hz) stand 5 apart, Carl (880 Hz) 100 away. Ada sets hers before she
    // connects (it goes out with the join); the others once they are in.
    let url = server.ws_url();
    let mut clients = Vec::new();
    for (who, freq, x) in [
        ("ada", 440.0, 0.0),
        ("bob", 660.0, 5.0),
        ("carl", 880.0, 100.0),
    ] {
        let mut client = Client::new(Config::default())?;
        if who == "ada" {
            client.set_position(x, 0.0, 0.0, 0.0)?;
        }
        client.connect(&url, &server.token(room, who, &[])?, None)?;
        clients.push((who, freq, x, client));
    }
    let mut clients = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (who, freq, x, client) in clients {
            let mut seen = Vec::new();
            let sid = wait_connected(&client, &mut seen)?;
            client.set_position(x, 0.0, 0.0, 0.0)?;
            out.push((who, freq, sid, client, seen));
        }
        anyhow::Ok(out)
    })
    .await??;
    let bob_sid = clients[1].2.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (mut threads, mut captures) = (Vec::new(), Vec::new());
    for (_, freq, _, client, _) in &mut clients {
        let mic = client.take_microphone().expect("a new client's microphone");
        let speaker = client.take_speaker().expect("a new client's speaker");
        let (freq, stop_mic, stop_out) = (*freq, stop.clone(), stop.clone());
        captures.push(std::thread::spawn(move || {
            capture(mic, 48_000, freq, stop_mic)
        }));
        threads.push(std::thread::spawn(move || {
            playback(speaker, 48_000, Vec::new(), stop_out)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let pulled: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("the playback thread does not panic"))
        .collect();

    let (ada_hears, analysis) = tones_in(&pulled[0].mixed, 48_000);
    assert_eq!(
        ada_hears,
        vec![660.0],
        "ada (bob 5 away, carl 100): {analysis:?}"
    );
    let (bob_hears, analysis) = tones_in(&pulled[1].mixed, 48_000);
    assert_eq!(
        bob_hears,
        vec![440.0],
        "bob (ada 5 away, carl 95): {analysis:?}"
    );
    let (carl_hears, analysis) = tones_in(&pulled[2].mixed, 48_000);
    assert!(
        carl_hears.is_empty(),
        "carl, out of range, hears {analysis:?}"
    );

    // Ada's latest `positions` names Bob, where he stands; Carl's latest is nobody.
    let (_, _, _, ada, ada_seen) = clients.remove(0);
    let latest = tokio::task::spawn_blocking(move || {
        let mut seen = ada_seen;
        // Positions already seen, or one still queued.
        let _ = wait_event(&ada, &mut seen, Duration::from_millis(300), |_| None::<()>);
        seen.iter().rev().find_map(|e| match e {
            Event::Positions(p) => Some(p.clone()),
            _ => None,
        })
    })
    .await?
    .expect("ada received positions");
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(latest[0].sid, bob_sid);
    assert_eq!(
        latest[0].position,
        Position::new(5.0, 0.0, 0.0, 0.0).expect("valid")
    );
    let (_, _, _, carl, carl_seen) = clients.remove(1);
    let carl_latest = tokio::task::spawn_blocking(move || {
        let mut seen = carl_seen;
        let _ = wait_event(&carl, &mut seen, Duration::from_millis(300), |_| None::<()>);
        seen.iter().rev().find_map(|e| match e {
            Event::Positions(p) => Some(p.clone()),
            _ => None,
        })
    })
    .await?;
    assert!(
        carl_latest.as_ref().is_none_or(Vec::is_empty),
        "{carl_latest:?}"
    );
    let accepted = server
        .metric(r#"chorus_positions_total{result="accepted"}"#)
        .await?;
    let refused = server
        .metric(r#"chorus_positions_total{result="refused"}"#)
        .await?;
    assert_eq!(refused, 0.0);
    assert!(accepted >= 3.0, "{accepted}");
    for t in captures {
        t.join().expect("the capture thread does not panic");
    }
    Ok(())
}
