//! The audio clock of Chorus: 48 kHz Opus in 20 ms frames.

use std::time::Duration;

/// The sample rate of all audio in Chorus, Hz (Opus' native rate; also the RTP clock rate of Opus,
/// RFC 7587).
pub const SAMPLE_RATE: u32 = 48_000;

/// The frame clients send and the mixer's tick: 20 ms.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Samples (and RTP timestamp units) in one [`FRAME_DURATION`] frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;

/// One Opus packet of a server-side source participant (an Icecast source, an RTP socket, a playlist): what
/// enters a room from the server process instead of a WebRTC peer. `timestamp` is in [`SAMPLE_RATE`] units
/// (the RTP clock of Opus) on the source's own timeline; `seq` counts packets (a gap is a lost packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePacket {
    pub seq: u16,
    pub timestamp: u32,
    pub payload: std::sync::Arc<[u8]>,
}

/// What a server-side source is for, which decides how its room treats it (docs/broadcast.md, "Playout").
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum SourceRole {
    /// A participant like any other (an Icecast or RTP source, a playback).
    #[default]
    Plain,
    /// Hold music: its audio enters the room only while the room has exactly one WebRTC participant
    /// (checked per packet, so it stops within a frame of a second one joining).
    Hold,
    /// An announcement: while it is in the room, the room's mixer lowers every other voice by `duck_db`
    /// (negative, dB) with short ramps. A forwarding room without a listener mount has no mixer: there
    /// it is a participant like any other.
    Announcement { duck_db: f32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_samples_at_the_sample_rate() {
        assert_eq!(
            FRAME_SAMPLES as u128 * 1_000_000 / u128::from(SAMPLE_RATE),
            FRAME_DURATION.as_micros()
        );
    }
}
