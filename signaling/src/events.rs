//! Room lifecycle events for observers outside the media path (the server turns them into webhooks).
//!
//! The registry hands them over with `try_send` on a bounded queue while it holds its lock, so an
//! observer that does not keep up loses events (counted in `chorus_room_events_dropped_total`) and never
//! slows a join or a leave down.

use crate::protocol::{ParticipantInfo, ParticipantLeftReason, RoomInfo};

/// Something that happened to a room or its participants.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// A room came into existence (first join, or created through the admin API).
    RoomStarted { room: RoomInfo },
    /// A room went away (last participant left, empty timeout, or deleted through the admin API).
    RoomFinished { room: RoomInfo },
    /// A participant was admitted to a room.
    ParticipantJoined {
        room: RoomInfo,
        participant: ParticipantInfo,
    },
    /// A participant left its room.
    ParticipantLeft {
        room: RoomInfo,
        participant: ParticipantInfo,
        reason: ParticipantLeftReason,
    },
}

impl RoomEvent {
    /// The event's name in webhooks: `room_started`, `room_finished`, `participant_joined`,
    /// `participant_left`.
    pub const fn name(&self) -> &'static str {
        match self {
            RoomEvent::RoomStarted { .. } => "room_started",
            RoomEvent::RoomFinished { .. } => "room_finished",
            RoomEvent::ParticipantJoined { .. } => "participant_joined",
            RoomEvent::ParticipantLeft { .. } => "participant_left",
        }
    }

    /// The room the event is about.
    pub fn room(&self) -> &RoomInfo {
        match self {
            RoomEvent::RoomStarted { room }
            | RoomEvent::RoomFinished { room }
            | RoomEvent::ParticipantJoined { room, .. }
            | RoomEvent::ParticipantLeft { room, .. } => room,
        }
    }
}
