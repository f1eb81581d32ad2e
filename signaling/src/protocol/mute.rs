//! `mute`: stop or resume forwarding the participant's audio.

use serde::{Deserialize, Serialize};

/// Client → server: mute or unmute the microphone (enforced server-side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub muted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Mute(Mute { muted: true });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"mute","muted":true}"#);
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn muted_must_be_a_bool() {
        for text in [r#"{"type":"mute"}"#, r#"{"type":"mute","muted":"yes"}"#] {
            assert!(matches!(
                parse_client(text),
                Err(ProtocolError::BadMessage { .. })
            ));
        }
    }
}
