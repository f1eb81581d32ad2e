//! Stereo output through the real binary: a game listening with `output_channels = 2` hears a talker on
//! the side it stands, at the balance Chorus' equal-power pan law gives, in a spatial mixed room (the
//! server's stereo mix) and in a spatial forwarding room (the SDK pans the talker's mono stream by the
//! `positions` it receives); the talker walks to the other side and the balance flips.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_native::{Client, Config, Position, Speaker};
use chorus_tests::Server;
use media_core::spatial::equal_power_gains;
use serde_json::json;

use super::capture;
use crate::{tones_in, wait_connected};

const RATE: u32 = 48_000;
/// The talker stands ahead and to one side of the listener (at the origin, facing +y: `x` is right).
const RIGHT: (f64, f64) = (10.0, 10.0);
const LEFT: (f64, f64) = (-10.0, 10.0);
/// How far the measured balance may be from the pan law's (measured: 0.0 dB forwarded, 0.3 dB mixed: the
/// shared mix quantises the pan to 1/32, CELT stereo codes each band's balance; a side swapped is ~25 dB
/// off; pan 0.71: 12.6 dB).
const TOLERANCE_DB: f64 = 2.0;

/// The pulls of a game's playback callback, one buffer per phase (`phase`: which one it appends to).
fn stereo_playback(
    mut speaker: Speaker,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Vec<f32>> {
    let mut phases: Vec<Vec<f32>> = vec![Vec::new(); 3];
    let start = std::time::Instant::now();
    let mut done = 0usize;
    // 10 ms of L/R sample frames at most per pull.
    let mut buf = vec![0.0f32; RATE as usize / 100 * 2];
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(RATE)) as usize;
        let frames = (due - done).min(buf.len() / 2);
        let got = speaker
            .pull_mixed(&mut buf[..frames * 2])
            .expect("mixed output is on and the buffer holds whole L/R frames");
        let p = phase.load(Ordering::Relaxed).min(2);
        phases[p].extend_from_slice(&buf[..got]);
        done += frames;
        std::thread::sleep(Duration::from_millis(10));
    }
    phases
}

/// Right over left energy (dB) of the second half of an interleaved stereo recording, and the left and
/// right channels.
fn balance_db(stereo: &[f32]) -> (f64, Vec<f32>, Vec<f32>) {
    let tail = &stereo[stereo.len() / 4 * 2..];
    let (left, right): (Vec<f32>, Vec<f32>) = tail.chunks_exact(2).map(|f| (f[0], f[1])).unzip();
    let energy = |c: &[f32]| {
        c.iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>()
            .max(1e-12)
    };
    let db = 10.0 * (energy(&right) / energy(&left)).log10();
    (db, left, right)
}

/// The balance (right over left, dB) the pan law gives a talker at `talker` for a listener at the origin
/// facing +y.
fn law_db(talker: (f64, f64)) -> f64 {
    let listener = Position::new(0.0, 0.0, 0.0, 0.0).expect("valid");
    let at = Position::new(talker.0, talker.1, 0.0, 0.0).expect("valid");
    let (l, r) = equal_power_gains(1.0, listener.pan_towards(&at));
    20.0 * f64::from(r / l).log10()
}

/// A spatial room in `mode`; a talker (440 Hz) to the listener's right, then to its left. The listener
/// pulls stereo; the balance follows the talker.
async fn the_talker_is_heard_on_its_side(mode: &str) -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = format!("stereo-{mode}");
    let slots = if mode == "mix" { 1 } else { 2 };
    let body = json!({"name": room, "mode": mode, "slots": slots,
        "spatial": {"audible_distance": 50, "conversational_distance": 1, "fade_model": "none"}});
    server.create_room(&body).await?;
    let url = server.ws_url();
    let mut listener = Client::new(Config {
        output_channels: 2,
        ..Config::default()
    })?;
    let mut talker = Client::new(Config::default())?;
    listener.set_position(0.0, 0.0, 0.0, 0.0)?;
    talker.set_position(RIGHT.0, RIGHT.1, 0.0, 0.0)?;
    listener.connect(&url, &server.token(&room, "listener", &[])?, None)?;
    talker.connect(&url, &server.token(&room, "talker", &[])?, None)?;
    let (mut listener, mut talker) = tokio::task::spawn_blocking(move || {
        wait_connected(&listener, &mut Vec::new())?;
        wait_connected(&talker, &mut Vec::new())?;
        anyhow::Ok((listener, talker))
    })
    .await??;

    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let mic = talker.take_microphone().expect("a new client's microphone");
    let speaker = listener.take_speaker().expect("a new client's speaker");
    let capture_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || capture(mic, RATE, 440.0, stop))
    };
    let playback_thread = {
        let (phase, stop) = (phase.clone(), stop.clone());
        std::thread::spawn(move || stereo_playback(speaker, phase, stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The talker walks to the left; the move reaches the server within ~120 ms, its refresh within 100.
    talker.set_position(LEFT.0, LEFT.1, 0.0, 0.0)?;
    phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    capture_thread
        .join()
        .expect("the capture thread does not panic");
    let phases = playback_thread
        .join()
        .expect("the playback thread does not panic");

    for (recording, talker_at) in [(&phases[0], RIGHT), (&phases[2], LEFT)] {
        let (db, left, right) = balance_db(recording);
        let expected = law_db(talker_at);
        assert!(
            (db - expected).abs() <= TOLERANCE_DB,
            "{mode}: talker at {talker_at:?}: right over left {db:.1} dB, the pan law gives {expected:.1} dB"
        );
        // The louder side carries the talker's tone.
        let (louder, _) = if db > 0.0 {
            (&right, &left)
        } else {
            (&left, &right)
        };
        let (tones, analysis) = tones_in(louder, RATE);
        assert_eq!(tones, vec![440.0], "{mode}: {analysis:?}");
    }
    assert!(law_db(RIGHT) > 6.0, "the positions are clearly to one side");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spatial_mixed_rooms_stereo_mix_puts_the_talker_on_its_side() -> anyhow::Result<()> {
    the_talker_is_heard_on_its_side("mix").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_pans_a_forwarded_talker_to_its_side() -> anyhow::Result<()> {
    the_talker_is_heard_on_its_side("forward").await
}
