//! `moderate`: a moderator (token claim `moderator: true`) acts on another participant of its room.

use serde::{Deserialize, Serialize};

/// What a moderator does to a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Server mute: the participant cannot unmute itself until a moderator unmutes it.
    Mute,
    Unmute,
    /// The participant is sent no audio.
    Deafen,
    Undeafen,
    /// Removed with `left` reason `kicked`, banned for `kick_ban_secs`.
    Kick,
    /// Moved to the room named by `room` (it re-offers there).
    Move,
}

impl ModerateAction {
    pub const ALL: [ModerateAction; 6] = [
        ModerateAction::Mute,
        ModerateAction::Unmute,
        ModerateAction::Deafen,
        ModerateAction::Undeafen,
        ModerateAction::Kick,
        ModerateAction::Move,
    ];

    /// The wire spelling (also a metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            ModerateAction::Mute => "mute",
            ModerateAction::Unmute => "unmute",
            ModerateAction::Deafen => "deafen",
            ModerateAction::Undeafen => "undeafen",
            ModerateAction::Kick => "kick",
            ModerateAction::Move => "move",
        }
    }
}

/// Client → server: a moderation request. Refused with `forbidden` without the moderator grant, with
/// `participant_not_found` when `sid` is not in the moderator's room, with `bad_message` for `move`
/// without `room`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderate {
    pub action: ModerateAction,
    pub sid: String,
    /// The destination room of `move`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Moderate(Moderate {
            action: ModerateAction::Move,
            sid: "PA_9a0b1c2d3e4f".into(),
            room: Some("breakout".into()),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"moderate","action":"move","sid":"PA_9a0b1c2d3e4f","room":"breakout"}"#
        );
        assert_eq!(parse_client(&text), Ok(msg));
        for action in ModerateAction::ALL {
            assert_eq!(
                serde_json::to_value(action).expect("serializes"),
                action.as_str()
            );
        }
    }

    #[test]
    fn unknown_actions_and_missing_fields_are_bad_messages() {
        for text in [
            r#"{"type":"moderate","action":"ban","sid":"PA_9a0b1c2d3e4f"}"#,
            r#"{"type":"moderate","action":"mute"}"#,
            r#"{"type":"moderate","sid":"PA_9a0b1c2d3e4f"}"#,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
