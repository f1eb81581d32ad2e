//! A participant as other clients see it: the `participant` object of `joined`, `participant_joined`, ...

use serde::{Deserialize, Serialize};

/// One participant of a room (protocol.md, `joined.participant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// The participant id, `PA_` and 12 hex digits, unique on this server.
    pub sid: String,
    /// The token's `sub`.
    pub identity: String,
    /// The display name.
    pub name: String,
    pub muted: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    /// Muted by a moderator or operator: the participant cannot unmute itself. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub server_muted: bool,
    /// Sent no audio (a moderator's or operator's deafen). Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deafened: bool,
    /// Push-to-talk: heard only while its key is down. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ptt: bool,
    /// The participant's team (its token's `team` claim, or the one it asked for in `join`). Absent without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<vocab::TeamId>,
    /// The shout role (its token's `shout` claim): heard by everyone in the room. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shout: bool,
    /// On another node of the cluster (a room spanning nodes): listed and heard like the others, but not a
    /// target of `moderate`, whisper or `volume` from this node. Absent when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[cfg(test)]
impl ParticipantInfo {
    /// A participant for tests: named after its identity (upper-cased), may publish and subscribe, nothing
    /// else set.
    pub(crate) fn sample(sid: &str, identity: &str) -> Self {
        ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            name: identity.to_uppercase(),
            muted: false,
            can_publish: true,
            can_subscribe: true,
            server_muted: false,
            deafened: false,
            ptt: false,
            team: None,
            shout: false,
            remote: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = ParticipantInfo {
            sid: "PA_9a0b1c2d3e4f".into(),
            identity: "bob".into(),
            name: "Bob".into(),
            muted: false,
            can_publish: true,
            can_subscribe: false,
            server_muted: false,
            deafened: false,
            ptt: false,
            team: None,
            shout: false,
            remote: false,
        };
        let json = serde_json::to_value(&p).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"sid": "PA_9a0b1c2d3e4f", "identity": "bob", "name": "Bob", "muted": false,
                "can_publish": true, "can_subscribe": false})
        );
        let back: ParticipantInfo = serde_json::from_value(json).expect("parses");
        assert_eq!(back, p);
        // A team and the shout role are present only when set.
        let caster = ParticipantInfo {
            team: Some(vocab::TeamId::new("blue").expect("a valid team")),
            shout: true,
            ..p
        };
        let json = serde_json::to_value(&caster).expect("serializes");
        assert_eq!(json["team"], "blue");
        assert_eq!(json["shout"], true);
        let back: ParticipantInfo = serde_json::from_value(json).expect("parses");
        assert_eq!(back, caster);
        // A participant on another node of the cluster is marked.
        let remote = ParticipantInfo {
            remote: true,
            ..caster
        };
        let json = serde_json::to_value(&remote).expect("serializes");
        assert_eq!(json["remote"], true);
        let back: ParticipantInfo = serde_json::from_value(json).expect("parses");
        assert_eq!(back, remote);
    }
}
