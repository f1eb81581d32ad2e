//! Suspending a session whose socket dropped, and resuming it on a new socket.

use super::*;
use crate::metrics::ResumeFailure;
use crate::protocol::Resumed;

impl Client {
    async fn resume(&mut self, token: &str) -> Resumed {
        self.json(json!({"type": "resume", "protocol": 1, "resume_token": token}));
        match self.message().await {
            ServerMessage::Resumed(resumed) => resumed,
            other => panic!("expected resumed, got {other:?}"),
        }
    }

    /// Drops the socket the way a network change does: a read error, no close frame.
    async fn drop_socket(mut self) {
        self.send(Err("connection reset by peer".into()));
        self.input = None;
        // Frames in flight are lost with the socket; no goodbye follows them.
        while let Some(frame) = timeout(GUARD, self.output.recv())
            .await
            .expect("the socket ends")
        {
            assert!(
                matches!(frame, WsFrame::Text(_)),
                "no close frame: {frame:?}"
            );
        }
    }
}

async fn two_in_lobby(ctx: &Arc<Signaling>, media: &mut FakeMedia) -> (Client, Joined, Client) {
    let mut ada = Client::open(ctx);
    let joined = ada.join(&token("lobby", "ada")).await;
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    let mut bob = Client::open(ctx);
    bob.join(&token("lobby", "bob")).await;
    ada.message().await; // participant_joined bob
    (ada, joined, bob)
}

#[tokio::test(start_paused = true)]
async fn a_dropped_socket_is_resumed_within_the_window_unnoticed_by_the_room() {
    let (ctx, mut media) = setup(Mode::Answer);
    let (ada, joined, mut bob) = two_in_lobby(&ctx, &mut media).await;
    assert_eq!(joined.resume_window_ms, 15_000);
    assert!(joined.resume_token.len() >= 22, "at least 128 bits");
    assert!(!joined.resume_token.contains(&joined.participant.sid[3..]));
    let ada_id = id_of(&joined.participant.sid);

    ada.drop_socket().await;
    assert_eq!(ctx.suspended_sessions(), 1);
    assert_eq!(ctx.metrics().suspended(), 1);
    assert_eq!(ctx.participant_count(), 2, "suspended, still in the room");
    assert_eq!(ctx.metrics().sessions(), 1, "only bob's socket is open");

    // While suspended: the media peer runs on; what the client must know is kept for it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    media.emit(ada_id, MediaEvent::Connected);
    let slots = vec![SlotAssignment {
        slot: 0,
        mid: "1".into(),
        participant: Some(ParticipantId(7)),
        ssrc: Some(42),
    }];
    media.emit(ada_id, MediaEvent::Slots(slots.clone()));
    media.emit(
        ada_id,
        MediaEvent::Speakers(vec![(ParticipantId(7), 0.5)].into()),
    );
    bob.json(json!({"type": "mute", "muted": true}));
    bob.message().await; // bob's own participant_muted

    let mut ada = Client::open(&ctx);
    let resumed = ada.resume(&joined.resume_token).await;
    assert_eq!(
        resumed.state.participant.sid, joined.participant.sid,
        "same participant"
    );
    assert_eq!(resumed.state.participants.len(), 1);
    assert!(resumed.state.participants[0].muted, "the room as it is now");
    assert!(resumed.media, "the media peer is still there");
    assert_ne!(
        resumed.state.resume_token, joined.resume_token,
        "a fresh token"
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Connected
        })
    );
    assert!(matches!(ada.message().await, ServerMessage::Slots(s) if s.slots.len() == 1));
    // bob's mute came while ada was away: `resumed` has it, no presence event repeats it.
    ada.ping(1).await;
    assert_eq!(ctx.suspended_sessions(), 0);
    assert_eq!(ctx.metrics().suspended(), 0);
    assert_eq!(ctx.metrics().resumes(), 1);

    // Nobody noticed: no participant_left or participant_joined for bob, no Leave on the worker.
    bob.ping(1).await;
    media.assert_no_command();
    // Media events reach the new socket.
    media.emit(ada_id, MediaEvent::DominantSpeaker(ParticipantId(7)));
    assert!(matches!(
        ada.message().await,
        ServerMessage::DominantSpeaker(_)
    ));

    // The token was single-use; a failed resume is not fatal.
    let mut mallory = Client::open(&ctx);
    mallory.json(json!({"type": "resume", "protocol": 1, "resume_token": joined.resume_token}));
    mallory.error(ErrorCode::ResumeFailed).await;
    mallory.json(json!({"type": "resume", "protocol": 1, "resume_token": "guess"}));
    mallory.error(ErrorCode::ResumeFailed).await;
    assert_eq!(ctx.metrics().resume_failures(ResumeFailure::Unknown), 2);
    mallory.join(&token("lobby", "mallory")).await;

    // The new token resumes once more; `leave` then ends it for good.
    ada.drop_socket().await;
    let mut ada = Client::open(&ctx);
    let again = ada.resume(&resumed.state.resume_token).await;
    assert_eq!(again.state.participant.sid, joined.participant.sid);
    ada.json(json!({"type": "leave"}));
    assert!(matches!(ada.message().await, ServerMessage::Left(_)));
    ada.closed_with(1000).await;
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantJoined(ParticipantJoined {
            participant: ParticipantInfo {
                name: "mallory".into(),
                ..ParticipantInfo::sample(&bob.join_sid_of("mallory", &ctx), "mallory")
            }
        })
    );
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: joined.participant.sid.clone(),
            reason: ParticipantLeftReason::Left
        })
    );
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: ada_id
        }
    );
    let mut late = Client::open(&ctx);
    late.json(json!({"type": "resume", "protocol": 1, "resume_token": again.state.resume_token}));
    late.error(ErrorCode::ResumeFailed).await;
}

impl Client {
    /// The sid of `identity` in the lobby now.
    fn join_sid_of(&self, identity: &str, ctx: &Arc<Signaling>) -> String {
        ctx.room("lobby")
            .and_then(|r| r.participants.into_iter().find(|p| p.identity == identity))
            .map(|p| p.sid)
            .expect("in the lobby")
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_window_the_participant_is_gone_and_the_others_are_told() {
    let (ctx, mut media) = setup(Mode::Answer);
    let (ada, joined, mut bob) = two_in_lobby(&ctx, &mut media).await;
    let start = Instant::now();
    ada.drop_socket().await;
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: joined.participant.sid.clone(),
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(15),
        "the resume window"
    );
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: id_of(&joined.participant.sid)
        }
    );
    assert_eq!(ctx.participant_count(), 1);
    assert_eq!(ctx.suspended_sessions(), 0);
    assert_eq!(ctx.metrics().leaves(LeaveReason::TransportError), 1);
    let mut ada = Client::open(&ctx);
    ada.json(json!({"type": "resume", "protocol": 1, "resume_token": joined.resume_token}));
    ada.error(ErrorCode::ResumeFailed).await;
    // Not fatal: the client joins afresh on the same socket.
    let fresh = ada.join(&token("lobby", "ada")).await;
    assert_ne!(fresh.participant.sid, joined.participant.sid);
}

#[tokio::test(start_paused = true)]
async fn leave_close_and_media_loss_do_not_suspend() {
    let (ctx, mut media) = setup(Mode::Answer);
    // `leave`
    let (mut ada, joined, mut bob) = two_in_lobby(&ctx, &mut media).await;
    ada.json(json!({"type": "leave"}));
    assert!(matches!(ada.message().await, ServerMessage::Left(_)));
    ada.closed_with(1000).await;
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            reason: ParticipantLeftReason::Left,
            ..
        })
    ));
    assert_eq!(ctx.suspended_sessions(), 0);
    let mut again = Client::open(&ctx);
    again.json(json!({"type": "resume", "protocol": 1, "resume_token": joined.resume_token}));
    again.error(ErrorCode::ResumeFailed).await;

    // A media disconnect while suspended ends the session at once.
    let mut cy = Client::open(&ctx);
    let cy_joined = cy.join(&token("lobby", "cy")).await;
    bob.message().await; // participant_joined cy
                         // Bob's next presence event then goes out at once (it is not within the spacing of this flush).
    tokio::time::sleep(crate::session::PRESENCE_SPACING).await;
    cy.offer().await;
    media.next().await;
    let start = Instant::now();
    cy.drop_socket().await;
    media.emit(
        id_of(&cy_joined.participant.sid),
        MediaEvent::Disconnected {
            reason: "ICE consent expired".into(),
        },
    );
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: cy_joined.participant.sid.clone(),
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(ctx.metrics().leaves(LeaveReason::MediaDisconnected), 1);

    // A kick while suspended ends it too.
    let mut dee = Client::open(&ctx);
    let dee_sid = dee.join(&token("lobby", "dee")).await.participant.sid;
    bob.message().await; // participant_joined dee
    dee.drop_socket().await;
    ctx.kick_participant("lobby", &dee_sid).expect("kicks");
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            reason: ParticipantLeftReason::Kicked,
            ..
        })
    ));
    assert_eq!(ctx.suspended_sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_suspended_session_whose_room_goes_to_another_node_leaves_at_once() {
    let (ctx, mut media) = setup(Mode::Answer);
    let (ada, _joined, mut bob) = two_in_lobby(&ctx, &mut media).await;
    ada.drop_socket().await;
    assert_eq!(ctx.suspended_sessions(), 1);
    let start = Instant::now();
    assert!(ctx.migrate_room("lobby", "ws://node-c:7880/ws"));
    // Bob is told where the room went; ada, whom nobody can tell, leaves now, not at the window's end.
    let redirect = until(&mut bob, |m| match m {
        ServerMessage::Redirect(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(redirect.url, "ws://node-c:7880/ws");
    for _ in 0..100 {
        if ctx.suspended_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ctx.suspended_sessions(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(ctx.metrics().leaves(LeaveReason::Migrated), 2);
    assert_eq!(ctx.participant_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_resume_takes_over_a_socket_that_has_not_noticed_the_drop() {
    let (ctx, mut media) = setup(Mode::Answer);
    let (mut old, joined, mut bob) = two_in_lobby(&ctx, &mut media).await;
    let mut ada = Client::open(&ctx);
    let resumed = ada.resume(&joined.resume_token).await;
    assert_eq!(resumed.state.participant.sid, joined.participant.sid);
    match old.frame().await {
        WsFrame::Close(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1000, "resumed"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    old.finished().await;
    bob.ping(1).await;
    ada.ping(1).await;
    media.assert_no_command();
    assert_eq!(ctx.participant_count(), 2);
    assert_eq!(ctx.metrics().leaves(LeaveReason::Closed), 0);
}

#[tokio::test(start_paused = true)]
async fn suspension_is_bounded_and_ends_with_a_drain() {
    let config = SignalingConfig {
        max_suspended: 1,
        ..SignalingConfig::default()
    };
    let (ctx, mut media) = setup_with(config, Mode::Answer);
    let (ada, _, mut bob) = two_in_lobby(&ctx, &mut media).await;
    ada.drop_socket().await;
    assert_eq!(ctx.suspended_sessions(), 1);
    // The node's cap is reached: the next dropped socket leaves at once.
    let mut cy = Client::open(&ctx);
    cy.join(&token("lobby", "cy")).await;
    bob.message().await; // participant_joined cy
    cy.drop_socket().await;
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            reason: ParticipantLeftReason::Left,
            ..
        })
    ));
    assert_eq!(ctx.participant_count(), 2, "bob and suspended ada");
    // A drain ends suspended sessions.
    ctx.start_drain(Duration::from_secs(30));
    // Both follow from the drain, in either order.
    let (first, second) = (bob.message().await, bob.message().await);
    let left = |m: &ServerMessage| {
        matches!(
            m,
            ServerMessage::ParticipantLeft(ParticipantLeft {
                reason: ParticipantLeftReason::Disconnected,
                ..
            })
        )
    };
    let draining = |m: &ServerMessage| matches!(m, ServerMessage::Draining(_));
    assert!(
        (draining(&first) && left(&second)) || (left(&first) && draining(&second)),
        "{first:?} {second:?}"
    );
    assert_eq!(ctx.suspended_sessions(), 0);
    assert_eq!(ctx.participant_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_suspended_participant_keeps_its_seat_in_a_full_room() {
    let (ctx, _media) = setup(Mode::Answer);
    let spec = RoomSpec {
        settings: crate::media::RoomSettings::forward(3),
        max_participants: 2,
        empty_timeout: Duration::from_secs(60),
    };
    ctx.create_room("lobby", spec).expect("created");
    let mut ada = Client::open(&ctx);
    let joined = ada.join(&token("lobby", "ada")).await;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    ada.drop_socket().await;
    // ada's seat is still taken while she may resume.
    let mut cy = Client::open(&ctx);
    cy.json(json!({"type": "join", "protocol": 1, "token": token("lobby", "cy")}));
    cy.error(ErrorCode::RoomFull).await;
    let mut ada = Client::open(&ctx);
    let resumed = ada.resume(&joined.resume_token).await;
    assert_eq!(resumed.state.participant.sid, joined.participant.sid);
    assert_eq!(resumed.state.room.max_participants, 2);
    assert!(!resumed.media, "ada never offered: she offers now");
    ada.offer().await;
}
