//! A participant as other clients see it: the `participant` object of `joined`, `participant_joined`, ...

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

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

/// A participant as the registry holds it and the room lists of `joined` and `moved` carry it: shared
/// between them (a join into a room of 2,000 copies 2,000 pointers under the registry's lock, not 6,000
/// strings), with its JSON text made the first time a list is written and reused by every later one (a
/// `joined` into a room of 2,000 was 2,000 serializations; issue 15, docs/loadtest.md "the signaling
/// side of a room of 2,000"). On the wire it is the [`ParticipantInfo`] object; it parses into a fresh
/// one.
///
/// The text is written raw, which only serde_json's serializers understand: the protocol is JSON.
#[derive(Clone)]
pub struct SharedParticipant(Arc<Shared>);

struct Shared {
    info: ParticipantInfo,
    /// The JSON of `info`, once some list was written; emptied by [`SharedParticipant::edit`].
    json: OnceLock<Box<RawValue>>,
}

impl Clone for Shared {
    /// A copy to change: its text is made again.
    fn clone(&self) -> Self {
        Shared {
            info: self.info.clone(),
            json: OnceLock::new(),
        }
    }
}

impl SharedParticipant {
    pub fn new(info: ParticipantInfo) -> Self {
        SharedParticipant(Arc::new(Shared {
            info,
            json: OnceLock::new(),
        }))
    }

    /// The participant, to change: copied first if a list still holds it (the list keeps what it was
    /// given); its text is made again when it is next written.
    pub fn edit(&mut self) -> &mut ParticipantInfo {
        let shared = Arc::make_mut(&mut self.0);
        shared.json = OnceLock::new();
        &mut shared.info
    }

    /// The participant, copied only if something else still holds it.
    pub fn into_info(self) -> ParticipantInfo {
        match Arc::try_unwrap(self.0) {
            Ok(shared) => shared.info,
            Err(shared) => shared.info.clone(),
        }
    }
}

impl From<ParticipantInfo> for SharedParticipant {
    fn from(info: ParticipantInfo) -> Self {
        SharedParticipant::new(info)
    }
}

impl Deref for SharedParticipant {
    type Target = ParticipantInfo;

    fn deref(&self) -> &ParticipantInfo {
        &self.0.info
    }
}

impl PartialEq for SharedParticipant {
    fn eq(&self, other: &Self) -> bool {
        self.0.info == other.0.info
    }
}

impl Eq for SharedParticipant {}

impl fmt::Debug for SharedParticipant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.info.fmt(f)
    }
}

impl Serialize for SharedParticipant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let json = self.0.json.get_or_init(|| {
            serde_json::value::to_raw_value(&self.0.info)
                .expect("a participant is a plain struct with string keys: serializing cannot fail")
        });
        json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedParticipant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ParticipantInfo::deserialize(deserializer).map(SharedParticipant::new)
    }
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

    #[test]
    fn a_shared_participant_is_written_as_its_object_and_its_text_follows_an_edit() {
        let bob = ParticipantInfo::sample("PA_9a0b1c2d3e4f", "bob");
        let mut shared = SharedParticipant::new(bob.clone());
        let plain = serde_json::to_string(&bob).expect("serializes");
        // Written twice (the second time from the text made by the first), inside a list and alone.
        for _ in 0..2 {
            assert_eq!(serde_json::to_string(&shared).expect("serializes"), plain);
            let list = serde_json::to_string(&vec![shared.clone(), shared.clone()]).expect("list");
            assert_eq!(list, format!("[{plain},{plain}]"));
            assert_eq!(
                serde_json::to_value(&shared).expect("to a value"),
                serde_json::to_value(&bob).expect("to a value")
            );
        }
        let back: SharedParticipant = serde_json::from_str(&plain).expect("parses");
        assert_eq!(back, shared);
        assert_eq!(back.into_info(), bob);

        // A list given the participant before an edit keeps what it was given; the edit's text is new.
        let listed = [shared.clone()];
        shared.edit().muted = true;
        assert!(shared.muted && !listed[0].muted);
        let muted = ParticipantInfo {
            muted: true,
            ..bob.clone()
        };
        let text = serde_json::to_string(&shared).expect("serializes");
        assert_eq!(text, serde_json::to_string(&muted).expect("serializes"));
        assert_eq!(
            serde_json::to_string(&listed[0]).expect("serializes"),
            plain
        );
        // Edited again while nothing else holds it: no copy, and still a new text.
        shared.edit().muted = false;
        assert_eq!(serde_json::to_string(&shared).expect("serializes"), plain);
        assert_eq!(shared.into_info(), bob);
    }
}
