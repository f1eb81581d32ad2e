//! `answer`: the server's SDP answer to the client's offer.

use serde::{Deserialize, Serialize};

/// Server → client: the SDP answer (ICE-lite, with the server's host candidate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub sdp: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Answer(Answer {
            sdp: "v=0\r\na=ice-lite\r\n".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"answer","sdp":"v=0\r\na=ice-lite\r\n"}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
