//! `offer`: the client's one SDP offer.

use serde::{Deserialize, Serialize};

/// Client → server: the SDP offer (microphone m-line + `room.slots` recvonly m-lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub sdp: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Offer(Offer {
            sdp: "v=0\r\n".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"offer","sdp":"v=0\r\n"}"#);
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn sdp_is_required() {
        assert!(matches!(
            parse_client(r#"{"type":"offer"}"#),
            Err(ProtocolError::BadMessage { .. })
        ));
    }
}
