//! `resumed`: the server re-attached a suspended (or still attached) session to this WebSocket.

use serde::{Deserialize, Serialize};

use super::SessionState;

/// Server → client: the answer to a successful `resume`. The same participant (sid, slots, mute state)
/// with the room as it is now (the same fields as `joined`, flattened), and whether its media peer is still
/// there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    #[serde(flatten)]
    pub state: SessionState,
    /// Whether the session's media peer is still there: `false` when the client never got its answer
    /// (it sends a fresh `offer`), `true` when it keeps its peer connection (and restarts ICE with an
    /// `offer` if its media path died).
    pub media: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::RoomMode;
    use crate::protocol::{IceServer, ParticipantInfo, RoomInfo, ServerMessage};

    fn state(ice_servers: Vec<IceServer>) -> SessionState {
        let participant = |sid: &str, identity: &str| ParticipantInfo {
            muted: identity == "ada",
            ..ParticipantInfo::sample(sid, identity)
        };
        SessionState {
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
            resume_token: "n3Vq8sLkR0aZ7cYt1pWmE5uHxG2oB9dF".into(),
            resume_window_ms: 15_000,
            ice_servers,
        }
    }

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Resumed(Resumed {
            state: state(Vec::new()),
            media: true,
        });
        let json = serde_json::to_value(&msg).expect("serializes");
        assert_eq!(json["type"], "resumed");
        assert_eq!(json["participant"]["muted"], true);
        assert_eq!(json["resume_window_ms"], 15_000);
        assert_eq!(json["media"], true);
        assert!(json.get("ice_servers").is_none(), "no TURN: no ice_servers");
        assert!(json.get("state").is_none(), "the state's fields are flat");
        let back: ServerMessage = serde_json::from_value(json).expect("parses");
        assert_eq!(back, msg);
    }

    /// `resumed` is `joined`'s object with `"type": "resumed"` and `media` added: the same fields, flat, as
    /// on the wire before the two shared one struct.
    #[test]
    fn the_wire_form_is_joined_plus_media() {
        for ice_servers in [
            Vec::new(),
            vec![IceServer {
                urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
                username: "1700000000:PA_4f2c9a1b7d3e".into(),
                credential: "1Zi3EqF0R1pA8/IpuIIqqV7Io0U=".into(),
            }],
        ] {
            let state = state(ice_servers);
            let mut joined =
                serde_json::to_value(ServerMessage::Joined(state.clone())).expect("serializes");
            joined["type"] = "resumed".into();
            joined["media"] = false.into();
            let resumed = serde_json::to_value(ServerMessage::Resumed(Resumed {
                state,
                media: false,
            }))
            .expect("serializes");
            assert_eq!(resumed, joined);
        }
        let text = r#"{"type":"resumed","protocol":1,"server_version":"0.1.0","participant":{"sid":"PA_4f2c9a1b7d3e","identity":"ada","name":"ADA","muted":true,"can_publish":true,"can_subscribe":true},"room":{"name":"lobby","mode":"forward","slots":3,"max_participants":100},"participants":[{"sid":"PA_9a0b1c2d3e4f","identity":"bob","name":"BOB","muted":false,"can_publish":true,"can_subscribe":true}],"resume_token":"n3Vq8sLkR0aZ7cYt1pWmE5uHxG2oB9dF","resume_window_ms":15000,"media":true}"#;
        let parsed: ServerMessage = serde_json::from_str(text).expect("parses");
        assert_eq!(
            parsed,
            ServerMessage::Resumed(Resumed {
                state: state(Vec::new()),
                media: true
            })
        );
        assert_eq!(serde_json::to_string(&parsed).expect("serializes"), text);
    }
}
