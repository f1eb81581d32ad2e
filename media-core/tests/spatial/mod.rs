//! Spatial rooms in virtual time: players move on scripted paths and send their positions every 100 ms;
//! what each one receives is checked against distances computed here, independently of the server.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use media_core::sim::LinkConfig;
use media_core::{
    CoreError, CoreEvent, FadeModel, ParticipantId, Position, RoomSettings, SpatialError,
    SpatialSettings,
};

use crate::support::Sim;

/// Distinct talker tones.
const FREQS: [f32; 10] = [
    255.0, 465.0, 600.0, 830.0, 1015.0, 1640.0, 1755.0, 2075.0, 2145.0, 2240.0,
];

/// Player `i`'s scripted path: a circle of its own centre, radius and speed in a 120 × 120 world, so
/// players drift in and out of each other's range during the run.
fn path(i: usize, t_secs: f64) -> (f64, f64) {
    let k = i as f64;
    let (cx, cy) = ((k * 37.0) % 120.0, (k * 53.0 + 11.0) % 120.0);
    let radius = 5.0 + (k * 7.0) % 20.0;
    let speed = 0.3 + (k * 0.13) % 0.6; // radians per second
    let phase = k * 0.7 + t_secs * speed * if i.is_multiple_of(2) { 1.0 } else { -1.0 };
    (cx + radius * phase.cos(), cy + radius * phase.sin())
}

/// Distance on the plane, as a test would measure it with a ruler.
fn ruler(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// The talkers `listener` should hear: within `audible`, the nearest `max` (ties: lower index).
fn expected(
    positions: &[(f64, f64)],
    talkers: usize,
    listener: usize,
    audible: f64,
    max: usize,
) -> Vec<usize> {
    let mut near: Vec<(f64, usize)> = (0..talkers)
        .filter(|&t| t != listener)
        .map(|t| (ruler(positions[listener], positions[t]), t))
        .filter(|&(d, _)| d <= audible)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    near.truncate(max);
    near.into_iter().map(|(_, t)| t).collect()
}

fn place(sim: &mut Sim, positions: &[(f64, f64)]) {
    let now = sim.now;
    for (i, &(x, y)) in positions.iter().enumerate() {
        let id = sim.clients[i].id;
        let p = Position::new(x, y, 0.0, 0.0).expect("the paths stay in the world");
        sim.core.set_position(now, id, p).expect("a spatial room");
    }
    sim.drain_core();
}

/// 60 players, 10 of them talking, moving for 8.4 s: at every step each listener's slots hold
/// exactly the talkers in range (the nearest `max_audible`), the packets it receives come only from
/// them, and its `positions` events list them with where they are.
#[test]
fn forward_slots_follow_who_is_in_range() {
    const PLAYERS: usize = 60;
    const TALKERS: usize = 10;
    let spatial = SpatialSettings {
        audible_distance: 30.0,
        conversational_distance: 2.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Linear,
        max_audible: 3,
    };
    // Four slots for at most three audible talkers: every talker in range gets a slot at once.
    let room = RoomSettings::forward(4).with_spatial(spatial);
    let voices: Vec<(f32, f32)> = (0..PLAYERS)
        .map(|i| {
            if i < TALKERS {
                (FREQS[i], 0.1)
            } else {
                (0.0, 0.0)
            }
        })
        .collect();
    let mut sim = Sim::with_room(7, LinkConfig::with_delay(5.0), room, &voices);
    sim.connect();
    let start = sim.now;
    let ssrc_of: HashMap<u32, usize> = sim
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.mic_ssrc, i))
        .collect();
    let index_of: HashMap<ParticipantId, usize> = sim
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();

    // Positions every 140 ms: the server refreshes who hears whom at most every 100 ms, on its 20 ms room
    // tick, so a move is applied within 120 ms, and the state checked at the end of a step is that step's.
    let step_len = Duration::from_millis(140);
    let mut steps = Vec::new();
    let mut changes_seen = 0;
    for step in 0..60 {
        let t = step as f64 * step_len.as_secs_f64();
        let positions: Vec<(f64, f64)> = (0..PLAYERS).map(|i| path(i, t)).collect();
        place(&mut sim, &positions);
        let placed_at = sim.now;
        let events_before = sim.events.len();
        sim.run_for(step_len);
        steps.push((placed_at, positions.clone()));
        if step < 3 {
            continue; // the talkers' first packets make them eligible
        }
        // The assignment after the move: the latest `slots` event of each listener.
        let mut slots: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut reported: HashMap<usize, Vec<(usize, Position)>> = HashMap::new();
        for (_, e) in &sim.events {
            match e {
                CoreEvent::Slots {
                    subscriber,
                    slots: s,
                } => {
                    let held = s
                        .iter()
                        .filter_map(|a| a.participant.map(|p| index_of[&p]))
                        .collect();
                    slots.insert(index_of[subscriber], held);
                }
                CoreEvent::Positions {
                    listener,
                    positions,
                } => {
                    reported.insert(
                        index_of[listener],
                        positions.iter().map(|(p, at)| (index_of[p], *at)).collect(),
                    );
                }
                _ => {}
            }
        }
        changes_seen += sim.events[events_before..]
            .iter()
            .filter(|(_, e)| matches!(e, CoreEvent::Slots { .. }))
            .count();
        for listener in 0..PLAYERS {
            let want = expected(&positions, TALKERS, listener, 30.0, 3);
            let held = slots.get(&listener).cloned().unwrap_or_default();
            assert_eq!(
                held,
                want.iter().copied().collect::<HashSet<_>>(),
                "step {step}: listener {listener}'s slots (expected by distance: {want:?})"
            );
            let listed = reported.get(&listener).cloned().unwrap_or_default();
            assert_eq!(
                listed.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                want,
                "step {step}: listener {listener}'s positions, nearest first"
            );
            for (p, at) in listed {
                assert_eq!((at.x, at.y), positions[p], "step {step}: where {p} is");
            }
        }
    }
    assert!(
        changes_seen > 20,
        "the paths make listeners gain and lose talkers ({changes_seen} changes)"
    );

    // What arrived: every forwarded packet comes from a talker the listener heard when it was sent: by
    // the positions of that step, or of the step before while the move was being applied (up to 120 ms,
    // plus the link's 5 ms).
    let allowed = |listener: usize, arrival: Instant| -> Vec<usize> {
        let k = steps
            .iter()
            .rposition(|(at, _)| *at <= arrival)
            .unwrap_or(0);
        let mut ok = expected(&steps[k].1, TALKERS, listener, 30.0, 3);
        if k > 0 && arrival < steps[k].0 + Duration::from_millis(130) {
            ok.extend(expected(&steps[k - 1].1, TALKERS, listener, 30.0, 3));
        }
        ok
    };
    let mut packets = 0;
    for (listener, c) in sim.clients.iter().enumerate() {
        for r in c.received.iter().filter(|r| r.arrival >= start) {
            let Some(speaker) = r.csrc.and_then(|s| ssrc_of.get(&s)) else {
                continue;
            };
            packets += 1;
            if !allowed(listener, r.arrival).contains(speaker) {
                let changes: Vec<_> = sim
                    .events
                    .iter()
                    .filter_map(|(t, e)| match e {
                        CoreEvent::Slots { subscriber, slots } if *subscriber == c.id => Some((
                            *t - start,
                            slots
                                .iter()
                                .map(|a| a.participant.map(|p| index_of[&p]))
                                .collect::<Vec<_>>(),
                        )),
                        _ => None,
                    })
                    .collect();
                panic!(
                    "listener {listener} got a packet of {speaker}, out of range at {:?}; slots: {changes:?}",
                    r.arrival - start
                );
            }
        }
    }
    assert!(packets > 10_000, "only {packets} packets forwarded");
}

/// Positions that are NaN, infinite or out of the world are refused with typed errors and change nothing;
/// a room without positional voice refuses positions; the others carry on.
#[test]
fn bad_positions_are_refused_and_harm_no_one() {
    let spatial = SpatialSettings {
        audible_distance: 10.0,
        ..SpatialSettings::default()
    };
    let room = RoomSettings::forward(2).with_spatial(spatial);
    let mut sim = Sim::with_room(
        3,
        LinkConfig::with_delay(5.0),
        room,
        &[(440.0, 0.1), (660.0, 0.1)],
    );
    sim.connect();
    place(&mut sim, &[(0.0, 0.0), (3.0, 0.0)]);
    let now = sim.now;
    let a = sim.clients[0].id;
    for (x, why) in [
        (f64::NAN, SpatialError::NotFinite),
        (f64::INFINITY, SpatialError::NotFinite),
        (f64::NEG_INFINITY, SpatialError::NotFinite),
        (1.0e9, SpatialError::OutOfWorld),
        (f64::MAX, SpatialError::OutOfWorld),
    ] {
        let bad = Position {
            x,
            y: 0.0,
            z: 0.0,
            yaw_deg: 0.0,
        };
        match sim.core.set_position(now, a, bad) {
            Err(CoreError::BadPosition(e)) => assert_eq!(e, why, "x = {x}"),
            other => panic!("x = {x}: {other:?}"),
        }
    }
    let yaw_nan = Position {
        x: 0.0,
        y: 0.0,
        z: 0.0,
        yaw_deg: f64::NAN,
    };
    assert!(matches!(
        sim.core.set_position(now, a, yaw_nan),
        Err(CoreError::BadPosition(SpatialError::NotFinite))
    ));
    sim.drain_core();
    sim.run_for(Duration::from_secs(2));
    // Still where they were: in range of each other, both heard.
    sim.assert_hears_others(0, 1.0);
    sim.assert_hears_others(1, 1.0);

    // A room without positional voice: a typed error.
    let mut flat = Sim::new(4, LinkConfig::with_delay(5.0), 2, &[(440.0, 0.1)]);
    let id = flat.clients[0].id;
    let p = Position::new(1.0, 2.0, 3.0, 0.0).expect("valid");
    assert!(matches!(
        flat.core.set_position(flat.now, id, p),
        Err(CoreError::NotSpatial(_))
    ));
}

/// The gain the room's inverse fade (conversational 2, audible 40, intensity 1) gives at `d`, computed
/// here from the formula in docs/protocol.md.
fn inverse_gain(d: f64) -> f64 {
    if d > 40.0 {
        0.0
    } else if d <= 2.0 {
        1.0
    } else {
        2.0 / (2.0 + (d - 2.0))
    }
}

/// Where a talker at `to` is for a listener at `from` facing `yaw_deg` (clockwise from +y): −1 left,
/// +1 right.
fn pan(from: (f64, f64), yaw_deg: f64, to: (f64, f64)) -> f64 {
    let azimuth = (to.0 - from.0).atan2(to.1 - from.1) - yaw_deg.to_radians();
    azimuth.sin()
}

/// Decode the stereo packets `client` received between `from` and `to` (arrival), in order: left and
/// right PCM.
fn stereo_between(sim: &Sim, client: usize, from: Instant, to: Instant) -> (Vec<f32>, Vec<f32>) {
    let mut decoder =
        opus::Decoder::new(48_000, opus::Channels::Stereo).expect("a stereo Opus decoder");
    let mut buf = vec![0f32; 2 * 5760];
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for r in &sim.clients[client].received {
        // Decode everything (the decoder needs its history); keep the window.
        let n = decoder
            .decode_float(&r.payload, &mut buf, false)
            .expect("the mix decodes");
        if r.arrival >= from && r.arrival < to {
            for frame in buf[..2 * n].chunks_exact(2) {
                left.push(frame[0]);
                right.push(frame[1]);
            }
        }
    }
    (left, right)
}

/// 50 players, 8 of them talking, in a spatial mixed room. They move to new places on scripted paths
/// every 1.2 s, facing different ways; in the last 0.6 s of each stop every listener's stereo mix holds
/// exactly the talkers in range, each at the level the fade model gives (±1.5 dB), on the side it is on
/// (left/right energy as the equal-power pan gives it, ±1.5 dB), and nothing of those out of range or of
/// itself.
#[test]
fn mix_renders_each_listener_its_own_stereo_scene() {
    use media_core::audio::ToneAnalysis;
    use media_core::MixSettings;

    const PLAYERS: usize = 50;
    const TALKERS: usize = 8;
    const AMPLITUDE: f32 = 0.08;
    let spatial = SpatialSettings {
        audible_distance: 40.0,
        conversational_distance: 2.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Inverse,
        max_audible: 20,
    };
    // Stereo tones want bits: 64 kb/s (a room setting), as the ten-voice mono test.
    let room = RoomSettings::mix(MixSettings {
        bitrate_bps: 64_000,
        ..MixSettings::default()
    })
    .with_spatial(spatial);
    let voices: Vec<(f32, f32)> = (0..PLAYERS)
        .map(|i| {
            if i < TALKERS {
                (FREQS[i], AMPLITUDE)
            } else {
                (0.0, 0.0)
            }
        })
        .collect();
    let mut sim = Sim::with_room(11, LinkConfig::with_delay(5.0), room, &voices);
    sim.connect();
    // Players 47–49 are a squad standing with player 10, facing its way: they hear the same mix, one
    // shared encode.
    let anchor = |i: usize| if i >= 47 { 10 } else { i };
    let yaw = |i: usize| (anchor(i) as f64 * 47.0) % 360.0;
    let stop = Duration::from_millis(1200);
    let (mut checked, mut silent_checked, mut sides) = (0, 0, [0, 0]);
    for phase in 0..4 {
        // A stop on each player's path (the same circles as the forward test, in a 100 × 100 world).
        let positions: Vec<(f64, f64)> = (0..PLAYERS)
            .map(|i| {
                let (x, y) = path(anchor(i), phase as f64 * 2.5);
                (x * 100.0 / 120.0, y * 100.0 / 120.0)
            })
            .collect();
        let now = sim.now;
        for (i, &(x, y)) in positions.iter().enumerate() {
            let id = sim.clients[i].id;
            let p = Position::new(x, y, 1.7, yaw(i)).expect("in the world");
            sim.core.set_position(now, id, p).expect("a spatial room");
        }
        sim.drain_core();
        let start = sim.now;
        sim.run_for(stop);
        let window = (start + Duration::from_millis(600), start + stop);
        for listener in 0..PLAYERS {
            let heard: Vec<(usize, f64, f64)> = (0..TALKERS)
                .filter(|&t| t != listener)
                .map(|t| {
                    let d = ruler(positions[listener], positions[t]);
                    (
                        t,
                        inverse_gain(d),
                        pan(positions[listener], yaw(listener), positions[t]),
                    )
                })
                .filter(|&(_, g, _)| g > 0.0)
                .collect();
            let (left, right) = stereo_between(&sim, listener, window.0, window.1);
            let what = format!("phase {phase}, listener {listener}");
            if heard.is_empty() {
                let energy: f32 = left.iter().chain(&right).map(|s| s * s).sum();
                assert!(
                    energy < 1e-3,
                    "{what} hears nobody in range but got {} samples of energy {energy}",
                    left.len()
                );
                silent_checked += 1;
                continue;
            }
            assert!(
                left.len() >= 48_000 * 55 / 100,
                "{what}: only {} samples",
                left.len()
            );
            let freqs = &FREQS[..TALKERS];
            let (l, r) = (
                ToneAnalysis::analyze(&left, 48_000, freqs),
                ToneAnalysis::analyze(&right, 48_000, freqs),
            );
            for (t, freq) in freqs.iter().enumerate() {
                let (pl, pr) = (
                    l.get(*freq).expect("a candidate").power,
                    r.get(*freq).expect("a candidate").power,
                );
                let sent = AMPLITUDE * AMPLITUDE / 2.0;
                let Some(&(_, gain, pan)) = heard.iter().find(|h| h.0 == t) else {
                    assert!(
                        (pl + pr) < sent * 0.003,
                        "{what} hears talker {t} (out of range or itself) at {:.1} dB",
                        10.0 * ((pl + pr) / sent).log10()
                    );
                    continue;
                };
                let want_db = 20.0 * gain.log10();
                let got_db = 10.0 * (f64::from(pl + pr) / f64::from(sent)).log10();
                assert!(
                    (got_db - want_db).abs() <= 1.5,
                    "{what}: talker {t} at {got_db:.2} dB, the fade model says {want_db:.2} dB"
                );
                // Equal-power pan: L = cos((p+1)π/4), R = sin((p+1)π/4).
                let angle = (pan + 1.0) * std::f64::consts::FRAC_PI_4;
                let (wl, wr) = (angle.cos().powi(2), angle.sin().powi(2));
                if wl.min(wr) > 0.05 {
                    let want = 10.0 * (wl / wr).log10();
                    let got = 10.0 * (f64::from(pl) / f64::from(pr)).log10();
                    assert!(
                        (got - want).abs() <= 1.5,
                        "{what}: talker {t} (pan {pan:.2}) L/R {got:.2} dB, expected {want:.2} dB"
                    );
                } else {
                    // Nearly all on one side: that side has it.
                    let (near, far) = if wl > wr { (pl, pr) } else { (pr, pl) };
                    assert!(
                        near > 10.0 * far,
                        "{what}: talker {t} (pan {pan:.2}) on the wrong side"
                    );
                }
                sides[usize::from(pan > 0.0)] += 1;
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked} voices checked");
    assert!(silent_checked > 0, "some listener out of everyone's range");
    assert!(
        sides[0] > 20 && sides[1] > 20,
        "voices on both sides: {sides:?}"
    );
    let stats = &sim.core.stats().mix;
    assert!(
        stats.frames_encoded < stats.packets_sent,
        "listeners who hear the same share an encode ({} encodes, {} packets)",
        stats.frames_encoded,
        stats.packets_sent
    );
}

/// Each fade model end to end: one talker, listeners lined up at distances from 1 to beyond the audible
/// distance, half of them facing so the talker is on their left, half on their right; each hears it at the
/// level its model gives (±1.5 dB) on the right side, or not at all beyond range.
#[test]
fn every_fade_model_sets_the_level_heard() {
    use media_core::audio::ToneAnalysis;
    use media_core::MixSettings;

    const AMPLITUDE: f32 = 0.2;
    let distances = [1.0, 3.0, 6.0, 10.0, 15.0, 19.0, 25.0];
    let models = [
        FadeModel::None,
        FadeModel::Inverse,
        FadeModel::Linear,
        FadeModel::Exponential,
    ];
    for (m, model) in models.into_iter().enumerate() {
        let spatial = SpatialSettings {
            audible_distance: 20.0,
            conversational_distance: 2.0,
            fade_intensity: 1.5,
            fade_model: model,
            max_audible: 20,
        };
        // The same formulas as docs/protocol.md, written out here.
        let (a, c, f) = (20.0f64, 2.0f64, 1.5f64);
        let want = |d: f64| -> f64 {
            if d > a {
                0.0
            } else if d <= c {
                1.0
            } else {
                match model {
                    FadeModel::None => 1.0,
                    FadeModel::Inverse => c / (c + f * (d - c)),
                    FadeModel::Linear => (1.0 - f * (d - c) / (a - c)).max(0.0),
                    FadeModel::Exponential => (d / c).powf(-f),
                }
            }
        };
        let room = RoomSettings::mix(MixSettings::default()).with_spatial(spatial);
        let mut voices = vec![(440.0, AMPLITUDE)];
        voices.extend(std::iter::repeat_n((0.0, 0.0), 2 * distances.len()));
        let mut sim = Sim::with_room(20 + m as u64, LinkConfig::with_delay(5.0), room, &voices);
        sim.connect();
        let now = sim.now;
        let talker = Position::new(0.0, 0.0, 0.0, 0.0).expect("valid");
        sim.core
            .set_position(now, sim.clients[0].id, talker)
            .expect("spatial");
        for (k, &d) in distances.iter().enumerate() {
            // On the +y axis, the talker (at the origin) is south: facing west (yaw 270) it is on the
            // left, facing east (yaw 90) on the right.
            for (side, yaw) in [(0, 270.0), (1, 90.0)] {
                let i = 1 + 2 * k + side;
                let p = Position::new(0.0, d, 0.0, yaw).expect("valid");
                sim.core
                    .set_position(now, sim.clients[i].id, p)
                    .expect("spatial");
            }
        }
        sim.drain_core();
        let start = sim.now;
        sim.run_for(Duration::from_millis(1500));
        for (k, &d) in distances.iter().enumerate() {
            for side in 0..2 {
                let i = 1 + 2 * k + side;
                let what = format!(
                    "{model:?} at {d}, talker on the {}",
                    ["left", "right"][side]
                );
                let (left, right) =
                    stereo_between(&sim, i, start + Duration::from_millis(500), sim.now);
                let gain = want(d);
                if gain == 0.0 {
                    assert!(left.is_empty(), "{what}: heard beyond range");
                    continue;
                }
                let (l, r) = (
                    ToneAnalysis::analyze(&left, 48_000, &[440.0]),
                    ToneAnalysis::analyze(&right, 48_000, &[440.0]),
                );
                let (pl, pr) = (
                    l.get(440.0).expect("a candidate").power,
                    r.get(440.0).expect("a candidate").power,
                );
                let sent = AMPLITUDE * AMPLITUDE / 2.0;
                let got_db = 10.0 * (f64::from(pl + pr) / f64::from(sent)).log10();
                let want_db = 20.0 * gain.log10();
                assert!(
                    (got_db - want_db).abs() <= 1.5,
                    "{what}: {got_db:.2} dB, the model says {want_db:.2} dB"
                );
                let (near, far) = if side == 0 { (pl, pr) } else { (pr, pl) };
                assert!(near > 100.0 * far, "{what}: L {pl:e}, R {pr:e}");
            }
        }
    }
}
