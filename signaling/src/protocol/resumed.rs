//! `resumed`: the server re-attached a suspended (or still attached) session to this WebSocket.

use serde::{Deserialize, Serialize};

use super::{IceServer, ParticipantInfo, RoomInfo};

/// Server → client: the answer to a successful `resume`. The same participant (sid, slots, mute state)
/// with the room as it is now; the token of the `resume` is spent, `resume_token` is the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// The protocol version of this session.
    pub protocol: u64,
    pub server_version: String,
    /// This session's participant, as it is now (its mute state may have changed meanwhile).
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    /// Everyone else in the room now (a client replaces its list with this one).
    pub participants: Vec<ParticipantInfo>,
    /// Resumes the session once more if this socket drops too (single-use).
    pub resume_token: String,
    /// How long after a drop the session may be resumed, in milliseconds.
    pub resume_window_ms: u64,
    /// Whether the session's media peer is still there: `false` when the client never got its answer
    /// (it sends a fresh `offer`), `true` when it keeps its peer connection (and restarts ICE with an
    /// `offer` if its media path died).
    pub media: bool,
    /// Fresh TURN credentials (as in `joined`), for an ICE restart through the relays; absent without TURN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::RoomMode;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let participant = |sid: &str, identity: &str| ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            name: identity.to_uppercase(),
            muted: identity == "ada",
            can_publish: true,
            can_subscribe: true,
            server_muted: false,
            deafened: false,
            ptt: false,
            team: None,
        };
        let msg = ServerMessage::Resumed(Resumed {
            protocol: 1,
            server_version: "0.1.0".into(),
            participant: participant("PA_4f2c9a1b7d3e", "ada"),
            room: RoomInfo {
                name: "lobby".into(),
                mode: RoomMode::Forward,
                slots: 3,
                max_participants: 100,
            },
            participants: vec![participant("PA_9a0b1c2d3e4f", "bob")],
            resume_token: "n3Vq8sLkR0aZ7cYt1pWmE5uHxG2oB9dF".into(),
            resume_window_ms: 15_000,
            media: true,
            ice_servers: Vec::new(),
        });
        let json = serde_json::to_value(&msg).expect("serializes");
        assert_eq!(json["type"], "resumed");
        assert_eq!(json["participant"]["muted"], true);
        assert_eq!(json["resume_window_ms"], 15_000);
        assert_eq!(json["media"], true);
        assert!(json.get("ice_servers").is_none(), "no TURN: no ice_servers");
        let back: ServerMessage = serde_json::from_value(json).expect("parses");
        assert_eq!(back, msg);
    }
}
