//! Rooms larger than a worker: a room split into *shards* (one per core, or node, hosting some of its
//! participants) that exchange their candidates as trunk messages (docs/architecture.md, "Rooms larger
//! than a worker").
//!
//! A shard of a *spanned* room ([`MediaCore::set_spanned_rooms`]) exports each packet of its local
//! candidates — the local publishers slot selection ranks loudest (the room's K slots in a forwarding room,
//! the mixer's [`MAX_CSRCS`] in a mixed one) and any local publisher holding a local slot — as
//! [`Output::Trunk`](super::Output::Trunk). Another shard imports them with [`MediaCore::push_trunk`] as
//! *remote participants*: server-side source participants (`source.rs`) whose level comes with the packet,
//! so its slot selection or mixer ranks local and remote candidates alike. The global top K is inside the
//! union of the local top Ks, so every shard selects the same speakers. Imported packets are never
//! exported again.
//!
//! Every packet carries its speaker's [`Voice`] (team, shout role, talk target) as its own shard's
//! [`Audibility`](crate::audibility::Audibility) has it, and the importing shard puts it in its room's
//! audibility before the packet is delivered: a whisper or a team's talk is heard on every shard only by
//! whom it is for, by the one policy. In every packet rather than in a state message of its own, so a lost
//! datagram loses nothing but its audio and a remote speaker is never heard under a stale or missing target.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ingress::Audio;
use super::room::{Room, RoomKind};
use super::source::SourceInput;
use super::{CoreError, JoinParams, Link, MediaCore};
use crate::audibility::{Audibility, Voice};
use crate::ids::{ParticipantId, RoomId, Ssrc};
use crate::mixer::opus_packet_info;
use crate::speakers::csrc_levels::MAX_CSRCS;
use crate::stats::DropReason;
use vocab::{Position, RoomSettings, SourceRole};

/// A remote participant not heard from this long is removed (its withdrawal was lost, or its shard died).
pub const REMOTE_IDLE: Duration = Duration::from_secs(2);

/// Most remote participants one room imports: every other shard's exports (K ≤ 16, or a mixer's 15, plus
/// its slot holders), with room for many shards. Beyond it a packet is refused.
pub const MAX_REMOTE_PER_ROOM: usize = 512;

/// One packet of a shard's candidate, as the speaker sent it: what another shard needs to rank, forward or
/// mix it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrunkPacket {
    pub room: RoomId,
    pub speaker: ParticipantId,
    /// The speaker's own SSRC (the CSRC of forwarded packets on every shard).
    pub ssrc: Ssrc,
    /// The speaker's extended sequence number.
    pub seq: u64,
    /// RTP timestamp, 48 kHz.
    pub timestamp: u32,
    /// RFC 6464 level in −dBov (0 loudest, 127 silence), if known.
    pub level: Option<u8>,
    /// Plain Opus (a RED packet's primary).
    pub payload: Arc<[u8]>,
    /// Whom the speaker talks to, and its team and shout role: the importing shard applies them.
    pub voice: Arc<Voice>,
    /// Where the speaker is, in a spatial room once it sent a position: the importing shard places it.
    pub position: Option<Position>,
}

/// What one shard of a room tells the others.
#[derive(Clone, Debug, PartialEq)]
pub enum TrunkMessage {
    /// A packet of one of its candidates.
    Audio(TrunkPacket),
    /// A speaker is no longer among its candidates (quieter than the others, muted, or gone): the other
    /// shards remove it now rather than after [`REMOTE_IDLE`].
    Withdrawn {
        room: RoomId,
        speaker: ParticipantId,
    },
    /// The loss the shard's own subscribers of a forwarding room report (a report block's fraction, at
    /// most the sender's cap), sent when it changes and every few seconds while it is above 0: the other
    /// shards' publishers are told it too (`loss_feedback.rs`). `shard` tells the senders apart.
    LossFloor {
        room: RoomId,
        shard: u64,
        fraction: u8,
    },
}

impl TrunkMessage {
    pub fn room(&self) -> &RoomId {
        match self {
            TrunkMessage::Audio(p) => &p.room,
            TrunkMessage::Withdrawn { room, .. } => room,
            TrunkMessage::LossFloor { room, .. } => room,
        }
    }
}

/// A room's part in spanning.
#[derive(Debug, Default)]
pub(crate) struct RoomTrunk {
    /// The room has other shards: its candidates are exported.
    pub(crate) spanned: bool,
    /// The local publishers whose packets are exported (a handful: see [`refresh_exports`]).
    pub(crate) exports: Vec<ParticipantId>,
    /// The remote participants imported into the room, and when each was last heard.
    pub(crate) imported: HashMap<ParticipantId, Instant>,
    /// The voice each export's packets carry, shared by them until it changes.
    pub(crate) voices: HashMap<ParticipantId, Arc<Voice>>,
}

impl RoomTrunk {
    pub(crate) fn is_remote(&self, id: &ParticipantId) -> bool {
        self.imported.contains_key(id)
    }

    /// When the first remote participant expires, if any.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.imported.values().min().map(|t| *t + REMOTE_IDLE)
    }

    /// The voice `id`'s packets carry: the cached one while the room's audibility still has it (compared in
    /// place, no allocation per packet), else a fresh copy.
    fn voice(&mut self, audibility: &Audibility, id: ParticipantId) -> Arc<Voice> {
        if let Some(cached) = self.voices.get(&id) {
            if audibility.has_voice(id, cached) {
                return Arc::clone(cached);
            }
        }
        let voice = Arc::new(audibility.voice(id).cloned().unwrap_or_default());
        self.voices.insert(id, Arc::clone(&voice));
        voice
    }

    /// The remote participants not heard since `now - REMOTE_IDLE`.
    pub(crate) fn expired(&self, now: Instant) -> impl Iterator<Item = ParticipantId> + '_ {
        self.imported
            .iter()
            .filter(move |(_, t)| now.saturating_duration_since(**t) >= REMOTE_IDLE)
            .map(|(id, _)| *id)
    }
}

/// A delivered packet of `from` leaves for the other shards if `from` is one of the room's exports.
#[allow(clippy::too_many_arguments)]
pub(super) fn export(
    room: &mut Room,
    from: ParticipantId,
    ssrc: Ssrc,
    seq: u64,
    timestamp: u32,
    level: Option<i8>,
    payload: &Arc<[u8]>,
    out: &mut VecDeque<TrunkMessage>,
) {
    if !room.trunk.exports.contains(&from) {
        return;
    }
    let voice = room.trunk.voice(&room.audibility, from);
    let position = room
        .audibility
        .space()
        .and_then(|space| space.position(from))
        .copied();
    out.push_back(TrunkMessage::Audio(TrunkPacket {
        room: room.id.clone(),
        speaker: from,
        ssrc,
        seq,
        timestamp,
        level: level.map(|l| l.unsigned_abs().min(127)),
        payload: Arc::clone(payload),
        voice,
        position,
    }));
}

/// After a selector update of a spanned room: its exports become the local candidates slot selection ranks
/// loudest (as many as one shard's selection could use: the room's slots, or the mixer's talkers) plus the
/// local publishers holding a local slot (so a speaker this shard still hears stays a candidate
/// everywhere); the publishers that left the exports are withdrawn.
pub(super) fn refresh_exports(room: &mut Room, out: &mut VecDeque<TrunkMessage>) {
    if !room.trunk.spanned {
        return;
    }
    let wanted = match room.kind {
        RoomKind::Forward => usize::from(room.config.slots),
        RoomKind::Mix(_) => MAX_CSRCS,
    };
    let mut exports = Vec::with_capacity(wanted);
    let mut loudest = 0;
    for id in room.selector.ranking() {
        if room.trunk.is_remote(&id) || !room.selector.is_eligible(id) {
            continue;
        }
        if loudest < wanted {
            loudest += 1;
            exports.push(id);
        } else if !room.selector.routes(id).is_empty() {
            exports.push(id);
        }
    }
    for gone in room.trunk.exports.iter().filter(|id| !exports.contains(id)) {
        out.push_back(TrunkMessage::Withdrawn {
            room: room.id.clone(),
            speaker: *gone,
        });
    }
    room.trunk.voices.retain(|id, _| exports.contains(id));
    room.trunk.exports = exports;
}

impl MediaCore {
    /// The rooms that have shards elsewhere (all of them, replacing the previous set): a room among them
    /// exports its candidates as [`Output::Trunk`](super::Output::Trunk), now and whenever it is created on
    /// this core later. A room that left the set withdraws its exports and drops its remote participants.
    pub fn set_spanned_rooms(&mut self, now: Instant, rooms: HashSet<RoomId>) {
        self.last_now = now;
        let mut dropped = Vec::new();
        for room in self.rooms.values_mut() {
            let spanned = rooms.contains(&room.id);
            if room.trunk.spanned == spanned {
                continue;
            }
            room.trunk.spanned = spanned;
            if spanned {
                // Exports at the next update, which becomes due at once.
                room.selector.audibility_changed();
                room.arm_tick(&mut self.tick);
            } else {
                room.trunk.voices.clear();
                room.loss_feedback.unspanned();
                for speaker in room.trunk.exports.drain(..) {
                    self.trunk_out.push_back(TrunkMessage::Withdrawn {
                        room: room.id.clone(),
                        speaker,
                    });
                }
                dropped.extend(room.trunk.imported.keys().copied());
            }
        }
        self.spanned_rooms = rooms;
        for id in dropped {
            let _ = self.remove_participant(now, id);
        }
    }

    /// A trunk message from another shard of one of this core's rooms. A packet's speaker joins the room as
    /// a remote participant at its first packet. Refused (and counted): a room this core does not host
    /// ([`CoreError::UnknownRoom`]), a speaker that is a local participant here ([`CoreError::NotRemote`]),
    /// a payload that is not Opus, a room with [`MAX_REMOTE_PER_ROOM`] remote participants.
    pub fn push_trunk(&mut self, now: Instant, message: TrunkMessage) -> Result<(), CoreError> {
        self.last_now = now;
        self.run_due(now);
        let Some(&key) = self.room_keys.get(message.room()) else {
            self.stats.trunk.no_room += 1;
            return Err(CoreError::UnknownRoom(message.room().clone()));
        };
        let packet = match message {
            TrunkMessage::Withdrawn { speaker, .. } => {
                self.stats.trunk.withdrawn_in += 1;
                let remote = self
                    .rooms
                    .get(&key)
                    .is_some_and(|r| r.trunk.is_remote(&speaker));
                if remote {
                    self.remove_participant(now, speaker)?;
                }
                return Ok(());
            }
            TrunkMessage::LossFloor {
                shard, fraction, ..
            } => {
                self.import_loss_floor(now, key, shard, fraction);
                return Ok(());
            }
            TrunkMessage::Audio(packet) => packet,
        };
        if opus_packet_info(&packet.payload).is_none() {
            self.stats.drop(DropReason::Malformed);
            return Err(CoreError::NotOpus(packet.speaker));
        }
        let id = packet.speaker;
        let room = self
            .rooms
            .get_mut(&key)
            .expect("room_keys names only rooms that exist");
        let remote_count = room.trunk.imported.len();
        match room.trunk.imported.get_mut(&id) {
            Some(heard) => *heard = now,
            None if self.participants.contains_key(&id) => {
                self.stats.trunk.refused += 1;
                return Err(CoreError::NotRemote(id));
            }
            None if remote_count >= MAX_REMOTE_PER_ROOM => {
                self.stats.trunk.refused += 1;
                return Err(CoreError::RemoteLimit(room.id.clone()));
            }
            None => {
                room.trunk.imported.insert(id, now);
                let settings: RoomSettings = room.config;
                let params = JoinParams {
                    can_publish: true,
                    can_subscribe: false,
                    muted: false,
                    hears_mix: false,
                };
                let input = SourceInput::new(packet.ssrc, SourceRole::Plain);
                let room_id = room.id.clone();
                self.join_room(
                    now,
                    &room_id,
                    settings,
                    Some(key),
                    id,
                    params,
                    Link::Source(Box::new(input)),
                );
                if let Some(room) = self.rooms.get_mut(&key) {
                    room.arm_tick(&mut self.tick);
                }
            }
        }
        // The speaker's voice as its own shard has it, in this room's audibility before its packet is
        // routed or mixed (the sets, slots and speaker lists follow at once, as for a local `talk`).
        let same_voice = self
            .rooms
            .get(&key)
            .is_some_and(|r| r.audibility.has_voice(id, &packet.voice));
        if !same_voice {
            let voice = Voice::clone(&packet.voice);
            self.stats.trunk.voice_changes += 1;
            self.with_audibility(now, id, |a| a.set_voice(now, id, voice))?;
        }
        // Its place in a spatial room (heard by distance from the next refresh, ≤ 10 Hz, as a local move).
        if let Some(position) = packet.position {
            let moved = self.rooms.get(&key).is_some_and(|r| {
                r.audibility
                    .space()
                    .is_some_and(|space| space.position(id) != Some(&position))
            });
            if moved {
                // A room that is not spatial here, or a position out of the world: not placed.
                let _ = self.set_position(now, id, position);
            }
        }
        self.stats.trunk.packets_in += 1;
        let audio = Audio {
            source: packet.ssrc,
            seq: packet.seq,
            ts: packet.timestamp,
            arrival: now,
            payload: packet.payload,
            red: None,
            level: Some(-(packet.level.unwrap_or(127).min(127) as i8)),
            vad: None,
        };
        self.deliver(now, id, audio);
        Ok(())
    }

    /// Remove remote participants not heard for [`REMOTE_IDLE`].
    pub(super) fn expire_remote(&mut self, now: Instant, expired: Vec<ParticipantId>) {
        for id in expired {
            self.stats.trunk.expired += 1;
            let _ = self.remove_participant(now, id);
        }
    }

    /// A participant leaves its room's trunk: a local export is withdrawn, a remote one forgotten. Returns
    /// whether it was a remote participant, and the room's remaining members if only remote participants
    /// are left (the shard ends with them).
    pub(super) fn leave_trunk(
        &mut self,
        key: u64,
        id: ParticipantId,
    ) -> (bool, Vec<ParticipantId>) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return (false, Vec::new());
        };
        let was_remote = room.trunk.imported.remove(&id).is_some();
        if let Some(i) = room.trunk.exports.iter().position(|e| *e == id) {
            room.trunk.exports.swap_remove(i);
            room.trunk.voices.remove(&id);
            self.trunk_out.push_back(TrunkMessage::Withdrawn {
                room: room.id.clone(),
                speaker: id,
            });
        }
        let only_remote = !was_remote
            && !room.trunk.imported.is_empty()
            && room
                .members
                .iter()
                .all(|m| *m == id || room.trunk.is_remote(m));
        let remote_left = if only_remote {
            room.trunk.imported.keys().copied().collect()
        } else {
            Vec::new()
        };
        (was_remote, remote_left)
    }
}
