//! Server-side source participants: members of a room whose audio comes from the server process (an
//! Icecast source connection, an RTP socket, a playlist) instead of a WebRTC session.
//!
//! The server admits one with [`Signaling::admit_source`]: it enters the registry like a session's
//! participant (room limits, draining, bans and same-identity replacement apply; everyone is told
//! `participant_joined`; the admin API lists, mutes and kicks it), then [`SourceMember::connect`] hands
//! the room's media worker the queue its Opus packets arrive on. The holder waits on
//! [`SourceMember::removed`] beside its input and ends with [`SourceMember::leave`]; dropping the member
//! leaves too (the same [`Membership`] as a session's: released exactly once).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use crate::media::{MediaCommand, MediaError, RoomSettings, SourcePacket, SourceRole};
use crate::metrics::LeaveReason;
use crate::protocol::{LeftReason, ParticipantLeftReason};
use crate::registry::{AdmitError, JoinRequest};
use crate::session::Membership;
use crate::Signaling;

mod peer;

/// Who a source is in its room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRequest {
    pub room: String,
    /// As a token's `sub`: a second participant with the same identity replaces the first.
    pub identity: String,
    /// The display name the room sees.
    pub name: String,
}

/// How a source participant's time in the room ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEnd {
    /// Its input ended normally (the encoder stopped, the file ended).
    Finished,
    /// Its input failed: bad data, a broken connection, silence past its timeout.
    Failed,
    /// An operator removed it (kick, room deleted) or a participant with its identity replaced it.
    Removed(LeftReason),
    /// A moderator or operator moved it: a source cannot follow, it leaves.
    Moved,
    /// The server closes every session and source.
    Shutdown,
}

impl SourceEnd {
    fn reasons(&self) -> (ParticipantLeftReason, LeaveReason) {
        match self {
            SourceEnd::Finished => (ParticipantLeftReason::Left, LeaveReason::Closed),
            SourceEnd::Failed => (
                ParticipantLeftReason::Disconnected,
                LeaveReason::TransportError,
            ),
            SourceEnd::Removed(LeftReason::Replaced) => {
                (ParticipantLeftReason::Replaced, LeaveReason::Replaced)
            }
            SourceEnd::Removed(_) => (ParticipantLeftReason::Kicked, LeaveReason::Kicked),
            SourceEnd::Moved => (ParticipantLeftReason::Moved, LeaveReason::Moved),
            SourceEnd::Shutdown => (ParticipantLeftReason::Left, LeaveReason::Shutdown),
        }
    }
}

/// A source participant admitted to its room.
pub struct SourceMember {
    membership: Membership,
    sid: String,
    settings: RoomSettings,
    /// May publish, may subscribe (a WHIP/WHEP peer's `Connect` carries them).
    grants: (bool, bool),
    removed: watch::Receiver<Option<LeftReason>>,
    moved: watch::Receiver<Option<String>>,
    closing: watch::Receiver<bool>,
}

impl std::fmt::Debug for SourceMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceMember")
            .field("room", &self.membership.room)
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// Admits a server-side source participant to `request.room` (created from the defaults if new). It
    /// publishes and subscribes to nothing; refused like a join (draining, room full, closing, banned).
    pub fn admit_source(
        self: &Arc<Self>,
        request: SourceRequest,
    ) -> Result<SourceMember, AdmitError> {
        self.admit_server_member(request, true, false)
    }

    /// Admits a server-side member with the given grants: a source (publishes only), or a WHIP
    /// publisher or WHEP listener whose WebRTC peer the server holds for an HTTP client
    /// ([`SourceMember::connect_peer`]).
    pub fn admit_server_member(
        self: &Arc<Self>,
        request: SourceRequest,
        can_publish: bool,
        can_subscribe: bool,
    ) -> Result<SourceMember, AdmitError> {
        // A server member reads no presence: its queue's receiver is dropped, so events to it are not
        // sent.
        let (events, _) = mpsc::channel(1);
        let join = JoinRequest {
            room: request.room.clone(),
            identity: request.identity,
            name: request.name,
            can_publish,
            can_subscribe,
            ptt: false,
            team: None,
            shout: false,
            events,
            shard: None,
        };
        let admission = self.registry().admit(join, &self.draining)?;
        Ok(SourceMember {
            membership: Membership {
                ctx: Arc::clone(self),
                room: request.room,
                id: admission.id,
                worker: None,
                in_registry: true,
            },
            sid: admission.participant.sid,
            settings: admission.settings,
            grants: (can_publish, can_subscribe),
            removed: admission.removed,
            moved: admission.moved,
            closing: self.closing(),
        })
    }
}

impl SourceMember {
    /// Its participant id as the protocol and the admin API show it.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The participant id the media worker knows it by.
    pub fn id(&self) -> crate::media::ParticipantId {
        self.membership.id
    }

    pub fn room(&self) -> &str {
        &self.membership.room
    }

    /// Puts the source into its room on the media worker: from now on the worker takes its packets from
    /// `packets` (the sender's end decides the pace). Waits at most the media timeout.
    pub async fn connect(
        &mut self,
        packets: mpsc::Receiver<SourcePacket>,
    ) -> Result<(), MediaError> {
        self.connect_as(packets, SourceRole::Plain).await
    }

    /// [`SourceMember::connect`] in a [`SourceRole`] (hold music, an announcement that ducks the room):
    /// the role reaches the worker with the source, so its first packet is already treated by it.
    pub async fn connect_as(
        &mut self,
        packets: mpsc::Receiver<SourcePacket>,
        role: SourceRole,
    ) -> Result<(), MediaError> {
        let ctx = Arc::clone(&self.membership.ctx);
        let room = self.membership.room.clone();
        let state = ctx
            .registry()
            .attach_media(&room, self.membership.id)
            .ok_or(MediaError::UnknownParticipant)?;
        let worker = ctx.router().route(&room, self.membership.id);
        let (reply, answer) = oneshot::channel();
        let command = MediaCommand::ConnectSource {
            room,
            settings: self.settings,
            participant: self.membership.id,
            muted: state.muted,
            role,
            packets,
            reply,
        };
        let limit = ctx.config().media_timeout();
        match timeout(limit, worker.send(command)).await {
            Ok(Ok(())) => {}
            _ => return Err(MediaError::Unavailable),
        }
        // From here on the worker may hold the source: `Leave` must reach it, whatever the reply.
        self.membership.worker = Some(worker);
        match timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(MediaError::Unavailable),
        }
    }

    /// Completes when the source must go: kicked, its room deleted, replaced, moved, or the server
    /// closing. Cancel-safe.
    pub async fn removed(&mut self) -> SourceEnd {
        let (mut moves_open, mut closing_open) = (true, true);
        loop {
            tokio::select! {
                changed = self.removed.changed() => {
                    if let Some(reason) = *self.removed.borrow_and_update() {
                        return SourceEnd::Removed(reason);
                    }
                    if changed.is_err() {
                        // The registry dropped the member: it is gone already.
                        return SourceEnd::Removed(LeftReason::Kicked);
                    }
                }
                changed = self.moved.changed(), if moves_open => {
                    if self.moved.borrow_and_update().is_some() {
                        return SourceEnd::Moved;
                    }
                    moves_open = changed.is_ok();
                }
                changed = self.closing.changed(), if closing_open => {
                    if *self.closing.borrow_and_update() {
                        return SourceEnd::Shutdown;
                    }
                    closing_open = changed.is_ok();
                }
            }
        }
    }

    /// Leaves the room (media worker first, then the registry, which tells the others).
    pub async fn leave(mut self, end: SourceEnd) {
        let (reason, metric) = end.reasons();
        self.membership.end(reason, metric).await;
    }
}
