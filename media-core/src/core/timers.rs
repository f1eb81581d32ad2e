//! Time passing: due peer timers and connection deadlines, and the room tick (the mixers' ticks, slot
//! selection and speaker reports).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{prefetch_subscribers, CoreEvent, MediaCore, Participant};
use crate::core::peer::PeerEvent;
use crate::core::room::{Room, RoomKind};
use crate::ids::ParticipantId;
use crate::prefetch::FAN_OUT_GROUP;
use crate::red;
use vocab::{RoomMode, SlotAssignment};

/// How late work may run that is not a listener's next frame: the peers' own timers (str0m's RTCP reports,
/// consent and liveness deadlines, DTLS retransmissions; the connect timeout) and a room's bookkeeping (slot
/// selection and speaker reports every 20 ms while someone talks, a spatial room's audible sets every 100 ms,
/// the expiry of speakers relayed from other shards). It runs at the first input after it is due, or this
/// much later without one. On a worker that forwards speech an input (a talker's packet every 20 ms, RTCP)
/// nearly always comes first, so this work costs no wake-up of its own; with one talker it lands on its
/// packets. One frame: a slot change or a speaker report one update later is not audible (the selector keeps
/// its grid, see `SlotSelector::update_in`), the onset of a speaker who needs a free slot is selected at its
/// first packet (`ingress.rs`), and no peer timer of an ICE-lite audio peer needs millisecond precision.
/// A mixer's tick is exact: it is the listeners' next frame.
pub(crate) const LAZY_SLACK: Duration = Duration::from_millis(20);

/// When the room tick is next needed, over all of a core's rooms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomTick {
    /// The earliest instant any room has work due: the tick runs at the first input or timeout at or
    /// after it.
    due: Option<Instant>,
    /// The latest instant the core may wait for an input before it wakes up for the tick: a mixer's tick
    /// exactly, bookkeeping [`LAZY_SLACK`] after it is due.
    wake: Option<Instant>,
}

impl RoomTick {
    /// Work that must run at `at`: a mixer's tick (its listeners' next frame).
    pub(crate) fn exact(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Bookkeeping due at `at`, which may wait up to [`LAZY_SLACK`] for an input to run it.
    pub(crate) fn lazy(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
        let latest = at + LAZY_SLACK;
        self.wake = Some(self.wake.map_or(latest, |w| w.min(latest)));
    }

    /// Whether the tick has work at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|d| d <= now)
    }

    /// When the core must wake up for the tick if no input comes first.
    pub(crate) fn wake(&self) -> Option<Instant> {
        self.wake
    }
}

impl MediaCore {
    /// Time passed: run due peer timers, the room tick, and connection deadlines.
    ///
    /// Never inlined: an entry point must stay a function of its own in profiles. Inlined into its callers
    /// (it is two lines), `scripts/callgrind.py` lost every mixer tick from the mixed core's count
    /// (40,850 instructions per participant-tick counted as 951) and the peers' own timers from the
    /// forwarding one.
    #[inline(never)]
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.run_due(now);
    }

    /// Run what is due at `now`: peer timers and connection deadlines, then the room tick. From a timeout,
    /// and at each input first, so that work that may wait ([`LAZY_SLACK`]) rides on the input instead of a
    /// wake-up of its own.
    pub(super) fn run_due(&mut self, now: Instant) {
        while let Some((at, id)) = self.out.pop_due(now) {
            let Some(peer) = self
                .participants
                .get_mut(&id)
                .and_then(Participant::peer_mut)
            else {
                continue;
            };
            if !peer.take_wake(at) {
                continue; // superseded by an earlier entry
            }
            if peer.connect_timed_out(now, self.config.connect_timeout) {
                self.disconnect(id, "connect timeout");
                continue;
            }
            if let Err(e) = peer.handle_timeout(now) {
                tracing::debug!(participant = %id, error = %e, "peer timeout failed");
                self.disconnect(id, "webrtc error");
                continue;
            }
            self.drive(id, now);
        }
        if self.tick.is_due(now) {
            self.room_tick(now);
        }
        self.process_pending(now);
    }

    /// Make sure the room tick runs when room `key`'s selector next needs an update.
    pub(super) fn arm_tick(&mut self, key: u64) {
        if let Some(room) = self.rooms.get(&key) {
            room.arm_tick(&mut self.tick);
        }
    }

    /// Run every room's due work: the mixer tick of mixed rooms, slot selection and speaker reports. An idle
    /// room costs nothing.
    fn room_tick(&mut self, now: Instant) {
        self.tick = RoomTick::default();
        let mut mixed = std::mem::take(&mut self.mix_out);
        let mut expired = Vec::new();
        for room in self.rooms.values_mut() {
            if refresh_audibility(now, room, &self.participants, &mut self.events) {
                // The selector sees the new sets at once.
                room.selector.audibility_changed();
            }
            let room_id = &room.id;
            // A mixed room's mixer (spatial or not), or a forwarding room's (its broadcast frames, the
            // room's voices without whispers and team talk, and the streams of its mix listeners).
            let mixer = match &mut room.kind {
                RoomKind::Mix(mixer) => Some(&mut **mixer),
                RoomKind::Forward => room.broadcast.as_deref_mut(),
            };
            if let Some(mixer) = mixer {
                if mixer.next_tick().is_some_and(|t| t <= now) {
                    mixed.clear();
                    let (stats, samples) = (&mut self.stats.mix, &mut self.samples);
                    mixer.tick_in(now, &mut mixed, stats, samples, Some(&room.audibility));
                    for tap in mixer.take_tapped() {
                        self.broadcasts.push_back(super::BroadcastFrame {
                            room: room_id.clone(),
                            tick: tap.tick,
                            payload: tap.payload,
                            talkers: tap.talkers,
                        });
                    }
                    // Listeners of the shared mix get the same RED payloads: encoded once per tick.
                    let mut red_variants: Vec<MixRedVariant> = Vec::new();
                    for (i, packet) in mixed.iter().enumerate() {
                        if i % FAN_OUT_GROUP == 0 {
                            let group = mixed[i..].iter().take(FAN_OUT_GROUP);
                            prefetch_subscribers(&self.participants, group.map(|p| (p.to, 0)));
                        }
                        let Some(p) = self.participants.get_mut(&packet.to) else {
                            continue;
                        };
                        let deafened = p.gate.deafened;
                        let Some(peer) = p.peer_mut() else {
                            continue;
                        };
                        // A deafened listener is sent nothing.
                        if !peer.is_connected() || deafened {
                            continue;
                        }
                        let red = match peer.slots().first() {
                            Some(slot) if slot.red_pt.is_some() && packet.previous[0].is_some() => {
                                Some(mix_red_payload(
                                    &mut red_variants,
                                    &packet.payload,
                                    &packet.previous,
                                    *slot.pt,
                                ))
                            }
                            _ => None,
                        };
                        let body = red.as_ref().unwrap_or(&packet.payload);
                        // The direct path (the peer's own SRTP sender); str0m's while it is not
                        // available for this peer.
                        let result = match peer.send_mix(
                            packet.seq,
                            packet.ts,
                            body,
                            red.is_some(),
                            packet.level,
                            &packet.contributors,
                            &mut self.out,
                        ) {
                            Ok(true) => Ok(()),
                            Ok(false) => peer
                                .write_mix(
                                    packet.seq,
                                    packet.ts,
                                    now,
                                    body,
                                    red.is_some(),
                                    packet.level,
                                    &packet.contributors,
                                )
                                .and_then(|()| peer.drive(now, &mut self.out)),
                            Err(e) => Err(e),
                        };
                        if result.is_err() {
                            self.out
                                .events
                                .push_back((packet.to, PeerEvent::Disconnected("webrtc error")));
                        }
                    }
                    mixed.clear();
                }
            }
            let update_due = room.selector.next_update().is_some_and(|t| t <= now);
            if update_due && room.selector.update_in(now, Some(&room.audibility)) {
                slot_events(&mut room.selector, &self.participants, &mut self.events);
                if room.selector.speakers_changed(now).is_some() {
                    let members = room.members.clone();
                    send_speakers(room, &members, &mut self.events);
                }
                if let Some(participant) = room.dominant.update(now) {
                    // Only to those who hear it: the others must not learn that it talks.
                    let listeners = room
                        .members
                        .iter()
                        .copied()
                        .filter(|&m| room.audibility.hears(m, participant))
                        .collect();
                    self.events.push_back(CoreEvent::DominantSpeaker {
                        listeners,
                        participant,
                    });
                }
            }
            if update_due {
                super::trunk::refresh_exports(room, &mut self.trunk_out);
            }
            expired.extend(room.trunk.expired(now));
            room.arm_tick(&mut self.tick);
        }
        self.mix_out = mixed;
        self.expire_remote(now, expired);
    }

    pub(super) fn emit_slots(&mut self, sub: ParticipantId) {
        let Some(p) = self.participants.get(&sub) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let slots = slot_infos(p, room.selector.assignment(sub), &self.participants);
        self.events.push_back(CoreEvent::Slots {
            subscriber: sub,
            slots,
        });
    }
}

/// Recompute a room's audible sets if due; tell each listener whose set changed what it now hears of the
/// room's speakers and, in a spatial forwarding room, where its speakers are. Returns whether it ran.
pub(super) fn refresh_audibility(
    now: Instant,
    room: &mut Room,
    participants: &super::ParticipantMap,
    events: &mut VecDeque<CoreEvent>,
) -> bool {
    // An open room (no positions, no rules) has no sets to keep current until a rule arrives; any other
    // compares its listeners and speakers every tick (a speaker becomes one with its first packet).
    if room.audibility.is_open() && room.audibility.next_refresh().is_none_or(|due| now < due) {
        return false;
    }
    let listeners: Vec<ParticipantId> = room
        .members
        .iter()
        .copied()
        .filter(|id| participants.get(id).is_some_and(|p| !p.slots().is_empty()))
        .collect();
    // Speakers are the publishers that have sent audio since they started publishing: a participant who
    // never talks does not take one of a listener's `max_audible` places.
    let speakers: Vec<ParticipantId> = room
        .members
        .iter()
        .copied()
        .filter(|id| room.selector.is_eligible(*id))
        .collect();
    let mut changed = Vec::new();
    if !room
        .audibility
        .refresh(now, &listeners, &speakers, &mut changed)
    {
        return false;
    }
    send_speakers(room, &changed, events);
    if room.config.mode != RoomMode::Forward || !room.audibility.is_spatial() {
        return true;
    }
    for listener in changed {
        let mut heard: Vec<_> = room
            .audibility
            .audible(listener)
            .unwrap_or_default()
            .iter()
            .filter_map(|h| Some((h.hearing.distance, h.speaker, h.position?)))
            .collect();
        heard.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        events.push_back(CoreEvent::Positions {
            listener,
            positions: heard.into_iter().map(|(_, s, p)| (s, p)).collect(),
        });
    }
    true
}

/// Speaking participants with their levels, loudest first.
type Speaking = Vec<(ParticipantId, f32)>;

/// The room's speaking participants as each of `listeners` may know them — itself and those it hears
/// (see [`crate::audibility`]) — to each whose list differs from the last it was sent; listeners with
/// equal lists share one event.
pub(super) fn send_speakers(
    room: &mut Room,
    listeners: &[ParticipantId],
    events: &mut VecDeque<CoreEvent>,
) {
    let all = room.selector.reported();
    // (the speakers as told, the listeners told so)
    let mut groups: Vec<(Speaking, Vec<ParticipantId>)> = Vec::new();
    for &listener in listeners {
        let scoped: Speaking = all
            .iter()
            .filter(|(s, _)| room.audibility.hears(listener, *s))
            .copied()
            .collect();
        let last = room.speakers_sent.get(&listener);
        if last.map_or(scoped.is_empty(), |l| *l == scoped) {
            continue;
        }
        room.speakers_sent.insert(listener, scoped.clone());
        match groups.iter_mut().find(|(list, _)| *list == scoped) {
            Some((_, to)) => to.push(listener),
            None => groups.push((scoped, vec![listener])),
        }
    }
    for (speakers, listeners) in groups {
        events.push_back(CoreEvent::Speakers {
            listeners,
            speakers,
        });
    }
}

/// A mixed packet's RED payload for listeners of one Opus payload type: (primary, previous packets newest
/// first, payload type, RED payload).
type MixRedVariant = (Arc<[u8]>, [Option<Arc<[u8]>>; 2], u8, Arc<[u8]>);

/// The RED payload of a mixed packet for a listener that negotiated RED: the packets it was sent before as
/// redundancy (`previous`, newest first: 20 and 40 ms back), then this one, labelled with the listener's
/// Opus payload type. Encoded once per distinct (packets, payload type) in a tick and shared through
/// `variants`.
fn mix_red_payload(
    variants: &mut Vec<MixRedVariant>,
    primary: &Arc<[u8]>,
    previous: &[Option<Arc<[u8]>>; 2],
    opus_pt: u8,
) -> Arc<[u8]> {
    let same = |a: &Option<Arc<[u8]>>, b: &Option<Arc<[u8]>>| match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    if let Some((_, _, _, p)) = variants.iter().find(|(a, b, pt, _)| {
        Arc::ptr_eq(a, primary)
            && same(&b[0], &previous[0])
            && same(&b[1], &previous[1])
            && *pt == opus_pt
    }) {
        return p.clone();
    }
    let frame = crate::audio::FRAME_SAMPLES as u32;
    // Oldest first, as RFC 2198 lists them; on the stack (a tick encodes a variant per personal mix).
    let mut redundant = [red::RedundantFrame::default(); 2];
    let mut n = 0;
    for (back, p) in previous.iter().enumerate().rev() {
        if let Some(p) = p {
            redundant[n] = red::RedundantFrame {
                ts_offset: frame * (back as u32 + 1),
                payload: p,
            };
            n += 1;
        }
    }
    let redundant = &redundant[..n];
    let bytes: usize = redundant.iter().map(|f| f.payload.len() + 4).sum();
    let mut out = Vec::with_capacity(primary.len() + bytes + 1);
    red::encode(opus_pt, primary, redundant, |_, _| true, &mut out);
    let payload: Arc<[u8]> = Arc::from(out);
    variants.push((primary.clone(), previous.clone(), opus_pt, payload.clone()));
    payload
}

/// A `Slots` event for every subscriber whose slot assignment changed in the selector's last update.
pub(super) fn slot_events(
    selector: &mut crate::sfu::slots::SlotSelector,
    participants: &super::ParticipantMap,
    events: &mut VecDeque<CoreEvent>,
) {
    let changed: Vec<ParticipantId> = selector.drain_changes().collect();
    for sub in changed {
        if let Some(p) = participants.get(&sub) {
            events.push_back(CoreEvent::Slots {
                subscriber: sub,
                slots: slot_infos(p, selector.assignment(sub), participants),
            });
        }
    }
}

pub(super) fn slot_infos(
    p: &Participant,
    assignment: &[Option<ParticipantId>],
    all: &super::ParticipantMap,
) -> Vec<SlotAssignment> {
    p.slots()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let participant = assignment.get(i).copied().flatten();
            SlotAssignment {
                slot: i as u8,
                mid: s.mid.to_string(),
                participant,
                ssrc: participant
                    .and_then(|o| all.get(&o).and_then(|x| x.ssrc))
                    .map(|ssrc| ssrc.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_red_payload_lists_the_older_packets_first_and_is_encoded_once_per_tick() {
        let primary: Arc<[u8]> = Arc::from(&[1u8; 60][..]);
        let back1: Arc<[u8]> = Arc::from(&[2u8; 50][..]);
        let back2: Arc<[u8]> = Arc::from(&[3u8; 40][..]);
        let mut variants = Vec::new();
        let two = [Some(back1.clone()), Some(back2.clone())];
        let red = mix_red_payload(&mut variants, &primary, &two, 111);
        let parsed = red::parse(&red, 111).expect("a valid RED payload");
        assert_eq!(parsed.primary, &primary[..]);
        let frames: Vec<(u32, &[u8])> = parsed
            .redundant
            .iter()
            .map(|f| (f.ts_offset, f.payload))
            .collect();
        assert_eq!(frames, vec![(1920, &back2[..]), (960, &back1[..])]);
        // The same packets again: the same encoding, shared.
        let again = mix_red_payload(&mut variants, &primary, &two, 111);
        assert!(Arc::ptr_eq(&red, &again));
        // One back: a variant of its own.
        let one = mix_red_payload(&mut variants, &primary, &[Some(back1.clone()), None], 111);
        let parsed = red::parse(&one, 111).expect("a valid RED payload");
        assert_eq!(parsed.redundant.len(), 1);
        assert_eq!(parsed.redundant[0].ts_offset, 960);
        assert_eq!(variants.len(), 2);
    }

    #[test]
    fn a_mixer_tick_wakes_on_time_and_bookkeeping_waits_for_an_input_up_to_the_slack() {
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        let mut tick = RoomTick::default();
        assert!(!tick.is_due(t));
        assert_eq!(tick.wake(), None);
        tick.lazy(t + Duration::from_millis(5));
        assert!(!tick.is_due(t + Duration::from_millis(4)));
        assert!(tick.is_due(t + Duration::from_millis(5)));
        assert_eq!(tick.wake(), Some(t + Duration::from_millis(5) + LAZY_SLACK));
        // A mixer's tick at 12 ms: the core wakes for it, and the bookkeeping runs then too.
        tick.exact(t + Duration::from_millis(12));
        assert_eq!(tick.wake(), Some(t + Duration::from_millis(12)));
        assert!(tick.is_due(t + Duration::from_millis(5)));
    }
}
