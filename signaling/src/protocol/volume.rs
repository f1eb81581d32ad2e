//! `volume`: how loud this participant hears another one (−50..=+50, Vivox's scale).

use serde::{Deserialize, Serialize};
use vocab::Volume;

/// Client → server: the volume at which this participant hears `sid`: −50 (silent) to +50, 0 unchanged,
/// 0.5 dB per step ([`Volume`]). A mixed room applies it in this listener's mix; a forwarding room's
/// client applies it on playout (the server keeps it, so a resumed session and the mix keep it too).
/// Out of range or fractional: `bad_message`; a `sid` not in the room: `participant_not_found`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVolume {
    pub sid: String,
    pub volume: Volume,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Volume(SetVolume {
            sid: "PA_9a0b1c2d3e4f".into(),
            volume: Volume::new(-20).expect("in range"),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":-20}"#
        );
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn out_of_range_or_fractional_volumes_are_bad_message() {
        for text in [
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":51}"#,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":-51}"#,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":2.5}"#,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":1e300}"#,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f","volume":"10"}"#,
            r#"{"type":"volume","sid":"PA_9a0b1c2d3e4f"}"#,
            r#"{"type":"volume","volume":10}"#,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
