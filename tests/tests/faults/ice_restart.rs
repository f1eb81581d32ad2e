//! A client's media path dies and it restarts ICE through signaling (issue 12 item 5, docs/protocol.md
//! "ICE restart"): the same participant (sid), peer, slots and DTLS association; media flows again under
//! the new ICE credentials once its path is back.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::{assert_call_survived, assert_tone, hears_again, join, Party, TONES};
use crate::proxy::Impairment;
use chorus_tests::Server;

/// How long ada's path is dead: the client restarts ICE in the middle of it.
const BLACKOUT: Duration = Duration::from_secs(8);
/// When, after the path died, the client restarts ICE (it notices its network changed).
const RESTART_AFTER: Duration = Duration::from_secs(3);
/// From the path's return to audio in both directions: the restarted checks retransmit at most every
/// 3 s (str0m's maximum STUN RTO) while the path is dead, so the first check after it returns comes
/// within 3 s; the bound leaves room for a loaded machine.
const BACK_WITHIN: Duration = Duration::from_millis(4500);

/// The participants of `room` as (identity, sid), from the admin API.
async fn sids(server: &Server, room: &str) -> anyhow::Result<Vec<(String, String)>> {
    let admin = server.admin_token()?;
    let path = format!("/admin/v1/rooms/{room}/participants");
    let (status, body) = server.admin("GET", &path, Some(&admin), None).await?;
    anyhow::ensure!(status == 200, "listing {room}: {status} {body}");
    let listed: Value = serde_json::from_str(&body)?;
    let mut out: Vec<(String, String)> = listed["participants"]
        .as_array()
        .context("participants is an array")?
        .iter()
        .filter_map(|p| {
            Some((
                p["identity"].as_str()?.to_owned(),
                p["sid"].as_str()?.to_owned(),
            ))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The USERNAME (`server_ufrag:client_ufrag`) of a STUN binding request.
fn stun_username(request: &[u8]) -> Option<String> {
    let mut at = 20;
    while let Some(header) = request.get(at..at + 4) {
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if kind == 0x0006 {
            return String::from_utf8(request.get(at + 4..at + 4 + len)?.to_vec()).ok();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

fn heard(a: &Party, b: &Party) -> (u64, u64) {
    (a.packets_from(b.ssrc), b.packets_from(a.ssrc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_a_client_whose_path_died_restarts_ice_and_is_heard_again_as_itself(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let room = "ice-restart";
    let mut a = join(
        &server,
        room,
        "ada",
        TONES[0],
        Some((Impairment::default(), 63)),
    )
    .await?;
    let mut b = join(&server, room, "bob", TONES[1], None).await?;
    for (listener, talker) in [(&a, &b), (&b, &a)] {
        hears_again(listener, talker.ssrc, 0, Duration::from_secs(5))
            .await
            .context("the call connects")?;
    }
    let before = sids(&server, room).await?;
    let restarts = || server.metric("chorus_ice_restarts_total");
    let restarts_before = restarts().await?;
    let nat = a.proxy.as_ref().context("ada talks through the proxy")?;
    let old_username = nat
        .binding_request()
        .as_deref()
        .and_then(stun_username)
        .context("ada checked consent through the proxy")?;

    // 1. Ada's path dies: nothing in either direction.
    nat.blackout(BLACKOUT);
    let died = std::time::Instant::now();
    tokio::time::sleep(RESTART_AFTER).await;
    let (a_dead, b_dead) = heard(&a, &b);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        heard(&a, &b),
        (a_dead, b_dead),
        "nothing crosses a dead path"
    );

    // 2. Ada restarts ICE through signaling (the WebSocket still works): a new offer with new ICE
    //    credentials, answered on her existing peer.
    let answer = a.client.restart_ice(&mut a.signal).await?;
    assert!(answer.contains("a=ice-ufrag:"), "{answer}");
    let restarted = died.elapsed();

    // 3. The path returns; audio comes back both ways, over the new ICE session.
    tokio::time::sleep(BLACKOUT.saturating_sub(died.elapsed())).await;
    let (a_then, b_then) = heard(&a, &b);
    let limit = Duration::from_secs(15);
    let (bob_hears_ada, ada_hears_bob) = tokio::join!(
        hears_again(&b, a.ssrc, b_then, limit),
        hears_again(&a, b.ssrc, a_then, limit)
    );
    println!(
        "path dead for {BLACKOUT:?}, ICE restarted {restarted:?} into it: after it returned bob hears \
         ada again after {bob_hears_ada:?}, ada hears bob after {ada_hears_bob:?}"
    );
    let bob_hears_ada = bob_hears_ada.context("bob never hears ada after her ICE restart")?;
    let ada_hears_bob = ada_hears_bob.context("ada never hears bob after her ICE restart")?;
    assert!(bob_hears_ada <= BACK_WITHIN, "{bob_hears_ada:?}");
    assert!(ada_hears_bob <= BACK_WITHIN, "{ada_hears_bob:?}");
    let new_username = nat
        .binding_request()
        .as_deref()
        .and_then(stun_username)
        .context("ada checks connectivity through the proxy")?;
    assert_ne!(
        new_username, old_username,
        "ada's checks use the new ICE credentials"
    );
    let (old_server, old_client) = old_username.split_once(':').context("ufrag pair")?;
    let (new_server, new_client) = new_username.split_once(':').context("ufrag pair")?;
    assert!(old_server != new_server && old_client != new_client);

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(restarts().await? - restarts_before, 1.0, "one ICE restart");
    assert_eq!(
        sids(&server, room).await?,
        before,
        "the same participants, with the same sids"
    );
    assert_tone(
        &a.last_pcm(b.ssrc, 0.8),
        TONES[1],
        "ada hears bob after her ICE restart",
    );
    assert_tone(
        &b.last_pcm(a.ssrc, 0.8),
        TONES[0],
        "bob hears ada after her ICE restart",
    );
    assert_eq!(a.duplicates(), 0, "ada heard no packet twice");
    assert_call_survived(&server, room, &mut [&mut a, &mut b]).await?;
    a.client.stop().await?;
    b.client.stop().await?;
    Ok(())
}
