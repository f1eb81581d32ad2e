//! Rooms spanning nodes of a cluster (docs/architecture.md, "Rooms larger than a node"): what signaling
//! shares of a room with the other nodes holding a shard of it, as values.
//!
//! Signaling knows nothing of Redis. It hands its local roster changes to a sink
//! ([`crate::Signaling::set_roster_sink`]) and takes the other nodes' through
//! [`crate::Signaling::remote_roster`]; a join that opens a shard of another node's room brings the room's
//! settings and the other nodes' participants with it ([`ShardSeed`], in
//! [`crate::locator::Location::Shard`]). Remote participants are listed and evented like local ones, with
//! `remote: true` in their participant object. A moderation of one of them is handed to the cluster as a
//! [`RemoteRequest`], for the node holding it to act ([`crate::Signaling::set_remote_actions`]). They can
//! be whispered to and given a volume like local ones: the media shards know them by the id their sid
//! names (a remote speaker is imported with its own id, and a whisper's list travels with its audio).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::media::{MixSettings, RoomMode, RoomSettings, SpatialSettings};
use crate::protocol::{ModerateAction, ParticipantInfo, ParticipantLeftReason};
use crate::AdminError;

/// A change of one room's roster on one node: what the other nodes hear of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RosterChange {
    Joined {
        participant: ParticipantInfo,
        /// Participants of other nodes with the same identity that this join replaces (their nodes end
        /// them with `replaced`, as a second join replaces the first on one node). Absent when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<String>,
    },
    Left {
        sid: String,
        reason: ParticipantLeftReason,
    },
    /// Its state changed (mute, deafen, push-to-talk): the participant as it is now.
    Updated { participant: ParticipantInfo },
}

/// A roster change of a room on this node, for the cluster to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRosterChange {
    pub room: String,
    pub change: RosterChange,
}

/// What the cluster tells signaling about another node's part of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteRoster {
    Change(RosterChange),
    /// The node's participants in the room now, replacing what was known of them.
    Sync(Vec<ParticipantInfo>),
    /// The node is gone (its record expired): its participants left (`disconnected`).
    Gone,
}

/// What [`crate::Signaling::remote_roster`] did with a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosterOutcome {
    /// Recorded, and this node's participants told.
    Applied,
    /// This node has no shard of the room: nothing to do.
    NoRoom,
    /// A participant id that another participant of the room has (here or on a third node): the remote
    /// one is not listed.
    Collision,
}

impl RosterOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RosterOutcome::Applied => "applied",
            RosterOutcome::NoRoom => "no_room",
            RosterOutcome::Collision => "collision",
        }
    }
}

/// How long a moderation of another node's participant may take, there and back: the moderator's session
/// waits this long at most (the cluster's request to that node gives up at the same bound).
pub const REMOTE_ACTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A moderation of a participant another node holds, for that node to carry out as one of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAction {
    pub room: String,
    /// The node holding the participant's session.
    pub node: String,
    pub sid: String,
    pub action: ModerateAction,
    /// The destination room of `move`.
    pub to: Option<String>,
}

/// A [`RemoteAction`] and where its answer goes: `Ok` once the holding node took it; the holding node's
/// refusal as the [`AdminError`] a local target would have given (`ParticipantNotFound` if it is gone
/// there), or [`AdminError::NodeUnavailable`] if that node did not answer.
#[derive(Debug)]
pub struct RemoteRequest {
    pub action: RemoteAction,
    pub reply: oneshot::Sender<Result<(), AdminError>>,
}

/// A room's settings as the nodes holding its shards share them (the owner's).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedRoom {
    pub mode: RoomMode,
    pub slots: u8,
    pub mix: MixSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spatial: Option<SpatialSettings>,
    pub max_participants: usize,
}

impl SharedRoom {
    pub fn new(settings: RoomSettings, max_participants: usize) -> SharedRoom {
        SharedRoom {
            mode: settings.mode,
            slots: settings.slots,
            mix: settings.mix,
            spatial: settings.spatial,
            max_participants,
        }
    }

    /// The room's settings, if they are valid (another node's data is checked like a request's).
    pub fn settings(&self) -> Option<RoomSettings> {
        let settings = RoomSettings {
            mode: self.mode,
            slots: self.slots,
            mix: self.mix,
            spatial: self.spatial,
        };
        (settings.validate().is_ok() && self.max_participants >= 1).then_some(settings)
    }
}

/// What a join opening a shard of another node's room knows of the room: the owner's settings (none:
/// this node's defaults) and the participants of the other nodes, by node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardSeed {
    pub room: Option<SharedRoom>,
    pub members: Vec<(String, Vec<ParticipantInfo>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> ParticipantInfo {
        ParticipantInfo {
            name: "Bob".into(),
            muted: true,
            ..ParticipantInfo::sample("PA_9a0b1c2d3e4f", "bob")
        }
    }

    #[test]
    fn a_roster_change_round_trips() {
        let joined = RosterChange::Joined {
            participant: bob(),
            replaces: Vec::new(),
        };
        let json = serde_json::to_value(&joined).expect("serializes");
        assert_eq!(json["kind"], "joined");
        assert_eq!(json["participant"]["sid"], "PA_9a0b1c2d3e4f");
        assert!(json.get("replaces").is_none(), "absent when empty");
        let back: RosterChange = serde_json::from_value(json).expect("parses");
        assert_eq!(back, joined);
        let replacing = RosterChange::Joined {
            participant: bob(),
            replaces: vec!["PA_0000000000a1".into()],
        };
        let json = serde_json::to_value(&replacing).expect("serializes");
        assert_eq!(json["replaces"][0], "PA_0000000000a1");
        let back: RosterChange = serde_json::from_value(json).expect("parses");
        assert_eq!(back, replacing);
        let left = RosterChange::Left {
            sid: "PA_9a0b1c2d3e4f".into(),
            reason: ParticipantLeftReason::Kicked,
        };
        let json = serde_json::to_string(&left).expect("serializes");
        assert_eq!(
            json,
            r#"{"kind":"left","sid":"PA_9a0b1c2d3e4f","reason":"kicked"}"#
        );
        assert_eq!(
            serde_json::from_str::<RosterChange>(&json).expect("parses"),
            left
        );
    }

    #[test]
    fn shared_settings_round_trip_and_are_checked() {
        let shared = SharedRoom::new(RoomSettings::forward(2), 50);
        let json = serde_json::to_string(&shared).expect("serializes");
        let back: SharedRoom = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, shared);
        assert_eq!(back.settings(), Some(RoomSettings::forward(2)));
        let bad = SharedRoom { slots: 0, ..shared };
        assert_eq!(bad.settings(), None, "zero slots is refused");
        let nobody = SharedRoom {
            max_participants: 0,
            ..shared
        };
        assert_eq!(nobody.settings(), None);
    }
}
