//! `participant_updated`: a participant's state other than mute changed (deafened, push-to-talk).

use serde::{Deserialize, Serialize};

use super::ParticipantInfo;

/// Server → client: a participant as it is now, after a change of its `deafened` or `ptt` state (mute
/// changes are `participant_muted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantUpdated {
    pub participant: ParticipantInfo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::ParticipantUpdated(ParticipantUpdated {
            participant: ParticipantInfo {
                name: "Bob".into(),
                deafened: true,
                ..ParticipantInfo::sample("PA_9a0b1c2d3e4f", "bob")
            },
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"participant_updated","participant":{"sid":"PA_9a0b1c2d3e4f","identity":"bob","name":"Bob","muted":false,"can_publish":true,"can_subscribe":true,"deafened":true}}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
