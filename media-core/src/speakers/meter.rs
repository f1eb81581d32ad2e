//! A level measured by decoding, for audio that arrives without one: a server-side source's packets
//! (`core/source.rs`), and a peer's microphone packets that lack the RFC 6464 `ssrc-audio-level`
//! extension (OBS's WHIP output sends none, nor does GStreamer's unless its payloader is given the
//! extension). Slot selection, the dominant speaker and the mixer's ranking read levels only; without
//! one a talker would count as silent.

use std::time::{Duration, Instant};

use crate::audio::{audio_level_from_samples, SAMPLE_RATE};

/// The longest Opus packet: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// At most one decode per this long: a packet sooner after the last one decoded gets that one's level.
/// An encoder sends a packet per 10–60 ms; a client flooding packets without levels costs at most 100
/// decodes a second, not one per packet.
const MIN_MEASURE_INTERVAL: Duration = Duration::from_millis(10);

/// An Opus decoder and its output buffer, made on the first packet measured.
#[derive(Default)]
pub(crate) struct LevelMeter {
    decoder: Option<opus::Decoder>,
    pcm: Vec<f32>,
    /// When the last packet was decoded, and its level.
    last: Option<(Instant, u8)>,
}

impl LevelMeter {
    /// The RFC 6464 level of one Opus packet that arrived at `now` (0 loudest … 127 silence), from
    /// decoding it (mono, whatever the packet's channels), or the last one's within
    /// [`MIN_MEASURE_INTERVAL`]; `None` when the decoder refuses it. Packets are decoded in the order they
    /// come, gaps and reordering included: a level, not a playout.
    pub(crate) fn level(&mut self, now: Instant, payload: &[u8]) -> Option<u8> {
        if let Some((at, level)) = self.last {
            if now < at + MIN_MEASURE_INTERVAL {
                return Some(level);
            }
        }
        if self.decoder.is_none() {
            self.decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).ok();
            self.pcm = vec![0.0; MAX_PACKET_SAMPLES];
        }
        let decoder = self.decoder.as_mut()?;
        let n = decoder.decode_float(payload, &mut self.pcm, false).ok()?;
        let level = audio_level_from_samples(&self.pcm[..n]);
        self.last = Some((now, level));
        Some(level)
    }
}

impl std::fmt::Debug for LevelMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelMeter")
            .field("decoding", &self.decoder.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    #[test]
    fn levels_are_measured_from_the_decode_at_most_every_10_ms() {
        let mut meter = LevelMeter::default();
        let mut now = epoch();
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("a mono 48 kHz encoder");
        let silence = vec![0i16; 960];
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.06).sin() * 16000.0) as i16)
            .collect();
        let mut out = vec![0u8; 1500];
        let mut level_of = |meter: &mut LevelMeter, now: Instant, pcm: &[i16]| {
            let n = encoder.encode(pcm, &mut out).expect("encodes");
            meter.level(now, &out[..n])
        };
        let mut last_loud = None;
        for _ in 0..10 {
            now += Duration::from_millis(20);
            last_loud = level_of(&mut meter, now, &tone);
        }
        assert!(
            last_loud.is_some_and(|l| l < 20),
            "a loud tone: level {last_loud:?}"
        );
        let mut last_quiet = None;
        for _ in 0..10 {
            now += Duration::from_millis(20);
            last_quiet = level_of(&mut meter, now, &silence);
        }
        assert!(
            last_quiet.is_some_and(|l| l > 90),
            "silence: level {last_quiet:?}"
        );
        // A loud packet 5 ms after the last decoded one (or from before it): not decoded, the last level
        // stands; 10 ms after, decoded.
        assert_eq!(
            level_of(&mut meter, now + Duration::from_millis(5), &tone),
            last_quiet
        );
        assert_eq!(
            level_of(&mut meter, now - Duration::from_millis(5), &tone),
            last_quiet
        );
        let loud = level_of(&mut meter, now + Duration::from_millis(10), &tone);
        assert!(loud.is_some_and(|l| Some(l) < last_quiet), "{loud:?}");
        assert_eq!(
            meter.level(now + Duration::from_secs(1), &[0xff, 0xff, 0xff]),
            None
        );
    }
}
