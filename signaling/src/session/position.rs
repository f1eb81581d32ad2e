//! `position`: a participant's place in a spatial room, checked, rate-limited and handed to the media
//! worker; and the `positions` the worker reports back.

use futures_util::Sink;
use tokio::time::Instant;

use super::{Flow, Member, Wire, WsFrame};
use crate::media::{MediaCommand, ParticipantId, Position};
use crate::metrics::PositionResult;
use crate::protocol::{
    ErrorCode, PositionUpdate, Positions, SpeakerPosition, MIN_POSITION_INTERVAL,
};

/// The session's side of its position.
#[derive(Debug, Default)]
pub(super) struct Placement {
    /// The last accepted position, kept until the media worker has the participant (it is sent after the
    /// answer).
    position: Option<Position>,
    accepted_at: Option<Instant>,
}

pub(super) async fn on_position<T: Sink<WsFrame> + Unpin>(
    wire: &mut Wire<T>,
    member: &mut Member,
    update: PositionUpdate,
    received: Instant,
) -> Flow {
    let metrics = wire.ctx.metrics();
    if member.settings.spatial.is_none() {
        metrics.position(PositionResult::Refused);
        let message = "this room has no positional voice";
        return wire.reject(ErrorCode::BadPosition, message).await;
    }
    let position = match Position::new(update.x, update.y, update.z, update.yaw_deg) {
        Ok(p) => p,
        Err(why) => {
            metrics.position(PositionResult::Refused);
            return wire.reject(ErrorCode::BadPosition, why.to_string()).await;
        }
    };
    let placement = &mut member.placement;
    if placement
        .accepted_at
        .is_some_and(|t| received.saturating_duration_since(t) < MIN_POSITION_INTERVAL)
    {
        metrics.position(PositionResult::RateLimited);
        return Ok(());
    }
    placement.accepted_at = Some(received);
    placement.position = Some(position);
    metrics.position(PositionResult::Accepted);
    if member.media.is_answered() {
        send_position(member);
    }
    Ok(())
}

/// Hand the last accepted position to the media worker, if the participant is on one. A full worker queue
/// drops it (the next one replaces it anyway); the session never waits on the media loop for a position.
pub(super) fn send_position(member: &mut Member) {
    let (Some(worker), Some(position)) = (&member.membership.worker, member.placement.position)
    else {
        return;
    };
    let command = MediaCommand::Position {
        participant: member.membership.id,
        position,
    };
    if worker.try_send(command).is_err() {
        member
            .membership
            .ctx
            .metrics()
            .position(PositionResult::Dropped);
    }
}

/// The `positions` message for what the media worker reported.
pub(super) fn positions_message(positions: Vec<(ParticipantId, Position)>) -> Positions {
    Positions {
        positions: positions
            .into_iter()
            .map(|(id, p)| SpeakerPosition {
                sid: id.to_string(),
                x: p.x,
                y: p.y,
                z: p.z,
                yaw_deg: p.yaw_deg,
            })
            .collect(),
    }
}
