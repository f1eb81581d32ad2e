//! Push-to-talk (`ptt`, `ptt_key`), moderation (`moderate`) and a move to another room.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Flow, Media, Membership, Session, Wire, WsFrame};
use crate::media::MediaCommand;
use crate::metrics::{LeaveReason, SessionLimit};
use crate::protocol::{
    ErrorCode, Moderate, ModerateAction, Moved, ParticipantLeftReason, Ptt, PttKey, ServerMessage,
};
use crate::registry::{AdminError, JoinRequest};

/// Key-downs a session may send in a burst.
pub const PTT_KEY_BURST: u32 = 10;
/// Key-downs per second a session may send in the long run (the burst refills at this rate).
pub const PTT_KEY_PER_SEC: u32 = 5;

/// A token bucket: `burst` actions at once, refilled at `per_sec`.
#[derive(Debug)]
pub(super) struct Bucket {
    burst: u32,
    per_sec: u32,
    /// Actions left, in thousandths.
    tokens_milli: u64,
    refilled: Instant,
}

impl Bucket {
    pub fn new(now: Instant, burst: u32, per_sec: u32) -> Self {
        Self {
            burst,
            per_sec,
            tokens_milli: u64::from(burst) * 1000,
            refilled: now,
        }
    }

    /// Takes one action from the bucket at `now`; false when it is empty.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let refill = elapsed.as_micros() as u64 * u64::from(self.per_sec) / 1000;
        if refill > 0 {
            self.tokens_milli = (self.tokens_milli + refill).min(u64::from(self.burst) * 1000);
            self.refilled = now;
        }
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// A session's push-to-talk key: its state and the token bucket that limits key-downs.
#[derive(Debug)]
pub(super) struct PttKeys {
    pub down: bool,
    bucket: Bucket,
}

impl PttKeys {
    pub fn new(now: Instant) -> Self {
        Self {
            down: false,
            bucket: Bucket::new(now, PTT_KEY_BURST, PTT_KEY_PER_SEC),
        }
    }

    /// Takes one key-down from the bucket at `now`; false when it is empty.
    fn allow(&mut self, now: Instant) -> bool {
        self.bucket.allow(now)
    }
}

/// How long a `ptt_key` may wait for room in the media worker's queue.
const KEY_SEND_LIMIT: Duration = Duration::from_millis(200);

/// Sends the key state to the media worker at once, if the participant's peer exists there.
async fn send_key(member: &mut super::Member) {
    let answered = matches!(
        member.media,
        Media::Answered { .. } | Media::Restarting { .. }
    );
    let Some(worker) = member.membership.worker.clone().filter(|_| answered) else {
        // Before the answer the worker has no peer yet: the key is sent once it is answered.
        return;
    };
    let command = MediaCommand::PttKey {
        participant: member.membership.id,
        down: member.ptt_keys.down,
    };
    match worker.try_send(command) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(command)) => {
            if tokio::time::timeout(KEY_SEND_LIMIT, worker.send(command))
                .await
                .is_err()
            {
                tracing::warn!("media worker queue full; ptt key not delivered");
            }
        }
    }
}

/// Releases a held key without waiting (the session's socket is gone): the worker is told with
/// `try_send`, or from a task if its queue is full.
pub(super) fn release_key(member: &mut super::Member) {
    if !std::mem::take(&mut member.ptt_keys.down) {
        return;
    }
    let Some(worker) = member.membership.worker.clone() else {
        return;
    };
    let command = MediaCommand::PttKey {
        participant: member.membership.id,
        down: false,
    };
    if let Err(mpsc::error::TrySendError::Full(command)) = worker.try_send(command) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(KEY_SEND_LIMIT, worker.send(command)).await;
            });
        }
    }
}

/// After the answer: a key already down reaches the worker's new peer.
pub(super) async fn key_after_answer(member: &mut super::Member) {
    if member.ptt_keys.down {
        send_key(member).await;
    }
}

pub(super) async fn on_ptt<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut super::Member,
    ptt: Ptt,
) -> Flow {
    if !member.can_publish {
        let message = "the access token does not allow publishing audio";
        return wire.reject(ErrorCode::Forbidden, message).await;
    }
    if !ptt.enabled && member.ptt_forced {
        let message = "the access token requires push-to-talk";
        return wire.reject(ErrorCode::Forbidden, message).await;
    }
    // Each change is told to the whole room: the same bucket as key-downs bounds what a flood costs them.
    if !member.ptt_keys.allow(Instant::now()) {
        wire.ctx.metrics().limit_hit(SessionLimit::PttKeyFlood);
        let message = format!(
            "push-to-talk changes are limited to {PTT_KEY_BURST} at once and {PTT_KEY_PER_SEC} per second"
        );
        return wire.reject(ErrorCode::RateLimited, message).await;
    }
    let membership = &member.membership;
    match wire
        .ctx
        .set_ptt(&membership.room, membership.id, ptt.enabled)
        .await
    {
        // The worker starts a newly gated participant with its key up.
        Ok(true) => member.ptt_keys.down = false,
        Ok(false) => {}
        Err(_) => {
            tracing::warn!(sid = %member.sid, "media worker did not take a ptt command");
            return wire
                .reject(
                    ErrorCode::MediaUnavailable,
                    "the media worker is unavailable",
                )
                .await;
        }
    }
    Ok(())
}

/// A key change goes to the media worker at once (no registry, no presence event): the talker's next
/// packet depends on it. Key-downs beyond the rate are refused with `rate_limited` and counted; a
/// key-up is never refused, so a flood cannot hold the gate open.
pub(super) async fn on_ptt_key<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut super::Member,
    key: PttKey,
    now: Instant,
) -> Flow {
    if !member.can_publish {
        let message = "the access token does not allow publishing audio";
        return wire.reject(ErrorCode::Forbidden, message).await;
    }
    if key.down == member.ptt_keys.down {
        return Ok(());
    }
    if key.down && !member.ptt_keys.allow(now) {
        wire.ctx.metrics().limit_hit(SessionLimit::PttKeyFlood);
        let message = format!(
            "push-to-talk key-downs are limited to {PTT_KEY_BURST} at once and {PTT_KEY_PER_SEC} per second"
        );
        return wire.reject(ErrorCode::RateLimited, message).await;
    }
    member.ptt_keys.down = key.down;
    send_key(member).await;
    Ok(())
}

pub(super) async fn on_moderate<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut super::Member,
    request: Moderate,
) -> Flow {
    if !member.moderator {
        let message = "the access token has no moderator grant";
        return wire.reject(ErrorCode::Forbidden, message).await;
    }
    if request.action == ModerateAction::Move && request.room.is_none() {
        let message = "moderate action move needs a room";
        return wire.reject(ErrorCode::BadMessage, message).await;
    }
    let room = member.membership.room.clone();
    let result = wire
        .ctx
        .moderate(&room, &request.sid, request.action, request.room.as_deref())
        .await;
    match result {
        Ok(()) => {
            wire.ctx.metrics().moderated(request.action, false);
            tracing::info!(sid = %member.sid, target = %request.sid,
                action = request.action.as_str(), "moderation");
            Ok(())
        }
        Err(AdminError::ParticipantNotFound | AdminError::RoomNotFound) => {
            let message = "no such participant in this room";
            wire.reject(ErrorCode::ParticipantNotFound, message).await
        }
        // A participant on another node of a room spanning nodes that could not be reached (or no
        // cluster to reach it through): not found from here, the message says why.
        Err(error @ (AdminError::RemoteParticipant | AdminError::NodeUnavailable)) => {
            wire.reject(ErrorCode::ParticipantNotFound, error.to_string())
                .await
        }
        Err(error @ (AdminError::InvalidRoomName | AdminError::SameRoom)) => {
            wire.reject(ErrorCode::BadMessage, error.to_string()).await
        }
        Err(error) => {
            // The registry has the change and the room was told; the worker may follow late.
            tracing::warn!(%error, action = request.action.as_str(), "moderation incomplete");
            Ok(())
        }
    }
}

impl<T, E> Session<T>
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    /// A moderator or operator moved the participant to `to`: it leaves its room (the others see
    /// `participant_left` reason `moved`) and its media peer, joins `to` as a new participant with the
    /// same identity and grants, and is sent `moved`; the client offers anew. A refused admission (room
    /// full, banned, draining) ends the session with that error.
    pub(super) async fn on_moved(&mut self, to: String) -> Flow {
        let Some(mut member) = self.joined.take() else {
            return Ok(());
        };
        let ctx = Arc::clone(&self.wire.ctx);
        member
            .membership
            .end(ParticipantLeftReason::Moved, LeaveReason::Moved)
            .await;
        let (events, presence) = mpsc::channel(ctx.config().presence_queue);
        let request = JoinRequest {
            room: to.clone(),
            identity: member.identity.clone(),
            name: member.name.clone(),
            can_publish: member.can_publish,
            can_subscribe: member.can_subscribe,
            ptt: member.ptt_forced,
            team: member.talk.team.clone(),
            shout: member.talk.shout,
            events,
            shard: None,
        };
        let admission = match ctx.registry().admit(request, &ctx.draining) {
            Ok(admission) => admission,
            Err(error) => return self.wire.reject(error.code(), error.to_string()).await,
        };
        tracing::info!(from = %member.membership.room, to = %to, "participant moved");
        member.membership = Membership {
            ctx: Arc::clone(&ctx),
            room: to,
            id: admission.id,
            worker: None,
            in_registry: true,
        };
        member.sid = admission.participant.sid.clone();
        member.settings = admission.settings;
        member.presence = presence;
        member.removed = admission.removed;
        member.moved = admission.moved;
        member.media = Media::None;
        member.ptt_keys.down = false;
        // Whom it talked to and how loud it heard others were about the old room's participants.
        member.talk.reset();
        let span = tracing::Span::current();
        span.record("participant", member.sid.as_str());
        span.record("room", member.membership.room.as_str());
        self.joined = Some(member);
        let reply = ServerMessage::Moved(Moved {
            participant: admission.participant,
            room: admission.room,
            participants: admission.others,
        });
        self.wire.send(&reply).await
    }
}
