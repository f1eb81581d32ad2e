//! Positional voice through the real `chorus` binary: a spatial forwarding room created through the admin
//! API, clients that send `position` over the WebSocket and tones over real UDP; who hears whom follows
//! the distances, `positions` tells each listener where its speakers are, garbage is refused.

use std::time::Duration;

use serde_json::json;

use crate::{join, Participant, SECONDS};
use chorus_tests::Server;

async fn place(p: &mut Participant, x: f64, y: f64) -> anyhow::Result<()> {
    p.signal
        .send(json!({"type": "position", "x": x, "y": y, "z": 0.0, "yaw_deg": 0.0}))
        .await
}

/// The latest `positions` a participant received (draining its signaling queue briefly).
async fn latest_positions(p: &mut Participant) -> Option<serde_json::Value> {
    let mut last = None;
    while let Ok(Some(v)) = p.signal.recv(Duration::from_millis(200)).await {
        if v["type"] == "positions" {
            last = Some(v);
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spatial_room_forwards_only_who_is_in_range() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = server
        .create_room(&json!({"name": "arena", "mode": "forward", "slots": 2,
            "spatial": {"audible_distance": 20, "conversational_distance": 1, "fade_model": "linear"}}))
        .await?;
    assert!(room.get("spatial").is_some(), "{room}");

    // Ada and Bob stand 5 apart; Carl is 100 away.
    let mut ada = join(&server, "arena", "ada", 440.0, 0.3).await?;
    let mut bob = join(&server, "arena", "bob", 660.0, 0.3).await?;
    let mut carl = join(&server, "arena", "carl", 880.0, 0.3).await?;
    for p in [&mut ada, &mut bob, &mut carl] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    place(&mut ada, 0.0, 0.0).await?;
    place(&mut bob, 5.0, 0.0).await?;
    place(&mut carl, 100.0, 0.0).await?;
    // Garbage is refused with a typed error and changes nothing; too soon a second time is dropped.
    carl.signal
        .send(json!({"type": "position", "x": 5.0e6, "y": 0, "z": 0}))
        .await?;
    let error = carl.signal.expect("error", SECONDS).await?;
    assert_eq!(error["code"], "bad_position", "{error}");
    place(&mut carl, 0.0, 1.0).await?; // within 100 ms of the last accepted: dropped
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ssrc = |p: &Participant| p.client.mic_ssrc.expect("a publishing client");
    let (ada_ssrc, bob_ssrc, carl_ssrc) = (ssrc(&ada), ssrc(&bob), ssrc(&carl));
    for (who, p, hears, not) in [
        ("ada", &ada, bob_ssrc, carl_ssrc),
        ("bob", &bob, ada_ssrc, carl_ssrc),
    ] {
        let heard = p.client.heard.lock().expect("no panic holding the lock");
        let pcm = heard.pcm_by_csrc.get(&hears).map_or(0, Vec::len);
        assert!(
            pcm > 48_000,
            "{who} heard only {pcm} samples of the one in range"
        );
        assert!(
            !heard.pcm_by_csrc.contains_key(&not),
            "{who} hears carl, 100 away"
        );
    }
    {
        let heard = carl.client.heard.lock().expect("no panic holding the lock");
        assert!(
            heard.pcm_by_csrc.is_empty(),
            "carl is out of everyone's range but heard {:?}",
            heard.pcm_by_csrc.keys()
        );
    }
    let positions = latest_positions(&mut ada).await.expect("ada got positions");
    assert_eq!(
        positions["positions"],
        json!([{"sid": bob.sid, "x": 5.0, "y": 0.0, "z": 0.0, "yaw_deg": 0.0}]),
        "{positions}"
    );
    let positions = latest_positions(&mut carl).await;
    assert!(
        positions
            .as_ref()
            .is_none_or(|p| p["positions"] == json!([])),
        "{positions:?}"
    );
    let accepted = server
        .metric(r#"chorus_positions_total{result="accepted"}"#)
        .await?;
    let limited = server
        .metric(r#"chorus_positions_total{result="rate_limited"}"#)
        .await?;
    let refused = server
        .metric(r#"chorus_positions_total{result="refused"}"#)
        .await?;
    assert_eq!((accepted, limited, refused), (3.0, 1.0, 1.0));
    for p in [ada, bob, carl] {
        p.client.stop().await?;
    }
    Ok(())
}
