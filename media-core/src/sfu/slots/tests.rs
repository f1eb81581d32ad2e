use super::select::holds_the_loudest;
use super::*;
use crate::testkit::sim::Rng;
use std::collections::BTreeSet;

const MS20: Duration = crate::audio::FRAME_DURATION;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn p(id: u64) -> ParticipantId {
    ParticipantId(id)
}

struct Room {
    sel: SlotSelector,
    t: Instant,
    /// Subscriber → number of assignment changes seen.
    changes: HashMap<ParticipantId, usize>,
}

impl Room {
    fn new(k: usize, ids: &[u64]) -> Self {
        Self::with_config(k, ids, SelectorConfig::default())
    }

    fn with_config(k: usize, ids: &[u64], config: SelectorConfig) -> Self {
        let mut sel = SlotSelector::new(k, config);
        for &id in ids {
            sel.add_participant(p(id), true, true);
        }
        Self {
            sel,
            t: t0(),
            changes: HashMap::new(),
        }
    }

    /// One 20 ms tick: a packet from each `(id, level)`, then an update.
    fn tick(&mut self, levels: &[(u64, u8)]) {
        for &(id, level) in levels {
            self.sel.on_audio(self.t, p(id), level, None);
            // The hot path is consulted per packet.
            let _ = self.sel.routes(p(id));
        }
        self.sel.update(self.t);
        for s in self.sel.drain_changes().collect::<Vec<_>>() {
            *self.changes.entry(s).or_default() += 1;
        }
        self.check();
        self.t += MS20;
    }

    fn run(&mut self, levels: &[(u64, u8)], ms: u64) {
        for _ in 0..ms / 20 {
            self.tick(levels);
        }
    }

    fn heard(&self, sub: u64) -> BTreeSet<u64> {
        self.sel
            .assignment(p(sub))
            .iter()
            .flatten()
            .map(|p| p.0)
            .collect()
    }

    /// Invariants: routes mirror assignments exactly; no self-routes; no duplicates; only present,
    /// publishing participants are heard; changes were drained.
    fn check(&self) {
        let sel = &self.sel;
        let mut from_assignments = BTreeSet::new();
        for m in sel.members.iter().flatten() {
            assert_eq!(m.assignment.len(), if m.subscribes { sel.k } else { 0 });
            let mut seen = BTreeSet::new();
            for (i, a) in m.assignment.iter().enumerate() {
                assert_eq!(*a, m.slots[i].map(|h| h.id));
                if let Some(pubr) = a {
                    assert_ne!(*pubr, m.id, "self-assignment");
                    assert!(
                        seen.insert(*pubr),
                        "duplicate publisher in {}'s slots",
                        m.id
                    );
                    assert!(sel.is_publishing(*pubr), "{pubr} heard but not publishing");
                    from_assignments.insert((pubr.0, m.id.0, i as u8));
                }
            }
        }
        let mut from_routes = BTreeSet::new();
        for m in sel.members.iter().flatten() {
            for &(sub, slot) in sel.routes(m.id) {
                assert_ne!(sub, m.id, "self-route");
                assert!(sel.contains(sub));
                assert!(from_routes.insert((m.id.0, sub.0, slot.0)));
            }
        }
        assert_eq!(from_assignments, from_routes);
        assert!(!sel.has_changes());
    }

    /// The last update skipped the subscribers that hold their loudest others (`holds_the_loudest`),
    /// whether it looked at them or knew from the update before: each holds them still, and the full
    /// assignment would have changed nothing. Returns how many there were.
    fn check_settled_skip(&self) -> usize {
        let sel = &self.sel;
        let now = self.t - MS20;
        let loudest = &sel.candidates[..sel.candidates.len().min(sel.k + 1)];
        let mut settled = 0;
        for (i, m) in sel.members.iter().enumerate() {
            let Some(m) = m else { continue };
            if !m.subscribes || m.slots.is_empty() || !sel.head_valid || sel.unsettled.contains(&i)
            {
                continue;
            }
            assert!(
                holds_the_loudest(&m.slots, loudest, m.id),
                "{} was left out as settled but does not hold its loudest others",
                m.id
            );
            let mut slots = m.slots.clone();
            assert!(
                !sel.assign(now, m.id, &mut slots, &sel.candidates, false),
                "{} was skipped but its slots would change",
                m.id
            );
            settled += 1;
        }
        settled
    }
}

#[test]
fn small_rooms_everybody_hears_everybody() {
    for k in 1..=4usize {
        let ids: Vec<u64> = (1..=k as u64 + 1).collect();
        let mut room = Room::new(k, &ids);
        // Very different levels, one of them silent (but sending).
        let levels: Vec<(u64, u8)> = ids
            .iter()
            .map(|&id| (id, if id == 1 { 127 } else { 10 * id as u8 }))
            .collect();
        room.tick(&levels);
        for &id in &ids {
            let expected: BTreeSet<u64> = ids.iter().copied().filter(|&o| o != id).collect();
            assert_eq!(room.heard(id), expected, "k={k} subscriber {id}");
        }
        room.run(&levels, 3000);
        for &id in &ids {
            assert_eq!(room.heard(id).len(), k);
        }
        // Each subscriber changed exactly once (the initial fill).
        assert!(room.changes.values().all(|&n| n == 1), "{:?}", room.changes);
    }
}

#[test]
fn fewer_publishers_than_slots_leaves_slots_empty() {
    let mut room = Room::new(3, &[1, 2]);
    room.tick(&[(1, 30), (2, 30)]);
    assert_eq!(room.sel.assignment(p(1)), &[Some(p(2)), None, None]);
    assert_eq!(room.sel.assignment(p(2)), &[Some(p(1)), None, None]);
    assert_eq!(room.sel.routes(p(1)), &[(p(2), SlotIndex(0))]);
}

#[test]
fn silent_participants_are_not_eligible_until_they_send() {
    let mut room = Room::new(3, &[1, 2, 3]);
    room.tick(&[(1, 30)]);
    assert!(room.heard(1).is_empty());
    assert_eq!(room.heard(2), BTreeSet::from([1]));
    room.tick(&[(1, 30), (3, 127)]);
    assert_eq!(room.heard(1), BTreeSet::from([3]));
    assert_eq!(room.heard(2), BTreeSet::from([1, 3]));
}

const FIVE: [(u64, u8); 5] = [(1, 10), (2, 20), (3, 30), (4, 40), (5, 48)];

fn assert_five_converged(room: &Room) {
    assert_eq!(room.heard(5), BTreeSet::from([1, 2, 3]));
    assert_eq!(room.heard(4), BTreeSet::from([1, 2, 3]));
    assert_eq!(room.heard(3), BTreeSet::from([1, 2, 4]));
    assert_eq!(room.heard(2), BTreeSet::from([1, 3, 4]));
    assert_eq!(room.heard(1), BTreeSet::from([2, 3, 4]));
    // The quietest publisher is routed nowhere; the loudest to everybody else.
    assert!(room.sel.routes(p(5)).is_empty());
    assert_eq!(room.sel.routes(p(1)).len(), 4);
}

#[test]
fn five_publishers_three_slots_loudest_win() {
    let mut room = Room::new(3, &[1, 2, 3, 4, 5]);
    room.tick(&FIVE);
    assert_five_converged(&room);
    room.run(&FIVE, 5000);
    assert_five_converged(&room);
    assert!(
        room.changes.values().all(|&n| n == 1),
        "no switching in a steady room: {:?}",
        room.changes
    );
    // The loudest slot is the first filled.
    assert_eq!(room.sel.assignment(p(5))[0], Some(p(1)));
}

#[test]
fn five_publishers_converge_when_the_quiet_ones_start_first() {
    let mut room = Room::new(3, &[1, 2, 3, 4, 5]);
    // The quiet ones first: they take the free slots.
    room.run(&FIVE[2..], 200);
    assert_eq!(room.heard(1), BTreeSet::from([3, 4, 5]));
    room.run(&FIVE, 3000);
    assert_five_converged(&room);
}

#[test]
fn within_margin_alternation_does_not_switch() {
    // K = 1: a listener hears one of two speakers whose levels alternate 4 dB apart every 700 ms.
    let mut room = Room::new(1, &[1, 2]);
    room.sel.add_participant(p(9), false, true);
    room.tick(&[(1, 20), (2, 24)]);
    let first = room.sel.assignment(p(9))[0];
    assert_eq!(first, Some(p(1)));
    for round in 0..10 {
        let levels = if round % 2 == 0 {
            [(1, 24), (2, 20)]
        } else {
            [(1, 20), (2, 24)]
        };
        room.run(&levels, 700);
        assert_eq!(room.sel.assignment(p(9))[0], first, "round {round}");
    }
    assert_eq!(room.changes[&p(9)], 1);
}

#[test]
fn fluctuating_speech_does_not_flap() {
    // Two talkers with per-packet levels jumping ±6 dB around the same mean; K = 1.
    let mut room = Room::new(1, &[1, 2]);
    room.sel.add_participant(p(9), false, true);
    let mut rng = Rng::new(7);
    for _ in 0..500 {
        let a = 25 + rng.below(13) as u8 - 6;
        let b = 25 + rng.below(13) as u8 - 6;
        room.tick(&[(1, a), (2, b)]);
    }
    assert!(room.changes[&p(9)] <= 2, "{:?}", room.changes);
}

#[test]
fn clearly_louder_speaker_takes_the_quietest_slot_after_min_hold() {
    let mut room = Room::new(2, &[1, 2, 3]);
    room.sel.add_participant(p(9), false, true);
    room.run(&[(1, 20), (2, 30)], 1000);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1)), Some(p(2))]);
    // 3 starts clearly louder; 1 and 2 have held their slots for long.
    let start = room.t;
    let mut took = None;
    for _ in 0..25 {
        room.tick(&[(1, 20), (2, 30), (3, 12)]);
        if room.sel.slot_of(p(9), p(3)).is_some() && took.is_none() {
            took = Some(room.t - MS20 - start);
        }
    }
    // It took the quietest (2's) slot index, quickly.
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1)), Some(p(3))]);
    assert!(took.unwrap() <= Duration::from_millis(100), "{took:?}");
    // 1 hears 2 and 3 (free slot fill for 1 happened immediately as it has only 2 others).
    assert_eq!(room.heard(1), BTreeSet::from([2, 3]));
}

#[test]
fn min_hold_delays_a_switch() {
    let mut room = Room::new(1, &[1, 2]);
    room.sel.add_participant(p(9), false, true);
    room.tick(&[(1, 40)]);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1))]);
    let since = room.t - MS20;
    // 2 is much louder right away, but 1 keeps the slot for min_hold.
    let mut switched_at = None;
    for _ in 0..50 {
        let now = room.t;
        room.tick(&[(1, 40), (2, 10)]);
        if switched_at.is_none() && room.sel.assignment(p(9))[0] == Some(p(2)) {
            switched_at = Some(now - since);
        }
    }
    let at = switched_at.expect("switched");
    assert!(
        at >= Duration::from_millis(600) && at <= Duration::from_millis(640),
        "{at:?}"
    );
}

#[test]
fn a_fresh_incumbent_does_not_block_other_switches() {
    let mut room = Room::new(2, &[1, 2, 3, 4]);
    room.sel.add_participant(p(9), false, true);
    room.run(&[(1, 30), (2, 35)], 1000);
    // 3 takes 2's slot.
    room.run(&[(1, 30), (2, 35), (3, 20)], 100);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1)), Some(p(3))]);
    // 100 ms later 4 comes in loud: 3 is fresh, but 1 is past min_hold and 4 takes its slot.
    room.run(&[(1, 30), (2, 35), (3, 20), (4, 10)], 100);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(4)), Some(p(3))]);
}

#[test]
fn a_speaker_replaces_one_that_stopped_without_waiting_for_the_margin() {
    let mut room = Room::new(1, &[1, 2]);
    room.sel.add_participant(p(9), false, true);
    room.run(&[(1, 25), (2, 90)], 1000);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1))]);
    // 1 goes quiet (DTX: no packets); 2 starts speaking at about 1's former level.
    let start = room.t;
    let mut switched = None;
    for _ in 0..100 {
        room.tick(&[(2, 28)]);
        if switched.is_none() && room.sel.assignment(p(9)) == [Some(p(2))] {
            switched = Some(room.t - MS20 - start);
        }
    }
    // About when 1's hangover ends (500 ms), not when its level has decayed 3 + 6 dB below 2's.
    let at = switched.expect("switched");
    assert!(at <= Duration::from_millis(650), "{at:?}");
}

#[test]
fn muting_removes_from_routes_at_once_and_unmuting_restores() {
    let mut room = Room::new(3, &[1, 2, 3, 4]);
    let levels = [(1, 20), (2, 30), (3, 40), (4, 50)];
    room.run(&levels, 200);
    assert_eq!(room.sel.routes(p(1)).len(), 3);
    room.sel.set_publishing(p(1), false);
    assert!(room.sel.routes(p(1)).is_empty());
    for s in [2, 3, 4] {
        assert!(!room.heard(s).contains(&1));
    }
    let changed: BTreeSet<_> = room.sel.drain_changes().collect();
    assert_eq!(changed, BTreeSet::from([p(2), p(3), p(4)]));
    assert!(room.sel.next_update().is_some_and(|t| t <= room.t));
    // Packets while muted are ignored; 1 still hears the others.
    room.run(&levels, 1000);
    assert!(room.sel.routes(p(1)).is_empty());
    assert!(!room.sel.tracker(p(1)).unwrap().is_speaking(room.t));
    assert_eq!(room.heard(1), BTreeSet::from([2, 3, 4]));
    assert!(!room.sel.speakers(room.t).iter().any(|(id, _)| *id == p(1)));
    // Unmute: back with the next packet (free slots: everybody hears everybody in a room of K+1).
    room.sel.set_publishing(p(1), true);
    room.tick(&levels);
    for s in [2, 3, 4] {
        assert!(room.heard(s).contains(&1));
    }
}

#[test]
fn remove_participant_cleans_everything() {
    let mut room = Room::new(2, &[1, 2, 3, 4]);
    let levels = [(1, 20), (2, 30), (3, 40), (4, 50)];
    room.run(&levels, 1000);
    assert_eq!(room.heard(3), BTreeSet::from([1, 2]));
    assert!(room.sel.remove_participant(p(1)));
    assert!(!room.sel.remove_participant(p(1)));
    assert!(!room.sel.contains(p(1)));
    assert!(room.sel.routes(p(1)).is_empty());
    assert!(room.sel.assignment(p(1)).is_empty());
    for m in [2, 3, 4] {
        assert!(!room.heard(m).contains(&1));
        assert!(room.sel.routes(p(m)).iter().all(|(s, _)| *s != p(1)));
    }
    let changed: BTreeSet<_> = room.sel.drain_changes().collect();
    assert_eq!(changed, BTreeSet::from([p(2), p(3), p(4)]));
    // The freed slot is refilled at the next update, keeping the other slot's index.
    let before = room.sel.slot_of(p(3), p(2));
    room.run(&[(2, 30), (3, 40), (4, 50)], 20);
    assert_eq!(room.heard(3), BTreeSet::from([2, 4]));
    assert_eq!(room.sel.slot_of(p(3), p(2)), before);
    // A newcomer reusing the slab index starts clean.
    room.sel.add_participant(p(7), true, true);
    assert!(room.sel.routes(p(7)).is_empty());
    room.run(&[(2, 30), (3, 40), (4, 50)], 100);
    assert!(room.sel.routes(p(7)).is_empty());
    assert_eq!(room.heard(7), BTreeSet::from([2, 3]));
    assert_eq!(room.sel.len(), 4);
    // A subscriber removed while changed is not reported.
    room.sel.set_publishing(p(2), false);
    room.sel.remove_participant(p(3));
    let changed: Vec<_> = room.sel.drain_changes().collect();
    assert!(!changed.contains(&p(3)));
    assert!(changed.contains(&p(7)));
}

#[test]
fn listeners_and_publish_only_participants() {
    let mut room = Room::new(2, &[]);
    room.sel.add_participant(p(1), true, false); // publish only
    room.sel.add_participant(p(2), false, true); // listen only
    room.sel.add_participant(p(3), true, true);
    room.run(&[(1, 30), (2, 10), (3, 40)], 100);
    assert!(room.sel.assignment(p(1)).is_empty());
    assert_eq!(room.heard(2), BTreeSet::from([1, 3]));
    assert_eq!(room.heard(3), BTreeSet::from([1]));
    // The listener's packets are ignored.
    assert!(room.sel.routes(p(2)).is_empty());
    assert_eq!(room.sel.tracker(p(2)).unwrap().last_packet(), None);
    // A listener becoming a publisher.
    room.sel.set_publishing(p(2), true);
    room.run(&[(1, 30), (2, 10), (3, 40)], 40);
    assert_eq!(room.heard(3), BTreeSet::from([1, 2]));
    // Stopping subscribing clears the slots and reports the change.
    room.sel.set_subscribing(p(3), false);
    assert!(room.sel.assignment(p(3)).is_empty());
    assert_eq!(room.sel.drain_changes().collect::<Vec<_>>(), vec![p(3)]);
    room.run(&[(1, 30), (2, 10), (3, 40)], 40);
    // add_participant on an existing id only changes flags.
    room.sel.add_participant(p(3), true, true);
    room.run(&[(1, 30), (2, 10), (3, 40)], 40);
    assert_eq!(room.heard(3), BTreeSet::from([1, 2]));
}

#[test]
fn ties_are_broken_by_id() {
    let mut room = Room::new(2, &[4, 3, 2, 1]);
    room.sel.add_participant(p(9), false, true);
    room.tick(&[(4, 30), (3, 30), (2, 30), (1, 30)]);
    assert_eq!(room.sel.assignment(p(9)), &[Some(p(1)), Some(p(2))]);
    assert_eq!(room.sel.assignment(p(1)), &[Some(p(2)), Some(p(3))]);
}

#[test]
fn zero_and_too_many_slots() {
    let mut room = Room::new(0, &[1, 2]);
    room.run(&[(1, 30), (2, 30)], 100);
    assert!(room.sel.assignment(p(1)).is_empty());
    assert!(room.sel.routes(p(1)).is_empty());
    assert_eq!(
        SlotSelector::new(100, SelectorConfig::default()).slots(),
        MAX_SLOTS
    );
    let ids: Vec<u64> = (1..=17).collect();
    let mut room = Room::new(16, &ids);
    let levels: Vec<(u64, u8)> = ids.iter().map(|&id| (id, 20 + id as u8)).collect();
    room.run(&levels, 100);
    for id in ids {
        assert_eq!(room.heard(id).len(), 16);
    }
}

#[test]
fn update_scheduling_and_idle() {
    let mut room = Room::new(3, &[1, 2, 3]);
    assert_eq!(room.sel.next_update(), None);
    assert!(!room.sel.update(room.t));
    room.sel.on_audio(room.t, p(1), 30, None);
    assert_eq!(room.sel.next_update(), Some(room.t));
    assert!(room.sel.update(room.t));
    room.sel.drain_changes().for_each(drop);
    let due = room.t + MS20;
    assert_eq!(room.sel.next_update(), Some(due));
    assert!(!room.sel.update(due - Duration::from_millis(1)));
    assert!(room.sel.update(due));
    // A join makes an update due at once.
    room.sel.add_participant(p(4), true, true);
    assert!(room.sel.next_update().is_some_and(|t| t <= due));
    assert!(room.sel.update(due + Duration::from_millis(1)));
    assert_eq!(room.heard(4), BTreeSet::from([1]));
    room.sel.drain_changes().for_each(drop);
    // Silence: updates stop after a while, and resume with the next packet.
    let mut t = due;
    let mut ran = 0;
    for _ in 0..200 {
        t += MS20;
        if room.sel.next_update().is_some_and(|d| t >= d) {
            assert!(room.sel.update(t));
            ran += 1;
        }
    }
    assert!(room.sel.next_update().is_none());
    assert!((40..=60).contains(&ran), "{ran}");
    room.sel.on_audio(t, p(2), 30, None);
    assert!(room.sel.next_update().is_some());
}

/// A worker runs the periodic update at the first packet after it is due: the updates stay on their 20 ms
/// grid however late each runs (within an interval), so a switch is decided no later than on time plus that
/// lateness; a pause longer than an interval restarts the grid.
#[test]
fn late_updates_keep_their_grid() {
    let mut room = Room::new(3, &[1, 2, 3]);
    room.sel.on_audio(room.t, p(1), 30, None);
    assert!(room.sel.update(room.t));
    let grid = room.t;
    for n in 1..=10u32 {
        let due = grid + MS20 * n;
        assert_eq!(room.sel.next_update(), Some(due), "update {n}");
        let late = due + Duration::from_millis(u64::from(n % 4) * 6);
        room.sel.on_audio(late, p(1), 30, None);
        assert!(room.sel.update(late));
    }
    // Run more than an interval late: the grid restarts there.
    let due = grid + MS20 * 11;
    let late = due + MS20 + Duration::from_millis(3);
    room.sel.on_audio(late, p(1), 30, None);
    assert!(room.sel.update(late));
    assert_eq!(room.sel.next_update(), Some(late + MS20));
}

#[test]
fn speaking_onset_is_reported_within_300ms() {
    let mut room = Room::new(3, &[1, 2, 3]);
    let quiet = [(1, 90), (2, 90), (3, 90)];
    for _ in 0..50 {
        room.tick(&quiet);
        assert_eq!(room.sel.speakers_changed(room.t - MS20), None);
    }
    let onset = room.t;
    let mut reported = None;
    for _ in 0..20 {
        let now = room.t;
        room.tick(&[(1, 25), (2, 90), (3, 90)]);
        if let Some(s) = room.sel.speakers_changed(now) {
            reported = Some((now - onset, s));
            break;
        }
    }
    let (delay, speakers) = reported.expect("reported");
    assert!(delay < Duration::from_millis(300), "{delay:?}");
    assert_eq!(speakers.len(), 1);
    assert_eq!(speakers[0].0, p(1));
    assert!(speakers[0].1 > 0.4, "{speakers:?}");

    // Second speaker joins: reported at once, loudest first.
    let mut got = None;
    for _ in 0..10 {
        let now = room.t;
        room.tick(&[(1, 25), (2, 35), (3, 90)]);
        if let Some(s) = room.sel.speakers_changed(now) {
            got = Some(s);
            break;
        }
    }
    let s = got.expect("two speakers");
    assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![p(1), p(2)]);
    assert!(s[0].1 > s[1].1);

    // Steady levels (once converged): no more reports.
    for _ in 0..50 {
        let now = room.t;
        room.tick(&[(1, 25), (2, 35), (3, 90)]);
        room.sel.speakers_changed(now);
    }
    let mut n = 0;
    for _ in 0..25 {
        let now = room.t;
        room.tick(&[(1, 25), (2, 35), (3, 90)]);
        n += usize::from(room.sel.speakers_changed(now).is_some());
    }
    assert_eq!(n, 0);

    // Both stop: the empty list comes after the hangover.
    let stop = room.t;
    let mut empty_at = None;
    for _ in 0..50 {
        let now = room.t;
        room.tick(&quiet);
        if let Some(s) = room.sel.speakers_changed(now) {
            if s.is_empty() {
                empty_at = Some(now - stop);
                break;
            }
        }
    }
    let at = empty_at.expect("empty report");
    assert!(
        at >= Duration::from_millis(480) && at <= Duration::from_millis(560),
        "{at:?}"
    );
}

#[test]
fn level_only_speaker_updates_are_rate_limited() {
    let mut counts = Vec::new();
    for interval_ms in [200, 1_000] {
        let interval = Duration::from_millis(interval_ms);
        let config = SelectorConfig {
            speakers_interval: interval,
            ..SelectorConfig::default()
        };
        let mut room = Room::with_config(3, &[1, 2, 3], config);
        let mut reports = Vec::new();
        // A speaker whose level sweeps 10..=34 dB below full scale and back every 0.96 s: it speaks
        // throughout, and its display level keeps moving.
        let sweep = |i: u32| 10 + (i % 48).abs_diff(24) as u8;
        for i in 0..200u32 {
            let now = room.t;
            room.tick(&[(1, sweep(i)), (2, 90), (3, 90)]);
            if room.sel.speakers_changed(now).is_some() {
                reports.push(now);
            }
        }
        // No more often than the interval, and still some level updates.
        assert!(
            reports.len() >= 4,
            "{interval_ms} ms: {} reports in 4 s",
            reports.len()
        );
        counts.push(reports.len());
        for w in reports.windows(2) {
            assert!(w[1] - w[0] >= interval, "{:?}", w[1] - w[0]);
        }
        // A second speaker is reported as soon as it is detected, whatever the interval.
        let start = room.t;
        let mut joined = None;
        for i in 200..215u32 {
            let now = room.t;
            room.tick(&[(1, sweep(i)), (2, 20), (3, 90)]);
            if room.sel.speakers_changed(now).is_some_and(|s| s.len() == 2) {
                joined = Some(now);
                break;
            }
        }
        let joined = joined.expect("the second speaker is reported");
        assert!(
            joined - start < Duration::from_millis(300),
            "{interval_ms} ms: the new speaker was reported after {:?}",
            joined - start
        );
    }
    // The longer interval sends fewer reports for the same speech.
    assert!(counts[1] < counts[0], "{counts:?}");
}

#[test]
fn randomized_churn_keeps_invariants() {
    let mut rng = Rng::new(0xC0FFEE);
    let mut settled = 0;
    for k in [1usize, 3, 5] {
        let mut room = Room::new(k, &[]);
        let mut present: Vec<u64> = Vec::new();
        let mut levels: HashMap<u64, u8> = HashMap::new();
        let mut next_id = 1;
        for _ in 0..3000 {
            match rng.below(100) {
                0..=2 => {
                    let pubs = rng.below(4) != 0;
                    let subs = rng.below(4) != 0;
                    room.sel.add_participant(p(next_id), pubs, subs);
                    present.push(next_id);
                    levels.insert(next_id, rng.below(128) as u8);
                    next_id += 1;
                }
                3 if !present.is_empty() => {
                    let id = present.swap_remove(rng.below(present.len() as u64) as usize);
                    room.sel.remove_participant(p(id));
                    levels.remove(&id);
                }
                4 if !present.is_empty() => {
                    let id = present[rng.below(present.len() as u64) as usize];
                    let publishing = room.sel.is_publishing(p(id));
                    room.sel.set_publishing(p(id), !publishing);
                }
                5..=14 if !present.is_empty() => {
                    let id = present[rng.below(present.len() as u64) as usize];
                    levels.insert(id, rng.below(128) as u8);
                }
                _ => {}
            }
            // Some publishers are in DTX this tick.
            let tick: Vec<(u64, u8)> = present
                .iter()
                .filter(|_| rng.below(10) != 0)
                .map(|id| (*id, levels[id]))
                .collect();
            room.tick(&tick);
            settled += room.check_settled_skip();
            // Rooms of ≤ K+1 eligible participants: everybody hears every eligible other.
            let eligible: Vec<u64> = present
                .iter()
                .copied()
                .filter(|&id| {
                    let m = room.sel.member(p(id)).unwrap();
                    m.publishes && m.eligible
                })
                .collect();
            for &s in &present {
                let m = room.sel.member(p(s)).unwrap();
                if !m.subscribes {
                    continue;
                }
                let others = eligible.iter().filter(|&&e| e != s).count();
                assert_eq!(room.heard(s).len(), others.min(k));
            }
        }
    }
    assert!(
        settled > 1000,
        "the settled subscribers' skip ran {settled} times"
    );
}

/// In a spatial room a subscriber's slots go to the speakers it hears, ranked by level as heard: the
/// nearest of equally loud speakers, a louder far one over a quiet near one once the fade is outweighed,
/// never one out of range.
#[test]
fn spatial_slots_rank_by_level_as_heard() {
    use crate::audibility::Audibility;
    use vocab::{FadeModel, Position, SpatialSettings};

    let t = t0();
    let mut sel = SlotSelector::new(1, SelectorConfig::default());
    for id in 1..=4 {
        sel.add_participant(p(id), true, true);
    }
    // Inverse fade from 1: −6 dB per doubling of the distance. 1 listens at the origin; 2 is 2 away
    // (−6 dB), 3 is 8 away (−18 dB), 4 is out of range.
    let mut space = Audibility::new(Some(SpatialSettings {
        audible_distance: 20.0,
        conversational_distance: 1.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Inverse,
        max_audible: 10,
    }));
    let at = |x: f64| Position::new(x, 0.0, 0.0, 0.0).expect("valid");
    for (id, x) in [(1, 0.0), (2, 2.0), (3, -8.0), (4, 30.0)] {
        space
            .set_position(t, p(id), at(x))
            .expect("spatial")
            .expect("valid");
    }
    let ids: Vec<_> = (1..=4).map(p).collect();
    let tick =
        |sel: &mut SlotSelector, space: &mut Audibility, now: Instant, levels: &[(u64, u8)]| {
            for &(id, level) in levels {
                sel.on_audio(now, p(id), level, None);
            }
            let speakers: Vec<_> = ids
                .iter()
                .copied()
                .filter(|i| sel.is_eligible(*i))
                .collect();
            if space.refresh(now, &ids, &speakers, &mut Vec::new()) {
                sel.audibility_changed();
            }
            sel.update_in(now, Some(&*space));
            sel.drain_changes().for_each(drop);
        };
    // Equally loud: the nearer one.
    let mut now = t;
    for _ in 0..50 {
        tick(&mut sel, &mut space, now, &[(2, 30), (3, 30), (4, 0)]);
        now += MS20;
    }
    assert_eq!(sel.assignment(p(1)), &[Some(p(2))]);
    // The far one 24 dB louder (−18 + 24 = +6 over the near one's −6 − 0 … by the 6 dB margin): it takes
    // the slot. The one out of range never does, however loud.
    for _ in 0..100 {
        tick(&mut sel, &mut space, now, &[(2, 40), (3, 10), (4, 0)]);
        now += MS20;
    }
    assert_eq!(sel.assignment(p(1)), &[Some(p(3))]);
    // The near one walks out of range and the far one goes quiet: the slot stays with the only one heard.
    space
        .set_position(now, p(2), at(-30.0))
        .expect("spatial")
        .expect("valid");
    for _ in 0..50 {
        tick(&mut sel, &mut space, now, &[(2, 0), (3, 60), (4, 0)]);
        now += MS20;
    }
    assert_eq!(sel.assignment(p(1)), &[Some(p(3))]);
    // 4 hears nobody (nobody is within 20 of it) and nobody is ever routed to itself.
    assert_eq!(sel.assignment(p(4)), &[None]);
}
