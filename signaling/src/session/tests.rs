//! Full sessions over an in-memory transport against a fake media worker, on a paused clock: timeouts
//! elapse in virtual time, so nothing here depends on the speed of the machine.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use serde_json::json;
use tokio::task::JoinHandle;

use super::*;
use crate::auth::{create_token, unix_now, ApiKeys, Claims};
use crate::media::{MediaError, MediaRouter, ParticipantId, RoomMode, SlotAssignment};
use crate::protocol::{
    Answer, Joined, MediaConnectionState, MediaState, ParticipantInfo, ParticipantJoined,
    ParticipantLeft, ParticipantMuted, RoomInfo, SharedParticipant, Slot, Slots, Speaker, Speakers,
};
use crate::registry::PresenceEvent;
use crate::{AdminError, RoomSpec, SignalingConfig};

const KEY: &str = "APItest";
const SECRET: &str = "test-secret-test-secret-test-secret!";
const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\na=ice-lite\r\n";
/// An ICE restart of [`OFFER`] as the fake worker knows it: new ICE credentials.
const RESTART_OFFER: &str = "v=0\r\no=- 4611731400430051336 3 IN IP4 127.0.0.1\r\ns=-\r\na=ice-ufrag:rst\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
const RESTART_ANSWER: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\na=ice-lite\r\na=ice-ufrag:new\r\n";
/// Far longer than any timeout a test waits for (virtual time: it costs nothing).
const GUARD: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------------
// In-memory transport

struct MemTransport {
    incoming: mpsc::UnboundedReceiver<Result<WsFrame, String>>,
    outgoing: Option<mpsc::UnboundedSender<WsFrame>>,
}

impl Stream for MemTransport {
    type Item = Result<WsFrame, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<WsFrame> for MemTransport {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: WsFrame) -> Result<(), String> {
        let outgoing = self.outgoing.as_ref().ok_or("the socket is closed")?;
        outgoing
            .send(frame)
            .map_err(|_| "the client is gone".to_owned())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.outgoing = None;
        Poll::Ready(Ok(()))
    }
}

fn transport() -> (
    MemTransport,
    mpsc::UnboundedSender<Result<WsFrame, String>>,
    mpsc::UnboundedReceiver<WsFrame>,
) {
    let (input, incoming) = mpsc::unbounded_channel();
    let (outgoing, output) = mpsc::unbounded_channel();
    let transport = MemTransport {
        incoming,
        outgoing: Some(outgoing),
    };
    (transport, input, output)
}

/// A client: the other end of a session's transport.
struct Client {
    input: Option<mpsc::UnboundedSender<Result<WsFrame, String>>>,
    output: mpsc::UnboundedReceiver<WsFrame>,
    task: JoinHandle<()>,
}

impl Client {
    fn open(ctx: &Arc<Signaling>) -> Self {
        let (transport, input, output) = transport();
        let task = tokio::spawn(run_session(transport, Arc::clone(ctx)));
        Self {
            input: Some(input),
            output,
            task,
        }
    }

    fn send(&self, frame: Result<WsFrame, String>) {
        let input = self.input.as_ref().expect("the client has not hung up");
        // The session may already have ended; a test then sees that on the output side.
        let _ = input.send(frame);
    }

    fn text(&self, text: impl Into<String>) {
        self.send(Ok(WsFrame::Text(text.into())));
    }

    fn json(&self, value: serde_json::Value) {
        self.text(value.to_string());
    }

    /// Ends the client's side of the stream, like a closed socket.
    fn hang_up(&mut self) {
        self.input = None;
    }

    async fn frame(&mut self) -> WsFrame {
        timeout(GUARD, self.output.recv())
            .await
            .expect("a frame before the guard time")
            .expect("the session sends a frame before closing")
    }

    async fn message(&mut self) -> ServerMessage {
        match self.frame().await {
            WsFrame::Text(text) => serde_json::from_str(&text).expect("a valid server message"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Expects an `error` with `code` and returns its message.
    async fn error(&mut self, code: ErrorCode) -> String {
        match self.message().await {
            ServerMessage::Error(error) => {
                assert_eq!(error.code, code, "{}", error.message);
                error.message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects a close frame with `code`, then the end of the socket and of the session task.
    async fn closed_with(mut self, code: u16) {
        match self.frame().await {
            WsFrame::Close(Some((got, _))) => assert_eq!(got, code),
            other => panic!("expected close {code}, got {other:?}"),
        }
        self.finished().await;
    }

    /// Expects the socket to end (no more frames) and the session task to finish without panicking.
    async fn finished(mut self) {
        let end = timeout(GUARD, self.output.recv())
            .await
            .expect("the socket ends");
        assert_eq!(end, None, "no frame after the end");
        timeout(GUARD, self.task)
            .await
            .expect("the session ends")
            .expect("the session does not panic");
    }

    async fn join_with(&mut self, join: serde_json::Value) -> Joined {
        self.json(join);
        match self.message().await {
            ServerMessage::Joined(joined) => joined,
            other => panic!("expected joined, got {other:?}"),
        }
    }

    async fn join(&mut self, token: &str) -> Joined {
        self.join_with(json!({"type": "join", "protocol": 1, "token": token}))
            .await
    }

    /// Proves the session is alive and has nothing else queued for the client.
    async fn ping(&mut self, id: u64) {
        self.json(json!({"type": "ping", "id": id}));
        assert_eq!(
            self.message().await,
            ServerMessage::Pong(Pong { id: id.into() })
        );
    }

    async fn offer(&mut self) {
        self.json(json!({"type": "offer", "sdp": OFFER}));
        assert_eq!(
            self.message().await,
            ServerMessage::Answer(Answer { sdp: ANSWER.into() })
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Fake media worker

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answer offers that start with `v=0`; refuse others with `BadSdp`.
    Answer,
    /// Refuse every offer with `Unavailable`.
    Unavailable,
    /// Take offers and never answer.
    Silent,
    /// Refuse every offer as the media core does a room that exists with other settings.
    Conflict,
    /// Refuse every offer as the media core does settings out of range.
    BadSettings,
}

/// A command as the worker saw it.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Connect {
        participant: ParticipantId,
        room: String,
        slots: u8,
        muted: bool,
        can_publish: bool,
        can_subscribe: bool,
    },
    Mute {
        participant: ParticipantId,
        muted: bool,
    },
    Leave {
        participant: ParticipantId,
    },
    ConnectSource {
        participant: ParticipantId,
        room: String,
        muted: bool,
    },
    RestartIce {
        participant: ParticipantId,
    },
    Position {
        participant: ParticipantId,
        position: crate::media::Position,
    },
    Deafen {
        participant: ParticipantId,
        deafened: bool,
    },
    Ptt {
        participant: ParticipantId,
        enabled: bool,
    },
    PttKey {
        participant: ParticipantId,
        down: bool,
    },
    Talk {
        participant: ParticipantId,
        target: crate::media::TalkTarget<ParticipantId>,
    },
    Volume {
        listener: ParticipantId,
        speaker: ParticipantId,
        volume: crate::media::Volume,
    },
}

struct FakeRouter {
    commands: mpsc::Sender<MediaCommand>,
    closed: Arc<Mutex<Vec<String>>>,
}

impl MediaRouter for FakeRouter {
    fn route(&self, _room: &str, _participant: ParticipantId) -> mpsc::Sender<MediaCommand> {
        self.commands.clone()
    }

    fn room_closed(&self, room: &str) {
        self.closed.lock().expect("test lock").push(room.to_owned());
    }
}

struct FakeMedia {
    seen: mpsc::UnboundedReceiver<Seen>,
    events: Arc<Mutex<HashMap<ParticipantId, mpsc::Sender<MediaEvent>>>>,
    closed: Arc<Mutex<Vec<String>>>,
}

impl FakeMedia {
    async fn next(&mut self) -> Seen {
        timeout(GUARD, self.seen.recv())
            .await
            .expect("a media command before the guard time")
            .expect("the worker runs")
    }

    fn emit(&self, participant: ParticipantId, event: MediaEvent) {
        let events = self.events.lock().expect("test lock");
        let sender = events
            .get(&participant)
            .expect("the participant is connected");
        sender.try_send(event).expect("room in the event queue");
    }

    fn closed_rooms(&self) -> Vec<String> {
        self.closed.lock().expect("test lock").clone()
    }

    fn assert_no_command(&mut self) {
        assert!(self.seen.try_recv().is_err(), "no further media command");
    }
}

fn fake_media(mode: Mode) -> (FakeRouter, FakeMedia) {
    let (commands, mut rx) = mpsc::channel(16);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let events = Arc::new(Mutex::new(HashMap::new()));
    let closed = Arc::new(Mutex::new(Vec::new()));
    let worker_events = Arc::clone(&events);
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some(command) = rx.recv().await {
            let seen = match command {
                MediaCommand::Connect {
                    room,
                    settings,
                    participant,
                    can_publish,
                    can_subscribe,
                    muted,
                    deafened: _,
                    ptt: _,
                    team: _,
                    shout: _,
                    hears_mix: _,
                    offer_sdp,
                    events,
                    reply,
                } => {
                    match mode {
                        Mode::Answer if offer_sdp.starts_with("v=0") => {
                            worker_events
                                .lock()
                                .expect("test lock")
                                .insert(participant, events);
                            let _ = reply.send(Ok(ANSWER.to_owned()));
                        }
                        Mode::Answer => {
                            let _ = reply.send(Err(MediaError::BadSdp(
                                "the offer has no audio m-line".into(),
                            )));
                        }
                        Mode::Unavailable => {
                            let _ = reply.send(Err(MediaError::Unavailable));
                        }
                        Mode::Conflict => {
                            let _ = reply.send(Err(MediaError::RoomSettingsConflict));
                        }
                        Mode::BadSettings => {
                            let _ = reply.send(Err(MediaError::BadRoomSettings(
                                crate::media::SettingsError::Slots(0),
                            )));
                        }
                        Mode::Silent => unanswered.push((reply, events)),
                    }
                    Seen::Connect {
                        participant,
                        room,
                        slots: settings.slots,
                        muted,
                        can_publish,
                        can_subscribe,
                    }
                }
                MediaCommand::RestartIce {
                    participant,
                    offer_sdp,
                    reply,
                } => {
                    // Like the media core: only an offer with new ICE credentials restarts ICE.
                    let _ = reply.send(if offer_sdp.contains("a=ice-ufrag:rst") {
                        Ok(RESTART_ANSWER.to_owned())
                    } else {
                        Err(MediaError::BadSdp(
                            "a second offer must be an ICE restart (new ICE credentials)".into(),
                        ))
                    });
                    Seen::RestartIce { participant }
                }
                MediaCommand::Mute { participant, muted } => Seen::Mute { participant, muted },
                MediaCommand::Position {
                    participant,
                    position,
                } => Seen::Position {
                    participant,
                    position,
                },
                MediaCommand::Deafen {
                    participant,
                    deafened,
                } => Seen::Deafen {
                    participant,
                    deafened,
                },
                MediaCommand::Ptt {
                    participant,
                    enabled,
                } => Seen::Ptt {
                    participant,
                    enabled,
                },
                MediaCommand::PttKey { participant, down } => Seen::PttKey { participant, down },
                MediaCommand::Talk {
                    participant,
                    target,
                } => Seen::Talk {
                    participant,
                    target,
                },
                MediaCommand::Volume {
                    listener,
                    speaker,
                    volume,
                } => Seen::Volume {
                    listener,
                    speaker,
                    volume,
                },
                MediaCommand::ConnectSource {
                    room,
                    participant,
                    muted,
                    reply,
                    ..
                } => {
                    let _ = reply.send(Ok(()));
                    Seen::ConnectSource {
                        participant,
                        room,
                        muted,
                    }
                }
                MediaCommand::Leave { participant } => {
                    worker_events
                        .lock()
                        .expect("test lock")
                        .remove(&participant);
                    Seen::Leave { participant }
                }
            };
            let _ = seen_tx.send(seen);
        }
    });
    let router = FakeRouter {
        commands,
        closed: Arc::clone(&closed),
    };
    (
        router,
        FakeMedia {
            seen,
            events,
            closed,
        },
    )
}

fn setup_with(config: SignalingConfig, mode: Mode) -> (Arc<Signaling>, FakeMedia) {
    let (router, media) = fake_media(mode);
    let keys = ApiKeys::new([(KEY, SECRET)]).expect("valid keys");
    let ctx = Signaling::new(config, keys, Arc::new(router), &prometheus::Registry::new())
        .expect("valid config");
    (Arc::new(ctx), media)
}

fn setup(mode: Mode) -> (Arc<Signaling>, FakeMedia) {
    setup_with(SignalingConfig::default(), mode)
}

// ---------------------------------------------------------------------------------------------------
// Tokens

fn claims(room: &str, identity: &str) -> Claims {
    Claims {
        iss: KEY.into(),
        sub: identity.into(),
        room: room.into(),
        exp: unix_now() + 3600,
        nbf: None,
        iat: Some(unix_now()),
        name: None,
        can_publish: true,
        can_subscribe: true,
        moderator: false,
        ptt: false,
        team: None,
        shout: false,
    }
}

fn sign(claims: &Claims) -> String {
    create_token(KEY, SECRET.as_bytes(), claims).expect("signs")
}

fn token(room: &str, identity: &str) -> String {
    sign(&claims(room, identity))
}

fn id_of(sid: &str) -> ParticipantId {
    let hex = sid.strip_prefix("PA_").expect("a sid");
    ParticipantId(u64::from_str_radix(hex, 16).expect("hex"))
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[test]
fn session_future_is_send() {
    fn assert_send<F: Send>(_: &F) {}
    struct Nowhere;
    impl MediaRouter for Nowhere {
        fn route(&self, _room: &str, _participant: ParticipantId) -> mpsc::Sender<MediaCommand> {
            mpsc::channel(1).0
        }
        fn room_closed(&self, _room: &str) {}
    }
    let ctx = Signaling::new(
        SignalingConfig::default(),
        ApiKeys::default(),
        Arc::new(Nowhere),
        &prometheus::Registry::new(),
    )
    .expect("valid config");
    let (transport, _input, _output) = transport();
    let session = run_session(transport, Arc::new(ctx));
    assert_send(&session);
}

#[tokio::test(start_paused = true)]
async fn happy_path() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let joined = ada
        .join_with(json!({"type": "join", "protocol": 1, "token": token("lobby", "ada"), "room": "lobby", "name": "Ada"}))
        .await;
    assert_eq!(joined.protocol, 1);
    assert_eq!(joined.server_version, crate::SERVER_VERSION);
    assert_eq!(
        joined.room,
        RoomInfo {
            name: "lobby".into(),
            mode: RoomMode::Forward,
            slots: 3,
            max_participants: 100
        }
    );
    let me = joined.participant;
    assert_eq!((me.identity.as_str(), me.name.as_str()), ("ada", "Ada"));
    assert!(!me.muted && me.can_publish && me.can_subscribe);
    assert!(joined.participants.is_empty());
    let id = id_of(&me.sid);

    ada.offer().await;
    assert_eq!(
        media.next().await,
        Seen::Connect {
            participant: id,
            room: "lobby".into(),
            slots: 3,
            muted: false,
            can_publish: true,
            can_subscribe: true
        }
    );

    media.emit(id, MediaEvent::Connected);
    assert_eq!(
        ada.message().await,
        ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Connected
        })
    );
    media.emit(
        id,
        MediaEvent::Speakers(vec![(ParticipantId(0x1234), 0.5), (id, 0.25)].into()),
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::Speakers(Speakers {
            speakers: vec![
                Speaker::new("PA_000000001234".into(), 0.5),
                Speaker::new(me.sid.clone(), 0.25)
            ]
        })
    );
    media.emit(id, MediaEvent::Speakers(vec![].into()));
    assert_eq!(
        ada.message().await,
        ServerMessage::Speakers(Speakers { speakers: vec![] })
    );
    media.emit(
        id,
        MediaEvent::Slots(vec![
            SlotAssignment {
                slot: 0,
                mid: "1".into(),
                participant: Some(ParticipantId(0x1234)),
                ssrc: Some(2_843_119_025),
            },
            SlotAssignment {
                slot: 1,
                mid: "2".into(),
                participant: None,
                ssrc: None,
            },
        ]),
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::Slots(Slots {
            slots: vec![
                Slot {
                    slot: 0,
                    mid: "1".into(),
                    sid: Some("PA_000000001234".into()),
                    ssrc: Some(2_843_119_025)
                },
                Slot {
                    slot: 1,
                    mid: "2".into(),
                    sid: None,
                    ssrc: None
                },
            ]
        })
    );
    ada.ping(7).await;
    assert_eq!(ctx.participant_count(), 1);

    ada.json(json!({"type": "leave"}));
    assert_eq!(
        ada.message().await,
        ServerMessage::Left(Left { reason: None })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    assert_eq!(media.next().await, Seen::Leave { participant: id });
    assert_eq!(media.closed_rooms(), vec!["lobby".to_owned()]);
    assert!(ctx.rooms().is_empty());

    let metrics = ctx.metrics();
    assert_eq!(metrics.joins(crate::metrics::JOIN_OK), 1);
    assert_eq!(metrics.join_count(), 1);
    assert_eq!(metrics.leaves(LeaveReason::Leave), 1);
    assert_eq!(metrics.sessions(), 0);
    for code in ErrorCode::ALL {
        assert_eq!(metrics.errors(code), 0, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn participants_see_each_other() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_joined = ada.join(&token("lobby", "ada")).await;
    let mut bob = Client::open(&ctx);
    let mut bob_claims = claims("lobby", "bob");
    bob_claims.name = Some("Bob".into());
    let bob_joined = bob.join(&sign(&bob_claims)).await;
    let bob_info = bob_joined.participant.clone();
    assert_eq!(bob_info.name, "Bob", "the token's name when join has none");
    assert_eq!(
        ada_joined.participant.name, "ada",
        "the identity when neither has a name"
    );
    assert_eq!(
        bob_joined.participants,
        vec![SharedParticipant::new(ada_joined.participant.clone())]
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantJoined(ParticipantJoined {
            participant: bob_info.clone()
        })
    );

    // Muting before the offer: everyone is told (bob included), the worker learns it with Connect.
    bob.json(json!({"type": "mute", "muted": true}));
    let muted = ServerMessage::ParticipantMuted(ParticipantMuted {
        sid: bob_info.sid.clone(),
        muted: true,
        by_moderator: false,
    });
    assert_eq!(bob.message().await, muted);
    assert_eq!(ada.message().await, muted);
    bob.json(json!({"type": "mute", "muted": true}));
    bob.ping(1).await; // a repeated mute changes nothing and says nothing
    bob.offer().await;
    let bob_id = id_of(&bob_info.sid);
    assert!(
        matches!(media.next().await, Seen::Connect { participant, muted: true, .. } if participant == bob_id)
    );

    // Unmuting after the offer goes to the worker too.
    bob.json(json!({"type": "mute", "muted": false}));
    let unmuted = ServerMessage::ParticipantMuted(ParticipantMuted {
        sid: bob_info.sid.clone(),
        muted: false,
        by_moderator: false,
    });
    assert_eq!(bob.message().await, unmuted);
    assert_eq!(ada.message().await, unmuted);
    assert_eq!(
        media.next().await,
        Seen::Mute {
            participant: bob_id,
            muted: false
        }
    );
    let room = ctx.room("lobby").expect("the room exists");
    assert_eq!(room.participants.len(), 2);
    assert!(!room.participants[1].muted);

    // Closing the socket is the same as leave.
    bob.hang_up();
    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: bob_info.sid.clone(),
            reason: ParticipantLeftReason::Left
        })
    );
    bob.finished().await;
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: bob_id
        }
    );
    let room = ctx.room("lobby").expect("ada is still there");
    assert_eq!(room.participants, vec![ada_joined.participant.clone()]);
    assert!(media.closed_rooms().is_empty());
    assert_eq!(ctx.metrics().leaves(LeaveReason::Closed), 1);

    ada.ping(2).await;
    ada.hang_up();
    ada.finished().await;
    assert_eq!(media.closed_rooms(), vec!["lobby".to_owned()]);
    media.assert_no_command(); // ada never offered: no Leave for her
}

/// A join right after another is told to the room's members with the joins around it, in one flush
/// [`PRESENCE_SPACING`] after the last: a burst of joins writes each member a few times a second instead
/// of once per join. An event after a quiet moment goes out at once.
#[tokio::test(start_paused = true)]
async fn presence_soon_after_a_flush_waits_for_its_spacing_and_goes_out_with_the_rest() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    let joined_sid = |m: ServerMessage| match m {
        ServerMessage::ParticipantJoined(ParticipantJoined { participant }) => participant.sid,
        other => panic!("expected participant_joined, got {other:?}"),
    };
    let mut others = Vec::new();
    let join = |name: &str| {
        let ctx = Arc::clone(&ctx);
        let token = token("lobby", name);
        async move {
            let mut client = Client::open(&ctx);
            let sid = client.join(&token).await.participant.sid;
            (client, sid)
        }
    };

    // After a quiet moment: at once.
    let (bob, bob_sid) = join("bob").await;
    let quiet = Instant::now();
    assert_eq!(joined_sid(ada.message().await), bob_sid);
    assert_eq!(
        Instant::now(),
        quiet,
        "an event after a quiet moment waits for nothing"
    );
    let flushed = Instant::now();
    others.push(bob);

    // Two more within the spacing: both at its end, in order.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (carl, carl_sid) = join("carl").await;
    let (dan, dan_sid) = join("dan").await;
    others.extend([carl, dan]);
    assert_eq!(joined_sid(ada.message().await), carl_sid);
    assert_eq!(Instant::now(), flushed + PRESENCE_SPACING);
    assert_eq!(joined_sid(ada.message().await), dan_sid);
    assert_eq!(
        Instant::now(),
        flushed + PRESENCE_SPACING,
        "in the same flush"
    );

    // Quiet again for longer than the spacing: the next one goes out at once.
    tokio::time::sleep(PRESENCE_SPACING * 2).await;
    let (erin, erin_sid) = join("erin").await;
    let quiet = Instant::now();
    assert_eq!(joined_sid(ada.message().await), erin_sid);
    assert_eq!(Instant::now(), quiet);
    others.push(erin);
    ada.ping(1).await;
}

#[tokio::test(start_paused = true)]
async fn lost_media_ends_the_session() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    ada.message().await; // participant_joined bob
    ada.offer().await;
    let ada_id = id_of(&ada_sid);
    media.next().await; // Connect

    media.emit(
        ada_id,
        MediaEvent::Disconnected {
            reason: "ICE consent expired".into(),
        },
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Disconnected
        })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: ada_sid,
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: ada_id
        }
    );
    assert_eq!(ctx.metrics().leaves(LeaveReason::MediaDisconnected), 1);
    bob.ping(1).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_drops_the_events_ends_the_session() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    ada.offer().await;
    media.next().await;
    media.events.lock().expect("test lock").remove(&id);
    assert_eq!(
        ada.message().await,
        ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Disconnected
        })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    assert_eq!(ctx.participant_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn malformed_input_is_answered_and_survived() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut client = Client::open(&ctx);
    for (text, code) in [
        ("not json", ErrorCode::BadJson),
        ("", ErrorCode::BadJson),
        ("[1,2]", ErrorCode::BadJson),
        (r#"{"type": 5}"#, ErrorCode::BadJson),
        (r#"{"no_type": "join"}"#, ErrorCode::BadJson),
        (&"[".repeat(60_000), ErrorCode::BadJson),
        (r#"{"type": "hello"}"#, ErrorCode::UnknownType),
        (r#"{"type": "joined"}"#, ErrorCode::UnknownType),
        (r#"{"type": "join"}"#, ErrorCode::BadMessage),
        (
            r#"{"type": "join", "protocol": 1e400, "token": "t"}"#,
            ErrorCode::BadJson,
        ),
        (
            r#"{"type": "join", "protocol": 1.5, "token": "t"}"#,
            ErrorCode::BadMessage,
        ),
        (r#"{"type": "ping", "id": "x"}"#, ErrorCode::BadMessage),
        (r#"{"type": "offer", "sdp": null}"#, ErrorCode::BadMessage),
        (r#"{"type": "offer", "sdp": "v=0"}"#, ErrorCode::NotJoined),
        (r#"{"type": "mute", "muted": true}"#, ErrorCode::NotJoined),
        (r#"{"type": "ping", "id": 1}"#, ErrorCode::NotJoined),
        (r#"{"type": "leave"}"#, ErrorCode::NotJoined),
        ("\u{0}\u{ffff}", ErrorCode::BadJson),
    ] {
        client.text(text);
        client.error(code).await;
    }
    client.send(Ok(WsFrame::Binary(vec![0, 1, 2])));
    client.error(ErrorCode::BinaryFrame).await;
    // WebSocket-level pings and pongs are the transport's business.
    client.send(Ok(WsFrame::Ping(vec![1])));
    client.send(Ok(WsFrame::Pong(vec![1])));
    let joined = client.join(&token("lobby", "ada")).await;
    assert_eq!(joined.room.name, "lobby");
    let metrics = ctx.metrics();
    assert_eq!(metrics.errors(ErrorCode::BadJson), 8);
    assert_eq!(metrics.errors(ErrorCode::UnknownType), 2);
    assert_eq!(metrics.errors(ErrorCode::BadMessage), 4);
    assert_eq!(metrics.errors(ErrorCode::NotJoined), 4);
    assert_eq!(metrics.errors(ErrorCode::BinaryFrame), 1);
    client.send(Ok(WsFrame::Close(Some((1000, "bye".into())))));
    client.finished().await;
    assert_eq!(ctx.participant_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn frames_are_limited_to_64_kib() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut client = Client::open(&ctx);
    client.join(&token("lobby", "ada")).await;
    let ping = r#"{"type":"ping","id":1}"#;
    let largest = format!("{ping}{}", " ".repeat(MAX_FRAME_BYTES - ping.len()));
    assert_eq!(largest.len(), MAX_FRAME_BYTES);
    client.text(largest);
    assert_eq!(
        client.message().await,
        ServerMessage::Pong(Pong { id: 1.into() })
    );

    client.text(format!(
        "{ping}{}",
        " ".repeat(MAX_FRAME_BYTES + 1 - ping.len())
    ));
    client.error(ErrorCode::FrameTooLarge).await;
    client.closed_with(1009).await;
    assert_eq!(ctx.participant_count(), 0);
    assert_eq!(ctx.metrics().leaves(LeaveReason::Error), 1);

    // A binary frame over the limit is too large before it is binary.
    let mut client = Client::open(&ctx);
    client.send(Ok(WsFrame::Binary(vec![0; MAX_FRAME_BYTES + 1])));
    client.error(ErrorCode::FrameTooLarge).await;
    client.closed_with(1009).await;
    assert_eq!(ctx.metrics().errors(ErrorCode::FrameTooLarge), 2);
}

#[tokio::test(start_paused = true)]
async fn websocket_protocol_violations_are_counted_and_closed_with_their_code() {
    // Issue 10: invalid UTF-8, bad opcodes and oversized frames ended the session with no close frame
    // and no metric.
    let (ctx, _media) = setup(Mode::Answer);
    for (violation, code) in [
        (ProtocolViolation::InvalidUtf8, 1007),
        (ProtocolViolation::BadFrame, 1002),
        (ProtocolViolation::TooLarge, 1009),
    ] {
        let mut client = Client::open(&ctx);
        client.join(&token("lobby", "ada")).await;
        client.send(Ok(WsFrame::Violation(violation)));
        client.closed_with(code).await;
        assert_eq!(ctx.metrics().ws_violations(violation), 1);
    }
    assert_eq!(ctx.participant_count(), 0);
    assert_eq!(ctx.metrics().leaves(LeaveReason::TransportError), 3);
}

/// Joins that fail fatally: the error, close 1008, no trace in the registry.
async fn refused_join(ctx: &Arc<Signaling>, join: serde_json::Value, code: ErrorCode) {
    let mut client = Client::open(ctx);
    client.json(join);
    client.error(code).await;
    client.closed_with(1008).await;
}

#[tokio::test(start_paused = true)]
async fn bad_tokens_are_refused() {
    let (ctx, _media) = setup(Mode::Answer);
    let good = claims("lobby", "ada");
    let wrong_secret =
        create_token(KEY, b"some-other-secret-some-other-secret", &good).expect("signs");
    let unknown_key = create_token("APIunknown", SECRET.as_bytes(), &good).expect("signs");
    let payload = serde_json::to_value(&good).expect("json");
    let alg_none = crate::auth::tests::forged(r#"{"alg":"none","typ":"JWT"}"#, &payload, "");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signs");
    // create_token refuses bad room names, so sign this one directly.
    let bad_room = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": KEY, "sub": "ada", "room": "bad room", "exp": unix_now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signs");
    for token in [
        "garbage".to_owned(),
        "eyJhbGciOiJIUzI1NiIs...".to_owned(),
        wrong_secret,
        unknown_key,
        alg_none,
        hs512,
        bad_room,
    ] {
        refused_join(
            &ctx,
            json!({"type": "join", "protocol": 1, "token": token}),
            ErrorCode::InvalidToken,
        )
        .await;
    }
    let expired = sign(&Claims {
        exp: unix_now() - 1,
        ..good.clone()
    });
    refused_join(
        &ctx,
        json!({"type": "join", "protocol": 1, "token": expired}),
        ErrorCode::TokenExpired,
    )
    .await;

    let metrics = ctx.metrics();
    assert_eq!(metrics.joins("invalid_token"), 7);
    assert_eq!(metrics.joins("token_expired"), 1);
    assert_eq!(metrics.errors(ErrorCode::InvalidToken), 7);
    assert_eq!(metrics.joins(crate::metrics::JOIN_OK), 0);
    assert!(ctx.rooms().is_empty());
    assert_eq!(metrics.sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn join_checks_protocol_and_room() {
    let (ctx, _media) = setup(Mode::Answer);
    let token = token("lobby", "ada");
    refused_join(
        &ctx,
        json!({"type": "join", "protocol": 2, "token": token}),
        ErrorCode::UnsupportedProtocol,
    )
    .await;
    refused_join(
        &ctx,
        json!({"type": "join", "protocol": 1, "token": token, "room": "other"}),
        ErrorCode::RoomMismatch,
    )
    .await;
    let too_long = "n".repeat(65);
    let mut client = Client::open(&ctx);
    client.json(json!({"type": "join", "protocol": 1, "token": token, "name": too_long}));
    client.error(ErrorCode::BadMessage).await;
    let joined = client
        .join_with(
            json!({"type": "join", "protocol": 1, "token": token, "room": "lobby", "name": ""}),
        )
        .await;
    assert_eq!(
        joined.participant.name, "ada",
        "an empty name falls back to the identity"
    );

    client.json(json!({"type": "join", "protocol": 1, "token": token}));
    client.error(ErrorCode::AlreadyJoined).await;
    client.ping(1).await;
    assert_eq!(ctx.participant_count(), 1);
    let metrics = ctx.metrics();
    assert_eq!(metrics.joins("unsupported_protocol"), 1);
    assert_eq!(metrics.joins("room_mismatch"), 1);
    assert_eq!(metrics.joins("already_joined"), 1);
    assert_eq!(metrics.joins(crate::metrics::JOIN_OK), 1);
}

#[tokio::test(start_paused = true)]
async fn mute_needs_can_publish() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut listener = Client::open(&ctx);
    let joined = listener
        .join(&sign(&Claims {
            can_publish: false,
            ..claims("lobby", "ear")
        }))
        .await;
    assert!(!joined.participant.can_publish);
    for muted in [true, false] {
        listener.json(json!({"type": "mute", "muted": muted}));
        listener.error(ErrorCode::Forbidden).await;
    }
    listener.offer().await;
    assert!(matches!(
        media.next().await,
        Seen::Connect {
            can_publish: false,
            ..
        }
    ));
    listener.ping(1).await;
    media.assert_no_command();
    assert_eq!(ctx.metrics().errors(ErrorCode::Forbidden), 2);
}

#[tokio::test(start_paused = true)]
async fn full_rooms_refuse_joins() {
    let config = SignalingConfig {
        default_max_participants: 1,
        ..SignalingConfig::default()
    };
    let (ctx, _media) = setup_with(config, Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    refused_join(
        &ctx,
        json!({"type": "join", "protocol": 1, "token": token("lobby", "bob")}),
        ErrorCode::RoomFull,
    )
    .await;
    let mut carl = Client::open(&ctx);
    carl.join(&token("elsewhere", "carl")).await;
    ada.ping(1).await; // nothing about the refused join reached ada
    assert_eq!(ctx.metrics().joins("room_full"), 1);
}

#[tokio::test(start_paused = true)]
async fn draining_refuses_new_joins_only() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    assert!(!ctx.is_draining());
    ctx.set_draining();
    assert!(ctx.is_draining());
    refused_join(
        &ctx,
        json!({"type": "join", "protocol": 1, "token": token("lobby", "bob")}),
        ErrorCode::Draining,
    )
    .await;
    ada.ping(1).await;
    ada.offer().await;
    assert_eq!(ctx.metrics().joins("draining"), 1);
}

#[tokio::test(start_paused = true)]
async fn offers_are_answered_once() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    ada.json(json!({"type": "offer", "sdp": "garbage"}));
    let message = ada.error(ErrorCode::BadSdp).await;
    assert!(message.contains("no audio m-line"), "{message}");
    media.next().await;
    // The client may correct its offer.
    ada.offer().await;
    media.next().await;
    // A second offer is an ICE restart of the same peer (issue 12); anything else is refused by the
    // worker, and the session carries on with its peer either way.
    let id = id_of(&ctx.room("lobby").expect("room").participants[0].sid);
    ada.json(json!({"type": "offer", "sdp": OFFER}));
    let message = ada.error(ErrorCode::BadSdp).await;
    assert!(message.contains("ICE restart"), "{message}");
    assert_eq!(media.next().await, Seen::RestartIce { participant: id });
    ada.json(json!({"type": "offer", "sdp": RESTART_OFFER}));
    assert_eq!(
        ada.message().await,
        ServerMessage::Answer(Answer {
            sdp: RESTART_ANSWER.into()
        })
    );
    assert_eq!(media.next().await, Seen::RestartIce { participant: id });
    assert_eq!(ctx.metrics().ice_restarts(), 1);
    ada.ping(1).await;
    media.assert_no_command();
    assert_eq!(ctx.metrics().errors(ErrorCode::BadSdp), 2);
    // Media events still reach the session.
    media.emit(id, MediaEvent::Connected);
    assert!(matches!(ada.message().await, ServerMessage::MediaState(_)));
}

/// Issue 11: media errors stay typed to the client; like `bad_sdp` they leave the session open and the
/// client may offer again.
#[tokio::test(start_paused = true)]
async fn room_settings_errors_have_their_own_codes() {
    for (mode, code, text) in [
        (
            Mode::Conflict,
            ErrorCode::RoomSettingsConflict,
            "the room exists with other settings",
        ),
        (
            Mode::BadSettings,
            ErrorCode::BadRoomSettings,
            "room setting out of range: slots must be 1..=16",
        ),
    ] {
        let (ctx, mut media) = setup(mode);
        let mut ada = Client::open(&ctx);
        ada.join(&token("lobby", "ada")).await;
        ada.json(json!({"type": "offer", "sdp": OFFER}));
        assert_eq!(ada.error(code).await, text);
        assert!(matches!(media.next().await, Seen::Connect { .. }));
        ada.ping(1).await;
        assert_eq!(ctx.metrics().errors(code), 1);
        assert_eq!(ctx.metrics().errors(ErrorCode::BadSdp), 0);
        assert_eq!(ctx.participant_count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn unavailable_media_is_fatal() {
    let (ctx, mut media) = setup(Mode::Unavailable);
    let mut ada = Client::open(&ctx);
    let id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    ada.json(json!({"type": "offer", "sdp": OFFER}));
    ada.error(ErrorCode::MediaUnavailable).await;
    ada.closed_with(1008).await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    assert_eq!(media.next().await, Seen::Leave { participant: id });
    assert_eq!(ctx.participant_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_offer_times_out() {
    let (ctx, mut media) = setup(Mode::Silent);
    let mut ada = Client::open(&ctx);
    let id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    let offered = Instant::now();
    ada.json(json!({"type": "offer", "sdp": OFFER}));
    // While the answer is pending the session stays responsive.
    ada.ping(1).await;
    ada.json(json!({"type": "offer", "sdp": OFFER}));
    ada.error(ErrorCode::BadMessage).await;
    ada.error(ErrorCode::MediaUnavailable).await;
    assert_eq!(offered.elapsed(), Duration::from_secs(5));
    ada.closed_with(1008).await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    assert_eq!(media.next().await, Seen::Leave { participant: id });
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_closed() {
    // Joined sessions that never offer: the offer deadline is set beyond this test's 50 s.
    let config = SignalingConfig {
        offer_deadline_ms: 120_000,
        ..SignalingConfig::default()
    };
    let (ctx, _media) = setup_with(config, Mode::Answer);
    let start = Instant::now();
    let mut ada = Client::open(&ctx);
    let ada_sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    ada.message().await; // participant_joined bob

    tokio::time::sleep(Duration::from_secs(20)).await;
    ada.ping(1).await;
    bob.ping(1).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    bob.ping(2).await; // 40 s after the start: ada's ping at 20 s keeps her in until 50 s
    assert!(
        ada.output.try_recv().is_err(),
        "ada is still connected at 40 s"
    );

    match ada.frame().await {
        WsFrame::Close(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1008, "idle_timeout"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(50));
    ada.finished().await;
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: ada_sid,
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(ctx.metrics().leaves(LeaveReason::IdleTimeout), 1);
    // A session that never joins is closed too.
    let silent = Client::open(&ctx);
    silent.closed_with(1008).await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_session_does_not_disturb_its_room() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let ada_id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    ada.offer().await;
    media.next().await;

    let mut mallory = Client::open(&ctx);
    let mallory_sid = mallory
        .join(&token("lobby", "mallory"))
        .await
        .participant
        .sid;
    for (frame, code) in [
        (WsFrame::Text("{{{".into()), ErrorCode::BadJson),
        (
            WsFrame::Text(r#"{"type":"kick","sid":"x"}"#.into()),
            ErrorCode::UnknownType,
        ),
        (
            WsFrame::Text(r#"{"type":"mute","muted":1}"#.into()),
            ErrorCode::BadMessage,
        ),
        (WsFrame::Binary(vec![0xff; 100]), ErrorCode::BinaryFrame),
        (
            WsFrame::Text(
                json!({"type": "join", "protocol": 1, "token": token("lobby", "x")}).to_string(),
            ),
            ErrorCode::AlreadyJoined,
        ),
        (
            WsFrame::Text(r#"{"type":"offer","sdp":"nonsense"}"#.into()),
            ErrorCode::BadSdp,
        ),
    ] {
        mallory.send(Ok(frame));
        mallory.error(code).await;
    }
    media.next().await; // mallory's refused Connect
    mallory.text("x".repeat(MAX_FRAME_BYTES + 1));
    mallory.error(ErrorCode::FrameTooLarge).await;
    mallory.closed_with(1009).await;

    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantJoined(ParticipantJoined {
            participant: ParticipantInfo {
                name: "mallory".into(),
                ..ParticipantInfo::sample(&mallory_sid, "mallory")
            }
        })
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: mallory_sid.clone(),
            reason: ParticipantLeftReason::Left
        })
    );
    ada.ping(1).await;
    media.emit(ada_id, MediaEvent::Connected);
    assert_eq!(
        ada.message().await,
        ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Connected
        })
    );
    // mallory's refused offer still gets its Leave; nothing touches ada on the worker.
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: id_of(&mallory_sid)
        }
    );
    media.assert_no_command();
    assert_eq!(ctx.participant_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn read_errors_end_the_session() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    ada.send(Err("connection reset".into()));
    assert_eq!(ada.output.recv().await, None, "the socket ends");
    // A dropped socket suspends the session for the resume window (see tests/resume.rs); then it leaves.
    assert_eq!(ctx.participant_count(), 1);
    assert_eq!(ctx.suspended_sessions(), 1);
    tokio::time::sleep(ctx.config().resume_window() + Duration::from_millis(1)).await;
    assert_eq!(ctx.participant_count(), 0);
    assert_eq!(ctx.suspended_sessions(), 0);
    assert_eq!(ctx.metrics().leaves(LeaveReason::TransportError), 1);
    ada.finished().await;
}

#[tokio::test(start_paused = true)]
async fn an_aborted_session_still_leaves() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    ada.offer().await;
    media.next().await;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;

    ada.task.abort();
    assert!(ada.task.await.expect_err("aborted").is_cancelled());
    assert_eq!(media.next().await, Seen::Leave { participant: id });
    assert_eq!(ctx.participant_count(), 1);
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            reason: ParticipantLeftReason::Left,
            ..
        })
    ));
    assert_eq!(ctx.metrics().leaves(LeaveReason::Aborted), 1);
    assert_eq!(ctx.metrics().sessions(), 1, "only bob's session is open");
}

#[tokio::test(start_paused = true)]
async fn closing_all_sessions() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let id = id_of(&ada.join(&token("lobby", "ada")).await.participant.sid);
    ada.offer().await;
    media.next().await;
    let idle = Client::open(&ctx);
    ctx.close_all_sessions();
    ada.closed_with(CLOSE_GOING_AWAY).await;
    idle.closed_with(CLOSE_GOING_AWAY).await;
    assert_eq!(media.next().await, Seen::Leave { participant: id });
    assert!(ctx.rooms().is_empty());
    assert!(ctx.is_draining());
    let late = Client::open(&ctx);
    late.closed_with(CLOSE_GOING_AWAY).await;
    assert_eq!(ctx.metrics().leaves(LeaveReason::Shutdown), 1);
    assert_eq!(ctx.metrics().sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped() {
    /// A transport whose sink never accepts a frame after the first `accepted`.
    struct Stuck {
        inner: MemTransport,
        accepted: usize,
    }
    impl Stream for Stuck {
        type Item = Result<WsFrame, String>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Pin::new(&mut self.inner).poll_next(cx)
        }
    }
    impl Sink<WsFrame> for Stuck {
        type Error = String;
        fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            if self.accepted == 0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn start_send(mut self: Pin<&mut Self>, frame: WsFrame) -> Result<(), String> {
            self.accepted -= 1;
            Pin::new(&mut self.inner).start_send(frame)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    let (ctx, _media) = setup(Mode::Answer);
    let (inner, input, mut output) = transport();
    let task = tokio::spawn(run_session(Stuck { inner, accepted: 1 }, Arc::clone(&ctx)));
    let _ = input.send(Ok(WsFrame::Text(
        json!({"type": "join", "protocol": 1, "token": token("lobby", "ada")}).to_string(),
    )));
    assert!(
        matches!(output.recv().await, Some(WsFrame::Text(_))),
        "joined"
    );
    let start = Instant::now();
    let _ = input.send(Ok(WsFrame::Text(r#"{"type":"ping","id":1}"#.into())));
    timeout(GUARD, task).await.expect("ends").expect("no panic");
    assert_eq!(start.elapsed(), Duration::from_secs(10), "the send timeout");
    assert_eq!(ctx.participant_count(), 0);
    assert_eq!(ctx.metrics().leaves(LeaveReason::TransportError), 1);
}

// ---------------------------------------------------------------------------------------------------
// Operators: drain notices, admin rooms, kick, mute

#[tokio::test(start_paused = true)]
async fn drain_tells_every_session_once_and_refuses_joins() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    ada.offer().await;
    media.next().await;
    let mut idle = Client::open(&ctx);
    ctx.start_drain(Duration::from_secs(30));
    for client in [&mut ada, &mut idle] {
        match client.message().await {
            ServerMessage::Draining(Draining { grace_period_secs }) => {
                assert!(
                    (29..=30).contains(&grace_period_secs),
                    "{grace_period_secs}"
                );
            }
            other => panic!("expected draining, got {other:?}"),
        }
    }
    // Once only, and the call goes on.
    ada.ping(1).await;
    // A session opened during the drain is told too, and its join is refused.
    let mut late = Client::open(&ctx);
    assert!(matches!(late.message().await, ServerMessage::Draining(_)));
    late.json(json!({"type": "join", "protocol": 1, "token": token("lobby", "bob")}));
    late.error(ErrorCode::Draining).await;
    // A second drain keeps the first deadline.
    let first = ctx.drain_deadline().expect("draining");
    ctx.start_drain(Duration::from_secs(600));
    assert_eq!(ctx.drain_deadline(), Some(first));
    ada.ping(2).await;
}

#[tokio::test(start_paused = true)]
async fn kicked_participant_is_told_and_the_others_see_kicked() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    let mut bob = Client::open(&ctx);
    let bob_sid = bob.join(&token("lobby", "bob")).await.participant.sid;
    assert!(matches!(
        ada.message().await,
        ServerMessage::ParticipantJoined(_)
    ));
    bob.offer().await;
    media.next().await;
    assert_eq!(
        ctx.kick_participant("lobby", "PA_000000000000"),
        Err(AdminError::ParticipantNotFound)
    );
    assert_eq!(
        ctx.kick_participant("nowhere", &bob_sid),
        Err(AdminError::RoomNotFound)
    );
    ctx.kick_participant("lobby", &bob_sid).expect("present");
    assert_eq!(
        bob.message().await,
        ServerMessage::Left(Left {
            reason: Some(LeftReason::Kicked)
        })
    );
    bob.closed_with(CLOSE_NORMAL).await;
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: id_of(&bob_sid)
        }
    );
    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: bob_sid,
            reason: ParticipantLeftReason::Kicked
        })
    );
    assert_eq!(ctx.metrics().leaves(LeaveReason::Kicked), 1);
}

#[tokio::test(start_paused = true)]
async fn admin_rooms_keep_their_settings_and_stay_while_empty() {
    let (ctx, _media) = setup(Mode::Answer);
    let (events_tx, mut events) = mpsc::channel(64);
    assert!(ctx.set_event_sink(events_tx));
    let spec = RoomSpec {
        settings: crate::media::RoomSettings::mix(crate::media::MixSettings::default()),
        max_participants: 2,
        empty_timeout: Duration::from_secs(60),
    };
    let created = ctx.create_room("standup", spec.clone()).expect("created");
    assert_eq!(created.origin, crate::RoomOrigin::Admin);
    assert_eq!(
        ctx.create_room("standup", spec.clone()),
        Err(AdminError::RoomExists)
    );
    // Issue 11: other settings for an existing room are refused as such, never silently ignored.
    let forward = RoomSpec {
        settings: crate::media::RoomSettings::forward(3),
        ..spec.clone()
    };
    assert_eq!(
        ctx.create_room("standup", forward),
        Err(AdminError::RoomSettingsConflict)
    );
    let louder = RoomSpec {
        settings: crate::media::RoomSettings::mix(crate::media::MixSettings {
            bitrate_bps: 64_000,
            ..crate::media::MixSettings::default()
        }),
        ..spec.clone()
    };
    assert_eq!(
        ctx.create_room("standup", louder),
        Err(AdminError::RoomSettingsConflict)
    );
    assert_eq!(
        ctx.create_room("bad name", spec.clone()),
        Err(AdminError::InvalidRoomName)
    );
    assert_eq!(ctx.metrics().rooms(RoomMode::Mix), 1);

    let mut ada = Client::open(&ctx);
    let joined = ada.join(&token("standup", "ada")).await;
    assert_eq!(joined.room.mode, RoomMode::Mix);
    assert_eq!((joined.room.slots, joined.room.max_participants), (1, 2));
    assert_eq!(ctx.metrics().participants(RoomMode::Mix), 1);
    ada.json(json!({"type": "leave"}));
    assert_eq!(
        ada.message().await,
        ServerMessage::Left(Left { reason: None })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    // Empty, but kept until its empty timeout.
    assert!(ctx.room("standup").is_some());
    let now = std::time::Instant::now();
    assert!(ctx.sweep_empty_rooms(now).is_empty());
    assert_eq!(
        ctx.sweep_empty_rooms(now + Duration::from_secs(61)),
        vec!["standup".to_owned()]
    );
    assert!(ctx.room("standup").is_none());
    assert_eq!(ctx.metrics().rooms(RoomMode::Mix), 0);
    assert_eq!(ctx.metrics().participants(RoomMode::Mix), 0);

    let names: Vec<&str> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e: crate::RoomEvent| e.name())
        .collect();
    assert_eq!(
        names,
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_finished"
        ]
    );
    // Draining: no new rooms.
    ctx.start_drain(Duration::from_secs(1));
    assert_eq!(ctx.create_room("later", spec), Err(AdminError::Draining));
}

#[tokio::test(start_paused = true)]
async fn deleting_a_room_removes_everyone_and_refuses_joins() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    ada.join(&token("doomed", "ada")).await;
    ada.offer().await;
    media.next().await;
    ctx.delete_room("doomed").expect("exists");
    // Until its participants are gone the room admits nobody (registry tests cover the refusal).
    assert!(ctx.room("doomed").expect("still there").closing);
    assert_eq!(
        ada.message().await,
        ServerMessage::Left(Left {
            reason: Some(LeftReason::RoomDeleted)
        })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    assert!(matches!(media.next().await, Seen::Leave { .. }));
    assert!(ctx.room("doomed").is_none());
    assert_eq!(media.closed_rooms(), vec!["doomed".to_owned()]);
    assert_eq!(ctx.delete_room("doomed"), Err(AdminError::RoomNotFound));
}

#[tokio::test(start_paused = true)]
async fn admin_mute_reaches_the_worker_the_room_and_the_session() {
    let (ctx, mut media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    let id = id_of(&sid);
    // Muted before the offer: the worker is told at connect time (as after the client's own `mute`; it
    // has no peer to mute before).
    let info = ctx
        .mute_participant("lobby", &sid, true)
        .await
        .expect("present");
    assert!(info.muted);
    assert_eq!(
        ada.message().await,
        ServerMessage::ParticipantMuted(ParticipantMuted {
            sid: sid.clone(),
            muted: true,
            by_moderator: true,
        })
    );
    ada.offer().await;
    assert!(matches!(
        media.next().await,
        Seen::Connect { muted: true, .. }
    ));
    // A server mute: the participant cannot unmute itself, and is told why.
    ada.json(json!({"type": "mute", "muted": false}));
    ada.error(ErrorCode::ServerMuted).await;
    media.assert_no_command();
    assert!(ctx.room("lobby").expect("exists").participants[0].server_muted);
    // The operator can.
    let info = ctx
        .mute_participant("lobby", &sid, false)
        .await
        .expect("present");
    assert!(!info.muted && !info.server_muted);
    assert_eq!(
        media.next().await,
        Seen::Mute {
            participant: id,
            muted: false
        }
    );
    assert_eq!(
        ctx.mute_participant("lobby", "PA_000000000000", true).await,
        Err(AdminError::ParticipantNotFound)
    );
}

/// Issue 11 item 3: the client's `mute` and the admin API go through one method
/// (`Signaling::set_muted`): the same messages to everyone, the same worker commands, the same state.
#[tokio::test(start_paused = true)]
async fn client_and_admin_mute_give_the_same_events_and_state() {
    /// What one path produced: (messages to bob, messages to ada, worker commands, the room's view).
    async fn run(admin: bool) -> Vec<String> {
        let (ctx, mut media) = setup(Mode::Answer);
        let mut ada = Client::open(&ctx);
        ada.join(&token("lobby", "ada")).await;
        let mut bob = Client::open(&ctx);
        let sid = bob.join(&token("lobby", "bob")).await.participant.sid;
        ada.message().await; // participant_joined
        bob.offer().await;
        media.next().await; // Connect
        let mut seen = Vec::new();
        for muted in [true, true, false] {
            if admin {
                let info = ctx
                    .mute_participant("lobby", &sid, muted)
                    .await
                    .expect("present");
                assert_eq!(info.muted, muted);
            } else {
                bob.json(json!({"type": "mute", "muted": muted}));
            }
            // Let the mute take effect (its presence event waits at most its spacing after the last
            // flush), then a ping: anything it sent arrives before the pong.
            tokio::time::sleep(PRESENCE_SPACING + Duration::from_millis(10)).await;
            for client in [&mut bob, &mut ada] {
                client.json(json!({"type": "ping", "id": 7}));
                loop {
                    match client.message().await {
                        ServerMessage::Pong(_) => break,
                        other => seen.push(format!("{other:?}")),
                    }
                }
            }
            while let Ok(command) = media.seen.try_recv() {
                seen.push(format!("{command:?}"));
            }
            let room = ctx.room("lobby").expect("the room exists");
            seen.push(format!("{:?}", room.participants));
        }
        seen
    }
    let client = run(false).await;
    let admin = run(true).await;
    // Ids differ between the two runs: compare with them masked.
    let mask = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|line| {
                let mut out = String::new();
                let mut rest = line.as_str();
                while let Some(at) = rest.find("PA_").or_else(|| rest.find("ParticipantId(")) {
                    out.push_str(&rest[..at]);
                    out.push_str("<id>");
                    let skip = if rest[at..].starts_with("PA_") { 3 } else { 14 };
                    rest = rest[at + skip..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
                }
                out.push_str(rest);
                out
            })
            .collect()
    };
    let client = mask(client);
    // The admin's is a server mute: the same, but marked as such.
    let admin: Vec<String> = mask(admin)
        .into_iter()
        .map(|l| {
            l.replace("by_moderator: true", "by_moderator: false")
                .replace("server_muted: true", "server_muted: false")
        })
        .collect();
    assert_eq!(admin, client);
    // And what they are: the muted event to both, one worker command per change, the state.
    assert_eq!(
        client
            .iter()
            .filter(|l| l.contains("ParticipantMuted"))
            .count(),
        4,
        "{client:#?}"
    );
    assert_eq!(
        client.iter().filter(|l| l.starts_with("Mute")).count(),
        2,
        "{client:#?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Issue 10 items 3 and 4: deadlines, identity replacement, kick bans

#[tokio::test(start_paused = true)]
async fn a_socket_that_only_pings_is_closed_at_the_join_deadline() {
    let (ctx, _media) = setup(Mode::Answer);
    let start = Instant::now();
    let mut idler = Client::open(&ctx);
    // WebSocket pings every 2 s keep the idle timeout at bay but do not move the join deadline (10 s).
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        idler.send(Ok(WsFrame::Ping(b"still here".to_vec())));
    }
    let pinging = async {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            idler.send(Ok(WsFrame::Ping(Vec::new())));
        }
    };
    tokio::select! {
        () = pinging => unreachable!("the pinging loop never ends"),
        () = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    assert_eq!(start.elapsed(), Duration::from_secs(11));
    match idler.frame().await {
        WsFrame::Close(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1008, "join_timeout"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    idler.finished().await;
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::JoinTimeout), 1);
    assert_eq!(ctx.metrics().sessions(), 0);
    // A session that joins in time is not affected by the join deadline.
    let mut ada = Client::open(&ctx);
    tokio::time::sleep(Duration::from_secs(9)).await;
    ada.join(&token("lobby", "ada")).await;
    ada.offer().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ada.ping(1).await;
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::JoinTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn a_joined_session_that_never_offers_is_closed_at_the_offer_deadline() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    bob.offer().await;
    let mut squatter = Client::open(&ctx);
    let joined_at = Instant::now();
    let sid = squatter
        .join(&token("lobby", "squatter"))
        .await
        .participant
        .sid;
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantJoined(_)
    ));
    // Protocol pings every 5 s (and bob's too, to keep him idle-free): the offer deadline (30 s) holds.
    for id in 0..5 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        squatter.ping(id).await;
        bob.ping(id).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    match squatter.frame().await {
        WsFrame::Close(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1008, "offer_timeout"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(joined_at.elapsed(), Duration::from_secs(30));
    squatter.finished().await;
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid,
            reason: ParticipantLeftReason::Disconnected
        })
    );
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::OfferTimeout), 1);
    assert_eq!(ctx.metrics().leaves(LeaveReason::OfferTimeout), 1);
    // Bob offered at once: the deadline no longer applies to him.
    tokio::time::sleep(Duration::from_secs(5)).await;
    bob.ping(9).await;
}

#[tokio::test(start_paused = true)]
async fn a_second_join_with_the_same_identity_replaces_the_first() {
    let config = SignalingConfig {
        default_max_participants: 2,
        ..SignalingConfig::default()
    };
    let (ctx, mut media) = setup_with(config, Mode::Answer);
    let mut first = Client::open(&ctx);
    let first_sid = first.join(&token("lobby", "ada")).await.participant.sid;
    first.offer().await;
    media.next().await;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    bob.offer().await;
    media.next().await;
    assert!(matches!(
        first.message().await,
        ServerMessage::ParticipantJoined(_)
    ));
    // The room is full, but the same identity takes its own seat back.
    let mut second = Client::open(&ctx);
    let joined = second.join(&token("lobby", "ada")).await;
    assert_ne!(joined.participant.sid, first_sid);
    assert_eq!(joined.participants.len(), 1, "bob only: {joined:?}");
    assert_eq!(
        first.message().await,
        ServerMessage::Left(Left {
            reason: Some(LeftReason::Replaced)
        })
    );
    match first.frame().await {
        WsFrame::Close(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (CLOSE_NORMAL, "replaced"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    first.finished().await;
    assert_eq!(
        media.next().await,
        Seen::Leave {
            participant: id_of(&first_sid)
        }
    );
    assert_eq!(
        bob.message().await,
        ServerMessage::ParticipantLeft(ParticipantLeft {
            sid: first_sid,
            reason: ParticipantLeftReason::Replaced
        })
    );
    assert!(matches!(
        bob.message().await,
        ServerMessage::ParticipantJoined(_)
    ));
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::IdentityReplaced), 1);
    assert_eq!(ctx.metrics().leaves(LeaveReason::Replaced), 1);
    assert_eq!(ctx.participant_count(), 2);
    second.offer().await;
    bob.ping(1).await;
}

#[tokio::test(start_paused = true)]
async fn a_kicked_identity_cannot_rejoin_during_its_ban() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let sid = ada.join(&token("lobby", "ada")).await.participant.sid;
    ctx.kick_participant("lobby", &sid).expect("present");
    assert_eq!(
        ada.message().await,
        ServerMessage::Left(Left {
            reason: Some(LeftReason::Kicked)
        })
    );
    ada.closed_with(CLOSE_NORMAL).await;
    // The same token again is refused (fatal: the socket closes with 1008).
    let mut again = Client::open(&ctx);
    again.json(json!({"type": "join", "protocol": 1, "token": token("lobby", "ada")}));
    let message = again.error(ErrorCode::Banned).await;
    assert!(message.contains("may rejoin in"), "{message}");
    again.closed_with(1008).await;
    assert_eq!(ctx.metrics().joins("banned"), 1);
    assert_eq!(ctx.metrics().limit_hits(SessionLimit::Banned), 1);
    // Others may join the room, and ada another room.
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    let mut elsewhere = Client::open(&ctx);
    elsewhere.join(&token("other", "ada")).await;
}

#[tokio::test(start_paused = true)]
async fn joined_carries_turn_credentials_when_configured() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut ada = Client::open(&ctx);
    let joined = ada.join(&token("lobby", "ada")).await;
    assert!(joined.ice_servers.is_empty(), "TURN is off by default");
    assert_eq!(ctx.metrics().turn_credentials_issued(), 0);

    let turn = crate::TurnConfig {
        urls: vec![
            "turn:turn.example.com:3478?transport=udp".into(),
            "turns:turn.example.com:443?transport=tcp".into(),
        ],
        secret: "turn-shared-secret-of-the-test".into(),
        credential_ttl_s: 600,
    };
    let config = SignalingConfig {
        turn: turn.clone(),
        ..SignalingConfig::default()
    };
    let (ctx, _media) = setup_with(config, Mode::Answer);
    let before = crate::auth::unix_now();
    let mut bob = Client::open(&ctx);
    let joined = bob.join(&token("lobby", "bob")).await;
    let after = crate::auth::unix_now();
    let [server] = joined.ice_servers.as_slice() else {
        panic!("one ICE server entry: {:?}", joined.ice_servers)
    };
    assert_eq!(server.urls, turn.urls);
    let (expiry, user) = server.username.split_once(':').expect("expiry:user");
    assert_eq!(user, joined.participant.sid);
    let expiry: u64 = expiry.parse().expect("unix expiry");
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry}");
    let (_, credential) = crate::turn::credential(&turn.secret, user, expiry);
    assert_eq!(server.credential, credential);
    assert_eq!(ctx.metrics().turn_credentials_issued(), 1);
}

/// Skips messages until one matches `pick`.
async fn until<T>(client: &mut Client, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(client.message().await) {
            return found;
        }
    }
}

mod resume;

#[tokio::test(start_paused = true)]
async fn positions_are_checked_rate_limited_and_reach_the_worker() {
    use crate::media::{Position, SpatialSettings};
    use crate::metrics::PositionResult;
    use crate::protocol::{Positions, SpeakerPosition};

    // A room without positional voice refuses positions.
    let (ctx, _media) = setup(Mode::Answer);
    let mut flat = Client::open(&ctx);
    flat.join(&token("lobby", "ada")).await;
    flat.json(json!({"type": "position", "x": 1, "y": 2, "z": 0}));
    assert!(flat
        .error(ErrorCode::BadPosition)
        .await
        .contains("positional"));

    let config = SignalingConfig {
        default_spatial: Some(SpatialSettings::default()),
        ..SignalingConfig::default()
    };
    let (ctx, mut media) = setup_with(config, Mode::Answer);
    let mut ada = Client::open(&ctx);
    let sid = ada.join(&token("arena", "ada")).await.participant.sid;
    let id = id_of(&sid);
    // Before the offer: kept, and sent to the worker after the answer.
    ada.json(json!({"type": "position", "x": 1.5, "y": 2, "z": 0, "yaw_deg": 90}));
    ada.ping(1).await;
    ada.offer().await;
    assert!(matches!(media.next().await, Seen::Connect { .. }));
    let first = Position::new(1.5, 2.0, 0.0, 90.0).expect("valid");
    assert_eq!(
        media.next().await,
        Seen::Position {
            participant: id,
            position: first
        }
    );
    // Too soon after the last one: dropped and counted, no reply.
    ada.json(json!({"type": "position", "x": 3, "y": 2, "z": 0}));
    ada.ping(2).await;
    media.assert_no_command();
    // Garbage: typed errors, nothing reaches the worker, the session carries on.
    tokio::time::advance(Duration::from_millis(150)).await;
    for bad in [
        json!({"type": "position", "x": 2e6, "y": 0, "z": 0}),
        json!({"type": "position", "x": 0, "y": -1e300, "z": 0}),
    ] {
        ada.json(bad);
        assert!(ada.error(ErrorCode::BadPosition).await.contains("within"));
    }
    ada.text(r#"{"type": "position", "x": 1e999, "y": 0, "z": 0}"#);
    ada.error(ErrorCode::BadJson).await;
    ada.json(json!({"type": "position", "x": "1", "y": 0, "z": 0}));
    ada.error(ErrorCode::BadMessage).await;
    media.assert_no_command();
    // 100 ms after the last accepted one: taken.
    ada.json(json!({"type": "position", "x": 4, "y": 5, "z": 6}));
    assert_eq!(
        media.next().await,
        Seen::Position {
            participant: id,
            position: Position::new(4.0, 5.0, 6.0, 0.0).expect("valid")
        }
    );
    let metrics = ctx.metrics();
    assert_eq!(metrics.positions(PositionResult::Accepted), 2);
    assert_eq!(metrics.positions(PositionResult::RateLimited), 1);
    assert_eq!(metrics.positions(PositionResult::Refused), 2);

    // What the worker reports reaches the client as `positions`.
    let other = ParticipantId(0xabc);
    media.emit(id, MediaEvent::Positions(vec![(other, first)]));
    assert_eq!(
        ada.message().await,
        ServerMessage::Positions(Positions {
            positions: vec![SpeakerPosition {
                sid: "PA_000000000abc".into(),
                x: 1.5,
                y: 2.0,
                z: 0.0,
                yaw_deg: 90.0
            }]
        })
    );
}

mod moderation;

mod cluster;

mod source;

mod talk;

// ---------------------------------------------------------------------------------------------------
// Presence bursts

/// A sink that logs what it is asked to do: each frame's text, and `flush`.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
}

impl Sink<WsFrame> for Recorder {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: WsFrame) -> Result<(), String> {
        let entry = match frame {
            WsFrame::Text(text) => text.to_string(),
            other => format!("{other:?}"),
        };
        self.log.push(entry);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.log.push("flush".into());
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// The sids of the `participant_left` frames in `log`, and the number of flushes.
fn lefts_and_flushes(log: &[String]) -> (Vec<String>, usize) {
    let mut sids = Vec::new();
    let mut flushes = 0;
    for entry in log {
        if entry == "flush" {
            flushes += 1;
            continue;
        }
        match serde_json::from_str(entry).expect("a server message") {
            ServerMessage::ParticipantLeft(ParticipantLeft { sid, .. }) => sids.push(sid),
            other => panic!("expected participant_left, got {other:?}"),
        }
    }
    (sids, flushes)
}

#[tokio::test(start_paused = true)]
async fn queued_presence_events_go_out_together_in_order_and_none_is_lost() {
    let (ctx, _media) = setup(Mode::Answer);
    let mut wire = Wire {
        transport: Recorder::default(),
        ctx,
        send_timeout: Duration::from_secs(5),
    };
    let sid = |i: usize| format!("PA_{i:012x}");
    let left = |i: usize| {
        Presence::new(PresenceEvent::Left {
            sid: sid(i),
            reason: ParticipantLeftReason::Left,
        })
    };
    let (queue, mut queued) = mpsc::channel(PRESENCE_BATCH * 2);
    for i in 1..PRESENCE_BATCH + 5 {
        queue.try_send(left(i)).expect("room in the queue");
    }

    // A burst: the event in hand and the queued ones up to the batch, in order, then one flush.
    let fed = wire
        .send_presence(left(0), &mut queued)
        .await
        .expect("written");
    assert_eq!(
        fed, PRESENCE_BATCH,
        "a full batch: the session sends the rest without a wait"
    );
    let (sids, flushes) = lefts_and_flushes(&wire.transport.log);
    assert_eq!(sids, (0..PRESENCE_BATCH).map(sid).collect::<Vec<_>>());
    assert_eq!(flushes, 1);
    assert_eq!(wire.transport.log.last().map(String::as_str), Some("flush"));
    // What did not fit stays queued for the next wake-up.
    assert_eq!(queued.len(), 5);

    wire.transport.log.clear();
    let next = queued.try_recv().expect("still queued");
    wire.send_presence(next, &mut queued)
        .await
        .expect("written");
    let (sids, flushes) = lefts_and_flushes(&wire.transport.log);
    assert_eq!(
        sids,
        (PRESENCE_BATCH..PRESENCE_BATCH + 5)
            .map(sid)
            .collect::<Vec<_>>()
    );
    assert_eq!(flushes, 1);

    // An event alone goes out at once.
    wire.transport.log.clear();
    wire.send_presence(left(99), &mut queued)
        .await
        .expect("written");
    assert_eq!(lefts_and_flushes(&wire.transport.log), (vec![sid(99)], 1));
}
