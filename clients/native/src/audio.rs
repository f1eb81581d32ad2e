//! The SDK's audio processing on its network thread: Opus encoding at the caller's rate, the volume applied
//! to a slot, and the soft-clipped mix. Each slot plays out through media-core's [`Player`]
//! (`media_core::client::Player`: jitter buffer, FEC, PLC, decoded at the caller's rate).

use media_core::audio::{audio_level_from_samples, opus_fec_loss_percent};
#[cfg(doc)]
use media_core::client::Player;

use crate::{Config, Error};

/// The longest Opus frame libopus produces (RFC 6716: 1275 bytes of one frame, plus the TOC).
pub const MAX_OPUS_BYTES: usize = 1_276;

/// Encodes the microphone, one 20 ms frame at the caller's rate per call (libopus VOIP).
pub(crate) struct MicEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
    /// The packet loss the FEC is tuned for now, and whether it follows the server's reports.
    expected_loss_percent: i32,
    follows_reports: bool,
    /// In-band FEC is on.
    fec: bool,
}

/// The packet loss libopus is told for `percent` expected: with in-band FEC on, enough for it to code
/// FEC at any bitrate ([`opus_fec_loss_percent`]: at 24 kb/s it codes none for 5 % or less unless it
/// did in the frame before).
fn told_to_libopus(fec: bool, percent: i32) -> i32 {
    if !fec {
        return percent;
    }
    let percent = u8::try_from(percent.clamp(0, 100)).unwrap_or(100);
    i32::from(opus_fec_loss_percent(percent))
}

/// One encoded microphone frame.
pub(crate) enum Encoded<'a> {
    /// Send this packet with this RFC 6464 level.
    Packet { opus: &'a [u8], level: u8 },
    /// A DTX stub: nothing is sent, the RTP clock moves on.
    Dtx,
}

impl MicEncoder {
    pub(crate) fn new(config: &Config) -> Result<Self, Error> {
        let mut encoder = opus::Encoder::new(
            config.input_rate_hz,
            opus::Channels::Mono,
            opus::Application::Voip,
        )?;
        encoder.set_bitrate(opus::Bitrate::Bits(config.bitrate_bps))?;
        encoder.set_inband_fec(config.fec)?;
        encoder.set_packet_loss_perc(told_to_libopus(config.fec, config.expected_loss_percent))?;
        encoder.set_dtx(config.dtx)?;
        Ok(MicEncoder {
            encoder,
            packet: vec![0; MAX_OPUS_BYTES],
            expected_loss_percent: config.expected_loss_percent,
            follows_reports: config.fec && config.fec_follows_reports,
            fec: config.fec,
        })
    }

    /// Tune the FEC for the loss the server's receiver reports on the microphone stated last
    /// (`ClientPeer::reported_mic_loss_percent`; `None` before any), when following them. Returns the
    /// new figure when it changed.
    pub(crate) fn follow_reports(&mut self, reported: Option<i32>) -> Result<Option<i32>, Error> {
        let Some(percent) =
            reported.filter(|p| self.follows_reports && *p != self.expected_loss_percent)
        else {
            return Ok(None);
        };
        self.encoder
            .set_packet_loss_perc(told_to_libopus(self.fec, percent))?;
        self.expected_loss_percent = percent;
        Ok(Some(percent))
    }

    /// Encode one 20 ms frame (`input_rate_hz / 50` samples).
    pub(crate) fn encode(&mut self, pcm: &[f32]) -> Result<Encoded<'_>, Error> {
        let level = audio_level_from_samples(pcm);
        let n = self.encoder.encode_float(pcm, &mut self.packet)?;
        if n <= 2 {
            return Ok(Encoded::Dtx);
        }
        Ok(Encoded::Packet {
            opus: &self.packet[..n],
            level,
        })
    }
}

/// Soft clipping for a mix: linear up to the knee, then a tanh curve towards ±1 (continuous, with a
/// continuous slope at the knee).
pub fn soft_clip(x: f32) -> f32 {
    const KNEE: f32 = 0.8;
    let a = x.abs();
    if a <= KNEE {
        return x;
    }
    let y = KNEE + (1.0 - KNEE) * ((a - KNEE) / (1.0 - KNEE)).tanh();
    y.copysign(x)
}

/// Per-channel gains applied to a 20 ms `frame` of `channels` interleaved (1, or 2: L/R; a participant's
/// volume, times its pan in stereo): each channel's gain moves linearly from `from` (the last frame's) to
/// `to` across the frame, one step per sample frame (both sides of a sample frame move together), so a
/// change does not click, and anything louder than the knee is soft-clipped ([`soft_clip`]), so +25 dB
/// does not wrap or square off. Gain 1 throughout: untouched.
pub(crate) fn apply_gain(frame: &mut [f32], channels: usize, from: [f32; 2], to: [f32; 2]) {
    let channels = channels.clamp(1, 2);
    if from[..channels]
        .iter()
        .chain(&to[..channels])
        .all(|g| *g == 1.0)
    {
        return;
    }
    let frames = (frame.len() / channels).max(1) as f32;
    for (i, sample_frame) in frame.chunks_exact_mut(channels).enumerate() {
        let at = (i + 1) as f32 / frames;
        for (c, s) in sample_frame.iter_mut().enumerate() {
            let gain = from[c] + (to[c] - from[c]) * at;
            *s = soft_clip(*s * gain);
        }
    }
}

/// A participant id (`sid`) stored inline, so slot updates reach the audio thread without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sid {
    len: u8,
    bytes: [u8; Sid::CAPACITY],
}

impl Sid {
    const CAPACITY: usize = 63;
    pub(crate) const EMPTY: Sid = Sid {
        len: 0,
        bytes: [0; Sid::CAPACITY],
    };

    /// `sid` if it fits (server sids are `PA_` and 12 hex digits).
    pub(crate) fn new(sid: &str) -> Option<Sid> {
        let len = sid.len();
        if len == 0 || len > Sid::CAPACITY {
            return None;
        }
        let mut bytes = [0; Sid::CAPACITY];
        bytes[..len].copy_from_slice(sid.as_bytes());
        Some(Sid {
            len: len as u8,
            bytes,
        })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A slot's new occupant (`Sid::EMPTY`: nobody), from a `slots` message, for the speaker's map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotUpdate {
    pub slot: u8,
    pub sid: Sid,
}

/// A pre-encoded Opus frame on its way from the game to the network thread, inline (no allocation).
#[derive(Clone, Copy)]
pub(crate) struct OpusFrame {
    pub len: u16,
    pub bytes: [u8; MAX_OPUS_BYTES],
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::audio::samples_duration;
    use media_core::client::{Player, ReceivedAudio};
    use media_core::mixer::opus_packet_has_fec;
    use media_core::testkit::analysis::{ToneAnalysis, ToneGenerator, VoiceBuzz};
    use std::time::Instant;

    /// How many of 50 frames of speech-like sound leave `mic` with in-band FEC.
    fn fec_frames(mic: &mut MicEncoder, voice: &mut VoiceBuzz, rate: u32) -> usize {
        let mut pcm = vec![0.0f32; rate as usize / 50];
        (0..50)
            .filter(|_| {
                voice.fill(&mut pcm);
                match mic.encode(&pcm).expect("a 20 ms frame encodes") {
                    Encoded::Packet { opus, .. } => opus_packet_has_fec(opus),
                    Encoded::Dtx => false,
                }
            })
            .count()
    }

    /// The server's reports say the uplink went from clean to losing 3 %: the encoder codes FEC for it at
    /// 24 kb/s too (libopus alone codes none there for 5 % or less after a clean stretch).
    #[test]
    fn a_small_reported_loss_gets_fec_at_a_low_bitrate() {
        let config = Config {
            bitrate_bps: 24_000,
            ..Config::default()
        };
        let rate = config.input_rate_hz;
        let mut mic = MicEncoder::new(&config).expect("encoder");
        let mut voice = VoiceBuzz::new(rate);
        fec_frames(&mut mic, &mut voice, rate);
        let at_start = fec_frames(&mut mic, &mut voice, rate);
        assert!(
            at_start >= 25,
            "{at_start} of 50 with FEC at the configured 10 %"
        );
        assert_eq!(mic.follow_reports(Some(0)).expect("tuned"), Some(0));
        fec_frames(&mut mic, &mut voice, rate);
        assert!(
            fec_frames(&mut mic, &mut voice, rate) <= 1,
            "FEC on a clean uplink"
        );
        assert_eq!(mic.follow_reports(Some(3)).expect("tuned"), Some(3));
        let lossy = fec_frames(&mut mic, &mut voice, rate);
        assert!(
            lossy + 3 >= at_start,
            "{lossy} of 50 with FEC at 3 %, {at_start} at 10 %"
        );
    }

    #[test]
    fn soft_clip_is_linear_below_the_knee_and_bounded_above() {
        assert_eq!(soft_clip(0.5), 0.5);
        assert_eq!(soft_clip(-0.8), -0.8);
        assert!(soft_clip(3.0) <= 1.0 && soft_clip(3.0) > 0.99);
        assert!(soft_clip(1.0) < 1.0 && soft_clip(1.0) > 0.9);
        assert!(soft_clip(-3.0) >= -1.0 && soft_clip(-1.0) < -0.9);
        assert!((soft_clip(0.801) - 0.801).abs() < 1e-4);
    }

    #[test]
    fn a_volume_scales_the_frame_without_a_jump_and_never_beyond_full_scale() {
        let mono = |g: f32| [g, g];
        let mut frame = [0.5f32; 480];
        apply_gain(&mut frame, 1, mono(1.0), mono(1.0));
        assert!(frame.iter().all(|s| *s == 0.5), "unchanged");
        let quieter = vocab::Volume::new(-12).expect("in range").gain();
        apply_gain(&mut frame, 1, mono(1.0), mono(quieter));
        // A ramp from the last frame's gain: no step at the start, the new gain at the end.
        assert!((frame[0] - 0.5).abs() < 0.01, "{}", frame[0]);
        assert!((frame[479] - 0.5 * quieter).abs() < 1e-4, "{}", frame[479]);
        assert!(frame.windows(2).all(|w| w[1] <= w[0]));
        // +50 (+25 dB) on a loud frame: soft-clipped below full scale, not wrapped.
        let louder = vocab::Volume::new(50).expect("in range").gain();
        let mut loud = [0.6f32, -0.6, 0.3, -0.01];
        apply_gain(&mut loud, 1, mono(louder), mono(louder));
        assert!(loud[0] > 0.99 && loud[0] <= 1.0 && loud[1] < -0.99 && loud[1] >= -1.0);
        assert!(loud[2] > 0.99, "{loud:?}");
        assert!((loud[3] + 0.01 * louder).abs() < 1e-4, "quiet stays linear");
        // Silent (−50): nothing.
        let mut silenced = [0.5f32; 4];
        apply_gain(
            &mut silenced,
            1,
            mono(0.0),
            mono(vocab::Volume::SILENT.gain()),
        );
        assert!(silenced.iter().all(|s| *s == 0.0));
    }

    /// Stereo: each side ramps to its own gain, both sides of a sample frame at the same point of the
    /// ramp (a centred frame panned fully right keeps L and R in step: L falls as R holds).
    #[test]
    fn stereo_gains_ramp_per_side_in_whole_sample_frames() {
        let mut frame = [0.5f32; 960];
        apply_gain(&mut frame, 2, [1.0, 1.0], [0.0, 1.0]);
        let (left, right): (Vec<f32>, Vec<f32>) =
            frame.chunks_exact(2).map(|f| (f[0], f[1])).unzip();
        assert!(
            right.iter().all(|s| *s == 0.5),
            "the right side is untouched"
        );
        assert!(
            (left[0] - 0.5).abs() < 0.01 && left[479] == 0.0,
            "{} {}",
            left[0],
            left[479]
        );
        assert!(left.windows(2).all(|w| w[1] <= w[0]));
        // The same gains on both sides of a stereo frame are the mono ramp on each.
        let mut stereo = [0.5f32; 960];
        let mut mono = [0.5f32; 480];
        apply_gain(&mut stereo, 2, [1.0, 1.0], [0.25, 0.25]);
        apply_gain(&mut mono, 1, [1.0, 1.0], [0.25, 0.25]);
        for (pair, m) in stereo.chunks_exact(2).zip(&mono) {
            assert_eq!(pair, [*m, *m]);
        }
    }

    #[test]
    fn sids_fit_inline_or_are_refused() {
        let sid = Sid::new("PA_9a0b1c2d3e4f").expect("a server sid fits");
        assert_eq!(sid.as_bytes(), b"PA_9a0b1c2d3e4f");
        assert!(Sid::new("").is_none());
        assert!(Sid::new(&"x".repeat(64)).is_none());
    }

    /// A 16 kHz tone encoded by the microphone encoder and played through a slot at 24 kHz comes out as the
    /// same tone (the rates meet at Opus' 48 kHz RTP clock).
    #[test]
    fn a_tone_survives_encoding_at_one_rate_and_playout_at_another() {
        let config = Config {
            input_rate_hz: 16_000,
            ..Config::default()
        };
        let mut mic = MicEncoder::new(&config).expect("encoder");
        let mut player = Player::new(24_000).expect("player");
        let mut tone = ToneGenerator::new(440.0, 0.3, 16_000);
        let start = Instant::now();
        let mut played = Vec::new();
        let mut out = [0.0f32; 480];
        for i in 0..100u32 {
            let mut pcm = [0.0f32; 320];
            tone.fill(&mut pcm);
            let now = start + samples_duration(960 * i as usize);
            if let Encoded::Packet { opus, level } = mic.encode(&pcm).expect("encode") {
                assert!(level < 127);
                player.receive(&ReceivedAudio {
                    slot: 0,
                    ssrc: 1,
                    csrc: Some(2),
                    contributors: vec![(2, None)],
                    seq: u64::from(i),
                    timestamp: 960 * i,
                    audio_level: Some(level),
                    payload: opus.into(),
                    redundant: None,
                    arrival: now,
                });
            }
            player.tick(now, &mut out);
            played.extend_from_slice(&out);
        }
        let tail = &played[played.len() / 2..];
        let analysis = ToneAnalysis::analyze(tail, 24_000, &[440.0, 660.0]);
        assert_eq!(analysis.present_default(), vec![440.0], "{analysis:?}");
    }
}
