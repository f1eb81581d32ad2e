//! Room presence: which participants are in which room, and the presence events they see.
//!
//! A room created by a join exists from its first join to its last leave and takes its settings from the
//! configured defaults; a room created through the admin API has its own settings and stays while empty
//! until its empty timeout. Each participant registers a bounded queue of [`PresenceEvent`]s; events are delivered
//! with `try_send`, so a session that does not keep up loses events (counted in
//! `chorus_presence_events_dropped_total`) instead of slowing the room down.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::auth::unix_now;
use crate::events::RoomEvent;
use crate::media::{MediaRouter, ParticipantId, RoomSettings};
use crate::metrics::{SessionLimit, SignalingMetrics};
use crate::protocol::{
    ErrorCode, LeftReason, ParticipantInfo, ParticipantJoined, ParticipantLeft,
    ParticipantLeftReason, ParticipantMuted, RoomInfo, ServerMessage,
};

/// Participant ids are 48 bits, so that every sid has exactly 12 hex digits.
const ID_MASK: u64 = (1 << 48) - 1;

/// A new participant id, unique in this process (for 2^48 ids), never 0.
///
/// Ids are a counter from a clock-derived start, passed through a bijection of the 48-bit space, so
/// consecutive sids look unrelated. Not a security measure: sids are not secrets.
pub(crate) fn next_participant_id() -> ParticipantId {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = scramble48(start.wrapping_add(n));
        if id != 0 {
            return ParticipantId(id);
        }
    }
}

/// A bijection of `0..2^48` (xor-shifts and multiplications by odd constants modulo 2^48).
fn scramble48(x: u64) -> u64 {
    let mut x = x & ID_MASK;
    x ^= x >> 23;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & ID_MASK;
    x ^= x >> 25;
    x = x.wrapping_mul(0xC2B2_AE3D_27D5) & ID_MASK;
    x ^= x >> 24;
    x
}

/// Something that happened in a participant's room.
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
    },
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
            PresenceEvent::Muted { sid, muted } => {
                ServerMessage::ParticipantMuted(ParticipantMuted { sid, muted })
            }
        }
    }
}

/// What [`RoomRegistry::set_muted`] did.
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
    /// In join order.
    pub participants: Vec<ParticipantInfo>,
}

impl RoomSnapshot {
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
    pub events: mpsc::Sender<PresenceEvent>,
}

/// A participant admitted to a room.
#[derive(Debug)]
pub(crate) struct Admission {
    pub id: ParticipantId,
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    pub settings: RoomSettings,
    /// Everyone else in the room, in join order.
    pub others: Vec<ParticipantInfo>,
    /// Becomes `Some` when an operator removes the participant.
    pub removed: watch::Receiver<Option<LeftReason>>,
}

struct Member {
    id: ParticipantId,
    /// Whether the participant's session has sent its offer to a media worker (which then needs to hear
    /// of mute changes; before, the offer carries the state).
    media: bool,
    info: ParticipantInfo,
    events: mpsc::Sender<PresenceEvent>,
    remove: watch::Sender<Option<LeftReason>>,
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
            if let Err(mpsc::error::TrySendError::Full(event)) = observer.try_send(event) {
                self.metrics.room_event_dropped();
                tracing::warn!(event = event.name(), "room event queue full; event dropped");
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
        request: JoinRequest,
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
                let room = entry.insert(Room {
                    settings: self.settings,
                    max_participants: self.max_participants,
                    origin: RoomOrigin::Join,
                    empty_timeout: Duration::ZERO,
                    created_at_unix: unix_now(),
                    empty_since: None,
                    closing: false,
                    members: Vec::new(),
                });
                self.room_created(&request.room, room);
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
            let old = room.members.remove(index);
            old.remove.send_replace(Some(LeftReason::Replaced));
            self.metrics.participant_left(room.settings.mode);
            self.metrics.limit_hit(SessionLimit::IdentityReplaced);
            tracing::info!(
                room = %request.room,
                participant = %old.info.sid,
                "participant replaced by a new session with the same identity"
            );
            self.notify(RoomEvent::ParticipantLeft {
                room: room.info(&request.room),
                participant: old.info.clone(),
                reason: ParticipantLeftReason::Replaced,
            });
            let event = PresenceEvent::Left {
                sid: old.info.sid,
                reason: ParticipantLeftReason::Replaced,
            };
            self.broadcast(&room.members, &event);
        }
        if room.members.len() >= room.max_participants {
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
        };
        let others = room.members.iter().map(|m| m.info.clone()).collect();
        self.broadcast(&room.members, &PresenceEvent::Joined(participant.clone()));
        let (remove, removed) = watch::channel(None);
        room.members.push(Member {
            id,
            media: false,
            info: participant.clone(),
            events: request.events,
            remove,
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
        })
    }

    /// Records a participant's mute state and tells everyone in the room, the participant included
    /// (nothing is sent if the state did not change). The registry is the one place the state lives; use
    /// it through [`crate::Signaling::set_muted`], which also tells the media worker.
    pub(crate) fn set_muted(&self, room: &str, id: ParticipantId, muted: bool) -> MuteChange {
        let mut rooms = self.lock();
        let Some(member) = rooms
            .get_mut(room)
            .and_then(|room| room.members.iter_mut().find(|m| m.id == id))
        else {
            return MuteChange::default();
        };
        if member.info.muted == muted {
            return MuteChange::default();
        }
        member.info.muted = muted;
        let media = member.media;
        let event = PresenceEvent::Muted {
            sid: member.info.sid.clone(),
            muted,
        };
        let room = rooms
            .get(room)
            .expect("the room was found above, under the same lock");
        self.broadcast(&room.members, &event);
        MuteChange {
            changed: true,
            media,
        }
    }

    /// The participant's session sends its offer to a media worker: from now on the worker hears of
    /// mute changes. Returns the mute state the offer carries (`None` if the participant left).
    pub(crate) fn attach_media(&self, room: &str, id: ParticipantId) -> Option<bool> {
        let mut rooms = self.lock();
        let member = rooms
            .get_mut(room)?
            .members
            .iter_mut()
            .find(|m| m.id == id)?;
        member.media = true;
        Some(member.info.muted)
    }

    /// The internal id of the participant `sid` in `room`.
    pub(crate) fn find(&self, room: &str, sid: &str) -> Result<ParticipantId, AdminError> {
        let rooms = self.lock();
        let room = rooms.get(room).ok_or(AdminError::RoomNotFound)?;
        room.members
            .iter()
            .find(|m| m.info.sid == sid)
            .map(|m| m.id)
            .ok_or(AdminError::ParticipantNotFound)
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
        self.metrics.participant_left(room.settings.mode);
        self.notify(RoomEvent::ParticipantLeft {
            room: room.info(room_name),
            participant: member.info.clone(),
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
                sid: member.info.sid,
                reason,
            };
            self.broadcast(&room.members, &event);
        }
        true
    }

    /// Creates an empty room through the admin API.
    pub(crate) fn create(
        &self,
        name: &str,
        spec: RoomSpec,
        now: Instant,
    ) -> Result<RoomSnapshot, AdminError> {
        if !crate::auth::is_valid_room_name(name) {
            return Err(AdminError::InvalidRoomName);
        }
        let mut rooms = self.lock();
        let entry = match rooms.entry(name.to_owned()) {
            Entry::Vacant(entry) => entry,
            Entry::Occupied(room) if room.get().settings.conflicts_with(&spec.settings) => {
                return Err(AdminError::RoomSettingsConflict);
            }
            Entry::Occupied(_) => return Err(AdminError::RoomExists),
        };
        let room = entry.insert(Room {
            settings: spec.settings,
            max_participants: spec.max_participants,
            origin: RoomOrigin::Admin,
            empty_timeout: spec.empty_timeout,
            created_at_unix: unix_now(),
            empty_since: Some(now),
            closing: false,
            members: Vec::new(),
        });
        self.room_created(name, room);
        Ok(snapshot(name, room))
    }

    /// Deletes a room: an empty one at once; otherwise it admits nobody more, every participant is told
    /// to leave (`room_deleted`), and the room goes with the last of them.
    pub(crate) fn delete(&self, name: &str) -> Result<(), AdminError> {
        let mut rooms = self.lock();
        let room = rooms.get_mut(name).ok_or(AdminError::RoomNotFound)?;
        if room.members.is_empty() {
            if let Some(room) = rooms.remove(name) {
                self.room_removed(name, &room);
            }
            return Ok(());
        }
        room.closing = true;
        for member in &room.members {
            member.remove.send_replace(Some(LeftReason::RoomDeleted));
        }
        Ok(())
    }

    /// [`Self::kick_at`] now.
    pub(crate) fn kick(&self, room: &str, sid: &str) -> Result<(), AdminError> {
        self.kick_at(room, sid, Instant::now())
    }

    /// Tells a participant's session to leave (`kicked`) at `now`, and bans its identity from the room
    /// for the kick ban period (a kick is not undone by rejoining with the same token).
    pub(crate) fn kick_at(
        &self,
        room_name: &str,
        sid: &str,
        now: Instant,
    ) -> Result<(), AdminError> {
        let rooms = self.lock();
        let room = rooms.get(room_name).ok_or(AdminError::RoomNotFound)?;
        let member = room
            .members
            .iter()
            .find(|m| m.info.sid == sid)
            .ok_or(AdminError::ParticipantNotFound)?;
        member.remove.send_replace(Some(LeftReason::Kicked));
        if !self.kick_ban.is_zero() {
            let mut bans = self.lock_bans();
            bans.retain(|_, until| *until > now);
            bans.insert(
                (room_name.to_owned(), member.info.identity.clone()),
                now + self.kick_ban,
            );
        }
        Ok(())
    }

    /// Identities banned from rooms now (for tests and the admin view).
    #[cfg(test)]
    fn ban_count(&self, now: Instant) -> usize {
        self.lock_bans()
            .values()
            .filter(|until| **until > now)
            .count()
    }

    /// Removes the rooms created through the admin API that have been empty for their empty timeout at
    /// `now`; returns their names.
    pub(crate) fn sweep(&self, now: Instant) -> Vec<String> {
        let mut rooms = self.lock();
        let expired: Vec<String> = rooms
            .iter()
            .filter(|(_, room)| {
                room.members.is_empty()
                    && room.empty_since.is_some_and(|since| {
                        now.saturating_duration_since(since) >= room.empty_timeout
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            if let Some(room) = rooms.remove(name) {
                self.room_removed(name, &room);
            }
        }
        expired
    }

    /// Waits for any admission in progress: after `draining` is set and this returns, no admission can
    /// succeed any more.
    pub(crate) fn fence(&self) {
        drop(self.lock());
    }

    fn broadcast(&self, members: &[Member], event: &PresenceEvent) {
        for member in members {
            match member.events.try_send(event.clone()) {
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

    pub fn participant_count(&self) -> usize {
        self.lock().values().map(|room| room.members.len()).sum()
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
        participants: room.members.iter().map(|m| m.info.clone()).collect(),
    }
}

#[cfg(test)]
mod tests;
