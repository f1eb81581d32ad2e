//! A level measured by decoding, for audio that arrives without one: a server-side source's packets
//! (`core/source.rs`), and a peer's microphone packets that lack the RFC 6464 `ssrc-audio-level`
//! extension (WHIP encoders such as OBS's and GStreamer's send none). Slot selection, the dominant speaker
//! and the mixer's ranking read levels only; without one a talker would count as silent.

use crate::audio::{audio_level_from_samples, SAMPLE_RATE};

/// The longest Opus packet: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// An Opus decoder and its output buffer, made on the first packet measured.
#[derive(Default)]
pub(crate) struct LevelMeter {
    decoder: Option<opus::Decoder>,
    pcm: Vec<f32>,
}

impl LevelMeter {
    /// The RFC 6464 level of one Opus packet (0 loudest … 127 silence), from decoding it (mono, whatever
    /// the packet's channels); `None` when the decoder refuses it. Packets are decoded in the order they
    /// come, gaps and reordering included: a level, not a playout.
    pub(crate) fn level(&mut self, payload: &[u8]) -> Option<u8> {
        if self.decoder.is_none() {
            self.decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).ok();
            self.pcm = vec![0.0; MAX_PACKET_SAMPLES];
        }
        let decoder = self.decoder.as_mut()?;
        let n = decoder.decode_float(payload, &mut self.pcm, false).ok()?;
        Some(audio_level_from_samples(&self.pcm[..n]))
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

    #[test]
    fn levels_are_measured_from_the_decode() {
        let mut meter = LevelMeter::default();
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("a mono 48 kHz encoder");
        let silence = vec![0i16; 960];
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.06).sin() * 16000.0) as i16)
            .collect();
        let mut out = vec![0u8; 1500];
        let mut last_loud = 127;
        for _ in 0..10 {
            let n = encoder.encode(&tone, &mut out).expect("encodes");
            last_loud = meter.level(&out[..n]).expect("decodes");
        }
        assert!(last_loud < 20, "a loud tone: level {last_loud}");
        let mut last_quiet = 0;
        for _ in 0..10 {
            let n = encoder.encode(&silence, &mut out).expect("encodes");
            last_quiet = meter.level(&out[..n]).expect("decodes");
        }
        assert!(last_quiet > 90, "silence: level {last_quiet}");
        assert_eq!(meter.level(&[0xff, 0xff, 0xff]), None);
    }
}
