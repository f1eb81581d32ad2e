//! Server-side source participants: members of a room whose Opus packets come from the server process (an
//! Icecast source connection, an RTP socket, a playlist decoder) instead of a WebRTC peer.
//!
//! A source is a participant like any other — slot selection, dominant speaker, the mixer and its jitter
//! buffer, a spatial room's audibility, mute — with a [`SourceInput`] where a peer would be: no SDP, no ICE,
//! nothing sent to it. Its packets enter with [`MediaCore::push_source`] and take the same path as a
//! peer's microphone packets from there (`ingress.rs`). A source carries no RFC 6464 level, so the core
//! measures one per packet from its own decode.

use std::sync::Arc;
use std::time::Instant;

use super::ingress::Audio;
use super::{CoreError, JoinParams, Link, MediaCore};
use crate::ids::{ParticipantId, RoomId, Ssrc};
use crate::mixer::opus_packet_info;
use crate::speakers::meter::LevelMeter;
use crate::stats::DropReason;
use vocab::{RoomSettings, SourcePacket, SourceRole};

/// Where a source participant's packets come from inside the core: its stream identity and the decoder
/// that measures each packet's level.
pub(crate) struct SourceInput {
    /// Made up by the core (a source has no RTP stream of its own): the CSRC of its forwarded packets
    /// and the SSRC its slot assignments name.
    pub(crate) ssrc: Ssrc,
    /// The last extended sequence number: the source's 16-bit numbers continue across wrap-arounds.
    last_seq: Option<u64>,
    meter: LevelMeter,
    role: SourceRole,
}

impl SourceInput {
    pub(super) fn new(ssrc: Ssrc, role: SourceRole) -> Self {
        SourceInput {
            ssrc,
            role,
            last_seq: None,
            meter: LevelMeter::default(),
        }
    }

    /// `seq` extended to 64 bits: the value with these low 16 bits nearest to the last one.
    fn extend_seq(&mut self, seq: u16) -> u64 {
        let ext = match self.last_seq {
            None => u64::from(seq) + (1 << 16),
            Some(last) => {
                let base = last & !0xffff;
                [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
                    .into_iter()
                    .map(|b| b + u64::from(seq))
                    .min_by_key(|c| c.abs_diff(last))
                    .unwrap_or(last)
            }
        };
        if self.last_seq.is_none_or(|last| ext > last) {
            self.last_seq = Some(ext);
        }
        ext
    }
}

impl MediaCore {
    /// Add a server-side source participant to `room` (created with `settings` if needed, refused as
    /// [`MediaCore::add_participant`] refuses a peer's room). It publishes (unless `muted`) and subscribes
    /// to nothing; its packets come through [`MediaCore::push_source`].
    pub fn add_source(
        &mut self,
        now: Instant,
        room: &RoomId,
        settings: RoomSettings,
        id: ParticipantId,
        muted: bool,
    ) -> Result<(), CoreError> {
        self.add_source_as(now, room, settings, id, muted, SourceRole::Plain)
    }

    /// [`MediaCore::add_source`] with a [`SourceRole`]: hold music is gated per packet on the room's
    /// WebRTC participants; an announcement ducks every other voice in the room's mixer (a mixed room's,
    /// or a forwarding room's listener mount's) until it leaves.
    pub fn add_source_as(
        &mut self,
        now: Instant,
        room: &RoomId,
        settings: RoomSettings,
        id: ParticipantId,
        muted: bool,
        role: SourceRole,
    ) -> Result<(), CoreError> {
        self.last_now = now;
        if self.participants.contains_key(&id) {
            return Err(CoreError::AlreadyConnected(id));
        }
        let (existing, settings) = self.room_settings_for(room, settings)?;
        let ssrc = Ssrc(self.rng.next_u64() as u32);
        let params = JoinParams {
            can_publish: true,
            can_subscribe: false,
            muted,
            hears_mix: false,
        };
        self.join_room(
            now,
            room,
            settings,
            existing,
            id,
            params,
            Link::Source(Box::new(SourceInput::new(ssrc, role))),
        );
        if let SourceRole::Announcement { duck_db } = role {
            let key = self.participants.get(&id).map(|p| p.room);
            if let Some(mixer) = key
                .and_then(|k| self.rooms.get_mut(&k))
                .and_then(|r| r.input_mixer_mut())
            {
                mixer.set_duck(id, crate::mixer::duck::db_to_gain(duck_db.min(0.0)));
            }
        }
        Ok(())
    }

    /// Whether the room `key` has exactly one WebRTC participant (hold music plays only then).
    fn alone_in_room(&self, key: u64) -> bool {
        let Some(room) = self.rooms.get(&key) else {
            return false;
        };
        let peers = room
            .members
            .iter()
            .filter(|m| {
                self.participants
                    .get(m)
                    .is_some_and(|p| matches!(p.link, Link::Peer(_)))
            })
            .take(2)
            .count();
        peers == 1
    }

    /// One Opus packet of a source participant. A packet that is not Opus is refused with
    /// [`CoreError::NotOpus`] (and counted as a `malformed` drop); a muted source's packets, and hold
    /// music's while its room has other than one WebRTC participant, are counted as `not_publishing` and
    /// go nowhere.
    pub fn push_source(
        &mut self,
        now: Instant,
        id: ParticipantId,
        packet: SourcePacket,
    ) -> Result<(), CoreError> {
        self.last_now = now;
        let p = self
            .participants
            .get(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let Link::Source(input) = &p.link else {
            return Err(CoreError::NotASource(id));
        };
        // Hold music while the room is not down to one person: gated like a muted source's.
        let held = input.role == SourceRole::Hold && !self.alone_in_room(p.room);
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let publishes = p.publishes();
        let Link::Source(input) = &mut p.link else {
            return Err(CoreError::NotASource(id));
        };
        if opus_packet_info(&packet.payload).is_none() {
            self.stats.drop(DropReason::Malformed);
            return Err(CoreError::NotOpus(id));
        }
        let seq = input.extend_seq(packet.seq);
        if held {
            self.stats.drop(DropReason::NotPublishing);
            return Ok(());
        }
        let source = input.ssrc;
        // Only a publishing source costs a decode.
        let level = if publishes {
            input.meter.level(now, &packet.payload)
        } else {
            None
        };
        let audio = Audio {
            source,
            seq,
            ts: packet.timestamp,
            arrival: now,
            payload: Arc::clone(&packet.payload),
            red: None,
            level: Some(-(level.unwrap_or(127).min(127) as i8)),
            vad: None,
        };
        self.deliver(now, id, audio);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_wraps_and_reordering() {
        let mut input = SourceInput::new(Ssrc(1), SourceRole::Plain);
        let a = input.extend_seq(65534);
        assert_eq!(input.extend_seq(65535), a + 1);
        assert_eq!(input.extend_seq(0), a + 2);
        // Reordered from before the wrap: behind, not 65,535 ahead.
        assert_eq!(input.extend_seq(65535), a + 1);
        assert_eq!(input.extend_seq(1), a + 3);
    }
}
