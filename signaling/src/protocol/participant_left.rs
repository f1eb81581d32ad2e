//! `participant_left`: someone else left the room.

use serde::{Deserialize, Serialize};

/// Why a participant left, as other clients are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantLeftReason {
    /// `leave`, or the socket closed.
    Left,
    /// The media connection was lost or timed out (or the session went silent).
    Disconnected,
    /// An operator removed the participant (admin API: kick, or room deleted).
    Kicked,
    /// A newer session with the same identity took the participant's place (a `participant_joined`
    /// for it follows).
    Replaced,
    /// A moderator or operator moved the participant to another room.
    Moved,
}

/// Server → client: another participant left the room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    pub sid: String,
    pub reason: ParticipantLeftReason,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        for (reason, text) in [
            (
                ParticipantLeftReason::Left,
                r#"{"type":"participant_left","sid":"PA_9a0b1c2d3e4f","reason":"left"}"#,
            ),
            (
                ParticipantLeftReason::Disconnected,
                r#"{"type":"participant_left","sid":"PA_9a0b1c2d3e4f","reason":"disconnected"}"#,
            ),
            (
                ParticipantLeftReason::Kicked,
                r#"{"type":"participant_left","sid":"PA_9a0b1c2d3e4f","reason":"kicked"}"#,
            ),
            (
                ParticipantLeftReason::Replaced,
                r#"{"type":"participant_left","sid":"PA_9a0b1c2d3e4f","reason":"replaced"}"#,
            ),
        ] {
            let msg = ServerMessage::ParticipantLeft(ParticipantLeft {
                sid: "PA_9a0b1c2d3e4f".into(),
                reason,
            });
            assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
            assert_eq!(
                serde_json::from_str::<ServerMessage>(text).expect("parses"),
                msg
            );
        }
    }
}
