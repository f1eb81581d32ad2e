//! Deafen through the admin API, as the participants hear it (Rust WebRTC clients over real UDP): the
//! deafened participant stops receiving audio within half a second while the others still hear it, and
//! undeafen brings the room back. Real-time: named `real_udp_` so it runs alone.

use std::time::Duration;

use chorus_tests::{Server, SAMPLE_RATE};

use super::json;
use crate::ptt::heard_of;
use crate::{join, SECONDS};

/// How long the server may take to stop (or resume) a participant's audio after the admin call: what
/// was in flight, and the slots' next update.
const SETTLE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_admin_deafen_silences_the_participant_and_undeafen_restores_it(
) -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let admin = server.admin_token()?;
    let mut bob = join(&server, "lobby", "bob", 440.0, 0.3).await?;
    let mut carol = join(&server, "lobby", "carol", 660.0, 0.3).await?;
    for p in [&mut bob, &mut carol] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let half = SAMPLE_RATE as usize / 2;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(heard_of(&carol, &bob) > half, "carol does not hear bob");
    let path = format!("/admin/v1/rooms/lobby/participants/{}/deafen", carol.sid);
    let deafen = |deafened: bool| {
        let (server, admin, path) = (&server, &admin, &path);
        async move {
            let body = format!(r#"{{"deafened": {deafened}}}"#);
            server.admin("POST", path, Some(admin), Some(&body)).await
        }
    };

    // Deafened: within half a second carol receives nothing more of bob; bob still hears her.
    let (status, body) = deafen(true).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["deafened"], true, "{body}");
    tokio::time::sleep(SETTLE).await;
    let (carol_mark, bob_mark) = (heard_of(&carol, &bob), heard_of(&bob, &carol));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        heard_of(&carol, &bob),
        carol_mark,
        "a deafened participant still hears the room"
    );
    assert!(
        heard_of(&bob, &carol) > bob_mark + half,
        "bob stopped hearing the deafened carol"
    );

    // Undeafened: carol hears bob again.
    let (status, body) = deafen(false).await?;
    assert_eq!(status, 200, "{body}");
    // `deafened` is left out when false.
    assert_ne!(json(&body)["deafened"], true, "{body}");
    tokio::time::sleep(SETTLE).await;
    let carol_mark = heard_of(&carol, &bob);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        heard_of(&carol, &bob) > carol_mark + half,
        "carol does not hear bob again after undeafen"
    );
    for p in [bob, carol] {
        p.client.stop().await?;
    }
    Ok(())
}
