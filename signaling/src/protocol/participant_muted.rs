//! `participant_muted`: a participant muted or unmuted.

use serde::{Deserialize, Serialize};

/// Server → client: a participant's mute state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantMuted {
    pub sid: String,
    pub muted: bool,
    /// The change came from a moderator or operator; when muting, the participant cannot unmute itself
    /// (`server_muted`). Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_moderator: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::ParticipantMuted(ParticipantMuted {
            sid: "PA_9a0b1c2d3e4f".into(),
            muted: true,
            by_moderator: false,
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"participant_muted","sid":"PA_9a0b1c2d3e4f","muted":true}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
