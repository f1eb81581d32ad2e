//! End-to-end: the real `chorus` binary on loopback (`chorus_tests::Server`), SDK clients over real UDP,
//! and `chorus_tests::AudioClient`s (str0m peers encoding like a browser) in the same room.
//!
//! `rust`: the Rust API. `c`: the C example (`examples/c/tone.c`) built with the system C compiler against
//! the static library and the header. `header`: the checked-in header is what cbindgen generates.

mod c;
mod header;
mod rust;

use std::time::{Duration, Instant};

use chorus_native::{Client, ConnectionState, Event};
use chorus_tests::{AudioClient, Server, Signal};
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
