use std::time::{Duration, Instant};

use super::*;
use vocab::FadeModel;

fn p(x: f64, y: f64) -> Position {
    Position::new(x, y, 0.0, 0.0).expect("valid")
}

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn ids(n: u64) -> Vec<ParticipantId> {
    (1..=n).map(ParticipantId).collect()
}

#[test]
fn equal_power_pan() {
    for pan in [-1.0f32, -0.5, 0.0, 0.3, 1.0] {
        let h = Hearing {
            distance: 3.0,
            gain: 0.5,
            pan,
        };
        let (l, r) = h.stereo_gains();
        assert!((l * l + r * r - 0.25).abs() < 1e-6, "energy at pan {pan}");
        assert_eq!(l > r, pan < 0.0, "side at pan {pan}");
    }
    let centre = Hearing {
        distance: 0.0,
        gain: 1.0,
        pan: 0.0,
    };
    let (l, r) = centre.stereo_gains();
    assert!((l - r).abs() < 1e-6 && (l - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    let right = Hearing { pan: 1.0, ..centre };
    assert!(right.stereo_gains().0.abs() < 1e-6);
    assert!((centre.gain_db()).abs() < 1e-6);
    assert!(
        (Hearing {
            gain: 0.5,
            ..centre
        }
        .gain_db()
            + 6.0206)
            .abs()
            < 1e-3
    );
}

#[test]
fn audible_sets_are_the_nearest_in_range() {
    let now = t0();
    let settings = SpatialSettings {
        audible_distance: 10.0,
        conversational_distance: 1.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Linear,
        max_audible: 2,
    };
    let mut space = Space::new(settings);
    let all = ids(5);
    // 1 listens at the origin; 2 at 3, 3 at 6 (left), 4 at 9, 5 at 12 (out of range).
    space.set_position(now, all[0], p(0.0, 0.0)).expect("valid");
    space.set_position(now, all[1], p(3.0, 0.0)).expect("valid");
    space
        .set_position(now, all[2], p(-6.0, 0.0))
        .expect("valid");
    space.set_position(now, all[3], p(0.0, 9.0)).expect("valid");
    space
        .set_position(now, all[4], p(12.0, 0.0))
        .expect("valid");
    assert_eq!(space.next_refresh(), Some(now));
    let mut changed = Vec::new();
    assert!(space.refresh(now, &all, &all, &mut changed));
    assert_eq!(changed, all, "everyone's set is new");
    let heard: Vec<_> = space.audible(all[0]).iter().map(|h| h.speaker).collect();
    assert_eq!(heard, vec![all[1], all[2]], "nearest two of three in range");
    let two = space.heard(all[0], all[1]).expect("heard");
    assert!((two.hearing.gain - (1.0 - 2.0 / 9.0)).abs() < 1e-6);
    assert!((two.hearing.pan - 1.0).abs() < 1e-6);
    assert!(space.heard(all[0], all[2]).expect("heard").hearing.pan < -0.99);
    assert!(space.heard(all[0], all[0]).is_none(), "nobody hears itself");
    assert!(space.hearing(all[0], all[4]).is_none(), "out of range");
    assert!(
        space.hearing(all[0], all[3]).is_some(),
        "in range, cut by max_audible"
    );
    // Nothing changed: no refresh. A move is refreshed no sooner than 100 ms after the last one.
    assert_eq!(space.next_refresh(), None);
    let later = now + Duration::from_millis(30);
    space
        .set_position(later, all[1], p(20.0, 0.0))
        .expect("valid");
    assert_eq!(space.next_refresh(), Some(now + REFRESH_INTERVAL));
    assert!(!space.refresh(later, &all, &all, &mut changed));
    changed.clear();
    assert!(space.refresh(now + REFRESH_INTERVAL, &all, &all, &mut changed));
    let heard: Vec<_> = space.audible(all[0]).iter().map(|h| h.speaker).collect();
    assert_eq!(heard, vec![all[2], all[3]]);
    assert!(changed.contains(&all[0]) && changed.contains(&all[1]));
    // Bad positions change nothing; an unplaced participant hears and is heard by nobody.
    assert_eq!(
        space.set_position(later, all[2], p(0.0, 0.0).with_x(f64::NAN)),
        Err(SpatialError::NotFinite)
    );
    assert_eq!(space.position(all[2]), Some(&p(-6.0, 0.0)));
    let stranger = ParticipantId(99);
    assert!(space.hearing(stranger, all[0]).is_none());
    assert!(space.hearing(all[0], stranger).is_none());
    space.remove(later, all[2]);
    assert!(space.hearing(all[0], all[2]).is_none());
}

trait WithX {
    fn with_x(self, x: f64) -> Position;
}

impl WithX for Position {
    fn with_x(self, x: f64) -> Position {
        Position { x, ..self }
    }
}

/// The grid the refresh uses finds exactly what comparing every pair finds, across cell borders, in
/// three dimensions and at the world's edges.
#[test]
fn refresh_finds_what_every_pair_finds() {
    let now = t0();
    let settings = SpatialSettings {
        audible_distance: 7.0,
        conversational_distance: 1.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Inverse,
        max_audible: 1000,
    };
    let mut space = Space::new(settings);
    let all = ids(300);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = |span: f64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 1_000_000) as f64 / 1_000_000.0 * span - span / 2.0
    };
    for (i, &id) in all.iter().enumerate() {
        let p = if i < 10 {
            // At the edge of the world, and exactly on cell borders.
            Position::new(1.0e6 - i as f64 * 3.5, 7.0 * i as f64, 0.0, 0.0).expect("valid")
        } else {
            Position::new(next(60.0), next(60.0), next(10.0), next(360.0)).expect("valid")
        };
        space.set_position(now, id, p).expect("valid");
    }
    assert!(space.refresh(now, &all, &all[..150], &mut Vec::new()));
    // The same world where each hears only its nearest three.
    let mut nearest = Space::new(SpatialSettings {
        max_audible: 3,
        ..settings
    });
    for &id in &all {
        let p = *space.position(id).expect("placed");
        nearest.set_position(now, id, p).expect("valid");
    }
    assert!(nearest.refresh(now, &all, &all[..150], &mut Vec::new()));
    for &listener in &all {
        let mut want: Vec<Heard> = all[..150]
            .iter()
            .filter_map(|&s| {
                space.hearing(listener, s).map(|hearing| Heard {
                    speaker: s,
                    position: *space.position(s).expect("placed"),
                    hearing,
                })
            })
            .collect();
        want.sort_by(|a, b| {
            a.hearing
                .distance
                .total_cmp(&b.hearing.distance)
                .then(a.speaker.cmp(&b.speaker))
        });
        assert_eq!(space.audible(listener), want.as_slice(), "{listener:?}");
        want.truncate(3);
        assert_eq!(
            nearest.audible(listener),
            want.as_slice(),
            "{listener:?}, nearest 3"
        );
    }
    assert!(
        all.iter().any(|&l| space.audible(l).len() > 3),
        "a dense enough world"
    );
}
