//! Talk groups on the core: a participant's team and shout role (from its join), its talk target, and the
//! volume a listener gives another participant — all kept in its room's [`Audibility`], which applies them.

use std::time::Instant;

use super::timers::{refresh_audibility, slot_events};
use super::{CoreError, MediaCore};
use crate::audibility::Audibility;
use crate::ids::ParticipantId;
use vocab::{TalkTarget, TeamId, Volume, MAX_WHISPER_TARGETS};

impl MediaCore {
    /// A participant's team (`None`: none). Team mates always hear each other in a spatial room, and hear
    /// its team talk in any room.
    pub fn set_team(
        &mut self,
        now: Instant,
        id: ParticipantId,
        team: Option<TeamId>,
    ) -> Result<(), CoreError> {
        self.with_audibility(now, id, |a| a.set_team(now, id, team))
    }

    /// The shout role: heard by the whole room, whatever the distance, team or `max_audible`.
    pub fn set_shout(
        &mut self,
        now: Instant,
        id: ParticipantId,
        shout: bool,
    ) -> Result<(), CoreError> {
        self.with_audibility(now, id, |a| a.set_shout(now, id, shout))
    }

    /// Whom a participant's voice is for. Applied at once: its next packet goes only where the new target
    /// allows. A whisper names 1 to [`MAX_WHISPER_TARGETS`] others ([`CoreError::BadTarget`] otherwise);
    /// a named id that is not in the room (yet, or any more) hears nothing.
    pub fn set_talk_target(
        &mut self,
        now: Instant,
        id: ParticipantId,
        target: TalkTarget<ParticipantId>,
    ) -> Result<(), CoreError> {
        if let TalkTarget::Whisper(to) = &target {
            if to.is_empty() || to.len() > MAX_WHISPER_TARGETS || to.contains(&id) {
                return Err(CoreError::BadTarget);
            }
        }
        self.with_audibility(now, id, |a| a.set_target(now, id, target))
    }

    /// How loud `listener` hears `speaker` ([`Volume::SILENT`]: not at all). A mixed room applies it in the
    /// listener's mix; a forwarding room only ranks the listener's slots by it (the client plays it out).
    pub fn set_volume(
        &mut self,
        now: Instant,
        listener: ParticipantId,
        speaker: ParticipantId,
        volume: Volume,
    ) -> Result<(), CoreError> {
        self.with_audibility(now, listener, |a| {
            a.set_volume(now, listener, speaker, volume)
        })
    }

    /// Change `id`'s room's audibility, then apply it at once: the sets, the slots (and their events) and
    /// the scoped speaker lists follow before the next packet.
    pub(super) fn with_audibility(
        &mut self,
        now: Instant,
        id: ParticipantId,
        change: impl FnOnce(&mut Audibility),
    ) -> Result<(), CoreError> {
        self.last_now = now;
        let key = self
            .participants
            .get(&id)
            .ok_or(CoreError::UnknownParticipant(id))?
            .room;
        let room = self
            .rooms
            .get_mut(&key)
            .expect("a participant's room exists while it has members");
        change(&mut room.audibility);
        if refresh_audibility(now, room, &self.participants, &mut self.events) {
            room.selector.audibility_changed();
            if room.selector.update_in(now, Some(&room.audibility)) {
                slot_events(&mut room.selector, &self.participants, &mut self.events);
            }
        }
        self.arm_tick(key);
        Ok(())
    }
}
