//! `media_state`: this participant's own media connection as the server sees it.

use serde::{Deserialize, Serialize};

/// The state of the participant's media connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaConnectionState {
    /// DTLS-SRTP is established.
    Connected,
    /// ICE or DTLS failed or timed out; the server ends the session.
    Disconnected,
}

/// Server → client: the participant's media connection changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    pub state: MediaConnectionState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        for (state, text) in [
            (
                MediaConnectionState::Connected,
                r#"{"type":"media_state","state":"connected"}"#,
            ),
            (
                MediaConnectionState::Disconnected,
                r#"{"type":"media_state","state":"disconnected"}"#,
            ),
        ] {
            let msg = ServerMessage::MediaState(MediaState { state });
            assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
            assert_eq!(
                serde_json::from_str::<ServerMessage>(text).expect("parses"),
                msg
            );
        }
    }
}
