//! `left`: the answer to `leave`, just before the server closes the socket.

use serde::{Deserialize, Serialize};

/// Server → client: the session has left its room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// Why, when the server ended the session rather than the client's `leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeftReason>,
}

/// Why the server removed a participant from its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// An operator removed the participant through the admin API.
    Kicked,
    /// An operator deleted the room through the admin API.
    RoomDeleted,
    /// A newer session joined the room with the same identity and took the participant's place.
    Replaced,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        for (left, expected) in [
            (Left { reason: None }, r#"{"type":"left"}"#),
            (
                Left {
                    reason: Some(LeftReason::Kicked),
                },
                r#"{"type":"left","reason":"kicked"}"#,
            ),
            (
                Left {
                    reason: Some(LeftReason::RoomDeleted),
                },
                r#"{"type":"left","reason":"room_deleted"}"#,
            ),
            (
                Left {
                    reason: Some(LeftReason::Replaced),
                },
                r#"{"type":"left","reason":"replaced"}"#,
            ),
        ] {
            let msg = ServerMessage::Left(left);
            let text = serde_json::to_string(&msg).expect("serializes");
            assert_eq!(text, expected);
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).expect("parses"),
                msg
            );
        }
    }
}
