//! End-to-end: the real `chorus` binary on loopback (`chorus_tests::Server`), SDK clients over real UDP,
//! and `chorus_tests::AudioClient`s (str0m peers encoding like a browser) in the same room.
//!
//! `rust`: the Rust API. `c`: the C example (`examples/c/tone.c`) built with the system C compiler against
//! the static library and the header. `header`: the checked-in header is what cbindgen generates.

mod c;
mod header;
mod rust;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, ConnectionState, Event, Speaker};
use chorus_tests::{AudioClient, Server, Signal, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;

/// The tones the participants send (far apart, clean through Opus).
pub const TONES: [f32; 3] = [440.0, 660.0, 880.0];
pub const SECONDS: Duration = Duration::from_secs(5);

/// A `chorus_tests::AudioClient` in `room` sending a tone, and its participant id.
pub async fn audio_client(
    server: &Server,
    room: &str,
    identity: &str,
    freq_hz: f32,
) -> anyhow::Result<(Signal, AudioClient, String)> {
    let token = server.token(room, identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let slots = joined["room"]["slots"]
        .as_u64()
        .expect("joined.room.slots is a number") as usize;
    let sid = joined["participant"]["sid"]
        .as_str()
        .expect("joined.participant.sid is a string")
        .to_owned();
    let client = AudioClient::start(&mut signal, slots, freq_hz, 0.3).await?;
    Ok((signal, client, sid))
}

/// The tones of `TONES` present in the second half of `pcm` (past the jitter buffer's and decoder's
/// start-up), with the analysis for messages.
pub fn tones_in(pcm: &[f32], sample_rate: u32) -> (Vec<f32>, ToneAnalysis) {
    let analysis = ToneAnalysis::analyze(&pcm[pcm.len() / 2..], sample_rate, &TONES);
    (analysis.present_default(), analysis)
}

/// Wait (on a blocking thread) until `pick` takes an event of `client`, keeping every event seen in `seen`.
pub fn wait_event<T>(
    client: &Client,
    seen: &mut Vec<Event>,
    timeout: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = client.wait_event(left) else {
            anyhow::bail!("no awaited event within {timeout:?}; saw {seen:#?}");
        };
        let picked = pick(&event);
        seen.push(event);
        if let Some(picked) = picked {
            return Ok(picked);
        }
    }
}

/// Wait until `client`'s media is connected; its own sid (from `Joined`).
pub fn wait_connected(client: &Client, seen: &mut Vec<Event>) -> anyhow::Result<String> {
    let sid = wait_event(client, seen, SECONDS, |e| match e {
        Event::Joined { sid, .. } => Some(sid.clone()),
        _ => None,
    })?;
    wait_event(client, seen, SECONDS, |e| {
        (*e == Event::ConnectionState(ConnectionState::Connected)).then_some(())
    })?;
    Ok(sid)
}

/// A game's playback callback that keeps, every 10 ms, when it pulled and how loud the mix was (RMS).
pub fn loudness(mut speaker: Speaker, stop: Arc<AtomicBool>) -> (Vec<(Instant, f32)>, Vec<f32>) {
    let rate = SAMPLE_RATE as usize;
    let (mut levels, mut pcm) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut done = 0usize;
    let mut buf = vec![0.0f32; rate];
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
        let n = (due - done).min(rate);
        speaker
            .pull_mixed(&mut buf[..n])
            .expect("mixed output is on");
        let rms = (buf[..n].iter().map(|s| s * s).sum::<f32>() / n.max(1) as f32).sqrt();
        levels.push((Instant::now(), rms));
        pcm.extend_from_slice(&buf[..n]);
        done += n;
        std::thread::sleep(Duration::from_millis(10));
    }
    (levels, pcm)
}

/// How long `levels` was loud (the 0.3 tone is ≈ 0.2 RMS), and when that started and ended.
pub fn loud_span(levels: &[(Instant, f32)]) -> (f64, Option<(Instant, Instant)>) {
    let mut secs = 0.0;
    for w in levels.windows(2) {
        if w[1].1 > 0.05 {
            secs += (w[1].0 - w[0].0).as_secs_f64();
        }
    }
    let mut loud = levels
        .iter()
        .filter(|(_, rms)| *rms > 0.05)
        .map(|(t, _)| *t);
    let first = loud.next();
    (secs, first.map(|f| (f, loud.next_back().unwrap_or(f))))
}
