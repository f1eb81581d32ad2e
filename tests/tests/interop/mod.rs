//! A client we did not write: aiortc (PyPI, in the repository's `.venv`; scripts/test.sh installs it),
//! driven by tests/interop/aiortc_client.py, which follows docs/protocol.md alone.
//!
//! - In a forwarding room with a Rust [`AudioClient`], each sends its own tone, and each must hear the
//!   other's: aiortc's tone decoded by the Rust client, the Rust client's tone on one of aiortc's slot
//!   tracks.
//! - In a forwarding room of one slot, aiortc sends its tone without RFC 6464 levels (as WHIP encoders
//!   do) beside a quieter Rust talker that sends them: a Rust listener's slot carries aiortc, the louder.
//! - In a mixed room, both speak the espeak-ng passage at once and each hears the other's through its
//!   mix-minus: aiortc's encoder (ffmpeg's libopus, stereo, 96 kb/s, no DTX) into the server's jitter
//!   buffer and mix, and the server's mix encode (DTX pauses included) into aiortc's jitter buffer and
//!   decoder. Both recordings are scored with PESQ-WB.
//! - In a mixed room, aiortc speaks the passage through the test's impairment proxy (5 % loss, 10–50 ms
//!   of jitter): the server's jitter buffer and concealment with a stream that has no FEC, scored as our
//!   client hears it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_tests::proxy::{Impairment, Proxy};
use chorus_tests::{AudioClient, MediaOptions, Mic, Server, Signal, SAMPLE_RATE};
use media_core::audio;
use serde_json::{json, Value};

use super::speech::support;
use super::{join, SECONDS};

/// What the Rust client sends.
const RUST_TONE_HZ: f32 = 440.0;
/// What aiortc sends.
const AIORTC_TONE_HZ: f32 = 660.0;
/// How far from the tone the strongest frequency aiortc measures may be (its FFT resolves 0.5 Hz).
const PEAK_TOLERANCE_HZ: f64 = 10.0;
/// The least level of the tone aiortc hears: sent at amplitude 0.3 (RMS ≈ 0.21), Opus keeps most of it.
const MIN_HEARD_RMS: f64 = 0.05;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> anyhow::Result<PathBuf> {
    let path = std::env::var("CHORUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".venv/bin/python"));
    anyhow::ensure!(
        path.is_file(),
        "{} not found: scripts/test.sh creates the .venv and installs aiortc into it",
        path.display()
    );
    Ok(path)
}

/// Runs tests/interop/aiortc_client.py into `room` with `args` to completion: its JSON report and its
/// stderr.
async fn aiortc(server: &Server, room: &str, args: &[&str]) -> anyhow::Result<(Value, String)> {
    let token = server.token(room, "aiortc", &[])?;
    let out = tokio::process::Command::new(python()?)
        .arg(root().join("tests/interop/aiortc_client.py"))
        .args(["--ws", &server.ws_url(), "--token", &token, "--room", room])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running tests/interop/aiortc_client.py")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "aiortc_client.py failed ({}): {stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("aiortc_client.py printed no JSON: {stderr}"))?;
    Ok((report, stderr))
}

/// [`aiortc`] in a forwarding room, which must connect: its report, and a description of the run (the
/// report, aiortc's stderr, the server's log) for assertion messages.
async fn aiortc_connected(
    server: &Server,
    room: &str,
    args: &[&str],
) -> anyhow::Result<(Value, String)> {
    let (report, stderr) = aiortc(server, room, args).await?;
    let context = format!(
        "aiortc reported {report:#}\n--- its stderr:\n{stderr}\n--- server log:\n{}",
        server.log_tail()
    );
    anyhow::ensure!(
        report["connected"] == true,
        "aiortc did not connect: {context}"
    );
    Ok((report, context))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_connects_from_the_protocol_document_and_hears_and_is_heard() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let mut rust = join(&server, "interop", "rust", RUST_TONE_HZ, 0.3).await?;
    rust.client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;

    let (report, context) = aiortc_connected(
        &server,
        "interop",
        &["--freq", &AIORTC_TONE_HZ.to_string(), "--seconds", "4"],
    )
    .await?;
    let context = || context.as_str();

    assert!(
        report["sent_frames"].as_u64().unwrap_or(0) > 100,
        "aiortc sent too little: {}",
        context()
    );
    // The Rust client's tone on one of aiortc's slots.
    let tracks = report["tracks"].as_array().cloned().unwrap_or_default();
    let heard = tracks.iter().find(|t| {
        let peak = t["peak_hz"].as_f64().unwrap_or(0.0);
        (peak - f64::from(RUST_TONE_HZ)).abs() < PEAK_TOLERANCE_HZ
            && t["rms"].as_f64().unwrap_or(0.0) > MIN_HEARD_RMS
            && t["samples"].as_u64().unwrap_or(0) > u64::from(SAMPLE_RATE)
    });
    assert!(
        heard.is_some(),
        "aiortc does not hear the {RUST_TONE_HZ} Hz tone: {}",
        context()
    );

    // aiortc's tone, heard by the Rust client (the only other speaker: one CSRC).
    let heard = rust.client.heard.clone();
    rust.client.stop().await?;
    let heard = heard.lock().expect("no panic while holding the heard lock");
    assert_eq!(heard.pcm_by_csrc.len(), 1, "{}", context());
    let pcm = heard
        .pcm_by_csrc
        .values()
        .next()
        .expect("exactly one speaker heard (asserted above)");
    assert!(
        pcm.len() > SAMPLE_RATE as usize,
        "the Rust client heard only {} samples of aiortc: {}",
        pcm.len(),
        context()
    );
    let tail = &pcm[pcm.len() / 2..];
    let analysis = audio::ToneAnalysis::analyze(tail, SAMPLE_RATE, &[RUST_TONE_HZ, AIORTC_TONE_HZ]);
    assert_eq!(
        analysis.present_default(),
        vec![AIORTC_TONE_HZ],
        "the Rust client hears aiortc as {analysis:?}"
    );
    assert!(
        analysis.relative(AIORTC_TONE_HZ) > 0.5,
        "the Rust client hears aiortc weakly: {analysis:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_without_audio_levels_wins_a_slot_by_its_measured_level() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    server
        .create_room(&json!({"name": "levels", "mode": "forward", "slots": 1}))
        .await?;
    // A quiet talker that sends levels, and a listener with one slot.
    let mut quiet = join(&server, "levels", "quiet", RUST_TONE_HZ, 0.03).await?;
    let mut listener = join(&server, "levels", "listener", 0.0, 0.0).await?;
    for p in [&mut quiet, &mut listener] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let (report, context) = aiortc_connected(
        &server,
        "levels",
        &[
            "--freq",
            &AIORTC_TONE_HZ.to_string(),
            "--seconds",
            "4",
            "--no-audio-level",
        ],
    )
    .await?;
    let context = || context.as_str();
    let answer = report["answer"].as_str().unwrap_or_default();
    assert!(
        !answer.contains("ssrc-audio-level"),
        "the answer lists the level extension aiortc did not offer: {}",
        context()
    );
    // aiortc's packets, and only those, were decoded for their level (4 s of 20-ms frames).
    let measured = server.metric("chorus_rtp_levels_measured_total").await?;
    assert!(
        (150.0..=260.0).contains(&measured),
        "{measured} levels measured: {}",
        context()
    );
    // While aiortc talked, the listener's one slot carried it, not the quiet talker; the slot may
    // have carried the quiet talker before aiortc came.
    let heard = listener.client.heard.clone();
    listener.client.stop().await?;
    let heard = heard.lock().expect("no panic while holding the heard lock");
    let louder = heard
        .pcm_by_csrc
        .values()
        .max_by_key(|pcm| pcm.len())
        .context("the listener heard nothing")?;
    assert!(
        louder.len() > SAMPLE_RATE as usize * 2,
        "the listener heard {} samples of its most heard talker: {}",
        louder.len(),
        context()
    );
    let analysis = audio::ToneAnalysis::analyze(
        &louder[louder.len() / 4..],
        SAMPLE_RATE,
        &[RUST_TONE_HZ, AIORTC_TONE_HZ],
    );
    assert_eq!(
        analysis.present_default(),
        vec![AIORTC_TONE_HZ],
        "the listener's slot carried {analysis:?}: {}",
        context()
    );
    Ok(())
}

/// Our client in `room`, connected, playing slot 0 in real time (the mix, in a mixed room); its signaling
/// session is kept open by the caller (closing it leaves).
async fn our_client(
    server: &Server,
    room: &str,
    mic: Mic,
) -> anyhow::Result<(Signal, AudioClient)> {
    let token = server.token(room, "rust", &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"]
        .as_u64()
        .context("joined.room.slots is a number")? as usize;
    let mut client = AudioClient::start_with(
        &mut signal,
        MediaOptions {
            slots,
            mic,
            via: None,
            play_slot: Some(0),
            red: 0,
        },
    )
    .await?;
    client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    Ok((signal, client))
}

/// A server with the mixed room `room`, the espeak-ng passage, and the passage as a WAV file in the
/// scratch directory (what aiortc sends).
async fn mixed_room_and_passage(room: &str) -> anyhow::Result<(Server, Arc<[f32]>, PathBuf)> {
    let server = Server::start(&[]).await?;
    server
        .create_room(&json!({"name": room, "mode": "mix"}))
        .await?;
    let speech = support::passage_48k();
    let passage = support::scratch_dir().join(format!("{room}-passage.wav"));
    support::write_wav(&passage, &speech);
    Ok((server, speech, passage))
}

/// Wait (up to 2 s) until `client` receives anything on the slot it plays: aiortc's voice has come.
async fn hears_anything(server: &Server, client: &AudioClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + SECONDS * 2;
    loop {
        let hearing = client
            .heard
            .lock()
            .expect("the heard lock is never poisoned")
            .ear
            .as_ref()
            .is_some_and(|e| e.packets > 0);
        if hearing {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "aiortc's voice did not reach our client: {}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `client` played of its slot so far.
fn played(client: &AudioClient) -> anyhow::Result<Vec<f32>> {
    Ok(client
        .heard
        .lock()
        .expect("the heard lock is never poisoned")
        .ear
        .as_ref()
        .context("our client plays slot 0")?
        .played
        .clone())
}

/// Least PESQ-WB of aiortc's passage as our client plays it, against the passage itself (aiortc's own
/// encode is not known here): measured 3.91–3.94 in four runs. Two codec passes (aiortc's 96 kb/s
/// stereo, the mix's 32 kb/s mono) and our client's jitter buffer.
const AIORTC_TO_OURS_FLOOR: f64 = 3.5;

/// Least PESQ-WB of our passage as aiortc heard it, against what our encoder sent: measured 4.41–4.42 in
/// three runs; the floor of our own clients' clean mixed call (tests/tests/speech).
const OURS_TO_AIORTC_FLOOR: f64 = 3.9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_aiortc_and_our_client_speak_at_once_through_a_mixed_room() -> anyhow::Result<()> {
    let _one_at_a_time = chorus_tests::real_time_call().await;
    let _cpu = chorus_tests::cpu_heavy().await;
    let room = "interop-mix";
    let (server, speech, passage) = mixed_room_and_passage(room).await?;
    let recorded = support::scratch_dir().join("interop-mix-aiortc-heard.wav");
    let seconds = speech.len() as f64 / f64::from(SAMPLE_RATE);

    // Our client speaks like a browser (libopus VOIP, DTX, FEC) and plays what it hears in real time.
    let (_signal, rust) = our_client(&server, room, Mic::Speech).await?;

    // aiortc speaks the passage from its first frame on, and records until some seconds after it ends;
    // ours starts as soon as aiortc's voice reaches it.
    let record_s = format!("{:.1}", seconds + 4.0);
    let aiortc_args = [
        "--wav",
        passage.to_str().context("a UTF-8 scratch path")?,
        "--record-wav",
        recorded.to_str().context("a UTF-8 scratch path")?,
        "--seconds",
        &record_s,
    ];
    let aiortc_run = aiortc(&server, room, &aiortc_args);
    let ours = async {
        hears_anything(&server, &rust).await?;
        rust.speak(speech.clone(), 0)?;
        rust.wait_spoken(Duration::from_secs_f64(seconds + 5.0))
            .await
    };
    let (report, spoken) = tokio::join!(aiortc_run, ours);
    let (report, stderr) = report?;
    spoken?;
    let context = || format!("aiortc reported {report:#}\n--- its stderr:\n{stderr}");
    anyhow::ensure!(
        report["connected"] == true,
        "aiortc did not connect: {}",
        context()
    );
    anyhow::ensure!(
        report["recorded"].is_string(),
        "aiortc recorded no track: {}",
        context()
    );
    let reference = rust
        .spoken
        .lock()
        .expect("the spoken lock is never poisoned")
        .reference
        .clone();
    let played = played(&rust)?;
    rust.stop().await?;
    let heard_by_aiortc = crate::ffmpeg_pcm(&recorded, None).await?;

    // PESQ runs a Python process: off the runtime's threads.
    let (by_ours, by_aiortc) = tokio::task::spawn_blocking(move || {
        (
            // aiortc's passage as our client heard it (aiortc's encoder, the server's mix).
            support::pesq_wb("interop-mix-ours-heard", &speech, &played),
            // Our passage as aiortc heard it, against what our encoder sent (the server's mix encode,
            // aiortc's jitter buffer and decoder).
            support::pesq_wb("interop-mix-aiortc-heard", &reference, &heard_by_aiortc),
        )
    })
    .await?;
    eprintln!(
        "mixed room: aiortc's passage heard by our client {by_ours}; ours heard by aiortc {by_aiortc}"
    );
    assert!(
        by_ours.mos_lqo >= AIORTC_TO_OURS_FLOOR,
        "our client heard aiortc's passage at {by_ours}: {}",
        context()
    );
    assert!(
        by_aiortc.mos_lqo >= OURS_TO_AIORTC_FLOOR,
        "aiortc heard our passage at {by_aiortc}: {}",
        context()
    );
    Ok(())
}

/// Least PESQ-WB of aiortc's passage through 5 % loss and 10–50 ms of jitter on its link, as our client
/// (on a clean one) plays the mix, against the passage. aiortc codes no FEC and sends no RED, so every lost
/// frame is concealed (Opus PLC): measured 1.87–1.95 in four runs; our own client through the same link scored
/// 2.13 without FEC and 3.06 with FEC for 5 %. A jitter buffer that dropped the reordered packets (about
/// a third of them at this jitter) would score far lower.
const AIORTC_LOSSY_FLOOR: f64 = 1.6;

/// A client we did not write on a bad link: aiortc speaks the passage into a mixed room through the test's
/// impairment proxy (5 % loss, 10–50 ms one way, so reordered), and our client hears it in the mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_aiortc_speaks_through_loss_and_jitter_into_a_mixed_room() -> anyhow::Result<()> {
    let _one_at_a_time = chorus_tests::real_time_call().await;
    let _cpu = chorus_tests::cpu_heavy().await;
    let room = "interop-mix-lossy";
    let (server, speech, passage) = mixed_room_and_passage(room).await?;
    let seconds = speech.len() as f64 / f64::from(SAMPLE_RATE);
    let impairment = Impairment {
        loss: 0.05,
        delay_ms: 10.0..50.0,
        ..Impairment::default()
    };
    let proxy = Proxy::start(server.media, impairment, 7).await?;
    let (_signal, ours) = our_client(&server, room, Mic::Off).await?;

    let via = proxy.addr.to_string();
    let record_s = format!("{:.1}", seconds + 2.0);
    let aiortc_args = [
        "--wav",
        passage.to_str().context("a UTF-8 scratch path")?,
        "--via",
        &via,
        "--seconds",
        &record_s,
    ];
    let aiortc_run = aiortc(&server, room, &aiortc_args);
    let impair = async {
        // As in the other real-time calls, the link turns bad once the call is up.
        hears_anything(&server, &ours).await?;
        proxy.impair();
        anyhow::Ok(())
    };
    let (report, impaired) = tokio::join!(aiortc_run, impair);
    let (report, stderr) = report?;
    impaired?;
    let (forwarded, dropped) = proxy.counts();
    // What the server's jitter buffer made of it: the reordered packets all in time, only what the link
    // lost concealed.
    let late = server
        .metric("chorus_jitter_buffer_discarded_packets_total{reason=\"late\"}")
        .await?;
    let decoded = server.metric("chorus_mixer_frames_decoded_total").await?;
    let concealed = server
        .metric("chorus_jitter_buffer_concealed_frames_total{method=\"plc\"}")
        .await?;
    let played = played(&ours)?;
    ours.stop().await?;
    anyhow::ensure!(
        report["connected"] == true,
        "aiortc did not connect: {report:#}\n{stderr}"
    );
    let scored = tokio::task::spawn_blocking(move || {
        support::pesq_wb("interop-mix-lossy-ours-heard", &speech, &played)
    })
    .await?;
    eprintln!(
        "aiortc through 5 % loss and 10–50 ms: our client heard its passage at {scored}; the proxy \
         forwarded {forwarded} and dropped {dropped} datagrams; the server decoded {decoded} frames, \
         concealed {concealed}, discarded {late} late"
    );
    assert!(dropped > 20, "the proxy dropped only {dropped} datagrams");
    assert!(
        decoded > 300.0,
        "the server decoded only {decoded} of aiortc's frames"
    );
    assert!(
        late <= decoded * 0.02,
        "the server's jitter buffer discarded {late} of aiortc's packets as late ({decoded} decoded)"
    );
    assert!(
        concealed <= dropped as f64,
        "{concealed} frames concealed, more than the {dropped} datagrams the link lost"
    );
    assert!(
        scored.mos_lqo >= AIORTC_LOSSY_FLOOR,
        "our client heard aiortc's passage through loss at {scored}"
    );
    Ok(())
}
