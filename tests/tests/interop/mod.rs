//! A client we did not write: aiortc (PyPI, in the repository's `.venv`; scripts/test.sh installs it),
//! driven by tests/interop/aiortc_client.py, which follows docs/protocol.md alone. It joins a forwarding
//! room with a Rust [`AudioClient`]; each sends its own tone, and each must hear the other's: aiortc's
//! tone decoded by the Rust client, the Rust client's tone on one of aiortc's slot tracks.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use chorus_tests::SAMPLE_RATE;
use media_core::audio;
use serde_json::Value;

use chorus_tests::Server;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_connects_from_the_protocol_document_and_hears_and_is_heard() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let mut rust = join(&server, "interop", "rust", RUST_TONE_HZ, 0.3).await?;
    rust.client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;

    let token = server.token("interop", "aiortc", &[])?;
    let out = tokio::process::Command::new(python()?)
        .arg(root().join("tests/interop/aiortc_client.py"))
        .args([
            "--ws",
            &server.ws_url(),
            "--token",
            &token,
            "--room",
            "interop",
        ])
        .args(["--freq", &AIORTC_TONE_HZ.to_string(), "--seconds", "4"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running tests/interop/aiortc_client.py")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "aiortc_client.py failed ({}): {stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("aiortc_client.py printed no JSON: {stderr}"))?;
    let context = || {
        format!(
            "aiortc reported {report:#}\n--- its stderr:\n{stderr}\n--- server log:\n{}",
            server.log_tail()
        )
    };

    assert_eq!(
        report["connected"],
        true,
        "aiortc did not connect: {}",
        context()
    );
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
