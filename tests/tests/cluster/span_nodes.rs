//! A room spanning two nodes (issue 16 item 2): with `room_node_participants = 1` a join reaching the node
//! that does not own the room opens a shard of it there instead of being redirected, and the two shards
//! exchange their speakers as authenticated trunk datagrams: each participant hears the other's tone. A
//! forged datagram (a wrong tag) or one of the old version 1 sent to the trunk port is counted and changes
//! nothing. The room has one
//! roster and one set of settings: the admin-created room's two slots hold on the other node, each side
//! lists the other in `participants` / `participant_joined`, sees a leave there, and sees the other node's
//! participant leave when that node is killed. A whisper from one node to a participant on the other is
//! heard by that one only: a third participant on the whispered-to's node hears nothing of it and is not
//! told in `speakers` that the whisperer speaks; a volume for the remote talker is accepted.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chorus_tests::{Signal, SAMPLE_RATE};
use serde_json::{json, Value};

use super::{heard_of, hears_tone, join_at, wait_hearing, Cluster, Member, SECONDS, TONES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spanning_two_nodes_carries_audio_both_ways() -> anyhow::Result<()> {
    // A killed node is gone within 1.5 s.
    let cluster = Cluster::start_spanning(&[
        ("CHORUS_CLUSTER_HEARTBEAT_MS", "500"),
        ("CHORUS_CLUSTER_NODE_TTL_MS", "1500"),
    ])
    .await?;
    // An operator creates the room on node 0 with two slots (the server's default is three).
    let admin = cluster.nodes[0].admin_token()?;
    cluster.nodes[0]
        .create_room(&json!({"name": "wide", "mode": "forward", "slots": 2}))
        .await?;
    let mut ada = join_at(&cluster.nodes[0], "wide", "ada", TONES[0]).await?;
    ensure!(ada.url == cluster.nodes[0].ws_url(), "the room is node 0's");
    let owner = 0;
    let other = &cluster.nodes[1];
    // The owner lists its shard at its next heartbeat: it holds room_node_participants (1) of the room.
    cluster.wait_shard_listed("wide", owner).await?;

    // Bob reaches the other node and stays there: a shard of the room opens there.
    let joining = Instant::now();
    let mut bob = join_at(other, "wide", "bob", TONES[1]).await?;
    assert_eq!(bob.url, other.ws_url(), "Bob is not redirected");
    assert_eq!(
        other
            .metric(r#"chorus_cluster_locate_total{result="shard"}"#)
            .await?,
        1.0
    );
    // One set of settings: the operator's two slots on Bob's node too.
    assert_eq!(bob.joined["room"]["slots"], 2, "{}", bob.joined["room"]);
    // One roster: Bob is told of Ada (on the other node, marked remote), Ada of Bob.
    let listed = &bob.joined["participants"];
    ensure!(
        listed.as_array().is_some_and(|l| l
            .iter()
            .any(|p| p["sid"] == ada.p.sid && p["remote"] == true)),
        "Bob's participants list Ada: {listed}"
    );
    let joined = ada.p.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(joined["participant"]["sid"], bob.p.sid.as_str());
    assert_eq!(joined["participant"]["remote"], true);
    println!(
        "cluster: Ada is told of Bob on the other node {:?} after his join began",
        joining.elapsed()
    );
    // The admin API of either node lists the whole room: its own participants and the other's, marked.
    let (status, body) = cluster.nodes[0]
        .admin("GET", "/admin/v1/rooms/wide", Some(&admin), None)
        .await?;
    ensure!(status == 200, "GET the room: {status} {body}");
    let room: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(room["num_participants"], 2, "{room}");
    let listed = room["participants"].as_array().cloned().unwrap_or_default();
    ensure!(
        listed
            .iter()
            .any(|p| p["sid"] == bob.p.sid.as_str() && p["remote"] == true)
            && listed
                .iter()
                .any(|p| p["sid"] == ada.p.sid.as_str() && p.get("remote").is_none()),
        "node 0's admin API lists Ada and Bob (remote): {room}"
    );
    let spanning = Instant::now();
    // No one-way second: the owner learns of the new shard at once, not at its next heartbeat.
    let deadline = Instant::now() + SECONDS;
    while heard_of(&ada, &bob) == 0 || heard_of(&bob, &ada) == 0 {
        if Instant::now() > deadline {
            bail!("Ada and Bob do not hear each other at all");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "cluster: first audio both ways across nodes {:?} after Bob's join",
        spanning.elapsed()
    );
    wait_hearing(&ada, &bob, SAMPLE_RATE as usize / 2, SECONDS).await?;
    println!(
        "cluster: Ada and Bob hear each other across nodes {:?} after Bob's join",
        spanning.elapsed()
    );

    // A datagram with a wrong tag to Bob's node's trunk port: counted, and the call goes on.
    let nodes = cluster.listed(0).await?;
    let trunk: std::net::SocketAddr = nodes
        .iter()
        .find(|n| n["url"] == other.ws_url().as_str())
        .and_then(|n| n["trunk_addr"].as_str())
        .context("the other node publishes its trunk address")?
        .parse()?;
    // Version 2 (audio with its speaker's voice) with a wrong tag, and a version-1 datagram (audio without
    // a voice: a whisper would be heard by the room): each refused with its own counter.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for (version, result) in [(2u8, "bad_tag"), (1, "bad_version")] {
        let mut forged = vec![version, 1];
        forged.extend_from_slice(&[7u8; 120]);
        socket.send_to(&forged, trunk).await?;
        let counter = format!(r#"chorus_cluster_trunk_datagrams_total{{result="{result}"}}"#);
        let deadline = Instant::now() + SECONDS;
        while other.metric(&counter).await? != 1.0 {
            if Instant::now() > deadline {
                bail!("the forged datagram (version {version}) was not counted as {result}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_hearing(&ada, &bob, SAMPLE_RATE as usize / 2, SECONDS).await?;
    for node in [&cluster.nodes[owner], other] {
        let received = node
            .metric(r#"chorus_cluster_trunk_datagrams_total{result="received"}"#)
            .await?;
        assert!(received > 25.0, "{received} datagrams received");
        let hops = node.metric("chorus_trunk_hop_seconds_count").await?;
        let sum = node.metric("chorus_trunk_hop_seconds_sum").await?;
        println!(
            "cluster: trunk hop between nodes (loopback, debug build): mean {:.3} ms over {hops} messages",
            sum / hops * 1000.0
        );
    }
    leaves_are_seen_across_nodes(&cluster, &mut ada, &mut bob).await?;
    ada.p.client.stop().await?;
    Ok(())
}

/// Cy joins Bob's node, then again the owner's, which replaces her first seat, and leaves: Ada and Bob
/// see her come, be replaced and go. Then Bob's node is killed: Ada sees Bob
/// leave (`disconnected`) once its record expires.
async fn leaves_are_seen_across_nodes(
    cluster: &Cluster,
    ada: &mut Member,
    bob: &mut Member,
) -> anyhow::Result<()> {
    let other = cluster.node(&bob.url);
    let token = other.token("wide", "cy", &[])?;
    let (mut cy, joined, url) = Signal::join_following(&other.ws_url(), &token, "wide").await?;
    ensure!(url == other.ws_url(), "Cy stays on Bob's node");
    let cy_sid = joined["participant"]["sid"].clone();
    let seen = ada.p.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(seen["participant"]["sid"], cy_sid);
    // Cy joins again, on the owner's node: one identity, one seat in the room, as on one node. Her
    // session on Bob's node ends (`left` `replaced`); Ada sees the old seat go and the new one come.
    let owner = &cluster.nodes[0];
    let token = owner.token("wide", "cy", &[])?;
    let replacing = Instant::now();
    let (mut cy_again, joined, url) =
        Signal::join_following(&owner.ws_url(), &token, "wide").await?;
    ensure!(
        url == owner.ws_url(),
        "Cy's second session stays on the owner's node"
    );
    let listed = joined["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        !listed.iter().any(|p| p["sid"] == cy_sid),
        "Cy's second session does not list her first: {listed:?}"
    );
    let cy_again_sid = joined["participant"]["sid"].clone();
    let left = ada.p.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(
        (&left["sid"], &left["reason"]),
        (&cy_sid, &Value::from("replaced"))
    );
    let seen = ada.p.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(seen["participant"]["sid"], cy_again_sid);
    let ended = cy.expect("left", SECONDS).await?;
    assert_eq!(ended["reason"], "replaced", "{ended}");
    println!(
        "cluster: Cy's seat on the other node is replaced {:?} after her second join began",
        replacing.elapsed()
    );
    // Bob, on the other node, sees the same: the old seat replaced, then the new one, remote.
    let left = bob.p.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(
        (&left["sid"], &left["reason"]),
        (&cy_sid, &Value::from("replaced"))
    );
    let seen = bob.p.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(seen["participant"]["sid"], cy_again_sid);
    assert_eq!(seen["participant"]["remote"], true);
    cy_again.send(json!({"type": "leave"})).await?;
    let left = ada.p.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(
        (&left["sid"], &left["reason"]),
        (&cy_again_sid, &Value::from("left"))
    );

    other.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    let left = ada.p.signal.expect("participant_left", 3 * SECONDS).await?;
    assert_eq!(left["sid"], bob.p.sid.as_str());
    assert_eq!(left["reason"], "disconnected");
    println!(
        "cluster: Ada sees Bob leave {:?} after his node was killed (node TTL 1.5 s)",
        killed.elapsed()
    );
    Ok(())
}

/// Receives `member`'s signaling messages for `during`: whether any `speakers` event named `sid`.
async fn told_speaking(member: &mut Member, sid: &str, during: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + during;
    let mut told = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(told);
        }
        match member.p.signal.recv(left).await {
            Ok(Some(v)) if v["type"] == "speakers" => {
                let named = v["speakers"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|s| s["sid"] == sid));
                told |= named;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("{}'s socket closed", member.p.sid),
            // No message before the deadline.
            Err(_) => return Ok(told),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whisper_across_nodes_reaches_only_its_listener() -> anyhow::Result<()> {
    let cluster = Cluster::start_spanning(&[]).await?;
    let (here, there) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ada = join_at(here, "wide", "ada", TONES[0]).await?;
    ensure!(ada.url == here.ws_url(), "the room is node 0's");
    cluster.wait_shard_listed("wide", 0).await?;
    // Bob and Cy reach node 1 and stay there.
    let bob = join_at(there, "wide", "bob", TONES[1]).await?;
    let mut cy = join_at(there, "wide", "cy", TONES[2]).await?;
    ensure!(
        bob.url == there.ws_url() && cy.url == there.ws_url(),
        "Bob and Cy are on node 1"
    );
    for _ in 0..2 {
        let joined = ada.p.signal.expect("participant_joined", SECONDS).await?;
        assert_eq!(joined["participant"]["remote"], true, "{joined}");
    }
    // Everyone talks to the room first: Cy hears Ada across the nodes.
    wait_hearing(&ada, &cy, SAMPLE_RATE as usize / 2, SECONDS).await?;

    // Ada whispers to Bob, on the other node; she sets a volume for Cy there too (accepted: no error).
    ada.p
        .signal
        .send(json!({"type": "talk", "target": "whisper", "to": [bob.p.sid]}))
        .await?;
    ada.p
        .signal
        .send(json!({"type": "volume", "sid": cy.p.sid, "volume": -6}))
        .await?;
    ada.p.signal.send(json!({"type": "ping", "id": 1})).await?;
    let deadline = Instant::now() + SECONDS;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ada
            .p
            .signal
            .recv(left)
            .await?
            .context("Ada's socket closed")?;
        ensure!(v["type"] != "error", "Ada's whisper or volume refused: {v}");
        if v["type"] == "pong" {
            break;
        }
    }
    // What was on its way to Cy when the target changed arrives within a few hundred milliseconds, and
    // the `speakers` update that drops Ada with it.
    let whispering = Instant::now();
    told_speaking(&mut cy, &ada.p.sid, Duration::from_millis(500)).await?;
    let (cy_before, bob_before) = (heard_of(&cy, &ada), heard_of(&bob, &ada));
    let told = told_speaking(&mut cy, &ada.p.sid, 2 * SECONDS).await?;
    ensure!(!told, "Cy is told that Ada, who whispers to Bob, speaks");
    let cy_heard = heard_of(&cy, &ada) - cy_before;
    ensure!(
        cy_heard == 0,
        "Cy heard {cy_heard} samples of Ada's whisper to Bob"
    );
    let bob_heard = heard_of(&bob, &ada) - bob_before;
    ensure!(
        bob_heard >= SAMPLE_RATE as usize,
        "Bob heard only {bob_heard} samples of Ada's whisper in 2 s"
    );
    ensure!(hears_tone(&bob, &ada), "Bob hears Ada's tone");
    // Cy still hears Bob (same node) and Ada hears Cy: only the whisper is scoped.
    ensure!(hears_tone(&cy, &bob) && hears_tone(&ada, &cy));
    println!(
        "cluster: over {:?} of Ada's whisper across nodes Bob decoded {bob_heard} samples of it, Cy none",
        whispering.elapsed()
    );
    ada.p.client.stop().await?;
    Ok(())
}
