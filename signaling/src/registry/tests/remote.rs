//! A room spanning nodes: other nodes' participants listed and evented like local ones, this node's
//! changes handed to the roster sink.

use super::*;
use crate::roster::{
    LocalRosterChange, RemoteRoster, RosterChange, RosterOutcome, ShardSeed, SharedRoom,
};

fn remote(sid: &str, identity: &str) -> ParticipantInfo {
    ParticipantInfo::sample(sid, identity)
}

fn marked(p: ParticipantInfo) -> ParticipantInfo {
    ParticipantInfo { remote: true, ..p }
}

#[test]
fn another_nodes_participants_are_listed_evented_and_dropped_with_their_node() {
    let (registry, _, _) = registry(10);
    let (ada, mut ada_rx) = request("wide", "ada", 8);
    let ada = registry.admit(ada, &open()).expect("admitted");
    let bob = remote("PA_0000000000b0", "bob");
    let joined = RemoteRoster::Change(RosterChange::Joined {
        participant: bob.clone(),
        replaces: Vec::new(),
    });
    assert_eq!(
        registry.remote_roster("wide", "node-b", joined.clone()),
        RosterOutcome::Applied
    );
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Joined(marked(bob.clone())))
    );
    // Heard again (a sync after a message): no second event.
    registry.remote_roster("wide", "node-b", joined);
    assert!(ada_rx.try_recv().is_err());
    // A newcomer here lists Bob, marked remote.
    let (cy, _cy_rx) = request("wide", "cy", 8);
    let cy = registry.admit(cy, &open()).expect("admitted");
    assert_eq!(
        cy.others,
        vec![ada.participant.clone().into(), marked(bob.clone()).into()]
    );
    let _ = ada_rx.try_recv();
    // Bob mutes on his node: a mute event here.
    let muted = ParticipantInfo {
        muted: true,
        ..bob.clone()
    };
    let change = RemoteRoster::Change(RosterChange::Updated { participant: muted });
    registry.remote_roster("wide", "node-b", change);
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Muted {
            sid: bob.sid.clone(),
            muted: true,
            by_moderator: false
        })
    );
    assert!(ada_rx.try_recv().is_err(), "nothing else changed");
    // Bob is not this node's to moderate, whisper to or kick.
    assert_eq!(
        registry.find("wide", &bob.sid),
        Err(AdminError::RemoteParticipant)
    );
    assert_eq!(
        registry.kick("wide", &bob.sid),
        Err(AdminError::RemoteParticipant)
    );
    assert_eq!(
        registry.find("wide", "PA_000000000000"),
        Err(AdminError::ParticipantNotFound)
    );
    // … but may be whispered to or given a volume: by the id its sid names.
    assert_eq!(
        registry.find_audible("wide", &bob.sid),
        Ok(ParticipantId(0xb0))
    );
    assert_eq!(
        registry.find_audible("wide", &ada.participant.sid),
        registry.find("wide", &ada.participant.sid)
    );
    assert_eq!(
        registry.find_audible("wide", "PA_000000000000"),
        Err(AdminError::ParticipantNotFound)
    );
    // Its node is known, for a moderation to go there.
    assert_eq!(
        registry.remote_node("wide", &bob.sid).as_deref(),
        Some("node-b")
    );
    assert_eq!(registry.remote_node("wide", "PA_000000000000"), None);
    // Its node dies: Bob leaves, disconnected.
    registry.remote_roster("wide", "node-b", RemoteRoster::Gone);
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Left {
            sid: bob.sid.clone(),
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(
        registry.remote_roster("nowhere", "node-b", RemoteRoster::Gone),
        RosterOutcome::NoRoom
    );
}

#[test]
fn a_sync_replaces_a_nodes_participants_and_a_taken_id_is_refused() {
    let (registry, _, _) = registry(3);
    let (ada, mut ada_rx) = request("wide", "ada", 8);
    let ada = registry.admit(ada, &open()).expect("admitted");
    let (bob, cy) = (
        remote("PA_0000000000b0", "bob"),
        remote("PA_0000000000c0", "cy"),
    );
    registry.remote_roster("wide", "node-b", RemoteRoster::Sync(vec![bob.clone()]));
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Joined(marked(bob.clone())))
    );
    registry.remote_roster("wide", "node-b", RemoteRoster::Sync(vec![cy.clone()]));
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Left {
            sid: bob.sid.clone(),
            reason: ParticipantLeftReason::Left
        })
    );
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Joined(marked(cy.clone())))
    );
    // A third node naming Ada's id, or Cy's: refused, nobody told.
    let twin = remote(&ada.participant.sid, "eve");
    let sync = RemoteRoster::Sync(vec![twin, remote(&cy.sid, "mallory")]);
    assert_eq!(
        registry.remote_roster("wide", "node-c", sync),
        RosterOutcome::Collision
    );
    assert!(ada_rx.try_recv().is_err());
    // The room counts its participants on every node: Ada and Cy, one more seat.
    let (dan, _) = request("wide", "dan", 8);
    registry.admit(dan, &open()).expect("admitted");
    let (eve, _) = request("wide", "eve", 8);
    assert!(matches!(
        registry.admit(eve, &open()),
        Err(AdmitError::RoomFull {
            max_participants: 3
        })
    ));
}

#[test]
fn local_changes_go_to_the_sink_and_a_shard_takes_the_owners_settings() {
    let (registry, _, _) = registry(10);
    let (sink, mut changes) = mpsc::channel::<LocalRosterChange>(2);
    assert!(registry.set_roster_sink(sink));
    let mut ada = request("wide", "ada", 8).0;
    let bob = remote("PA_0000000000b0", "bob");
    ada.shard = Some(ShardSeed {
        room: Some(SharedRoom::new(RoomSettings::forward(5), 7)),
        members: vec![("node-b".into(), vec![bob.clone()])],
    });
    let ada = registry.admit(ada, &open()).expect("admitted");
    assert_eq!(ada.settings, RoomSettings::forward(5));
    assert_eq!(ada.room.max_participants, 7);
    assert_eq!(ada.others, vec![marked(bob).into()]);
    assert_eq!(
        changes.try_recv().map(|c| c.change),
        Ok(RosterChange::Joined {
            participant: ada.participant.clone(),
            replaces: Vec::new(),
        })
    );
    let _ = registry.set_muted("wide", ada.id, true, Actor::Own);
    let _ = registry.set_deafened("wide", ada.id, true);
    // The sink holds two: the third change is lost, and that is said once.
    let _ = registry.set_ptt("wide", ada.id, true);
    assert!(registry.take_roster_lost());
    assert!(!registry.take_roster_lost());
    let updated = changes.try_recv().expect("the mute");
    assert_eq!(updated.room, "wide");
    assert!(matches!(updated.change, RosterChange::Updated { participant } if participant.muted));
    let _ = changes.try_recv();
    assert!(registry.leave("wide", ada.id, ParticipantLeftReason::Left));
    assert_eq!(
        changes.try_recv().map(|c| c.change),
        Ok(RosterChange::Left {
            sid: ada.participant.sid.clone(),
            reason: ParticipantLeftReason::Left
        })
    );
    assert_eq!(
        registry.local_roster("wide"),
        None,
        "the room went with Ada"
    );
}

#[test]
fn a_join_replaces_the_same_identity_on_another_node() {
    let (registry, _, metrics) = registry(10);
    let (sink, mut changes) = mpsc::channel::<LocalRosterChange>(8);
    assert!(registry.set_roster_sink(sink));
    let (ada, mut ada_rx) = request("wide", "ada", 8);
    let ada = registry.admit(ada, &open()).expect("admitted");
    let _ = changes.try_recv();
    let bob_there = remote("PA_0000000000b0", "bob");
    let joined = RemoteRoster::Change(RosterChange::Joined {
        participant: bob_there.clone(),
        replaces: Vec::new(),
    });
    registry.remote_roster("wide", "node-b", joined);
    let _ = ada_rx.try_recv();
    // Bob joins here too: his seat on node-b is named for its node to end, and is not listed from now.
    let (bob, _bob_rx) = request("wide", "bob", 8);
    let bob = registry.admit(bob, &open()).expect("admitted");
    assert_eq!(bob.others, vec![ada.participant.clone().into()]);
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Left {
            sid: bob_there.sid.clone(),
            reason: ParticipantLeftReason::Replaced
        })
    );
    assert_eq!(
        ada_rx.try_recv(),
        Ok(PresenceEvent::Joined(bob.participant.clone()))
    );
    assert_eq!(
        changes.try_recv().map(|c| c.change),
        Ok(RosterChange::Joined {
            participant: bob.participant.clone(),
            replaces: vec![bob_there.sid.clone()],
        })
    );
    assert_eq!(metrics.limit_hits(SessionLimit::IdentityReplaced), 1);
    assert!(registry.remote_participants("wide").is_empty());
    // Its node's `left` (replaced) comes after: nothing more to tell.
    let left = RemoteRoster::Change(RosterChange::Left {
        sid: bob_there.sid,
        reason: ParticipantLeftReason::Replaced,
    });
    registry.remote_roster("wide", "node-b", left);
    assert!(ada_rx.try_recv().is_err());
}

#[test]
fn a_join_on_another_node_ends_the_seat_it_names_and_concurrent_joins_keep_one() {
    let (registry, _, metrics) = registry(10);
    let (sink, mut changes) = mpsc::channel::<LocalRosterChange>(8);
    assert!(registry.set_roster_sink(sink));
    let (ada, _ada_rx) = request("wide", "ada", 8);
    let mut ada = registry.admit(ada, &open()).expect("admitted");
    let (cy, mut cy_rx) = request("wide", "cy", 8);
    let _cy = registry.admit(cy, &open()).expect("admitted");
    while changes.try_recv().is_ok() {}
    // Ada joins on node-b, which saw her seat here: this one ends, replaced, whatever the ids' order.
    let ada_there = remote("PA_000000000001", "ada");
    let joined = RemoteRoster::Change(RosterChange::Joined {
        participant: ada_there.clone(),
        replaces: vec![ada.participant.sid.clone()],
    });
    registry.remote_roster("wide", "node-b", joined);
    assert_eq!(*ada.removed.borrow_and_update(), Some(LeftReason::Replaced));
    assert_eq!(
        cy_rx.try_recv(),
        Ok(PresenceEvent::Left {
            sid: ada.participant.sid.clone(),
            reason: ParticipantLeftReason::Replaced
        })
    );
    assert_eq!(
        cy_rx.try_recv(),
        Ok(PresenceEvent::Joined(marked(ada_there.clone())))
    );
    assert_eq!(
        changes.try_recv().map(|c| c.change),
        Ok(RosterChange::Left {
            sid: ada.participant.sid.clone(),
            reason: ParticipantLeftReason::Replaced,
        })
    );
    assert_eq!(metrics.limit_hits(SessionLimit::IdentityReplaced), 1);
    // Dan joins here and on node-b at once, neither node knowing of the other seat: the lower id goes,
    // on its own node. Here Dan's id is the higher one: he stays, and node-b's Dan is listed until his
    // node ends him.
    let (dan, _dan_rx) = request("wide", "dan", 8);
    let mut dan = registry.admit(dan, &open()).expect("admitted");
    let _ = cy_rx.try_recv();
    let dan_lower = remote("PA_000000000002", "dan");
    let joined = RemoteRoster::Change(RosterChange::Joined {
        participant: dan_lower.clone(),
        replaces: Vec::new(),
    });
    registry.remote_roster("wide", "node-b", joined);
    assert_eq!(*dan.removed.borrow_and_update(), None);
    assert_eq!(
        cy_rx.try_recv(),
        Ok(PresenceEvent::Joined(marked(dan_lower)))
    );
    // Node-c's Dan has a higher id than this one: this one goes.
    let dan_higher = remote("PA_ffffffffff00", "dan");
    let joined = RemoteRoster::Change(RosterChange::Joined {
        participant: dan_higher,
        replaces: Vec::new(),
    });
    registry.remote_roster("wide", "node-c", joined);
    assert_eq!(*dan.removed.borrow_and_update(), Some(LeftReason::Replaced));
    assert_eq!(metrics.limit_hits(SessionLimit::IdentityReplaced), 2);
}
