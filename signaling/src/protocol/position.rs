//! `position` (client → server) and `positions` (server → client): positional voice in a spatial room.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A client sends at most one `position` this often; the server drops (and counts) the ones that arrive
/// closer together than this after the last it accepted.
pub const MIN_POSITION_INTERVAL: Duration = Duration::from_millis(100);

/// Client → server: where the participant is and which way it faces, in the room's world units (x right,
/// y ahead, z up; `yaw_deg` clockwise from +y). At most one every 100 ms counts; the server drops the
/// excess. Refused with `bad_position` when a field is not finite, a coordinate is beyond ±1,000,000, or
/// the room has no positional voice.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionUpdate {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    #[serde(default)]
    pub yaw_deg: f64,
}

/// One speaker's position in a [`Positions`] message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeakerPosition {
    pub sid: String,
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub yaw_deg: f64,
}

/// Server → client, in a spatial forwarding room: the speakers this participant hears (in range, nearest
/// first, at most `max_audible`) and where they are, to render the voices in its slots. Sent when the set
/// or one of its positions changed, at most every 100 ms; an empty list means nobody is in range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Positions {
    pub positions: Vec<SpeakerPosition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError, ServerMessage};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Position(PositionUpdate {
            x: 12.5,
            y: -3.0,
            z: 0.0,
            yaw_deg: 90.0,
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"position","x":12.5,"y":-3.0,"z":0.0,"yaw_deg":90.0}"#
        );
        assert_eq!(parse_client(&text), Ok(msg));
        // Facing is optional (ahead, +y).
        assert_eq!(
            parse_client(r#"{"type":"position","x":1,"y":2,"z":3}"#),
            Ok(ClientMessage::Position(PositionUpdate {
                x: 1.0,
                y: 2.0,
                z: 3.0,
                yaw_deg: 0.0
            }))
        );
        let msg = ServerMessage::Positions(Positions {
            positions: vec![SpeakerPosition {
                sid: "PA_9a0b1c2d3e4f".into(),
                x: 1.0,
                y: 2.0,
                z: 0.0,
                yaw_deg: 180.0,
            }],
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }

    #[test]
    fn coordinates_must_be_numbers() {
        // JSON has no NaN or infinity; numbers beyond f64 do not parse. Finite but huge values parse and
        // are refused by the session with `bad_position`.
        for text in [
            r#"{"type":"position","x":"1","y":0,"z":0}"#,
            r#"{"type":"position","y":0,"z":0}"#,
            r#"{"type":"position","x":NaN,"y":0,"z":0}"#,
            r#"{"type":"position","x":1e999,"y":0,"z":0}"#,
            r#"{"type":"position","x":null,"y":0,"z":0}"#,
        ] {
            let err = parse_client(text).expect_err(text);
            assert!(
                matches!(
                    err,
                    ProtocolError::BadMessage { .. } | ProtocolError::BadJson { .. }
                ),
                "{text}: {err:?}"
            );
        }
    }
}
