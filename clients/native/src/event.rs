//! What the SDK tells the game, through [`crate::Client::poll_event`].

/// The session's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the WebSocket and joining.
    Connecting,
    /// Joined (signaling is up); media is being negotiated.
    Joined,
    /// Media flows (ICE and DTLS are up).
    Connected,
    /// The media path was lost (ICE disconnected); it may come back ([`ConnectionState::Connected`]), or
    /// after 5 s the session rejoins.
    Disconnected,
    /// The connection was lost after media had connected; the session is rejoining ([`Event::Reconnecting`]
    /// says why and which attempt). `Joined` and `Connected` follow, or `Closed` after 60 s of attempts.
    Reconnecting,
    /// The session has ended (left, closed by the server, or failed): the SDK's threads are gone.
    Closed,
}

/// One participant of the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub muted: bool,
    /// Its team (its token's `team` claim, or the one it asked for), `None` without.
    pub team: Option<vocab::TeamId>,
    /// The shout role: heard by everyone in the room, whatever the distance or team.
    pub shout: bool,
}

/// Who is in a slot (the stream [`crate::Speaker::pull_participant`] gives for that participant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: u8,
    /// `None`: the slot is free.
    pub sid: Option<String>,
}

/// Where a speaker this session hears is (an entry of [`Event::Positions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerPosition {
    pub sid: String,
    pub position: vocab::Position,
}

/// An event of the session.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    ConnectionState(ConnectionState),
    /// This session joined: its own participant id, the room and its slot count.
    Joined {
        sid: String,
        room: String,
        slots: usize,
    },
    /// Someone is in the room (each participant already there is reported after `Joined`).
    ParticipantJoined(Participant),
    /// Someone left; `reason` as the protocol spells it (`left`, `disconnected`, `kicked`, …).
    ParticipantLeft {
        sid: String,
        reason: String,
    },
    /// Someone muted or unmuted (this session included).
    ParticipantMuted {
        sid: String,
        muted: bool,
    },
    /// Someone's moderation or push-to-talk state changed (this session included): `server_muted` (a
    /// moderator's mute it cannot undo), `deafened` (sent no audio), `ptt` (heard only while its key is
    /// down).
    ParticipantUpdated {
        sid: String,
        server_muted: bool,
        deafened: bool,
        ptt: bool,
    },
    /// A moderator or operator moved this session to `room`: it is `sid` there, with `slots` slots. The
    /// SDK has already renegotiated media; the new room's participants are reported after this.
    Moved {
        sid: String,
        room: String,
        slots: usize,
    },
    /// Who is speaking now, loudest first, with levels 0..=1 (empty: nobody).
    Speaking(Vec<(String, f32)>),
    /// The dominant speaker changed.
    DominantSpeaker {
        sid: String,
    },
    /// The slot assignment changed: every slot and who is in it.
    Slots(Vec<SlotInfo>),
    /// In a spatial forwarding room: the speakers this session hears (in range, nearest first) and where
    /// they are, for the game to render their streams ([`crate::Speaker::pull_participant`]) in its 3D
    /// audio engine (with [`crate::Config::output_channels`] 2 the SDK pans them itself). Sent when the set or a position in it changes, at most every 100 ms; empty: nobody is
    /// in range.
    Positions(Vec<SpeakerPosition>),
    /// The server is shutting down; the connection ends soon (and the session rejoins).
    Draining,
    /// Rejoin attempt `attempt` (from 1) is scheduled after a lost connection. The rejoined session is a
    /// new one on the server: a new `sid`, the participants reported again; mute state carries over.
    Reconnecting {
        attempt: u32,
        reason: String,
    },
    /// The server confirmed `leave` or ended the session; `reason` as the protocol spells it.
    Left {
        reason: Option<String>,
    },
    /// Something failed; a [`ConnectionState::Closed`] follows if the session ended. `code` is the
    /// protocol's error code when the server refused a request and the session goes on (`bad_target`: a
    /// whisper to someone not in the room, team talk without a team; `participant_not_found`: a volume for
    /// someone not in the room; `rate_limited`; `bad_position`; …), `None` for the SDK's own failures.
    Error {
        code: Option<String>,
        message: String,
    },
}
