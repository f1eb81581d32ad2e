//! Room presence: which participants are in which room, and the presence events they see.
//!
//! A room created by a join exists from its first join to its last leave and takes its settings from the
//! configured defaults; a room created through the admin API has its own settings and stays while empty
//! until its empty timeout. Each participant registers a bounded queue of [`PresenceEvent`]s; events are delivered
//! with `try_send`, so a session that does not keep up loses events (counted in
//! `chorus_presence_events_dropped_total`) instead of slowing the room down.

mod ids;
mod participants;
mod remote;
mod rooms;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::events::RoomEvent;
use crate::media::{MediaRouter, ParticipantId, RoomSettings};
use crate::metrics::SignalingMetrics;
use crate::protocol::{
    ErrorCode, LeftReason, ParticipantInfo, ParticipantJoined, ParticipantLeft,
    ParticipantLeftReason, ParticipantMuted, ParticipantUpdated, RoomInfo, ServerMessage,
    SharedParticipant,
};
use crate::roster::{LocalRosterChange, ShardSeed};

pub(crate) use ids::next_participant_id;

/// Something that happened in a participant's room. It is serialized once for all the members it goes to
/// ([`Presence`]); their sessions' queues hold only that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    Joined(ParticipantInfo),
    Left {
        sid: String,
        reason: ParticipantLeftReason,
    },
    Muted {
        sid: String,
        muted: bool,
        by_moderator: bool,
    },
    /// Its deafen or push-to-talk state changed.
    Updated(ParticipantInfo),
}

/// A presence event as it reaches each member's session: the text of its protocol message, serialized
/// once for all the members it goes to. Serialized per member, a join into a room of 2,000 was 2,000
/// copies of the newcomer and 2,000 serializations of the same message (≈ 8 % of the signaling threads'
/// time while such a room fills at 100 joins a second; docs/loadtest.md).
#[derive(Clone, Debug)]
pub struct Presence {
    text: Arc<str>,
}

impl Presence {
    pub(crate) fn new(event: PresenceEvent) -> Presence {
        let text = serde_json::to_string(&event.into_message()).expect(
            "presence messages are plain structs with string keys: serializing cannot fail",
        );
        Presence { text: text.into() }
    }

    /// The protocol message's JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl PresenceEvent {
    /// The protocol message that tells a client about this event.
    pub fn into_message(self) -> ServerMessage {
        match self {
            PresenceEvent::Joined(participant) => {
                ServerMessage::ParticipantJoined(ParticipantJoined { participant })
            }
            PresenceEvent::Left { sid, reason } => {
                ServerMessage::ParticipantLeft(ParticipantLeft { sid, reason })
            }
            PresenceEvent::Muted {
                sid,
                muted,
                by_moderator,
            } => ServerMessage::ParticipantMuted(ParticipantMuted {
                sid,
                muted,
                by_moderator,
            }),
            PresenceEvent::Updated(participant) => {
                ServerMessage::ParticipantUpdated(ParticipantUpdated { participant })
            }
        }
    }
}

/// Who asks for a mute change: the participant itself, or a moderator or operator (a server mute, which
/// the participant cannot undo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Actor {
    Own,
    Moderator,
}

/// The participant asked to unmute itself while a moderator's mute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a moderator muted this participant; only a moderator can unmute it")]
pub struct ServerMuted;

/// What a session's offer tells the media worker: the participant's state when it offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MediaState {
    pub muted: bool,
    pub deafened: bool,
    pub ptt: bool,
}

/// What [`RoomRegistry::set_muted`] (and the deafen and push-to-talk setters) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct MuteChange {
    /// The state changed (and everyone in the room was told).
    pub changed: bool,
    /// The participant has offered: its media worker must hear of the change.
    pub media: bool,
}

/// How a room came to exist, which decides when it goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomOrigin {
    /// Created by its first join with the server's defaults; it goes with its last participant.
    Join,
    /// Created through the admin API; it stays while empty until its empty timeout.
    Admin,
}

/// A room as the admin API sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSnapshot {
    pub name: String,
    pub settings: RoomSettings,
    pub max_participants: usize,
    pub origin: RoomOrigin,
    /// How long the room stays while empty (rooms created by a join: 0, they go with their last
    /// participant).
    pub empty_timeout: Duration,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// Being deleted: its participants are being removed and it admits nobody.
    pub closing: bool,
    /// This node's participants, in join order.
    pub participants: Vec<ParticipantInfo>,
    /// The participants on the other nodes of a room spanning nodes (marked `remote`), by arrival: what
    /// this node knows of them from the cluster's roster. Nothing here has a session on this node.
    pub remote_participants: Vec<ParticipantInfo>,
}

impl RoomSnapshot {
    /// Every participant of the room on all nodes: this node's, then the others'.
    pub fn all_participants(&self) -> impl Iterator<Item = &ParticipantInfo> {
        self.participants.iter().chain(&self.remote_participants)
    }

    /// The room as `joined` describes it (serializable).
    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            mode: self.settings.mode,
            slots: self.settings.slots,
            max_participants: self.max_participants,
        }
    }
}

/// Why a participant was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("the server is shutting down and admits no new participants")]
    Draining,
    #[error("the room is full ({max_participants} participants)")]
    RoomFull { max_participants: usize },
    #[error("the room is being deleted")]
    RoomClosed,
    #[error("this identity was removed from the room by an operator and may rejoin in {remaining_secs} s")]
    Banned { remaining_secs: u64 },
}

impl AdmitError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdmitError::Draining => ErrorCode::Draining,
            AdmitError::RoomFull { .. } => ErrorCode::RoomFull,
            AdmitError::RoomClosed => ErrorCode::RoomClosed,
            AdmitError::Banned { .. } => ErrorCode::Banned,
        }
    }
}

/// Why an admin operation on the registry failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("room names are 1 to 128 characters of [A-Za-z0-9_.-]")]
    InvalidRoomName,
    #[error("a room with this name exists")]
    RoomExists,
    #[error("a room with this name exists with other settings")]
    RoomSettingsConflict,
    #[error("no such room")]
    RoomNotFound,
    #[error("no such participant in this room")]
    ParticipantNotFound,
    #[error("the server is draining and creates no rooms")]
    Draining,
    #[error("the media worker did not take the command")]
    MediaUnavailable,
    #[error("the participant is in that room already")]
    SameRoom,
    /// The participant is on another node of the cluster (a room spanning nodes): this node cannot act on
    /// it itself ([`crate::Signaling::moderate`] hands a moderation to that node).
    #[error("the participant is on another node of the cluster; act on it there")]
    RemoteParticipant,
    /// The node holding the participant (a room spanning nodes) did not take a moderation: it did not
    /// answer, or this node could not reach it.
    #[error("the participant's node did not answer; try again")]
    NodeUnavailable,
}

/// What the admin API asks a new room to be.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSpec {
    pub settings: RoomSettings,
    pub max_participants: usize,
    pub empty_timeout: Duration,
}

/// A participant asking to enter a room.
pub(crate) struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    /// Push-to-talk forced by the token.
    pub ptt: bool,
    /// The token's team, else the one the join asked for.
    pub team: Option<vocab::TeamId>,
    /// The token's shout role.
    pub shout: bool,
    pub events: mpsc::Sender<Presence>,
    /// The join opens a shard of another node's room: its settings and the other nodes' participants, used
    /// if this join creates the room here.
    pub shard: Option<ShardSeed>,
}

/// A participant admitted to a room.
#[derive(Debug)]
pub(crate) struct Admission {
    pub id: ParticipantId,
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    pub settings: RoomSettings,
    /// Everyone else in the room: this node's participants in join order, then those of other nodes.
    pub others: Vec<SharedParticipant>,
    /// Becomes `Some` when an operator removes the participant.
    pub removed: watch::Receiver<Option<LeftReason>>,
    /// Becomes `Some(room)` when a moderator or operator moves the participant to `room`.
    pub moved: watch::Receiver<Option<String>>,
}

struct Member {
    id: ParticipantId,
    /// Whether the participant's session has sent its offer to a media worker (which then needs to hear
    /// of mute changes; before, the offer carries the state).
    media: bool,
    /// Shared with the `joined` lists that name it, its JSON text made once ([`SharedParticipant`]).
    info: SharedParticipant,
    events: mpsc::Sender<Presence>,
    remove: watch::Sender<Option<LeftReason>>,
    /// Tells the session to move to another room.
    moves: watch::Sender<Option<String>>,
}

struct Room {
    settings: RoomSettings,
    max_participants: usize,
    origin: RoomOrigin,
    empty_timeout: Duration,
    created_at_unix: u64,
    /// Since when the room has had no participants (`None` while it has some).
    empty_since: Option<Instant>,
    closing: bool,
    /// In join order.
    members: Vec<Member>,
    /// The participants on other nodes of the cluster (a room spanning nodes), by arrival.
    remote: Vec<RemoteMember>,
}

/// A participant of the room on another node (`info.remote` is set).
struct RemoteMember {
    node: String,
    info: SharedParticipant,
}

impl Room {
    fn info(&self, name: &str) -> RoomInfo {
        RoomInfo {
            name: name.to_owned(),
            mode: self.settings.mode,
            slots: self.settings.slots,
            max_participants: self.max_participants,
        }
    }
}

/// All rooms of this server and their participants.
pub struct RoomRegistry {
    rooms: Mutex<HashMap<String, Room>>,
    /// (room, identity) → until when a kicked identity may not rejoin. Locked after `rooms`, never
    /// before; entries outlive their room (a kick may empty and end it). Expired entries are pruned at
    /// each kick, so the map holds at most the kicks of one ban period.
    bans: Mutex<HashMap<(String, String), Instant>>,
    /// How long a kick bans the identity from the room (zero: no ban).
    kick_ban: Duration,
    settings: RoomSettings,
    max_participants: usize,
    router: Arc<dyn MediaRouter>,
    metrics: SignalingMetrics,
    observer: OnceLock<mpsc::Sender<RoomEvent>>,
    /// Where this node's roster changes go (a cluster's rooms spanning nodes), with `try_send`.
    roster: OnceLock<mpsc::Sender<LocalRosterChange>>,
    /// A roster change did not fit in the sink: the cluster republishes its rosters whole.
    roster_lost: AtomicBool,
}

impl RoomRegistry {
    /// A registry whose rooms are created with `settings` and `max_participants`.
    pub(crate) fn new(
        settings: RoomSettings,
        max_participants: usize,
        kick_ban: Duration,
        router: Arc<dyn MediaRouter>,
        metrics: SignalingMetrics,
    ) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
            kick_ban,
            settings,
            max_participants,
            router,
            metrics,
            observer: OnceLock::new(),
            roster: OnceLock::new(),
            roster_lost: AtomicBool::new(false),
        }
    }

    /// Where room lifecycle events go (once; later calls return false).
    pub(crate) fn set_observer(&self, events: mpsc::Sender<RoomEvent>) -> bool {
        self.observer.set(events).is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // No code path panics while holding the lock, and the map stays consistent at every step anyway.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, event: RoomEvent) {
        if let Some(observer) = self.observer.get() {
            match observer.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.metrics.room_event_dropped();
                    tracing::warn!(event = event.name(), "room event queue full; event dropped");
                }
                // The server is exiting: its webhooks were delivered and the queue closed.
                Err(mpsc::error::TrySendError::Closed(event)) => {
                    self.metrics.room_event_dropped();
                    tracing::debug!(
                        event = event.name(),
                        "room event after the exit began; dropped"
                    );
                }
            }
        }
    }

    fn room_created(&self, name: &str, room: &Room) {
        tracing::info!(
            room = name,
            mode = room.settings.mode.as_str(),
            origin = ?room.origin,
            "room started"
        );
        self.metrics.room_opened(room.settings.mode);
        self.notify(RoomEvent::RoomStarted {
            room: room.info(name),
        });
    }

    /// Forgets a room: metrics, the media router, observers. Called with the room already removed.
    fn room_removed(&self, name: &str, room: &Room) {
        tracing::info!(room = name, "room finished");
        self.router.room_closed(name);
        self.metrics.room_closed(room.settings.mode);
        self.notify(RoomEvent::RoomFinished {
            room: room.info(name),
        });
    }

    fn lock_bans(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        // As `lock`: nothing panics while holding it.
        self.bans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn broadcast(&self, members: &[Member], event: PresenceEvent) {
        if members.is_empty() {
            return;
        }
        let presence = Presence::new(event);
        for member in members {
            match member.events.try_send(presence.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.presence_dropped();
                    tracing::debug!(sid = %member.info.sid, "presence queue full; event dropped");
                }
                // The session is ending and will leave the room in a moment.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Every room, sorted by name.
    pub fn rooms(&self) -> Vec<RoomSnapshot> {
        let rooms = self.lock();
        let mut snapshots: Vec<RoomSnapshot> = rooms
            .iter()
            .map(|(name, room)| snapshot(name, room))
            .collect();
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        snapshots
    }

    /// One room, if it exists.
    pub fn room(&self, name: &str) -> Option<RoomSnapshot> {
        self.lock().get(name).map(|room| snapshot(name, room))
    }

    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    pub fn has_room(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The rooms' names, unsorted.
    pub fn room_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn participant_count(&self) -> usize {
        self.lock().values().map(|room| room.members.len()).sum()
    }

    pub fn room_sizes(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(name, room)| (name.clone(), room.members.len()))
            .collect()
    }
}

fn snapshot(name: &str, room: &Room) -> RoomSnapshot {
    RoomSnapshot {
        name: name.to_owned(),
        settings: room.settings,
        max_participants: room.max_participants,
        origin: room.origin,
        empty_timeout: room.empty_timeout,
        created_at_unix: room.created_at_unix,
        closing: room.closing,
        participants: room
            .members
            .iter()
            .map(|m| ParticipantInfo::clone(&m.info))
            .collect(),
        remote_participants: room
            .remote
            .iter()
            .map(|m| ParticipantInfo::clone(&m.info))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
