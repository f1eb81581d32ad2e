//! `talk` and `volume`: whom the participant's voice is for, and how loud it hears each other participant.
//! Both are checked here (whisper targets and volume subjects must be in the room, on this node or, in a
//! room spanning nodes, another one: the roster's `remote` participants), kept in the session (a
//! resumed session keeps them; a move resets them) and handed to the media worker once it has the peer.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::Sink;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::control::Bucket;
use super::{Flow, Member, Wire, WsFrame};
use crate::media::{MediaCommand, ParticipantId, TalkTarget, TeamId, Volume};
use crate::metrics::SessionLimit;
use crate::protocol::{ErrorCode, SetVolume, Talk};

/// `talk` and `volume` messages a session may send in a burst …
pub const TALK_BURST: u32 = 20;
/// … and per second in the long run.
pub const TALK_PER_SEC: u32 = 10;
/// The most participants a session may have a volume for at once (one per other participant of a large
/// room; setting a volume back to 0 frees its place).
pub const MAX_VOLUMES: usize = 1000;

/// How long a `talk` or `volume` may wait for room in the media worker's queue: a whisper that did not
/// reach the worker would be heard by the room, so it is waited for (and refused if it cannot be sent).
const SEND_LIMIT: Duration = Duration::from_secs(1);

/// The session's talk groups: its team and shout role (fixed at the join), its talk target, its volumes.
#[derive(Debug)]
pub(super) struct TalkState {
    pub team: Option<TeamId>,
    pub shout: bool,
    pub target: TalkTarget<ParticipantId>,
    pub volumes: HashMap<ParticipantId, Volume>,
    bucket: Bucket,
}

impl TalkState {
    pub fn new(now: Instant, team: Option<TeamId>, shout: bool) -> Self {
        Self {
            team,
            shout,
            target: TalkTarget::Room,
            volumes: HashMap::new(),
            bucket: Bucket::new(now, TALK_BURST, TALK_PER_SEC),
        }
    }

    /// After a move to another room: talk to the room, no volumes (they named the old room's people).
    pub fn reset(&mut self) {
        self.target = TalkTarget::Room;
        self.volumes.clear();
    }
}

/// The team a joining participant gets: the token's claim decides; without one, the join may pick.
pub(super) fn team_for(
    claim: Option<TeamId>,
    asked: Option<TeamId>,
) -> Result<Option<TeamId>, String> {
    match (claim, asked) {
        (Some(claim), Some(asked)) if claim != asked => Err(format!(
            "the access token assigns team {claim}; join.team may not differ"
        )),
        (Some(team), _) | (None, Some(team)) => Ok(Some(team)),
        (None, None) => Ok(None),
    }
}

async fn rate_limit<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    now: Instant,
) -> Option<Flow> {
    if member.talk.bucket.allow(now) {
        return None;
    }
    wire.ctx.metrics().limit_hit(SessionLimit::TalkFlood);
    let message = format!(
        "talk and volume are limited to {TALK_BURST} at once and {TALK_PER_SEC} per second"
    );
    Some(wire.reject(ErrorCode::RateLimited, message).await)
}

pub(super) async fn on_talk<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    talk: Talk,
    now: Instant,
) -> Flow {
    if let Some(flow) = rate_limit(wire, member, now).await {
        return flow;
    }
    let target = match talk.target {
        TalkTarget::Room => TalkTarget::Room,
        TalkTarget::Team if member.talk.team.is_none() => {
            let message = "team talk needs a team (token claim or join.team)";
            return wire.reject(ErrorCode::BadTarget, message).await;
        }
        TalkTarget::Team => TalkTarget::Team,
        TalkTarget::Whisper(sids) => {
            let mut ids = Vec::with_capacity(sids.len());
            for sid in &sids {
                let found = wire
                    .ctx
                    .registry()
                    .find_audible(&member.membership.room, sid);
                match found {
                    Ok(id) if id == member.membership.id => {
                        let message = "a whisper is for others, not for oneself";
                        return wire.reject(ErrorCode::BadTarget, message).await;
                    }
                    Ok(id) => {
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    Err(_) => {
                        let sid = super::truncate(sid, 20);
                        let message = format!("{sid} is not a participant of this room");
                        return wire.reject(ErrorCode::BadTarget, message).await;
                    }
                }
            }
            TalkTarget::Whisper(ids)
        }
    };
    if member.talk.target == target {
        return Ok(());
    }
    member.talk.target = target.clone();
    let command = MediaCommand::Talk {
        participant: member.membership.id,
        target,
    };
    deliver(wire, member, command).await
}

pub(super) async fn on_volume<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    request: SetVolume,
    now: Instant,
) -> Flow {
    if let Some(flow) = rate_limit(wire, member, now).await {
        return flow;
    }
    let speaker = match wire
        .ctx
        .registry()
        .find_audible(&member.membership.room, &request.sid)
    {
        Ok(id) if id == member.membership.id => {
            let message = "a volume is for another participant";
            return wire.reject(ErrorCode::BadTarget, message).await;
        }
        Ok(id) => id,
        Err(_) => {
            let message = "no such participant in this room";
            return wire.reject(ErrorCode::ParticipantNotFound, message).await;
        }
    };
    let volumes = &mut member.talk.volumes;
    let before = volumes.get(&speaker).copied().unwrap_or_default();
    if before == request.volume {
        return Ok(());
    }
    if request.volume == Volume::UNCHANGED {
        volumes.remove(&speaker);
    } else {
        if !volumes.contains_key(&speaker) && volumes.len() >= MAX_VOLUMES {
            let message = format!("at most {MAX_VOLUMES} participants may have a volume");
            return wire.reject(ErrorCode::RateLimited, message).await;
        }
        volumes.insert(speaker, request.volume);
    }
    let command = MediaCommand::Volume {
        listener: member.membership.id,
        speaker,
        volume: request.volume,
    };
    deliver(wire, member, command).await
}

/// Sends a command to the media worker if it has the participant's peer (else it follows the answer).
async fn deliver<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    command: MediaCommand,
) -> Flow {
    let Some(worker) = member
        .membership
        .worker
        .clone()
        .filter(|_| member.media.is_answered())
    else {
        return Ok(());
    };
    if send(&worker, command).await {
        return Ok(());
    }
    tracing::warn!(sid = %member.sid, "media worker did not take a talk command");
    let message = "the media worker is unavailable";
    wire.reject(ErrorCode::MediaUnavailable, message).await
}

async fn send(worker: &mpsc::Sender<MediaCommand>, command: MediaCommand) -> bool {
    match worker.try_send(command) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(command)) => {
            matches!(
                tokio::time::timeout(SEND_LIMIT, worker.send(command)).await,
                Ok(Ok(()))
            )
        }
    }
}

/// After the answer: the talk target and volumes set before the worker had the peer reach it.
pub(super) async fn talk_after_answer(member: &mut Member) {
    let Some(worker) = member.membership.worker.clone() else {
        return;
    };
    let id = member.membership.id;
    let mut commands = Vec::new();
    if member.talk.target != TalkTarget::Room {
        commands.push(MediaCommand::Talk {
            participant: id,
            target: member.talk.target.clone(),
        });
    }
    for (&speaker, &volume) in &member.talk.volumes {
        commands.push(MediaCommand::Volume {
            listener: id,
            speaker,
            volume,
        });
    }
    for command in commands {
        if !send(&worker, command).await {
            tracing::warn!(sid = %member.sid, "media worker did not take a talk command");
        }
    }
}
