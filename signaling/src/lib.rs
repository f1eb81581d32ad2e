//! Chorus signaling: the WebSocket protocol (docs/protocol.md), access tokens, sessions and room presence.
//! It knows nothing of RTP; it drives media workers through the channel contract in [`media`].
//!
//! A server builds one [`Signaling`] and runs [`run_session`] for every WebSocket, adapted to a
//! `Stream + Sink` of [`WsFrame`]s.

pub mod auth;
#[cfg(feature = "client")]
pub mod client;
mod config;
pub mod events;
pub mod locator;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod roster;
pub mod session;
pub mod source;
pub mod turn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub use auth::{ApiKeys, Claims};
pub use config::{ConfigError, SignalingConfig};
pub use events::RoomEvent;
pub use metrics::SignalingMetrics;
pub use registry::{AdminError, RoomOrigin, RoomSnapshot, RoomSpec};
pub use session::{run_session, WsFrame};
pub use source::{SourceEnd, SourceMember, SourceRequest};
pub use turn::TurnConfig;

use media::{MediaCommand, MediaRouter};
use protocol::{ModerateAction, ParticipantInfo};
use registry::{Actor, RoomRegistry, ServerMuted};

/// The version of this server, as `joined.server_version` reports it.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a state change (mute) was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    #[error(transparent)]
    ServerMuted(#[from] ServerMuted),
    #[error("the media worker did not take the command")]
    Unavailable,
}

/// Everything the sessions of one server share.
pub struct Signaling {
    config: SignalingConfig,
    api_keys: ApiKeys,
    router: Arc<dyn MediaRouter>,
    metrics: SignalingMetrics,
    rooms: RoomRegistry,
    draining: AtomicBool,
    /// The resume tokens of joined sessions, and the count of suspended ones.
    resumes: session::ResumeTable,
    /// When the drain ends (set once, when it begins): sessions tell their clients.
    drain_deadline: watch::Sender<Option<Instant>>,
    closing: watch::Sender<bool>,
    /// Where rooms live, on a node of a cluster (none: every room is local).
    locator: OnceLock<Arc<dyn locator::RoomLocator>>,
    /// Rooms this node handed to another node of its cluster (while draining): room → the signaling URL
    /// its participants are redirected to.
    migrations: watch::Sender<HashMap<String, String>>,
    /// Where moderations of other nodes' participants go (a cluster's rooms spanning nodes).
    remote_actions: OnceLock<mpsc::Sender<roster::RemoteRequest>>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("config", &self.config)
            .field("api_keys", &self.api_keys)
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// Validates `config` and registers the signaling metrics into `registry`.
    pub fn new(
        config: SignalingConfig,
        api_keys: ApiKeys,
        router: Arc<dyn MediaRouter>,
        registry: &prometheus::Registry,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = SignalingMetrics::new(registry)?;
        let rooms = RoomRegistry::new(
            config.room_settings(),
            config.default_max_participants,
            config.kick_ban(),
            Arc::clone(&router),
            metrics.clone(),
        );
        Ok(Self {
            config,
            api_keys,
            router,
            metrics,
            rooms,
            draining: AtomicBool::new(false),
            resumes: session::ResumeTable::default(),
            drain_deadline: watch::Sender::new(None),
            closing: watch::Sender::new(false),
            locator: OnceLock::new(),
            migrations: watch::Sender::new(HashMap::new()),
            remote_actions: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.config
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    pub fn metrics(&self) -> &SignalingMetrics {
        &self.metrics
    }

    pub(crate) fn router(&self) -> &dyn MediaRouter {
        self.router.as_ref()
    }

    pub(crate) fn registry(&self) -> &RoomRegistry {
        &self.rooms
    }

    pub(crate) fn resumes(&self) -> &session::ResumeTable {
        &self.resumes
    }

    /// Sessions whose WebSocket dropped and that are kept for a resume now.
    pub fn suspended_sessions(&self) -> usize {
        self.resumes.suspended()
    }

    /// Stops admitting participants: every later `join` fails with `draining`. Sessions already in a room
    /// go on. One-way. When this returns, no join in progress can still succeed.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.rooms.fence();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Begins a drain: no more joins, and every session (open now or later) is sent `draining` with the
    /// time left until `grace` from now. Returns the deadline (the first one, if already draining).
    pub fn start_drain(&self, grace: Duration) -> Instant {
        self.set_draining();
        let deadline = Instant::now() + grace;
        self.drain_deadline.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(deadline);
                true
            } else {
                false
            }
        });
        self.drain_deadline().unwrap_or(deadline)
    }

    /// When the drain ends, once [`Signaling::start_drain`] has been called.
    pub fn drain_deadline(&self) -> Option<Instant> {
        *self.drain_deadline.borrow()
    }

    /// Changes to the drain deadline: `Some` once the drain has begun.
    pub fn drain_notices(&self) -> watch::Receiver<Option<Instant>> {
        self.drain_deadline.subscribe()
    }

    /// Hands `room` to the node of the cluster at `url` (a draining node moving its calls): each of the
    /// room's sessions is sent `redirect` and closed (1012), its client rejoins there; a join of the room
    /// reaching this node is located through the cluster again. One-way. Returns whether it was new.
    pub fn migrate_room(&self, room: &str, url: &str) -> bool {
        self.migrations.send_if_modified(|rooms| {
            if rooms.contains_key(room) {
                return false;
            }
            rooms.insert(room.to_owned(), url.to_owned());
            true
        })
    }

    /// Whether `room` was handed to another node ([`Signaling::migrate_room`]).
    pub fn is_migrated(&self, room: &str) -> bool {
        self.migrations.borrow().contains_key(room)
    }

    /// Whether this node hosts `room` for new joins and admin requests: the room exists here and was not
    /// handed to another node of the cluster (a handed-over room is located through the cluster again).
    pub fn hosts(&self, room: &str) -> bool {
        self.has_room(room) && !self.is_migrated(room)
    }

    pub(crate) fn migrations(&self) -> watch::Receiver<HashMap<String, String>> {
        self.migrations.subscribe()
    }

    /// Sends room lifecycle events (for webhooks) to `events`, with `try_send`: a full queue drops the event
    /// and counts it. Only the first sink set is used; returns whether this one was.
    pub fn set_event_sink(&self, events: mpsc::Sender<RoomEvent>) -> bool {
        self.rooms.set_observer(events)
    }

    /// Makes this node part of a cluster: every `join` asks `locator` where its room lives (and is sent
    /// `redirect` when another node owns it). Only the first locator set is used; returns whether this one
    /// was.
    pub fn set_locator(&self, locator: Arc<dyn locator::RoomLocator>) -> bool {
        self.locator.set(locator).is_ok()
    }

    pub(crate) fn locator(&self) -> Option<&dyn locator::RoomLocator> {
        self.locator.get().map(|l| l.as_ref())
    }

    /// Whether `room` exists on this node now.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.has_room(room)
    }

    /// The names of the rooms on this node.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.room_names()
    }

    /// Creates an empty room (admin API). Refused while draining.
    pub fn create_room(&self, name: &str, spec: RoomSpec) -> Result<RoomSnapshot, AdminError> {
        if self.is_draining() {
            return Err(AdminError::Draining);
        }
        self.rooms.create(name, spec, Instant::now())
    }

    /// Deletes a room (admin API): its participants are told `left` with reason `room_deleted`.
    pub fn delete_room(&self, name: &str) -> Result<(), AdminError> {
        self.rooms.delete(name)
    }

    /// Removes one participant (admin API): it is told `left` with reason `kicked`.
    pub fn kick_participant(&self, room: &str, sid: &str) -> Result<(), AdminError> {
        self.rooms.kick(room, sid)
    }

    /// Mutes or unmutes a participant (admin API; a moderator's `moderate`). The mute is a server mute:
    /// the participant cannot unmute itself until it is unmuted this way. Both this and the client's
    /// `mute` go through [`Signaling::set_muted`]. Returns the participant as it is now.
    pub async fn mute_participant(
        &self,
        room: &str,
        sid: &str,
        muted: bool,
    ) -> Result<ParticipantInfo, AdminError> {
        let id = self.rooms.find(room, sid)?;
        match self.set_muted(room, id, muted, Actor::Moderator).await {
            Ok(_) => {}
            Err(ChangeError::Unavailable) => return Err(AdminError::MediaUnavailable),
            // A moderator's request is never refused for a server mute.
            Err(ChangeError::ServerMuted(_)) => {}
        }
        self.rooms.participant(room, sid)
    }

    /// Deafens or undeafens a participant (admin API; a moderator's `moderate`): it is sent no audio, and
    /// everyone in the room is sent `participant_updated`. Returns the participant as it is now.
    pub async fn deafen_participant(
        &self,
        room: &str,
        sid: &str,
        deafened: bool,
    ) -> Result<ParticipantInfo, AdminError> {
        let id = self.rooms.find(room, sid)?;
        let change = self.rooms.set_deafened(room, id, deafened);
        if change.changed && change.media {
            let command = MediaCommand::Deafen {
                participant: id,
                deafened,
            };
            self.tell_worker(room, command)
                .await
                .map_err(|_| AdminError::MediaUnavailable)?;
        }
        self.rooms.participant(room, sid)
    }

    /// Moves a participant to room `to` (admin API; a moderator's `moderate`): its session leaves `room`
    /// (the others see `participant_left` reason `moved`), joins `to` as a new participant with the same
    /// identity and grants, and is sent `moved`; the client then offers anew. Refused for the room it is
    /// in. Returns once the session has been told; the move itself happens on the session.
    pub fn move_participant(&self, room: &str, sid: &str, to: &str) -> Result<(), AdminError> {
        self.rooms.request_move(room, sid, to)
    }

    /// One moderation request on the participant `sid` of `room`, by a moderator: a participant another
    /// node holds (a room spanning nodes) is moderated there ([`Signaling::set_remote_actions`]).
    pub async fn moderate(
        &self,
        room: &str,
        sid: &str,
        action: ModerateAction,
        to: Option<&str>,
    ) -> Result<(), AdminError> {
        match self.moderate_here(room, sid, action, to).await {
            Err(AdminError::RemoteParticipant) => self.moderate_remote(room, sid, action, to).await,
            result => result,
        }
    }

    /// Hands the moderation of another node's participant to the cluster and waits for that node's
    /// answer, at most [`roster::REMOTE_ACTION_TIMEOUT`]. Without a cluster to hand it to, the participant
    /// stays [`AdminError::RemoteParticipant`]; a full queue or no answer is [`AdminError::NodeUnavailable`].
    async fn moderate_remote(
        &self,
        room: &str,
        sid: &str,
        action: ModerateAction,
        to: Option<&str>,
    ) -> Result<(), AdminError> {
        let node = self
            .rooms
            .remote_node(room, sid)
            .ok_or(AdminError::ParticipantNotFound)?;
        let sink = self
            .remote_actions
            .get()
            .ok_or(AdminError::RemoteParticipant)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let action = roster::RemoteAction {
            room: room.to_owned(),
            node,
            sid: sid.to_owned(),
            action,
            to: to.map(str::to_owned),
        };
        sink.try_send(roster::RemoteRequest { action, reply })
            .map_err(|_| AdminError::NodeUnavailable)?;
        match tokio::time::timeout(roster::REMOTE_ACTION_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            // No answer in time, or the cluster dropped the request.
            _ => Err(AdminError::NodeUnavailable),
        }
    }

    /// Where moderations of participants other nodes hold go, with `try_send` (a full queue is
    /// [`AdminError::NodeUnavailable`] for the moderator). For a cluster's rooms spanning nodes. Only the
    /// first sink set is used; returns whether this one was.
    pub fn set_remote_actions(&self, sink: mpsc::Sender<roster::RemoteRequest>) -> bool {
        self.remote_actions.set(sink).is_ok()
    }

    /// The node holding `sid`, if it is a participant of `room` on another node.
    pub fn remote_node(&self, room: &str, sid: &str) -> Option<String> {
        self.rooms.remote_node(room, sid)
    }

    /// One moderation request on this node's participant `sid` of `room`.
    async fn moderate_here(
        &self,
        room: &str,
        sid: &str,
        action: ModerateAction,
        to: Option<&str>,
    ) -> Result<(), AdminError> {
        match action {
            ModerateAction::Mute | ModerateAction::Unmute => {
                let muted = action == ModerateAction::Mute;
                self.mute_participant(room, sid, muted).await.map(drop)
            }
            ModerateAction::Deafen | ModerateAction::Undeafen => {
                let deafened = action == ModerateAction::Deafen;
                self.deafen_participant(room, sid, deafened).await.map(drop)
            }
            ModerateAction::Kick => self.kick_participant(room, sid),
            ModerateAction::Move => {
                let to = to.ok_or(AdminError::InvalidRoomName)?;
                self.move_participant(room, sid, to)
            }
        }
    }

    /// The one owner of a participant's mute state change, for the client's `mute` and the admin API
    /// alike, in this order: the registry records the state and tells everyone in the room, the
    /// participant's own session included (a `participant_muted` presence event); then, if the
    /// participant has sent its offer, the room's media worker stops or resumes forwarding its audio.
    /// Before the offer the worker has nothing to mute: the offer carries the registry's state. A request
    /// that changes nothing does nothing. A participant's own unmute while a moderator's mute holds is
    /// refused ([`ChangeError::ServerMuted`]). Returns whether the state changed; an error when the media
    /// worker did not take the command in time.
    pub(crate) async fn set_muted(
        &self,
        room: &str,
        id: media::ParticipantId,
        muted: bool,
        actor: Actor,
    ) -> Result<bool, ChangeError> {
        let change = self.rooms.set_muted(room, id, muted, actor)?;
        if !(change.changed && change.media) {
            return Ok(change.changed);
        }
        let command = MediaCommand::Mute {
            participant: id,
            muted,
        };
        self.tell_worker(room, command)
            .await
            .map_err(|_| ChangeError::Unavailable)?;
        Ok(true)
    }

    /// Turns push-to-talk on or off for a participant: the registry records it and tells the room
    /// (`participant_updated`), then the media worker gates its audio (once it has offered).
    pub(crate) async fn set_ptt(
        &self,
        room: &str,
        id: media::ParticipantId,
        enabled: bool,
    ) -> Result<bool, media::MediaError> {
        let change = self.rooms.set_ptt(room, id, enabled);
        if change.changed && change.media {
            let command = MediaCommand::Ptt {
                participant: id,
                enabled,
            };
            self.tell_worker(room, command).await?;
        }
        Ok(change.changed)
    }

    /// Sends `command` to the worker that hosts its participant in `room`, waiting at most the media
    /// timeout for queue space.
    pub(crate) async fn tell_worker(
        &self,
        room: &str,
        command: MediaCommand,
    ) -> Result<(), media::MediaError> {
        let worker = self.router.route(room, command.participant());
        match tokio::time::timeout(self.config.media_timeout(), worker.send(command)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(media::MediaError::Unavailable),
        }
    }

    /// Removes the admin-created rooms that have been empty for their empty timeout; returns their names.
    /// Call it regularly (the server does every second).
    pub fn sweep_empty_rooms(&self, now: Instant) -> Vec<String> {
        self.rooms.sweep(now)
    }

    /// Rooms on this server.
    pub fn room_count(&self) -> usize {
        self.rooms.room_count()
    }

    /// Ends every session, present and future, with close code 1001 (each leaves its room as usual).
    /// Also sets draining. For server shutdown, after the drain period.
    pub fn close_all_sessions(&self) {
        self.set_draining();
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Every room with its settings and participants, sorted by name.
    pub fn rooms(&self) -> Vec<RoomSnapshot> {
        self.rooms.rooms()
    }

    /// One room, if it exists.
    pub fn room(&self, name: &str) -> Option<RoomSnapshot> {
        self.rooms.room(name)
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.rooms.participant_count()
    }

    /// Every room of this node with its participants here.
    pub fn room_sizes(&self) -> Vec<(String, usize)> {
        self.rooms.room_sizes()
    }

    /// Hands this node's roster changes (joins, leaves, state changes of its participants, in every room)
    /// to `sink` with `try_send`: a full sink loses the change, and [`Signaling::take_roster_lost`] says
    /// so. For a cluster's rooms spanning nodes. Only the first sink set is used; returns whether this one
    /// was.
    pub fn set_roster_sink(&self, sink: mpsc::Sender<roster::LocalRosterChange>) -> bool {
        self.rooms.set_roster_sink(sink)
    }

    /// Whether a roster change did not fit in the sink since the last call (the rosters shared with other
    /// nodes must then be written whole again).
    pub fn take_roster_lost(&self) -> bool {
        self.rooms.take_roster_lost()
    }

    /// This node's participants of `room`, in join order (none if it has no such room).
    pub fn local_roster(&self, room: &str) -> Option<Vec<ParticipantInfo>> {
        self.rooms.local_roster(room)
    }

    /// The settings of `room` as other nodes holding a shard of it take them.
    pub fn shared_room(&self, room: &str) -> Option<roster::SharedRoom> {
        self.rooms
            .room(room)
            .map(|r| roster::SharedRoom::new(r.settings, r.max_participants))
    }

    /// A change of `node`'s participants in `room` (a room spanning nodes): recorded, and this node's
    /// participants of the room are told as of a local change.
    pub fn remote_roster(
        &self,
        room: &str,
        node: &str,
        change: roster::RemoteRoster,
    ) -> roster::RosterOutcome {
        self.rooms.remote_roster(room, node, change)
    }
}
