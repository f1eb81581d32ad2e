//! Teams, talk targets (`talk`), volumes (`volume`) and listen-only joins through sessions and a fake media
//! worker: what is accepted reaches the worker, bad input gets its typed error and harms no one.

use super::*;
use crate::media::{TalkTarget, TeamId, Volume};
use crate::metrics::SessionLimit;

fn team_token(room: &str, identity: &str, team: Option<&str>, shout: bool) -> String {
    let mut claims = claims(room, identity);
    claims.team = team.map(|t| TeamId::new(t).expect("a team"));
    claims.shout = shout;
    sign(&claims)
}

#[tokio::test(start_paused = true)]
async fn the_token_team_wins_and_join_may_pick_one_without_it() {
    let (ctx, _media) = setup(Mode::Answer);
    // The claim decides; the same team in the join is fine, another one is forbidden.
    let mut ada = Client::open(&ctx);
    let joined = ada
        .join_with(json!({"type": "join", "protocol": 1,
            "token": team_token("lobby", "ada", Some("red"), false), "team": "red"}))
        .await;
    assert_eq!(
        joined.participant.team.as_ref().map(TeamId::as_str),
        Some("red")
    );
    let mut spy = Client::open(&ctx);
    spy.json(json!({"type": "join", "protocol": 1,
        "token": team_token("lobby", "spy", Some("red"), false), "team": "blue"}));
    assert!(spy.error(ErrorCode::Forbidden).await.contains("team red"));
    // Without a claim the join picks; everyone sees it.
    let mut bob = Client::open(&ctx);
    let joined = bob
        .join_with(
            json!({"type": "join", "protocol": 1, "token": token("lobby", "bob"),
            "team": "blue"}),
        )
        .await;
    assert_eq!(
        joined.participant.team.as_ref().map(TeamId::as_str),
        Some("blue")
    );
    match ada.message().await {
        ServerMessage::ParticipantJoined(p) => {
            assert_eq!(
                p.participant.team.as_ref().map(TeamId::as_str),
                Some("blue")
            )
        }
        other => panic!("expected participant_joined, got {other:?}"),
    }
    // A listen-only join never publishes: as `can_publish: false`, so it cannot even mute.
    let mut carl = Client::open(&ctx);
    let joined = carl
        .join_with(
            json!({"type": "join", "protocol": 1, "token": token("lobby", "carl"),
            "listen_only": true}),
        )
        .await;
    assert!(!joined.participant.can_publish);
    assert!(joined.participant.can_subscribe);
    carl.json(json!({"type": "mute", "muted": false}));
    carl.error(ErrorCode::Forbidden).await;
}

#[tokio::test(start_paused = true)]
async fn talk_targets_are_checked_and_reach_the_worker() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_sid = ada
        .join(&team_token("arena", "ada", Some("red"), false))
        .await
        .participant
        .sid;
    let ada_id = id_of(&ada_sid);
    let mut bob = Client::open(&ctx);
    let bob_sid = bob.join(&token("arena", "bob")).await.participant.sid;
    let bob_id = id_of(&bob_sid);
    ada.message().await; // participant_joined
    let mut other_room = Client::open(&ctx);
    let stranger = other_room
        .join(&token("elsewhere", "eve"))
        .await
        .participant
        .sid;

    // Before the offer: kept, and sent to the worker after the answer.
    ada.json(json!({"type": "talk", "target": "whisper", "to": [bob_sid]}));
    ada.ping(1).await;
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    assert_eq!(
        media.next().await,
        Seen::Talk {
            participant: ada_id,
            target: TalkTarget::Whisper(vec![bob_id])
        }
    );
    // Bad targets: typed errors, nothing reaches the worker, the target stays.
    for (to, why) in [
        (json!([stranger]), "not a participant"),
        (json!(["PA_000000000000"]), "not a participant"),
        (json!(["nonsense"]), "not a participant"),
        (json!([bob_sid, ada_sid]), "oneself"),
    ] {
        ada.json(json!({"type": "talk", "target": "whisper", "to": to}));
        assert!(ada.error(ErrorCode::BadTarget).await.contains(why));
    }
    bob.json(json!({"type": "talk", "target": "team"}));
    assert!(bob.error(ErrorCode::BadTarget).await.contains("team"));
    ada.json(json!({"type": "talk", "target": "whisper", "to": []}));
    ada.error(ErrorCode::BadMessage).await;
    ada.ping(2).await;
    media.assert_no_command();
    // A target that left: refused too.
    let mut carl = Client::open(&ctx);
    let carl_sid = carl.join(&token("arena", "carl")).await.participant.sid;
    ada.message().await; // participant_joined
    carl.json(json!({"type": "leave"}));
    carl.message().await; // left
    ada.message().await; // participant_left
    ada.json(json!({"type": "talk", "target": "whisper", "to": [carl_sid]}));
    ada.error(ErrorCode::BadTarget).await;
    // Team talk with a team, then back to the room.
    ada.json(json!({"type": "talk", "target": "team"}));
    ada.json(json!({"type": "talk", "target": "team"})); // no change: nothing
    ada.json(json!({"type": "talk", "target": "room"}));
    ada.ping(3).await;
    for target in [TalkTarget::Team, TalkTarget::Room] {
        assert_eq!(
            media.next().await,
            Seen::Talk {
                participant: ada_id,
                target
            }
        );
    }
    media.assert_no_command();
    bob.message().await; // carl joined
    bob.message().await; // carl left
    bob.ping(4).await;
}

#[tokio::test(start_paused = true)]
async fn volumes_are_checked_and_a_flood_is_refused() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let ada_id = id_of(&ada_sid);
    let mut bob = Client::open(&ctx);
    let bob_sid = bob.join(&token("lobby", "bob")).await.participant.sid;
    let bob_id = id_of(&bob_sid);
    ada.message().await; // participant_joined
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));

    ada.json(json!({"type": "volume", "sid": bob_sid, "volume": -20}));
    ada.ping(1).await;
    assert_eq!(
        media.next().await,
        Seen::Volume {
            listener: ada_id,
            speaker: bob_id,
            volume: Volume::new(-20).expect("in range")
        }
    );
    for bad in [51, -51] {
        ada.json(json!({"type": "volume", "sid": bob_sid, "volume": bad}));
        ada.error(ErrorCode::BadMessage).await;
    }
    ada.json(json!({"type": "volume", "sid": bob_sid, "volume": 0.5}));
    ada.error(ErrorCode::BadMessage).await;
    ada.json(json!({"type": "volume", "sid": "PA_000000000000", "volume": 5}));
    ada.error(ErrorCode::ParticipantNotFound).await;
    ada.json(json!({"type": "volume", "sid": ada_sid, "volume": 5}));
    ada.error(ErrorCode::BadTarget).await;
    ada.ping(2).await;
    media.assert_no_command();

    // A flood: the bucket holds 20 (2 used above by accepted and refused checks alike); the rest are
    // refused with a typed error and counted; bob is not affected.
    for i in 0..60 {
        ada.json(json!({"type": "volume", "sid": bob_sid, "volume": (i % 40) - 20}));
    }
    ada.json(json!({"type": "ping", "id": 3}));
    let mut refused = 0;
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
    assert!(refused >= 40, "{refused} refused");
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::TalkFlood), refused);
    let mut volumes = 0;
    while let Ok(seen) = media.seen.try_recv() {
        assert!(matches!(seen, Seen::Volume { .. }), "{seen:?}");
        volumes += 1;
    }
    assert_eq!(
        volumes + refused,
        60 - 1,
        "one repeat of -20 changes nothing"
    );
    bob.ping(4).await;
}

#[tokio::test(start_paused = true)]
async fn a_participant_on_another_node_may_be_whispered_to_and_given_a_volume() {
    use crate::protocol::ParticipantLeftReason;
    use crate::roster::{RemoteRoster, RosterChange};
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_sid = ada.join(&token("wide", "ada")).await.participant.sid;
    let ada_id = id_of(&ada_sid);
    let bob = ParticipantInfo::sample("PA_0000000000b0", "bob");
    let joined = RosterChange::Joined {
        participant: bob.clone(),
        replaces: Vec::new(),
    };
    ctx.remote_roster("wide", "node-b", RemoteRoster::Change(joined));
    ada.message().await; // bob joined (remote)
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));

    // The media worker gets the id bob's sid names: his speech is imported here with it, and the whisper's
    // list travels to his node with ada's audio.
    ada.json(json!({"type": "talk", "target": "whisper", "to": [bob.sid]}));
    ada.json(json!({"type": "volume", "sid": bob.sid, "volume": -10}));
    ada.ping(1).await;
    assert_eq!(
        media.next().await,
        Seen::Talk {
            participant: ada_id,
            target: TalkTarget::Whisper(vec![id_of(&bob.sid)])
        }
    );
    assert_eq!(
        media.next().await,
        Seen::Volume {
            listener: ada_id,
            speaker: id_of(&bob.sid),
            volume: Volume::new(-10).expect("in range")
        }
    );
    // Gone from his node: no longer a target.
    let left = RosterChange::Left {
        sid: bob.sid.clone(),
        reason: ParticipantLeftReason::Left,
    };
    ctx.remote_roster("wide", "node-b", RemoteRoster::Change(left));
    ada.message().await; // bob left
    ada.json(json!({"type": "talk", "target": "whisper", "to": [bob.sid]}));
    ada.error(ErrorCode::BadTarget).await;
    ada.json(json!({"type": "volume", "sid": bob.sid, "volume": 5}));
    ada.error(ErrorCode::ParticipantNotFound).await;
    ada.ping(2).await;
    media.assert_no_command();
}
