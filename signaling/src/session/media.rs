//! The session's media negotiation: the offer sent to the room's media worker, its answer, the media
//! events relayed to the client, and mute.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use super::{truncate, Exit, Flow, Member, Session, Wire, WsFrame, MAX_DETAIL_CHARS};
use crate::media::{MediaCommand, MediaError, MediaEvent};
use crate::protocol::{
    Answer, DominantSpeaker, ErrorCode, MediaConnectionState, MediaState, Mute, Offer,
    ServerMessage, Slot, Slots,
};
use crate::registry::Actor;
use crate::ChangeError;

/// The reply to `MediaCommand::Connect`, under way.
pub(super) type PendingAnswer = Pin<Box<dyn Future<Output = Result<String, ConnectError>> + Send>>;

/// The session's media negotiation.
pub(super) enum Media {
    /// No offer yet, or the last one was refused with `bad_sdp`.
    None,
    /// An offer went to the media worker; its answer is awaited.
    Offered {
        answer: PendingAnswer,
        events: mpsc::Receiver<MediaEvent>,
    },
    /// The client has its answer; media events flow.
    Answered { events: mpsc::Receiver<MediaEvent> },
    /// An ICE restart offer went to the media worker; media events flow meanwhile.
    Restarting {
        answer: PendingAnswer,
        events: mpsc::Receiver<MediaEvent>,
    },
}

impl Media {
    /// Whether the media worker has the participant's peer (its answer was sent).
    pub(super) fn is_answered(&self) -> bool {
        matches!(self, Media::Answered { .. } | Media::Restarting { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("the media worker did not answer in time")]
    Timeout,
    #[error("the media worker is gone")]
    WorkerGone,
    #[error(transparent)]
    Media(MediaError),
}

impl<T, E> Session<T>
where
    T: Stream<Item = Result<WsFrame, E>> + Sink<WsFrame> + Unpin,
    E: fmt::Display,
{
    pub(super) async fn on_answer(&mut self, answer: Result<String, ConnectError>) -> Flow {
        let Some(member) = self.joined.as_mut() else {
            return Ok(());
        };
        let events = match std::mem::replace(&mut member.media, Media::None) {
            Media::Offered { events, .. } => events,
            Media::Restarting { events, .. } => {
                member.media = Media::Answered { events };
                return self.on_restart_answer(answer).await;
            }
            // Only an offered session polls for an answer.
            other => {
                member.media = other;
                return Ok(());
            }
        };
        match answer {
            Ok(sdp) => {
                member.media = Media::Answered { events };
                // A position the client sent before its peer existed.
                super::position::send_position(member);
                super::control::key_after_answer(member).await;
                super::talk::talk_after_answer(member).await;
                self.wire.send(&ServerMessage::Answer(Answer { sdp })).await
            }
            Err(ConnectError::Media(MediaError::BadSdp(why))) => {
                let message = format!(
                    "the offer cannot be used: {}",
                    truncate(&why, MAX_DETAIL_CHARS)
                );
                self.wire.reject(ErrorCode::BadSdp, message).await
            }
            Err(ConnectError::Media(error @ MediaError::BadRoomSettings(_))) => {
                tracing::warn!(sid = %member.sid, %error, "the room's settings were refused");
                self.wire
                    .reject(ErrorCode::BadRoomSettings, error.to_string())
                    .await
            }
            Err(ConnectError::Media(error @ MediaError::RoomSettingsConflict)) => {
                tracing::warn!(sid = %member.sid, %error, "offer refused");
                self.wire
                    .reject(ErrorCode::RoomSettingsConflict, error.to_string())
                    .await
            }
            Err(
                error @ (ConnectError::Timeout
                | ConnectError::WorkerGone
                | ConnectError::Media(MediaError::Unavailable)),
            ) => {
                tracing::warn!(sid = %member.sid, %error, "offer not answered");
                let message = "no media worker could take the session";
                self.wire.reject(ErrorCode::MediaUnavailable, message).await
            }
            Err(error) => {
                tracing::error!(sid = %member.sid, %error, "media worker refused a fresh participant");
                self.wire
                    .reject(ErrorCode::Internal, "internal error")
                    .await
            }
        }
    }

    /// The answer to an ICE restart offer; the peer (and the session) carry on either way.
    async fn on_restart_answer(&mut self, answer: Result<String, ConnectError>) -> Flow {
        match answer {
            Ok(sdp) => {
                self.wire.ctx.metrics().ice_restarted();
                self.wire.send(&ServerMessage::Answer(Answer { sdp })).await
            }
            Err(ConnectError::Media(MediaError::BadSdp(why))) => {
                let message = format!(
                    "the ICE restart offer cannot be used: {}",
                    truncate(&why, MAX_DETAIL_CHARS)
                );
                self.wire.reject(ErrorCode::BadSdp, message).await
            }
            // The peer is gone (its Disconnected event ends the session) or the worker is.
            Err(error) => {
                tracing::warn!(%error, "ICE restart offer not answered");
                let message = "no media worker could answer the ICE restart";
                self.wire.reject(ErrorCode::MediaUnavailable, message).await
            }
        }
    }

    pub(super) async fn on_media_event(&mut self, event: Option<MediaEvent>) -> Flow {
        let message = match event {
            Some(MediaEvent::Connected) => {
                let ctx = &self.wire.ctx;
                ctx.metrics()
                    .media_connected(self.opened.elapsed().as_secs_f64());
                ServerMessage::MediaState(MediaState {
                    state: MediaConnectionState::Connected,
                })
            }
            Some(MediaEvent::Disconnected { reason }) => {
                tracing::debug!(%reason, "media disconnected");
                return self.media_lost().await;
            }
            None => {
                tracing::debug!("media worker dropped the session's events");
                return self.media_lost().await;
            }
            Some(MediaEvent::Speakers(speakers)) => {
                // Serialized once for the room ([`SpeakerLevels`](crate::media::SpeakerLevels)).
                let text = speakers.text().to_owned();
                return self.wire.send_frame(WsFrame::Text(text)).await;
            }
            Some(MediaEvent::DominantSpeaker(id)) => {
                ServerMessage::DominantSpeaker(DominantSpeaker {
                    sid: id.to_string(),
                })
            }
            Some(MediaEvent::Positions(positions)) => {
                ServerMessage::Positions(super::position::positions_message(positions))
            }
            Some(MediaEvent::Slots(slots)) => ServerMessage::Slots(Slots {
                slots: slots
                    .into_iter()
                    .map(|s| Slot {
                        slot: s.slot,
                        mid: s.mid,
                        sid: s.participant.map(|p| p.to_string()),
                        ssrc: s.ssrc,
                    })
                    .collect(),
            }),
        };
        self.wire.send(&message).await
    }

    pub(super) async fn media_lost(&mut self) -> Flow {
        let message = ServerMessage::MediaState(MediaState {
            state: MediaConnectionState::Disconnected,
        });
        // The session ends either way; a dead socket changes nothing.
        let _ = self.wire.send(&message).await;
        Err(Exit::MediaDisconnected)
    }
}

/// Sends the offer to the room's media worker; the answer arrives through
/// [`next_member_input`](super::next_member_input).
pub(super) async fn on_offer<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    offer: Offer,
) -> Flow {
    match member.media {
        Media::None => {}
        Media::Offered { .. } | Media::Restarting { .. } => {
            let message = "an offer is already being answered";
            return wire.reject(ErrorCode::BadMessage, message).await;
        }
        Media::Answered { .. } => return restart_ice(wire, member, offer),
    }
    let config = wire.ctx.config();
    let worker = wire
        .ctx
        .router()
        .route(&member.membership.room, member.membership.id);
    let (events, events_rx) = mpsc::channel(config.media_event_queue);
    let (reply, reply_rx) = oneshot::channel();
    let state = wire
        .ctx
        .registry()
        .attach_media(&member.membership.room, member.membership.id)
        .unwrap_or_default();
    let command = MediaCommand::Connect {
        room: member.membership.room.clone(),
        settings: member.settings,
        participant: member.membership.id,
        can_publish: member.can_publish,
        can_subscribe: member.can_subscribe,
        // The registry owns the state (the client's `mute` and the admin API both set it there); from
        // now on `Signaling::set_muted` also tells the worker.
        muted: state.muted,
        deafened: state.deafened,
        ptt: state.ptt,
        team: member.talk.team.clone(),
        shout: member.talk.shout,
        // A session's client plays its slots (a mixed room's mix is its one slot).
        hears_mix: false,
        offer_sdp: offer.sdp,
        events,
        reply,
    };
    member.membership.worker = Some(worker.clone());
    member.media = Media::Offered {
        answer: Box::pin(connect(worker, command, reply_rx, config.media_timeout())),
        events: events_rx,
    };
    Ok(())
}

/// A second offer on an answered session: an ICE restart of its peer (the media worker refuses anything
/// else with `bad_sdp`).
fn restart_ice<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    offer: Offer,
) -> Flow {
    let Some(worker) = member.membership.worker.clone() else {
        // Answered sessions have their worker; nothing to restart otherwise.
        return Ok(());
    };
    let Media::Answered { events } = std::mem::replace(&mut member.media, Media::None) else {
        return Ok(());
    };
    let (reply, reply_rx) = oneshot::channel();
    let command = MediaCommand::RestartIce {
        participant: member.membership.id,
        offer_sdp: offer.sdp,
        reply,
    };
    let limit = wire.ctx.config().media_timeout();
    member.media = Media::Restarting {
        answer: Box::pin(connect(worker, command, reply_rx, limit)),
        events,
    };
    Ok(())
}

/// Delivers `Connect` (or `RestartIce`) and waits for its reply, all within `limit`.
pub(super) async fn connect(
    worker: mpsc::Sender<MediaCommand>,
    command: MediaCommand,
    reply: oneshot::Receiver<Result<String, MediaError>>,
    limit: Duration,
) -> Result<String, ConnectError> {
    let deadline = Instant::now() + limit;
    match timeout_at(deadline, worker.send(command)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(_)) => return Err(ConnectError::WorkerGone),
        Ok(Ok(())) => {}
    }
    match timeout_at(deadline, reply).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Err(_)) => Err(ConnectError::WorkerGone),
        Ok(Ok(answer)) => answer.map_err(ConnectError::Media),
    }
}

pub(super) async fn on_mute<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    mute: Mute,
) -> Flow {
    if !member.can_publish {
        let message = "the access token does not allow publishing audio";
        return wire.reject(ErrorCode::Forbidden, message).await;
    }
    let membership = &member.membership;
    let set = wire
        .ctx
        .set_muted(&membership.room, membership.id, mute.muted, Actor::Own)
        .await;
    if let Err(ChangeError::ServerMuted(refused)) = set {
        return wire
            .reject(ErrorCode::ServerMuted, refused.to_string())
            .await;
    }
    if set.is_err() {
        tracing::warn!(sid = %member.sid, "media worker did not take a mute command");
        return wire
            .reject(
                ErrorCode::MediaUnavailable,
                "the media worker is unavailable",
            )
            .await;
    }
    Ok(())
}
