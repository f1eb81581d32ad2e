//! A room larger than a worker through the real `chorus` binary: two media workers and a shard limit of two
//! participants, so four Rust WebRTC clients (str0m over real UDP) land two on each worker. Everyone hears
//! every talker, local or on the other worker, at the level it was sent, and never itself; the trunk
//! between the workers is counted and its hop measured. Real-time: named `real_udp_`.

use std::collections::HashMap;
use std::time::Duration;

use chorus_tests::{Server, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;

use super::{join, Participant, SECONDS};

/// The talkers' peak amplitude (the listener sends silence).
const AMPLITUDE: f32 = 0.3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_a_room_spanning_two_workers_carries_audio_both_ways() -> anyhow::Result<()> {
    let _rt = chorus_tests::real_time_call().await;
    let dir = std::env::temp_dir().join(format!("chorus-span-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("chorus.toml");
    std::fs::write(&config, "[media]\nroom_shard_participants = 2\n")?;
    let server = Server::start(&[
        "--config",
        &config.to_string_lossy(),
        "--workers",
        "2",
        "--media-tcp-enabled",
        "false",
    ])
    .await?;
    let room = "span";
    // Placed in offer order: ada and bob on the first worker, cyd and the listener on the second.
    let mut people: Vec<Participant> = Vec::new();
    for (name, freq, amplitude) in [
        ("ada", 440.0, AMPLITUDE),
        ("bob", 660.0, AMPLITUDE),
        ("cyd", 880.0, AMPLITUDE),
        ("lis", 0.0, 0.0),
    ] {
        let mut p = join(&server, room, name, freq, amplitude).await?;
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
        people.push(p);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Two on each worker (the gauges are published every half second).
    for worker in ["0", "1"] {
        let n = server
            .metric(&format!(
                "chorus_worker_participants{{worker=\"{worker}\"}}"
            ))
            .await?;
        assert_eq!(n, 2.0, "worker {worker} holds {n} participants");
    }

    let talkers: HashMap<u32, (String, f32)> = people
        .iter()
        .filter(|p| p.freq > 0.0)
        .map(|p| {
            let ssrc = p
                .client
                .mic_ssrc
                .expect("a publishing client has a mic SSRC");
            (ssrc, (p.sid.clone(), p.freq))
        })
        .collect();
    let freqs: Vec<f32> = talkers.values().map(|(_, f)| *f).collect();
    let sent_db = 10.0 * (AMPLITUDE * AMPLITUDE / 2.0).log10();
    for (i, p) in people.iter().enumerate() {
        let own = p.client.mic_ssrc;
        let heard = p.client.heard.lock().expect("heard lock");
        for (ssrc, (sid, freq)) in &talkers {
            if Some(*ssrc) == own {
                assert!(!heard.pcm_by_csrc.contains_key(ssrc), "{i} hears itself");
                continue;
            }
            let pcm = heard
                .pcm_by_csrc
                .get(ssrc)
                .unwrap_or_else(|| panic!("client {i} does not hear {sid}: {}", server.log_tail()));
            assert!(
                pcm.len() > SAMPLE_RATE as usize,
                "client {i} heard only {} samples of {sid}",
                pcm.len()
            );
            let tail = &pcm[pcm.len() - SAMPLE_RATE as usize..];
            let a = ToneAnalysis::analyze(tail, SAMPLE_RATE, &freqs);
            assert_eq!(
                a.present_default(),
                vec![*freq],
                "client {i} from {sid}: {a:?}"
            );
            let report = a.get(*freq).expect("the talker's tone is analysed");
            let db = 10.0 * report.power.log10() - sent_db;
            assert!(
                db.abs() < 3.0,
                "client {i} hears {sid} at {db:.1} dB from its sent level"
            );
        }
    }

    // Each worker exported its own talkers (ada and bob, or cyd) to the other, and nothing was dropped.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = server
        .metric("chorus_trunk_packets_total{result=\"sent\"}")
        .await?;
    let received = server
        .metric("chorus_trunk_packets_total{result=\"received\"}")
        .await?;
    let dropped = server
        .metric("chorus_trunk_packets_total{result=\"dropped\"}")
        .await?;
    assert!(
        sent > 300.0 && received > 300.0,
        "sent {sent}, received {received}"
    );
    assert_eq!(dropped, 0.0);
    let hops = server.metric("chorus_trunk_hop_seconds_count").await?;
    let hop_sum = server.metric("chorus_trunk_hop_seconds_sum").await?;
    assert!(hops > 300.0, "{hops} hops measured");
    eprintln!(
        "trunk: {sent} sent, {received} received, mean hop {:.1} µs (debug build)",
        hop_sum / hops * 1e6
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
