//! Moderating a participant on another node of a room spanning two nodes: Ada, a moderator on node 0,
//! mutes Bob, who joined through node 1, with `moderate`; the operator unmutes and mutes him again through
//! node 0's admin API; Ada kicks him. Each action is carried out on Bob's node: Ada stops (or starts again)
//! hearing him, and her roster shows him muted through the roster channel.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use chorus_tests::SAMPLE_RATE;
use serde_json::{json, Value};

use super::{heard_of, join_at, member, wait_hearing, Cluster, Member, SECONDS, TONES};

/// Waits until `listener` has decoded nothing new of `talker` for 300 ms (within two seconds); returns
/// how long after `since` the last sample arrived.
async fn silent(listener: &Member, talker: &Member, since: Instant) -> anyhow::Result<Duration> {
    let quiet = Duration::from_millis(300);
    let deadline = Instant::now() + 2 * SECONDS;
    let (mut heard, mut last) = (heard_of(listener, talker), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = heard_of(listener, talker);
        if now != heard {
            (heard, last) = (now, Instant::now());
        } else if last.elapsed() >= quiet {
            return Ok(last.saturating_duration_since(since));
        }
        if Instant::now() > deadline {
            bail!("{} is still heard by {}", talker.p.sid, listener.p.sid);
        }
    }
}

/// Waits for Ada's `participant_muted` of Bob and checks it.
async fn told_muted(ada: &mut Member, bob: &Member, muted: bool) -> anyhow::Result<()> {
    let event = ada.p.signal.expect("participant_muted", SECONDS).await?;
    ensure!(
        event["sid"] == bob.p.sid.as_str() && event["muted"] == muted,
        "Ada is told Bob's mute: {event}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_on_one_node_mutes_and_kicks_a_participant_on_another() -> anyhow::Result<()> {
    let cluster = Cluster::start_spanning(&[]).await?;
    let (here, there) = (&cluster.nodes[0], &cluster.nodes[1]);
    let token = here.token("wide", "ada", &["--moderator"])?;
    let mut ada = member(&here.ws_url(), token, "wide", TONES[0]).await?;
    ensure!(ada.url == here.ws_url(), "the room is node 0's");
    cluster.wait_shard_listed("wide", 0).await?;
    let bob = join_at(there, "wide", "bob", TONES[1]).await?;
    ensure!(bob.url == there.ws_url(), "Bob stays on node 1");
    wait_hearing(&ada, &bob, SAMPLE_RATE as usize / 2, 3 * SECONDS).await?;

    // Ada's `moderate` on node 0 mutes Bob on node 1.
    let muting = Instant::now();
    let moderate = |action: &str| json!({"type": "moderate", "action": action, "sid": bob.p.sid});
    ada.p.signal.send(moderate("mute")).await?;
    told_muted(&mut ada, &bob, true).await?;
    println!(
        "cluster: Ada is told Bob (other node) is muted {:?} after her moderate",
        muting.elapsed()
    );
    let last = silent(&ada, &bob, muting).await?;
    println!("cluster: Ada last heard Bob {last:?} after her moderate");

    // The operator, through node 0's admin API, unmutes him (he is heard again) and mutes him.
    let admin = here.admin_token()?;
    let path = format!("/admin/v1/rooms/wide/participants/{}/mute", bob.p.sid);
    let (status, body) = here
        .admin("POST", &path, Some(&admin), Some(r#"{"muted": false}"#))
        .await?;
    ensure!(status == 200, "unmute through node 0: {status} {body}");
    let answer: Value = serde_json::from_str(&body)?;
    ensure!(
        answer["sid"] == bob.p.sid.as_str() && answer["muted"] == false,
        "{answer}"
    );
    told_muted(&mut ada, &bob, false).await?;
    wait_hearing(&ada, &bob, SAMPLE_RATE as usize / 2, 3 * SECONDS).await?;
    let muting = Instant::now();
    let (status, body) = here
        .admin("POST", &path, Some(&admin), Some(r#"{"muted": true}"#))
        .await?;
    ensure!(status == 200, "mute through node 0: {status} {body}");
    told_muted(&mut ada, &bob, true).await?;
    let last = silent(&ada, &bob, muting).await?;
    println!("cluster: Ada last heard Bob {last:?} after the admin API's mute on node 0");

    // Ada kicks him: he leaves, kicked, on every node.
    ada.p.signal.send(moderate("kick")).await?;
    let left = ada.p.signal.expect("participant_left", SECONDS).await?;
    ensure!(
        left["sid"] == bob.p.sid.as_str() && left["reason"] == "kicked",
        "{left}"
    );
    // He is gone: a moderation of his sid is refused as for any absent participant.
    ada.p.signal.send(moderate("mute")).await?;
    let refused = ada.p.signal.expect("error", SECONDS).await?;
    ensure!(refused["code"] == "participant_not_found", "{refused}");

    let ok = r#"chorus_cluster_remote_actions_total{result="ok"}"#;
    assert_eq!(here.metric(ok).await?, 2.0, "mute and kick went to node 1");
    let forwarded = r#"chorus_cluster_admin_forwarded_total{result="ok"}"#;
    assert_eq!(here.metric(forwarded).await?, 2.0, "two admin requests");
    ada.p.client.stop().await?;
    Ok(())
}
