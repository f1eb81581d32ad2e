//! Room presence: which participants are in which room, and the presence events they see.
//!
//! A room exists from its first join to its last leave; it takes its settings from the configured defaults
//! when it is created. Each participant registers a bounded queue of [`PresenceEvent`]s; events are delivered
//! with `try_send`, so a session that does not keep up loses events (counted in
//! `chorus_presence_events_dropped_total`) instead of slowing the room down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::media::{MediaRouter, RoomSettings};
use crate::metrics::SignalingMetrics;
use crate::protocol::{
    ErrorCode, ParticipantInfo, ParticipantJoined, ParticipantLeft, ParticipantLeftReason,
    ParticipantMuted, RoomInfo, ServerMessage,
};

/// The participant id (`sid`) of participant `id`: `PA_` and 12 hex digits.
pub fn participant_sid(id: u64) -> String {
    format!("PA_{id:012x}")
}

/// Participant ids are 48 bits, so that every sid has exactly 12 hex digits.
const ID_MASK: u64 = (1 << 48) - 1;

/// A new participant id, unique in this process (for 2^48 ids), never 0.
///
/// Ids are a counter from a clock-derived start, passed through a bijection of the 48-bit space, so
/// consecutive sids look unrelated. Not a security measure: sids are not secrets.
pub(crate) fn next_participant_id() -> u64 {
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
            return id;
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

/// A room as the admin API sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSnapshot {
    pub name: String,
    pub settings: RoomSettings,
    pub max_participants: usize,
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
}

impl AdmitError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdmitError::Draining => ErrorCode::Draining,
            AdmitError::RoomFull { .. } => ErrorCode::RoomFull,
        }
    }
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
    pub id: u64,
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    pub settings: RoomSettings,
    /// Everyone else in the room, in join order.
    pub others: Vec<ParticipantInfo>,
}

struct Member {
    id: u64,
    info: ParticipantInfo,
    events: mpsc::Sender<PresenceEvent>,
}

struct Room {
    settings: RoomSettings,
    max_participants: usize,
    /// In join order.
    members: Vec<Member>,
}

/// All rooms of this server and their participants.
pub struct RoomRegistry {
    rooms: Mutex<HashMap<String, Room>>,
    settings: RoomSettings,
    max_participants: usize,
    router: Arc<dyn MediaRouter>,
    metrics: SignalingMetrics,
}

impl RoomRegistry {
    /// A registry whose rooms are created with `settings` and `max_participants`.
    pub(crate) fn new(
        settings: RoomSettings,
        max_participants: usize,
        router: Arc<dyn MediaRouter>,
        metrics: SignalingMetrics,
    ) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            settings,
            max_participants,
            router,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // No code path panics while holding the lock, and the map stays consistent at every step anyway.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a participant, creating the room from the defaults if this is its first participant, and
    /// tells everyone else. Refused while `draining` is set or when the room is at its limit.
    pub(crate) fn admit(
        &self,
        request: JoinRequest,
        draining: &AtomicBool,
    ) -> Result<Admission, AdmitError> {
        let mut rooms = self.lock();
        // Checked under the lock: see `fence`.
        if draining.load(Ordering::SeqCst) {
            return Err(AdmitError::Draining);
        }
        let room = rooms.entry(request.room.clone()).or_insert_with(|| Room {
            settings: self.settings.clone(),
            max_participants: self.max_participants,
            members: Vec::new(),
        });
        if room.members.len() >= room.max_participants {
            return Err(AdmitError::RoomFull {
                max_participants: room.max_participants,
            });
        }
        let id = next_participant_id();
        let participant = ParticipantInfo {
            sid: participant_sid(id),
            identity: request.identity,
            name: request.name,
            muted: false,
            can_publish: request.can_publish,
            can_subscribe: request.can_subscribe,
        };
        let others = room.members.iter().map(|m| m.info.clone()).collect();
        self.broadcast(&room.members, &PresenceEvent::Joined(participant.clone()));
        room.members.push(Member {
            id,
            info: participant.clone(),
            events: request.events,
        });
        Ok(Admission {
            id,
            participant,
            room: RoomInfo {
                name: request.room,
                mode: room.settings.mode,
                slots: room.settings.slots,
                max_participants: room.max_participants,
            },
            settings: room.settings.clone(),
            others,
        })
    }

    /// Records a participant's mute state and tells everyone in the room, the participant included.
    /// Returns whether the state changed (nothing is sent if it did not).
    pub(crate) fn set_muted(&self, room: &str, id: u64, muted: bool) -> bool {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room) else {
            return false;
        };
        let Some(member) = room.members.iter_mut().find(|m| m.id == id) else {
            return false;
        };
        if member.info.muted == muted {
            return false;
        }
        member.info.muted = muted;
        let event = PresenceEvent::Muted {
            sid: member.info.sid.clone(),
            muted,
        };
        self.broadcast(&room.members, &event);
        true
    }

    /// Removes a participant and tells the others. The room goes with its last participant, and the media
    /// router is told (under the registry lock, so that a room re-created by a later join is routed
    /// afresh only after the router forgot the old one). Returns whether the participant was present.
    pub(crate) fn leave(&self, room_name: &str, id: u64, reason: ParticipantLeftReason) -> bool {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room_name) else {
            return false;
        };
        let Some(index) = room.members.iter().position(|m| m.id == id) else {
            return false;
        };
        let member = room.members.remove(index);
        if room.members.is_empty() {
            rooms.remove(room_name);
            self.router.room_closed(room_name);
        } else {
            let event = PresenceEvent::Left {
                sid: member.info.sid,
                reason,
            };
            self.broadcast(&room.members, &event);
        }
        true
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
        settings: room.settings.clone(),
        max_participants: room.max_participants,
        participants: room.members.iter().map(|m| m.info.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::media::{MediaCommand, RoomMode};

    #[derive(Default)]
    struct Router {
        closed: Mutex<Vec<String>>,
    }

    impl MediaRouter for Router {
        fn route(&self, _room: &str) -> mpsc::Sender<MediaCommand> {
            mpsc::channel(1).0
        }
        fn room_closed(&self, room: &str) {
            self.closed.lock().expect("test lock").push(room.to_owned());
        }
    }

    fn registry(max_participants: usize) -> (RoomRegistry, Arc<Router>, SignalingMetrics) {
        let router = Arc::new(Router::default());
        let metrics = SignalingMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let settings = RoomSettings {
            mode: RoomMode::Forward,
            slots: 2,
        };
        (
            RoomRegistry::new(settings, max_participants, router.clone(), metrics.clone()),
            router,
            metrics,
        )
    }

    fn request(
        room: &str,
        identity: &str,
        capacity: usize,
    ) -> (JoinRequest, mpsc::Receiver<PresenceEvent>) {
        let (events, rx) = mpsc::channel(capacity);
        let request = JoinRequest {
            room: room.into(),
            identity: identity.into(),
            name: identity.to_uppercase(),
            can_publish: true,
            can_subscribe: true,
            events,
        };
        (request, rx)
    }

    fn open() -> AtomicBool {
        AtomicBool::new(false)
    }

    #[test]
    fn sids_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let id = next_participant_id();
            assert!(id != 0 && id <= ID_MASK);
            let sid = participant_sid(id);
            assert_eq!(sid.len(), 15, "{sid}");
            assert!(
                sid.starts_with("PA_")
                    && sid[3..]
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(seen.insert(id), "duplicate id");
        }
    }

    #[test]
    fn scramble_is_a_bijection_on_a_sample() {
        let mut seen = HashSet::new();
        for x in (0..1 << 16).chain((ID_MASK - 1000)..=ID_MASK) {
            let y = scramble48(x);
            assert!(y <= ID_MASK);
            assert!(seen.insert(y));
        }
    }

    #[test]
    fn admission_broadcast_and_leave() {
        let (registry, router, _) = registry(10);
        let (ada, mut ada_rx) = request("lobby", "ada", 8);
        let ada = registry.admit(ada, &open()).expect("admitted");
        assert!(ada.others.is_empty());
        assert_eq!(ada.room.slots, 2);
        assert_eq!(ada.room.name, "lobby");
        let (bob, mut bob_rx) = request("lobby", "bob", 8);
        let bob = registry.admit(bob, &open()).expect("admitted");
        assert_eq!(bob.others, vec![ada.participant.clone()]);
        assert_eq!(
            ada_rx.try_recv(),
            Ok(PresenceEvent::Joined(bob.participant.clone()))
        );
        assert!(bob_rx.try_recv().is_err(), "no event about oneself joining");

        assert!(registry.set_muted("lobby", bob.id, true));
        assert!(
            !registry.set_muted("lobby", bob.id, true),
            "no change, no event"
        );
        let muted = PresenceEvent::Muted {
            sid: bob.participant.sid.clone(),
            muted: true,
        };
        assert_eq!(ada_rx.try_recv(), Ok(muted.clone()));
        assert_eq!(bob_rx.try_recv(), Ok(muted));

        let snapshot = registry.room("lobby").expect("room");
        assert_eq!(snapshot.participants.len(), 2);
        assert!(snapshot.participants[1].muted);
        assert_eq!(snapshot.info().max_participants, 10);
        assert_eq!(registry.participant_count(), 2);

        assert!(registry.leave("lobby", bob.id, ParticipantLeftReason::Disconnected));
        assert!(
            !registry.leave("lobby", bob.id, ParticipantLeftReason::Left),
            "only once"
        );
        assert_eq!(
            ada_rx.try_recv(),
            Ok(PresenceEvent::Left {
                sid: bob.participant.sid.clone(),
                reason: ParticipantLeftReason::Disconnected
            })
        );
        assert!(router.closed.lock().expect("test lock").is_empty());
        assert!(registry.leave("lobby", ada.id, ParticipantLeftReason::Left));
        assert_eq!(
            *router.closed.lock().expect("test lock"),
            vec!["lobby".to_owned()]
        );
        assert_eq!(registry.room_count(), 0);
        assert!(registry.rooms().is_empty());
    }

    #[test]
    fn room_full_and_draining() {
        let (registry, _, _) = registry(1);
        let (first, _first_rx) = request("r", "a", 1);
        registry.admit(first, &open()).expect("admitted");
        let (second, _) = request("r", "b", 1);
        assert_eq!(
            registry.admit(second, &open()).err(),
            Some(AdmitError::RoomFull {
                max_participants: 1
            })
        );
        let (other_room, _) = request("s", "b", 1);
        let draining = AtomicBool::new(true);
        assert_eq!(
            registry.admit(other_room, &draining).err(),
            Some(AdmitError::Draining)
        );
        assert_eq!(registry.rooms().len(), 1, "a refused join creates no room");
        assert_eq!(AdmitError::Draining.code(), ErrorCode::Draining);
        assert_eq!(
            AdmitError::RoomFull {
                max_participants: 1
            }
            .code(),
            ErrorCode::RoomFull
        );
    }

    #[test]
    fn full_presence_queues_drop_and_count() {
        let (registry, _, metrics) = registry(10);
        let (slow, _slow_rx) = request("r", "slow", 1);
        registry.admit(slow, &open()).expect("admitted");
        let (a, _a_rx) = request("r", "a", 8);
        registry.admit(a, &open()).expect("admitted"); // fills slow's queue
        let (b, _b_rx) = request("r", "b", 8);
        registry.admit(b, &open()).expect("admitted"); // dropped for slow
        assert_eq!(metrics.presence_drops(), 1);
    }

    #[test]
    fn rooms_are_sorted_snapshots() {
        let (registry, _, _) = registry(10);
        let mut keep = Vec::new();
        for room in ["b", "a", "c"] {
            let (req, rx) = request(room, "x", 1);
            keep.push((registry.admit(req, &open()).expect("admitted"), rx));
        }
        let names: Vec<String> = registry.rooms().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
