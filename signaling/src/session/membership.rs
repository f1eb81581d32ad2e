//! Joining a room: the `join` checks and admission, and the membership released exactly once.

use std::fmt;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::talk::{team_for, TalkState};
use super::{Exit, Flow, Media, Member, Membership, Missed, PttKeys, Resumable, Session, WsFrame};
use crate::auth::{unix_now, verify_token, Claims};
use crate::locator::{LocateError, Location};
use crate::media::MediaCommand;
use crate::metrics::LeaveReason;
use crate::protocol::{
    ErrorCode, Join, ParticipantInfo, ParticipantLeftReason, Redirect, RoomInfo, ServerMessage,
    SessionState, SharedParticipant, PROTOCOL_VERSION,
};
use crate::registry::JoinRequest;
use crate::roster::ShardSeed;
use crate::{Signaling, SERVER_VERSION};

impl Membership {
    pub(crate) async fn end(&mut self, reason: ParticipantLeftReason, metric: LeaveReason) {
        if let Some(worker) = &self.worker {
            let command = MediaCommand::Leave {
                participant: self.id,
            };
            match worker.try_send(command) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(command)) => {
                    let limit = self.ctx.config().media_timeout();
                    if timeout(limit, worker.send(command)).await.is_err() {
                        tracing::warn!(room = %self.room, "media worker queue stayed full; leave not delivered");
                    }
                }
            }
            self.worker = None;
        }
        if std::mem::take(&mut self.in_registry) {
            self.ctx.registry().leave(&self.room, self.id, reason);
            self.ctx.metrics().left(metric);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            let command = MediaCommand::Leave {
                participant: self.id,
            };
            if let Err(mpsc::error::TrySendError::Full(command)) = worker.try_send(command) {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let limit = self.ctx.config().media_timeout();
                    runtime.spawn(async move {
                        let _ = timeout(limit, worker.send(command)).await;
                    });
                }
            }
        }
        if std::mem::take(&mut self.in_registry) {
            self.ctx
                .registry()
                .leave(&self.room, self.id, ParticipantLeftReason::Left);
            self.ctx.metrics().left(LeaveReason::Aborted);
        }
    }
}

impl<T, E> Session<T>
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    pub(super) async fn on_join(&mut self, join: Join, received: Instant) -> Flow {
        let ctx = Arc::clone(&self.wire.ctx);
        if self.joined.is_some() {
            ctx.metrics().join_failed(ErrorCode::AlreadyJoined);
            let message = "this session has already joined a room";
            return self.wire.reject(ErrorCode::AlreadyJoined, message).await;
        }
        let checked = match check(&ctx, join) {
            Ok(checked) => checked,
            Err((code, message)) => {
                ctx.metrics().join_failed(code);
                return self.wire.reject(code, message).await;
            }
        };
        let shard = match self.locate(&ctx, &checked.claims.room).await? {
            Located::Admit(shard) => shard,
            Located::Redirect(url) => {
                ctx.metrics().join_redirected();
                let room = checked.claims.room;
                tracing::debug!(%room, %url, "room lives on another node: redirected");
                self.wire
                    .send(&ServerMessage::Redirect(Redirect { url, room }))
                    .await?;
                return Err(Exit::Redirected);
            }
        };
        match admit(&ctx, checked, shard) {
            Err((code, message)) => {
                ctx.metrics().join_failed(code);
                self.wire.reject(code, message).await
            }
            Ok((member, reply)) => {
                let sid = member.sid.clone();
                self.joined = Some(member);
                self.wire.send(&reply).await?;
                ctx.metrics().join_ok(received.elapsed().as_secs_f64());
                // The transport's span (see `run_session`) carries room and participant from here on.
                let span = tracing::Span::current();
                span.record("participant", sid.as_str());
                if let Some(m) = &self.joined {
                    span.record("room", m.membership.room.as_str());
                }
                tracing::debug!(%sid, "participant joined");
                Ok(())
            }
        }
    }

    /// This node handed the room to the node at `url` (a drain in a cluster): the client is told to rejoin
    /// there, and the session ends (its participant leaves this node's room).
    pub(super) async fn on_migrated(&mut self, url: String) -> Flow {
        let Some(member) = &self.joined else {
            return Ok(());
        };
        let room = member.membership.room.clone();
        tracing::debug!(%room, %url, "room handed to another node: redirected");
        self.wire
            .send(&ServerMessage::Redirect(Redirect { url, room }))
            .await?;
        Err(Exit::Migrated)
    }

    /// On a node of a cluster: where `room` lives. A locator that cannot tell ends the session with
    /// `cluster_unavailable`.
    async fn locate(&mut self, ctx: &Arc<Signaling>, room: &str) -> Result<Located, Exit> {
        let Some(locator) = ctx.locator() else {
            return Ok(Located::Admit(None));
        };
        let located = timeout(
            ctx.config().media_timeout(),
            locator.locate(room, ctx.hosts(room)),
        )
        .await
        .unwrap_or(Err(LocateError::Unreachable));
        let error = match located {
            Ok(Location::Here) => return Ok(Located::Admit(None)),
            Ok(Location::Shard(seed)) => return Ok(Located::Admit(Some(seed))),
            Ok(Location::Elsewhere { url }) => return Ok(Located::Redirect(url)),
            Err(error) => error,
        };
        ctx.metrics().join_failed(ErrorCode::ClusterUnavailable);
        let message = format!("{error}: cannot join a room this node does not host; retry later");
        match self
            .wire
            .reject(ErrorCode::ClusterUnavailable, message)
            .await
        {
            // `cluster_unavailable` is fatal: `reject` always ends the session.
            Ok(()) => Err(Exit::Fatal(ErrorCode::ClusterUnavailable)),
            Err(exit) => Err(exit),
        }
    }
}

/// What a session does with a located join.
enum Located {
    /// Admit it here (with what a shard of a room spanning nodes brings).
    Admit(Option<ShardSeed>),
    /// Redirect the client to this signaling URL.
    Redirect(String),
}

/// A `join` whose protocol version and token have been checked.
pub(super) struct CheckedJoin {
    join: Join,
    claims: Claims,
}

/// Checks a `join`'s protocol version, token and room: the verified claims, or the error to send.
fn check(ctx: &Signaling, join: Join) -> Result<CheckedJoin, (ErrorCode, String)> {
    if join.protocol != PROTOCOL_VERSION {
        let message = format!(
            "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
            join.protocol
        );
        return Err((ErrorCode::UnsupportedProtocol, message));
    }
    let claims = verify_token(&join.token, ctx.api_keys(), unix_now())
        .map_err(|e| (e.code(), e.to_string()))?;
    if join.room.as_ref().is_some_and(|room| *room != claims.room) {
        let message = "join.room differs from the room of the access token";
        return Err((ErrorCode::RoomMismatch, message.into()));
    }
    Ok(CheckedJoin { join, claims })
}

/// Admits a checked `join` to its room: the new member and its `joined` reply, or the error to send.
pub(super) fn admit(
    ctx: &Arc<Signaling>,
    checked: CheckedJoin,
    shard: Option<ShardSeed>,
) -> Result<(Member, ServerMessage), (ErrorCode, String)> {
    let CheckedJoin { join, claims } = checked;
    let name = join
        .name
        .filter(|name| !name.is_empty())
        .or_else(|| claims.name.clone().filter(|name| !name.is_empty()))
        .unwrap_or_else(|| claims.sub.clone());
    let team = team_for(claims.team.clone(), join.team).map_err(|m| (ErrorCode::Forbidden, m))?;
    let (events, presence) = mpsc::channel(ctx.config().presence_queue);
    let request = JoinRequest {
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        name: name.clone(),
        // A listener only never publishes: as a token without `can_publish`.
        can_publish: claims.can_publish && !join.listen_only,
        can_subscribe: claims.can_subscribe,
        ptt: claims.ptt,
        team: team.clone(),
        shout: claims.shout,
        events,
        shard,
    };
    let admission = ctx
        .registry()
        .admit(request, &ctx.draining)
        .map_err(|e| (e.code(), e.to_string()))?;
    let (resume, resume_token) = Resumable::issue(ctx);
    let member = Member {
        membership: Membership {
            ctx: Arc::clone(ctx),
            room: claims.room,
            id: admission.id,
            worker: None,
            in_registry: true,
        },
        sid: admission.participant.sid.clone(),
        settings: admission.settings,
        identity: claims.sub,
        name,
        can_publish: admission.participant.can_publish,
        can_subscribe: admission.participant.can_subscribe,
        moderator: claims.moderator,
        ptt_forced: claims.ptt,
        ptt_keys: PttKeys::new(Instant::now()),
        presence,
        presence_not_before: None,
        removed: admission.removed,
        moved: admission.moved,
        migrations: ctx.migrations(),
        media: Media::None,
        resume,
        missed: Missed::default(),
        placement: Default::default(),
        talk: TalkState::new(Instant::now(), team, claims.shout),
    };
    let reply = ServerMessage::Joined(session_state(
        ctx,
        admission.participant,
        admission.room,
        admission.others,
        resume_token,
    ));
    Ok((member, reply))
}

/// What `joined` and `resumed` tell the client, with fresh TURN credentials for the participant (counted).
pub(super) fn session_state(
    ctx: &Signaling,
    participant: ParticipantInfo,
    room: RoomInfo,
    participants: Vec<SharedParticipant>,
    resume_token: String,
) -> SessionState {
    let ice_servers = ctx.config().turn.ice_servers(&participant.sid, unix_now());
    if !ice_servers.is_empty() {
        ctx.metrics().turn_credential_issued();
    }
    SessionState {
        protocol: PROTOCOL_VERSION,
        server_version: SERVER_VERSION.to_owned(),
        participant,
        room,
        participants,
        resume_token,
        resume_window_ms: ctx.config().resume_window_ms,
        ice_servers,
    }
}
