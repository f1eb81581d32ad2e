//! What a listener receives: the Opus encoders (with their limiters) of the shared and personal mixes, the
//! pre-encoded silence frame, and the per-listener packet numbering.

use std::sync::Arc;
use std::time::Duration;

use super::encoder::{EncoderSettings, MixEncoder, OpusError};
use super::input::opus_packet_has_fec;
use super::limiter::Limiter;
use super::{Member, MixPacket, MAX_OPUS};
use crate::audio::FRAME_SAMPLES;
use crate::speakers::csrc_levels::Contributors;
use vocab::MixSettings;

/// An Opus encoder with its limiter: one output stream's state. Cloned whole when a listener moves from the
/// shared encode to its own, so its decoder sees one continuous stream.
pub(super) struct OutEncoder {
    encoder: MixEncoder,
    limiter: Limiter,
    channels: usize,
}

impl OutEncoder {
    /// A mono encoder at `config`'s bitrate and FEC, at libopus complexity `complexity` (the personal or
    /// the shared mixes' of `config`).
    pub(super) fn new(config: &MixSettings, complexity: u8) -> Result<OutEncoder, OpusError> {
        Ok(OutEncoder {
            encoder: MixEncoder::new(EncoderSettings {
                complexity,
                ..encoder_settings(config)
            })?,
            limiter: Limiter::new(),
            channels: 1,
        })
    }

    /// A stereo encoder (a spatial room's personal mixes: interleaved left/right).
    pub(super) fn stereo(config: &MixSettings) -> Result<OutEncoder, OpusError> {
        Ok(OutEncoder {
            encoder: MixEncoder::new(EncoderSettings {
                channels: 2,
                ..encoder_settings(config)
            })?,
            limiter: Limiter::new(),
            channels: 2,
        })
    }

    /// A copy of a shared encode that goes on as a personal mix: the same state (its listener's decoder
    /// sees one stream) at the personal mixes' complexity.
    pub(super) fn personal_copy(&self, config: &MixSettings) -> Result<OutEncoder, OpusError> {
        let mut copy = self.try_clone()?;
        copy.encoder.set_complexity(config.complexity)?;
        Ok(copy)
    }

    /// Its libopus complexity (tests).
    #[cfg(test)]
    pub(super) fn complexity(&self) -> i32 {
        self.encoder.complexity()
    }

    pub(super) fn try_clone(&self) -> Result<OutEncoder, OpusError> {
        Ok(OutEncoder {
            encoder: self.encoder.try_clone()?,
            limiter: self.limiter.clone(),
            channels: self.channels,
        })
    }

    /// The packet loss (percent) its listeners report (see [`MixEncoder::set_expected_loss`]).
    pub(super) fn set_expected_loss(&mut self, percent: u8) {
        // libopus refuses only a value outside 0..=100, which `set_expected_loss` clamps; on a refusal
        // the encoder keeps its previous figure, which is still a valid tuning.
        let _ = self.encoder.set_expected_loss(percent);
    }

    /// Limit and encode `pcm` (one frame; modified in place) into a packet; `None` if libopus fails.
    pub(super) fn encode(&mut self, pcm: &mut [f32], out: &mut [u8; MAX_OPUS]) -> Option<Encoded> {
        self.limiter.process_interleaved(pcm, self.channels);
        let level = crate::audio::audio_level_from_samples(pcm);
        let n = self.encoder.encode(pcm, out).ok()?;
        let payload: Arc<[u8]> = Arc::from(&out[..n]);
        Some(Encoded {
            fec: opus_packet_has_fec(&payload),
            payload,
            level,
        })
    }
}

/// One encoded 20 ms frame of a mix, shared by the listeners it is sent to.
#[derive(Clone)]
pub(super) struct Encoded {
    pub(super) payload: Arc<[u8]>,
    /// Its audio level (RFC 6464: −dBov, 127 silence).
    pub(super) level: u8,
    /// It carries in-band FEC (LBRR) for the frame before it (counted per listener sent it).
    pub(super) fec: bool,
}

/// `config`'s encoder settings, at the personal mixes' complexity.
fn encoder_settings(config: &MixSettings) -> EncoderSettings {
    EncoderSettings {
        bitrate_bps: config.bitrate_bps,
        complexity: config.complexity,
        fec: config.fec,
        channels: 1,
    }
}

/// One encode of the full mix that the listeners who do not talk share (the clean or the protected one):
/// its encoder, which exists while it has listeners, and the tick it last encoded, kept together so that
/// neither changes without the other.
#[derive(Default)]
pub(super) struct SharedEncode {
    encoder: Option<OutEncoder>,
    /// The grid tick it last encoded; `None` once it ended.
    tick: Option<u64>,
}

/// This tick's packet of one shared encode: `None` until it is encoded, `Some(None)` if libopus failed.
pub(super) type TickPacket = Option<Option<Encoded>>;

impl SharedEncode {
    /// The encoder its listeners' decoders have been following, if it runs.
    pub(super) fn encoder(&self) -> Option<&OutEncoder> {
        self.encoder.as_ref()
    }

    /// A listener moves here from `from` at tick `grid`: unless this encode ran in the last tick (its state
    /// is live), it continues from a copy of the one the listener heard; one that skipped ticks would
    /// continue from a stale state, a new one from none (measured 13 and 21 dB above the two encodes' usual
    /// difference at the move).
    pub(super) fn take_listener_from(&mut self, from: &SharedEncode, grid: u64) {
        if self.tick.is_none_or(|t| t + 1 != grid) {
            self.encoder = from.encoder.as_ref().and_then(|e| e.try_clone().ok());
            self.tick = None;
        }
    }

    /// Encode tick `grid`'s `pcm` (modified in place), tuned for `loss` percent; the encoder is created on
    /// first use. `None` if libopus cannot create one.
    pub(super) fn encode(
        &mut self,
        grid: u64,
        loss: u8,
        config: &MixSettings,
        pcm: &mut [f32],
        out: &mut [u8; MAX_OPUS],
    ) -> TickPacket {
        if self.encoder.is_none() {
            self.encoder = OutEncoder::new(config, config.shared_complexity).ok();
        }
        let encoder = self.encoder.as_mut()?;
        encoder.set_expected_loss(loss);
        self.tick = Some(grid);
        Some(encoder.encode(pcm, out))
    }

    /// It has no listeners left: its state is dropped.
    pub(super) fn end(&mut self) {
        self.encoder = None;
        self.tick = None;
    }
}

impl Member {
    /// What the member, hearing nobody this tick, is sent: without DTX the room's silence frame, always;
    /// with it, the silence frame for the [`PAUSE_SILENCE_TICKS`](super::PAUSE_SILENCE_TICKS) after its
    /// last frame of a spurt (counted down here), the last of them a DTX packet ([`dtx_frame`]), then
    /// nothing (a DTX gap).
    fn pause_frame(&mut self, dtx: bool) -> PauseFrame {
        if !dtx {
            return PauseFrame::Silence;
        }
        match self.pause_ticks {
            0 => PauseFrame::Nothing,
            1 => {
                self.pause_ticks = 0;
                PauseFrame::Dtx
            }
            _ => {
                self.pause_ticks -= 1;
                PauseFrame::Silence
            }
        }
    }

    /// Send the member the packet of the tick whose room timestamp is `frame_ts`.
    pub(super) fn send(
        &mut self,
        frame_ts: u32,
        payload: Arc<[u8]>,
        contributors: Contributors,
        level: u8,
        out: &mut Vec<MixPacket>,
    ) {
        let ts = self.ts_offset.wrapping_add(frame_ts);
        let depth = super::red_frames_back(self.expected_loss);
        let mut previous: [Option<Arc<[u8]>>; 2] = [None, None];
        let mut start = ts;
        for (sent, redundant) in self.sent.iter().zip(previous.iter_mut()).take(depth) {
            match sent {
                Some((sent_ts, p)) if start.wrapping_sub(*sent_ts) == FRAME_SAMPLES as u32 => {
                    *redundant = Some(p.clone());
                    start = *sent_ts;
                }
                _ => break,
            }
        }
        let newest = self.sent[0].take();
        self.sent = [Some((ts, payload.clone())), newest];
        out.push(MixPacket {
            to: self.id,
            seq: self.next_seq,
            ts,
            payload,
            contributors,
            level,
            previous,
        });
        self.next_seq += 1;
    }
}

/// What a listener who hears nobody is sent this tick ([`Member::pause_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PauseFrame {
    /// The room's frame of silence.
    Silence,
    /// The DTX packet: the stream stops here.
    Dtx,
    /// Nothing: the listener is in a DTX gap.
    Nothing,
}

/// Opus' shortest frame (CELT's 2.5 ms): the gap a quiet move of the grid leaves in a listener's
/// stream is filled with a whole number of them ([`Fill`]).
pub(super) const SHORT_FRAME: Duration = Duration::from_micros(2_500);

/// [`SHORT_FRAME`] in samples.
const SHORT_FRAME_SAMPLES: usize = FRAME_SAMPLES / 8;

/// Short frames in a frame.
pub(super) const SHORT_FRAMES_PER_FRAME: usize = FRAME_SAMPLES / SHORT_FRAME_SAMPLES;

/// The fills made as one packet of short frames: 1 to 7 (a fill of 8 is the silence frame).
const MAX_FILL_FRAMES: usize = SHORT_FRAMES_PER_FRAME - 1;

/// What the tick right after a quiet move of the grid sends the listeners whose stream of silence goes on
/// (`Mixer::fill_after_quiet_move`): `frames` short frames of silence (0 to 8: none, a fill, or the
/// silence frame) from room timestamp `start`, where their last frame ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fill {
    pub(super) start: u32,
    pub(super) frames: usize,
}

/// The room's packets for listeners who hear nobody, encoded once per room.
pub(super) struct PausePackets {
    /// A 20 ms frame of digital silence ([`silence_frame`]).
    pub(super) silence: Option<Arc<[u8]>>,
    /// The DTX packet ([`dtx_frame`]).
    pub(super) dtx: Option<Arc<[u8]>>,
    /// `fills[k - 1]`: k short frames of digital silence in one packet ([`fill_packets`]), k = 1..=7; empty
    /// if libopus could not make them.
    pub(super) fills: Vec<Arc<[u8]>>,
}

impl PausePackets {
    pub(super) fn new(config: &MixSettings) -> PausePackets {
        let silence = silence_frame(config);
        let dtx = silence.as_deref().and_then(dtx_frame);
        let fills = fill_packets(config);
        PausePackets {
            silence,
            dtx,
            fills,
        }
    }

    /// Whether `payload` is one of these packets.
    pub(super) fn is_pause_packet(&self, payload: &Arc<[u8]>) -> bool {
        [&self.silence, &self.dtx]
            .into_iter()
            .flatten()
            .chain(&self.fills)
            .any(|p| Arc::ptr_eq(p, payload))
    }

    /// How many samples `payload` plays if it is the silence frame or a fill: where a stream that ends
    /// with it ends. `None` for anything else (the DTX packet ends a stream, it does not continue one).
    fn samples(&self, payload: &Arc<[u8]>) -> Option<u32> {
        if self
            .silence
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, payload))
        {
            return Some(FRAME_SAMPLES as u32);
        }
        let k = self.fills.iter().position(|f| Arc::ptr_eq(f, payload))?;
        Some(((k + 1) * SHORT_FRAME_SAMPLES) as u32)
    }

    /// What `m`, hearing nobody in the tick whose room timestamp is `frame_ts`, is sent
    /// ([`Member::pause_frame`]), and the room timestamp to send it at.
    ///
    /// Right after a quiet move of the grid (`fill`) the tick comes less than a frame after the last: its
    /// frame would overlap the listener's last. The pause is not counted down then; a listener whose
    /// stream of silence goes on (it ends at the fill's start) is sent the fill instead, so that its next
    /// packet follows without a gap: a browser conceals a gap (Chromium counted a concealment event per
    /// move) where it now plays silence.
    pub(super) fn packet_for(
        &self,
        m: &mut Member,
        dtx: bool,
        frame_ts: u32,
        fill: Option<Fill>,
    ) -> Option<(u32, Arc<[u8]>)> {
        let Some(fill) = fill else {
            let frame = match m.pause_frame(dtx) {
                PauseFrame::Silence => self.silence.clone(),
                PauseFrame::Dtx => self.dtx.clone(),
                PauseFrame::Nothing => None,
            };
            return frame.map(|f| (frame_ts, f));
        };
        let (last_ts, last) = m.sent[0].as_ref()?;
        let end = last_ts.wrapping_add(self.samples(last)?);
        if end != m.ts_offset.wrapping_add(fill.start) {
            return None;
        }
        let packet = match fill.frames {
            SHORT_FRAMES_PER_FRAME => self.silence.as_ref(),
            k => self.fills.get(k.checked_sub(1)?),
        };
        Some((fill.start, packet?.clone()))
    }
}

/// The fills of a quiet move's gap: for k = 1..=7, k short frames of digital silence, encoded in a row
/// by one encoder of the room's settings (CELT: libopus codes frames shorter than 10 ms with it), joined
/// in one packet ([`join_frames`]). A receiver's jitter buffer takes a packet of any whole number of
/// frames; the decoder plays it as one stream with the silence frames around it (both decode to
/// silence, whatever the modes). Empty if libopus fails.
fn fill_packets(config: &MixSettings) -> Vec<Arc<[u8]>> {
    let Ok(mut encoder) = MixEncoder::new(encoder_settings(config)) else {
        return Vec::new();
    };
    let mut out = [0u8; MAX_OPUS];
    let mut frames = Vec::with_capacity(MAX_FILL_FRAMES);
    for _ in 0..MAX_FILL_FRAMES {
        let Ok(n) = encoder.encode(&[0.0; SHORT_FRAME_SAMPLES], &mut out) else {
            return Vec::new();
        };
        frames.push(out[..n].to_vec());
    }
    (1..=MAX_FILL_FRAMES)
        .map(|k| join_frames(&frames[..k]))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// One Opus packet of the frames of `packets` (each a packet of one frame, all of one configuration): RFC
/// 6716 §3.2.5, code 3 (a frame count) with each frame's length but the last's (VBR). `None` if they are
/// not such packets, a frame is empty (an empty frame is a lost one to a decoder) or longer than a
/// one-byte length can say.
fn join_frames(packets: &[Vec<u8>]) -> Option<Arc<[u8]>> {
    let toc = *packets.first()?.first()?;
    let count = u8::try_from(packets.len()).ok().filter(|&c| c <= 48)?;
    let mut out = vec![toc | 0x03, 0x80 | count];
    for p in packets {
        let len = p.len().checked_sub(1)?;
        if p[0] != toc || toc & 0x03 != 0 || len == 0 || len > 251 {
            return None;
        }
    }
    for p in &packets[..packets.len() - 1] {
        out.push((p.len() - 1) as u8);
    }
    for p in packets {
        out.extend_from_slice(&p[1..]);
    }
    Some(Arc::from(out))
}

/// The packet that tells a listener's decoder that the stream enters DTX, as a WebRTC sender's does: the
/// TOC byte alone (RFC 6716 §3.1: one frame of 0 bytes, in the configuration of `silence`, a frame of the
/// stream). A browser's jitter buffer (NetEq) takes a packet of 2 bytes or fewer for DTX and plays comfort
/// noise after it, then starts the next talk spurt when its timestamp is due; a stream that just stops
/// looks lost instead, and the receiver conceals (in the Firefox test's mixed room both browsers counted
/// 1.4–1.8 % of the samples they played as concealed without it, none with it, in four runs each).
fn dtx_frame(silence: &[u8]) -> Option<Arc<[u8]>> {
    let toc = silence.first()?;
    Some(Arc::from([toc & 0xFC]))
}

/// A 20 ms Opus frame of digital silence, encoded once per room.
fn silence_frame(config: &MixSettings) -> Option<Arc<[u8]>> {
    let mut encoder = MixEncoder::new(encoder_settings(config)).ok()?;
    let mut out = [0u8; MAX_OPUS];
    let n = encoder.encode(&[0.0; FRAME_SAMPLES], &mut out).ok()?;
    Some(Arc::from(&out[..n]))
}
