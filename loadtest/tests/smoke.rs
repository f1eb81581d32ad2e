//! A short load run against the real `chorus` binary over loopback, with a known loss injected by the tool
//! itself (a seeded share of its outgoing RTP is dropped): the measured loss must match what was dropped,
//! every join must succeed, and the counts must add up.

use std::time::Duration;

use chorus_loadtest::run::{self, Mode, RunConfig, Target};
use chorus_loadtest::talk::TalkModel;
use chorus_tests::Server;

/// One room of 5 on `server`, two of them talking continuously, for 3 s: `drop_rtp` of the talkers' RTP
/// dropped by the tool, the first `measure_receivers` of the room measured (all when `None`).
fn config(
    server: &Server,
    room_prefix: &str,
    drop_rtp: f64,
    measure_receivers: Option<usize>,
) -> RunConfig {
    RunConfig {
        target: Target::Chorus {
            ws_urls: vec![server.ws_url()],
            api_key: "devkey".into(),
            api_secret: "chorus-development-secret-do-not-use-in-production".into(),
        },
        mode: Mode::Forward,
        rooms: 1,
        participants: 5,
        talkers: 2,
        talk: TalkModel::Continuous,
        dtx: false,
        slots: 3,
        ramp_rate: 50.0,
        duration: Duration::from_secs(3),
        join_timeout: Duration::from_secs(15),
        drop_rtp,
        seed: 7,
        server_pid: Some(server.pid()),
        device: Some("lo".into()),
        probes: 0,
        measure_receivers,
        chirp_period: Duration::from_secs(2),
        chirp_first_only: false,
        room_prefix: room_prefix.into(),
        floor: None,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_measures_the_injected_loss_and_every_join() {
    let server = Server::start(&["--dev-mode", "true"])
        .await
        .expect("the chorus binary starts");
    let drop = 0.10;
    let config = config(&server, "smoke-", drop, None);
    let r = run::run(config).await.expect("the run completes");
    eprintln!("{}", chorus_loadtest::report::table(&r));

    // Every participant joined and heard someone: talkers hear the other talker, listeners both.
    assert_eq!(r.joins.attempted, 5);
    assert_eq!(r.joins.failed, 0, "failures: {:?}", r.joins.failures);
    assert_eq!(r.joins.first_audio_ms.count, 5);
    assert_eq!(r.joins.connect_ms.count, 5);
    // Streams: each talker receives the other talker (1), each of 3 listeners receives both (2 each).
    assert_eq!(r.streams.count, 2 + 3 * 2);

    // The loss the tool measures is the loss it injected. What it actually dropped is known exactly:
    let injected =
        r.streams.injected_drops as f64 / (r.streams.injected_drops + r.streams.sent_rtp) as f64;
    // ... and with a seeded generator it is near the configured share.
    assert!((injected - drop).abs() < 0.04, "injected {injected}");
    let measured = r.streams.loss_pct / 100.0;
    assert!(
        (measured - injected).abs() < 0.02,
        "measured loss {measured} vs injected {injected}"
    );
    // Every stream sees about the same loss (drops happen at the publisher, so all its subscribers see them).
    let worst = r.streams.loss_pct_per_stream.max.expect("streams exist") / 100.0;
    assert!(worst < injected + 0.06, "worst stream loss {worst}");
    assert!(r.streams.lost > 0);
    assert_eq!(r.streams.received + r.streams.lost, r.streams.expected);

    // Latency was measured on stamped packets, and the server's CPU was sampled.
    assert!(r.latency_ms.count > 100, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p50.expect("samples") >= 0.0);
    let s = r.server.as_ref().expect("server figures with a pid");
    assert!(s.packets_out > 0);
    assert!(s.rss_after_kb > 0);
    // The tool kept up: its own socket never overflowed, so the loss measured is the loss injected.
    assert_eq!(r.tool_socket_drops, 0);
    assert_eq!(r.rx_unmeasured, 0, "every receiver is measured by default");

    // The machine-readable and HTML reports carry the same figures.
    let json = serde_json::to_value(&r).expect("the report serialises");
    assert_eq!(json["streams"]["lost"], r.streams.lost);
    let html = chorus_loadtest::report::html(&r);
    assert!(html.contains("<svg") && html.contains("loss"));
}

/// With `--measure-receivers 3` the two listeners beyond the first three participants still join and hear
/// their first audio, then only count what they receive: nothing is lost from the figures that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_beyond_the_measured_ones_join_hear_and_then_only_count() {
    let server = Server::start(&["--dev-mode", "true"])
        .await
        .expect("the chorus binary starts");
    let config = config(&server, "smoke-measured-", 0.0, Some(3));
    let r = run::run(config).await.expect("the run completes");
    eprintln!("{}", chorus_loadtest::report::table(&r));
    assert_eq!(r.joins.failed, 0, "failures: {:?}", r.joins.failures);
    assert_eq!(
        r.joins.first_audio_ms.count, 5,
        "everyone hears its first audio"
    );
    // Two listeners × two talkers × 50 packets/s for about 3 s, counted without decrypting.
    assert!(r.rx_unmeasured > 300, "unmeasured {}", r.rx_unmeasured);
    // The measured streams lose (almost) nothing on loopback.
    assert!(r.streams.loss_pct < 1.0, "loss {} %", r.streams.loss_pct);
    assert_eq!(r.streams.received + r.streams.lost, r.streams.expected);
    assert!(r.latency_ms.count > 100, "{:?}", r.latency_ms);
    assert_eq!(r.tool_socket_drops, 0);
}
