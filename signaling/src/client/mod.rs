//! A typed client of the signaling protocol (docs/protocol.md) over a WebSocket, built on the same
//! message types the server uses ([`crate::protocol`]); feature `client`.
//!
//! The end-to-end tests and the load tester speak to the server through it, and it is the base of a
//! native client SDK. [`Client::join`], [`Client::offer`] and [`Client::leave_and_wait`] send a request and
//! wait for its reply, turning an `error` reply into [`ClientError::Server`]; [`Client::recv`] and
//! [`Client::wait_for`] give every other server message (events) as a typed [`ServerMessage`].

mod error;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use error::ClientError;
/// A raw WebSocket frame, for sending what a well-behaved client would not (protocol tests).
pub use tokio_tungstenite::tungstenite::Message as Frame;

use crate::media::{TalkTarget, Volume};
use crate::protocol::{
    Answer, ClientMessage, Join, Joined, Leave, Left, Moderate, ModerateAction, Mute, Offer, Ping,
    Ptt, PttKey, ServerMessage, SetVolume, Talk, PROTOCOL_VERSION,
};

/// The close frame the server ended the session with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

/// What a client's WebSocket reads at most per system call. tungstenite zero-fills the free part of its
/// read buffer before every read, and its default buffer is 128 KiB: a client receiving a stream of small
/// events spent more time in that `memset` than in anything else (the load tester's media thread at 500
/// participants joining, issue 15). Signaling messages are small; a larger one takes more reads.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The WebSocket settings of every client built on this crate (and of the load tester's raw sessions).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// The most `redirect`s in a row [`Client::connect_and_join`] follows.
pub const MAX_REDIRECTS: usize = 3;

/// A session joined by [`Client::connect_and_join`]: the client, its `joined`, and the URL of the node
/// that admitted it (after any redirects; a `resume` goes there).
pub struct JoinedSession {
    pub client: Client,
    pub joined: Joined,
    pub url: String,
}

/// One signaling session with a server.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Set once the socket ended: the server's close frame, if it sent one.
    ended: Option<Option<Close>>,
}

impl Client {
    /// Open a WebSocket to `url` (`ws://host:port/ws`).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(websocket_config()), false)
                .await?;
        Ok(Client { ws, ended: None })
    }

    /// Connect to `url` and join, following the cluster's `redirect`s (at most [`MAX_REDIRECTS`] in a row)
    /// to the node that owns the room: every SDK built on this client joins through here, so a room
    /// re-placed after its node died is found again from the same entry URL.
    pub async fn connect_and_join(
        url: &str,
        token: &str,
        room: Option<&str>,
        name: Option<&str>,
        timeout: Duration,
    ) -> Result<JoinedSession, ClientError> {
        Client::connect_and_join_as(url, &join_message(token, room, name), timeout).await
    }

    /// [`Client::connect_and_join`] with a whole `join` message (a team, listen-only).
    pub async fn connect_and_join_as(
        url: &str,
        join: &Join,
        timeout: Duration,
    ) -> Result<JoinedSession, ClientError> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut client = Client::connect(&url).await?;
            match client.join_as(join.clone(), timeout).await {
                Ok(joined) => {
                    return Ok(JoinedSession {
                        client,
                        joined,
                        url,
                    })
                }
                Err(ClientError::Redirected(redirect)) => {
                    client.close().await;
                    url = redirect.url;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::RedirectLoop(MAX_REDIRECTS + 1, url))
    }

    /// Send one message.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(message).map_err(|e| ClientError::Decode {
            reason: e.to_string(),
            text: format!("{message:?}"),
        })?;
        self.send_frame(Frame::text(text)).await
    }

    /// Send a raw frame (malformed JSON, binary, ping, …): for testing how the server copes.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.ws.send(frame).await?;
        Ok(())
    }

    /// The next server message; `None` once the socket has ended (see [`Client::close_frame`]).
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        if self.ended.is_some() {
            return Ok(None);
        }
        loop {
            match self.ws.next().await {
                None => {
                    self.ended = Some(None);
                    return Ok(None);
                }
                Some(Ok(Frame::Close(frame))) => {
                    self.ended = Some(frame.map(|f| Close {
                        code: u16::from(f.code),
                        reason: f.reason.as_str().to_owned(),
                    }));
                    return Ok(None);
                }
                Some(Ok(Frame::Text(text))) => {
                    return serde_json::from_str(text.as_str()).map(Some).map_err(|e| {
                        ClientError::Decode {
                            reason: e.to_string(),
                            text: text.as_str().to_owned(),
                        }
                    });
                }
                // Pings are answered by tungstenite; nothing else carries a message.
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Receive until `pick` takes a message (others are skipped), within `timeout`; `what` names the
    /// awaited message in the errors.
    pub async fn wait_for<T>(
        &mut self,
        what: &'static str,
        timeout: Duration,
        mut pick: impl FnMut(ServerMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| ClientError::Timeout(what))??
                .ok_or(ClientError::Closed(what))?;
            if let Some(picked) = pick(message) {
                return Ok(picked);
            }
        }
    }

    /// Wait for the reply `pick` takes, failing on an `error` message (events are skipped).
    async fn reply<T>(
        &mut self,
        what: &'static str,
        timeout: Duration,
        mut pick: impl FnMut(ServerMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        let picked = self
            .wait_for(what, timeout, |m| match m {
                ServerMessage::Error(e) => Some(Err(e)),
                other => pick(other).map(Ok),
            })
            .await?;
        picked.map_err(ClientError::Server)
    }

    /// Join with `token` (the first message of a session); `room`, if given, must be the token's. The
    /// `joined` reply (with the TURN servers and credentials in `ice_servers` when the server has TURN),
    /// [`ClientError::Server`] with the refusal, or [`ClientError::Redirected`] from a node of a cluster
    /// that does not host the room ([`Client::connect_and_join`] follows it).
    pub async fn join(
        &mut self,
        token: &str,
        room: Option<&str>,
        name: Option<&str>,
        timeout: Duration,
    ) -> Result<Joined, ClientError> {
        self.join_as(join_message(token, room, name), timeout).await
    }

    /// [`Client::join`] with a whole `join` message (a team, listen-only).
    pub async fn join_as(&mut self, join: Join, timeout: Duration) -> Result<Joined, ClientError> {
        self.send(&ClientMessage::Join(join)).await?;
        self.reply("joined", timeout, |m| match m {
            ServerMessage::Joined(joined) => Some(Ok(joined)),
            ServerMessage::Redirect(redirect) => Some(Err(redirect)),
            _ => None,
        })
        .await?
        .map_err(ClientError::Redirected)
    }

    /// Send an SDP offer; the server's answer.
    pub async fn offer(&mut self, sdp: &str, timeout: Duration) -> Result<Answer, ClientError> {
        self.send(&ClientMessage::Offer(Offer {
            sdp: sdp.to_owned(),
        }))
        .await?;
        self.reply("answer", timeout, |m| match m {
            ServerMessage::Answer(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    /// Mute or unmute the microphone (the server tells the room).
    pub async fn mute(&mut self, muted: bool) -> Result<(), ClientError> {
        self.send(&ClientMessage::Mute(Mute { muted })).await
    }

    /// Keepalive; the server answers with `pong` carrying `id`.
    /// Turn push-to-talk on or off (no reply; `participant_updated` follows a change).
    pub async fn ptt(&mut self, enabled: bool) -> Result<(), ClientError> {
        self.send(&ClientMessage::Ptt(Ptt { enabled })).await
    }

    /// The push-to-talk key went down or up (no reply).
    pub async fn ptt_key(&mut self, down: bool) -> Result<(), ClientError> {
        self.send(&ClientMessage::PttKey(PttKey { down })).await
    }

    /// Whom our voice is for: the room, our team, or a whisper to sids of the room (no reply; a refusal
    /// arrives as `error` `bad_target`).
    pub async fn talk(&mut self, target: TalkTarget<String>) -> Result<(), ClientError> {
        self.send(&ClientMessage::Talk(Talk { target })).await
    }

    /// How loud we hear `sid` (no reply; the server applies it in a mixed room).
    pub async fn volume(&mut self, sid: &str, volume: Volume) -> Result<(), ClientError> {
        let message = ClientMessage::Volume(SetVolume {
            sid: sid.to_owned(),
            volume,
        });
        self.send(&message).await
    }

    /// A moderation request on the participant `sid` (no reply; its effects arrive as events, a refusal
    /// as `error`). `room` is the destination of [`ModerateAction::Move`].
    pub async fn moderate(
        &mut self,
        action: ModerateAction,
        sid: &str,
        room: Option<&str>,
    ) -> Result<(), ClientError> {
        let message = ClientMessage::Moderate(Moderate {
            action,
            sid: sid.to_owned(),
            room: room.map(str::to_owned),
        });
        self.send(&message).await
    }

    pub async fn ping(&mut self, id: u64) -> Result<(), ClientError> {
        self.send(&ClientMessage::Ping(Ping { id: id.into() }))
            .await
    }

    /// Ask to leave, without waiting for the confirmation.
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        self.send(&ClientMessage::Leave(Leave {})).await
    }

    /// Leave and wait for the server's `left`.
    pub async fn leave_and_wait(&mut self, timeout: Duration) -> Result<Left, ClientError> {
        self.leave().await?;
        self.reply("left", timeout, |m| match m {
            ServerMessage::Left(left) => Some(left),
            _ => None,
        })
        .await
    }

    /// Skip messages until the socket ends, within `timeout`: the server's close frame (`None` if the
    /// socket ended without one or failed).
    pub async fn close_frame(&mut self, timeout: Duration) -> Result<Option<Close>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ended) = &self.ended {
                return Ok(ended.clone());
            }
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Err(ClientError::Timeout("the close frame")),
                Ok(Err(ClientError::WebSocket(_))) => return Ok(None),
                // Messages on the way to the close are skipped, whatever they are.
                Ok(_) => continue,
            }
        }
    }

    /// Close the WebSocket (without leaving first: the server treats it as a disconnect).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The protocol's name (`type`) of a server message.
pub fn message_type(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Joined(_) => "joined",
        ServerMessage::Resumed(_) => "resumed",
        ServerMessage::Answer(_) => "answer",
        ServerMessage::ParticipantJoined(_) => "participant_joined",
        ServerMessage::ParticipantLeft(_) => "participant_left",
        ServerMessage::ParticipantMuted(_) => "participant_muted",
        ServerMessage::ParticipantUpdated(_) => "participant_updated",
        ServerMessage::Moved(_) => "moved",
        ServerMessage::MediaState(_) => "media_state",
        ServerMessage::Speakers(_) => "speakers",
        ServerMessage::DominantSpeaker(_) => "dominant_speaker",
        ServerMessage::Slots(_) => "slots",
        ServerMessage::Positions(_) => "positions",
        ServerMessage::Pong(_) => "pong",
        ServerMessage::Left(_) => "left",
        ServerMessage::Draining(_) => "draining",
        ServerMessage::Redirect(_) => "redirect",
        ServerMessage::Error(_) => "error",
    }
}

/// A `join` of this protocol version with `token`, and `room` and `name` if given.
pub fn join_message(token: &str, room: Option<&str>, name: Option<&str>) -> Join {
    Join {
        protocol: PROTOCOL_VERSION,
        token: token.to_owned(),
        room: room.map(str::to_owned),
        name: name.map(str::to_owned),
        team: None,
        listen_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ErrorCode};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    const SECOND: Duration = Duration::from_secs(1);

    const JOINED: &str = r#"{"type": "joined", "protocol": 1, "server_version": "0.1.0",
        "participant": {"sid": "PA_1", "identity": "ada", "name": "Ada", "muted": false,
                        "can_publish": true, "can_subscribe": true},
        "room": {"name": "lobby", "mode": "forward", "slots": 3, "max_participants": 100},
        "participants": [], "resume_token": "t", "resume_window_ms": 15000}"#;
    const BOB_JOINED: &str = r#"{"type": "participant_joined", "participant": {"sid": "PA_2",
        "identity": "bob", "name": "Bob", "muted": false, "can_publish": true, "can_subscribe": true}}"#;

    /// A server that answers each client message it reads with the next of `replies` (each a list of
    /// frames), then closes with 1000 "bye"; what it read comes back through the join handle.
    async fn server(
        replies: Vec<Vec<&'static str>>,
    ) -> (String, tokio::task::JoinHandle<Vec<ClientMessage>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/ws", listener.local_addr().expect("bound"));
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp)
                .await
                .expect("handshake");
            let mut read = Vec::new();
            for frames in replies {
                let Some(Ok(Frame::Text(text))) = ws.next().await else {
                    break;
                };
                read.push(parse_client(text.as_str()).expect("a client message"));
                for frame in frames {
                    ws.send(Frame::text(frame)).await.expect("send");
                }
            }
            let _ = ws
                .send(Frame::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                })))
                .await;
            read
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_session_joins_offers_mutes_and_leaves_with_typed_messages() {
        let (url, server) = server(vec![
            vec![JOINED],
            vec![BOB_JOINED, r#"{"type": "answer", "sdp": "v=0 answer"}"#],
            vec![r#"{"type": "participant_muted", "sid": "PA_1", "muted": true}"#],
            vec![r#"{"type": "left"}"#],
        ])
        .await;
        let mut client = Client::connect(&url).await.expect("connect");
        let joined = client
            .join("tok", Some("lobby"), Some("Ada"), SECOND)
            .await
            .expect("joined");
        assert_eq!(joined.room.name, "lobby");
        assert_eq!(joined.room.slots, 3);
        assert!(joined.ice_servers.is_empty(), "no TURN in this joined");
        // The event before the answer is skipped by `offer` (a caller that wants events uses recv).
        let answer = client.offer("v=0 offer", SECOND).await.expect("answer");
        assert_eq!(answer.sdp, "v=0 answer");
        client.mute(true).await.expect("mute");
        let muted = client
            .wait_for("participant_muted", SECOND, |m| match m {
                ServerMessage::ParticipantMuted(p) => Some(p),
                _ => None,
            })
            .await
            .expect("muted event");
        assert!(muted.muted);
        let left = client.leave_and_wait(SECOND).await.expect("left");
        assert_eq!(left.reason, None);
        assert_eq!(
            client.close_frame(SECOND).await.expect("close"),
            Some(Close {
                code: 1000,
                reason: "bye".into()
            })
        );
        assert!(client.recv().await.expect("ended").is_none());
        let read = server.await.expect("server");
        assert_eq!(
            read,
            vec![
                ClientMessage::Join(Join {
                    protocol: PROTOCOL_VERSION,
                    token: "tok".into(),
                    room: Some("lobby".into()),
                    name: Some("Ada".into()),
                    team: None,
                    listen_only: false,
                }),
                ClientMessage::Offer(Offer {
                    sdp: "v=0 offer".into()
                }),
                ClientMessage::Mute(Mute { muted: true }),
                ClientMessage::Leave(Leave {}),
            ]
        );
    }

    #[tokio::test]
    async fn an_error_reply_is_a_typed_server_error_and_a_close_ends_the_wait() {
        let (url, _server) = server(vec![vec![
            r#"{"type": "error", "code": "room_full", "message": "the room is full"}"#,
        ]])
        .await;
        let mut client = Client::connect(&url).await.expect("connect");
        match client.join("tok", None, None, SECOND).await {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::RoomFull);
                assert_eq!(e.message, "the room is full");
            }
            other => panic!("expected a server error, got {other:?}"),
        }
        match client.offer("v=0", SECOND).await {
            Err(ClientError::Closed("answer")) | Err(ClientError::WebSocket(_)) => {}
            other => panic!("expected the socket closed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn silence_times_out_and_a_foreign_frame_is_a_decode_error() {
        let (url, _server) = server(vec![vec![], vec![r#"{"type": "teleported"}"#]]).await;
        let mut client = Client::connect(&url).await.expect("connect");
        client.ping(7).await.expect("ping");
        match client
            .wait_for("pong", Duration::from_millis(50), |_| Some(()))
            .await
        {
            Err(ClientError::Timeout("pong")) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        client.ping(8).await.expect("ping");
        assert!(matches!(
            client.recv().await,
            Err(ClientError::Decode { text, .. }) if text.contains("teleported")
        ));
    }

    #[tokio::test]
    async fn a_redirect_is_followed_to_the_node_that_owns_the_room() {
        let (owner, owner_read) = server(vec![vec![JOINED]]).await;
        let redirect: &'static str = Box::leak(
            format!(r#"{{"type": "redirect", "url": "{owner}", "room": "lobby"}}"#)
                .into_boxed_str(),
        );
        let (entry, entry_read) = server(vec![vec![redirect]]).await;
        let session = Client::connect_and_join(&entry, "tok", Some("lobby"), None, SECOND)
            .await
            .expect("joined at the owner");
        assert_eq!(session.url, owner);
        assert_eq!(session.joined.room.name, "lobby");
        // The same join went to both nodes.
        let entry_read = entry_read.await.expect("entry server");
        let owner_read = owner_read.await.expect("owner server");
        assert_eq!(entry_read, owner_read);
        assert!(matches!(entry_read[0], ClientMessage::Join(_)));
    }

    #[tokio::test]
    async fn redirects_in_a_loop_are_followed_only_a_few_times() {
        // Each node redirects to the next; the chain is longer than a client follows.
        let mut next: Option<String> = None;
        let mut first = String::new();
        for _ in 0..=MAX_REDIRECTS + 1 {
            let frames = match &next {
                Some(url) => vec![&*Box::leak(
                    format!(r#"{{"type": "redirect", "url": "{url}", "room": "lobby"}}"#)
                        .into_boxed_str(),
                )],
                None => vec![JOINED],
            };
            let (url, _task) = server(vec![frames]).await;
            first = url.clone();
            next = Some(url);
        }
        match Client::connect_and_join(&first, "tok", None, None, SECOND).await {
            Err(ClientError::RedirectLoop(n, _)) => assert_eq!(n, MAX_REDIRECTS + 1),
            Err(e) => panic!("expected a redirect loop, got {e}"),
            Ok(_) => panic!("expected a redirect loop, got joined"),
        }
    }

    /// Every server example of docs/protocol.md is named by `message_type` as its `type` says.
    #[test]
    fn message_type_is_the_wire_type() {
        let doc = include_str!("../../../docs/protocol.md");
        let mut named = std::collections::HashSet::new();
        for block in doc.split("```json").skip(1) {
            let example = block.split("```").next().expect("a closed block");
            let value: serde_json::Value = serde_json::from_str(example).expect(example);
            if let Ok(message) = serde_json::from_value::<ServerMessage>(value.clone()) {
                assert_eq!(value["type"], message_type(&message), "{example}");
                named.insert(message_type(&message));
            }
        }
        assert_eq!(named.len(), 18, "{named:?}");
    }
}
