//! A room spanning nodes of a cluster: the participants of the other nodes (listed and evented like local
//! ones, marked `remote`), and this node's roster changes handed to the cluster (crate::roster).

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::media::ParticipantId;
use crate::protocol::{ParticipantInfo, ParticipantLeftReason, SharedParticipant};
use crate::roster::{LocalRosterChange, RemoteRoster, RosterChange, RosterOutcome};

use super::{AdminError, PresenceEvent, RemoteMember, Room, RoomRegistry};

impl Room {
    /// Why `sid` is not a local participant: it is another node's, or nobody's.
    pub(super) fn missing(&self, sid: &str) -> AdminError {
        if self.remote.iter().any(|r| r.info.sid == sid) {
            AdminError::RemoteParticipant
        } else {
            AdminError::ParticipantNotFound
        }
    }

    /// Whether `sid` belongs to a participant other than `node`'s: a local one, or a third node's.
    fn taken(&self, node: &str, sid: &str) -> bool {
        self.members.iter().any(|m| m.info.sid == sid)
            || self
                .remote
                .iter()
                .any(|r| r.info.sid == sid && r.node != node)
    }
}

impl RoomRegistry {
    /// The media id of `sid`, a participant of `room` here or on another node (a room spanning nodes):
    /// whom a whisper or a volume may name. A remote participant's shards know it by the id its sid
    /// names (its speech is imported with its own id, and a whisper's list travels with its audio).
    pub(crate) fn find_audible(&self, room: &str, sid: &str) -> Result<ParticipantId, AdminError> {
        match self.find(room, sid) {
            Err(AdminError::RemoteParticipant) => sid
                .parse::<ParticipantId>()
                .map_err(|_| AdminError::ParticipantNotFound),
            found => found,
        }
    }

    /// Where this node's roster changes go (once; later calls return false).
    pub(crate) fn set_roster_sink(&self, sink: mpsc::Sender<LocalRosterChange>) -> bool {
        self.roster.set(sink).is_ok()
    }

    /// Whether a roster change was lost (the sink was full) since the last call.
    pub(crate) fn take_roster_lost(&self) -> bool {
        self.roster_lost.swap(false, Ordering::SeqCst)
    }

    /// Hands a change of this node's roster of `room` to the sink, if there is one.
    pub(super) fn publish(&self, room: &str, change: RosterChange) {
        let Some(sink) = self.roster.get() else {
            return;
        };
        let change = LocalRosterChange {
            room: room.to_owned(),
            change,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = sink.try_send(change) {
            self.roster_lost.store(true, Ordering::SeqCst);
        }
    }

    /// This node's participants of `room` (none if it has no such room).
    pub(crate) fn local_roster(&self, room: &str) -> Option<Vec<ParticipantInfo>> {
        let rooms = self.lock();
        let room = rooms.get(room)?;
        Some(
            room.members
                .iter()
                .map(|m| ParticipantInfo::clone(&m.info))
                .collect(),
        )
    }

    /// The node holding `sid`, a participant of `room` on another node.
    pub(crate) fn remote_node(&self, room: &str, sid: &str) -> Option<String> {
        let rooms = self.lock();
        let room = rooms.get(room)?;
        room.remote
            .iter()
            .find(|r| r.info.sid == sid)
            .map(|r| r.node.clone())
    }

    /// The participants of `room` on other nodes.
    pub(crate) fn remote_participants(&self, room: &str) -> Vec<ParticipantInfo> {
        let rooms = self.lock();
        rooms
            .get(room)
            .map(|room| {
                room.remote
                    .iter()
                    .map(|r| ParticipantInfo::clone(&r.info))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies a change of `node`'s part of `room` and tells this node's participants.
    pub(crate) fn remote_roster(
        &self,
        name: &str,
        node: &str,
        change: RemoteRoster,
    ) -> RosterOutcome {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(name) else {
            return RosterOutcome::NoRoom;
        };
        self.apply_remote(name, room, node, change)
    }

    /// Applies `node`'s `change` to `room` (named `name`).
    pub(super) fn apply_remote(
        &self,
        name: &str,
        room: &mut Room,
        node: &str,
        change: RemoteRoster,
    ) -> RosterOutcome {
        match change {
            RemoteRoster::Change(RosterChange::Joined {
                participant,
                replaces,
            }) => {
                self.replaced_by(name, room, &participant, &replaces);
                self.upsert(room, node, participant)
            }
            RemoteRoster::Change(RosterChange::Updated { participant }) => {
                self.upsert(room, node, participant)
            }
            RemoteRoster::Change(RosterChange::Left { sid, reason }) => {
                self.remove_remote(room, |r| r.node == node && r.info.sid == sid, reason);
                RosterOutcome::Applied
            }
            RemoteRoster::Sync(participants) => {
                self.remove_remote(
                    room,
                    |r| r.node == node && !participants.iter().any(|p| p.sid == r.info.sid),
                    ParticipantLeftReason::Left,
                );
                let mut outcome = RosterOutcome::Applied;
                for participant in participants {
                    if self.upsert(room, node, participant) == RosterOutcome::Collision {
                        outcome = RosterOutcome::Collision;
                    }
                }
                outcome
            }
            RemoteRoster::Gone => {
                self.remove_remote(
                    room,
                    |r| r.node == node,
                    ParticipantLeftReason::Disconnected,
                );
                RosterOutcome::Applied
            }
        }
    }

    /// A participant joined on another node: the local participants with its identity that it replaces
    /// end with `replaced` — those its join names (the joining node saw them), and, when both joined
    /// before either node knew of the other, the one with the lower id (each node decides alike for its
    /// own, from the same two ids, so exactly one of them stays).
    fn replaced_by(
        &self,
        name: &str,
        room: &mut Room,
        joined: &ParticipantInfo,
        replaces: &[String],
    ) {
        while let Some(index) = room.members.iter().position(|m| {
            m.info.identity == joined.identity
                && (replaces.contains(&m.info.sid) || m.info.sid < joined.sid)
        }) {
            self.replace_member(name, room, index);
        }
    }

    /// Adds or updates `node`'s participant; this node's participants are told `participant_joined`,
    /// or `participant_muted` and `participant_updated` for what changed.
    fn upsert(&self, room: &mut Room, node: &str, info: ParticipantInfo) -> RosterOutcome {
        if room.taken(node, &info.sid) {
            tracing::warn!(sid = %info.sid, node, "a participant id of another node is taken here");
            return RosterOutcome::Collision;
        }
        let info = ParticipantInfo {
            remote: true,
            ..info
        };
        let Some(known) = room
            .remote
            .iter_mut()
            .find(|r| r.node == node && r.info.sid == info.sid)
        else {
            self.broadcast(&room.members, PresenceEvent::Joined(info.clone()));
            room.remote.push(RemoteMember {
                node: node.to_owned(),
                info: SharedParticipant::new(info),
            });
            return RosterOutcome::Applied;
        };
        let before = std::mem::replace(known.info.edit(), info.clone());
        if (before.muted, before.server_muted) != (info.muted, info.server_muted) {
            let event = PresenceEvent::Muted {
                sid: info.sid.clone(),
                muted: info.muted,
                by_moderator: info.server_muted || before.server_muted,
            };
            self.broadcast(&room.members, event);
        }
        let rest = |p: &ParticipantInfo| ParticipantInfo {
            muted: false,
            server_muted: false,
            ..p.clone()
        };
        if rest(&before) != rest(&info) {
            self.broadcast(&room.members, PresenceEvent::Updated(info));
        }
        RosterOutcome::Applied
    }

    /// Removes the remote participants `gone` selects; this node's participants are told
    /// `participant_left` with `reason`.
    pub(super) fn remove_remote(
        &self,
        room: &mut Room,
        gone: impl Fn(&RemoteMember) -> bool,
        reason: ParticipantLeftReason,
    ) {
        let mut kept = Vec::with_capacity(room.remote.len());
        for remote in std::mem::take(&mut room.remote) {
            if gone(&remote) {
                let event = PresenceEvent::Left {
                    sid: remote.info.sid.clone(),
                    reason,
                };
                self.broadcast(&room.members, event);
            } else {
                kept.push(remote);
            }
        }
        room.remote = kept;
    }
}
