use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use super::ids::{scramble48, ID_MASK};
use super::*;
use crate::media::MediaCommand;
use crate::metrics::SessionLimit;

#[derive(Default)]
struct Router {
    closed: Mutex<Vec<String>>,
}

impl MediaRouter for Router {
    fn route(&self, _room: &str, _participant: ParticipantId) -> mpsc::Sender<MediaCommand> {
        mpsc::channel(1).0
    }
    fn room_closed(&self, room: &str) {
        self.closed.lock().expect("test lock").push(room.to_owned());
    }
}

fn registry(max_participants: usize) -> (RoomRegistry, Arc<Router>, SignalingMetrics) {
    let router = Arc::new(Router::default());
    let metrics = SignalingMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let settings = RoomSettings::forward(2);
    (
        RoomRegistry::new(
            settings,
            max_participants,
            Duration::from_secs(60),
            router.clone(),
            metrics.clone(),
        ),
        router,
        metrics,
    )
}

/// A member's presence queue as the tests read it: each event read back from the text its session writes
/// (serialized once for the whole room).
struct Events(mpsc::Receiver<Presence>);

impl Events {
    fn try_recv(&mut self) -> Result<PresenceEvent, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|presence| {
            let message: ServerMessage =
                serde_json::from_str(presence.text()).expect("a presence text is a server message");
            match message {
                ServerMessage::ParticipantJoined(m) => PresenceEvent::Joined(m.participant),
                ServerMessage::ParticipantLeft(m) => PresenceEvent::Left {
                    sid: m.sid,
                    reason: m.reason,
                },
                ServerMessage::ParticipantMuted(m) => PresenceEvent::Muted {
                    sid: m.sid,
                    muted: m.muted,
                    by_moderator: m.by_moderator,
                },
                ServerMessage::ParticipantUpdated(m) => PresenceEvent::Updated(m.participant),
                other => panic!("not a presence message: {other:?}"),
            }
        })
    }
}

fn request(room: &str, identity: &str, capacity: usize) -> (JoinRequest, Events) {
    let (events, rx) = mpsc::channel(capacity);
    let request = JoinRequest {
        room: room.into(),
        identity: identity.into(),
        name: identity.to_uppercase(),
        can_publish: true,
        can_subscribe: true,
        ptt: false,
        team: None,
        shout: false,
        events,
        shard: None,
    };
    (request, Events(rx))
}

fn open() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn sids_are_unique_and_well_formed() {
    let mut seen = HashSet::new();
    for _ in 0..20_000 {
        let id = next_participant_id();
        assert!(id.0 != 0 && id.0 <= ID_MASK);
        let sid = id.to_string();
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
    assert_eq!(bob.others, vec![ada.participant.clone().into()]);
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Joined(bob.participant.clone()))
    );
    assert!(bob_rx.try_recv().is_err(), "no event about oneself joining");

    let own = |muted| registry.set_muted("lobby", bob.id, muted, Actor::Own);
    assert!(own(true).expect("not server-muted").changed);
    assert!(
        !own(true).expect("not server-muted").changed,
        "no change, no event"
    );
    let muted = PresenceEvent::Muted {
        sid: bob.participant.sid.clone(),
        muted: true,
        by_moderator: false,
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
fn deleted_rooms_refuse_joins_and_go_with_their_last_member() {
    let (registry, router, _) = registry(10);
    let (ada, _ada_rx) = request("doomed", "ada", 8);
    let mut ada = registry.admit(ada, &open()).expect("admitted");
    registry.delete("doomed").expect("exists");
    assert_eq!(
        *ada.removed.borrow_and_update(),
        Some(LeftReason::RoomDeleted)
    );
    let (bob, _) = request("doomed", "bob", 8);
    assert_eq!(
        registry.admit(bob, &open()).err(),
        Some(AdmitError::RoomClosed)
    );
    assert!(router.closed.lock().expect("test lock").is_empty());
    assert!(registry.leave("doomed", ada.id, ParticipantLeftReason::Kicked));
    assert_eq!(registry.room_count(), 0);
    assert_eq!(
        *router.closed.lock().expect("test lock"),
        vec!["doomed".to_owned()]
    );
    assert_eq!(registry.delete("doomed"), Err(AdminError::RoomNotFound));
    // An empty admin room goes at once.
    let spec = RoomSpec {
        settings: RoomSettings::forward(1),
        max_participants: 1,
        empty_timeout: Duration::from_secs(60),
    };
    registry
        .create("empty", spec, Instant::now())
        .expect("created");
    registry.delete("empty").expect("exists");
    assert_eq!(registry.room_count(), 0);
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

#[test]
fn a_second_join_with_the_same_identity_replaces_the_first() {
    let (registry, _, metrics) = registry(2);
    let (ada, _ada_rx) = request("lobby", "ada", 8);
    let mut ada = registry.admit(ada, &open()).expect("admitted");
    let (bob, mut bob_rx) = request("lobby", "bob", 8);
    let bob = registry.admit(bob, &open()).expect("admitted");
    // The room is full (2), yet ada's second session takes her place rather than being refused.
    let (again, _again_rx) = request("lobby", "ada", 8);
    let again = registry.admit(again, &open()).expect("replaces");
    assert_ne!(again.participant.sid, ada.participant.sid);
    assert_eq!(*ada.removed.borrow_and_update(), Some(LeftReason::Replaced));
    assert_eq!(again.others, vec![bob.participant.clone().into()]);
    assert_eq!(
        bob_rx.try_recv(),
        Ok(PresenceEvent::Left {
            sid: ada.participant.sid.clone(),
            reason: ParticipantLeftReason::Replaced
        })
    );
    assert_eq!(
        bob_rx.try_recv(),
        Ok(PresenceEvent::Joined(again.participant.clone()))
    );
    assert_eq!(registry.participant_count(), 2);
    assert_eq!(metrics.participants(crate::media::RoomMode::Forward), 2);
    assert_eq!(metrics.limit_hits(SessionLimit::IdentityReplaced), 1);
    // The replaced session's own leave finds nothing to remove and counts nothing twice.
    assert!(!registry.leave("lobby", ada.id, ParticipantLeftReason::Left));
    assert_eq!(metrics.participants(crate::media::RoomMode::Forward), 2);
    // Another room is another seat.
    let (elsewhere, _) = request("other", "ada", 8);
    registry.admit(elsewhere, &open()).expect("admitted");
    assert_eq!(registry.participant_count(), 3);
}

#[test]
fn a_kick_bans_the_identity_from_the_room_for_the_ban_period() {
    let (registry, _, metrics) = registry(10);
    let t0 = Instant::now();
    let (ada, _ada_rx) = request("lobby", "ada", 8);
    let mut ada = registry.admit_at(ada, &open(), t0).expect("admitted");
    registry
        .kick_at("lobby", &ada.participant.sid, t0)
        .expect("present");
    assert_eq!(*ada.removed.borrow_and_update(), Some(LeftReason::Kicked));
    assert!(registry.leave("lobby", ada.id, ParticipantLeftReason::Kicked));
    // The same token again, a moment later and just before the end of the ban (60 s here).
    for later in [Duration::from_secs(1), Duration::from_millis(59_999)] {
        let (again, _) = request("lobby", "ada", 8);
        let refused = registry.admit_at(again, &open(), t0 + later).err();
        assert!(
            matches!(refused, Some(AdmitError::Banned { remaining_secs }) if remaining_secs >= 1),
            "{refused:?}"
        );
        assert_eq!(refused.map(|e| e.code()), Some(ErrorCode::Banned));
    }
    assert_eq!(metrics.limit_hits(SessionLimit::Banned), 2);
    // Others, and the same identity in another room, are not affected.
    let (bob, _) = request("lobby", "bob", 8);
    registry
        .admit_at(bob, &open(), t0 + Duration::from_secs(1))
        .expect("admitted");
    let (elsewhere, _) = request("other", "ada", 8);
    registry
        .admit_at(elsewhere, &open(), t0 + Duration::from_secs(1))
        .expect("admitted");
    // Once the ban is over the identity may come back, and the expired ban is pruned at the next kick.
    let after = t0 + Duration::from_secs(60);
    let (back, _) = request("lobby", "ada", 8);
    let back = registry.admit_at(back, &open(), after).expect("ban over");
    assert_eq!(registry.ban_count(after), 0);
    registry
        .kick_at("lobby", &back.participant.sid, after)
        .expect("present");
    assert_eq!(registry.ban_count(after), 1);
    assert_eq!(registry.lock_bans().len(), 1, "the expired ban was pruned");
}

#[test]
fn a_zero_ban_period_means_no_ban() {
    let router = Arc::new(Router::default());
    let metrics = SignalingMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let registry = RoomRegistry::new(
        RoomSettings::forward(2),
        10,
        Duration::ZERO,
        router,
        metrics,
    );
    let t0 = Instant::now();
    let (ada, _) = request("lobby", "ada", 8);
    let ada = registry.admit_at(ada, &open(), t0).expect("admitted");
    registry
        .kick_at("lobby", &ada.participant.sid, t0)
        .expect("present");
    registry.leave("lobby", ada.id, ParticipantLeftReason::Kicked);
    let (again, _) = request("lobby", "ada", 8);
    registry.admit_at(again, &open(), t0).expect("no ban");
}

mod remote;
