//! Push-to-talk (`ptt`, `ptt_key`, the key-down rate limit) and moderation (`moderate`: mute, deafen,
//! kick, move) through sessions and a fake media worker.

use super::*;
use crate::metrics::SessionLimit;
use crate::protocol::{Moved, ParticipantUpdated};

fn moderator_token(room: &str, identity: &str) -> String {
    let mut claims = claims(room, identity);
    claims.moderator = true;
    sign(&claims)
}

#[tokio::test(start_paused = true)]
async fn ptt_keys_reach_the_worker_and_a_key_flood_is_refused_without_harming_anyone_else() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let ada_id = id_of(&ada_sid);
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    ada.message().await; // participant_joined
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));

    // Push-to-talk on: the room is told, the worker gates ada (key up).
    ada.json(json!({"type": "ptt", "enabled": true}));
    for client in [&mut ada, &mut bob] {
        match client.message().await {
            ServerMessage::ParticipantUpdated(ParticipantUpdated { participant }) => {
                assert_eq!(participant.sid, ada_sid);
                assert!(participant.ptt);
            }
            other => panic!("expected participant_updated, got {other:?}"),
        }
    }
    assert_eq!(
        media.next().await,
        Seen::Ptt {
            participant: ada_id,
            enabled: true
        }
    );
    assert!(ctx.room("lobby").expect("exists").participants[0].ptt);

    // Key down and up go straight to the worker, and say nothing to anyone.
    ada.json(json!({"type": "ptt_key", "down": true}));
    ada.json(json!({"type": "ptt_key", "down": true})); // no change: nothing
    ada.json(json!({"type": "ptt_key", "down": false}));
    for down in [true, false] {
        assert_eq!(
            media.next().await,
            Seen::PttKey {
                participant: ada_id,
                down
            }
        );
    }
    ada.ping(1).await;
    media.assert_no_command();

    // A flood: 50 presses at once. The bucket (10; the `ptt` and one key-down used 2) lets 8 more
    // through; the other 42 key-downs are refused with a typed error, and their key-ups change nothing.
    for _ in 0..50 {
        ada.json(json!({"type": "ptt_key", "down": true}));
        ada.json(json!({"type": "ptt_key", "down": false}));
    }
    let mut refused = 0;
    ada.json(json!({"type": "ping", "id": 2}));
    loop {
        match ada.message().await {
            ServerMessage::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message);
                refused += 1;
            }
            ServerMessage::Pong(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 42);
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::PttKeyFlood), 42);
    let mut keys = Vec::new();
    while let Ok(seen) = media.seen.try_recv() {
        match seen {
            Seen::PttKey { down, .. } => keys.push(down),
            other => panic!("unexpected command {other:?}"),
        }
    }
    assert_eq!(keys.len(), 16, "8 presses reach the worker");
    assert_eq!(keys.last(), Some(&false), "the flood ends with the key up");
    // Nobody else noticed, and ada is still in the call.
    bob.ping(3).await;
    ada.ping(4).await;

    // Seconds later the bucket has refilled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ada.json(json!({"type": "ptt_key", "down": true}));
    ada.ping(5).await;
    assert_eq!(
        media.next().await,
        Seen::PttKey {
            participant: ada_id,
            down: true
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_can_force_ptt_and_a_key_down_before_the_answer_reaches_the_worker_after_it() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut claims = claims("lobby", "ada");
    claims.ptt = true;
    let mut ada = Client::open(&ctx);
    let joined = ada.join(&sign(&claims)).await;
    assert!(joined.participant.ptt);
    ada.json(json!({"type": "ptt", "enabled": false}));
    ada.error(ErrorCode::Forbidden).await;
    ada.json(json!({"type": "ptt_key", "down": true}));
    ada.offer().await;
    let id = id_of(&joined.participant.sid);
    assert!(matches!(media.next().await, Seen::Connect { participant, .. } if participant == id));
    assert_eq!(
        media.next().await,
        Seen::PttKey {
            participant: id,
            down: true
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_moderator_mutes_deafens_kicks_and_moves_others_and_a_participant_may_not() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut mo = Client::open(&ctx);
    mo.join(&moderator_token("lobby", "mo")).await;
    let mut bob = Client::open(&ctx);
    let bob_sid = bob.join(&token("lobby", "bob")).await.participant.sid;
    let bob_id = id_of(&bob_sid);
    let mut carol = Client::open(&ctx);
    let carol_sid = carol.join(&token("lobby", "carol")).await.participant.sid;
    mo.message().await; // bob joined
    mo.message().await; // carol joined
    bob.message().await; // carol joined
    bob.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));

    // Without the grant: forbidden, nothing happens.
    carol.json(json!({"type": "moderate", "action": "mute", "sid": bob_sid}));
    carol.error(ErrorCode::Forbidden).await;
    media.assert_no_command();

    // A server mute: everyone is told, bob cannot undo it.
    mo.json(json!({"type": "moderate", "action": "mute", "sid": bob_sid}));
    let muted = ServerMessage::ParticipantMuted(ParticipantMuted {
        sid: bob_sid.clone(),
        muted: true,
        by_moderator: true,
    });
    for client in [&mut mo, &mut bob, &mut carol] {
        assert_eq!(client.message().await, muted);
    }
    assert_eq!(
        media.next().await,
        Seen::Mute {
            participant: bob_id,
            muted: true
        }
    );
    bob.json(json!({"type": "mute", "muted": false}));
    bob.error(ErrorCode::ServerMuted).await;
    // Muting oneself further is allowed (it changes nothing).
    bob.json(json!({"type": "mute", "muted": true}));
    bob.ping(1).await;
    media.assert_no_command();

    // Deafen: everyone sees bob's new state, the worker stops sending to bob.
    mo.json(json!({"type": "moderate", "action": "deafen", "sid": bob_sid}));
    for client in [&mut mo, &mut bob, &mut carol] {
        match client.message().await {
            ServerMessage::ParticipantUpdated(ParticipantUpdated { participant }) => {
                assert_eq!(participant.sid, bob_sid);
                assert!(participant.deafened && participant.server_muted && participant.muted);
            }
            other => panic!("expected participant_updated, got {other:?}"),
        }
    }
    assert_eq!(
        media.next().await,
        Seen::Deafen {
            participant: bob_id,
            deafened: true
        }
    );

    // Bad targets and requests are typed errors.
    mo.json(json!({"type": "moderate", "action": "kick", "sid": "PA_000000000000"}));
    mo.error(ErrorCode::ParticipantNotFound).await;
    mo.json(json!({"type": "moderate", "action": "move", "sid": bob_sid}));
    mo.error(ErrorCode::BadMessage).await;
    mo.json(json!({"type": "moderate", "action": "move", "sid": bob_sid, "room": "lobby"}));
    mo.error(ErrorCode::BadMessage).await;
    mo.json(json!({"type": "moderate", "action": "move", "sid": bob_sid, "room": "no/such"}));
    mo.error(ErrorCode::BadMessage).await;

    // Move: bob leaves the lobby (its peer too) and is a new participant of the breakout room.
    mo.json(json!({"type": "moderate", "action": "move", "sid": bob_sid, "room": "breakout"}));
    let moved = until(&mut bob, |m| match m {
        ServerMessage::Moved(moved) => Some(moved),
        _ => None,
    })
    .await;
    let Moved {
        participant,
        room,
        participants,
    } = moved;
    assert_eq!(room.name, "breakout");
    assert_eq!(participant.identity, "bob");
    assert_ne!(participant.sid, bob_sid);
    assert!(!participant.deafened && !participant.muted);
    assert!(participants.is_empty());
    let left = ServerMessage::ParticipantLeft(ParticipantLeft {
        sid: bob_sid.clone(),
        reason: ParticipantLeftReason::Moved,
    });
    assert_eq!(mo.message().await, left);
    assert_eq!(carol.message().await, left);
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: bob_id
        }
    );
    bob.offer().await;
    assert!(matches!(
        media.next().await,
        Seen::Connect { room, participant, .. } if room == "breakout" && participant == id_of(&participant_sid(&ctx, "breakout"))
    ));
    assert_eq!(ctx.room("lobby").expect("exists").participants.len(), 2);
    assert_eq!(ctx.metrics().leaves(LeaveReason::Moved), 1);

    // Kick: carol is removed (and banned, as through the admin API).
    mo.json(json!({"type": "moderate", "action": "kick", "sid": carol_sid}));
    assert_eq!(
        carol.message().await,
        ServerMessage::Left(Left {
            reason: Some(LeftReason::Kicked)
        })
    );
    carol.closed_with(CLOSE_NORMAL).await;
    assert_eq!(
        mo.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: carol_sid,
            reason: ParticipantLeftReason::Kicked,
        })
    );
    // The moderator's own session carried on throughout.
    mo.ping(9).await;
}

/// The sid of the only participant of `room`.
fn participant_sid(ctx: &Signaling, room: &str) -> String {
    let room = ctx.room(room).expect("the room exists");
    room.participants[0].sid.clone()
}

#[tokio::test(start_paused = true)]
async fn the_admin_api_deafens_and_moves() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    // Before the offer the worker is told with Connect (not asserted: the fake does not record it).
    let info = ctx
        .deafen_participant("lobby", &sid, true)
        .await
        .expect("present");
    assert!(info.deafened);
    assert!(matches!(
        ada.message().await,
        ServerMessage::ParticipantUpdated(_)
    ));
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    let info = ctx
        .deafen_participant("lobby", &sid, false)
        .await
        .expect("present");
    assert!(!info.deafened);
    assert!(matches!(
        ada.message().await,
        ServerMessage::ParticipantUpdated(_)
    ));
    assert_eq!(
        media.next().await,
        Seen::Deafen {
            participant: id_of(&sid),
            deafened: false
        }
    );
    assert_eq!(
        ctx.move_participant("lobby", &sid, "lobby"),
        Err(AdminError::SameRoom)
    );
    assert_eq!(
        ctx.move_participant("lobby", "PA_000000000000", "elsewhere"),
        Err(AdminError::ParticipantNotFound)
    );
    ctx.move_participant("lobby", &sid, "elsewhere")
        .expect("present");
    assert!(matches!(ada.message().await, ServerMessage::Moved(_)));
    assert!(ctx.room("lobby").is_none(), "the lobby went with ada");
    assert_eq!(
        ctx.room("elsewhere").expect("created").participants.len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_held_when_the_socket_drops_is_released_and_a_suspended_session_that_is_moved_leaves()
{
    let (ctx, mut media) = setup(Mode::Answer);
    let mut watcher = Client::open(&ctx);
    watcher.join(&token("lobby", "watcher")).await;
    let mut ada = Client::open(&ctx);
    let sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let id = id_of(&sid);
    watcher.message().await; // ada joined
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    ada.json(json!({"type": "ptt", "enabled": true}));
    ada.json(json!({"type": "ptt_key", "down": true}));
    until(&mut ada, |m| {
        matches!(m, ServerMessage::ParticipantUpdated(_)).then_some(())
    })
    .await;
    ada.ping(1).await;
    assert!(matches!(
        media.next().await,
        Seen::Ptt { enabled: true, .. }
    ));
    assert_eq!(
        media.next().await,
        Seen::PttKey {
            participant: id,
            down: true
        }
    );
    // The socket drops without a close frame: suspended, and the key is released at once.
    ada.send(Err("connection reset by peer".into()));
    ada.input = None;
    assert_eq!(
        media.next().await,
        Seen::PttKey {
            participant: id,
            down: false
        }
    );
    assert_eq!(ctx.suspended_sessions(), 1);
    // Moved while suspended: nobody can be told where to go, so it leaves.
    ctx.move_participant("lobby", &sid, "breakout")
        .expect("still in the room");
    let left = until(&mut watcher, |m| match m {
        ServerMessage::ParticipantLeft(left) => Some(left),
        _ => None,
    })
    .await;
    assert_eq!(left.reason, ParticipantLeftReason::Moved);
    assert_eq!(media.next().await, Seen::Leave { participant: id });
    assert!(ctx.room("breakout").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_participant_on_another_node_is_moderated_through_the_cluster() {
    use crate::protocol::ModerateAction;
    use crate::roster::{RemoteAction, RemoteRoster, RosterChange};
    let (ctx, _media) = setup(Mode::Answer);
    let mut mo = Client::open(&ctx);
    mo.join(&moderator_token("wide", "mo")).await;
    let bob = ParticipantInfo {
        name: "bob".into(),
        ..ParticipantInfo::sample("PA_0000000000b0", "bob")
    };
    let joined = RosterChange::Joined {
        participant: bob.clone(),
        replaces: Vec::new(),
    };
    ctx.remote_roster("wide", "node-b", RemoteRoster::Change(joined));
    mo.message().await; // bob joined (remote)
    let mute = json!({"type": "moderate", "action": "mute", "sid": bob.sid});

    // No cluster to hand it to: not found here, the message says where it is.
    mo.json(mute.clone());
    let message = mo.error(ErrorCode::ParticipantNotFound).await;
    assert!(message.contains("another node"), "{message}");

    let (sink, mut actions) = mpsc::channel(1);
    assert!(ctx.set_remote_actions(sink));
    // Bob's node takes it: no error (the roster channel brings his new state back).
    mo.json(mute.clone());
    let request = actions.recv().await.expect("the moderation is handed over");
    assert_eq!(
        request.action,
        RemoteAction {
            room: "wide".into(),
            node: "node-b".into(),
            sid: bob.sid.clone(),
            action: ModerateAction::Mute,
            to: None,
        }
    );
    request.reply.send(Ok(())).expect("the session waits");
    mo.ping(1).await;
    // He left there meanwhile: not found.
    mo.json(mute.clone());
    let request = actions.recv().await.expect("handed over");
    let gone = Err(AdminError::ParticipantNotFound);
    request.reply.send(gone).expect("the session waits");
    mo.error(ErrorCode::ParticipantNotFound).await;
    // His node does not answer: the moderator is told after the timeout, and the session goes on.
    mo.json(mute);
    let _unanswered = actions.recv().await.expect("handed over");
    let message = mo.error(ErrorCode::ParticipantNotFound).await;
    assert!(message.contains("did not answer"), "{message}");
    mo.ping(2).await;
}
