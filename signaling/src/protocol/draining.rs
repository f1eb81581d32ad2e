//! `draining`: the server is shutting down.

use serde::{Deserialize, Serialize};

/// Server → client: the server has begun to drain. The call goes on for at most `grace_period_secs`
/// seconds, then the server closes the socket (code 1001); the server admits no new joins, so a client
/// that wants to stay reachable should reconnect (through its load balancer) to another server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Seconds from this message until the server ends the session at the latest.
    pub grace_period_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Draining(Draining {
            grace_period_secs: 30,
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"draining","grace_period_secs":30}"#);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
