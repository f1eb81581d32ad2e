//! What can go wrong in the SDK.

/// Errors of the SDK's calls. The C ABI maps each to a [`crate::ffi::ChorusError`] code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range (sample rate, bitrate, buffer length).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `connect` on a client that is already connecting or connected.
    #[error("the client is already connected (or connecting)")]
    AlreadyConnected,
    /// A call that needs a connection on a client that is not connected.
    #[error("the client is not connected")]
    NotConnected,
    /// The microphone or speaker handle was already taken ([`crate::Client::take_microphone`]).
    #[error("the {0} handle was already taken")]
    Taken(&'static str),
    /// A participant this session has no audio stream for (in no slot). Carries nothing, so that the
    /// audio path does not allocate.
    #[error("the participant is in no slot")]
    UnknownParticipant,
    /// The output asked for is turned off in the [`crate::Config`] (`mixed_output`, `participant_output`).
    #[error("{0} is off")]
    OutputOff(&'static str),
    /// A pull into a buffer that is not a whole number of sample frames: with
    /// [`crate::Config::output_channels`] 2 a buffer holds `frames × 2` samples (interleaved L/R), so an odd
    /// length would end inside a frame. Nothing was pulled. Carries numbers only (no allocation on the
    /// audio path).
    #[error("a buffer of {len} samples is not a whole number of {channels}-channel sample frames")]
    BufferLength { len: usize, channels: u16 },
    /// A pre-encoded Opus frame that is empty, too long or not Opus.
    #[error("not a usable Opus frame: {0}")]
    BadOpus(String),
    /// A position with a coordinate that is not finite or beyond ±1,000,000 ([`crate::Client::set_position`]);
    /// nothing was sent.
    #[error("bad position: {0}")]
    BadPosition(#[from] vocab::SpatialError),
    /// A talk target or volume the server would refuse as malformed ([`crate::Client::talk_to`],
    /// [`crate::Client::set_volume`]): a whisper to no one or to more than 64, a volume outside −50..=50.
    /// Nothing was sent.
    #[error("{0}")]
    Talk(#[from] vocab::TalkError),
    /// The SDK's threads have ended (after `leave`, a server close or a failure).
    #[error("the session has ended")]
    Ended,
    /// The signaling session failed: the server refused (`join`, `offer`), timed out or closed.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The media peer failed (SDP, ICE, DTLS, RTP).
    #[error("media: {0}")]
    Media(String),
    /// An operating system call failed (a thread or the UDP socket).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// libopus refused a setting or a frame.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

impl From<signaling::client::ClientError> for Error {
    fn from(e: signaling::client::ClientError) -> Self {
        Error::Signaling(e.to_string())
    }
}

impl From<media_core::peer::PeerError> for Error {
    fn from(e: media_core::peer::PeerError) -> Self {
        Error::Media(e.to_string())
    }
}
