//! `joined`: the server admitted the session to its room.

use serde::{Deserialize, Serialize};

use super::{ParticipantInfo, SharedParticipant};
use crate::media::RoomMode;

/// The room as `joined` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub mode: RoomMode,
    /// Audio slots per subscriber: the number of recvonly m-lines the offer must carry.
    pub slots: u8,
    pub max_participants: usize,
}

/// A TURN server (or several sharing one credential) the client may relay its media through: the shape
/// of WebRTC's `RTCIceServer`, so a browser passes it to `RTCPeerConnection` unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:` and `turns:` URIs (RFC 7065).
    pub urls: Vec<String>,
    /// The TURN REST user name: `<unix expiry>:<participant sid>`.
    pub username: String,
    /// base64(HMAC-SHA1(shared secret, username)); valid until the expiry in `username`.
    pub credential: String,
}

/// What `joined` and `resumed` both carry: the session's protocol, its participant, the room and everyone
/// in it as they are now, the next resume token and the TURN servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The protocol version of this session.
    pub protocol: u64,
    pub server_version: String,
    /// This session's participant, as it is now (after a resume its mute state may have changed meanwhile).
    pub participant: ParticipantInfo,
    pub room: RoomInfo,
    /// Everyone else in the room now (after a resume a client replaces its list with this one). Shared
    /// with the registry's entries ([`SharedParticipant`]); on the wire, a list of participant objects.
    pub participants: Vec<SharedParticipant>,
    /// Opaque and single-use: a new WebSocket sends it in `resume` to take this session over after the
    /// socket dropped (at least 128 random bits; never derived from the sid). A `resume` spends the token it
    /// carried; `resumed` brings the next one.
    pub resume_token: String,
    /// How long after a drop the session may be resumed, in milliseconds (0: sessions are not kept).
    pub resume_window_ms: u64,
    /// TURN servers with time-limited credentials (fresh in each message, for an ICE restart through the
    /// relays); absent (empty) when the server configures none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

/// Server → client: the answer to a successful `join` (the session state, nothing more).
pub type Joined = SessionState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let participant = |sid: &str, identity: &str| ParticipantInfo::sample(sid, identity);
        let msg = ServerMessage::Joined(Joined {
            protocol: 1,
            server_version: "0.1.0".into(),
            participant: participant("PA_4f2c9a1b7d3e", "ada"),
            room: RoomInfo {
                name: "lobby".into(),
                mode: RoomMode::Forward,
                slots: 3,
                max_participants: 100,
            },
            participants: vec![participant("PA_9a0b1c2d3e4f", "bob").into()],
            resume_token: "q8Jx0yDq3nB6TQ3s2fX1ZkS9dE4tH7wA".into(),
            resume_window_ms: 15_000,
            ice_servers: Vec::new(),
        });
        let json = serde_json::to_value(&msg).expect("serializes");
        assert_eq!(json["type"], "joined");
        assert_eq!(json["room"]["mode"], "forward");
        assert_eq!(json["participants"][0]["identity"], "bob");
        assert_eq!(json["resume_token"], "q8Jx0yDq3nB6TQ3s2fX1ZkS9dE4tH7wA");
        assert_eq!(json["resume_window_ms"], 15_000);
        assert!(json.get("ice_servers").is_none(), "no TURN: no ice_servers");
        let back: ServerMessage = serde_json::from_value(json).expect("parses");
        assert_eq!(back, msg);

        let ServerMessage::Joined(mut joined) = msg else {
            unreachable!("built as joined")
        };
        joined.ice_servers = vec![IceServer {
            urls: vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:443?transport=tcp".into(),
            ],
            username: "1700000000:PA_4f2c9a1b7d3e".into(),
            credential: "1Zi3EqF0R1pA8/IpuIIqqV7Io0U=".into(),
        }];
        let msg = ServerMessage::Joined(joined);
        let json = serde_json::to_value(&msg).expect("serializes");
        assert_eq!(
            json["ice_servers"],
            serde_json::json!([{
                "urls": [
                    "turn:turn.example.com:3478?transport=udp",
                    "turns:turn.example.com:443?transport=tcp"
                ],
                "username": "1700000000:PA_4f2c9a1b7d3e",
                "credential": "1Zi3EqF0R1pA8/IpuIIqqV7Io0U="
            }])
        );
        let back: ServerMessage = serde_json::from_value(json).expect("parses");
        assert_eq!(back, msg);
    }
}
