//! Mixing cost: CPU per 20 ms mixer tick (jitter buffers, decode, mix, limiter, encode) for
//! (a) 1,000 listeners and 3 talkers, (b) 100 participants all talking, plus the whole core (str0m SRTP
//! and RTCP to every listener included) in the virtual-time call harness.
//!
//!     cargo bench -p media-core --bench mix
//!
//! `CHORUS_BENCH_COMPLEXITY=N` sets every mix encode's libopus complexity, personal and shared (default:
//! `MixSettings`'s), `CHORUS_BENCH_SHARED_COMPLEXITY=N` then the shared mix's.
//!
//! Not a test: it asserts nothing and prints tables.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audio::FRAME_DURATION;
use media_core::audio::FRAME_SAMPLES;
use media_core::mixer::{MixPacket, Mixer};
use media_core::sim::LinkConfig;
use media_core::stats::{MixStats, Samples};
use media_core::{MixSettings, ParticipantId, RoomSettings, Ssrc};
use support::Sim;

#[allow(clippy::disallowed_methods)]
fn wall() -> Instant {
    Instant::now()
}

/// The default mix settings, with every encode's complexity (personal and shared) from
/// `CHORUS_BENCH_COMPLEXITY` if set, then the shared mix's from `CHORUS_BENCH_SHARED_COMPLEXITY`
/// (`scripts/callgrind.py --complexity`, `--shared-complexity`).
fn settings() -> MixSettings {
    let mut settings = MixSettings::default();
    if let Ok(v) = std::env::var("CHORUS_BENCH_COMPLEXITY") {
        let complexity = v.trim().parse().expect("CHORUS_BENCH_COMPLEXITY is 0..=10");
        settings.complexity = complexity;
        settings.shared_complexity = complexity;
    }
    if let Ok(v) = std::env::var("CHORUS_BENCH_SHARED_COMPLEXITY") {
        settings.shared_complexity = v
            .trim()
            .parse()
            .expect("CHORUS_BENCH_SHARED_COMPLEXITY is 0..=10");
    }
    settings
}

/// The mixer alone: `talkers` send a tone every 20 ms, `listeners` only listen.
fn mixer_only(listeners: usize, talkers: usize, seconds: u64) {
    let start = support::epoch();
    let mut mixer = Mixer::new(start, settings());
    for i in 0..talkers + listeners {
        let talks = i < talkers;
        mixer.add_member(ParticipantId(i as u64), talks, true, 1, i as u32 * 7);
    }
    let frames: Vec<Vec<(Arc<[u8]>, u8)>> = (0..talkers)
        .map(|i| support::talker_frames(200.0 + 37.0 * i as f64, 50))
        .collect();
    let mut stats = MixStats::default();
    let mut samples = Samples::default();
    let mut out: Vec<MixPacket> = Vec::new();
    let ticks = seconds * 50;
    let warmup = 50;
    let mut counted = MixStats::default();
    let mut busy = Duration::ZERO;
    let mut packets = 0usize;
    for t in 0..ticks + warmup {
        let now = start + FRAME_DURATION * t as u32;
        for (i, f) in frames.iter().enumerate() {
            let (payload, level) = &f[t as usize % f.len()];
            let _ = mixer.push(
                now,
                ParticipantId(i as u64),
                Ssrc(1000 + i as u32),
                t,
                (t as u32).wrapping_mul(FRAME_SAMPLES as u32),
                payload.clone(),
                Some(*level),
                &mut stats,
            );
        }
        out.clear();
        let started = wall();
        if mixer.next_tick().is_some_and(|due| due <= now) {
            mixer.tick(now, &mut out, &mut stats, &mut samples);
        }
        if t == warmup {
            counted = stats.clone();
        }
        if t >= warmup {
            busy += wall() - started;
            packets += out.len();
        }
    }
    let per_tick = busy / ticks as u32;
    println!(
        "{listeners:>9} {talkers:>7} {:>12.1} {:>13.2} {:>12.1} {:>12.1} {:>12}",
        per_tick.as_secs_f64() * 1e6,
        100.0 * per_tick.as_secs_f64() / FRAME_DURATION.as_secs_f64(),
        (stats.frames_decoded - counted.frames_decoded) as f64 / ticks as f64,
        (stats.frames_encoded - counted.frames_encoded) as f64 / ticks as f64,
        packets / ticks as usize,
    );
}

/// The whole core in the call harness: a mixed room with SRTP to every listener.
fn whole_core(listeners: usize, talkers: usize, seconds: u64) {
    let mut voices: Vec<(f32, f32)> = (0..talkers)
        .map(|i| (300.0 + 150.0 * i as f32, 0.3))
        .collect();
    voices.extend(std::iter::repeat_n((0.0, 0.0), listeners));
    let mut sim = Sim::with_room(
        42,
        LinkConfig::default(),
        RoomSettings::mix(settings()),
        &voices,
    );
    sim.keep_audio = false;
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    let busy0 = sim.core_busy;
    let timers0 = sim.core_busy_timers;
    let wakeups0 = sim.core_timeouts;
    let ticks0 = sim.core.stats().mix.ticks;
    let sent0 = sim.core.stats().mix.packets_sent;
    sim.run_for(Duration::from_secs(seconds));
    let busy = sim.core_busy - busy0;
    let ticks = sim.core.stats().mix.ticks - ticks0;
    let sent = sim.core.stats().mix.packets_sent - sent0;
    let load = busy.as_secs_f64() / seconds as f64;
    let timers = (sim.core_busy_timers - timers0).as_secs_f64() / busy.as_secs_f64();
    let wakeups = (sim.core_timeouts - wakeups0) as f64 / seconds as f64;
    println!(
        "{listeners:>9} {talkers:>7} {:>12.1} {:>13.2} {:>14.2} {:>8.0} {:>8.0}",
        busy.as_secs_f64() * 1e6 / ticks.max(1) as f64,
        load * 100.0,
        busy.as_secs_f64() * 1e6 / sent.max(1) as f64,
        timers * 100.0,
        wakeups,
    );
}

/// `CHORUS_BENCH_ONLY=mixer|core,listeners,talkers,seconds`: one row only (scripts/callgrind.sh).
fn only_case() -> Option<(String, usize, usize, u64)> {
    let v = std::env::var("CHORUS_BENCH_ONLY").ok()?;
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    assert_eq!(
        parts.len(),
        4,
        "CHORUS_BENCH_ONLY is mixer|core,listeners,talkers,seconds"
    );
    let n = |i: usize| -> u64 {
        parts[i]
            .parse()
            .expect("CHORUS_BENCH_ONLY counts are numbers")
    };
    Some((parts[0].to_owned(), n(1) as usize, n(2) as usize, n(3)))
}

fn main() {
    if let Some((what, listeners, talkers, seconds)) = only_case() {
        match what.as_str() {
            "mixer" => mixer_only(listeners, talkers, seconds),
            "core" => whole_core(listeners, talkers, seconds),
            other => panic!("CHORUS_BENCH_ONLY names mixer or core, not {other}"),
        }
        return;
    }
    println!("mixer alone: CPU per 20 ms tick (jitter buffers, decode, mix, limiter, encode)");
    println!("listeners talkers   µs/tick   %/1 core   decodes/tick encodes/tick packets/tick");
    mixer_only(1000, 3, 10);
    mixer_only(0, 100, 10);
    mixer_only(10_000, 3, 5);
    println!();
    println!(
        "whole core, mixed room (str0m SRTP/RTCP to every listener; virtual time, no syscalls)"
    );
    println!("listeners talkers   µs/tick   %/1 core  µs/packet sent  timers% wakeup/s");
    for listeners in [50, 200, 500] {
        whole_core(listeners, 3, 5);
    }
}
