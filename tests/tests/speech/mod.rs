//! Speech quality over real UDP through the real `chorus` binary (issue 9): a client speaks the espeak-ng
//! passage like a browser (libopus VOIP 32 kb/s, 20 ms, DTX, in-band FEC, RFC 6464 levels, paced by the
//! wall clock), a listener plays what it receives through a jitter buffer in real time, and PESQ-WB scores
//! it against the speaker's own decoded packets, the reference of the virtual-time tests
//! (media-core/tests/speech). A forward and a mixed room run at once on one server, first on a clean
//! loopback, then with every client behind an impairment proxy ([`chorus_tests::proxy`]) that drops 5 %
//! of datagrams and delays each by 10..50 ms once both clients are connected (the virtual-time calls also
//! connect on a clean link). The scores, the server's jitter and mixer metrics and the listener's
//! jitter-buffer counters are printed (`-- --nocapture`); the WAV files stay in the test target's
//! `tmp/speech` directory.
//!
//! Needs `espeak-ng`, `sox` and the `.venv` with PyPI `pesq`: `scripts/test.sh` installs them.

#[allow(dead_code)] // shared with media-core's tests; this binary needs only part of it
#[path = "../../../media-core/tests/support/speech.rs"]
pub(crate) mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_tests::{AudioClient, MediaOptions, Mic, Server, Signal};
use media_core::jitter::JitterStats;
use serde_json::json;

use chorus_tests::proxy::{Impairment, Proxy};
use support::Pesq;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Listening after the last sample was sent: the network, both jitter buffers and the mixer drain.
const TAIL: Duration = Duration::from_millis(1500);

/// The lossy condition on each leg, as in the virtual-time tests: 5 % random loss, one-way delay
/// 30 ± 20 ms (uniform, so datagrams are reordered).
fn lossy() -> Impairment {
    Impairment {
        loss: 0.05,
        delay_ms: 10.0..50.0,
        ..Impairment::default()
    }
}

/// The lossy link with its losses in runs of 3 datagrams on average, as Wi-Fi and cellular links lose:
/// media-core's `speech_through_bursty_loss_stays_above_its_measured_floor` over real UDP.
fn bursty() -> Impairment {
    Impairment {
        loss_burst_packets: 3.0,
        ..lossy()
    }
}

/// A calm link (20–22 ms one way) whose every direction stalls for 30 ms now and then: one datagram in
/// 100 starts a stall (every ~2 s at 50 packets a second), as a Wi-Fi retry burst or a queue behind cross
/// traffic does. Media-core's `mixed_speech_survives_delay_stalls_on_a_calm_link` in real time.
fn stalling() -> Impairment {
    Impairment {
        delay_ms: 20.0..22.0,
        stall_chance: 0.01,
        stall: Duration::from_millis(30),
        ..Impairment::default()
    }
}

/// A joined participant with its media running.
struct Party {
    /// Kept open: closing it leaves the room.
    _signal: Signal,
    client: AudioClient,
    /// The impairment proxy the client talks through, if any.
    proxy: Option<Proxy>,
}

async fn join(
    server: &Server,
    room: &str,
    identity: &str,
    mic: Mic,
    impairment: Option<(Impairment, u64)>,
    red: u8,
) -> anyhow::Result<Party> {
    let token = server.token(room, identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"]
        .as_u64()
        .context("joined.room.slots is a number")? as usize;
    let proxy = match impairment {
        Some((impairment, seed)) => Some(Proxy::start(server.media, impairment, seed).await?),
        None => None,
    };
    let client = AudioClient::start_with(
        &mut signal,
        MediaOptions {
            slots,
            mic,
            via: proxy.as_ref().map(|p| p.addr),
            play_slot: matches!(mic, Mic::Off).then_some(0),
            red,
        },
    )
    .await?;
    Ok(Party {
        _signal: signal,
        client,
        proxy,
    })
}

/// What one call through a room recorded.
struct Recording {
    name: String,
    /// What the speaker's own packets decode to.
    reference: Vec<f32>,
    /// What the listener played.
    played: Vec<f32>,
    /// What the listener received, decoded in RTP time before its jitter buffer (no concealment).
    received_rtp_time: Vec<f32>,
    /// From the first sample entering the speaker's encoder to the listener's first playout tick.
    first_play_after: Duration,
    frames_sent: u64,
    frames_dtx: u64,
    /// The speaker's worst lateness against its 20 ms grid, and frames 5 ms late or more.
    sender_max_late: Duration,
    sender_frames_late_5ms: u64,
    packets_received: u64,
    /// Packets that reached the listener after one with a higher sequence number.
    packets_reordered: u64,
    /// The spread of arrival times against RTP times at the listener (`chorus_tests::voice::Ear::arrival_spread`).
    arrival_spread: Duration,
    /// The listener's jitter buffer at the end.
    listener_jitter: JitterStats,
    /// (forwarded, dropped) by the speaker's and the listener's proxies.
    proxies: Vec<(u64, u64)>,
}

/// One speaker plays `speech` to one listener in `room`, each behind its own proxy if `impairment` is
/// given (impairing once both are connected, as the virtual-time tests connect on a clean link).
async fn call(
    server: &Server,
    name: &str,
    room: &str,
    speech: Arc<[f32]>,
    impairment: Option<(Impairment, u64)>,
    red: u8,
) -> anyhow::Result<Recording> {
    let with_seed = |k: u64| impairment.clone().map(|(i, seed)| (i, seed * 2 + k));
    let mut speaker = join(server, room, "speaker", Mic::Speech, with_seed(0), red).await?;
    let mut listener = join(server, room, "listener", Mic::Off, with_seed(1), red).await?;
    for party in [&mut speaker, &mut listener] {
        party
            .client
            .wait_connected(CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.context(format!("{name}: {}", server.log_tail())))?;
    }
    let proxies: Vec<&Proxy> = speaker.proxy.iter().chain(&listener.proxy).collect();
    for p in &proxies {
        p.impair();
    }
    let expected_loss_percent = if impairment.is_some() { 5 } else { 0 };
    let seconds = speech.len() as f64 / f64::from(support::SPEECH_RATE);
    speaker.client.speak(speech, expected_loss_percent)?;
    speaker
        .client
        .wait_spoken(Duration::from_secs_f64(seconds + 5.0))
        .await
        .with_context(|| format!("{name}: speaking"))?;
    tokio::time::sleep(TAIL).await;
    let proxies = proxies.iter().map(|p| p.counts()).collect();
    let (reference, frames_sent, frames_dtx, sender_max_late, sender_frames_late_5ms, mouth) = {
        let spoken = speaker
            .client
            .spoken
            .lock()
            .expect("the spoken lock is never poisoned");
        (
            spoken.reference.clone(),
            spoken.frames_sent,
            spoken.frames_dtx,
            spoken.max_late,
            spoken.frames_late_5ms,
            spoken.started.context("the speaker encoded frames")?,
        )
    };
    let (
        played,
        received_rtp_time,
        ear_started,
        packets_received,
        packets_reordered,
        arrival_spread,
        listener_jitter,
    ) = {
        let heard = listener
            .client
            .heard
            .lock()
            .expect("the heard lock is never poisoned");
        let ear = heard.ear.as_ref().context("the listener plays slot 0")?;
        (
            ear.played.clone(),
            ear.rtp_time(),
            ear.started,
            ear.packets,
            ear.reordered,
            ear.arrival_spread(),
            ear.stats(),
        )
    };
    let ear_started =
        ear_started.with_context(|| format!("{name}: the listener received nothing"))?;
    speaker.client.stop().await?;
    listener.client.stop().await?;
    Ok(Recording {
        name: name.to_owned(),
        reference,
        played,
        received_rtp_time,
        first_play_after: ear_started.saturating_duration_since(mouth),
        frames_sent,
        frames_dtx,
        sender_max_late,
        sender_frames_late_5ms,
        packets_received,
        packets_reordered,
        arrival_spread,
        listener_jitter,
        proxies,
    })
}

/// The scores of a recording: against the speaker's decode, and (for information) against the passage and,
/// on a clean link, what the listener received in RTP time (the server's output before the listener's
/// jitter buffer: it tells a server-side delay change from a listener-side one).
struct Scored {
    pesq: Pesq,
    pesq_vs_speech: Pesq,
    pesq_received: Option<Pesq>,
}

fn score(r: &Recording, speech: &[f32], clean: bool) -> Scored {
    let pesq = support::pesq_wb(&r.name, &r.reference, &r.played);
    let pesq_vs_speech = support::pesq_wb(&format!("{}-vs-speech", r.name), speech, &r.played);
    let pesq_received = clean.then(|| {
        support::pesq_wb(
            &format!("{}-received", r.name),
            &r.reference,
            &r.received_rtp_time,
        )
    });
    let received = pesq_received
        .map(|p| format!("; as received (RTP time) {p}"))
        .unwrap_or_default();
    eprintln!(
        "{}: {pesq} vs the sender's decode, {pesq_vs_speech} vs the passage{received}; mouth-to-ear \
         {:.0} ms; {} frames sent, {} DTX (sender late by up to {:.1} ms, {} frames ≥ 5 ms); {} packets received ({} out of order), arrival spread {:.1} ms; proxies (forwarded, dropped) {:?}; \
         listener's jitter buffer {:?}",
        r.name,
        (r.first_play_after.as_secs_f64() * 1000.0) + pesq_vs_speech.delay_ms,
        r.frames_sent,
        r.frames_dtx,
        r.sender_max_late.as_secs_f64() * 1000.0,
        r.sender_frames_late_5ms,
        r.packets_received,
        r.packets_reordered,
        r.arrival_spread.as_secs_f64() * 1000.0,
        r.proxies,
        r.listener_jitter
    );
    Scored {
        pesq,
        pesq_vs_speech,
        pesq_received,
    }
}

/// A server with a forward room (created by the first join) and a mixed room (created by the admin API).
async fn server_with_rooms() -> anyhow::Result<Server> {
    let server = Server::start(&[]).await?;
    let mut room = json!({"name": "speech-mix", "mode": "mix"});
    // For measuring by hand (docs/loadtest.md) another floor of the mixer's jitter buffer (e.g. 10) or
    // another libopus complexity of the shared mix (e.g. 8).
    let mut mix = serde_json::Map::new();
    if let Ok(ms) = std::env::var("CHORUS_TEST_MIX_JITTER_MIN_MS") {
        let ms = ms.parse::<u32>().context("CHORUS_TEST_MIX_JITTER_MIN_MS")?;
        mix.insert("jitter_min_ms".into(), json!(ms));
    }
    if let Ok(c) = std::env::var("CHORUS_TEST_MIX_SHARED_COMPLEXITY") {
        let c = c
            .parse::<u8>()
            .context("CHORUS_TEST_MIX_SHARED_COMPLEXITY")?;
        mix.insert("shared_complexity".into(), json!(c));
    }
    if !mix.is_empty() {
        room["mix"] = mix.into();
    }
    server.create_room(&room).await?;
    Ok(server)
}

/// Forward and mix calls at once on one server, each with `impairment` (seeded apart) if given.
async fn forward_and_mix(
    tag: &str,
    impairment: Option<Impairment>,
    red: u8,
) -> anyhow::Result<(Scored, Scored)> {
    let _one_at_a_time = chorus_tests::cpu_heavy().await;
    let server = server_with_rooms().await?;
    let speech = support::passage_48k();
    let impairment_given = impairment.clone();
    let started = Instant::now();
    let (forward_name, mix_name) = (format!("e2e-forward-{tag}"), format!("e2e-mix-{tag}"));
    let (forward, mix) = tokio::join!(
        call(
            &server,
            &forward_name,
            "speech-forward",
            speech.clone(),
            impairment.clone().map(|i| (i, 1)),
            red,
        ),
        call(
            &server,
            &mix_name,
            "speech-mix",
            speech.clone(),
            impairment.map(|i| (i, 2)),
            red,
        ),
    );
    let (forward, mix) = (forward?, mix?);
    eprintln!(
        "{tag}: both calls took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // What the server saw: arrival jitter, its jitter buffers, missed mixer deadlines.
    let (_, metrics) = server.http_get("/metrics").await?;
    let seen: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .filter(|l| l.contains("jitter") || l.contains("mixer_ticks"))
        .collect();
    eprintln!("{tag}: server metrics:\n  {}", seen.join("\n  "));
    // PESQ runs a Python process: off the runtime's threads, both at once. Without loss the stream as
    // received (in RTP time, before the listener's jitter buffer) is scored too.
    let clean = impairment_given.as_ref().is_none_or(|i| i.loss == 0.0);
    let (forward, mix) = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let f = s.spawn(|| score(&forward, &speech, clean));
            let m = score(&mix, &speech, clean);
            (f.join().expect("scoring the forward call panicked"), m)
        })
    })
    .await?;
    Ok((forward, mix))
}

/// `what` scored below `floor`, described for a failure message.
fn below(what: &str, scored: &Scored, floor: f64) -> Option<String> {
    (scored.pesq.mos_lqo < floor).then(|| {
        let received = scored
            .pesq_received
            .map(|p| {
                format!(
                    "; as received, before the listener's jitter buffer, {:.2}",
                    p.mos_lqo
                )
            })
            .unwrap_or_default();
        format!(
            "{what} over real UDP scores PESQ-WB {:.2} < {floor} (vs the passage {:.2}{received})",
            scored.pesq.mos_lqo, scored.pesq_vs_speech.mos_lqo
        )
    })
}

// Clean loopback. This test first found that the mixer's input buffer moved its delay inside sentences under
// the ~1 ms of arrival jitter a real socket has (mix 3.2 to 3.7 here, while the virtual clean link had no
// jitter at all): forced packet drops and quiet-packet steering mid-sentence, now fixed. Measured after the
// fix: forward 4.64, mix 4.11 to 4.41.
//
// Forwarding is bit-exact, so what the server sends is held to the clean-stream score (as received, in RTP
// time: 4.64 in every run). What the listener plays also depends on the test machine. A CI run played
// 4.27: one concealment, a packet later than the listener's buffer allowed although the target was 20 ms
// and the arrivals spread less. Two causes, both fixed: the listener stamped arrivals when its task got
// round to reading them (now the kernel's receive time), and the jitter buffer steered the delay as of
// the span's start onto the target, which left the packet that starts late in a tick up to a tick less
// margin (now the margin is steered; media-core's jitter docs). With two busy loops beside this test on
// the 2-core VM, before: forward 3.88 to 4.64 (up to 3 concealments), mix 3.62 to 4.38; after: forward
// 4.64 and mix 4.38 in each of four runs. The floor for what the listener plays still allows one
// concealment from a scheduler stall on a shared machine (4.09 to 4.30 for one, on this passage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_real_udp_scores_forward_4_4_and_mix_3_9_on_a_clean_link() -> anyhow::Result<()>
{
    let _alone = chorus_tests::real_time_call().await;
    let (forward, mix) = forward_and_mix("clean", None, 0).await?;
    let forward_sent = forward
        .pesq_received
        .context("a clean link scores the stream as received")?;
    let failures: Vec<String> = [
        (forward_sent.mos_lqo < FORWARD_CLEAN_SENT_FLOOR).then(|| {
            format!(
                "the server's forwarded stream (as received, in RTP time) scores PESQ-WB {:.2} < \
                 {FORWARD_CLEAN_SENT_FLOOR}: forwarding damaged it",
                forward_sent.mos_lqo
            )
        }),
        below("forwarded speech", &forward, FORWARD_CLEAN_PLAYED_FLOOR),
        below("mixed speech", &mix, 3.9),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The forwarded stream as the listener received it on a clean link, before its jitter buffer.
const FORWARD_CLEAN_SENT_FLOOR: f64 = 4.4;

/// What the listener played of a forwarded stream on a clean link: one concealment allowed (see above).
const FORWARD_CLEAN_PLAYED_FLOOR: f64 = 4.2;

// 5 % loss and 10..50 ms on each leg, the speaker's FEC expecting 5 %: the target for mix, 3.0, is
// held in virtual time; the floors here allow for the real clock (see them below).
// History: over real UDP this listener first asked its buffer for every span as of the tick (not as of the
// span's start), which made it insert silence after every trim (mix 2.61/2.64); with that fixed and the mixer
// at 32 kb/s, mix 3.03 to 3.27 in four runs. With the mixer at 48 kb/s (the default since, see
// docs/architecture.md): mix 3.25, 3.64, 3.71 (virtual time, 3-seed mean: 3.43).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_real_udp_with_5_percent_loss_and_jitter_on_each_leg() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (forward, mix) = forward_and_mix("lossy", Some(lossy()), 0).await?;
    let failures: Vec<String> = [
        below("mixed speech at 5 % loss", &mix, MIX_LOSSY_FLOOR),
        below(
            "forwarded speech at 5 % loss",
            &forward,
            FORWARD_LOSSY_FLOOR,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Forwarding at 5 % loss per leg has no server jitter buffer: the listener's buffer conceals what both
/// legs lost (≈ 10 % of the speaker's packets), with the sender's FEC where the next packet arrived, and
/// the server adds nothing else (it forwards the packets bit-exact). Measured 2.58 and 2.72, later 2.56 to
/// 2.71 (before the listener's span-time fix 1.96 to 2.66; virtual time, one seed: 3.26). With the margin
/// steered (the listener adds silence after a quiet packet to the end of its tick, not by the 2.5 ms it
/// lacks as of the span's start): 2.12 to 2.63 in five runs.
///
/// Then 2.0, lowered to 1.7 on 2026-12-02 after 22 runs of this test alone on a quiet machine, the same
/// test binary against two servers (c3637db, and the worker's socket turns, identical on a calm worker):
/// 1.80 to 2.58, below 2.0 in 3 of 8 and 4 of 14 (earlier sessions: 1.81 to 2.64). The proxies are
/// seeded, so every run lost the same packets (465 received, 58 to 62 frames lost, 51 to 52 of them
/// recovered from FEC); what varies is how often the listener's jitter buffer steered its delay (12 to 20
/// frames inserted, 0 to 26 dropped, on 75 ms of arrival spread), and PESQ scores each time warp. The
/// server's part, forwarding bit-exact, is held by the clean test (4.4 as received); this floor catches a
/// listener or a path that breaks, not a tenth of a point.
///
/// 1.9 since 2026-12-03: the listener's delay target now forgets over ~10 s instead of ~3 s and silence is
/// added after a quiet packet only when the margin is more than 5 ms short (media-core's jitter docs), so
/// the listener steers far less (trims 10 a run on average before, about 1 after). Interleaved runs of
/// this test alone, the same build but for that: before 1.75 to 2.67 (mean 2.26, 18 runs), after 2.08 to
/// 2.61 (mean 2.51, 18 runs).
const FORWARD_LOSSY_FLOOR: f64 = 1.9;

/// Mixing at 5 % loss per leg. The target, 3.0, is held in virtual time (media-core's speech
/// tests, a 3-seed mean). Over real UDP 18 of the same runs as above scored 2.93 to 3.71 (two at or
/// below 3.00; earlier sessions 2.85 to 3.45): the server's and the listener's jitter buffers both run on the
/// machine's clock, so the floor here is 2.8 (3.0 until 2026-12-02).
const MIX_LOSSY_FLOOR: f64 = 2.8;

// The same condition with RED (RFC 2198, depth 1, as Chrome sends it) on every leg: the speaker sends each
// frame again in the next packet, the server passes RED through (forward) or recovers from it and sends its
// mix as RED, and the listener recovers from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_real_udp_with_red_at_5_percent_loss_and_jitter_on_each_leg(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (forward, mix) = forward_and_mix("lossy-red", Some(lossy()), 1).await?;
    let failures: Vec<String> = [
        below(
            "mixed speech with RED at 5 % loss",
            &mix,
            MIX_RED_LOSSY_FLOOR,
        ),
        below(
            "forwarded speech with RED at 5 % loss",
            &forward,
            FORWARD_RED_LOSSY_FLOOR,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Mixing with RED at 5 % loss per leg: the target. Measured with the mixer at 48 kb/s: 3.96, 3.96,
/// 4.11 (at 32 kb/s 3.59 to 4.15 in eight runs; virtual time, 3-seed mean at 48 kb/s: 4.20).
const MIX_RED_LOSSY_FLOOR: f64 = 3.5;

/// Forwarding with RED at 5 % loss per leg: measured 4.45 and 4.09, later 4.35 to 4.45 (the listener recovers
/// 54 of 62 lost frames from RED and the rest from FEC), and 3.55 on a machine loaded by other builds (the
/// speaker's frames up to 67 ms late).
const FORWARD_RED_LOSSY_FLOOR: f64 = 3.3;

// Bursty loss (see `bursty`) with RED depth 2 from the speaker, as the native SDK sends it
// (`Config::red_depth`): a run of up to two lost packets is bridged by the next one. Forwarded, the
// listener recovers from the speaker's RED itself; mixed, the server recovers the speaker's leg and sends
// its mix with two frames back to this listener, which states its loss (`mixer::RED_TWO_BACK_LOSS_PERCENT`).
// Neither the independent-loss tests above nor virtual time run this path on real sockets and clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_real_udp_with_bursty_loss_and_two_frames_of_red() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (forward, mix) = forward_and_mix("bursty-red2", Some(bursty()), 2).await?;
    let failures: Vec<String> = [
        below(
            "mixed speech with RED depth 2 through bursty loss",
            &mix,
            MIX_BURSTY_RED2_FLOOR,
        ),
        below(
            "forwarded speech with RED depth 2 through bursty loss",
            &forward,
            FORWARD_BURSTY_RED2_FLOOR,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        failures.is_empty(),
        "{}",
        failures.join(
            "
"
        )
    );
    Ok(())
}

/// Mixed, bursty loss, RED depth 2: 3.26 to 3.33 in nine runs when this test was written (the proxies are
/// seeded, so each run loses the same packets: 29 of the speaker's, 17 of the mix to the listener, 8 of
/// those recovered from RED). Virtual time, other seeds: 3.76 for one, a 3-seed mean of 3.85. The floor
/// allows for the machine's clock, as the independent-loss floors do.
const MIX_BURSTY_RED2_FLOOR: f64 = 3.0;

/// Forwarded, bursty loss, RED depth 2: 2.44 to 2.57 in the same nine runs. Both legs' losses reach the
/// listener (72 of 529 frames on this seed); RED depth 2 bridges at most the last two of a run, so it
/// recovered 31 and FEC 6, and 30 were concealed (virtual time, one other seed: 3.82; at depth 1 the
/// 3-seed spread was 2.51 to 4.17). The listener's steering varies between runs as in the
/// independent-loss test, hence the margin.
const FORWARD_BURSTY_RED2_FLOOR: f64 = 2.1;

// Stalls on a calm link (see `stalling`): too rare for a jitter buffer's 95th percentile, each delays a
// packet or two beyond a target sized for the calm link. The server's mixer and the listener cover the
// delay peaks of the last 20 s (media-core's jitter docs, "Delay peaks"), which let the mixer's floor come
// down from 20 to 10 ms. Over real UDP this test's own sender is late by up to 3–10 ms, so the server's
// target is 20–30 ms whatever the floor and absorbs much of a 30 ms stall: interleaved runs against the
// server before peaks (d711804, 20 ms floor) and after (10 ms floor, peaks) scored alike, the server's mix
// as received 4.41, 4.41, 4.16 for both (with 60 ms stalls 3.98–4.21 and 3.94–4.16 in 4 runs each). What
// separates the two is media-core's `mixed_speech_survives_delay_stalls_on_a_calm_link`, whose sender
// keeps time exactly; this one holds the real server and the listener to it under a real stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_real_udp_with_delay_stalls_on_a_calm_link() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (forward, mix) = forward_and_mix("stalls", Some(stalling()), 0).await?;
    let mix_sent = mix
        .pesq_received
        .context("a link without loss scores the mix as received")?;
    let failures: Vec<String> = [
        (mix_sent.mos_lqo < MIX_STALLS_SENT_FLOOR).then(|| {
            format!(
                "the server's mix (as received, in RTP time) with 30 ms stalls scores PESQ-WB {:.2} < \
                 {MIX_STALLS_SENT_FLOOR}: its jitter buffer concealed the stalls",
                mix_sent.mos_lqo
            )
        }),
        below("mixed speech with 30 ms stalls", &mix, MIX_STALLS_FLOOR),
        below(
            "forwarded speech with 30 ms stalls",
            &forward,
            FORWARD_STALLS_FLOOR,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The server's mix as the listener received it (in RTP time: the server's jitter buffer, not the
/// listener's), with stalls on both legs. 4.0 until 2026-12-06, when it failed 3 runs of 20 at 3.89 and
/// 3.94 (earlier sessions 4.16 to 4.41): not the server but the recording, which kept only the packets that
/// came in order, and a stall's burst came out of order now and then (a held datagram's task racing the
/// next one's; the forwarded stream's burst, re-jittered on the second leg, still does: 0 to 5 packets a
/// run). With every packet kept (`chorus_tests::voice::Ear::rtp_time`), 16 runs of 16 scored what the
/// listener played: 4.44 to 4.45 with the shared mix at libopus complexity 5, 4.53 at 8.
const MIX_STALLS_SENT_FLOOR: f64 = 4.2;
/// What the listener played of the mix: 4.37 to 4.41 in those runs.
const MIX_STALLS_FLOOR: f64 = 3.9;
/// What the listener played of the forwarded stream (only its own jitter buffer): 4.64 in those runs.
const FORWARD_STALLS_FLOOR: f64 = 4.2;
