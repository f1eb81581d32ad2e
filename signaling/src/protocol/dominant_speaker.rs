//! `dominant_speaker`: the participant who holds the floor in the room.

use serde::{Deserialize, Serialize};

/// Server → client: the room's dominant speaker changed. Unlike `speakers` (everyone audible right now),
/// this follows sustained speech (Volfin & Cohen: decided every 300 ms, ignoring coughs, clicks and steady
/// background noise), which is what a "current speaker" highlight or a spotlight layout needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DominantSpeaker {
    pub sid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::DominantSpeaker(DominantSpeaker {
            sid: "PA_9a0b1c2d3e4f".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"dominant_speaker","sid":"PA_9a0b1c2d3e4f"}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
