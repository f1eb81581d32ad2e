//! `participant_joined`: someone else entered the room.

use serde::{Deserialize, Serialize};

use super::ParticipantInfo;

/// Server → client: another participant joined the room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantJoined {
    pub participant: ParticipantInfo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::ParticipantJoined(ParticipantJoined {
            participant: ParticipantInfo {
                name: "Bob".into(),
                muted: true,
                ..ParticipantInfo::sample("PA_9a0b1c2d3e4f", "bob")
            },
        });
        let json = serde_json::to_value(&msg).expect("serializes");
        assert_eq!(json["type"], "participant_joined");
        assert_eq!(json["participant"]["muted"], true);
        assert_eq!(
            serde_json::from_value::<ServerMessage>(json).expect("parses"),
            msg
        );
    }
}
