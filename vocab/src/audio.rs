//! The audio clock of Chorus: 48 kHz Opus in 20 ms frames.

use std::time::Duration;

/// The sample rate of all audio in Chorus, Hz (Opus' native rate; also the RTP clock rate of Opus,
/// RFC 7587).
pub const SAMPLE_RATE: u32 = 48_000;

/// The frame clients send and the mixer's tick: 20 ms.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Samples (and RTP timestamp units) in one [`FRAME_DURATION`] frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;

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
