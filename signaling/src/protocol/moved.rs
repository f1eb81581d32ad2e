//! `moved`: a moderator or operator moved this participant to another room.

use serde::{Deserialize, Serialize};

use super::{ParticipantInfo, RoomInfo, SharedParticipant};

/// Server → client: the session now belongs to `room` (it left the old one: the others there saw
/// `participant_left` reason `moved`). Its media peer is gone: the client closes its peer connection and
/// sends a new `offer` for the new room, as after `joined`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// This participant in the new room (a new `sid`).
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    /// Everyone else in the new room (shared with the registry's entries: [`SessionState::participants`](super::SessionState::participants)).
    pub participants: Vec<SharedParticipant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::RoomMode;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Moved(Moved {
            participant: ParticipantInfo {
                name: "Ada".into(),
                ..ParticipantInfo::sample("PA_0c1d2e3f4a5b", "ada")
            },
            room: RoomInfo {
                name: "breakout".into(),
                mode: RoomMode::Forward,
                slots: 3,
                max_participants: 100,
            },
            participants: Vec::new(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert!(text.starts_with(r#"{"type":"moved","participant":{"sid":"PA_0c1d2e3f4a5b""#));
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
