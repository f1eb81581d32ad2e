//! The contract between signaling sessions and media workers.
//!
//! Signaling knows nothing of RTP. It finds the worker that owns a room through a [`MediaRouter`] and sends
//! it [`MediaCommand`]s over a bounded channel; a command that needs an answer carries a oneshot reply.
//! Workers report per-participant [`MediaEvent`]s back with `try_send` on the bounded sender handed over in
//! [`MediaCommand::Connect`]: a full queue is a counted drop on the worker side, never a blocked media loop.

use tokio::sync::{mpsc, oneshot};

/// Room mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Selective forwarding: each subscriber receives K audio slots with the K loudest other speakers.
    Forward,
    /// Server-side mixing: each subscriber receives one stream, the mix of everyone else, on its first
    /// receive slot.
    Mix,
}

impl RoomMode {
    pub const ALL: [RoomMode; 2] = [RoomMode::Forward, RoomMode::Mix];

    /// The spelling in configuration, the protocol, the admin API and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoomMode::Forward => "forward",
            RoomMode::Mix => "mix",
        }
    }
}

impl std::str::FromStr for RoomMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forward" => Ok(RoomMode::Forward),
            "mix" => Ok(RoomMode::Mix),
            other => Err(format!(
                "room mode must be \"forward\" or \"mix\", not {other:?}"
            )),
        }
    }
}

/// Encoder and jitter-buffer settings of a mixed room. Signaling carries them; the server validates them
/// against the media core's limits and hands them to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixSettings {
    /// Target bitrate of each encoded mix, bits per second.
    pub bitrate_bps: u32,
    /// Opus encoder complexity, 0 (cheapest) to 10 (best).
    pub complexity: u8,
    /// In-band forward error correction in the mix.
    pub fec: bool,
    /// Discontinuous transmission while the mix is silent.
    pub dtx: bool,
    /// Smallest jitter-buffer delay, milliseconds.
    pub jitter_min_ms: u32,
    /// Largest jitter-buffer delay, milliseconds.
    pub jitter_max_ms: u32,
}

impl Default for MixSettings {
    /// The media core's defaults (`media_core::MixConfig::default()`; the server checks they agree).
    fn default() -> Self {
        MixSettings {
            bitrate_bps: 48_000,
            complexity: 5,
            fec: true,
            dtx: true,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
        }
    }
}

/// Media settings of a room, fixed when the room is created.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomSettings {
    pub mode: RoomMode,
    /// Audio slots per subscriber (1..=16). A mixed room has one: the mix.
    pub slots: u8,
    /// Encoder settings, used in mix mode.
    pub mix: MixSettings,
}

impl RoomSettings {
    /// A forwarding room with `slots` slots.
    pub fn forward(slots: u8) -> Self {
        RoomSettings {
            mode: RoomMode::Forward,
            slots,
            mix: MixSettings::default(),
        }
    }

    /// A mixed room (one receive slot).
    pub fn mix(mix: MixSettings) -> Self {
        RoomSettings {
            mode: RoomMode::Mix,
            slots: 1,
            mix,
        }
    }
}

/// Why a command failed on the media side.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("the offer cannot be used: {0}")]
    BadSdp(String),
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
        participant: u64,
        can_publish: bool,
        can_subscribe: bool,
        /// Start muted (the session's mute state at the time of the offer).
        muted: bool,
        offer_sdp: String,
        events: mpsc::Sender<MediaEvent>,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    /// Stop (or resume) forwarding the participant's audio.
    Mute { participant: u64, muted: bool },
    /// Remove the participant and its peer. The room goes away with its last participant.
    Leave { participant: u64 },
}

/// One subscriber slot's occupant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotAssignment {
    pub slot: u8,
    /// The mid of the slot's m-line in the negotiated SDP.
    pub mid: String,
    /// The participant whose audio the slot carries, if any.
    pub participant: Option<u64>,
    /// That participant's original SSRC (the CSRC of the slot's packets).
    pub ssrc: Option<u32>,
}

/// Events from a media worker about one participant's session.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// DTLS-SRTP is up: media flows.
    Connected,
    /// ICE consent or DTLS failed or timed out; the worker has removed the peer.
    Disconnected { reason: String },
    /// Everyone speaking in the room, loudest first, with levels 0.0..=1.0.
    Speakers(Vec<(u64, f32)>),
    /// The room's dominant speaker changed.
    DominantSpeaker(u64),
    /// The full slot assignment of this subscriber, sent whenever it changes.
    Slots(Vec<SlotAssignment>),
}

/// Finds the worker that owns a room.
pub trait MediaRouter: Send + Sync + 'static {
    /// The command queue of the worker that owns `room`, placing the room on a worker if it is new.
    fn route(&self, room: &str) -> mpsc::Sender<MediaCommand>;
    /// The room has no participants left: its placement may be forgotten.
    fn room_closed(&self, room: &str);
}
