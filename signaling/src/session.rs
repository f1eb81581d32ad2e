//! One client's signaling session, from the WebSocket's first frame to its close (protocol.md, "Session
//! lifecycle").
//!
//! The driver is transport-agnostic: the server adapts its WebSocket to a `Stream + Sink` of [`WsFrame`]s.
//! Nothing a client sends can panic the session or reach another session: every bad input gets its
//! `error` code (and a metric), fatal ones close the socket, and whatever way the session ends it leaves
//! its room and its media worker exactly once.

use std::collections::HashMap;
use std::fmt;
use std::future::{pending, Future};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use crate::media::{MediaCommand, MediaEvent, ParticipantId, RoomSettings};
use crate::metrics::{LeaveReason, SessionLimit};
use crate::protocol::{
    parse_client, ClientMessage, Draining, ErrorCode, ErrorMessage, Left, LeftReason,
    ParticipantLeftReason, Ping, Pong, ServerMessage, CLOSE_POLICY_VIOLATION, MAX_FRAME_BYTES,
};
use crate::registry::Presence;
use crate::Signaling;

mod control;
mod media;
mod membership;
mod notices;
mod position;
mod resume;
mod talk;

use control::{on_moderate, on_ptt, on_ptt_key, PttKeys};
use media::{on_mute, on_offer, ConnectError, Media};
use notices::{MemberWatches, Notice, Notices};
use position::{on_position, Placement};
pub(crate) use resume::ResumeTable;
use resume::{hand_over, Claim, Missed, Resumable};
use talk::{on_talk, on_volume, TalkState};
pub use talk::{MAX_VOLUMES, TALK_BURST, TALK_PER_SEC};

/// Close code of a normal end (`leave`, media lost).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code when the server closes every session.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code after `redirect` to the node a draining node handed the room to (Service Restart: clients
/// that do not follow the redirect rejoin through their entry URL and are redirected there).
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// The longest part of a media worker's message quoted in a `bad_sdp` error.
const MAX_DETAIL_CHARS: usize = 200;

/// A WebSocket frame, independent of the WebSocket library.
///
/// WebSocket pings are the transport's business (axum and tungstenite answer them); a session only
/// counts them as activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsFrame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame, with its code and reason if it has them.
    Close(Option<(u16, String)>),
    /// Not a frame: the transport refused what the client sent as a WebSocket protocol violation (the
    /// server maps its WebSocket library's read errors to this). The session counts it, sends a close
    /// frame with the matching code and ends. Sent outward, it is that close frame.
    Violation(ProtocolViolation),
}

/// A WebSocket protocol violation by the client (RFC 6455 §7.4.1 close codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// A text frame that is not UTF-8: close 1007.
    InvalidUtf8,
    /// A malformed frame, reserved opcode or bits, unmasked client frame or bad control frame: close 1002.
    BadFrame,
    /// A frame or message over the transport's size limit: close 1009.
    TooLarge,
}

impl ProtocolViolation {
    pub const ALL: [ProtocolViolation; 3] = [
        ProtocolViolation::InvalidUtf8,
        ProtocolViolation::BadFrame,
        ProtocolViolation::TooLarge,
    ];

    /// The metric label and close reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolViolation::InvalidUtf8 => "invalid_utf8",
            ProtocolViolation::BadFrame => "protocol_error",
            ProtocolViolation::TooLarge => "too_large",
        }
    }

    pub fn close_code(self) -> u16 {
        match self {
            ProtocolViolation::InvalidUtf8 => 1007,
            ProtocolViolation::BadFrame => 1002,
            ProtocolViolation::TooLarge => 1009,
        }
    }
}

impl WsFrame {
    /// The payload size that counts against [`MAX_FRAME_BYTES`].
    fn payload_len(&self) -> usize {
        match self {
            WsFrame::Text(text) => text.len(),
            WsFrame::Binary(bytes) | WsFrame::Ping(bytes) | WsFrame::Pong(bytes) => bytes.len(),
            WsFrame::Close(close) => close.as_ref().map_or(0, |(_, reason)| 2 + reason.len()),
            WsFrame::Violation(_) => 0,
        }
    }
}

/// Runs one client session until it ends; returns once the client has left its room and the socket
/// has been closed (or found dead).
///
/// The future is `Send` when `T` is, so a server can `tokio::spawn` it. Dropping it early (aborting the
/// task) still removes the participant from its room and its media worker.
///
/// Run it inside a span with empty `room` and `participant` fields (see [`session_span`]): they are
/// filled in when the participant joins, so every later log line names both.
pub async fn run_session<T, E>(transport: T, ctx: Arc<Signaling>)
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    let _open = OpenSession::new(Arc::clone(&ctx));
    let drain = Some(ctx.drain_notices());
    let closing = ctx.closing();
    let mut session = Session {
        opened: Instant::now(),
        notices: Notices::new(drain.clone(), closing.clone(), None),
        drain,
        closing,
        wire: Wire {
            send_timeout: ctx.config().send_timeout(),
            transport,
            ctx,
        },
        joined: None,
        offered: false,
    };
    let exit = session.serve().await;
    // The endings are boxed: this future lives as long as the connection and is as large as its
    // largest await, and each ending's future is larger than serving (docs/loadtest.md, memory third
    // pass).
    match session.suspend(exit) {
        Some(suspended) => {
            // No socket any more: the session counts as suspended, not open.
            drop(session);
            drop(_open);
            Box::pin(suspended.run()).await;
        }
        None => Box::pin(session.finish(exit)).await,
    }
}

/// The span a transport should run [`run_session`] in.
pub fn session_span() -> tracing::Span {
    tracing::info_span!(
        "session",
        room = tracing::field::Empty,
        participant = tracing::field::Empty
    )
}

/// Counts the session in `chorus_signaling_sessions` for as long as it lives.
struct OpenSession(Arc<Signaling>);

impl OpenSession {
    fn new(ctx: Arc<Signaling>) -> Self {
        ctx.metrics().session_opened();
        Self(ctx)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.metrics().session_closed();
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// The client sent `leave`.
    Leave,
    /// The client closed the socket.
    Closed,
    /// The client broke the WebSocket protocol.
    Violation(ProtocolViolation),
    /// Reading from the socket failed.
    ReadFailed,
    /// Writing to the socket failed or timed out.
    WriteFailed,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// No valid `join` within the join deadline.
    JoinTimeout,
    /// No `offer` within the offer deadline after `joined`.
    OfferTimeout,
    /// The media connection is gone.
    MediaDisconnected,
    /// A fatal error was sent to the client.
    Fatal(ErrorCode),
    /// The server closes every session.
    Shutdown,
    /// An operator removed the participant (admin API).
    Removed(LeftReason),
    /// A `resume` on another WebSocket took the session over.
    Resumed,
    /// The room lives on another node of the cluster: the client was sent `redirect`.
    Redirected,
    /// This node handed the room to another node of the cluster: the joined client was sent `redirect`.
    Migrated,
}

impl Exit {
    /// What the others in the room are told.
    fn left_reason(self) -> ParticipantLeftReason {
        match self {
            Exit::IdleTimeout | Exit::MediaDisconnected | Exit::OfferTimeout => {
                ParticipantLeftReason::Disconnected
            }
            Exit::Removed(LeftReason::Replaced) => ParticipantLeftReason::Replaced,
            Exit::Removed(_) => ParticipantLeftReason::Kicked,
            _ => ParticipantLeftReason::Left,
        }
    }

    fn metric_reason(self) -> LeaveReason {
        match self {
            Exit::Leave => LeaveReason::Leave,
            Exit::Closed => LeaveReason::Closed,
            Exit::ReadFailed | Exit::WriteFailed | Exit::Violation(_) => {
                LeaveReason::TransportError
            }
            Exit::IdleTimeout => LeaveReason::IdleTimeout,
            Exit::OfferTimeout => LeaveReason::OfferTimeout,
            // Never joined: nothing to count as a leave.
            Exit::JoinTimeout | Exit::Redirected => LeaveReason::Error,
            Exit::MediaDisconnected => LeaveReason::MediaDisconnected,
            Exit::Fatal(_) => LeaveReason::Error,
            Exit::Shutdown => LeaveReason::Shutdown,
            Exit::Removed(LeftReason::Replaced) => LeaveReason::Replaced,
            Exit::Removed(_) => LeaveReason::Kicked,
            // The participant stays, on the new socket.
            Exit::Resumed => LeaveReason::Closed,
            Exit::Migrated => LeaveReason::Migrated,
        }
    }

    /// The close frame the server sends, if it sends one.
    fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            Exit::Leave => Some((CLOSE_NORMAL, "")),
            Exit::MediaDisconnected => Some((CLOSE_NORMAL, "media_disconnected")),
            Exit::IdleTimeout => Some((CLOSE_POLICY_VIOLATION, "idle_timeout")),
            Exit::JoinTimeout => Some((CLOSE_POLICY_VIOLATION, "join_timeout")),
            Exit::OfferTimeout => Some((CLOSE_POLICY_VIOLATION, "offer_timeout")),
            Exit::Fatal(code) => Some((
                code.close_code().unwrap_or(CLOSE_POLICY_VIOLATION),
                code.as_str(),
            )),
            Exit::Shutdown => Some((CLOSE_GOING_AWAY, "server_shutdown")),
            Exit::Violation(v) => Some((v.close_code(), v.as_str())),
            Exit::Removed(LeftReason::Kicked) => Some((CLOSE_NORMAL, "kicked")),
            Exit::Removed(LeftReason::RoomDeleted) => Some((CLOSE_NORMAL, "room_deleted")),
            Exit::Removed(LeftReason::Replaced) => Some((CLOSE_NORMAL, "replaced")),
            Exit::Resumed => Some((CLOSE_NORMAL, "resumed")),
            Exit::Redirected => Some((CLOSE_NORMAL, "redirect")),
            Exit::Migrated => Some((CLOSE_SERVICE_RESTART, "migrated")),
            Exit::Closed | Exit::ReadFailed | Exit::WriteFailed => None,
        }
    }
}

/// The outcome of handling one input: go on, or end the session.
type Flow = Result<(), Exit>;

/// The most presence events written together before one flush ([`Wire::send_presence`]).
const PRESENCE_BATCH: usize = 64;

/// A member's presence flushes are at least this far apart: an event that comes sooner after the last
/// flush waits for the rest of this, and goes out with whatever else came meanwhile. An event after a
/// quiet moment goes out at once. With 500 joining a room at 100/s, every member was written once per
/// join, 40,000 writes a second on the signaling thread at 400 members (61 % of a core); spaced, a member
/// is written at most 20 times a second, each event at most this much later.
const PRESENCE_SPACING: Duration = Duration::from_millis(50);

/// `write` (frames to the client), given at most `send_timeout`: a client that does not read its socket
/// is dropped rather than held.
async fn within(send_timeout: Duration, write: impl Future<Output = Flow>) -> Flow {
    timeout(send_timeout, write).await.unwrap_or_else(|_| {
        tracing::debug!("client does not read its socket; dropping the session");
        Err(Exit::WriteFailed)
    })
}

/// A server message as the text of a WebSocket frame.
fn to_text(message: &ServerMessage) -> Result<String, Exit> {
    serde_json::to_string(message).map_err(|error| {
        // Server messages are plain structs with string keys; this cannot happen.
        tracing::error!(%error, "cannot serialize a server message");
        Exit::Fatal(ErrorCode::Internal)
    })
}

/// The sending half of a session, and the shared context.
struct Wire<T> {
    transport: T,
    ctx: Arc<Signaling>,
    send_timeout: Duration,
}

impl<T: Sink<WsFrame> + Unpin> Wire<T> {
    async fn send_frame(&mut self, frame: WsFrame) -> Flow {
        let transport = &mut self.transport;
        within(self.send_timeout, async {
            transport.send(frame).await.map_err(|_| Exit::WriteFailed)
        })
        .await
    }

    async fn send(&mut self, message: &ServerMessage) -> Flow {
        self.send_frame(WsFrame::Text(to_text(message)?)).await
    }

    /// Sends the presence event `first` and those already queued behind it (at most
    /// [`PRESENCE_BATCH`]), flushed once: a burst of joins costs each member one system call per burst
    /// instead of one per join (with 500 joining at 100/s, the signaling thread's `send` calls took 29 %
    /// of the server's CPU samples; issue 15). Nothing waits here; the caller spaces the flushes
    /// ([`PRESENCE_SPACING`]). The events written.
    async fn send_presence(
        &mut self,
        first: Presence,
        queued: &mut mpsc::Receiver<Presence>,
    ) -> Result<usize, Exit> {
        let transport = &mut self.transport;
        let mut fed = 0;
        within(self.send_timeout, async {
            let mut next = Some(first);
            while let Some(event) = next.take() {
                let frame = WsFrame::Text(event.text().to_owned());
                transport.feed(frame).await.map_err(|_| Exit::WriteFailed)?;
                fed += 1;
                // Taken off the queue only when it will be written.
                if fed < PRESENCE_BATCH {
                    next = queued.try_recv().ok();
                }
            }
            transport.flush().await.map_err(|_| Exit::WriteFailed)
        })
        .await?;
        Ok(fed)
    }

    /// Sends an `error`; ends the session if the code is fatal.
    async fn reject(&mut self, code: ErrorCode, message: impl Into<String>) -> Flow {
        self.ctx.metrics().error_sent(code);
        let message = ServerMessage::Error(ErrorMessage {
            code,
            message: message.into(),
        });
        self.send(&message).await?;
        if code.fatal() {
            Err(Exit::Fatal(code))
        } else {
            Ok(())
        }
    }
}

/// A session that has joined a room.
struct Member {
    membership: Membership,
    sid: String,
    settings: RoomSettings,
    /// The token's identity and the display name, for a move to another room.
    identity: String,
    name: String,
    can_publish: bool,
    can_subscribe: bool,
    /// The token's moderator grant.
    moderator: bool,
    /// Push-to-talk forced on by the token.
    ptt_forced: bool,
    /// The push-to-talk key and its rate limit.
    ptt_keys: PttKeys,
    presence: mpsc::Receiver<Presence>,
    /// The next presence flush waits for this ([`PRESENCE_SPACING`]).
    presence_not_before: Option<Instant>,
    /// Becomes `Some` when an operator removes the participant.
    removed: watch::Receiver<Option<LeftReason>>,
    /// Becomes `Some(room)` when a moderator or operator moves the participant to `room`.
    moved: watch::Receiver<Option<String>>,
    /// The rooms this node handed to other nodes of its cluster (see [`Signaling::migrate_room`]).
    migrations: watch::Receiver<HashMap<String, String>>,
    media: Media,
    /// The session's current resume token, and the claims a `resume` makes with it.
    resume: Resumable,
    /// What the client missed while the session was suspended.
    missed: Missed,
    /// Its place in a spatial room.
    placement: Placement,
    /// Its team, shout role, talk target and volumes.
    talk: TalkState,
}

impl Member {
    /// Its receivers of removal, move and migration, for [`Notices`].
    fn watches(&self) -> MemberWatches {
        MemberWatches {
            sid: self.sid.clone(),
            room: self.membership.room.clone(),
            removed: self.removed.clone(),
            moved: self.moved.clone(),
            migrations: self.migrations.clone(),
        }
    }
}

/// A participant's place in its room and on its media worker, released exactly once: by [`Membership::end`]
/// on every normal exit, or on drop if the session future is dropped before that.
pub(crate) struct Membership {
    pub(crate) ctx: Arc<Signaling>,
    pub(crate) room: String,
    pub(crate) id: ParticipantId,
    /// The worker that received `Connect`, until it has been sent `Leave`.
    pub(crate) worker: Option<mpsc::Sender<MediaCommand>>,
    pub(crate) in_registry: bool,
}

/// What woke the session up.
enum Input<E> {
    Frame(Option<Result<WsFrame, E>>),
    Idle,
    /// The join deadline (not joined yet) or the offer deadline (joined, no offer yet) passed.
    Deadline,
    Presence(Presence),
    Media(Option<MediaEvent>),
    Answer(Result<String, ConnectError>),
    Removed(LeftReason),
    /// A moderator or operator moves the participant to this room.
    Moved(String),
    /// The room was handed to the node of the cluster at this signaling URL.
    Migrated(String),
    Draining(std::time::Instant),
    Shutdown,
    /// A `resume` on another WebSocket claims this session.
    Claimed(Claim),
}

struct Session<T> {
    wire: Wire<T>,
    /// When the WebSocket opened (for `chorus_join_latency_seconds`).
    opened: Instant,
    /// Until the client has been told the server drains.
    drain: Option<watch::Receiver<Option<std::time::Instant>>>,
    closing: watch::Receiver<bool>,
    /// The drain notice, shutdown and the member's removal, move and migration, watched across wake-ups.
    notices: Notices,
    joined: Option<Member>,
    /// Whether the client has sent an `offer` (which ends the offer deadline).
    offered: bool,
}

impl<T, E> Session<T>
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    async fn serve(&mut self) -> Exit {
        let idle_timeout = self.wire.ctx.config().idle_timeout();
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        // The join deadline, then (once joined) the first offer's; nothing the client sends but `join`
        // and `offer` moves it, so a socket that only pings cannot hold a connection or a seat.
        let deadline =
            tokio::time::sleep_until(self.opened + self.wire.ctx.config().join_deadline());
        tokio::pin!(deadline);
        let mut awaiting_join = true;
        loop {
            if awaiting_join && self.joined.is_some() {
                awaiting_join = false;
                let offer_deadline = self.wire.ctx.config().offer_deadline();
                deadline.as_mut().reset(Instant::now() + offer_deadline);
            }
            let sid = self.joined.as_ref().map(|m| m.sid.as_str());
            if !self.notices.watches(sid, self.drain.is_some()) {
                self.notices = Notices::new(
                    self.drain.clone(),
                    self.closing.clone(),
                    self.joined.as_ref().map(Member::watches),
                );
            }
            let input = tokio::select! {
                frame = self.wire.transport.next() => Input::Frame(frame),
                () = &mut idle => Input::Idle,
                () = &mut deadline, if !self.offered => Input::Deadline,
                input = next_member_input(&mut self.joined) => input,
                notice = &mut self.notices => match notice {
                    Notice::Removed(reason) => Input::Removed(reason),
                    Notice::Moved(room) => Input::Moved(room),
                    Notice::Migrated(url) => Input::Migrated(url),
                    Notice::Draining(deadline) => Input::Draining(deadline),
                    Notice::Shutdown => Input::Shutdown,
                },
            };
            let flow = match input {
                Input::Frame(Some(Ok(frame))) => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    // Boxed, like `on_moved` below: a session's future is as large as its largest
                    // await and lives as long as the connection, while handling a message takes a
                    // moment (its future was 3.6 KB of serving's 3.9 KB; docs/loadtest.md, memory
                    // third pass).
                    Box::pin(self.on_frame(frame)).await
                }
                Input::Frame(Some(Err(error))) => {
                    tracing::debug!(%error, "WebSocket read failed");
                    Err(Exit::ReadFailed)
                }
                Input::Frame(None) => Err(Exit::Closed),
                Input::Idle => Err(Exit::IdleTimeout),
                Input::Deadline => {
                    let (limit, exit) = if self.joined.is_none() {
                        (SessionLimit::JoinTimeout, Exit::JoinTimeout)
                    } else {
                        (SessionLimit::OfferTimeout, Exit::OfferTimeout)
                    };
                    tracing::debug!(reason = limit.as_str(), "session deadline passed");
                    self.wire.ctx.metrics().limit_hit(limit);
                    Err(exit)
                }
                Input::Presence(event) => match self.joined.as_mut() {
                    Some(member) => {
                        let sent = self.wire.send_presence(event, &mut member.presence).await;
                        sent.map(|fed| {
                            // A full batch leaves more queued: no wait for those.
                            member.presence_not_before =
                                (fed < PRESENCE_BATCH).then(|| Instant::now() + PRESENCE_SPACING);
                        })
                    }
                    None => Ok(()),
                },
                Input::Removed(reason) => Err(Exit::Removed(reason)),
                Input::Moved(room) => Box::pin(self.on_moved(room)).await,
                Input::Migrated(url) => self.on_migrated(url).await,
                Input::Draining(deadline) => {
                    self.drain = None;
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    // Whole seconds, rounded up: the client never learns a deadline later than it is.
                    let grace_period_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    let message = ServerMessage::Draining(Draining { grace_period_secs });
                    self.wire.send(&message).await
                }
                Input::Media(event) => self.on_media_event(event).await,
                Input::Answer(answer) => self.on_answer(answer).await,
                Input::Shutdown => Err(Exit::Shutdown),
                Input::Claimed(claim) => match self.joined.take() {
                    Some(member) => match hand_over(member, claim) {
                        None => Err(Exit::Resumed),
                        Some(member) => {
                            self.joined = Some(member);
                            Ok(())
                        }
                    },
                    None => Ok(()),
                },
            };
            if let Err(exit) = flow {
                return exit;
            }
        }
    }

    /// Leaves the room and the media worker, then says goodbye on the socket.
    async fn finish(mut self, exit: Exit) {
        if let Some(mut member) = self.joined.take() {
            member
                .membership
                .end(exit.left_reason(), exit.metric_reason())
                .await;
        }
        let left = match exit {
            Exit::Leave => Some(Left { reason: None }),
            Exit::Removed(reason) => Some(Left {
                reason: Some(reason),
            }),
            _ => None,
        };
        if let Some(left) = left {
            if self.wire.send(&ServerMessage::Left(left)).await.is_err() {
                return;
            }
        }
        if let Some((code, reason)) = exit.close_frame() {
            let frame = WsFrame::Close(Some((code, reason.to_owned())));
            if self.wire.send_frame(frame).await.is_err() {
                return;
            }
        }
        if !matches!(exit, Exit::WriteFailed | Exit::ReadFailed) {
            let _ = timeout(self.wire.send_timeout, self.wire.transport.close()).await;
        }
    }

    async fn on_frame(&mut self, frame: WsFrame) -> Flow {
        if frame.payload_len() > MAX_FRAME_BYTES {
            let message = format!("a frame may be at most {MAX_FRAME_BYTES} bytes");
            return self.wire.reject(ErrorCode::FrameTooLarge, message).await;
        }
        match frame {
            WsFrame::Text(text) => self.on_text(&text).await,
            WsFrame::Binary(_) => {
                let message = "binary frames are not part of the protocol; send JSON text frames";
                self.wire.reject(ErrorCode::BinaryFrame, message).await
            }
            WsFrame::Ping(_) | WsFrame::Pong(_) => Ok(()),
            WsFrame::Close(_) => Err(Exit::Closed),
            WsFrame::Violation(v) => {
                tracing::debug!(violation = v.as_str(), "WebSocket protocol violation");
                self.wire.ctx.metrics().ws_violation(v);
                Err(Exit::Violation(v))
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let received = Instant::now();
        let message = match parse_client(text) {
            Ok(message) => message,
            Err(error) => return self.wire.reject(error.code(), error.to_string()).await,
        };
        let message = match message {
            ClientMessage::Join(join) => return self.on_join(join, received).await,
            ClientMessage::Resume(resume) => return self.on_resume(resume).await,
            message => message,
        };
        let Some(member) = self.joined.as_mut() else {
            let reply = "send join first: this message needs a joined session";
            return self.wire.reject(ErrorCode::NotJoined, reply).await;
        };
        match message {
            ClientMessage::Offer(offer) => {
                self.offered = true;
                on_offer(&mut self.wire, member, offer).await
            }
            ClientMessage::Mute(mute) => on_mute(&mut self.wire, member, mute).await,
            ClientMessage::Position(update) => {
                on_position(&mut self.wire, member, update, received).await
            }
            ClientMessage::Ptt(ptt) => on_ptt(&mut self.wire, member, ptt).await,
            ClientMessage::PttKey(key) => on_ptt_key(&mut self.wire, member, key, received).await,
            ClientMessage::Moderate(request) => on_moderate(&mut self.wire, member, request).await,
            ClientMessage::Talk(talk) => on_talk(&mut self.wire, member, talk, received).await,
            ClientMessage::Volume(volume) => {
                on_volume(&mut self.wire, member, volume, received).await
            }
            ClientMessage::Ping(Ping { id }) => {
                self.wire.send(&ServerMessage::Pong(Pong { id })).await
            }
            ClientMessage::Leave(_) => Err(Exit::Leave),
            // Handled above; a second `join` or a `resume` is `already_joined` there.
            ClientMessage::Join(_) | ClientMessage::Resume(_) => Ok(()),
        }
    }
}

/// The next presence event, media event, offer answer or resume claim of a joined session (its other
/// inputs are [`Notices`]); never resolves before `join`.
async fn next_member_input<E>(joined: &mut Option<Member>) -> Input<E> {
    let Some(Member {
        presence,
        presence_not_before,
        media,
        resume,
        ..
    }) = joined
    else {
        return pending().await;
    };
    let presence = async {
        // Only a spacing still running is waited for: a timer per input otherwise.
        if let Some(at) = presence_not_before.filter(|at| *at > Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
        match presence.recv().await {
            Some(event) => Input::Presence(event),
            // The registry let go of this participant: no presence events will come.
            None => pending().await,
        }
    };
    let media = async {
        match media {
            // Polled to completion at most once: the session leaves `Offered` as soon as it resolves.
            Media::Offered { answer, .. } => Input::Answer(answer.await),
            Media::Answered { events } => Input::Media(events.recv().await),
            Media::Restarting { answer, events } => tokio::select! {
                // Polled to completion at most once, like `Offered`.
                answer = answer => Input::Answer(answer),
                event = events.recv() => Input::Media(event),
            },
            Media::None => pending().await,
        }
    };
    let claimed = async {
        match resume.claims.recv().await {
            Some(claim) => Input::Claimed(claim),
            // The token left the table without a claim: none will come.
            None => pending().await,
        }
    };
    tokio::select! {
        input = presence => input,
        input = media => input,
        input = claimed => input,
    }
}

/// The drain deadline, once the server drains; never resolves for a session already told.
async fn drain_notice(
    drain: &mut Option<watch::Receiver<Option<std::time::Instant>>>,
) -> std::time::Instant {
    let Some(receiver) = drain else {
        return pending().await;
    };
    let deadline = match receiver.wait_for(Option::is_some).await {
        Ok(deadline) => *deadline,
        Err(_) => None,
    };
    match deadline {
        Some(deadline) => deadline,
        // The context is gone: no drain will be announced.
        None => pending().await,
    }
}

pub(super) async fn closing(closing: &mut watch::Receiver<bool>) {
    let closed = closing.wait_for(|closing| *closing).await.is_ok();
    if !closed {
        // The context is gone without closing sessions: nothing to wait for.
        pending::<()>().await;
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests;
