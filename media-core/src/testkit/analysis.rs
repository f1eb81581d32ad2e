//! Tone generation and tone detection for tests and the load tester: synthesise recognisable audio and
//! check what came out the other end. Works on mono `f32` PCM in `-1.0..=1.0` (full scale = 1.0).

use std::f64::consts::TAU;

use crate::audio::mean_square;

/// Writes a sine of `freq_hz` with peak `amplitude` into `out`, starting at `*phase` (radians) and leaving
/// `*phase` where the next frame continues, so consecutive calls produce one continuous tone.
pub fn sine(freq_hz: f64, amplitude: f32, sample_rate: u32, phase: &mut f64, out: &mut [f32]) {
    let step = TAU * freq_hz / f64::from(sample_rate);
    let mut p = *phase;
    for s in out.iter_mut() {
        *s = amplitude * p.sin() as f32;
        p += step;
        if p >= TAU {
            p -= TAU;
        }
    }
    *phase = p;
}

/// A continuous sine tone across frames: [`sine`] with its phase kept inside.
#[derive(Clone, Debug)]
pub struct ToneGenerator {
    freq_hz: f64,
    amplitude: f32,
    sample_rate: u32,
    phase: f64,
}

/// A voice-like sound that libopus takes for speech (a steady tone or buzz its analysis takes for
/// music, and codes no in-band FEC for): syllables four times a second, each a half-sine swell over 70 %
/// of its 250 ms and silence after it, of a buzz of 30 harmonics falling 6 dB per octave whose pitch
/// glides between 100 and 180 Hz, at `sample_rate`.
#[derive(Clone, Debug)]
pub struct VoiceBuzz {
    sample_rate: u32,
    n: u64,
}

impl VoiceBuzz {
    pub fn new(sample_rate: u32) -> Self {
        Self { sample_rate, n: 0 }
    }

    /// Overwrites `out` with the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [f32]) {
        const GLIDE_HZ: f64 = 0.7;
        for s in out.iter_mut() {
            let t = self.n as f64 / f64::from(self.sample_rate);
            let in_syllable = (t * 4.0).fract() / 0.7;
            let swell = if in_syllable < 1.0 {
                (std::f64::consts::PI * in_syllable).sin()
            } else {
                0.0
            };
            // The phase of a pitch of 140 + 40 sin(2π·0.7·t) Hz: its integral.
            let phase =
                TAU * (140.0 * t - 40.0 / (TAU * GLIDE_HZ) * ((TAU * GLIDE_HZ * t).cos() - 1.0));
            let buzz: f64 = (1..=30u8)
                .map(|k| (f64::from(k) * phase).sin() / f64::from(k))
                .sum();
            *s = (0.2 * swell * buzz) as f32;
            self.n += 1;
        }
    }
}

/// `len` samples of the sum of tones `(frequency Hz, amplitude)` at 48 kHz, each starting at phase 0.
pub fn tones(freqs: &[(f64, f32)], len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    for &(f, a) in freqs {
        ToneGenerator::new(f, a, crate::audio::SAMPLE_RATE).add_to(&mut out);
    }
    out
}

impl ToneGenerator {
    /// A tone of `freq_hz` with peak `amplitude` (1.0 = full scale) at `sample_rate`.
    pub fn new(freq_hz: f64, amplitude: f32, sample_rate: u32) -> Self {
        Self {
            freq_hz,
            amplitude,
            sample_rate,
            phase: 0.0,
        }
    }

    /// The tone's frequency.
    pub fn freq_hz(&self) -> f64 {
        self.freq_hz
    }

    /// Changes the peak amplitude from the next sample on (the phase stays continuous).
    pub fn set_amplitude(&mut self, amplitude: f32) {
        self.amplitude = amplitude;
    }

    /// Overwrites `out` with the next `out.len()` samples of the tone.
    pub fn fill(&mut self, out: &mut [f32]) {
        sine(
            self.freq_hz,
            self.amplitude,
            self.sample_rate,
            &mut self.phase,
            out,
        );
    }

    /// Adds the next `out.len()` samples of the tone to `out` (to build chords or mix tones).
    pub fn add_to(&mut self, out: &mut [f32]) {
        let step = TAU * self.freq_hz / f64::from(self.sample_rate);
        for s in out.iter_mut() {
            *s += self.amplitude * self.phase.sin() as f32;
            self.phase += step;
            if self.phase >= TAU {
                self.phase -= TAU;
            }
        }
    }
}

/// Power of `samples` at `freq_hz` by the Goertzel algorithm over a Hann window.
///
/// Normalised as a mean square: a sine of peak amplitude `A` at exactly `freq_hz` gives `A²/2`, the same as
/// its contribution to [`mean_square`](crate::audio::mean_square), so the ratio to the total mean square is the fraction of the signal's
/// energy in that tone. The Hann window keeps leakage from other tones low: for a window of `N` samples the
/// response falls below −31 dB at `2 · sample_rate / N` Hz away (e.g. ±20 Hz for 100 ms).
pub fn goertzel_power(samples: &[f32], freq_hz: f32, sample_rate: u32) -> f32 {
    let n = samples.len();
    if n < 2 {
        return 0.0;
    }
    let omega = TAU * f64::from(freq_hz) / f64::from(sample_rate);
    let coeff = 2.0 * omega.cos();
    // The Hann window w[i] = 0.5 − 0.5·cos(2πi/(N−1)) computed by a rotation recurrence (no cos per sample).
    let win_step = TAU / (n - 1) as f64;
    let (ws, wc) = win_step.sin_cos();
    let (mut c, mut s) = (1.0f64, 0.0f64); // cos, sin of 2πi/(N−1)
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut win_sum = 0.0f64;
    for &x in samples {
        let w = 0.5 - 0.5 * c;
        win_sum += w;
        let y = f64::from(x) * w + coeff * s1 - s2;
        s2 = s1;
        s1 = y;
        let nc = c * wc - s * ws;
        s = s * wc + c * ws;
        c = nc;
    }
    let mag2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if win_sum <= 0.0 {
        return 0.0;
    }
    (2.0 * mag2.max(0.0) / (win_sum * win_sum)) as f32
}

/// The presence threshold [`ToneAnalysis::present`] uses by default: a tone holding at least 5 % of the total
/// energy is "present". Two equal tones hold 50 % each; an absent tone after Opus coding holds well under 1 %.
pub const DEFAULT_PRESENCE_THRESHOLD: f32 = 0.05;

/// Below this total level (dBov) a signal counts as silence and no tone is present.
pub const SILENCE_DBOV: f32 = -70.0;

/// One candidate frequency's result in a [`ToneAnalysis`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneReport {
    /// The candidate frequency.
    pub freq_hz: f32,
    /// The tone's power as a mean square (see [`goertzel_power`]), averaged over the analysis blocks.
    pub power: f32,
    /// `power` relative to the signal's total mean square: the fraction of the energy in this tone (0..≈1).
    pub relative: f32,
}

/// Which of a set of candidate tones a (decoded) signal contains.
///
/// The signal is cut into blocks (100 ms by default) and each candidate's Goertzel power is summed over the
/// blocks, then compared with the total energy. Block-wise analysis tolerates what a real audio path does to
/// a tone: phase jumps at speaker switches, packet-loss concealment, silence in between, codec noise. Use it
/// to assert "contains 440 and 660 Hz but not 550 Hz":
///
/// ```
/// use media_core::audio::SAMPLE_RATE;
/// use media_core::testkit::analysis::{ToneAnalysis, ToneGenerator};
/// let mut pcm = vec![0.0f32; SAMPLE_RATE as usize];
/// ToneGenerator::new(440.0, 0.3, SAMPLE_RATE).add_to(&mut pcm);
/// ToneGenerator::new(660.0, 0.3, SAMPLE_RATE).add_to(&mut pcm);
/// let a = ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &[440.0, 550.0, 660.0]);
/// assert_eq!(a.present_default(), vec![440.0, 660.0]);
/// ```
///
/// Candidates should be further apart than the window's main lobe (`2 · sample_rate / block_len` Hz, 20 Hz
/// for the default block) to be told apart.
#[derive(Clone, Debug)]
pub struct ToneAnalysis {
    /// The total mean square of the analysed signal.
    pub total_power: f32,
    /// The analysed signal's RMS level in dBov.
    pub total_dbov: f32,
    /// One report per candidate, in the order given.
    pub tones: Vec<ToneReport>,
}

impl ToneAnalysis {
    /// The default analysis block: 100 ms at 48 kHz (10 Hz resolution).
    pub const DEFAULT_BLOCK: usize = 4_800;

    /// Analyses `samples` for `candidates` with the default block length.
    pub fn analyze(samples: &[f32], sample_rate: u32, candidates: &[f32]) -> Self {
        Self::with_block(samples, sample_rate, candidates, Self::DEFAULT_BLOCK)
    }

    /// Analyses `samples` for `candidates` in blocks of `block_len` samples (a trailing partial block of at least
    /// half a block is analysed too; a shorter one is ignored unless it is the whole signal).
    pub fn with_block(
        samples: &[f32],
        sample_rate: u32,
        candidates: &[f32],
        block_len: usize,
    ) -> Self {
        let block_len = block_len.max(16);
        let mut sums = vec![0.0f64; candidates.len()];
        let mut total = 0.0f64;
        let mut weight = 0usize;
        let mut chunks = samples.chunks(block_len).peekable();
        while let Some(block) = chunks.next() {
            let last = chunks.peek().is_none();
            let whole_or_long = block.len() == block_len || block.len() * 2 >= block_len;
            if !(whole_or_long || (last && weight == 0)) {
                continue;
            }
            let n = block.len() as f64;
            total += mean_square(block) * n;
            for (sum, &f) in sums.iter_mut().zip(candidates) {
                *sum += f64::from(goertzel_power(block, f, sample_rate)) * n;
            }
            weight += block.len();
        }
        let total_power = if weight > 0 {
            total / weight as f64
        } else {
            0.0
        };
        let total_dbov = if total_power > 0.0 {
            (10.0 * total_power.log10()) as f32
        } else {
            f32::NEG_INFINITY
        };
        let tones = candidates
            .iter()
            .zip(&sums)
            .map(|(&freq_hz, &sum)| {
                let power = if weight > 0 { sum / weight as f64 } else { 0.0 };
                let relative = if total_power > 0.0 {
                    power / total_power
                } else {
                    0.0
                };
                ToneReport {
                    freq_hz,
                    power: power as f32,
                    relative: relative as f32,
                }
            })
            .collect();
        Self {
            total_power: total_power as f32,
            total_dbov,
            tones,
        }
    }

    /// The report for `freq_hz` (exactly as given as a candidate).
    pub fn get(&self, freq_hz: f32) -> Option<&ToneReport> {
        self.tones.iter().find(|t| t.freq_hz == freq_hz)
    }

    /// The fraction of the energy at `freq_hz` (0.0 if it was not a candidate).
    pub fn relative(&self, freq_hz: f32) -> f32 {
        self.get(freq_hz).map_or(0.0, |t| t.relative)
    }

    /// Whether the signal is loud enough to contain anything (total level above [`SILENCE_DBOV`]).
    pub fn is_audible(&self) -> bool {
        self.total_dbov > SILENCE_DBOV
    }

    /// Whether `freq_hz` holds at least `threshold` of the energy of an audible signal.
    pub fn is_present(&self, freq_hz: f32, threshold: f32) -> bool {
        self.is_audible() && self.relative(freq_hz) >= threshold
    }

    /// The candidates holding at least `threshold` of the energy, in candidate order (empty if inaudible).
    pub fn present(&self, threshold: f32) -> Vec<f32> {
        if !self.is_audible() {
            return Vec::new();
        }
        self.tones
            .iter()
            .filter(|t| t.relative >= threshold)
            .map(|t| t.freq_hz)
            .collect()
    }

    /// [`present`](Self::present) with [`DEFAULT_PRESENCE_THRESHOLD`].
    pub fn present_default(&self) -> Vec<f32> {
        self.present(DEFAULT_PRESENCE_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{audio_level_from_samples, FRAME_SAMPLES, SAMPLE_RATE};

    #[test]
    fn sine_is_continuous_across_frames() {
        let whole = tones(&[(440.0, 0.5)], 3 * FRAME_SAMPLES);
        let mut gen = ToneGenerator::new(440.0, 0.5, SAMPLE_RATE);
        let mut framed = vec![0.0f32; 3 * FRAME_SAMPLES];
        for frame in framed.chunks_mut(FRAME_SAMPLES) {
            gen.fill(frame);
        }
        for (a, b) in whole.iter().zip(&framed) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Free function with an external phase behaves the same.
        let mut phase = 0.0;
        let mut f = vec![0.0f32; 3 * FRAME_SAMPLES];
        for frame in f.chunks_mut(FRAME_SAMPLES) {
            sine(440.0, 0.5, SAMPLE_RATE, &mut phase, frame);
        }
        for (a, b) in whole.iter().zip(&f) {
            assert!((a - b).abs() < 1e-5);
        }
        let peak = whole.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 1e-3);
    }

    #[test]
    fn goertzel_measures_tone_power_as_mean_square() {
        let s = tones(&[(440.0, 0.5)], 4800);
        let p = goertzel_power(&s, 440.0, SAMPLE_RATE);
        assert!((p - 0.125).abs() < 0.005, "{p}");
        // Off-bin frequency (not a multiple of the 10 Hz resolution) is still measured exactly.
        let s = tones(&[(443.7, 0.5)], 4800);
        let p = goertzel_power(&s, 443.7, SAMPLE_RATE);
        assert!((p - 0.125).abs() < 0.005, "{p}");
        // Far away: nothing.
        let p = goertzel_power(&s, 550.0, SAMPLE_RATE);
        assert!(p < 1e-6, "{p}");
        assert_eq!(goertzel_power(&[], 440.0, SAMPLE_RATE), 0.0);
        assert_eq!(goertzel_power(&[1.0], 440.0, SAMPLE_RATE), 0.0);
    }

    #[test]
    fn tone_analysis_on_clean_tones() {
        let pcm = tones(&[(440.0, 0.3), (660.0, 0.3)], 48_000);
        let a = ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &[440.0, 550.0, 660.0, 880.0]);
        assert_eq!(a.present_default(), vec![440.0, 660.0]);
        assert!((a.relative(440.0) - 0.5).abs() < 0.03, "{:?}", a);
        assert!((a.relative(660.0) - 0.5).abs() < 0.03, "{:?}", a);
        assert!(a.relative(550.0) < 0.001);
        assert!(a.is_present(440.0, 0.4));
        assert!(!a.is_present(550.0, 0.01));
        assert_eq!(a.relative(123.0), 0.0);
    }

    #[test]
    fn tone_analysis_silence_and_short_input() {
        let a = ToneAnalysis::analyze(&[0.0; 9600], SAMPLE_RATE, &[440.0]);
        assert!(!a.is_audible());
        assert!(a.present(0.0).is_empty());
        let a = ToneAnalysis::analyze(&[], SAMPLE_RATE, &[440.0]);
        assert!(a.present(0.0).is_empty());
        // Shorter than a block: analysed as one block.
        let pcm = tones(&[(1000.0, 0.5)], 1920);
        let a = ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &[1000.0, 440.0]);
        assert_eq!(a.present_default(), vec![1000.0]);
    }

    #[test]
    fn tone_analysis_tolerates_phase_jumps_gaps_and_noise() {
        // Segments of 440 Hz with random phase restarts and silence in between, plus noise.
        let mut pcm = Vec::new();
        let mut x = 0x1234_5678_u32;
        for seg in 0..10 {
            let mut gen = ToneGenerator::new(440.0, 0.2, SAMPLE_RATE);
            let mut buf = vec![0.0f32; 2400 + seg * 317];
            // skip a varying amount to randomise the phase
            let mut skip = vec![0.0f32; seg * 37];
            gen.fill(&mut skip);
            gen.fill(&mut buf);
            pcm.extend_from_slice(&buf);
            pcm.extend(std::iter::repeat_n(0.0, 960));
        }
        for s in pcm.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *s += (x as f32 / u32::MAX as f32 - 0.5) * 0.01;
        }
        let a = ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &[440.0, 550.0, 660.0]);
        assert_eq!(a.present_default(), vec![440.0], "{a:?}");
    }

    #[test]
    fn tone_analysis_through_opus() {
        use opus::{Application, Channels, Decoder, Encoder};
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).unwrap();
        let mut dec = Decoder::new(SAMPLE_RATE, Channels::Mono).unwrap();
        let mut a = ToneGenerator::new(440.0, 0.25, SAMPLE_RATE);
        let mut b = ToneGenerator::new(660.0, 0.25, SAMPLE_RATE);
        let mut decoded = Vec::new();
        let mut frame = [0.0f32; FRAME_SAMPLES];
        let mut packet = [0u8; 1500];
        let mut out = [0.0f32; FRAME_SAMPLES];
        for _ in 0..50 {
            frame.fill(0.0);
            a.add_to(&mut frame);
            b.add_to(&mut frame);
            let n = enc.encode_float(&frame, &mut packet).unwrap();
            let m = dec.decode_float(&packet[..n], &mut out, false).unwrap();
            decoded.extend_from_slice(&out[..m]);
        }
        // Skip the codec's start-up.
        let an = ToneAnalysis::analyze(&decoded[4800..], SAMPLE_RATE, &[440.0, 550.0, 660.0]);
        assert_eq!(an.present_default(), vec![440.0, 660.0], "{an:?}");
        assert!(an.relative(550.0) < 0.01, "{an:?}");
        let level = audio_level_from_samples(&decoded[4800..5760]);
        // Two 0.25 sines: mean square 0.0625 → −12 dBov.
        assert!((11..=14).contains(&level), "{level}");
    }
}
