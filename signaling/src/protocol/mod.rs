//! The WebSocket protocol of docs/protocol.md, version 1: one file per message type.
//!
//! Every frame is one JSON object with a `"type"` field. [`parse_client`] turns a text frame into a
//! [`ClientMessage`] and tells apart the three ways a frame can be wrong (`bad_json`, `unknown_type`,
//! `bad_message`); [`ServerMessage`] is everything the server sends.

mod answer;
mod dominant_speaker;
mod draining;
mod error;
mod join;
mod joined;
mod leave;
mod left;
mod media_state;
mod moderate;
mod moved;
mod mute;
mod offer;
mod participant;
mod participant_joined;
mod participant_left;
mod participant_muted;
mod participant_updated;
mod ping;
mod pong;
mod position;
mod ptt;
mod redirect;
mod resume;
mod resumed;
mod slots;
mod speakers;
mod talk;
mod volume;

use serde::{Deserialize, Serialize};

pub use answer::Answer;
pub use dominant_speaker::DominantSpeaker;
pub use draining::Draining;
pub use error::{ErrorCode, ErrorMessage, CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY_VIOLATION};
pub use join::{Join, MAX_NAME_CHARS};
pub use joined::{IceServer, Joined, RoomInfo, SessionState};
pub use leave::Leave;
pub use left::{Left, LeftReason};
pub use media_state::{MediaConnectionState, MediaState};
pub use moderate::{Moderate, ModerateAction};
pub use moved::Moved;
pub use mute::Mute;
pub use offer::Offer;
pub use participant::{ParticipantInfo, SharedParticipant};
pub use participant_joined::ParticipantJoined;
pub use participant_left::{ParticipantLeft, ParticipantLeftReason};
pub use participant_muted::ParticipantMuted;
pub use participant_updated::ParticipantUpdated;
pub use ping::Ping;
pub use pong::Pong;
pub use position::{PositionUpdate, Positions, SpeakerPosition, MIN_POSITION_INTERVAL};
pub use ptt::{Ptt, PttKey};
pub use redirect::Redirect;
pub use resume::Resume;
pub use resumed::Resumed;
pub use slots::{Slot, Slots};
pub use speakers::{Speaker, Speakers};
pub use talk::Talk;
pub use volume::SetVolume;

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The largest frame a client may send, in bytes (`frame_too_large` above it).
pub const MAX_FRAME_BYTES: usize = 65_536;

/// How much of a client-supplied string an error message quotes back.
const MAX_QUOTED_CHARS: usize = 120;

/// A message from client to server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join(Join),
    Offer(Offer),
    Mute(Mute),
    Ping(Ping),
    Leave(Leave),
    Resume(Resume),
    Position(PositionUpdate),
    Ptt(Ptt),
    PttKey(PttKey),
    Moderate(Moderate),
    Talk(Talk),
    Volume(SetVolume),
}

impl ClientMessage {
    /// The `type` of every client message of this protocol version.
    pub const TYPES: [&'static str; 12] = [
        "join", "offer", "mute", "ping", "leave", "resume", "ptt", "ptt_key", "moderate",
        "position", "talk", "volume",
    ];
}

/// A message from server to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined(Joined),
    Resumed(Resumed),
    Answer(Answer),
    ParticipantJoined(ParticipantJoined),
    ParticipantLeft(ParticipantLeft),
    ParticipantMuted(ParticipantMuted),
    ParticipantUpdated(ParticipantUpdated),
    Moved(Moved),
    MediaState(MediaState),
    Speakers(Speakers),
    DominantSpeaker(DominantSpeaker),
    Slots(Slots),
    Positions(Positions),
    Pong(Pong),
    Left(Left),
    Draining(Draining),
    Redirect(Redirect),
    Error(ErrorMessage),
}

/// Why a text frame is not a usable client message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or not an object with a string `type`.
    #[error("the frame is not a JSON object with a string \"type\": {reason}")]
    BadJson { reason: String },
    /// A `type` this protocol version does not have.
    #[error("unknown message type \"{message_type}\"")]
    UnknownType { message_type: String },
    /// A known `type` with missing or ill-typed fields.
    #[error("bad \"{message_type}\" message: {reason}")]
    BadMessage {
        message_type: &'static str,
        reason: String,
    },
}

impl ProtocolError {
    /// The protocol error code this maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadJson { .. } => ErrorCode::BadJson,
            ProtocolError::UnknownType { .. } => ErrorCode::UnknownType,
            ProtocolError::BadMessage { .. } => ErrorCode::BadMessage,
        }
    }
}

/// Parses one text frame from a client.
pub fn parse_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::BadJson {
            reason: quote(&e.to_string()),
        })?;
    let Some(object) = value.as_object() else {
        return Err(ProtocolError::BadJson {
            reason: "not an object".into(),
        });
    };
    let Some(message_type) = object.get("type").and_then(serde_json::Value::as_str) else {
        return Err(ProtocolError::BadJson {
            reason: "no string \"type\" field".into(),
        });
    };
    let Some(&known) = ClientMessage::TYPES.iter().find(|t| **t == message_type) else {
        return Err(ProtocolError::UnknownType {
            message_type: quote(message_type),
        });
    };
    serde_json::from_value(value).map_err(|e| ProtocolError::BadMessage {
        message_type: known,
        reason: quote(&e.to_string()),
    })
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters, so an error never echoes a whole frame back.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_or_not_an_object_with_a_string_type_is_bad_json() {
        for text in [
            "",
            "hello",
            "{",
            "[]",
            "7",
            "null",
            r#""join""#,
            "{}",
            r#"{"type":null}"#,
            r#"{"type":1}"#,
            r#"{"type":{"a":1}}"#,
            r#"{"Type":"join"}"#,
            &"[".repeat(10_000),
        ] {
            let err = parse_client(text).expect_err(text);
            assert_eq!(err.code(), ErrorCode::BadJson, "{text}");
        }
    }

    #[test]
    fn unknown_type_is_unknown_type() {
        for text in [
            r#"{"type":"joined"}"#,
            r#"{"type":"JOIN"}"#,
            r#"{"type":""}"#,
            r#"{"type":"answer","sdp":"x"}"#,
        ] {
            let err = parse_client(text).expect_err(text);
            assert_eq!(err.code(), ErrorCode::UnknownType, "{text}");
        }
    }

    #[test]
    fn error_messages_do_not_echo_whole_frames() {
        let long_type = "x".repeat(10_000);
        let err = parse_client(&format!(r#"{{"type":"{long_type}"}}"#)).expect_err("unknown");
        assert!(err.to_string().len() < 400, "{err}");
        let long_token = "t".repeat(10_000);
        let err = parse_client(&format!(
            r#"{{"type":"join","protocol":"{long_token}","token":1}}"#
        ))
        .expect_err("bad");
        assert_eq!(err.code(), ErrorCode::BadMessage);
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn every_client_type_is_known() {
        let samples = [
            ClientMessage::Join(Join {
                protocol: 1,
                token: "t".into(),
                room: None,
                name: None,
                team: None,
                listen_only: false,
            }),
            ClientMessage::Offer(Offer { sdp: "v=0".into() }),
            ClientMessage::Mute(Mute { muted: false }),
            ClientMessage::Ping(Ping { id: 1.into() }),
            ClientMessage::Leave(Leave {}),
            ClientMessage::Resume(Resume {
                protocol: 1,
                resume_token: "t".into(),
            }),
            ClientMessage::Ptt(Ptt { enabled: true }),
            ClientMessage::PttKey(PttKey { down: true }),
            ClientMessage::Moderate(Moderate {
                action: ModerateAction::Kick,
                sid: "PA_9a0b1c2d3e4f".into(),
                room: None,
            }),
            ClientMessage::Position(PositionUpdate {
                x: 0.0,
                y: 0.0,
                z: 0.0,
                yaw_deg: 0.0,
            }),
            ClientMessage::Talk(Talk {
                target: vocab::TalkTarget::Team,
            }),
            ClientMessage::Volume(SetVolume {
                sid: "PA_9a0b1c2d3e4f".into(),
                volume: vocab::Volume::SILENT,
            }),
        ];
        assert_eq!(samples.len(), ClientMessage::TYPES.len());
        for (sample, name) in samples.iter().zip(ClientMessage::TYPES) {
            let value = serde_json::to_value(sample).expect("serializes");
            assert_eq!(value["type"], name);
        }
    }

    /// Every JSON example in docs/protocol.md parses as the message its `type` names and serializes back
    /// to the same JSON.
    #[test]
    fn protocol_doc_examples_round_trip() {
        let doc = include_str!("../../../docs/protocol.md");
        let mut examples = Vec::new();
        let mut block: Option<String> = None;
        for line in doc.lines() {
            match (&mut block, line.trim_end()) {
                (None, "```json") => block = Some(String::new()),
                (Some(text), "```") => {
                    examples.push(std::mem::take(text));
                    block = None;
                }
                (Some(text), _) => {
                    text.push_str(line);
                    text.push('\n');
                }
                (None, _) => {}
            }
        }
        assert!(examples.len() >= 16, "found {} examples", examples.len());
        let (mut client, mut server) = (0, 0);
        for example in &examples {
            let original: serde_json::Value = serde_json::from_str(example).expect(example);
            let reserialized =
                if ClientMessage::TYPES.contains(&original["type"].as_str().unwrap_or("")) {
                    client += 1;
                    serde_json::to_string(&parse_client(example).expect(example))
                } else {
                    server += 1;
                    serde_json::to_string(
                        &serde_json::from_str::<ServerMessage>(example).expect(example),
                    )
                }
                .expect("serializes");
            let reparsed: serde_json::Value = serde_json::from_str(&reserialized).expect("json");
            assert_eq!(reparsed, original, "{example}");
        }
        assert_eq!(client, ClientMessage::TYPES.len());
        assert_eq!(
            server, 24,
            "21 messages, joined, participant_muted and participant_joined (a remote one) twice"
        );
    }
}
