//! Server-side source participants (`Signaling::admit_source`): seen by the room like any participant,
//! connected to the media worker with their packet queue, muted through the worker, kicked, and gone from
//! the worker and the room when they leave.

use super::*;
use crate::protocol::{ParticipantJoined, ParticipantLeft};
use crate::source::{SourceEnd, SourceRequest};

fn request(identity: &str) -> SourceRequest {
    SourceRequest {
        room: "radio".into(),
        identity: identity.into(),
        name: "Studio A".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_joins_is_muted_and_kicked_like_a_participant() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut bob = Client::open(&ctx);
    bob.join(&token("radio", "bob")).await;

    let mut source = ctx.admit_source(request("studio")).expect("admitted");
    match bob.message().await {
        ServerMessage::ParticipantJoined(ParticipantJoined { participant }) => {
            assert_eq!(participant.name, "Studio A");
            assert_eq!(participant.sid, source.sid());
            assert!(participant.can_publish && !participant.can_subscribe);
        }
        other => panic!("expected participant_joined, got {other:?}"),
    }
    let (_packets, queue) = mpsc::channel(4);
    source.connect(queue).await.expect("the worker takes it");
    let id = id_of(source.sid());
    match media.next().await {
        Seen::ConnectSource {
            participant,
            room,
            muted,
        } => assert_eq!((participant, room.as_str(), muted), (id, "radio", false)),
        other => panic!("expected ConnectSource, got {other:?}"),
    }

    // A moderator's mute reaches the worker.
    ctx.mute_participant("radio", source.sid(), true)
        .await
        .expect("muted");
    assert!(
        matches!(media.next().await, Seen::Mute { participant, muted: true } if participant == id)
    );

    // A kick ends it: the worker and the room see it go.
    let sid = source.sid().to_owned();
    ctx.kick_participant("radio", &sid).expect("kicked");
    let end = source.removed().await;
    assert_eq!(end, SourceEnd::Removed(LeftReason::Kicked));
    source.leave(end).await;
    assert!(matches!(media.next().await, Seen::Leave { participant } if participant == id));
    loop {
        match bob.message().await {
            ServerMessage::ParticipantLeft(ParticipantLeft { sid: left, reason }) => {
                assert_eq!(left, sid);
                assert_eq!(reason, ParticipantLeftReason::Kicked);
                break;
            }
            ServerMessage::ParticipantMuted(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Banned like a kicked participant.
    assert!(matches!(
        ctx.admit_source(request("studio")),
        Err(crate::registry::AdmitError::Banned { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_source_leaves_and_draining_refuses_new_ones() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut source = ctx.admit_source(request("studio")).expect("admitted");
    let (_packets, queue) = mpsc::channel(4);
    source.connect(queue).await.expect("the worker takes it");
    let id = id_of(source.sid());
    assert!(matches!(media.next().await, Seen::ConnectSource { .. }));
    drop(source);
    assert!(matches!(media.next().await, Seen::Leave { participant } if participant == id));
    assert_eq!(ctx.participant_count(), 0);
    ctx.set_draining();
    assert!(matches!(
        ctx.admit_source(request("studio")),
        Err(crate::registry::AdmitError::Draining)
    ));
}
