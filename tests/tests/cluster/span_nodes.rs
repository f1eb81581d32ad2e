//! A room spanning two nodes (issue 16 item 2): with `room_node_participants = 1` a join reaching the node
//! that does not own the room opens a shard of it there instead of being redirected, and the two shards
//! exchange their speakers as authenticated trunk datagrams: each participant hears the other's tone. A
//! forged datagram (a wrong tag) sent to the trunk port is counted and changes nothing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chorus_tests::SAMPLE_RATE;

use super::{join_at, wait_hearing, Cluster, SECONDS, TONES};

const SECRET: &str = "e2e-trunk-secret-of-at-least-32-bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spanning_two_nodes_carries_audio_both_ways() -> anyhow::Result<()> {
    let cluster = Cluster::start_nodes(
        2,
        &[
            ("CHORUS_CLUSTER_TRUNK_LISTEN", "127.0.0.1:0"),
            ("CHORUS_CLUSTER_TRUNK_SECRET", SECRET),
            ("CHORUS_CLUSTER_ROOM_NODE_PARTICIPANTS", "1"),
        ],
    )
    .await?;
    let ada = join_at(&cluster.nodes[0], "wide", "ada", TONES[0]).await?;
    let owner = cluster
        .nodes
        .iter()
        .position(|n| n.ws_url() == ada.url)
        .context("Ada's node is one of the cluster's")?;
    let other = &cluster.nodes[1 - owner];
    // The owner lists its shard at its next heartbeat: it holds room_node_participants (1) of the room.
    let listed = format!("HEXISTS chorus:shards:wide node-{owner}");
    let deadline = Instant::now() + SECONDS;
    while cluster.redis.query(&listed).await.as_deref() != Some(":1") {
        if Instant::now() > deadline {
            bail!("the owner did not list its shard of the room");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bob reaches the other node and stays there: a shard of the room opens there.
    let bob = join_at(other, "wide", "bob", TONES[1]).await?;
    assert_eq!(bob.url, other.ws_url(), "Bob is not redirected");
    assert_eq!(
        other
            .metric(r#"chorus_cluster_locate_total{result="shard"}"#)
            .await?,
        1.0
    );
    let spanning = Instant::now();
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
    let mut forged = vec![1u8, 1];
    forged.extend_from_slice(&[7u8; 120]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&forged, trunk).await?;
    let bad_tag = r#"chorus_cluster_trunk_datagrams_total{result="bad_tag"}"#;
    let deadline = Instant::now() + SECONDS;
    while other.metric(bad_tag).await? != 1.0 {
        if Instant::now() > deadline {
            bail!("the forged datagram was not counted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    ada.p.client.stop().await?;
    bob.p.client.stop().await?;
    Ok(())
}
