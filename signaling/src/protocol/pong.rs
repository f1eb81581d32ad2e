//! `pong`: the answer to `ping`.

use serde::{Deserialize, Serialize};

/// Server → client: answers `ping` with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub id: serde_json::Number,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Pong(Pong { id: 7.into() });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"pong","id":7}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
