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
    let phase = k * 0.7 + t_secs * speed * if i % 2 == 0 { 1.0 } else { -1.0 };
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
