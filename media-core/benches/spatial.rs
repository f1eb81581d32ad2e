//! Positional voice cost (issue 13 item 2): 100 players moving in a world, 10 of them talking.
//!
//! (a) the spatial mixer alone — audible sets refreshed every 100 ms as the players move, jitter buffers,
//!     decode, a stereo mix per listener (fade gain, equal-power pan), limiter, CELT stereo encode (shared
//!     where keys are equal) — at several encoder complexities, against the mono mixer of a room without
//!     positions: CPU per player per 20 ms and players per core;
//! (b) the whole core in the virtual-time call harness (str0m SRTP/RTCP to every player included) for a
//!     spatial mixed room and a spatial forwarding room with positions sent every 100 ms, against the same
//!     rooms without positions.
//!
//!     cargo bench -p media-core --bench spatial
//!
//! Not a test: it asserts nothing and prints tables.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audibility::Audibility;
use media_core::audio::FRAME_DURATION;
use media_core::audio::FRAME_SAMPLES;
use media_core::mixer::{MixPacket, Mixer};
use media_core::sim::LinkConfig;
use media_core::spatial::Space;
use media_core::stats::{MixStats, Samples};
use media_core::{
    FadeModel, MixSettings, ParticipantId, Position, RoomSettings, SpatialSettings, Ssrc,
};
use support::Sim;

#[allow(clippy::disallowed_methods)]
fn wall() -> Instant {
    Instant::now()
}

/// The world: players on circles in 160 × 160, heard up to 40 away (inverse fade from 2), at most 20.
fn settings() -> SpatialSettings {
    SpatialSettings {
        audible_distance: 40.0,
        conversational_distance: 2.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Inverse,
        max_audible: 20,
    }
}

/// Player `i` at `t` seconds: walking a circle of its own (about 1–3 units a second), facing its way.
fn position(i: usize, t: f64) -> Position {
    let k = i as f64;
    let (cx, cy) = ((k * 37.0) % 160.0, (k * 53.0 + 11.0) % 160.0);
    let radius = 10.0 + (k * 7.0) % 20.0;
    let speed = 0.1 + (k * 0.013) % 0.1;
    let phase = k * 0.7 + t * speed;
    Position::new(
        cx + radius * phase.cos(),
        cy + radius * phase.sin(),
        0.0,
        (phase.to_degrees() + 90.0) % 360.0,
    )
    .expect("in the world")
}

/// The mixer alone, `players` of whom the first `talkers` talk; `spatial`: positions and a stereo mix per
/// listener, else the mono mixer.
fn mixer_only(players: usize, talkers: usize, complexity: u8, spatial: bool, seconds: u64) {
    let start = support::epoch();
    let config = MixSettings {
        complexity,
        ..MixSettings::default()
    };
    let mut mixer = Mixer::new(start, config);
    let mut space = spatial.then(|| Audibility::new(Some(settings())));
    let ids: Vec<ParticipantId> = (0..players).map(|i| ParticipantId(i as u64)).collect();
    for (i, &id) in ids.iter().enumerate() {
        mixer.add_member(id, i < talkers, true, 1, i as u32 * 7);
    }
    let frames: Vec<Vec<(Arc<[u8]>, u8)>> = (0..talkers)
        .map(|i| support::talker_frames(200.0 + 37.0 * i as f64, 50))
        .collect();
    let (mut stats, mut samples) = (MixStats::default(), Samples::default());
    let mut out: Vec<MixPacket> = Vec::new();
    let (ticks, warmup) = (seconds * 50, 50);
    let mut counted = MixStats::default();
    let mut busy = Duration::ZERO;
    let mut packets = 0usize;
    let mut changed = Vec::new();
    for t in 0..ticks + warmup {
        let now = start + FRAME_DURATION * t as u32;
        for (i, f) in frames.iter().enumerate() {
            let (payload, level) = &f[t as usize % f.len()];
            let _ = mixer.push(
                now,
                ids[i],
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
        if let Some(space) = space.as_mut() {
            // Every player sends its position every 100 ms.
            if t % 5 == 0 {
                for (i, &id) in ids.iter().enumerate() {
                    let p = position(i, t as f64 * 0.02);
                    space
                        .set_position(now, id, p)
                        .expect("spatial")
                        .expect("valid");
                }
            }
            changed.clear();
            space.refresh(now, &ids, &ids[..talkers], &mut changed);
        }
        if mixer.next_tick().is_some_and(|due| due <= now) {
            mixer.tick_in(now, &mut out, &mut stats, &mut samples, space.as_ref());
        }
        if t == warmup {
            counted = stats.clone();
        }
        if t >= warmup {
            busy += wall() - started;
            packets += out.len();
        }
    }
    let per_tick = busy.as_secs_f64() / ticks as f64;
    let per_player = per_tick / players as f64;
    println!(
        "{:>7} {players:>7} {talkers:>7} {complexity:>10} {:>10.1} {:>12.2} {:>10.1} {:>12.1} {:>12}",
        if spatial { "stereo" } else { "mono" },
        per_tick * 1e6,
        per_player * 1e6,
        (stats.frames_encoded - counted.frames_encoded) as f64 / ticks as f64,
        packets as f64 / ticks as f64,
        (FRAME_DURATION.as_secs_f64() / per_player) as u64,
    );
}

/// The whole core: `players`, the first `talkers` of them talking, in a room of `settings`; with
/// positions sent every 100 ms when the room is spatial.
fn whole_core(name: &str, players: usize, talkers: usize, room: RoomSettings, seconds: u64) {
    let voices: Vec<(f32, f32)> = (0..players)
        .map(|i| {
            if i < talkers {
                (300.0 + 150.0 * i as f32, 0.3)
            } else {
                (0.0, 0.0)
            }
        })
        .collect();
    let mut sim = Sim::with_room(42, LinkConfig::default(), room, &voices);
    sim.keep_audio = false;
    sim.connect();
    let spatial = room.spatial.is_some();
    let step = Duration::from_millis(100);
    let mut t = 0.0;
    let place = |sim: &mut Sim, t: f64| {
        if !spatial {
            return Duration::ZERO;
        }
        let started = wall();
        let now = sim.now;
        for i in 0..players {
            let id = sim.clients[i].id;
            let _ = sim.core.set_position(now, id, position(i, t));
        }
        sim.drain_core();
        wall() - started
    };
    for _ in 0..10 {
        place(&mut sim, t);
        sim.run_for(step);
        t += 0.1;
    }
    let busy0 = sim.core_busy;
    let (fwd0, timers0) = (sim.core.stats().rtp_forwarded, sim.core_busy_timers);
    let mut positions_busy = Duration::ZERO;
    for _ in 0..seconds * 10 {
        positions_busy += place(&mut sim, t);
        sim.run_for(step);
        t += 0.1;
    }
    let busy = sim.core_busy - busy0 + positions_busy;
    let forwarded = (sim.core.stats().rtp_forwarded - fwd0) / seconds;
    let timers = (sim.core_busy_timers - timers0).as_secs_f64() / busy.as_secs_f64();
    let load = busy.as_secs_f64() / seconds as f64;
    let per_player = busy.as_secs_f64() / (seconds * 50) as f64 / players as f64;
    println!(
        "{name:<28} {players:>7} {talkers:>7} {:>10.2} {:>12.2} {:>12} {forwarded:>12} {:>8.1} {:>10.1}",
        load * 100.0,
        per_player * 1e6,
        (players as f64 / load) as u64,
        100.0 * timers,
        100.0 * positions_busy.as_secs_f64() / busy.as_secs_f64(),
    );
}

/// Audible sets alone: `players`, all of them speakers (open microphones), spread over a square world
/// `side` wide, all moving; one refresh (every 100 ms in a room).
fn refresh_only(players: usize, side: f64) {
    let start = support::epoch();
    let mut space = Space::new(settings());
    let ids: Vec<ParticipantId> = (0..players).map(|i| ParticipantId(i as u64)).collect();
    let scale = side / 160.0;
    let mut busy = Duration::ZERO;
    let mut heard = 0usize;
    let rounds = 20;
    let mut changed = Vec::new();
    for round in 0..rounds {
        let now = start + Duration::from_millis(100 * round);
        for (i, &id) in ids.iter().enumerate() {
            let p = position(i % 1000, round as f64 * 0.1);
            let shift = (i / 1000) as f64 * 160.0;
            let p = Position::new(p.x * scale + shift, p.y * scale, 0.0, p.yaw_deg).expect("valid");
            space.set_position(now, id, p).expect("valid");
        }
        changed.clear();
        let started = wall();
        space.refresh(now, &ids, &ids, &mut changed);
        busy += wall() - started;
        heard += ids.iter().map(|&id| space.audible(id).len()).sum::<usize>();
    }
    let per_refresh = busy / rounds as u32;
    println!(
        "{players:>8} {side:>8.0} {:>14.1} {:>12.1} {:>16.2}",
        heard as f64 / (rounds as usize * players) as f64,
        per_refresh.as_secs_f64() * 1e6,
        // Ten refreshes a second.
        10.0 * 100.0 * per_refresh.as_secs_f64(),
    );
}

fn main() {
    println!("(a) mixer alone: 100 players moving, 10 talking; CPU per 20 ms tick (positions, decode, mix, encode)");
    println!("   mix players talkers complexity   µs/tick µs/player/20ms encodes/tick packets/tick players/core");
    if std::env::var_os("SPATIAL_BENCH_SKIP_MIXER").is_none() {
        for complexity in [0, 2, 3, 5, 10] {
            mixer_only(100, 10, complexity, true, 10);
        }
        mixer_only(100, 10, 5, false, 10);
    }
    println!();
    println!(
        "(c) audible sets alone: every player a speaker, all moving; one refresh (10 per second)"
    );
    println!(" players    world heard/listener  µs/refresh core% at 10 Hz");
    refresh_only(1000, 160.0);
    refresh_only(1000, 500.0);
    refresh_only(5000, 500.0);
    println!();
    println!("(b) whole core (str0m SRTP/RTCP to every player; virtual time, no syscalls), positions every 100 ms");
    println!("room                         players talkers core%/1 core µs/player/20ms players/core forwarded/s  timers% positions%");
    for complexity in [2, 5] {
        let mix = RoomSettings::mix(MixSettings {
            complexity,
            ..MixSettings::default()
        });
        let name = format!("mix, spatial (complexity {complexity})");
        whole_core(&name, 100, 10, mix.with_spatial(settings()), 5);
    }
    let mono = RoomSettings::mix(MixSettings::default());
    whole_core("mix, not spatial (5)", 100, 10, mono, 5);
    let forward = RoomSettings::forward(3);
    for players in [500, 1000] {
        whole_core(
            "forward 3 slots, spatial",
            players,
            10,
            forward.with_spatial(settings()),
            5,
        );
    }
    whole_core("forward 3 slots, not spatial", 500, 10, forward, 5);
}
