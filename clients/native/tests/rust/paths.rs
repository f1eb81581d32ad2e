//! The SDK's other input and output paths end to end: one game client publishes float PCM at 24 kHz
//! (`push_f32`), another pre-encoded Opus (`push_opus`, encoded by the game with libopus), and a third
//! pulls the mix and each participant at 16 kHz; what it hears is checked by tone analysis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, Config, Microphone, Speaker};
use chorus_tests::Server;
use media_core::audio::ToneGenerator;

use crate::{tones_in, wait_connected};

const OUT_RATE_HZ: u32 = 16_000;

/// A game's capture callback: every 10 ms, the samples of a `freq_hz` tone due by then, as f32.
fn capture_f32(mut mic: Microphone, rate_hz: u32, freq_hz: f64, stop: Arc<AtomicBool>) {
    let mut tone = ToneGenerator::new(freq_hz, 0.3, rate_hz);
    let start = Instant::now();
    let mut pushed = 0usize;
    let mut pcm = vec![0.0f32; rate_hz as usize];
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate_hz)) as usize;
        let n = (due - pushed).min(pcm.len());
        tone.fill(&mut pcm[..n]);
        mic.push_f32(&pcm[..n]);
        pushed += n;
        std::thread::sleep(Duration::from_millis(10));
    }
}

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

/// A game's playback callback at 16 kHz: the mix and each of `sids`, every 10 ms.
fn playback(
    mut speaker: Speaker,
    sids: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let rate = OUT_RATE_HZ as usize;
    let (mut mixed, mut by_sid) = (Vec::new(), vec![Vec::new(); sids.len()]);
    let mut buf = vec![0.0f32; rate];
    let start = Instant::now();
    let mut done = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
        let n = (due - done).min(rate);
        speaker
            .pull_mixed(&mut buf[..n])
            .expect("mixed output is on");
        mixed.extend_from_slice(&buf[..n]);
        for (sid, pcm) in sids.iter().zip(&mut by_sid) {
            if let Ok(got) = speaker.pull_participant(sid, &mut buf[..n]) {
                pcm.extend_from_slice(&buf[..got]);
            }
        }
        done += n;
        std::thread::sleep(Duration::from_millis(10));
    }
    (mixed, by_sid)
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
            std::thread::spawn(move || capture_f32(mic, 24_000, 440.0, stop))
        },
        {
            let (mic, stop) = (bob.take_microphone().expect("a microphone"), stop.clone());
            std::thread::spawn(move || capture_opus(mic, 660.0, stop))
        },
    ];
    let ear = {
        let (speaker, stop) = (carol.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || playback(speaker, sids, stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("capture does not panic");
    }
    let (mixed, by_sid) = ear.join().expect("playback does not panic");

    assert!(
        mixed.len() > OUT_RATE_HZ as usize * 2,
        "{} samples",
        mixed.len()
    );
    let (present, analysis) = tones_in(&mixed, OUT_RATE_HZ);
    assert_eq!(present, vec![440.0, 660.0], "carol's mix: {analysis:?}");
    for (pcm, (who, freq)) in by_sid
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
