//! Audio constants and the level computations production code needs: sample rate and frame size, sample
//! conversion, RMS and RFC 6464 audio levels. Tone generation and analysis for tests live in
//! `testkit::analysis` (behind the `testkit` feature) and are re-exported here under that feature.
//!
//! Everything here works on mono `f32` PCM in `-1.0..=1.0` (full scale = 1.0).
//!
//! Levels follow RFC 6464: the audio level is the RMS of the packet's samples in dBov, where 0 dBov is the
//! overload point of the system, i.e. a full-scale *square* wave (RMS 1.0). A full-scale sine therefore has
//! −3.01 dBov. This is also what libwebrtc's `RmsLevel` (which fills the `ssrc-audio-level` header extension
//! in browsers) computes, so levels we compute compare directly with those browsers send.

/// The audio clock, defined once for the whole project in the shared vocabulary.
pub use vocab::{FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};

/// The duration of `samples` at [`SAMPLE_RATE`].
pub fn samples_duration(samples: usize) -> std::time::Duration {
    std::time::Duration::from_micros(samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
}

/// `d` in samples (48 kHz RTP clock ticks), truncated: [`samples_duration`]'s inverse. Exact for whole
/// frames: `FRAME_DURATION` more is always `FRAME_SAMPLES` more.
pub fn duration_samples(d: std::time::Duration) -> u64 {
    let samples = d.as_nanos() * u128::from(SAMPLE_RATE) / 1_000_000_000;
    u64::try_from(samples).unwrap_or(u64::MAX)
}

/// The quietest RFC 6464 level (−127 dBov); also what silence maps to.
pub const SILENCE_LEVEL: u8 = 127;

/// The least packet loss (percent) an Opus encoder with in-band FEC on is told
/// (`OPUS_SET_PACKET_LOSS_PERC`) once any loss is expected. At 5 % and less libopus codes FEC only when
/// the bitrate leaves room for it beside the audio (`decide_fec` never narrows the band for it there),
/// and its threshold has a hysteresis: whether it codes FEC depends on whether it did in the frame
/// before. At 24 and 32 kb/s (complexity 5), an encoder told 1–5 % after 0 % coded none, one told the
/// same after 10 % coded it, so a listener starting to lose 3 % was protected or not by the encoder's
/// history. From 6 % libopus narrows the band until FEC fits, whatever came before. At 48 kb/s it codes
/// FEC from 1 % either way, and telling it 6 % for 3 % cost at most 0.03 PESQ-WB in the speech tests
/// (docs/architecture.md, "Any stated loss gets FEC").
pub const OPUS_FEC_MIN_LOSS_PERCENT: u8 = 6;

/// What an Opus encoder with in-band FEC on is told for `expected` percent of packet loss: none stays
/// none (no FEC), any other figure is at least [`OPUS_FEC_MIN_LOSS_PERCENT`] and at most 100.
pub fn opus_fec_loss_percent(expected: u8) -> u8 {
    match expected {
        0 => 0,
        p => p.clamp(OPUS_FEC_MIN_LOSS_PERCENT, 100),
    }
}

/// Tone generation and analysis, kept under their old paths for the tests and the load tester.
#[cfg(any(test, feature = "testkit"))]
pub use crate::testkit::analysis::{
    goertzel_power, sine, ToneAnalysis, ToneGenerator, ToneReport, DEFAULT_PRESENCE_THRESHOLD,
    SILENCE_DBOV,
};

/// Converts an `f32` sample to `i16`, clamping to full scale (1.0 → 32767, −1.0 → −32768).
#[inline]
pub fn f32_to_i16(sample: f32) -> i16 {
    let scaled = (sample * 32768.0).round();
    // `as` saturates for out-of-range floats and maps NaN to 0.
    scaled.clamp(-32768.0, 32767.0) as i16
}

/// Converts an `i16` sample to `f32` (−32768 → −1.0).
#[inline]
pub fn i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) / 32768.0
}

/// Converts `src` into `dst` sample by sample; converts `min(src.len(), dst.len())` samples.
pub fn f32_to_i16_slice(src: &[f32], dst: &mut [i16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32_to_i16(*s);
    }
}

/// Converts `src` into `dst` sample by sample; converts `min(src.len(), dst.len())` samples.
pub fn i16_to_f32_slice(src: &[i16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = i16_to_f32(*s);
    }
}

/// The mean square of `samples` (0.0 for an empty slice).
pub fn mean_square(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    sum / samples.len() as f64
}

/// The RMS level of `samples` in dBov (0 dBov = full-scale square wave; a full-scale sine is −3.01 dBov).
/// Silence (or an empty slice) gives `-f32::INFINITY`.
pub fn rms_dbov(samples: &[f32]) -> f32 {
    let ms = mean_square(samples);
    if ms <= 0.0 {
        return f32::NEG_INFINITY;
    }
    (10.0 * ms.log10()) as f32
}

/// The RFC 6464 audio level of a packet's samples: `-dBov` of their RMS, rounded to the nearest integer and
/// clamped to `0..=127` (0 = full scale, 127 = −127 dBov or quieter, i.e. silence). Same as libwebrtc.
pub fn audio_level_from_samples(samples: &[f32]) -> u8 {
    let dbov = rms_dbov(samples);
    if !dbov.is_finite() {
        return SILENCE_LEVEL;
    }
    (-dbov).round().clamp(0.0, f32::from(SILENCE_LEVEL)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::analysis::tones as tone;

    #[test]
    fn any_expected_loss_is_told_to_libopus_as_enough_for_fec() {
        assert_eq!(opus_fec_loss_percent(0), 0);
        for p in 1..=OPUS_FEC_MIN_LOSS_PERCENT {
            assert_eq!(opus_fec_loss_percent(p), OPUS_FEC_MIN_LOSS_PERCENT);
        }
        assert_eq!(opus_fec_loss_percent(10), 10);
        assert_eq!(opus_fec_loss_percent(200), 100);
    }

    #[test]
    fn sample_conversions() {
        assert_eq!(f32_to_i16(0.0), 0);
        assert_eq!(f32_to_i16(1.0), 32767);
        assert_eq!(f32_to_i16(2.0), 32767);
        assert_eq!(f32_to_i16(-1.0), -32768);
        assert_eq!(f32_to_i16(-3.0), -32768);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(0.5), 16384);
        assert_eq!(i16_to_f32(-32768), -1.0);
        assert_eq!(i16_to_f32(16384), 0.5);
        for v in [-32768i16, -1000, -1, 0, 1, 12345, 32767] {
            assert_eq!(f32_to_i16(i16_to_f32(v)), v);
        }
        let src = [0.25f32, -0.25, 1.5];
        let mut dst = [0i16; 3];
        f32_to_i16_slice(&src, &mut dst);
        assert_eq!(dst, [8192, -8192, 32767]);
        let mut back = [0.0f32; 3];
        i16_to_f32_slice(&dst, &mut back);
        assert_eq!(back[0], 0.25);
    }

    #[test]
    fn rms_and_rfc6464_levels() {
        // Full-scale square wave: 0 dBov, level 0.
        let square: Vec<f32> = (0..960)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(rms_dbov(&square).abs() < 1e-4);
        assert_eq!(audio_level_from_samples(&square), 0);
        // Full-scale sine: −3.01 dBov, level 3.
        let s = tone(&[(1000.0, 1.0)], 960);
        assert!((rms_dbov(&s) + 3.0103).abs() < 0.01, "{}", rms_dbov(&s));
        assert_eq!(audio_level_from_samples(&s), 3);
        // A sine at −20 dB below full scale: −23 dBov.
        let s = tone(&[(1000.0, 0.1)], 960);
        assert_eq!(audio_level_from_samples(&s), 23);
        // Silence and empty input.
        assert_eq!(audio_level_from_samples(&[0.0; 960]), 127);
        assert_eq!(audio_level_from_samples(&[]), 127);
        assert_eq!(rms_dbov(&[]), f32::NEG_INFINITY);
        // Very quiet: clamps to 127.
        assert_eq!(audio_level_from_samples(&[1e-9; 960]), 127);
        // −60 dBov DC.
        assert_eq!(audio_level_from_samples(&[1e-3; 960]), 60);
    }
}
