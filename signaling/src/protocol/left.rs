//! `left`: the answer to `leave`, just before the server closes the socket.

use serde::{Deserialize, Serialize};

/// Server → client: the session has left its room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Left(Left {});
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"left"}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
