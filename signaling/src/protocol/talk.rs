//! `talk`: whom the participant's voice is for — the room, its team, or a whisper to named participants.

use serde::{Deserialize, Serialize};
use vocab::TalkTarget;

/// Client → server: set the talk target. `to` lists the sids of a whisper (1 to 64) and only of a whisper.
/// Not answered on success; a whisper naming a sid that is not in the room is refused with `bad_target`,
/// as is `team` without a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TalkWire", into = "TalkWire")]
pub struct Talk {
    pub target: TalkTarget<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetKind {
    Room,
    Team,
    Whisper,
}

#[derive(Serialize, Deserialize)]
struct TalkWire {
    target: TargetKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    to: Vec<String>,
}

impl TryFrom<TalkWire> for Talk {
    type Error = String;

    fn try_from(wire: TalkWire) -> Result<Talk, String> {
        let target = match (wire.target, wire.to.is_empty()) {
            (TargetKind::Room, true) => TalkTarget::Room,
            (TargetKind::Team, true) => TalkTarget::Team,
            (TargetKind::Room | TargetKind::Team, false) => {
                return Err("`to` is only for a whisper".into())
            }
            (TargetKind::Whisper, _) => TalkTarget::Whisper(wire.to),
        };
        target.validate().map_err(|e| e.to_string())?;
        Ok(Talk { target })
    }
}

impl From<Talk> for TalkWire {
    fn from(talk: Talk) -> TalkWire {
        match talk.target {
            TalkTarget::Room => TalkWire {
                target: TargetKind::Room,
                to: Vec::new(),
            },
            TalkTarget::Team => TalkWire {
                target: TargetKind::Team,
                to: Vec::new(),
            },
            TalkTarget::Whisper(to) => TalkWire {
                target: TargetKind::Whisper,
                to,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};
    use vocab::MAX_WHISPER_TARGETS;

    #[test]
    fn round_trips() {
        for (target, wire) in [
            (TalkTarget::Room, r#"{"type":"talk","target":"room"}"#),
            (TalkTarget::Team, r#"{"type":"talk","target":"team"}"#),
            (
                TalkTarget::Whisper(vec!["PA_9a0b1c2d3e4f".into(), "PA_0c1d2e3f4a5b".into()]),
                r#"{"type":"talk","target":"whisper","to":["PA_9a0b1c2d3e4f","PA_0c1d2e3f4a5b"]}"#,
            ),
        ] {
            let msg = ClientMessage::Talk(Talk { target });
            let text = serde_json::to_string(&msg).expect("serializes");
            assert_eq!(text, wire);
            assert_eq!(parse_client(&text), Ok(msg));
        }
    }

    #[test]
    fn malformed_targets_are_bad_message() {
        let too_many = serde_json::json!({"type": "talk", "target": "whisper",
            "to": vec!["PA_9a0b1c2d3e4f"; MAX_WHISPER_TARGETS + 1]})
        .to_string();
        for text in [
            r#"{"type":"talk"}"#,
            r#"{"type":"talk","target":"everyone"}"#,
            r#"{"type":"talk","target":"whisper"}"#,
            r#"{"type":"talk","target":"whisper","to":[]}"#,
            r#"{"type":"talk","target":"whisper","to":"PA_9a0b1c2d3e4f"}"#,
            r#"{"type":"talk","target":"whisper","to":[7]}"#,
            r#"{"type":"talk","target":"team","to":["PA_9a0b1c2d3e4f"]}"#,
            &too_many,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
