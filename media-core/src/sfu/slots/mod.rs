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
//! - Under a room's [audibility policy](crate::audibility) ([`SlotSelector::update_in`]) a subscriber's
//!   candidates are only the publishers it hears (in range, the nearest `max_audible`; its team, whispers
//!   to it, shouters; not those it silenced), each ranked by its loudness plus its gain in dB: the nearest
//!   and loudest first. A publisher that leaves the range leaves the slot at the next update.

use std::collections::HashMap;
use std::time::{Duration, Instant};
mod select;

use crate::ids::{ParticipantId, SlotIndex};
use crate::speakers::levels::{LevelConfig, LevelTracker};

/// The most slots a subscriber can have.
pub use vocab::MAX_SLOTS;

/// The default [`SelectorConfig::speakers_interval`]: a `speakers` report whose set of speakers is
/// unchanged (only levels or order moved) waits at least this long after the last one. Each report is a
/// WebSocket message to every listener of the room (the server's `media.speakers_interval_ms`).
pub const SPEAKERS_INTERVAL: Duration = Duration::from_millis(200);

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
            speakers_interval: SPEAKERS_INTERVAL,
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

    /// Brings `assignment` in line with `slots` after they were changed as a whole.
    fn sync_assignment(&mut self) {
        for (a, h) in self.assignment.iter_mut().zip(&self.slots) {
            *a = h.map(|h| h.id);
        }
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
    /// Scratch for `update_in`: one subscriber's candidates in a spatial room.
    heard: Vec<Candidate>,
    changes: Vec<ParticipantId>,
    /// A structural change (join, leave, mute, new eligible publisher) wants an update right away.
    pending: bool,
    /// What the last update knew (in a room where everyone hears everyone): the ranking's first k + 1 as
    /// (id, index), and the member indices of the subscribers it did not find settled. While that head
    /// and every slot stay the same (no structural change), a subscriber settled then is settled still
    /// (`select::holds_the_loudest`), and only `unsettled` need a look.
    head: Vec<(ParticipantId, usize)>,
    unsettled: Vec<usize>,
    /// `head` and `unsettled` describe the slots as they are.
    head_valid: bool,
    /// Scratch for `update_in`: the member indices to visit.
    visit: Vec<usize>,
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
            heard: Vec::new(),
            changes: Vec::new(),
            pending: false,
            head: Vec::new(),
            unsettled: Vec::new(),
            head_valid: false,
            visit: Vec::new(),
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

    /// Whether `id` publishes and has sent audio since it started: a candidate for slots.
    pub fn is_eligible(&self, id: ParticipantId) -> bool {
        self.member(id).is_some_and(|m| m.publishes && m.eligible)
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

    /// Who hears whom changed (a spatial room's audible sets were refreshed): reassign at the next
    /// update, which becomes due at once.
    pub fn audibility_changed(&mut self) {
        self.pending = true;
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

    /// The candidates of the last update, loudest first, as slot selection ranked them (smoothed level plus
    /// the speaking bonus). May name a participant removed since; check [`Self::is_eligible`].
    pub fn ranking(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.candidates.iter().map(|c| c.id)
    }

    /// The room's speakers as last reported by [`speakers_changed`](Self::speakers_changed).
    pub fn reported(&self) -> &[(ParticipantId, f32)] {
        &self.reported
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
mod tests;
