//! The SDK's other input and output paths end to end: one game client publishes float PCM at 24 kHz
//! (`push_f32`), another pre-encoded Opus (`push_opus`, encoded by the game with libopus), and a third
//! pulls the mix and each participant at 16 kHz; what it hears is checked by tone analysis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, Config, Microphone};
use chorus_tests::Server;
use media_core::audio::ToneGenerator;

use super::{capture_with, playback, Pulled};
use crate::{tones_in, wait_connected};

const OUT_RATE_HZ: u32 = 16_000;

/// A game that encodes its own voice: every 20 ms frame of a `freq_hz` tone due by then, encoded with
/// libopus (48 kHz mono, VoIP) and pushed as a packet.
fn capture_opus(mut mic: Microphone, freq_hz: f64, stop: Arc<AtomicBool>) {
    const RATE: u32 = 48_000;
    const FRAME: usize = RATE as usize / 50;
    let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
        .expect("libopus takes 48 kHz mono");
    let mut tone = ToneGenerator::new(freq_hz, 0.3, RATE);
    let (mut pcm, mut packet) = ([0.0f32; FRAME], [0u8; 1_275]);
    let start = Instant::now();
    let mut frames = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * 50.0) as usize;
        while frames < due {
            tone.fill(&mut pcm);
            let len = encoder
                .encode_float(&pcm, &mut packet)
                .expect("a 20 ms frame encodes");
            mic.push_opus(&packet[..len])
                .expect("libopus makes valid packets");
            frames += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f32_at_24_khz_and_pre_encoded_opus_are_heard_at_16_khz() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "paths-native";
    let url = server.ws_url();
    let mut ada = Client::new(Config {
        input_rate_hz: 24_000,
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    let mut bob = Client::new(Config {
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    let mut carol = Client::new(Config {
        output_rate_hz: OUT_RATE_HZ,
        listen_only: true,
        ..Config::default()
    })?;
    ada.connect(&url, &server.token(room, "ada", &[])?, None)?;
    bob.connect(&url, &server.token(room, "bob", &[])?, None)?;
    carol.connect(&url, &server.token(room, "carol", &[])?, None)?;
    let (mut ada, mut bob, mut carol, sids) = tokio::task::spawn_blocking(move || {
        let ada_sid = wait_connected(&ada, &mut Vec::new())?;
        let bob_sid = wait_connected(&bob, &mut Vec::new())?;
        wait_connected(&carol, &mut Vec::new())?;
        anyhow::Ok((ada, bob, carol, vec![ada_sid, bob_sid]))
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let threads = [
        {
            let (mic, stop) = (ada.take_microphone().expect("a microphone"), stop.clone());
            std::thread::spawn(move || {
                capture_with(mic, 24_000, 440.0, stop, |mic, pcm| {
                    mic.push_f32(pcm);
                })
            })
        },
        {
            let (mic, stop) = (bob.take_microphone().expect("a microphone"), stop.clone());
            std::thread::spawn(move || capture_opus(mic, 660.0, stop))
        },
    ];
    let ear = {
        let (speaker, stop) = (carol.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || playback(speaker, OUT_RATE_HZ, sids, stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("capture does not panic");
    }
    let Pulled { mixed, by_sid } = ear.join().expect("playback does not panic");

    assert!(
        mixed.len() > OUT_RATE_HZ as usize * 2,
        "{} samples",
        mixed.len()
    );
    let (present, analysis) = tones_in(&mixed, OUT_RATE_HZ);
    assert_eq!(present, vec![440.0, 660.0], "carol's mix: {analysis:?}");
    for ((_, pcm), (who, freq)) in by_sid
        .iter()
        .zip([("ada (f32, 24 kHz)", 440.0), ("bob (Opus)", 660.0)])
    {
        assert!(
            pcm.len() > OUT_RATE_HZ as usize,
            "carol pulled only {} samples of {who}",
            pcm.len()
        );
        let (present, analysis) = tones_in(pcm, OUT_RATE_HZ);
        assert_eq!(present, vec![freq], "carol hears {who} as {analysis:?}");
        assert!(analysis.relative(freq) > 0.5, "{who}: {analysis:?}");
    }
    assert_eq!(ada.stats().mic_dropped, 0, "{:?}", ada.stats());
    assert_eq!(bob.stats().mic_dropped, 0, "{:?}", bob.stats());
    assert!(bob.stats().frames_sent > 100, "{:?}", bob.stats());
    drop((ada, bob, carol));
    Ok(())
}
