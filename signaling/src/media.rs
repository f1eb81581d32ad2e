//! The contract between signaling sessions and media workers.
//!
//! Signaling knows nothing of RTP. It finds the worker that owns a room through a [`MediaRouter`] and sends
//! it [`MediaCommand`]s over a bounded channel; a command that needs an answer carries a oneshot reply.
//! Workers report per-participant [`MediaEvent`]s back with `try_send` on the bounded sender handed over in
//! [`MediaCommand::Connect`]: a full queue is a counted drop on the worker side, never a blocked media loop.

use tokio::sync::{mpsc, oneshot};

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
    /// Everyone speaking in the room, loudest first, with levels 0.0..=1.0.
    Speakers(Vec<(ParticipantId, f32)>),
    /// The room's dominant speaker changed.
    DominantSpeaker(ParticipantId),
    /// The full slot assignment of this subscriber, sent whenever it changes.
    Slots(Vec<SlotAssignment>),
    /// Spatial forwarding room: the speakers this subscriber hears and where they are.
    Positions(Vec<(ParticipantId, Position)>),
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
