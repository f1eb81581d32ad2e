//! The audio the simulated participants send, encoded once, and the chirp detector for mix mode.
//!
//! Each voice is a tone with a syllabic (4 Hz) amplitude envelope, encoded once into a loop of Opus
//! frames at start-up; publishers re-send those frames with fresh RTP timestamps (and a fresh send-time
//! stamp in the Opus padding, see [`crate::stamp`]), so the tool spends no CPU on encoding during a run.
//!
//! Mix mode cannot carry a stamp through the server's decoder and encoder, so one publisher per room
//! periodically sends a *chirp*: a loud burst of a tone ([`CHIRP_HZ`]) far above the voices' tones,
//! preceded and followed by silence. Listeners that are latency probes decode the mix they receive and run
//! [`ChirpDetector`] on it; the onset's position (arrival time of the packet holding it plus its offset
//! inside the frame) minus the chirp's send time is the end-to-end latency through the mixer. The codec's
//! own delay is calibrated away at start-up by detecting the chirp in a direct encode→decode of the same
//! frames ([`Frames::chirp_codec_delay`]), so what is left is the network and the server (its decode, mix,
//! jitter buffer and re-encode).

use media_core::audio::{
    audio_level_from_samples, goertzel_power, mean_square, FRAME_SAMPLES, SAMPLE_RATE,
};

/// The chirp's tone. Below 8 kHz so a mixer running at 16 kHz keeps it, far from the voices' tones.
pub const CHIRP_HZ: f32 = 3000.0;
/// Peak amplitude of the chirp.
pub const CHIRP_AMPLITUDE: f32 = 0.5;
/// Frames of chirp tone (100 ms).
pub const CHIRP_FRAMES: usize = 5;
/// Frames of silence around the chirp.
const CHIRP_GUARD_FRAMES: usize = 3;
/// Detector block: 2.5 ms at 48 kHz — the resolution of the onset time.
pub const BLOCK: usize = 120;
/// Frames per voice loop (2 s).
const VOICE_FRAMES: usize = 100;

/// Errors while preparing audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("libopus produced a multi-frame packet where one frame was expected")]
    NotCode0,
    #[error("the chirp is not detectable in its own encode/decode; cannot calibrate")]
    Calibration,
}

/// One encoded frame and its RFC 6464 level.
#[derive(Clone, Debug)]
pub struct Frame {
    pub opus: Vec<u8>,
    pub level: u8,
}

/// Everything publishers send, encoded once.
#[derive(Debug)]
pub struct Frames {
    /// Voice loops, one per voice (different tones).
    pub voices: Vec<Vec<Frame>>,
    /// Silence guard, chirp, silence guard.
    pub chirp: Vec<Frame>,
    /// One frame of digital silence (what a sender without DTX sends in pauses).
    pub silence: Frame,
    /// Index in `chirp` of the first frame with tone: its send time is the chirp's send time.
    pub chirp_onset_frame: usize,
    /// Samples from the start of the onset frame to the detected onset in a direct encode → decode.
    pub chirp_codec_delay: usize,
}

fn encoder() -> Result<opus::Encoder, AudioError> {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(32_000))?;
    Ok(enc)
}

fn encode(enc: &mut opus::Encoder, pcm: &[f32]) -> Result<Frame, AudioError> {
    let mut buf = vec![0u8; 1500];
    let n = enc.encode_float(pcm, &mut buf)?;
    buf.truncate(n);
    if !crate::stamp::is_code0(&buf) {
        return Err(AudioError::NotCode0);
    }
    Ok(Frame {
        opus: buf,
        level: audio_level_from_samples(pcm),
    })
}

/// The tone of voice `v`: 300, 410, 520, ... Hz (all below 1.5 kHz).
pub fn voice_hz(v: usize) -> f64 {
    300.0 + 110.0 * (v % 11) as f64
}

impl Frames {
    /// Encode `voices` voice loops and the chirp sequence, and calibrate the chirp.
    pub fn prepare(voices: usize) -> Result<Frames, AudioError> {
        let mut out = Vec::with_capacity(voices);
        for v in 0..voices.max(1) {
            let mut enc = encoder()?;
            let f = voice_hz(v);
            let mut frames = Vec::with_capacity(VOICE_FRAMES);
            for k in 0..VOICE_FRAMES {
                let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|i| {
                        let n = (k * FRAME_SAMPLES + i) as f64;
                        let t = n / f64::from(SAMPLE_RATE);
                        let env = 0.55 + 0.45 * (std::f64::consts::TAU * 4.0 * t).sin();
                        (0.15 * env * (std::f64::consts::TAU * f * t).sin()) as f32
                    })
                    .collect();
                frames.push(encode(&mut enc, &pcm)?);
            }
            out.push(frames);
        }
        let pcm = chirp_pcm();
        let mut enc = encoder()?;
        let chirp = pcm
            .chunks(FRAME_SAMPLES)
            .map(|c| encode(&mut enc, c))
            .collect::<Result<Vec<_>, _>>()?;
        let silence = encode(&mut encoder()?, &[0f32; FRAME_SAMPLES])?;
        let mut frames = Frames {
            voices: out,
            chirp,
            silence,
            chirp_onset_frame: CHIRP_GUARD_FRAMES,
            chirp_codec_delay: 0,
        };
        frames.chirp_codec_delay = frames.calibrate()?;
        Ok(frames)
    }

    fn calibrate(&self) -> Result<usize, AudioError> {
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?;
        let mut det = ChirpDetector::new();
        let mut pcm = vec![0f32; FRAME_SAMPLES * 6];
        for (k, f) in self.chirp.iter().enumerate() {
            let n = dec.decode_float(&f.opus, &mut pcm, false)?;
            if let Some(off) = det.feed(&pcm[..n]) {
                let at = k * FRAME_SAMPLES + off;
                let onset = self.chirp_onset_frame * FRAME_SAMPLES;
                return at.checked_sub(onset).ok_or(AudioError::Calibration);
            }
        }
        Err(AudioError::Calibration)
    }
}

/// PCM of the chirp sequence: guard silence, tone, guard silence.
pub fn chirp_pcm() -> Vec<f32> {
    let total = (2 * CHIRP_GUARD_FRAMES + CHIRP_FRAMES) * FRAME_SAMPLES;
    let start = CHIRP_GUARD_FRAMES * FRAME_SAMPLES;
    let end = start + CHIRP_FRAMES * FRAME_SAMPLES;
    (0..total)
        .map(|i| {
            if (start..end).contains(&i) {
                let t = (i - start) as f64 / f64::from(SAMPLE_RATE);
                (f64::from(CHIRP_AMPLITUDE)
                    * (std::f64::consts::TAU * f64::from(CHIRP_HZ) * t).sin())
                    as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Finds chirp onsets in a decoded stream, one 2.5 ms block at a time.
///
/// A block "has the chirp" when the Goertzel power at [`CHIRP_HZ`] holds at least 30 % of the block's
/// energy and is above an absolute floor; an onset is the first such block after at least 50 ms without
/// one, so one burst gives one onset and the voices (far below in frequency) never trigger it.
#[derive(Clone, Debug)]
pub struct ChirpDetector {
    quiet_blocks: usize,
    carry: Vec<f32>,
}

const REARM_BLOCKS: usize = 20;

impl Default for ChirpDetector {
    fn default() -> Self {
        ChirpDetector::new()
    }
}

impl ChirpDetector {
    pub fn new() -> ChirpDetector {
        ChirpDetector {
            quiet_blocks: REARM_BLOCKS,
            carry: Vec::new(),
        }
    }

    /// Feed one decoded frame; returns the sample offset inside it where a chirp starts, if one does.
    pub fn feed(&mut self, pcm: &[f32]) -> Option<usize> {
        let mut found = None;
        let lead = self.carry.len();
        let mut samples = std::mem::take(&mut self.carry);
        samples.extend_from_slice(pcm);
        let mut pos = 0;
        while pos + BLOCK <= samples.len() {
            let block = &samples[pos..pos + BLOCK];
            let p = goertzel_power(block, CHIRP_HZ, SAMPLE_RATE);
            let total = mean_square(block) as f32;
            let on = p > 1e-4 && p >= 0.3 * total;
            if on {
                if self.quiet_blocks >= REARM_BLOCKS && found.is_none() {
                    found = Some(pos.saturating_sub(lead));
                }
                self.quiet_blocks = 0;
            } else {
                self.quiet_blocks += 1;
            }
            pos += BLOCK;
        }
        self.carry = samples[pos..].to_vec();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::audio::ToneGenerator;

    #[test]
    fn the_chirp_calibrates_to_the_codec_delay() {
        let f = Frames::prepare(3).expect("frames");
        // Opus adds its look-ahead (2.5 ms in CELT mode, up to 6.5 ms with SILK) plus up to one 2.5 ms
        // detector block; the onset is never detected before the tone starts.
        assert!(
            (1..=600).contains(&f.chirp_codec_delay),
            "codec delay {} samples",
            f.chirp_codec_delay
        );
        assert_eq!(f.voices.len(), 3);
        assert!(f.voices.iter().all(|v| v.len() == VOICE_FRAMES));
    }

    /// A synthetic "mix": three voices plus the chirp delayed by a known amount, through Opus (as a mixer's
    /// output would be); the detector finds the onset within one block of the truth.
    #[test]
    fn the_detector_finds_a_chirp_in_a_mix_of_voices_at_the_right_time() {
        let frames = Frames::prepare(1).expect("frames");
        for delay_ms in [0usize, 7, 33, 61] {
            let delay = delay_ms * 48;
            let chirp = chirp_pcm();
            let total = 60 * FRAME_SAMPLES;
            let mut mix = vec![0f32; total];
            for v in 0..3 {
                let mut g = ToneGenerator::new(voice_hz(v), 0.15, SAMPLE_RATE);
                let mut tmp = vec![0f32; total];
                g.fill(&mut tmp);
                for (m, t) in mix.iter_mut().zip(&tmp) {
                    *m += t;
                }
            }
            let chirp_at = 20 * FRAME_SAMPLES + delay;
            for (i, c) in chirp.iter().enumerate() {
                mix[chirp_at + i] += c;
            }
            let mut enc = encoder().expect("encoder");
            let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
            let mut det = ChirpDetector::new();
            let mut out = vec![0f32; FRAME_SAMPLES * 6];
            let mut onsets = Vec::new();
            for (k, pcm) in mix.chunks(FRAME_SAMPLES).enumerate() {
                let frame = encode(&mut enc, pcm).expect("encode");
                let n = dec
                    .decode_float(&frame.opus, &mut out, false)
                    .expect("decode");
                if let Some(off) = det.feed(&out[..n]) {
                    onsets.push(k * FRAME_SAMPLES + off);
                }
            }
            assert_eq!(
                onsets.len(),
                1,
                "one chirp, one onset (delay {delay_ms} ms)"
            );
            let true_onset = chirp_at + CHIRP_GUARD_FRAMES * FRAME_SAMPLES;
            let measured = onsets[0] as i64 - frames.chirp_codec_delay as i64;
            let err = measured - true_onset as i64;
            assert!(
                err.unsigned_abs() as usize <= 2 * BLOCK,
                "delay {delay_ms} ms: error {err} samples"
            );
        }
    }

    #[test]
    fn voices_alone_never_trigger() {
        let f = Frames::prepare(4).expect("frames");
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut det = ChirpDetector::new();
        let mut out = vec![0f32; FRAME_SAMPLES * 6];
        for v in &f.voices {
            for fr in v {
                let n = dec.decode_float(&fr.opus, &mut out, false).expect("decode");
                assert_eq!(det.feed(&out[..n]), None);
            }
        }
    }
}
