//! `leave`: the client leaves the room; the server answers `left` and closes the socket.

use serde::{Deserialize, Serialize};

/// Client → server: leave the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Leave(Leave {});
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"leave"}"#);
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse_client(r#"{"type":"leave","why":"bye"}"#),
            Ok(ClientMessage::Leave(Leave {}))
        );
    }
}
