//! Push-to-talk and deafen in virtual time: a push-to-talk talker is heard only while its key is down,
//! from the very first frame after key-down; a deafened listener is sent nothing while the others hear on.

use std::time::Duration;

use media_core::sim::LinkConfig;
use media_core::{CoreEvent, FadeModel, MixSettings, Position, RoomSettings, SpatialSettings};

use crate::support::Sim;

/// Packets `listener` received since `mark` that carry `talker`'s audio (its SSRC as a CSRC).
fn heard_since(sim: &Sim, listener: usize, mark: usize, talker: usize) -> usize {
    let ssrc = sim.clients[talker].mic_ssrc;
    sim.clients[listener].received[mark..]
        .iter()
        .filter(|r| r.contributors.iter().any(|(c, _)| *c == ssrc))
        .count()
}

/// Runs until `talker`'s next frame has crossed both legs (5 ms each, no jitter, no loss), and before
/// the frame after it can have (20 ms later).
fn run_past_next_frame(sim: &mut Sim, talker: usize) {
    let frame_at = sim.clients[talker].next_frame;
    let until = frame_at + Duration::from_millis(15);
    sim.run_for(until.saturating_duration_since(sim.now));
}

#[test]
fn a_push_to_talk_talker_is_forwarded_only_while_its_key_is_down_and_its_onset_frame_is_not_lost() {
    let mut sim = Sim::new(
        21,
        LinkConfig::with_delay(5.0),
        3,
        &[(440.0, 0.3), (660.0, 0.3)],
    );
    sim.connect();
    let a = sim.clients[0].id;
    sim.core.set_ptt(a, true).expect("a is in the room");
    sim.drain_core();
    sim.run_for(Duration::from_millis(300));

    // Key up: a talks into its microphone, nobody hears it, and it is nobody's slot.
    let mark = sim.clients[1].received.len();
    let events = sim.events.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(heard_since(&sim, 1, mark, 0), 0, "key up, yet forwarded");
    let speaking = sim.events[events..].iter().any(|(_, e)| match e {
        CoreEvent::Speakers { speakers, .. } => speakers.iter().any(|(p, _)| *p == a),
        CoreEvent::Slots { slots, .. } => slots.iter().any(|s| s.participant == Some(a)),
        _ => false,
    });
    assert!(!speaking, "a key-up talker is a speaker or holds a slot");
    // b, not gated, is heard by a all along.
    assert!(heard_since(&sim, 0, 0, 1) > 40);

    for press in 0..3 {
        // Key down between two frames, none in flight: the very next frame must arrive (the onset is not
        // lost).
        let last_frame = sim.clients[0].next_frame;
        sim.run_for((last_frame + Duration::from_millis(6)).saturating_duration_since(sim.now));
        let mark = sim.clients[1].received.len();
        sim.core.set_ptt_key(a, true).expect("a is in the room");
        sim.drain_core();
        run_past_next_frame(&mut sim, 0);
        assert_eq!(
            heard_since(&sim, 1, mark, 0),
            1,
            "press {press}: the first frame after key-down was not forwarded"
        );
        sim.run_for(Duration::from_millis(500));
        // 1 + 25 frames in 0.5 s (give or take the frame on the boundary).
        let heard = heard_since(&sim, 1, mark, 0);
        assert!((25..=27).contains(&heard), "press {press}: heard {heard}");

        // Key up: not one more frame.
        sim.core.set_ptt_key(a, false).expect("a is in the room");
        sim.drain_core();
        // What was in flight on the link (5 ms) still lands.
        sim.run_for(Duration::from_millis(10));
        let mark = sim.clients[1].received.len();
        sim.run_for(Duration::from_millis(700));
        assert_eq!(
            heard_since(&sim, 1, mark, 0),
            0,
            "press {press}: key up, yet forwarded"
        );
    }
}

/// In a spatial forwarding room a key-down's first frame reaches the listener in range at once (the
/// onset selects slots with the room's audibility) and never the one out of range, press after press.
#[test]
fn a_push_to_talk_onset_in_a_spatial_room_reaches_only_the_listeners_in_range_at_once() {
    let spatial = SpatialSettings {
        audible_distance: 20.0,
        conversational_distance: 1.0,
        fade_model: FadeModel::Linear,
        ..SpatialSettings::default()
    };
    let mut sim = Sim::with_room(
        25,
        LinkConfig::with_delay(5.0),
        RoomSettings::forward(3).with_spatial(spatial),
        &[(440.0, 0.3), (0.0, 0.0), (0.0, 0.0)],
    );
    sim.connect();
    let a = sim.clients[0].id;
    sim.core.set_ptt(a, true).expect("a is in the room");
    sim.drain_core();
    // b stands 5 from a, c 100 from a (and 95 from b).
    let now = sim.now;
    for (i, x) in [(0, 0.0), (1, 5.0), (2, 100.0)] {
        let id = sim.clients[i].id;
        let p = Position::new(x, 0.0, 0.0, 0.0).expect("in the world");
        sim.core.set_position(now, id, p).expect("a spatial room");
    }
    sim.drain_core();
    sim.run_for(Duration::from_millis(500));
    assert_eq!(heard_since(&sim, 1, 0, 0), 0, "key up, yet b hears a");

    for press in 0..3 {
        let last_frame = sim.clients[0].next_frame;
        sim.run_for((last_frame + Duration::from_millis(6)).saturating_duration_since(sim.now));
        let (mark_b, mark_c) = (sim.clients[1].received.len(), sim.clients[2].received.len());
        sim.core.set_ptt_key(a, true).expect("a is in the room");
        sim.drain_core();
        run_past_next_frame(&mut sim, 0);
        assert_eq!(
            heard_since(&sim, 1, mark_b, 0),
            1,
            "press {press}: b, in range, did not get the first frame after key-down"
        );
        sim.run_for(Duration::from_millis(500));
        let heard = heard_since(&sim, 1, mark_b, 0);
        assert!((25..=27).contains(&heard), "press {press}: b heard {heard}");
        assert_eq!(
            sim.clients[2].received.len() - mark_c,
            0,
            "press {press}: c, 100 away, received audio"
        );
        sim.core.set_ptt_key(a, false).expect("a is in the room");
        sim.drain_core();
        sim.run_for(Duration::from_millis(700));
    }
    assert_eq!(sim.clients[2].received.len(), 0, "c heard someone");
}

#[test]
fn push_to_talk_gates_the_mix_too() {
    let mut sim = Sim::with_room(
        22,
        LinkConfig::with_delay(5.0),
        RoomSettings::mix(MixSettings::default()),
        &[(440.0, 0.3), (660.0, 0.3)],
    );
    sim.connect();
    let a = sim.clients[0].id;
    sim.core.set_ptt(a, true).expect("a is in the room");
    sim.drain_core();
    sim.run_for(Duration::from_millis(300));
    let mark = sim.clients[1].received.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(heard_since(&sim, 1, mark, 0), 0, "key up, yet mixed");

    sim.core.set_ptt_key(a, true).expect("a is in the room");
    sim.drain_core();
    let mark = sim.clients[1].received.len();
    sim.run_for(Duration::from_secs(1));
    let heard = heard_since(&sim, 1, mark, 0);
    // 50 frames sent; the jitter buffer holds the last few at the end of the second.
    assert!(
        heard >= 45,
        "key down: only {heard} of ~50 mixed packets name a"
    );

    sim.core.set_ptt_key(a, false).expect("a is in the room");
    sim.drain_core();
    // The jitter buffer plays out what it held, and the encoder's last frame flushes.
    sim.run_for(Duration::from_millis(300));
    let mark = sim.clients[1].received.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(heard_since(&sim, 1, mark, 0), 0, "key up, yet mixed");
}

/// b is deafened for a second while a, b and c talk: b receives nothing, c still hears a, a still hears
/// b; undeafened, b hears again.
fn deafen_round(sim: &mut Sim) {
    let b = sim.clients[1].id;
    sim.run_for(Duration::from_secs(1));
    let hears = |sim: &Sim, i: usize, mark: usize| sim.clients[i].received.len() - mark;
    let (mark_b, mark_c) = (sim.clients[1].received.len(), sim.clients[2].received.len());
    sim.run_for(Duration::from_millis(500));
    assert!(hears(sim, 1, mark_b) > 20 && hears(sim, 2, mark_c) > 20);

    sim.core.set_deafened(b, true).expect("b is in the room");
    sim.drain_core();
    sim.run_for(Duration::from_millis(100));
    let (mark_a, mark_b, mark_c) = (
        sim.clients[0].received.len(),
        sim.clients[1].received.len(),
        sim.clients[2].received.len(),
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        hears(sim, 1, mark_b),
        0,
        "a deafened listener is sent audio"
    );
    assert!(
        heard_since(sim, 2, mark_c, 0) > 40,
        "c stops hearing a when b is deafened"
    );
    assert!(
        heard_since(sim, 0, mark_a, 1) > 40,
        "a deafened talker is not heard"
    );

    sim.core.set_deafened(b, false).expect("b is in the room");
    sim.drain_core();
    sim.run_for(Duration::from_millis(200));
    let mark_b = sim.clients[1].received.len();
    sim.run_for(Duration::from_millis(500));
    assert!(hears(sim, 1, mark_b) > 20, "undeafened, still nothing");
}

#[test]
fn a_deafened_listener_is_sent_nothing_in_a_forwarding_room() {
    let mut sim = Sim::new(
        23,
        LinkConfig::with_delay(5.0),
        3,
        &[(440.0, 0.3), (660.0, 0.3), (880.0, 0.3)],
    );
    sim.connect();
    let events = sim.events.len();
    deafen_round(&mut sim);
    let b = sim.clients[1].id;
    let emptied = sim.events[events..].iter().any(|(_, e)| {
        matches!(e, CoreEvent::Slots { subscriber, slots }
            if *subscriber == b && slots.iter().all(|s| s.participant.is_none()))
    });
    assert!(emptied, "a deafened subscriber is told its slots are empty");
}

#[test]
fn a_deafened_listener_is_sent_nothing_in_a_mixed_room() {
    let mut sim = Sim::with_room(
        24,
        LinkConfig::with_delay(5.0),
        RoomSettings::mix(MixSettings::default()),
        &[(440.0, 0.3), (660.0, 0.3), (880.0, 0.3)],
    );
    sim.connect();
    deafen_round(&mut sim);
}
