//! Hold music set and cleared on a room that exists (`PUT`/`DELETE /admin/v1/rooms/{room}/hold_music`):
//! one person alone hears nothing, then the music once it is set, and nothing once it is cleared (its
//! participant leaves and does not come back). Real-time: named `real_udp_`.

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use super::{blocks_with, heard, joined_named, listener, start_with_tone};
use super::{HOLD_TONE, SECONDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_playout_hold_music_set_on_an_existing_room_plays_until_cleared(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (_media, server, admin) = start_with_tone("hold-set", "hold.opus", HOLD_TONE, 2.0).await?;
    let room = server
        .create_room(&json!({"name": "desk", "mode": "mix"}))
        .await?;
    assert_eq!(room["hold_music"], Value::Null);
    let path = "/admin/v1/rooms/desk/hold_music";
    let put = |path: &'static str, body: Value| {
        let (server, admin) = (&server, &admin);
        async move {
            let body = body.to_string();
            server.admin("PUT", path, Some(admin), Some(&body)).await
        }
    };
    // Refused: an unknown room, a missing file, a body without the name.
    let (status, reply) = put(
        "/admin/v1/rooms/nowhere/hold_music",
        json!({"hold_music": "hold.opus"}),
    )
    .await?;
    assert!(
        status == 404 && reply.contains("room_not_found"),
        "{status} {reply}"
    );
    let (status, reply) = put(path, json!({"hold_music": "missing.opus"})).await?;
    assert!(
        status == 404 && reply.contains("media_not_found"),
        "{status} {reply}"
    );
    let (status, reply) = put(path, json!({})).await?;
    assert_eq!(status, 400, "{reply}");

    let (mut signal, alice) = listener(&server, "desk", "alice").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unset = heard(&alice);
    ensure!(
        !blocks_with(&unset, HOLD_TONE).contains(&true),
        "hold music before it was set"
    );

    let (status, reply) = put(path, json!({"hold_music": "hold.opus"})).await?;
    assert_eq!(status, 200, "{reply}");
    let set: Value = serde_json::from_str(&reply)?;
    assert_eq!(set, json!({"room": "desk", "hold_music": "hold.opus"}));
    let (_, reply) = server.admin("GET", path, Some(&admin), None).await?;
    assert_eq!(serde_json::from_str::<Value>(&reply)?, set);
    let hold_sid = joined_named(&mut signal, "Hold music").await?;
    let from = heard(&alice).len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let pcm = heard(&alice);
    let playing = blocks_with(pcm.get(from + 24_000..).unwrap_or_default(), HOLD_TONE);
    let share = playing.iter().filter(|&&b| b).count() as f32 / playing.len().max(1) as f32;
    ensure!(
        playing.len() >= 50 && share > 0.9,
        "alice alone heard the hold music in {share:.2} of {} blocks\n{}",
        playing.len(),
        server.log_tail()
    );

    let (status, reply) = server.admin("DELETE", path, Some(&admin), None).await?;
    assert_eq!(status, 204, "{reply}");
    let left = signal.expect("participant_left", SECONDS).await?;
    assert_eq!(left["sid"], hold_sid.as_str());
    let (_, reply) = server.admin("GET", path, Some(&admin), None).await?;
    assert_eq!(
        serde_json::from_str::<Value>(&reply)?["hold_music"],
        Value::Null
    );
    let cleared = heard(&alice).len();
    // Longer than the hold manager's 200 ms round: cleared music does not come back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pcm = heard(&alice);
    let after = blocks_with(pcm.get(cleared + 9_600..).unwrap_or_default(), HOLD_TONE);
    ensure!(
        !after.contains(&true),
        "hold music after it was cleared ({} of {} blocks)",
        after.iter().filter(|&&b| b).count(),
        after.len()
    );
    let (_, participants) = server
        .admin(
            "GET",
            "/admin/v1/rooms/desk/participants",
            Some(&admin),
            None,
        )
        .await?;
    ensure!(!participants.contains("Hold music"), "{participants}");
    alice.stop().await.context("stopping alice")?;
    Ok(())
}
