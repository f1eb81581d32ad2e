//! The contract between signaling sessions and media workers.
//!
//! Signaling knows nothing of RTP. It finds the worker that owns a room through a [`MediaRouter`] and sends
//! it [`MediaCommand`]s over a bounded channel; a command that needs an answer carries a oneshot reply.
//! Workers report per-participant [`MediaEvent`]s back with `try_send` on the bounded sender handed over in
//! [`MediaCommand::Connect`]: a full queue is a counted drop on the worker side, never a blocked media loop.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ServerMessage, Speaker, Speakers};

pub use vocab::{
    MixSettings, ParticipantId, Position, RoomMode, RoomSettings, SettingsError, SlotAssignment,
    SourcePacket, SourceRole, SpatialSettings, TalkTarget, TeamId, Volume,
};

/// Why a command failed on the media side.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("the offer cannot be used: {0}")]
    BadSdp(String),
    /// The room settings are out of range (the media side checks them again when it creates the room).
    #[error("room setting out of range: {0}")]
    BadRoomSettings(SettingsError),
    /// The room exists on the media worker with settings other than the ones asked for.
    #[error("the room exists with other settings")]
    RoomSettingsConflict,
    #[error("no such participant on this worker")]
    UnknownParticipant,
    #[error("the participant is already connected")]
    AlreadyConnected,
    #[error("the media worker is unavailable")]
    Unavailable,
}

/// Commands from a signaling session to the media worker that owns the session's room.
#[derive(Debug)]
pub enum MediaCommand {
    /// Create the participant's peer from its SDP offer (creating the room with `settings` if this worker
    /// does not have it yet) and reply with the SDP answer.
    Connect {
        room: String,
        settings: RoomSettings,
        participant: ParticipantId,
        can_publish: bool,
        can_subscribe: bool,
        /// Start muted (the session's mute state at the time of the offer).
        muted: bool,
        /// Start deafened: send the participant no audio.
        deafened: bool,
        /// Start with push-to-talk on (and the key up).
        ptt: bool,
        /// Its team, and whether it has the shout role (heard by the whole room).
        team: Option<TeamId>,
        shout: bool,
        /// Hears the room's mix in one stream whatever the room's mode (a WHEP player), not slots.
        hears_mix: bool,
        offer_sdp: String,
        events: mpsc::Sender<MediaEvent>,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    /// Add a server-side source participant (creating the room with `settings` if this worker does not
    /// have it yet): its Opus packets arrive on `packets` instead of from a WebRTC peer, until the
    /// sender is dropped or `Leave` comes. Replies once it is in the room.
    ConnectSource {
        room: String,
        settings: RoomSettings,
        participant: ParticipantId,
        muted: bool,
        /// What the source is for (hold music is gated, an announcement ducks the room).
        role: SourceRole,
        packets: mpsc::Receiver<SourcePacket>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Answer the connected participant's ICE restart offer on its existing peer: same participant, room,
    /// slots; new ICE credentials (and the paths learned under the old ones forgotten).
    RestartIce {
        participant: ParticipantId,
        offer_sdp: String,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    /// Stop (or resume) forwarding the participant's audio.
    Mute {
        participant: ParticipantId,
        muted: bool,
    },
    /// Place or move the participant in its spatial room (checked: finite, within the world).
    Position {
        participant: ParticipantId,
        position: Position,
    },
    /// Send the participant no audio (or resume).
    Deafen {
        participant: ParticipantId,
        deafened: bool,
    },
    /// Turn push-to-talk on (key up) or off.
    Ptt {
        participant: ParticipantId,
        enabled: bool,
    },
    /// The push-to-talk key went down or up: handle it at once (the talker's next packet depends on it).
    PttKey {
        participant: ParticipantId,
        down: bool,
    },
    /// Whom the participant's voice is for (whisper targets are participants of its room).
    Talk {
        participant: ParticipantId,
        target: TalkTarget<ParticipantId>,
    },
    /// How loud `listener` hears `speaker` (mixed rooms apply it in the listener's mix).
    Volume {
        listener: ParticipantId,
        speaker: ParticipantId,
        volume: Volume,
    },
    /// Remove the participant and its peer. The room goes away with its last participant.
    Leave { participant: ParticipantId },
}

/// Events from a media worker about one participant's session.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// DTLS-SRTP is up: media flows.
    Connected,
    /// ICE consent or DTLS failed or timed out; the worker has removed the peer.
    Disconnected { reason: String },
    /// Everyone speaking in the room, loudest first, with levels 0.0..=1.0: one list for all the room's
    /// listeners.
    Speakers(SpeakerLevels),
    /// The room's dominant speaker changed.
    DominantSpeaker(ParticipantId),
    /// The full slot assignment of this subscriber, sent whenever it changes.
    Slots(Vec<SlotAssignment>),
    /// Spatial forwarding room: the speakers this subscriber hears and where they are.
    Positions(Vec<(ParticipantId, Position)>),
}

/// The room's speakers as each listener's session gets them: one list shared by all the room's listeners,
/// whose `speakers` message the first session to write it serializes for the others. Copied and
/// serialized per listener, a room of 2,000 did both ten thousand times a second (five reports a second
/// each), the copies on its media worker (issue 15, docs/loadtest.md "the signaling side of a room of
/// 2,000").
#[derive(Clone)]
pub struct SpeakerLevels(Arc<Levels>);

struct Levels {
    levels: Vec<(ParticipantId, f32)>,
    /// The `speakers` message's JSON, once some session wrote it.
    text: OnceLock<String>,
}

impl SpeakerLevels {
    pub fn new(levels: Vec<(ParticipantId, f32)>) -> Self {
        SpeakerLevels(Arc::new(Levels {
            levels,
            text: OnceLock::new(),
        }))
    }

    /// The speakers, loudest first, with their levels.
    pub fn levels(&self) -> &[(ParticipantId, f32)] {
        &self.0.levels
    }

    /// The `speakers` message.
    pub fn message(&self) -> ServerMessage {
        ServerMessage::Speakers(Speakers {
            speakers: self
                .levels()
                .iter()
                .map(|(id, level)| Speaker::new(id.to_string(), *level))
                .collect(),
        })
    }

    /// The `speakers` message's JSON text, made once for every listener.
    pub(crate) fn text(&self) -> &str {
        self.0.text.get_or_init(|| {
            serde_json::to_string(&self.message()).expect(
                "a speakers message is plain structs with string keys and finite numbers: serializing cannot fail",
            )
        })
    }
}

impl From<Vec<(ParticipantId, f32)>> for SpeakerLevels {
    fn from(levels: Vec<(ParticipantId, f32)>) -> Self {
        SpeakerLevels::new(levels)
    }
}

impl PartialEq for SpeakerLevels {
    fn eq(&self, other: &Self) -> bool {
        self.levels() == other.levels()
    }
}

impl fmt::Debug for SpeakerLevels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpeakerLevels")
            .field(&self.levels())
            .finish()
    }
}

impl MediaCommand {
    /// The participant the command is about (a volume's listener: the one whose audio it shapes).
    pub fn participant(&self) -> ParticipantId {
        match self {
            MediaCommand::Connect { participant, .. }
            | MediaCommand::ConnectSource { participant, .. }
            | MediaCommand::RestartIce { participant, .. }
            | MediaCommand::Mute { participant, .. }
            | MediaCommand::Position { participant, .. }
            | MediaCommand::Deafen { participant, .. }
            | MediaCommand::Ptt { participant, .. }
            | MediaCommand::PttKey { participant, .. }
            | MediaCommand::Talk { participant, .. }
            | MediaCommand::Leave { participant } => *participant,
            MediaCommand::Volume { listener, .. } => *listener,
        }
    }
}

/// Finds the worker that hosts a participant. A room lives on one worker, or, once larger than a worker's
/// share, on several (its shards; docs/architecture.md, "Rooms larger than a worker").
pub trait MediaRouter: Send + Sync + 'static {
    /// The command queue of the worker that hosts `participant` of `room`, placing it (and the room, if it
    /// is new) on a worker if it is not placed yet.
    fn route(&self, room: &str, participant: ParticipantId) -> mpsc::Sender<MediaCommand>;
    /// `participant` left `room`: its place on its worker is free.
    fn left(&self, _room: &str, _participant: ParticipantId) {}
    /// The room has no participants left: its placement may be forgotten.
    fn room_closed(&self, room: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_levels_are_one_list_and_one_text_for_every_listener() {
        let levels = SpeakerLevels::new(vec![
            (ParticipantId(0x1234), 0.5),
            (ParticipantId(7), f32::NAN),
        ]);
        let copy = levels.clone();
        let text = copy.text();
        assert_eq!(
            serde_json::from_str::<ServerMessage>(text).expect("parses"),
            ServerMessage::Speakers(Speakers {
                speakers: vec![
                    Speaker::new("PA_000000001234".into(), 0.5),
                    // A level that is not a number is written as silence.
                    Speaker::new("PA_000000000007".into(), 0.0),
                ]
            })
        );
        // Made by the first listener's session, read by the others.
        assert!(std::ptr::eq(levels.text(), text));
        let finite = SpeakerLevels::from(vec![(ParticipantId(7), 0.25)]);
        assert_eq!(finite, finite.clone());
        assert_eq!(
            SpeakerLevels::new(Vec::new()).text(),
            r#"{"type":"speakers","speakers":[]}"#
        );
    }
}
