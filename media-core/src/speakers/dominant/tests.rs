use super::*;
use crate::testkit::sim::Rng;

const FRAME: Duration = crate::audio::FRAME_DURATION;

/// The base of virtual time; only ever offset by durations.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn id(n: u64) -> ParticipantId {
    ParticipantId(n)
}

/// What one participant sends in a frame.
#[derive(Clone, Copy, Debug)]
enum Voice {
    /// No packets (DTX or muted).
    Quiet,
    /// Packets at level 127.
    Silence,
    /// Speech-like: voiced frames at −20..−40 dBov, one in five a pause at −55..−70 dBov.
    Speech,
    /// A steady noisy microphone at −45 ± 1 dBov.
    Noise,
    /// One loud frame.
    Click,
}

fn level(voice: Voice, rng: &mut Rng) -> Option<u8> {
    match voice {
        Voice::Quiet => None,
        Voice::Silence => Some(127),
        Voice::Speech if rng.chance(0.2) => Some(55 + rng.below(16) as u8),
        Voice::Speech => Some(20 + rng.below(21) as u8),
        Voice::Noise => Some(44 + rng.below(3) as u8),
        Voice::Click => Some(8),
    }
}

/// A room of participants driven frame by frame in virtual time.
struct Room {
    ds: DominantSpeaker,
    base: Instant,
    frame: u32,
    rng: Rng,
    /// (time, new dominant) for every change `update` reported.
    changes: Vec<(Duration, ParticipantId)>,
}

impl Room {
    fn new(ids: &[u64], seed: u64) -> Self {
        let mut ds = DominantSpeaker::new(DominantConfig::default());
        for n in ids {
            ds.add(id(*n));
        }
        Self {
            ds,
            base: t0(),
            frame: 0,
            rng: Rng::new(seed),
            changes: Vec::new(),
        }
    }

    fn now(&self) -> Duration {
        FRAME * self.frame
    }

    /// Runs `frames` frames; `voice(participant, time)` says what each one sends. Levels arrive with a
    /// few milliseconds of jitter inside their frame.
    fn run(&mut self, frames: u32, voice: impl Fn(u64, Duration) -> Voice, ids: &[u64]) {
        for _ in 0..frames {
            let t = self.now();
            for n in ids {
                if let Some(level) = level(voice(*n, t), &mut self.rng) {
                    let jitter = Duration::from_micros(self.rng.below(15_000));
                    self.ds.on_level(id(*n), self.base + t + jitter, level);
                }
            }
            self.frame += 1;
            let now = self.now();
            if let Some(new) = self.ds.update(self.base + now) {
                self.changes.push((now, new));
            }
        }
    }

    fn frames(d: Duration) -> u32 {
        (d.as_millis() / FRAME.as_millis()) as u32
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_single_talker_becomes_dominant_quickly() {
    let ids = [1, 2, 3];
    let mut room = Room::new(&ids, 1);
    room.run(
        Room::frames(ms(2000)),
        |n, _| {
            if n == 2 {
                Voice::Speech
            } else {
                Voice::Silence
            }
        },
        &ids,
    );
    assert_eq!(room.ds.dominant(), Some(id(2)));
    assert_eq!(room.changes.len(), 1, "{:?}", room.changes);
    let (at, who) = room.changes[0];
    assert_eq!(who, id(2));
    assert!(at <= ms(600), "took {at:?}");
}

#[test]
fn nobody_is_dominant_in_silence() {
    let ids = [1, 2];
    let mut room = Room::new(&ids, 2);
    room.run(
        Room::frames(ms(3000)),
        |n, _| if n == 1 { Voice::Quiet } else { Voice::Silence },
        &ids,
    );
    assert_eq!(room.ds.dominant(), None);
    assert!(room.changes.is_empty());
}

#[test]
fn a_cough_or_click_does_not_steal_dominance() {
    let ids = [1, 2, 3];
    let mut room = Room::new(&ids, 3);
    let voice = |n: u64, t: Duration| match n {
        1 => Voice::Speech,
        // A two-frame cough at 2 s, a one-frame click at 2.5 s, and another two-frame cough at 3.1 s.
        2 if (t >= ms(2000) && t < ms(2040)) || (t >= ms(3100) && t < ms(3140)) => Voice::Click,
        3 if t >= ms(2500) && t < ms(2520) => Voice::Click,
        _ => Voice::Silence,
    };
    room.run(Room::frames(ms(5000)), voice, &ids);
    assert_eq!(
        room.changes.iter().map(|c| c.1).collect::<Vec<_>>(),
        [id(1)]
    );
}

#[test]
fn a_sustained_new_speaker_takes_over_within_a_second() {
    let ids = [1, 2];
    let mut room = Room::new(&ids, 4);
    let voice = |n: u64, t: Duration| match (n, t < ms(4000)) {
        (1, true) | (2, false) => Voice::Speech,
        _ => Voice::Silence,
    };
    room.run(Room::frames(ms(8000)), voice, &ids);
    let who: Vec<ParticipantId> = room.changes.iter().map(|c| c.1).collect();
    assert_eq!(who, [id(1), id(2)], "{:?}", room.changes);
    let handover = room.changes[1].0 - ms(4000);
    assert!(handover <= ms(1100), "took {handover:?}");
    assert!(
        handover >= ms(300),
        "switched before the old speaker's long-term activity decayed"
    );
}

#[test]
fn the_dominant_speaker_keeps_the_floor_in_double_talk() {
    let ids = [1, 2];
    let mut room = Room::new(&ids, 5);
    let voice = |n: u64, t: Duration| match n {
        1 => Voice::Speech,
        _ if t >= ms(2000) => Voice::Speech,
        _ => Voice::Silence,
    };
    room.run(Room::frames(ms(6000)), voice, &ids);
    assert_eq!(
        room.changes.iter().map(|c| c.1).collect::<Vec<_>>(),
        [id(1)]
    );
}

#[test]
fn steady_background_noise_does_not_beat_a_talker() {
    let ids = [1, 2];
    let mut room = Room::new(&ids, 6);
    // 1 has a noisy microphone all along; 2 starts talking after 2 s, pauses 6..7 s, talks again.
    let voice = |n: u64, t: Duration| match n {
        1 => Voice::Noise,
        _ if t >= ms(2000) && !(t >= ms(6000) && t < ms(7000)) => Voice::Speech,
        _ => Voice::Quiet,
    };
    room.run(Room::frames(ms(10_000)), voice, &ids);
    let who: Vec<ParticipantId> = room.changes.iter().map(|c| c.1).collect();
    assert_eq!(who, [id(2)], "{:?}", room.changes);
    assert!(room.changes[0].0 <= ms(2600));
    let noise = room.ds.scores(id(1)).expect("tracked");
    let talker = room.ds.scores(id(2)).expect("tracked");
    assert!(talker[2] > noise[2], "{talker:?} vs {noise:?}");
}

#[test]
fn removing_the_dominant_speaker_hands_over_at_the_next_decision() {
    let ids = [1, 2, 3];
    let mut room = Room::new(&ids, 7);
    let voice = |n: u64, t: Duration| match n {
        1 => Voice::Speech,
        2 if t >= ms(1000) => Voice::Speech,
        _ => Voice::Silence,
    };
    room.run(Room::frames(ms(3000)), voice, &ids);
    assert_eq!(room.ds.dominant(), Some(id(1)));
    room.ds.remove(id(1));
    assert_eq!(room.ds.dominant(), None);
    assert_eq!(room.ds.scores(id(1)), None);
    let before = room.changes.len();
    room.run(Room::frames(ms(400)), voice, &[2, 3]);
    assert_eq!(
        room.changes[before..]
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [id(2)]
    );
    assert!(room.changes[before].0 - ms(3000) <= ms(320));
    // Levels for a removed participant are ignored.
    room.ds.on_level(id(1), room.base + room.now(), 10);
    room.run(Room::frames(ms(1000)), voice, &[2, 3]);
    assert_eq!(room.ds.dominant(), Some(id(2)));
}

#[test]
fn ties_go_to_the_lowest_id_and_runs_are_reproducible() {
    // Two participants sending identical levels: the lower id wins, in any order of adding.
    let mut ds = DominantSpeaker::new(DominantConfig::default());
    ds.add(id(9));
    ds.add(id(4));
    ds.add(id(4));
    let base = t0();
    let mut rng = Rng::new(8);
    let mut first = None;
    for frame in 0..100u32 {
        let t = base + FRAME * frame;
        let level = level(Voice::Speech, &mut rng).expect("speech has levels");
        ds.on_level(id(9), t, level);
        ds.on_level(id(4), t, level);
        if let Some(new) = ds.update(t + FRAME) {
            first.get_or_insert(new);
        }
    }
    assert_eq!(first, Some(id(4)));
    assert_eq!(ds.dominant(), Some(id(4)));
    assert_eq!(ds.scores(id(4)), ds.scores(id(9)));

    let run = |seed| {
        let ids = [1, 2, 3];
        let mut room = Room::new(&ids, seed);
        let voice = |n: u64, t: Duration| {
            let turn = (t.as_millis() / 2300) as u64 % 3 + 1;
            if n == turn {
                Voice::Speech
            } else {
                Voice::Silence
            }
        };
        room.run(Room::frames(ms(12_000)), voice, &ids);
        room.changes
    };
    let changes = run(9);
    assert!(changes.len() >= 4, "{changes:?}");
    assert_eq!(changes, run(9));
}

#[test]
fn a_long_pause_between_updates_counts_as_silence() {
    let ids = [1];
    let mut room = Room::new(&ids, 10);
    room.run(Room::frames(ms(2000)), |_, _| Voice::Speech, &ids);
    assert!(room.ds.scores(id(1)).expect("tracked")[2] > 100.0);
    // No updates and no levels for 10 s, then one update: everything decayed, still dominant.
    room.frame += Room::frames(ms(10_000));
    room.run(1, |_, _| Voice::Quiet, &ids);
    let scores = room.ds.scores(id(1)).expect("tracked");
    assert_eq!(
        scores,
        [
            room.ds.scores[0][0],
            room.ds.scores[1][0],
            room.ds.scores[2][0]
        ]
    );
    assert_eq!(room.ds.dominant(), Some(id(1)));
}

#[test]
fn score_tables_follow_the_model() {
    let ds = DominantSpeaker::new(DominantConfig::default());
    // Long and medium scores grow with activity (large noise rates), and are finite.
    for (scale, n_max) in [(1, N2), (2, N3)] {
        for n in 0..n_max {
            assert!(
                ds.scores[scale][n + 1] > ds.scores[scale][n],
                "scale {scale} n {n}"
            );
        }
    }
    // ln(C(13,0)·0.5¹³ / 0.78) = 13·ln 0.5 − ln 0.78
    let expected = 13.0 * 0.5f64.ln() - 0.78f64.ln();
    assert!((ds.scores[0][0] - expected).abs() < 1e-9);
    // ln C(5,2) = ln 10
    let expected = 10f64.ln() + 5.0 * 0.5f64.ln() - 24f64.ln() + 48.0;
    assert!((ds.scores[1][2] - expected).abs() < 1e-9);
    assert!(ds.scores[0].iter().all(|s| s.is_finite()));
}

#[test]
fn the_noise_floor_follows_the_quietest_recent_level() {
    let mut speaker = Speaker::new(id(1));
    assert_eq!(update_floor(&mut speaker, 0, 15, 40), 40);
    assert_eq!(update_floor(&mut speaker, 0, 15, 60), 60);
    assert_eq!(update_floor(&mut speaker, 1, 15, 30), 60);
    // 15 slots later the quiet slot has been overwritten.
    assert_eq!(update_floor(&mut speaker, 15, 15, 30), 30);
    // A jump past the whole window forgets everything.
    assert_eq!(update_floor(&mut speaker, 100, 15, 35), 35);
}
