//! `ptt` and `ptt_key`: push-to-talk, enforced by the server.

use serde::{Deserialize, Serialize};

/// Client → server: turn push-to-talk on or off for this participant. With it on, the server forwards and
/// mixes the participant's audio only while its key is down (`ptt_key`); it starts with the key up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ptt {
    pub enabled: bool,
}

/// Client → server: the push-to-talk key went down or up. Rate-limited (`rate_limited`); a key-up is
/// never refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PttKey {
    pub down: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        for (msg, wire) in [
            (
                ClientMessage::Ptt(Ptt { enabled: true }),
                r#"{"type":"ptt","enabled":true}"#,
            ),
            (
                ClientMessage::PttKey(PttKey { down: false }),
                r#"{"type":"ptt_key","down":false}"#,
            ),
        ] {
            let text = serde_json::to_string(&msg).expect("serializes");
            assert_eq!(text, wire);
            assert_eq!(parse_client(&text), Ok(msg));
        }
    }

    #[test]
    fn fields_must_be_bools() {
        for text in [
            r#"{"type":"ptt"}"#,
            r#"{"type":"ptt","enabled":1}"#,
            r#"{"type":"ptt_key"}"#,
            r#"{"type":"ptt_key","down":"yes"}"#,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
