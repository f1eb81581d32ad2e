//! How a [`crate::Client`] is set up.

use std::time::Duration;

use crate::Error;

/// The sample rates the SDK takes and gives PCM at (libopus encodes and decodes them directly: no
/// resampler).
pub const SAMPLE_RATES_HZ: [u32; 3] = [16_000, 24_000, 48_000];

/// The output channel counts: mono, or stereo as interleaved L/R sample frames.
pub const OUTPUT_CHANNELS: [u16; 2] = [1, 2];

/// The most earlier frames a packet may carry as RED redundancy ([`Config::red_depth`]).
pub const MAX_RED_DEPTH: u8 = 2;

/// A client's settings. `Config::default()` is mono 48 kHz in and out, 32 kb/s, FEC on, RED depth 1,
/// DTX off.
#[derive(Clone, Debug)]
pub struct Config {
    /// The rate of the PCM the game pushes (16, 24 or 48 kHz, mono).
    pub input_rate_hz: u32,
    /// The rate of the PCM the game pulls (16, 24 or 48 kHz).
    pub output_rate_hz: u32,
    /// The channels of the PCM the game pulls: 1 (mono, the default) or 2 (stereo, interleaved L/R: a
    /// spatial mixed room's stereo mix as the server panned it; a forwarding room's streams panned by
    /// the speakers' positions; anything else identical on both sides). Every pull then takes a whole
    /// number of sample frames: `frames × output_channels` samples.
    pub output_channels: u16,
    /// The Opus encoder's bitrate (6 to 510 kb/s).
    pub bitrate_bps: i32,
    /// Opus in-band forward error correction (a lost frame comes back from the next packet).
    pub fec: bool,
    /// The packet loss the encoder's FEC is tuned for, 0..=100 %: from the start, and throughout unless
    /// `fec_follows_reports`. Any figure above 0 gets FEC at any bitrate (libopus is told at least 6 %:
    /// below, at 24 kb/s, it coded none).
    pub expected_loss_percent: i32,
    /// Once the server's receiver reports on the microphone stream arrive, tune the FEC for the loss they
    /// state instead, as a browser's encoder does: the uplink's loss in a mixed room; in a forwarding room
    /// at least the highest loss a listener of the room reports (up to the server's
    /// `media.loss_feedback_max_percent`). A clean room then spends no bits on FEC copies.
    pub fec_follows_reports: bool,
    /// RED (RFC 2198): offered when 1 or more, and then each microphone packet also carries this many
    /// earlier frames (as Chrome sends depth 1), and the server sends this client RED too (a forwarded
    /// speaker's own, or the mix's: the packet before, the two before while this client states loss).
    /// 0..=[`MAX_RED_DEPTH`]; 0: plain Opus, FEC alone. Each depth adds about one frame's bytes to every
    /// packet both ways. In-band FEC brings back one lost packet from the next; RED also bridges runs
    /// of losses as long as the depth. In virtual time (media-core's speech tests, a mixed room, 5 % loss
    /// and 30 ± 20 ms on every leg) the passage scored PESQ-WB 3.62 with FEC alone and 4.51 at depth 1;
    /// with the losses in runs of 3, 2.79, 3.51 at depth 1 and 3.85 at depth 2.
    pub red_depth: u8,
    /// Opus discontinuous transmission: silence is not sent.
    pub dtx: bool,
    /// The length of each audio ring (microphone in, mixed out, each participant out), 40..=2000 ms. A
    /// full ring is a counted drop ([`crate::Stats`]).
    pub buffer_ms: u32,
    /// Produce the mixed output stream ([`crate::Speaker::pull_mixed`]).
    pub mixed_output: bool,
    /// Produce one output stream per participant ([`crate::Speaker::pull_participant`]).
    pub participant_output: bool,
    /// The display name sent with `join` (the token's is used if `None`).
    pub name: Option<String>,
    /// The team asked for with `join` (a casual room's party chat). A token's `team` claim decides alone:
    /// a different team here is refused (`forbidden`), so a game server's players leave it `None`.
    pub team: Option<vocab::TeamId>,
    /// Join as a listener only: never publish (as a token with `can_publish: false`); the microphone's
    /// audio is dropped.
    pub listen_only: bool,
    /// How long to wait for each signaling reply (`joined`, `answer`).
    pub reply_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            input_rate_hz: 48_000,
            output_rate_hz: 48_000,
            output_channels: 1,
            bitrate_bps: 32_000,
            fec: true,
            expected_loss_percent: 10,
            fec_follows_reports: true,
            red_depth: 1,
            dtx: false,
            buffer_ms: 200,
            mixed_output: true,
            participant_output: true,
            name: None,
            team: None,
            listen_only: false,
            reply_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Check every value's range.
    pub fn validate(&self) -> Result<(), Error> {
        for (what, rate) in [
            ("input_rate_hz", self.input_rate_hz),
            ("output_rate_hz", self.output_rate_hz),
        ] {
            if !SAMPLE_RATES_HZ.contains(&rate) {
                return Err(Error::Config(format!(
                    "{what} {rate} is not one of {SAMPLE_RATES_HZ:?}"
                )));
            }
        }
        if !OUTPUT_CHANNELS.contains(&self.output_channels) {
            return Err(Error::Config(format!(
                "output_channels {} is not 1 or 2",
                self.output_channels
            )));
        }
        if !(6_000..=510_000).contains(&self.bitrate_bps) {
            return Err(Error::Config(format!(
                "bitrate_bps {} is not in 6000..=510000",
                self.bitrate_bps
            )));
        }
        if !(0..=100).contains(&self.expected_loss_percent) {
            return Err(Error::Config(format!(
                "expected_loss_percent {} is not in 0..=100",
                self.expected_loss_percent
            )));
        }
        if self.red_depth > MAX_RED_DEPTH {
            return Err(Error::Config(format!(
                "red_depth {} is not in 0..={MAX_RED_DEPTH}",
                self.red_depth
            )));
        }
        if !(40..=2_000).contains(&self.buffer_ms) {
            return Err(Error::Config(format!(
                "buffer_ms {} is not in 40..=2000",
                self.buffer_ms
            )));
        }
        Ok(())
    }

    /// Samples in one 20 ms frame at `rate_hz`.
    pub(crate) fn frame_samples(rate_hz: u32) -> usize {
        rate_hz as usize / 50
    }

    /// Samples in a ring of `buffer_ms` at `rate_hz`.
    pub(crate) fn ring_samples(&self, rate_hz: u32) -> usize {
        rate_hz as usize * self.buffer_ms as usize / 1000
    }

    /// The output's channels, as a count.
    pub(crate) fn channels(&self) -> usize {
        usize::from(self.output_channels)
    }

    /// The output's channels, for libopus.
    pub(crate) fn opus_channels(&self) -> opus::Channels {
        if self.output_channels == 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        }
    }

    /// Samples (all channels) in one 20 ms output frame.
    pub(crate) fn output_frame_samples(&self) -> usize {
        Config::frame_samples(self.output_rate_hz) * self.channels()
    }

    /// Samples (all channels) in each output ring.
    pub(crate) fn output_ring_samples(&self) -> usize {
        self.ring_samples(self.output_rate_hz) * self.channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_ranges_are_checked() {
        assert!(Config::default().validate().is_ok());
        for bad in [
            Config {
                input_rate_hz: 44_100,
                ..Config::default()
            },
            Config {
                output_rate_hz: 8_000,
                ..Config::default()
            },
            Config {
                output_channels: 0,
                ..Config::default()
            },
            Config {
                output_channels: 3,
                ..Config::default()
            },
            Config {
                bitrate_bps: 1_000,
                ..Config::default()
            },
            Config {
                expected_loss_percent: 101,
                ..Config::default()
            },
            Config {
                buffer_ms: 10,
                ..Config::default()
            },
            Config {
                red_depth: MAX_RED_DEPTH + 1,
                ..Config::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config(_))), "{bad:?}");
        }
        assert_eq!(Config::frame_samples(16_000), 320);
        assert_eq!(Config::default().ring_samples(24_000), 4_800);
        let stereo = Config {
            output_rate_hz: 24_000,
            output_channels: 2,
            ..Config::default()
        };
        assert!(stereo.validate().is_ok());
        assert_eq!(stereo.output_frame_samples(), 960);
        assert_eq!(stereo.output_ring_samples(), 9_600);
    }
}
