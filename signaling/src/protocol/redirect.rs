//! `redirect`: the room lives on another node of the cluster.

use serde::{Deserialize, Serialize};

/// Server → client, the answer to `join` on a node that does not host the token's room (a cluster of
/// nodes sharing rooms through Redis): join at `url` instead, with the same token. The server closes the
/// socket right after (1000, `redirect`). A client follows at most a few redirects in a row. Also sent to a
/// joined session whose room a draining node handed to another node (then closed with 1012, `migrated`):
/// the client rejoins at `url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The signaling WebSocket URL of the node that owns the room (`ws://…/ws` or `wss://…/ws`).
    pub url: String,
    /// The room, as in the token.
    pub room: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Redirect(Redirect {
            url: "wss://node-b.example.com/ws".into(),
            room: "lobby".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"redirect","url":"wss://node-b.example.com/ws","room":"lobby"}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
