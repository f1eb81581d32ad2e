use std::time::{Duration, Instant};

use super::*;

/// Any instant: the tests only compare instants they make from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn p(id: u64) -> ParticipantId {
    ParticipantId(id)
}

fn at(x: f64, y: f64) -> Position {
    Position::new(x, y, 0.0, 0.0).expect("valid")
}

fn refresh(a: &mut Audibility, now: Instant, ids: &[u64]) -> Vec<ParticipantId> {
    let ids: Vec<ParticipantId> = ids.iter().copied().map(p).collect();
    let mut changed = Vec::new();
    a.refresh(now, &ids, &ids, &mut changed);
    changed
}

fn set(a: &Audibility, listener: u64) -> Vec<u64> {
    a.audible(p(listener))
        .expect("listed")
        .iter()
        .map(|h| h.speaker.0)
        .collect()
}

#[test]
fn a_flat_room_is_open_until_a_rule_applies() {
    let now = t0();
    let mut a = Audibility::new(None);
    refresh(&mut a, now, &[1, 2, 3, 4]);
    assert!(a.is_open());
    assert!(a.audible(p(1)).is_none());
    assert_eq!(a.heard(p(1), p(2)).map(|h| h.gain), Some(1.0));
    assert!(a.heard(p(1), p(1)).is_none());

    // 1 whispers to 2: only 2 hears it; everyone still hears the others.
    a.set_target(now, p(1), TalkTarget::Whisper(vec![p(2)]));
    let changed = refresh(&mut a, now, &[1, 2, 3, 4]);
    assert_eq!(changed.len(), 4, "every listener has a set now");
    assert!(!a.is_open());
    assert_eq!(set(&a, 2), vec![1, 3, 4]);
    assert_eq!(set(&a, 3), vec![2, 4]);
    assert!(a.hears(p(3), p(3)) && !a.hears(p(3), p(1)));
    assert!(!a.is_public(p(1)) && a.is_public(p(3)));

    // 3 and 4 are a team; 3 talks to it.
    a.set_team(now, p(3), Some(TeamId::new("red").expect("team")));
    a.set_team(now, p(4), Some(TeamId::new("red").expect("team")));
    a.set_target(now, p(3), TalkTarget::Team);
    refresh(&mut a, now, &[1, 2, 3, 4]);
    assert_eq!(set(&a, 4), vec![2, 3]);
    assert_eq!(set(&a, 2), vec![1, 4]);

    // Volumes: 2 turns 4 down by 20 steps (−10 dB) and silences 1.
    a.set_volume(now, p(2), p(4), Volume::new(-20).expect("in range"));
    a.set_volume(now, p(2), p(1), Volume::SILENT);
    refresh(&mut a, now, &[1, 2, 3, 4]);
    assert_eq!(set(&a, 2), vec![4]);
    let g = a.heard(p(2), p(4)).expect("heard").gain;
    assert!((20.0 * g.log10() + 10.0).abs() < 1e-3, "{g}");
    assert!(!a.hears_public_mix(p(2), &[p(4)]));
    assert!(
        a.hears_public_mix(p(1), &[p(3), p(4)]),
        "3 talks to its team only"
    );

    // Everything back: open again, everyone told.
    for id in [1, 3] {
        a.set_target(now, p(id), TalkTarget::Room);
    }
    a.set_volume(now, p(2), p(4), Volume::UNCHANGED);
    a.set_volume(now, p(2), p(1), Volume::UNCHANGED);
    let changed = refresh(&mut a, now, &[1, 2, 3, 4]);
    assert!(a.is_open());
    assert_eq!(changed.len(), 4);
}

#[test]
fn a_spatial_room_adds_team_shout_and_whisper_to_range() {
    let now = t0();
    let settings = SpatialSettings {
        audible_distance: 10.0,
        conversational_distance: 1.0,
        max_audible: 1,
        ..SpatialSettings::default()
    };
    let mut a = Audibility::new(Some(settings));
    // 1 at the origin; 2 near it; 3 far away (team mate of 1); 4 far (shouter); 5 far.
    for (id, x) in [(1, 0.0), (2, 5.0), (3, 500.0), (4, -500.0), (5, 900.0)] {
        a.set_position(now, p(id), at(x, 0.0))
            .expect("spatial")
            .expect("valid");
    }
    let red = TeamId::new("red").expect("team");
    a.set_team(now, p(1), Some(red.clone()));
    a.set_team(now, p(3), Some(red));
    a.set_shout(now, p(4), true);
    refresh(&mut a, now, &[1, 2, 3, 4, 5]);
    assert_eq!(set(&a, 1), vec![2, 3, 4], "range, team mate, shouter");
    let team = a.heard(p(1), p(3)).expect("team mate");
    assert_eq!(team.gain, 1.0);
    assert!(team.pan > 0.9, "east of a listener facing north: right");
    assert!(a.heard(p(1), p(2)).expect("in range").gain < 1.0);
    assert_eq!(set(&a, 5), vec![4], "only the shouter reaches 5");

    // max_audible counts only voices by distance: 2 still heard with 3 and 4.
    // 2 whispers to 5 (far away): 1 no longer hears 2, 5 does, at full level.
    a.set_target(now, p(2), TalkTarget::Whisper(vec![p(5)]));
    let later = now + Duration::from_millis(1);
    refresh(&mut a, later, &[1, 2, 3, 4, 5]);
    assert_eq!(set(&a, 1), vec![3, 4]);
    assert_eq!(set(&a, 5), vec![2, 4]);
    assert_eq!(a.heard(p(5), p(2)).expect("whisper").gain, 1.0);

    // A shouter whispering is a whisper; a team talker is heard by its team only.
    a.set_target(now, p(4), TalkTarget::Whisper(vec![p(3)]));
    a.set_target(now, p(1), TalkTarget::Team);
    refresh(&mut a, later, &[1, 2, 3, 4, 5]);
    assert_eq!(set(&a, 5), vec![2]);
    assert_eq!(set(&a, 3), vec![1, 4]);
    assert!(
        !a.hears(p(2), p(1)),
        "1 talks to its team; 2 is next to it but not in it"
    );
}
