//! The drift compensator in virtual time: the network thread's 20 ms ticks (waking up to 8 ms late) push
//! into a ring that a game's device pulls from at its own rate, ±300 ppm off, for minutes.

use std::time::{Duration, Instant};

use media_core::audio::samples_duration;
use media_core::client::ReceivedAudio;
use media_core::testkit::analysis::{ToneAnalysis, ToneGenerator};
use rtrb::RingBuffer;

use super::*;
use crate::audio::{Encoded, MicEncoder};
use crate::Config;
use media_core::client::Player;

const RATE: u32 = 48_000;
const FRAME: usize = 960;
/// The SDK's default ring: 200 ms.
const CAPACITY: usize = 9_600;
/// A game's device callback: 256 samples (5.3 ms).
const CHUNK: usize = 256;
/// The most the ring may hold after the warm-up: 60 ms (the 20 ms margin, a frame just pushed, a device
/// chunk and the network thread's late wake-ups).
const MAX_FILL: usize = 2_880;

/// A small deterministic generator for the network thread's lateness.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// What the device saw after the warm-up.
#[derive(Debug, Default)]
struct Seen {
    /// Pulls that got less than a whole chunk.
    underruns: u64,
    /// The ring's fill after each push and each pull, in sample frames.
    min_fill: usize,
    max_fill: usize,
    /// The largest step between two consecutive samples pulled (a drop or insertion inside a tone would be
    /// a jump far above the tone's own slope), on any channel.
    max_step: f32,
    /// Stereo: pulled sample frames whose right sample is not the left one negated (what the tests push),
    /// and pulls that ended inside a sample frame.
    crossed: u64,
    counters: DriftCounters,
    learnt_ppm: f64,
}

/// A game's device at `device_ppm` pulling from `seconds` of mono playout, from `start_s`; `frame_at(k)`
/// is the k-th 20 ms frame the network thread plays. Everything after `warm_up_s` is judged.
fn run(
    device_ppm: f64,
    seconds: u32,
    start_s: f64,
    warm_up_s: f64,
    frame_at: impl FnMut(u64, Instant, &mut [f32]),
) -> Seen {
    run_channels(1, device_ppm, seconds, start_s, warm_up_s, frame_at)
}

/// [`run`] with `channels` interleaved: the ring, the frames and the device's chunks hold that many
/// samples per sample frame (the ring's length in time is the same).
fn run_channels(
    channels: usize,
    device_ppm: f64,
    seconds: u32,
    start_s: f64,
    warm_up_s: f64,
    mut frame_at: impl FnMut(u64, Instant, &mut [f32]),
) -> Seen {
    let (mut producer, mut consumer) = RingBuffer::new(CAPACITY * channels);
    let mut drift = DriftCompensator::new(RATE, channels, CAPACITY * channels, FRAME * channels);
    let mut late = Lcg(7);
    let mut frame = vec![0.0f32; FRAME * channels];
    let mut pulled = vec![0.0f32; CHUNK * channels];
    let mut seen = Seen {
        min_fill: usize::MAX,
        ..Seen::default()
    };
    let t0 = Instant::now();
    let pull_period = CHUNK as f64 / (f64::from(RATE) * (1.0 + device_ppm * 1e-6));
    let ticks = u64::from(seconds) * 50;
    let (mut tick, mut pull) = (0u64, 0u64);
    let mut last_sample: Option<[f32; MAX_CHANNELS]> = None;
    while tick < ticks {
        // The network thread wakes 0–8 ms after each tick is due; the device runs on its own clock.
        let tick_at = tick as f64 * 0.02 + (late.next() % 8_000) as f64 * 1e-6;
        let pull_at = start_s + pull as f64 * pull_period;
        let judged = tick_at.min(pull_at) >= warm_up_s;
        if tick_at <= pull_at {
            frame_at(
                tick,
                t0 + Duration::from_secs_f64(tick as f64 * 0.02),
                &mut frame,
            );
            drift.push(&frame, &mut producer);
            tick += 1;
        } else {
            let got = consumer.pop_partial_slice(&mut pulled).0.len();
            pull += 1;
            seen.crossed += u64::from(!got.is_multiple_of(channels));
            if judged {
                seen.underruns += u64::from(got < CHUNK * channels);
                for s in pulled[..got].chunks_exact(channels) {
                    if let Some(last) = last_sample {
                        for (c, s) in s.iter().enumerate() {
                            seen.max_step = seen.max_step.max((s - last[c]).abs());
                        }
                    }
                    let mut now = [0.0; MAX_CHANNELS];
                    now[..channels].copy_from_slice(s);
                    last_sample = Some(now);
                    seen.crossed += u64::from(channels == 2 && s[1] != -s[0]);
                }
            }
        }
        if judged {
            let fill = consumer.slots() / channels;
            seen.min_fill = seen.min_fill.min(fill);
            seen.max_fill = seen.max_fill.max(fill);
        }
    }
    seen.counters = drift.counters();
    seen.learnt_ppm = drift.learnt_ppm();
    seen
}

/// The largest step between consecutive samples of a 440 Hz tone of amplitude 0.5 at 48 kHz.
fn tone_slope() -> f32 {
    0.5 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32
}

#[test]
fn a_device_300_ppm_off_either_way_neither_fills_the_ring_nor_runs_it_dry() {
    for ppm in [300.0, -300.0] {
        let mut tone = ToneGenerator::new(440.0, 0.5, RATE);
        // Five minutes of continuous tone: uncorrected, 300 ppm is 90 ms, beyond `MAX_FILL` one way and
        // an underrun every 67 s (the 20 ms margin) the other.
        let seen = run(ppm, 300, 0.0, 60.0, |_, _, frame| tone.fill(frame));
        assert_eq!(seen.underruns, 0, "{ppm} ppm: {seen:?}");
        assert_eq!(seen.counters.overflowed, 0, "{ppm} ppm: {seen:?}");
        // Bounded delay: the margin (20 ms) plus a frame, a chunk and the late wake-ups, never more.
        assert!(seen.max_fill <= MAX_FILL, "{ppm} ppm: {seen:?}");
        assert!(seen.min_fill > 0, "{ppm} ppm: {seen:?}");
        // The controller has learnt the device's rate (to 30 ppm) and the corrections are smooth: no
        // sample jumps by more than the tone's own slope allows.
        assert!((seen.learnt_ppm - ppm).abs() < 30.0, "{ppm} ppm: {seen:?}");
        assert!(seen.max_step <= tone_slope() * 1.01, "{ppm} ppm: {seen:?}");
        // Only the start of playout was a rebuffer; no tone frame was dropped.
        assert_eq!(seen.counters.rebuffers, 1, "{ppm} ppm: {seen:?}");
        assert_eq!(seen.counters.frames_dropped, 0, "{ppm} ppm: {seen:?}");
    }
}

/// Stereo (interleaved L/R, the right the left negated), a device 300 ppm off either way: the same
/// bounds as mono, and every sample frame the device pulls still has its right sample the left one
/// negated, so the resampling and the silence never shifted one channel into the other.
#[test]
fn a_stereo_ring_is_corrected_in_whole_sample_frames() {
    for ppm in [300.0, -300.0] {
        let mut tone = ToneGenerator::new(440.0, 0.5, RATE);
        let mut mono = vec![0.0f32; FRAME];
        let seen = run_channels(2, ppm, 120, 0.0, 60.0, |_, _, frame| {
            tone.fill(&mut mono);
            for (pair, s) in frame.chunks_exact_mut(2).zip(&mono) {
                pair[0] = *s;
                pair[1] = -*s;
            }
        });
        assert_eq!(seen.crossed, 0, "{ppm} ppm: {seen:?}");
        assert_eq!(seen.underruns, 0, "{ppm} ppm: {seen:?}");
        assert_eq!(seen.counters.overflowed, 0, "{ppm} ppm: {seen:?}");
        assert!(
            seen.max_fill <= MAX_FILL && seen.min_fill > 0,
            "{ppm} ppm: {seen:?}"
        );
        assert!((seen.learnt_ppm - ppm).abs() < 30.0, "{ppm} ppm: {seen:?}");
        assert!(seen.max_step <= tone_slope() * 1.01, "{ppm} ppm: {seen:?}");
    }
}

/// A game that starts pulling 150 ms after playout began (or pauses its device) finds the ring nearly
/// full: the excess goes in the pauses of the speech, then the ring stays at its margin.
#[test]
fn a_late_device_loses_the_excess_in_silence() {
    let mut tone = ToneGenerator::new(440.0, 0.5, RATE);
    // Two seconds of tone, one of silence.
    let seen = run(-300.0, 120, 0.15, 20.0, |tick, _, frame| {
        if tick % 150 < 100 {
            tone.fill(frame);
        } else {
            frame.fill(0.0);
        }
    });
    assert!(seen.counters.frames_dropped >= 5, "{seen:?}");
    assert_eq!(seen.underruns, 0, "{seen:?}");
    assert!(seen.max_fill <= MAX_FILL, "{seen:?}");
}

/// The whole playout path: a sender whose clock runs 300 ppm fast (its RTP timestamps and packets come
/// faster than our clock's 20 ms), the jitter buffer and decoder on our clock, the compensator, and a
/// device 300 ppm slow (and the other way round), for 100 s: the jitter buffer's delay and the
/// ring's stay bounded, the device never runs dry after the warm-up, and the tone comes through.
#[test]
fn sender_and_device_clocks_300_ppm_apart_keep_a_bounded_delay() {
    for (sender_ppm, device_ppm) in [(300.0, -300.0), (-300.0, 300.0)] {
        let config = Config::default();
        let mut mic = MicEncoder::new(&config).expect("encoder");
        let mut player = Player::new(RATE).expect("player");
        let mut tone = ToneGenerator::new(440.0, 0.3, RATE);
        let mut pcm = vec![0.0f32; FRAME];
        let mut net = Lcg(11);
        let mut sent = 0u32;
        let mut max_delay = Duration::ZERO;
        let seen = run(device_ppm, 100, 0.0, 40.0, |tick, now, frame| {
            // Packets the sender has sent by now (its 20 ms are 20 ms / (1 + ppm) of ours), arriving
            // after 30–40 ms.
            let t0 = now - samples_duration(960 * tick as usize);
            loop {
                let sent_at = f64::from(sent) * 0.02 / (1.0 + sender_ppm * 1e-6);
                let arrival = sent_at + 0.030 + (net.next() % 10_000) as f64 * 1e-6;
                let arrival = t0 + Duration::from_secs_f64(arrival);
                if arrival > now {
                    break;
                }
                tone.fill(&mut pcm);
                if let Encoded::Packet { opus, level } = mic.encode(&pcm).expect("encodes") {
                    player.receive(&ReceivedAudio {
                        slot: 0,
                        ssrc: 1,
                        csrc: Some(2),
                        contributors: vec![(2, None)],
                        seq: u64::from(sent),
                        timestamp: 960 * sent,
                        audio_level: Some(level),
                        payload: opus.into(),
                        redundant: None,
                        arrival,
                    });
                }
                sent += 1;
            }
            player.tick(now, frame);
            if tick > 2_000 {
                max_delay = max_delay.max(player.delay());
            }
        });
        let case = format!("sender {sender_ppm} ppm, device {device_ppm} ppm: {seen:?}");
        assert_eq!(seen.underruns, 0, "{case}");
        assert!(seen.max_fill <= MAX_FILL, "{case}");
        assert!(
            max_delay <= Duration::from_millis(120),
            "{case}: jitter buffer delay {max_delay:?}"
        );
        assert_eq!(seen.counters.overflowed, 0, "{case}");
    }
    // The tone itself survives the path (checked once, on a short run, by its spectrum).
    let mut tone = ToneGenerator::new(440.0, 0.3, RATE);
    let mut last = Vec::new();
    let (mut producer, mut consumer) = RingBuffer::new(CAPACITY);
    let mut drift = DriftCompensator::new(RATE, 1, CAPACITY, FRAME);
    let mut frame = vec![0.0f32; FRAME];
    for _ in 0..100 {
        tone.fill(&mut frame);
        drift.push(&frame, &mut producer);
        let mut out = vec![0.0f32; FRAME];
        let n = consumer.pop_partial_slice(&mut out).0.len();
        last.extend_from_slice(&out[..n]);
    }
    let analysis = ToneAnalysis::analyze(&last[last.len() / 2..], RATE, &[440.0, 660.0]);
    assert_eq!(analysis.present_default(), vec![440.0], "{analysis:?}");
}
