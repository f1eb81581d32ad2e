//! A room's listeners on every node (issue 16: a town-hall's 20,000 listeners over several nodes; the
//! mounts of issue 14): a listener reaching a node that does not host the room gets the owner's mount
//! relayed — one connection per node to the owner, whatever the listeners there — and hears the room's
//! mix. The owner's access rules hold on the relaying node: without a token for the room, 401.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use chorus_tests::SAMPLE_RATE;
use media_core::audio::ToneAnalysis;

use super::{join_at, Cluster, SECONDS, TONES};
use crate::broadcast::{ogg_pages, open_listener, read_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_a_mount_is_relayed_to_listeners_on_another_node() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let cluster = Cluster::start_nodes(2, &[]).await?;
    let ada = join_at(&cluster.nodes[0], "stage", "ada", TONES[0]).await?;
    let owner = cluster.node(&ada.url);
    let other = cluster.other_than(&ada.url);

    // Mounts are not public by default: the relaying node asks for a token as the owner would.
    let (_s, head, _) = open_listener(other, "/live/stage.opus", &[], None).await?;
    ensure!(head.starts_with("HTTP/1.1 401"), "{head}");

    // ffmpeg on the other node hears Ada's tone, from the owner's mix.
    let token = other.token("stage", "fan", &[])?;
    let path = format!("/live/stage.opus?token={token}");
    let started = Instant::now();
    let pcm = crate::ffmpeg_pcm(format!("http://{}{path}", other.http), Some(3)).await?;
    println!(
        "relay: ffmpeg on the other node decoded {} samples in {:?}",
        pcm.len(),
        started.elapsed()
    );
    ensure!(
        pcm.len() >= 2 * SAMPLE_RATE as usize,
        "{} samples",
        pcm.len()
    );
    let analysis = ToneAnalysis::analyze(&pcm[pcm.len() / 3..], SAMPLE_RATE, &TONES);
    assert_eq!(analysis.present_default(), vec![TONES[0]], "{analysis:?}");

    // Two listeners on the other node share one relay: the owner serves one listener, the relay.
    let mut a = open_listener(other, &path, &[], None).await?;
    let mut b = open_listener(other, &path, &[], None).await?;
    for (s, head, first) in [&mut a, &mut b] {
        ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut stream = std::mem::take(first);
        stream.extend(read_for(s, Duration::from_millis(1500)).await?);
        let pages = ogg_pages(&stream);
        ensure!(pages.len() >= 8, "{} pages in 1.5 s", pages.len());
        let granules: Vec<u64> = pages.iter().skip(2).map(|p| p.1).collect();
        ensure!(
            granules.windows(2).all(|w| w[0] < w[1]),
            "granules rise: {granules:?}"
        );
    }
    let deadline = Instant::now() + SECONDS;
    loop {
        let here = other.metric("chorus_broadcast_listeners").await?;
        let there = owner.metric("chorus_broadcast_listeners").await?;
        if (here, there) == (2.0, 1.0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("listeners: {here} on the relaying node, {there} on the owner (want 2 and 1)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = r#"chorus_broadcast_relays_total{result="started"}"#;
    assert_eq!(
        other.metric(started).await?,
        1.0,
        "one relay for every listener"
    );

    // A room no node hosts is still 404.
    let (_s, head, _) = open_listener(other, "/live/nowhere.opus", &[], None).await?;
    ensure!(head.starts_with("HTTP/1.1 404"), "{head}");
    Ok(())
}
