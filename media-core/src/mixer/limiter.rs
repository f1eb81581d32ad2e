//! A soft limiter for mixed audio: keeps a sum of loud voices inside full scale without wrap-around and
//! without the harsh square-wave distortion of hard clipping.
//!
//! The mixer sums in `f32`, so nothing wraps; but a sum of five loud talkers easily peaks at 3–4× full scale
//! and must be brought back below 1.0 before encoding. Two stages:
//!
//! 1. **Gain riding**: the signal is cut into 1 ms blocks; the gain needed to keep each block's peak at the
//!    threshold (−1 dBFS) is applied with an instant attack (ramped linearly across the block from the
//!    previous gain, so there is no step), a 50 ms hold and a slow release (≈ 60 ms time constant), so a loud burst is
//!    turned down as a whole instead of being squared off.
//! 2. **Soft knee**: samples the ramp has not yet caught (the start of a block whose peak jumped) pass a
//!    `tanh` knee above 0.7 that maps any finite value strictly inside ±1.0.
//!
//! Quiet signals (peaks below the threshold with the gain back at unity) pass bit-exactly.

/// Samples per gain block: 1 ms at 48 kHz.
const BLOCK: usize = 48;
/// Peak level the gain aims for: −1 dBFS.
const THRESHOLD: f32 = 0.891;
/// Where the soft knee starts.
const KNEE: f32 = 0.7;
/// Per-block release factor toward unity gain (time constant ≈ 60 blocks = 60 ms).
const RELEASE: f32 = 1.0 / 60.0;
/// Blocks the gain is held after a reduction before it starts to release (50 ms): longer than the beat
/// period of voices, so the gain does not pump with every peak (pumping is audible as distortion).
const HOLD_BLOCKS: u32 = 50;

/// One output stream's limiter state (the gain carries over between frames).
#[derive(Clone, Debug)]
pub struct Limiter {
    gain: f32,
    /// Blocks left before the gain may release.
    hold: u32,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { gain: 1.0, hold: 0 }
    }
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The gain currently applied (1.0 = untouched).
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Limit `samples` in place.
    pub fn process(&mut self, samples: &mut [f32]) {
        self.process_interleaved(samples, 1);
    }

    /// Limit interleaved `samples` of `channels` channels in place, with one gain for all channels (a
    /// stereo image does not shift when one side is turned down).
    pub fn process_interleaved(&mut self, samples: &mut [f32], channels: usize) {
        for block in samples.chunks_mut(BLOCK * channels.max(1)) {
            let peak = block.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            let wanted = if peak * self.gain > THRESHOLD {
                self.hold = HOLD_BLOCKS;
                THRESHOLD / peak
            } else if self.hold > 0 {
                self.hold -= 1;
                self.gain
            } else {
                (self.gain + (1.0 - self.gain) * RELEASE).min(1.0)
            };
            let wanted = if wanted.is_finite() { wanted } else { 0.0 };
            if self.gain == 1.0 && wanted == 1.0 {
                // Unity: only the knee could act, and it cannot while peak ≤ threshold.
                if peak > KNEE {
                    block.iter_mut().for_each(|s| *s = knee(*s));
                }
                continue;
            }
            let start = self.gain;
            let step = (wanted - start) / block.len() as f32;
            for (i, s) in block.iter_mut().enumerate() {
                let g = start + step * (i + 1) as f32;
                *s = knee(*s * g);
            }
            self.gain = wanted;
        }
    }
}

/// Identity below [`KNEE`]; above it, a `tanh` curve that approaches but never reaches 1.0.
fn knee(s: f32) -> f32 {
    let a = s.abs();
    if a <= KNEE || !a.is_finite() {
        return if a.is_finite() { s } else { 0.0 };
    }
    let room = 1.0 - KNEE;
    let shaped = KNEE + room * ((a - KNEE) / room).tanh();
    shaped.copysign(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
    use crate::testkit::analysis::{ToneAnalysis, ToneGenerator};

    #[test]
    fn quiet_audio_passes_unchanged() {
        let mut tone = ToneGenerator::new(440.0, 0.5, SAMPLE_RATE);
        let mut lim = Limiter::new();
        for _ in 0..50 {
            let mut frame = vec![0.0; FRAME_SAMPLES];
            tone.fill(&mut frame);
            let before = frame.clone();
            lim.process(&mut frame);
            assert_eq!(frame, before);
        }
        assert_eq!(lim.gain(), 1.0);
    }

    #[test]
    fn five_loud_talkers_stay_inside_full_scale_and_stay_recognisable() {
        let freqs = [300.0f32, 500.0, 700.0, 1100.0, 1300.0];
        let mut tones: Vec<_> = freqs
            .iter()
            .map(|f| ToneGenerator::new(*f as f64, 0.8, SAMPLE_RATE))
            .collect();
        let mut lim = Limiter::new();
        let mut out = Vec::new();
        let mut peak_in = 0.0f32;
        for _ in 0..100 {
            let mut frame = vec![0.0; FRAME_SAMPLES];
            for t in &mut tones {
                t.add_to(&mut frame);
            }
            peak_in = frame.iter().fold(peak_in, |m, s| m.max(s.abs()));
            lim.process(&mut frame);
            out.extend_from_slice(&frame);
        }
        assert!(peak_in > 3.0, "the test must overload: {peak_in}");
        let peak_out = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak_out < 1.0, "peak {peak_out}");
        // Past the first attack, every talker is still there at an equal level: limited, not mangled.
        let analysis = ToneAnalysis::analyze(&out[FRAME_SAMPLES * 5..], SAMPLE_RATE, &freqs);
        for f in freqs {
            let share = analysis.relative(f);
            assert!(share > 0.15, "{f} Hz has {share} of the energy");
        }
        // Distortion products (odd harmonics of the hard-clip kind) stay far below the talkers.
        let junk = ToneAnalysis::analyze(&out[FRAME_SAMPLES * 5..], SAMPLE_RATE, &[300.0, 900.0]);
        let junk = junk.relative(900.0);
        assert!(junk < 0.001, "3rd harmonic has {junk} of the energy");
    }

    #[test]
    fn gain_recovers_after_a_burst() {
        let mut lim = Limiter::new();
        let mut loud = vec![3.0f32; FRAME_SAMPLES];
        lim.process(&mut loud);
        assert!(lim.gain() < 0.5);
        for _ in 0..60 {
            let mut quiet = vec![0.1f32; FRAME_SAMPLES];
            lim.process(&mut quiet);
        }
        assert!(lim.gain() > 0.99, "gain {}", lim.gain());
    }

    #[test]
    fn non_finite_input_becomes_silence_not_noise() {
        let mut lim = Limiter::new();
        let mut frame = vec![f32::NAN, f32::INFINITY, -f32::INFINITY, 0.5];
        lim.process(&mut frame);
        assert!(frame.iter().all(|s| s.is_finite() && s.abs() < 1.0));
    }
}
