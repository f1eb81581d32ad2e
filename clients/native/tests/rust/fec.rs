//! The SDK's in-band FEC follows the server's receiver reports, as a browser's encoder does: a game client
//! speaking (the espeak-ng passage, in real time) into a forwarding room whose one listener is on a clean
//! link codes no FEC once the server's first report arrives; once that listener's link (an impairment
//! proxy) loses 10 % of datagrams, the server states the room's loss to the speaker (docs/architecture.md,
//! "Loss feedback") and the speaker's packets carry FEC copies again. Counted where the server sees them:
//! `chorus_rtp_fec_packets_received_total` against the frames the SDK sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_native::{Client, Config};
use chorus_tests::proxy::{Impairment, Proxy};
use chorus_tests::{AudioClient, MediaOptions, Mic, Server, Signal};

use crate::{wait_connected, SECONDS};

#[allow(dead_code)] // shared with media-core's tests; this binary needs only the passage
#[path = "../../../../media-core/tests/support/speech.rs"]
mod speech;

/// How long the server may take to tell the speaker about a listener's loss: the listener's receiver
/// reports (every few seconds), the server's statistics of them (every second), and the server's next
/// report to the speaker (a second after its previous one). Seen: 6.0–6.1 s.
const FEEDBACK_WITHIN: Duration = Duration::from_secs(45);

/// A window over which the share of packets carrying FEC is counted: long enough for several words.
const WINDOW: Duration = Duration::from_secs(4);

/// A game's capture callback: every 10 ms, the samples of `speech` (looped) due by then.
fn speak(mut mic: chorus_native::Microphone, speech: Arc<[f32]>, stop: Arc<AtomicBool>) {
    let mut at = 0usize;
    super::paced(48_000, &stop, |mut due| {
        while due > 0 {
            let n = due.min(speech.len() - at);
            mic.push_f32(&speech[at..at + n]);
            at = (at + n) % speech.len();
            due -= n;
        }
    });
}

/// The share of the frames `client` sent during the next `WINDOW` whose packets carried FEC (the server
/// has no other publisher), and the frames counted.
async fn fec_share(server: &Server, client: &Client) -> anyhow::Result<(f64, u64)> {
    const FEC: &str = "chorus_rtp_fec_packets_received_total";
    let (fec, sent) = (server.metric(FEC).await?, client.stats().frames_sent);
    tokio::time::sleep(WINDOW).await;
    let fec = server.metric(FEC).await? - fec;
    let sent = client.stats().frames_sent - sent;
    Ok((fec / sent.max(1) as f64, sent))
}

/// Wait until `client`'s encoder expects a loss `ok` accepts; the figure, and how long it took.
async fn expected_loss(
    client: &Client,
    within: Duration,
    ok: impl Fn(u32) -> bool,
) -> anyhow::Result<(u32, Duration)> {
    let start = Instant::now();
    loop {
        let percent = client.stats().expected_loss_percent;
        if ok(percent) {
            return Ok((percent, start.elapsed()));
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "the encoder still expects {percent} % loss after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_fec_follows_what_the_server_reports_about_a_lossy_listener() -> anyhow::Result<()>
{
    let speech = tokio::task::spawn_blocking(speech::passage_48k).await?;
    let server = Server::start(&[]).await?;
    let room = "fec-native";
    let mut ada = Client::new(Config::default())?;
    assert_eq!(
        ada.stats().expected_loss_percent,
        10,
        "before any report the encoder expects the configured loss"
    );
    ada.connect(&server.ws_url(), &server.token(room, "ada", &[])?, None)?;
    // bob listens behind a proxy that starts losing 10 % of datagrams later.
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&server.token(room, "bob", &[])?, room).await?;
    let slots = joined["room"]["slots"]
        .as_u64()
        .context("joined.room.slots is a number")? as usize;
    let lossy = Impairment {
        loss: 0.10,
        ..Impairment::default()
    };
    let proxy = Proxy::start(server.media, lossy, 7).await?;
    let _bob_media = AudioClient::start_with(
        &mut signal,
        MediaOptions {
            slots,
            mic: Mic::Off,
            via: Some(proxy.addr),
            play_slot: None,
            red: 0,
        },
    )
    .await?;
    // bob's game says nothing on its WebSocket but keeps it alive (the server closes a session silent
    // for 30 s).
    let bob = tokio::spawn(async move {
        loop {
            signal.send(serde_json::json!({"type": "ping"})).await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        #[allow(unreachable_code)] // aborted at the end
        anyhow::Ok(())
    });
    let mut ada = tokio::task::spawn_blocking(move || {
        wait_connected(&ada, &mut Vec::new())?;
        anyhow::Ok(ada)
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let capture = {
        let (mic, stop) = (ada.take_microphone().context("a microphone")?, stop.clone());
        std::thread::spawn(move || speak(mic, speech, stop))
    };

    // A clean room: the server's first report states no loss, and the encoder stops coding FEC.
    let (clean, took) = expected_loss(&ada, SECONDS * 3, |p| p == 0).await?;
    // The packets coded before the change reach the server.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (clean_share, clean_frames) = fec_share(&server, &ada).await?;
    println!(
        "clean: the encoder expects {clean} % after {took:?}; {:.1} % of {clean_frames} frames carried FEC",
        clean_share * 100.0
    );

    // bob loses 10 %: the server states the room's loss (capped at 10 %) to ada, and her FEC is back.
    proxy.impair();
    let (lossy, took) = expected_loss(&ada, FEEDBACK_WITHIN, |p| p >= 4).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (lossy_share, lossy_frames) = fec_share(&server, &ada).await?;
    let dropped = proxy.stats().dropped.load(Ordering::Relaxed);
    println!(
        "bob losing: the encoder expects {lossy} % {took:?} after the loss began; {:.1} % of \
         {lossy_frames} frames carried FEC; the proxy dropped {dropped}",
        lossy_share * 100.0
    );
    stop.store(true, Ordering::Relaxed);
    capture.join().expect("capture does not panic");
    // RED depth 1 by default: every packet the SDK sent carried its frame before too, and the server
    // parsed them as RED.
    let red = server
        .metric("chorus_rtp_red_packets_received_total")
        .await?;
    let sent = ada.stats().frames_sent;
    anyhow::ensure!(!bob.is_finished(), "bob's signaling ended: {:?}", bob.await);
    bob.abort();

    assert!(
        clean_frames > 150,
        "ada sent {clean_frames} frames in {WINDOW:?}"
    );
    assert!(
        clean_share < 0.02,
        "a clean room: {:.1} % of frames carried FEC",
        clean_share * 100.0
    );
    assert!(
        lossy <= 10,
        "the server's cap is 10 %, the encoder expects {lossy} %"
    );
    assert!(
        lossy_frames > 150,
        "ada sent {lossy_frames} frames in {WINDOW:?}"
    );
    assert!(
        red >= sent as f64 * 0.9 && red <= sent as f64,
        "the SDK sends RED by default: the server parsed {red} RED packets of {sent} sent"
    );
    assert!(
        lossy_share >= 0.4,
        "bob loses 10 %: only {:.1} % of frames carried FEC",
        lossy_share * 100.0
    );
    Ok(())
}
