//! A room's participants: admission (room and server limits, bans, draining), mute, media attachment,
//! lookup by sid, and leaving.

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::auth::unix_now;
use crate::events::RoomEvent;
use crate::media::ParticipantId;
use crate::metrics::SessionLimit;
use crate::protocol::{LeftReason, ParticipantInfo, ParticipantLeftReason, SharedParticipant};
use crate::roster::{RemoteRoster, RosterChange};

use super::{
    next_participant_id, Actor, AdminError, Admission, AdmitError, JoinRequest, MediaState, Member,
    MuteChange, PresenceEvent, Room, RoomOrigin, RoomRegistry, ServerMuted,
};

impl RoomRegistry {
    /// [`Self::admit_at`] now.
    pub(crate) fn admit(
        &self,
        request: JoinRequest,
        draining: &AtomicBool,
    ) -> Result<Admission, AdmitError> {
        self.admit_at(request, draining, Instant::now())
    }

    /// Admits a participant at `now`, creating the room from the defaults if this is its first
    /// participant, and tells everyone else. Refused while `draining` is set, while the identity is
    /// banned from the room (kicked less than the ban period ago), when the room is at its limit, or
    /// while it is being deleted. A participant already in the room with the same identity is replaced:
    /// its session is told `left` (`replaced`), the others `participant_left` (`replaced`), and the
    /// newcomer takes its place (so a reconnecting client never finds itself squatting its own seat).
    pub(crate) fn admit_at(
        &self,
        mut request: JoinRequest,
        draining: &AtomicBool,
        now: Instant,
    ) -> Result<Admission, AdmitError> {
        let mut rooms = self.lock();
        // Checked under the lock: see `fence`.
        if draining.load(Ordering::SeqCst) {
            return Err(AdmitError::Draining);
        }
        let ban_key = (request.room.clone(), request.identity.clone());
        if let Some(until) = self.lock_bans().get(&ban_key).copied() {
            if until > now {
                self.metrics.limit_hit(SessionLimit::Banned);
                let left = until - now;
                return Err(AdmitError::Banned {
                    remaining_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                });
            }
        }
        let room = match rooms.entry(request.room.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                // A shard of another node's room takes that room's settings (if they are valid).
                let seed = request.shard.take().unwrap_or_default();
                let (settings, max_participants) = seed
                    .room
                    .and_then(|shared| Some((shared.settings()?, shared.max_participants)))
                    .unwrap_or((self.settings, self.max_participants));
                let room = entry.insert(Room {
                    settings,
                    max_participants,
                    origin: RoomOrigin::Join,
                    empty_timeout: Duration::ZERO,
                    created_at_unix: unix_now(),
                    empty_since: None,
                    closing: false,
                    members: Vec::new(),
                    remote: Vec::new(),
                });
                self.room_created(&request.room, room);
                for (node, members) in seed.members {
                    self.apply_remote(&request.room, room, &node, RemoteRoster::Sync(members));
                }
                room
            }
        };
        if room.closing {
            return Err(AdmitError::RoomClosed);
        }
        if let Some(index) = room
            .members
            .iter()
            .position(|m| m.info.identity == request.identity)
        {
            self.replace_member(&request.room, room, index);
        }
        // The same identity on another node of a spanned room: it goes too. Its node ends it when it reads
        // `replaces` in this join's roster change; it is no longer listed here from now.
        let replaces: Vec<String> = room
            .remote
            .iter()
            .filter(|r| r.info.identity == request.identity)
            .map(|r| r.info.sid.clone())
            .collect();
        if !replaces.is_empty() {
            self.metrics.limit_hit(SessionLimit::IdentityReplaced);
            tracing::info!(
                room = %request.room,
                participants = ?replaces,
                "a participant on another node replaced by a new session with the same identity"
            );
            self.remove_remote(
                room,
                |r| replaces.contains(&r.info.sid),
                ParticipantLeftReason::Replaced,
            );
        }
        // A room spanning nodes counts its participants everywhere.
        if room.members.len() + room.remote.len() >= room.max_participants {
            return Err(AdmitError::RoomFull {
                max_participants: room.max_participants,
            });
        }
        let id = next_participant_id();
        let participant = ParticipantInfo {
            sid: id.to_string(),
            identity: request.identity,
            name: request.name,
            muted: false,
            can_publish: request.can_publish,
            can_subscribe: request.can_subscribe,
            server_muted: false,
            deafened: false,
            ptt: request.ptt,
            team: request.team,
            shout: request.shout,
            remote: false,
        };
        let others = room
            .members
            .iter()
            .map(|m| m.info.clone())
            .chain(room.remote.iter().map(|r| r.info.clone()))
            .collect();
        self.broadcast(&room.members, PresenceEvent::Joined(participant.clone()));
        self.publish(
            &request.room,
            RosterChange::Joined {
                participant: participant.clone(),
                replaces,
            },
        );
        let (remove, removed) = watch::channel(None);
        let (moves, moved) = watch::channel(None);
        room.members.push(Member {
            id,
            media: false,
            info: SharedParticipant::new(participant.clone()),
            events: request.events,
            remove,
            moves,
        });
        room.empty_since = None;
        self.metrics.participant_joined(room.settings.mode);
        let info = room.info(&request.room);
        self.notify(RoomEvent::ParticipantJoined {
            room: info.clone(),
            participant: participant.clone(),
        });
        Ok(Admission {
            id,
            participant,
            room: info,
            settings: room.settings,
            others,
            removed,
            moved,
        })
    }

    /// Ends local participant `index` of `room` (named `name`): a new session with its identity joined,
    /// here or on another node. It is told `left` `replaced`, the others `participant_left`, and so are the
    /// other nodes of a spanned room.
    pub(super) fn replace_member(&self, name: &str, room: &mut Room, index: usize) {
        let old = room.members.remove(index);
        old.remove.send_replace(Some(LeftReason::Replaced));
        self.metrics.participant_left(room.settings.mode);
        self.metrics.limit_hit(SessionLimit::IdentityReplaced);
        tracing::info!(
            room = %name,
            participant = %old.info.sid,
            "participant replaced by a new session with the same identity"
        );
        self.notify(RoomEvent::ParticipantLeft {
            room: room.info(name),
            participant: ParticipantInfo::clone(&old.info),
            reason: ParticipantLeftReason::Replaced,
        });
        self.publish(
            name,
            RosterChange::Left {
                sid: old.info.sid.clone(),
                reason: ParticipantLeftReason::Replaced,
            },
        );
        let event = PresenceEvent::Left {
            sid: old.info.sid.clone(),
            reason: ParticipantLeftReason::Replaced,
        };
        self.broadcast(&room.members, event);
    }

    /// Records a participant's mute state and tells everyone in the room, the participant included
    /// (nothing is sent if the state did not change). A moderator's mute is a server mute: the participant's
    /// own unmute is refused with [`ServerMuted`] until a moderator unmutes it. The registry is the one
    /// place the state lives; use it through [`crate::Signaling::set_muted`], which also tells the media
    /// worker.
    pub(crate) fn set_muted(
        &self,
        name: &str,
        id: ParticipantId,
        muted: bool,
        actor: Actor,
    ) -> Result<MuteChange, ServerMuted> {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(name) else {
            return Ok(MuteChange::default());
        };
        let Some(member) = room.members.iter_mut().find(|m| m.id == id) else {
            return Ok(MuteChange::default());
        };
        let server_muted = match actor {
            Actor::Own if member.info.server_muted && !muted => return Err(ServerMuted),
            Actor::Own => member.info.server_muted,
            Actor::Moderator => muted,
        };
        if member.info.muted == muted && member.info.server_muted == server_muted {
            return Ok(MuteChange::default());
        }
        let media_changed = member.info.muted != muted;
        let info = member.info.edit();
        info.muted = muted;
        info.server_muted = server_muted;
        let media = member.media && media_changed;
        let event = PresenceEvent::Muted {
            sid: member.info.sid.clone(),
            muted,
            by_moderator: actor == Actor::Moderator,
        };
        let participant = ParticipantInfo::clone(&member.info);
        self.broadcast(&room.members, event);
        self.publish(name, RosterChange::Updated { participant });
        Ok(MuteChange {
            changed: true,
            media,
        })
    }

    /// Records whether a participant is deafened (sent no audio) and tells everyone in the room with
    /// `participant_updated` (nothing if unchanged).
    pub(crate) fn set_deafened(&self, room: &str, id: ParticipantId, deafened: bool) -> MuteChange {
        self.update(room, id, |info| {
            std::mem::replace(&mut info.deafened, deafened) != deafened
        })
    }

    /// Records whether a participant talks by push-to-talk and tells everyone in the room with
    /// `participant_updated` (nothing if unchanged).
    pub(crate) fn set_ptt(&self, room: &str, id: ParticipantId, ptt: bool) -> MuteChange {
        self.update(room, id, |info| {
            std::mem::replace(&mut info.ptt, ptt) != ptt
        })
    }

    /// Applies `change` to a participant's info; if it reports a change, everyone in the room is sent the
    /// participant as it is now.
    fn update(
        &self,
        name: &str,
        id: ParticipantId,
        change: impl FnOnce(&mut ParticipantInfo) -> bool,
    ) -> MuteChange {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(name) else {
            return MuteChange::default();
        };
        let Some(member) = room.members.iter_mut().find(|m| m.id == id) else {
            return MuteChange::default();
        };
        let mut edited = ParticipantInfo::clone(&member.info);
        if !change(&mut edited) {
            return MuteChange::default();
        }
        // A new entry: lists handed out keep the old one, and nothing is copied to be overwritten.
        member.info = SharedParticipant::new(edited.clone());
        let media = member.media;
        let participant = edited.clone();
        self.broadcast(&room.members, PresenceEvent::Updated(edited));
        self.publish(name, RosterChange::Updated { participant });
        MuteChange {
            changed: true,
            media,
        }
    }

    /// The participant's session sends its offer to a media worker: from now on the worker hears of
    /// mute, deafen and push-to-talk changes. Returns the state the offer carries (`None` if the
    /// participant left).
    pub(crate) fn attach_media(&self, room: &str, id: ParticipantId) -> Option<MediaState> {
        let mut rooms = self.lock();
        let member = rooms
            .get_mut(room)?
            .members
            .iter_mut()
            .find(|m| m.id == id)?;
        member.media = true;
        Some(MediaState {
            muted: member.info.muted,
            deafened: member.info.deafened,
            ptt: member.info.ptt,
        })
    }

    /// Tells the participant `sid` of `from` to move to room `to` (its session leaves and joins; see
    /// [`crate::Signaling::move_participant`]).
    pub(crate) fn request_move(&self, from: &str, sid: &str, to: &str) -> Result<(), AdminError> {
        if !crate::auth::is_valid_room_name(to) {
            return Err(AdminError::InvalidRoomName);
        }
        let rooms = self.lock();
        let room = rooms.get(from).ok_or(AdminError::RoomNotFound)?;
        let member = room
            .members
            .iter()
            .find(|m| m.info.sid == sid)
            .ok_or_else(|| room.missing(sid))?;
        if from == to {
            return Err(AdminError::SameRoom);
        }
        member.moves.send_replace(Some(to.to_owned()));
        Ok(())
    }

    /// The participant `sid` of `room` as it is now.
    pub(crate) fn participant(&self, room: &str, sid: &str) -> Result<ParticipantInfo, AdminError> {
        let rooms = self.lock();
        let room = rooms.get(room).ok_or(AdminError::RoomNotFound)?;
        room.members
            .iter()
            .find(|m| m.info.sid == sid)
            .map(|m| ParticipantInfo::clone(&m.info))
            .ok_or_else(|| room.missing(sid))
    }

    /// The internal id of the participant `sid` in `room`.
    pub(crate) fn find(&self, room: &str, sid: &str) -> Result<ParticipantId, AdminError> {
        let rooms = self.lock();
        let room = rooms.get(room).ok_or(AdminError::RoomNotFound)?;
        room.members
            .iter()
            .find(|m| m.info.sid == sid)
            .map(|m| m.id)
            .ok_or_else(|| room.missing(sid))
    }

    /// Removes a participant and tells the others. A room created by a join goes with its last
    /// participant (and the media router is told, under the registry lock, so that a room re-created by
    /// a later join is routed afresh only after the router forgot the old one); a room created through
    /// the admin API stays until its empty timeout. Returns whether the participant was present.
    pub(crate) fn leave(
        &self,
        room_name: &str,
        id: ParticipantId,
        reason: ParticipantLeftReason,
    ) -> bool {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room_name) else {
            return false;
        };
        let Some(index) = room.members.iter().position(|m| m.id == id) else {
            return false;
        };
        let member = room.members.remove(index);
        self.router.left(room_name, id);
        self.publish(
            room_name,
            RosterChange::Left {
                sid: member.info.sid.clone(),
                reason,
            },
        );
        self.metrics.participant_left(room.settings.mode);
        self.notify(RoomEvent::ParticipantLeft {
            room: room.info(room_name),
            participant: ParticipantInfo::clone(&member.info),
            reason,
        });
        if room.members.is_empty() {
            if room.origin == RoomOrigin::Join || room.closing || room.empty_timeout.is_zero() {
                if let Some(room) = rooms.remove(room_name) {
                    self.room_removed(room_name, &room);
                }
            } else {
                room.empty_since = Some(Instant::now());
            }
        } else {
            let event = PresenceEvent::Left {
                sid: member.info.sid.clone(),
                reason,
            };
            self.broadcast(&room.members, event);
        }
        true
    }

    /// Waits for any admission in progress: after `draining` is set and this returns, no admission can
    /// succeed any more.
    pub(crate) fn fence(&self) {
        drop(self.lock());
    }
}
