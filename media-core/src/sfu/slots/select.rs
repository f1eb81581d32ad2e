//! The periodic update: re-rank the publishers and reassign every subscriber's slots by the rules in the
//! [module docs](super).

use std::time::Instant;

use super::{Candidate, Held, SlotSelector};
use crate::audibility::Audibility;
use crate::ids::ParticipantId;

impl SlotSelector {
    /// Recomputes the assignment if due (see [`next_update`](Self::next_update)); returns whether it ran.
    /// Afterwards, [`drain_changes`](Self::drain_changes) lists the subscribers whose assignment changed and
    /// [`routes`](Self::routes) reflects the new assignment. Allocation-free in steady state.
    pub fn update(&mut self, now: Instant) -> bool {
        self.update_in(now, None)
    }

    /// [`update`](Self::update) under the room's audibility policy: unless the room is open (everyone hears
    /// everyone), each subscriber's candidates are only the publishers it hears
    /// ([`Audibility::audible`]: in range, its team, whispers to it, shouters; volumes applied), ranked by
    /// their level as heard — the level plus the gain in dB — so the nearest and loudest come first.
    pub fn update_in(&mut self, now: Instant, audibility: Option<&Audibility>) -> bool {
        if self.last_now.is_none_or(|t| now > t) {
            self.last_now = Some(now);
        }
        let Some(due) = self.next_update().filter(|due| *due <= now) else {
            return false;
        };
        // The periodic update keeps its 20 ms grid when it runs a little late (a worker runs it at the
        // first packet after it is due): the next one is due an interval after this one was, not after it
        // ran, so lateness does not add up. A structural change, a first packet or a long pause restarts
        // the grid at `now`.
        let periodic = self
            .last_update
            .is_some_and(|u| u + self.config.update_interval == due);
        let on_grid = !self.pending && periodic && now - due < self.config.update_interval;
        let structural = self.pending;
        self.pending = false;
        self.last_update = Some(if on_grid { due } else { now });
        self.rank(now);

        let mut heard = std::mem::take(&mut self.heard);
        let mut any_changed = false;
        // The loudest k + 1: a subscriber's k loudest others are among them.
        let loudest = self.candidates.len().min(self.k + 1);
        // Settled subscribers can be skipped in a room where everyone hears everyone, by a positive
        // margin; and while the ranking's head and every slot are as the last update left them, only the
        // subscribers that were not settled then are visited at all.
        let settling = self.config.switch_margin_db > 0.0 && audibility.is_none_or(|a| a.is_open());
        let head_same = self.head_valid
            && !structural
            && settling
            && self.head.len() == loudest
            && (self.head.iter().zip(&self.candidates[..loudest]))
                .all(|(h, c)| *h == (c.id, c.idx));
        let mut visit = std::mem::take(&mut self.visit);
        visit.clear();
        if head_same {
            visit.extend_from_slice(&self.unsettled);
        } else {
            visit.extend(0..self.members.len());
            self.head.clear();
            self.head
                .extend(self.candidates[..loudest].iter().map(|c| (c.id, c.idx)));
        }
        self.unsettled.clear();
        for &s in &visit {
            let Some(sub) = self.members[s].as_ref() else {
                continue;
            };
            if !sub.subscribes || sub.slots.is_empty() {
                continue;
            }
            let sub_id = sub.id;
            let audible = audibility.and_then(|a| a.audible(sub_id));
            // Most subscribers of a room hold its k loudest others already: every other candidate
            // ranks below all they hold, so none is louder by a positive margin, and nothing is stale
            // or free. They are skipped (a room of 53 spent 320 instructions on each every tick).
            if settling && holds_the_loudest(&sub.slots, &self.candidates[..loudest], sub_id) {
                continue;
            }
            self.unsettled.push(s);
            // Taken out for the assignment (which reads the other members) and put back: moving a
            // `Vec` costs nothing, where a copy into a `MAX_SLOTS` array cost a 640-byte fill per
            // subscriber and tick.
            let mut slots = std::mem::take(
                &mut self.members[s]
                    .as_mut()
                    .expect("a member checked present above")
                    .slots,
            );
            let changed = match audible {
                None => self.assign(now, sub_id, &mut slots, &self.candidates, false),
                Some(audible) => {
                    // The global ranking, restricted to what this subscriber hears and shifted by the
                    // gain (a whole number of dB would reorder the same way; the gain is exact).
                    heard.clear();
                    for h in audible {
                        let Some(&idx) = self.index.get(&h.speaker) else {
                            continue;
                        };
                        if let Some(m) = self.members[idx].as_ref().filter(|m| m.candidate) {
                            heard.push(Candidate {
                                priority: m.priority + h.hearing.gain_db(),
                                id: m.id,
                                idx,
                            });
                        }
                    }
                    heard.sort_unstable_by(|a, b| {
                        b.priority.total_cmp(&a.priority).then(a.id.cmp(&b.id))
                    });
                    self.assign(now, sub_id, &mut slots, &heard, true)
                }
            };
            let m = self.members[s]
                .as_mut()
                .expect("a member checked present above");
            m.slots = slots;
            if changed {
                m.sync_assignment();
                self.mark_changed(sub_id);
                any_changed = true;
            }
        }
        self.heard = heard;
        self.visit = visit;
        self.head_valid = settling;
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

    /// Updates one subscriber's slots in place from `candidates` (loudest first); returns whether they
    /// changed. `own`: the candidates and their priorities are this subscriber's own (spatial), not the
    /// room's ranking.
    pub(super) fn assign(
        &self,
        now: Instant,
        sub_id: ParticipantId,
        slots: &mut [Option<Held>],
        candidates: &[Candidate],
        own: bool,
    ) -> bool {
        let mut changed = false;
        let priority_of = |h: &Held| -> Option<f32> {
            if own {
                return candidates.iter().find(|c| c.id == h.id).map(|c| c.priority);
            }
            self.members
                .get(h.idx)
                .and_then(Option::as_ref)
                .filter(|m| m.id == h.id && m.candidate)
                .map(|m| m.priority)
        };
        let is_candidate = |h: &Held| priority_of(h).is_some();
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
            for c in candidates {
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
        for c in candidates {
            if c.id == sub_id || holds(slots, c.id) {
                continue;
            }
            let mut victim: Option<(usize, f32, ParticipantId)> = None;
            for (i, h) in slots.iter().enumerate() {
                let Some(h) = h else { continue };
                if now.saturating_duration_since(h.since) < self.config.min_hold {
                    continue;
                }
                let p = if own {
                    priority_of(h).unwrap_or(f32::NEG_INFINITY)
                } else {
                    self.members[h.idx]
                        .as_ref()
                        .map_or(f32::NEG_INFINITY, |m| m.priority)
                };
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
}

/// Whether `slots` (all full) hold exactly the loudest others of `sub_id`: the first `slots.len()` of
/// `loudest` (the room's ranking, loudest first, at least that long plus one) other than `sub_id` itself.
/// Slots never hold one publisher twice, so each held one being among them is enough.
pub(super) fn holds_the_loudest(
    slots: &[Option<Held>],
    loudest: &[Candidate],
    sub_id: ParticipantId,
) -> bool {
    let k = slots.len();
    // The subscriber among the first k pushes the (k + 1)-th in.
    let first_k = &loudest[..k.min(loudest.len())];
    let others = if first_k.iter().any(|c| c.id == sub_id) {
        loudest
    } else {
        first_k
    };
    slots
        .iter()
        .all(|h| h.is_some_and(|h| others.iter().any(|c| c.id == h.id && c.idx == h.idx)))
}
