//! `resume`: a new WebSocket takes over a session whose socket dropped, instead of joining afresh.

use serde::{Deserialize, Serialize};

/// Client → server, as the first message of a new WebSocket instead of `join`: re-attach the session
/// that the `resume_token` of its last `joined` or `resumed` names. The token is single-use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The protocol version the client speaks (as in `join`).
    pub protocol: u64,
    /// The opaque token from the session's last `joined` or `resumed`.
    pub resume_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ErrorCode};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Resume(Resume {
            protocol: 1,
            resume_token: "q8Jx0yDq3nB6TQ3s2fX1ZkS9dE4tH7wA".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"resume","protocol":1,"resume_token":"q8Jx0yDq3nB6TQ3s2fX1ZkS9dE4tH7wA"}"#
        );
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn needs_a_string_token() {
        for text in [
            r#"{"type":"resume","protocol":1}"#,
            r#"{"type":"resume","protocol":1,"resume_token":7}"#,
            r#"{"type":"resume","resume_token":"x"}"#,
        ] {
            let err = parse_client(text).expect_err(text);
            assert_eq!(err.code(), ErrorCode::BadMessage, "{text}");
        }
    }
}
