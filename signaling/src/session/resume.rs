//! Resuming a session on a new WebSocket (protocol.md, "Resuming a session").
//!
//! Every joined session holds a single-use resume token; the server keeps only its SHA-256, mapped to
//! the session's claim queue. A `resume` on a new WebSocket takes the token out of the table (so it can
//! be used once) and claims the session: the task that holds the [`Member`] — still attached to its old
//! socket, or suspended after that socket dropped — hands it over through a oneshot and ends without
//! leaving the room. The participant, its media peer, its slots and its mute state never change hands
//! in the registry or on the media worker, so nobody else in the room notices.
//!
//! A session whose socket drops without `leave` is suspended (see [`Suspended`]) for the resume window:
//! it stays in its room (counted against the room's limit) and its media peer keeps running; it ends
//! as before when the window passes, the media connection is lost, an operator removes it, or the
//! server drains or closes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::{Sink, Stream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, timeout};

use super::media::Media;
use super::membership::session_state;
use super::notices::{Notice, Notices};
use super::{next_member_input, Exit, Flow, Input, Member, Session, WsFrame};
use crate::media::{MediaEvent, SlotAssignment};
use crate::metrics::ResumeFailure;
use crate::protocol::{
    Answer, ErrorCode, MediaConnectionState, MediaState, ParticipantLeftReason, Resume, Resumed,
    ServerMessage, SharedParticipant, Slot, Slots, PROTOCOL_VERSION,
};
use crate::Signaling;

/// Random bytes in a resume token (256 bits; the protocol promises at least 128).
const TOKEN_BYTES: usize = 32;

/// What a resume token is looked up by: its SHA-256, so the table holds no usable token.
type TokenKey = [u8; 32];

fn key_of(token: &str) -> TokenKey {
    let hash = digest(&SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(hash.as_ref());
    key
}

/// A claim on a session by a new WebSocket: the session answers with its [`Member`].
pub(crate) struct Claim {
    reply: oneshot::Sender<Member>,
}

/// The resume tokens of this server's joined sessions, and how many sessions are suspended.
#[derive(Default)]
pub(crate) struct ResumeTable {
    tokens: Mutex<HashMap<TokenKey, mpsc::Sender<Claim>>>,
    suspended: AtomicUsize,
}

impl fmt::Debug for ResumeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeTable")
            .field("suspended", &self.suspended.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ResumeTable {
    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, mpsc::Sender<Claim>>> {
        // The map is consistent after every statement: a panic elsewhere cannot leave it half-changed.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a token out of the table: its session's claim queue, once.
    fn take(&self, token: &str) -> Option<mpsc::Sender<Claim>> {
        self.tokens().remove(&key_of(token))
    }

    /// Counts one more suspended session unless `max` are already; whether it may be suspended.
    fn try_suspend(&self, max: usize) -> bool {
        self.suspended
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Suspended sessions now.
    pub(crate) fn suspended(&self) -> usize {
        self.suspended.load(Ordering::SeqCst)
    }
}

/// A session's current resume token: its key in the table and the queue its claims arrive on. Dropping
/// it takes the token out of the table.
pub(super) struct Resumable {
    ctx: Arc<Signaling>,
    key: TokenKey,
    pub(super) claims: mpsc::Receiver<Claim>,
}

impl Resumable {
    /// A fresh token for a session: the handle, and the token to send to the client.
    pub(super) fn issue(ctx: &Arc<Signaling>) -> (Self, String) {
        let mut bytes = [0u8; TOKEN_BYTES];
        // The system's random source failing is not something a server can work around.
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let key = key_of(&token);
        // One claim at most: the token leaves the table with the first one.
        let (sender, claims) = mpsc::channel(1);
        ctx.resumes().tokens().insert(key, sender);
        let handle = Resumable {
            ctx: Arc::clone(ctx),
            key,
            claims,
        };
        (handle, token)
    }
}

impl Drop for Resumable {
    fn drop(&mut self) {
        self.ctx.resumes().tokens().remove(&self.key);
    }
}

/// What a suspended session saw that its client must still learn once it resumes.
#[derive(Debug, Default)]
pub(super) struct Missed {
    answer: Option<String>,
    connected: bool,
    slots: Option<Vec<SlotAssignment>>,
}

impl Missed {
    fn into_messages(self) -> Vec<ServerMessage> {
        let mut messages = Vec::new();
        if let Some(sdp) = self.answer {
            messages.push(ServerMessage::Answer(Answer { sdp }));
        }
        if self.connected {
            messages.push(ServerMessage::MediaState(MediaState {
                state: MediaConnectionState::Connected,
            }));
        }
        if let Some(slots) = self.slots {
            messages.push(ServerMessage::Slots(Slots {
                slots: slots
                    .into_iter()
                    .map(|s| Slot {
                        slot: s.slot,
                        mid: s.mid,
                        sid: s.participant.map(|p| p.to_string()),
                        ssrc: s.ssrc,
                    })
                    .collect(),
            }));
        }
        messages
    }
}

impl Exit {
    /// Whether the session is kept for a resume after this exit: only when the socket dropped (reading
    /// failed: a reset, or the TCP connection ended without a close frame). `leave`, a close frame (the
    /// client's deliberate close), the server's own idle timeout (the client has been silent twice as
    /// long as a resume window), a client that does not read (the send timeout), kicks, replacement,
    /// drain and shutdown remove the participant at once, as before.
    pub(super) fn suspends(self) -> bool {
        matches!(self, Exit::ReadFailed)
    }
}

/// Hands the session's member to a claim; gives it back when the claimer has given up.
pub(super) fn hand_over(member: Member, claim: Claim) -> Option<Member> {
    claim.reply.send(member).err()
}

/// A session whose socket dropped, kept for a resume.
pub(super) struct Suspended {
    ctx: Arc<Signaling>,
    joined: Option<Member>,
    exit: Exit,
    closing: watch::Receiver<bool>,
}

impl<T, E> Session<T>
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    /// Suspends the session's member after `exit` if it may be (the caller then drops the socket), else
    /// `None` (the caller finishes the session).
    pub(super) fn suspend(&mut self, exit: Exit) -> Option<Suspended> {
        let ctx = Arc::clone(&self.wire.ctx);
        let config = ctx.config();
        let eligible = exit.suspends()
            && self.joined.is_some()
            && config.resume_window_ms > 0
            && !ctx.is_draining();
        if !eligible || !ctx.resumes().try_suspend(config.max_suspended) {
            return None;
        }
        ctx.metrics().suspended_changed(1);
        let mut joined = self.joined.take();
        if let Some(member) = &mut joined {
            tracing::debug!(sid = %member.sid, reason = ?exit, "socket dropped; session suspended");
            // A push-to-talk key held when the socket dropped is released: its key-up may be lost with
            // the socket, and a stuck key is an open microphone.
            super::control::release_key(member);
        }
        // The socket goes with the session; the suspended member keeps only its room and media.
        Some(Suspended {
            closing: self.closing.clone(),
            ctx,
            joined,
            exit,
        })
    }

    pub(super) async fn on_resume(&mut self, resume: Resume) -> Flow {
        let ctx = Arc::clone(&self.wire.ctx);
        if self.joined.is_some() {
            let message = "this session has already joined a room";
            return self.wire.reject(ErrorCode::AlreadyJoined, message).await;
        }
        if resume.protocol != PROTOCOL_VERSION {
            ctx.metrics().resume_failed(ResumeFailure::Protocol);
            let message = format!(
                "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
                resume.protocol
            );
            return self
                .wire
                .reject(ErrorCode::UnsupportedProtocol, message)
                .await;
        }
        let Some(claims) = ctx.resumes().take(&resume.resume_token) else {
            return self.resume_failed(ResumeFailure::Unknown).await;
        };
        let (reply, member) = oneshot::channel();
        if claims.try_send(Claim { reply }).is_err() {
            return self.resume_failed(ResumeFailure::Ended).await;
        }
        let member = match timeout(ctx.config().media_timeout(), member).await {
            Ok(Ok(member)) => member,
            _ => return self.resume_failed(ResumeFailure::Ended).await,
        };
        self.attach(member).await
    }

    async fn resume_failed(&mut self, reason: ResumeFailure) -> Flow {
        self.wire.ctx.metrics().resume_failed(reason);
        let message = "no session to resume with this token (unknown, used, or its window ended); join afresh";
        self.wire.reject(ErrorCode::ResumeFailed, message).await
    }

    /// Attaches a claimed member to this socket and tells the client `resumed`.
    async fn attach(&mut self, mut member: Member) -> Flow {
        let ctx = Arc::clone(&self.wire.ctx);
        let room = ctx.registry().room(&member.membership.room);
        let Some((participant, room)) = room.and_then(|room| {
            let info = room.info();
            let mut participants = room.participants;
            let me = participants.iter().position(|p| p.sid == member.sid)?;
            let participant = participants.remove(me);
            // And those of the other nodes of a room spanning nodes.
            participants.extend(ctx.registry().remote_participants(&info.name));
            Some((participant, (info, participants)))
        }) else {
            // Removed from its room while changing hands: it ends as it would have.
            member
                .membership
                .end(
                    ParticipantLeftReason::Left,
                    crate::metrics::LeaveReason::Kicked,
                )
                .await;
            return self.resume_failed(ResumeFailure::Ended).await;
        };
        let (room, participants) = room;
        let (resumable, resume_token) = Resumable::issue(&ctx);
        member.resume = resumable;
        let missed = std::mem::take(&mut member.missed);
        let media = !matches!(member.media, Media::None);
        let sid = member.sid.clone();
        let room_name = member.membership.room.clone();
        self.offered = media;
        self.joined = Some(member);
        let reply = ServerMessage::Resumed(Resumed {
            state: session_state(
                &ctx,
                participant,
                room,
                participants
                    .into_iter()
                    .map(SharedParticipant::new)
                    .collect(),
                resume_token,
            ),
            media,
        });
        ctx.metrics().session_resumed();
        let span = tracing::Span::current();
        span.record("participant", sid.as_str());
        span.record("room", room_name.as_str());
        tracing::debug!(%sid, "session resumed");
        self.wire.send(&reply).await?;
        for message in missed.into_messages() {
            self.wire.send(&message).await?;
        }
        Ok(())
    }
}

impl Suspended {
    /// Waits for a resume (the member changes hands) or for the end of the window (or of the session's
    /// media, or the room); then the participant leaves as it would have without a window.
    pub(super) async fn run(mut self) {
        let window = sleep(self.ctx.config().resume_window());
        tokio::pin!(window);
        // The member stays the same while suspended (a claim that gives it back returns the same one).
        let mut notices = Notices::new(
            Some(self.ctx.drain_notices()),
            self.closing.clone(),
            self.joined.as_ref().map(Member::watches),
        );
        let (reason, metric) = loop {
            let input = tokio::select! {
                () = &mut window => break (ParticipantLeftReason::Disconnected, self.exit.metric_reason()),
                input = next_member_input::<std::convert::Infallible>(&mut self.joined) => input,
                notice = &mut notices => match notice {
                    Notice::Draining(_) | Notice::Shutdown => break (ParticipantLeftReason::Disconnected, crate::metrics::LeaveReason::Shutdown),
                    Notice::Removed(reason) => Input::Removed(reason),
                    Notice::Moved(room) => Input::Moved(room),
                    Notice::Migrated(url) => Input::Migrated(url),
                },
            };
            let Some(member) = self.joined.as_mut() else {
                return;
            };
            match input {
                Input::Claimed(claim) => {
                    let member = self.joined.take().expect("checked just above");
                    match hand_over(member, claim) {
                        None => return,
                        // The new socket gave up waiting: stay suspended (its token is spent).
                        Some(member) => self.joined = Some(member),
                    }
                }
                Input::Answer(answer) => {
                    member.media = match (std::mem::replace(&mut member.media, Media::None), answer)
                    {
                        (Media::Offered { events, .. }, Ok(sdp)) => {
                            member.missed.answer = Some(sdp);
                            Media::Answered { events }
                        }
                        // An ICE restart answered while the socket was away: the peer carries on.
                        (Media::Restarting { events, .. }, result) => {
                            if let Ok(sdp) = result {
                                self.ctx.metrics().ice_restarted();
                                member.missed.answer = Some(sdp);
                            }
                            Media::Answered { events }
                        }
                        // Refused: the client offers again after `resumed` says it has no media.
                        (_, Err(_)) => Media::None,
                        (other, Ok(_)) => other,
                    };
                }
                Input::Media(Some(MediaEvent::Connected)) => member.missed.connected = true,
                Input::Media(Some(MediaEvent::Slots(slots))) => member.missed.slots = Some(slots),
                Input::Media(Some(
                    MediaEvent::Speakers(_)
                    | MediaEvent::DominantSpeaker(_)
                    | MediaEvent::Positions(_),
                )) => {}
                Input::Media(Some(MediaEvent::Disconnected { .. }) | None) => {
                    break (
                        ParticipantLeftReason::Disconnected,
                        crate::metrics::LeaveReason::MediaDisconnected,
                    )
                }
                Input::Removed(reason) => {
                    let exit = Exit::Removed(reason);
                    break (exit.left_reason(), exit.metric_reason());
                }
                // Nobody to tell where to go: a suspended session that is moved leaves.
                Input::Moved(_) => {
                    break (
                        ParticipantLeftReason::Moved,
                        crate::metrics::LeaveReason::Moved,
                    )
                }
                // Its room went to another node, where the client rejoins after its reconnect finds
                // this one's redirect; the participant leaves here as a session told `redirect` does.
                Input::Migrated(_) => {
                    let exit = Exit::Migrated;
                    break (exit.left_reason(), exit.metric_reason());
                }
                // Presence is in `resumed`; the rest cannot reach a member-only wait.
                _ => {}
            }
        };
        if let Some(mut member) = self.joined.take() {
            tracing::debug!(sid = %member.sid, ?reason, "suspended session ended");
            member.membership.end(reason, metric).await;
        }
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        self.ctx.resumes().suspended.fetch_sub(1, Ordering::SeqCst);
        self.ctx.metrics().suspended_changed(-1);
    }
}
