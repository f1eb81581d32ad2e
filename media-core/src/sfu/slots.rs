//! Audio slot selection: which K publishers each subscriber hears.
//!
//! Every subscriber has K slots (1..=16, the room's `slots` setting) and hears the K loudest *other*
//! publishers in them, the way Google Meet forwards the three loudest speakers. A [`SlotSelector`] owns one
//! room's selection:
//!
//! - per packet, [`SlotSelector::on_audio`] feeds the publisher's RFC 6464 level into its
//!   [`LevelTracker`] (O(1), no allocation), and [`SlotSelector::routes`] answers, for that packet, which
//!   (subscriber, slot) pairs it goes to (O(1), precomputed);
//! - every [`SelectorConfig::update_interval`] (20 ms), [`SlotSelector::update`] re-ranks the publishers and
//!   reassigns slots; [`SlotSelector::drain_changes`] then lists the subscribers whose assignment changed (they
//!   get a `slots` event before the new speaker's first packet);
//! - [`SlotSelector::speakers_changed`] yields the `speakers` event when due.
//!
//! # Rules
//!
//! - Nobody is ever routed their own audio.
//! - A publisher becomes *eligible* with its first packet (after joining or unmuting). A subscriber's free
//!   slot is filled at the next update with the loudest eligible publisher it does not hear yet, however quiet:
//!   in a room of at most K + 1 participants everybody hears everybody.
//! - With all K slots full, the loudest unslotted publisher replaces the quietest incumbent that has held its
//!   slot for at least [`SelectorConfig::min_hold`], and only if it is louder by at least
//!   [`SelectorConfig::switch_margin_db`]. (Only incumbents past `min_hold` are considered, so one freshly
//!   switched-in slot does not hold back a switch in another.) Up to K replacements can happen per update.
//! - Loudness is the publisher's [`LevelTracker::score`] (smoothed dB) plus
//!   [`SelectorConfig::speaking_bonus_db`] while it [is speaking](LevelTracker::is_speaking). With the default
//!   bonus equal to the margin, a speaking publisher replaces an incumbent that stopped speaking (500 ms of
//!   hangover) as soon as it is at least as loud, instead of waiting for the incumbent's level to decay by the
//!   margin; between two speakers (or two non-speakers) the full margin applies.
//! - Assignments are sticky: a publisher keeps its slot index for as long as it is selected.
//! - A removed or muted participant leaves all slots and routes at once (the freed slots are refilled at the
//!   next update, which becomes due immediately).
//! - Everything is deterministic: ties are broken by participant id (lower id = louder).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::{ParticipantId, SlotIndex};
use crate::speakers::levels::{LevelConfig, LevelTracker};

/// The most slots a subscriber can have.
pub use vocab::MAX_SLOTS;

/// Tuning of a [`SlotSelector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectorConfig {
    /// How much louder (dB) a publisher must be than an incumbent to take its slot.
    pub switch_margin_db: f32,
    /// How long a publisher keeps a slot before a louder one may take it.
    pub min_hold: Duration,
    /// How often [`SlotSelector::update`] recomputes the assignment.
    pub update_interval: Duration,
    /// Added to the loudness of publishers that are speaking (see the [module docs](self)).
    pub speaking_bonus_db: f32,
    /// Minimum time between two `speakers` reports whose set of speakers is unchanged.
    pub speakers_interval: Duration,
    /// A change in some speaker's display level (0..1) smaller than this is not worth a `speakers` report.
    pub speakers_min_level_change: f32,
    /// Tuning of the per-publisher level trackers.
    pub levels: LevelConfig,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            switch_margin_db: 6.0,
            min_hold: Duration::from_millis(600),
            update_interval: Duration::from_millis(20),
            speaking_bonus_db: 6.0,
            speakers_interval: Duration::from_millis(200),
            speakers_min_level_change: 0.05,
            levels: LevelConfig::default(),
        }
    }
}

/// A publisher holding a slot.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: ParticipantId,
    /// The publisher's index in `SlotSelector::members` (checked against `id` before use).
    idx: usize,
    /// When it took the slot.
    since: Instant,
}

#[derive(Debug)]
struct Member {
    id: ParticipantId,
    publishes: bool,
    subscribes: bool,
    /// Publishing and has sent a packet since it started publishing.
    eligible: bool,
    tracker: LevelTracker,
    /// Scratch for `update`: whether it is a candidate this round, and its priority.
    candidate: bool,
    priority: f32,
    /// As subscriber: K slots (empty if not subscribing), and the same as ids for `assignment()`.
    slots: Vec<Option<Held>>,
    assignment: Vec<Option<ParticipantId>>,
    /// As publisher: where its packets go.
    routes: Vec<(ParticipantId, SlotIndex)>,
    /// Queued in `SlotSelector::changes`.
    changed: bool,
}

impl Member {
    fn set_slot(&mut self, i: usize, held: Option<Held>) {
        self.slots[i] = held;
        self.assignment[i] = held.map(|h| h.id);
    }
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    priority: f32,
    id: ParticipantId,
    idx: usize,
}

/// Slot selection for one room. See the [module docs](self).
#[derive(Debug)]
pub struct SlotSelector {
    k: usize,
    config: SelectorConfig,
    /// Stable slab: a member keeps its index while present; freed indices are reused.
    members: Vec<Option<Member>>,
    free: Vec<usize>,
    index: HashMap<ParticipantId, usize>,
    eligible_count: usize,
    /// Scratch for `update`, kept to avoid allocating.
    candidates: Vec<Candidate>,
    changes: Vec<ParticipantId>,
    /// A structural change (join, leave, mute, new eligible publisher) wants an update right away.
    pending: bool,
    last_now: Option<Instant>,
    last_update: Option<Instant>,
    last_audio: Option<Instant>,
    last_assignment_change: Option<Instant>,
    /// Updates stop this long after the last packet and the last assignment change: nothing can change then.
    idle_after: Duration,
    reported: Vec<(ParticipantId, f32)>,
    reported_at: Option<Instant>,
}

impl SlotSelector {
    /// A selector giving each subscriber `slots` slots (clamped to `0..=MAX_SLOTS`; 0 routes nothing).
    pub fn new(slots: usize, config: SelectorConfig) -> Self {
        let lc = &config.levels;
        let idle_after = Duration::from_secs(1)
            .max(config.min_hold + Duration::from_millis(100))
            .max(lc.hangover + lc.missing_after + Duration::from_millis(100));
        Self {
            k: slots.min(MAX_SLOTS),
            config,
            members: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            eligible_count: 0,
            candidates: Vec::new(),
            changes: Vec::new(),
            pending: false,
            last_now: None,
            last_update: None,
            last_audio: None,
            last_assignment_change: None,
            idle_after,
            reported: Vec::new(),
            reported_at: None,
        }
    }

    /// The number of slots per subscriber.
    pub fn slots(&self) -> usize {
        self.k
    }

    /// The configuration.
    pub fn config(&self) -> &SelectorConfig {
        &self.config
    }

    /// The number of participants.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the room has no participants.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `id` is a participant.
    pub fn contains(&self, id: ParticipantId) -> bool {
        self.index.contains_key(&id)
    }

    fn member(&self, id: ParticipantId) -> Option<&Member> {
        self.index.get(&id).and_then(|&i| self.members[i].as_ref())
    }

    fn member_mut(&mut self, id: ParticipantId) -> Option<&mut Member> {
        self.index.get(&id).and_then(|&i| self.members[i].as_mut())
    }

    /// Adds a participant. If it is already present, only its publishing and subscribing flags change.
    pub fn add_participant(&mut self, id: ParticipantId, publishes: bool, subscribes: bool) {
        if self.index.contains_key(&id) {
            self.set_publishing(id, publishes);
            self.set_subscribing(id, subscribes);
            return;
        }
        let k = if subscribes { self.k } else { 0 };
        let member = Member {
            id,
            publishes,
            subscribes,
            eligible: false,
            tracker: LevelTracker::new(self.config.levels),
            candidate: false,
            priority: 0.0,
            slots: vec![None; k],
            assignment: vec![None; k],
            routes: Vec::new(),
            changed: false,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.members[idx] = Some(member);
                idx
            }
            None => {
                self.members.push(Some(member));
                self.members.len() - 1
            }
        };
        self.index.insert(id, idx);
        if subscribes {
            self.pending = true;
        }
    }

    /// Removes a participant: it leaves every slot and route at once. Subscribers that lose it as a speaker
    /// are reported by [`drain_changes`](Self::drain_changes). Returns whether it was present.
    pub fn remove_participant(&mut self, id: ParticipantId) -> bool {
        let Some(idx) = self.index.remove(&id) else {
            return false;
        };
        if let Some(m) = self.members[idx].take() {
            if m.eligible {
                self.eligible_count -= 1;
            }
        }
        self.free.push(idx);
        self.changes.retain(|&c| c != id);
        self.evict_publisher(id);
        self.rebuild_routes();
        self.pending = true;
        true
    }

    /// Starts or stops (mute) publishing. A participant that stops leaves every slot and route at once and
    /// its packets are ignored; after it starts again it becomes eligible with its next packet.
    pub fn set_publishing(&mut self, id: ParticipantId, publishes: bool) {
        let Some(m) = self.member_mut(id) else { return };
        if m.publishes == publishes {
            return;
        }
        m.publishes = publishes;
        if !publishes {
            let was_eligible = m.eligible;
            m.eligible = false;
            m.tracker.reset();
            m.routes.clear();
            if was_eligible {
                self.eligible_count -= 1;
            }
            self.evict_publisher(id);
            self.rebuild_routes();
            self.pending = true;
        }
    }

    /// Starts or stops subscribing. A subscriber that stops loses its slots (reported as a change, with an
    /// empty assignment).
    pub fn set_subscribing(&mut self, id: ParticipantId, subscribes: bool) {
        let k = self.k;
        let Some(m) = self.member_mut(id) else { return };
        if m.subscribes == subscribes {
            return;
        }
        m.subscribes = subscribes;
        let len = if subscribes { k } else { 0 };
        m.slots = vec![None; len];
        m.assignment = vec![None; len];
        if !subscribes {
            self.mark_changed(id);
            self.rebuild_routes();
        }
        self.pending = true;
    }

    /// Whether `id` is publishing (not muted).
    pub fn is_publishing(&self, id: ParticipantId) -> bool {
        self.member(id).is_some_and(|m| m.publishes)
    }

    /// Feeds one audio packet's RFC 6464 level (`-dBov`) and voice-activity flag from `publisher`, received at
    /// `now`. Packets of unknown or non-publishing (muted) participants are ignored. O(1), no allocation.
    pub fn on_audio(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        level: u8,
        voice_activity: Option<bool>,
    ) {
        if self.last_now.is_none_or(|t| now > t) {
            self.last_now = Some(now);
        }
        let Some(&idx) = self.index.get(&publisher) else {
            return;
        };
        let Some(m) = self.members[idx].as_mut() else {
            return;
        };
        if !m.publishes {
            return;
        }
        m.tracker.on_level(now, level, voice_activity);
        if !m.eligible {
            m.eligible = true;
            self.eligible_count += 1;
            self.pending = true;
        }
        if self.last_audio.is_none_or(|t| now > t) {
            self.last_audio = Some(now);
        }
    }

    /// Where a packet of `publisher` goes: the (subscriber, slot) pairs whose slot it currently holds. Empty for
    /// unknown, muted or unselected publishers. O(1) (one hash lookup), no allocation.
    #[inline]
    pub fn routes(&self, publisher: ParticipantId) -> &[(ParticipantId, SlotIndex)] {
        self.member(publisher).map_or(&[], |m| m.routes.as_slice())
    }

    /// `subscriber`'s slots: `assignment[i]` is the publisher in slot `i`, if any. Empty for unknown
    /// participants and non-subscribers.
    pub fn assignment(&self, subscriber: ParticipantId) -> &[Option<ParticipantId>] {
        self.member(subscriber)
            .map_or(&[], |m| m.assignment.as_slice())
    }

    /// The slot in which `subscriber` hears `publisher`, if it does.
    pub fn slot_of(
        &self,
        subscriber: ParticipantId,
        publisher: ParticipantId,
    ) -> Option<SlotIndex> {
        self.assignment(subscriber)
            .iter()
            .position(|&p| p == Some(publisher))
            .map(|i| SlotIndex(i as u8))
    }

    /// `id`'s level tracker, if it is a participant.
    pub fn tracker(&self, id: ParticipantId) -> Option<&LevelTracker> {
        self.member(id).map(|m| &m.tracker)
    }

    /// When [`update`](Self::update) should run next: `None` when nothing can change (no audio yet, or the room
    /// has been quiet and stable for a while); an instant in the past when a structural change is waiting.
    pub fn next_update(&self) -> Option<Instant> {
        let last_now = self.last_now?;
        if self.eligible_count == 0 {
            // Nobody to assign; removals and mutes take effect at once.
            return None;
        }
        if self.pending {
            return Some(self.last_update.map_or(last_now, |u| u.min(last_now)));
        }
        let last_audio = self.last_audio?;
        let Some(last_update) = self.last_update else {
            return Some(last_audio);
        };
        let active = self
            .last_assignment_change
            .map_or(last_audio, |c| c.max(last_audio));
        if last_update >= active + self.idle_after {
            return None;
        }
        Some(last_update + self.config.update_interval)
    }

    /// Recomputes the assignment if due (see [`next_update`](Self::next_update)); returns whether it ran.
    /// Afterwards, [`drain_changes`](Self::drain_changes) lists the subscribers whose assignment changed and
    /// [`routes`](Self::routes) reflects the new assignment. Allocation-free in steady state.
    pub fn update(&mut self, now: Instant) -> bool {
        if self.last_now.is_none_or(|t| now > t) {
            self.last_now = Some(now);
        }
        if self.next_update().is_none_or(|due| now < due) {
            return false;
        }
        self.pending = false;
        self.last_update = Some(now);
        self.rank(now);

        let mut any_changed = false;
        for s in 0..self.members.len() {
            let Some(sub) = self.members[s].as_ref() else {
                continue;
            };
            if !sub.subscribes || sub.slots.is_empty() {
                continue;
            }
            let sub_id = sub.id;
            let k = sub.slots.len();
            let mut slots = [None; MAX_SLOTS];
            slots[..k].copy_from_slice(&sub.slots);
            let slots = &mut slots[..k];
            if self.assign(now, sub_id, slots) {
                let m = self.members[s].as_mut().expect("present");
                for (i, &h) in slots.iter().enumerate() {
                    m.set_slot(i, h);
                }
                self.mark_changed(sub_id);
                any_changed = true;
            }
        }
        if any_changed {
            self.last_assignment_change = Some(now);
            self.rebuild_routes();
        }
        true
    }

    /// Scores every eligible publisher and sorts the candidates loudest first (ties: lower id first).
    fn rank(&mut self, now: Instant) {
        self.candidates.clear();
        let bonus = self.config.speaking_bonus_db;
        for (idx, m) in self.members.iter_mut().enumerate() {
            let Some(m) = m else { continue };
            m.candidate = m.publishes && m.eligible;
            if m.candidate {
                let speaking = if m.tracker.is_speaking(now) {
                    bonus
                } else {
                    0.0
                };
                m.priority = m.tracker.score(now) + speaking;
                self.candidates.push(Candidate {
                    priority: m.priority,
                    id: m.id,
                    idx,
                });
            }
        }
        self.candidates
            .sort_unstable_by(|a, b| b.priority.total_cmp(&a.priority).then(a.id.cmp(&b.id)));
    }

    /// Updates one subscriber's slots in place; returns whether they changed.
    fn assign(&self, now: Instant, sub_id: ParticipantId, slots: &mut [Option<Held>]) -> bool {
        let mut changed = false;
        let is_candidate = |h: &Held| {
            self.members
                .get(h.idx)
                .and_then(Option::as_ref)
                .is_some_and(|m| m.id == h.id && m.candidate)
        };
        // Publishers that left, muted or stopped being candidates free their slots.
        for slot in slots.iter_mut() {
            if slot.is_some_and(|h| !is_candidate(&h)) {
                *slot = None;
                changed = true;
            }
        }
        let holds = |slots: &[Option<Held>], id: ParticipantId| {
            slots.iter().any(|h| h.is_some_and(|h| h.id == id))
        };

        // Free slots: the loudest publishers not heard yet, however quiet.
        let mut free = slots.iter().filter(|s| s.is_none()).count();
        if free > 0 {
            for c in &self.candidates {
                if c.id == sub_id || holds(slots, c.id) {
                    continue;
                }
                let i = slots.iter().position(Option::is_none).expect("a free slot");
                slots[i] = Some(Held {
                    id: c.id,
                    idx: c.idx,
                    since: now,
                });
                changed = true;
                free -= 1;
                if free == 0 {
                    break;
                }
            }
            // Everybody is heard already: nothing to replace.
            return changed;
        }

        // Full: the loudest unslotted candidates replace the quietest incumbents past `min_hold`, by a margin.
        for c in &self.candidates {
            if c.id == sub_id || holds(slots, c.id) {
                continue;
            }
            let mut victim: Option<(usize, f32, ParticipantId)> = None;
            for (i, h) in slots.iter().enumerate() {
                let Some(h) = h else { continue };
                if now.saturating_duration_since(h.since) < self.config.min_hold {
                    continue;
                }
                let p = self.members[h.idx]
                    .as_ref()
                    .map_or(f32::NEG_INFINITY, |m| m.priority);
                let quieter = victim.is_none_or(|(_, vp, vid)| p < vp || (p == vp && h.id > vid));
                if quieter {
                    victim = Some((i, p, h.id));
                }
            }
            let Some((i, vp, _)) = victim else { break };
            if c.priority >= vp + self.config.switch_margin_db {
                slots[i] = Some(Held {
                    id: c.id,
                    idx: c.idx,
                    since: now,
                });
                changed = true;
            } else {
                // Candidates are sorted: no quieter one can do better against the same victim.
                break;
            }
        }
        changed
    }

    /// Removes `publisher` from every subscriber's slots, recording the changes.
    fn evict_publisher(&mut self, publisher: ParticipantId) {
        for s in 0..self.members.len() {
            let Some(m) = self.members[s].as_mut() else {
                continue;
            };
            let mut changed = false;
            for i in 0..m.slots.len() {
                if m.slots[i].is_some_and(|h| h.id == publisher) {
                    m.set_slot(i, None);
                    changed = true;
                }
            }
            if changed {
                let id = m.id;
                self.mark_changed(id);
            }
        }
    }

    fn mark_changed(&mut self, id: ParticipantId) {
        if let Some(m) = self.member_mut(id) {
            if !m.changed {
                m.changed = true;
                self.changes.push(id);
            }
        }
    }

    /// Recomputes every publisher's routes from the assignments.
    fn rebuild_routes(&mut self) {
        for m in self.members.iter_mut().flatten() {
            m.routes.clear();
        }
        for s in 0..self.members.len() {
            let Some(sub) = self.members[s].as_ref() else {
                continue;
            };
            let sub_id = sub.id;
            for i in 0..sub.slots.len() {
                let Some(h) = self.members[s].as_ref().and_then(|m| m.slots[i]) else {
                    continue;
                };
                if let Some(p) = self.members[h.idx].as_mut().filter(|p| p.id == h.id) {
                    p.routes.push((sub_id, SlotIndex(i as u8)));
                }
            }
        }
    }

    /// Whether some subscriber's assignment changed since the last [`drain_changes`](Self::drain_changes).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The subscribers whose assignment changed since the last call (each once, present participants only),
    /// in the order they changed.
    pub fn drain_changes(&mut self) -> impl Iterator<Item = ParticipantId> + '_ {
        for id in &self.changes {
            if let Some(m) = self.index.get(id).and_then(|&i| self.members[i].as_mut()) {
                m.changed = false;
            }
        }
        self.changes.drain(..)
    }

    /// The publishers speaking at `now` with their display levels (0..=1), loudest first (ties: lower id).
    pub fn speakers(&self, now: Instant) -> Vec<(ParticipantId, f32)> {
        let mut out: Vec<(ParticipantId, f32)> = self
            .members
            .iter()
            .flatten()
            .filter(|m| m.publishes && m.tracker.is_speaking(now))
            .map(|m| (m.id, m.tracker.level(now)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// The `speakers` event, if one is due at `now`: immediately when the set of speakers changed (including to
    /// empty: nobody speaks), otherwise at most every [`SelectorConfig::speakers_interval`] when the order or
    /// some level changed by at least [`SelectorConfig::speakers_min_level_change`]. Call it after every
    /// [`update`](Self::update) that ran.
    pub fn speakers_changed(&mut self, now: Instant) -> Option<Vec<(ParticipantId, f32)>> {
        let current = self.speakers(now);
        let same_set = current.len() == self.reported.len()
            && current
                .iter()
                .all(|(id, _)| self.reported.iter().any(|(r, _)| r == id));
        if same_set {
            if current.is_empty() {
                return None;
            }
            let due = self
                .reported_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.speakers_interval);
            if !due {
                return None;
            }
            let step = self.config.speakers_min_level_change;
            let moved = current
                .iter()
                .zip(&self.reported)
                .any(|((id, level), (rid, rlevel))| id != rid || (level - rlevel).abs() >= step);
            if !moved {
                return None;
            }
        }
        self.reported.clone_from(&current);
        self.reported_at = Some(now);
        Some(current)
    }
}

#[cfg(test)]
mod tests {
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
            let mut sel = SlotSelector::new(k, SelectorConfig::default());
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
        let mut room = Room::new(3, &[1, 2]);
        let mut reports = Vec::new();
        // A speaker whose level swings widely every packet.
        for i in 0..100u32 {
            let now = room.t;
            let level = if i % 2 == 0 { 10 } else { 45 };
            room.tick(&[(1, level), (2, 90)]);
            if room.sel.speakers_changed(now).is_some() {
                reports.push(now);
            }
        }
        assert!(reports.len() >= 2);
        for w in reports.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(200),
                "{:?}",
                w[1] - w[0]
            );
        }
    }

    #[test]
    fn randomized_churn_keeps_invariants() {
        let mut rng = Rng::new(0xC0FFEE);
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
    }
}
