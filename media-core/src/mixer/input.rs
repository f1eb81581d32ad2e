//! A member's microphone packets on their way into the mix: validated and pushed (with RED redundancy) into
//! its jitter buffer, then decoded when the member is one of a tick's talkers.

use std::sync::Arc;
use std::time::Instant;

use super::jitter::{JitterPacket, Playout, PushOutcome};
use super::{Member, Mixer, NotOpus, MAX_PACKET_SAMPLES};
use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::ids::{ParticipantId, Ssrc};
use crate::red::{self, RedundantFrame};
use crate::stats::MixStats;

impl Mixer {
    /// A member's microphone packet arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now: Instant,
        id: ParticipantId,
        ssrc: Ssrc,
        seq: u64,
        ts: u32,
        payload: Arc<[u8]>,
        audio_level: Option<u8>,
        stats: &mut MixStats,
    ) -> Result<(), NotOpus> {
        let Some(m) = self.index.get(&id).and_then(|i| self.members.get_mut(*i)) else {
            return Ok(());
        };
        if !m.publishes {
            return Ok(());
        }
        if m.ssrc.is_some_and(|s| s != ssrc) {
            // A new microphone stream (client restarted it): start its buffer afresh.
            m.jitter.reset();
            m.lost_reported = m.jitter.stats().lost;
            m.surplus.clear();
            m.decoder = None;
        }
        m.ssrc = Some(ssrc);
        let packet = JitterPacket::opus(seq, ts, payload, audio_level).ok_or(NotOpus)?;
        let peaks = m.jitter.delay_peaks();
        let outcome = m.jitter.push(now, packet);
        stats.jitter_delay_peaks += m.jitter.delay_peaks() - peaks;
        match outcome {
            PushOutcome::Duplicate => stats.packets_duplicate += 1,
            PushOutcome::Late => stats.packets_late += 1,
            PushOutcome::Invalid => return Err(NotOpus),
            PushOutcome::Accepted | PushOutcome::TooFarAhead | PushOutcome::Overflow => {}
        }
        let due = m.jitter.due().unwrap_or(now + m.jitter.target_delay());
        self.wake_anchored(now, due);
        Ok(())
    }

    /// Hand a RED packet's redundant frames (oldest first, as parsed) to the member's jitter buffer as
    /// recovery data, after [`push`](Self::push) took its primary (sequence number `seq`, timestamp `ts`).
    /// Frames are assigned sequence numbers `seq − 1`, `seq − 2`, … from the newest
    /// back while they are contiguous (each one ends where the next begins, as a sender repeating its
    /// previous packets produces); past a discontinuity (a DTX gap, an unusual distance pattern) the sequence
    /// number is unknown and the rest is ignored. Frames that fill a gap play instead of FEC or PLC (and count
    /// as `recovered_red` when they do, unless the packet itself comes first); those already there, played or
    /// late are ignored without counting as duplicates or late packets.
    pub fn push_redundant(
        &mut self,
        id: ParticipantId,
        seq: u64,
        ts: u32,
        frames: &[RedundantFrame<'_>],
    ) {
        let Some(m) = self.index.get(&id).and_then(|i| self.members.get_mut(*i)) else {
            return;
        };
        if !m.publishes {
            return;
        }
        for packet in red_jitter_packets(seq, ts, frames) {
            m.jitter.push_redundant(packet);
        }
    }
}

/// Add the frames the member's buffer played from RED since the last report to the room's stats.
pub(super) fn report_recovered_red(m: &mut Member, stats: &mut MixStats) {
    let recovered = m.jitter.stats().recovered_red;
    stats.recovered_red += recovered.saturating_sub(m.red_reported);
    m.red_reported = recovered;
}

/// Decode a talker's spans into `m.frame` (exactly one tick), keeping any surplus. A talker that was not
/// decoded last tick starts from a clean decoder primed with the packet played just before (when there was
/// one), so nothing of an earlier talk spurt leaks into this one and its first frame decodes as the sender
/// encoded it.
pub(super) fn decode_member(
    m: &mut Member,
    buf: &mut [f32],
    stats: &mut MixStats,
) -> Result<(), opus::Error> {
    let decoder = match m.decoder.as_mut() {
        Some(decoder) => {
            if !m.was_talking {
                decoder.reset_state()?;
            }
            decoder
        }
        None => m
            .decoder
            .insert(opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?),
    };
    if let Some(prime) = m.prime.take() {
        if !m.was_talking {
            // Output discarded: it belongs before this talk spurt (and was quiet).
            let _ = decoder.decode_float(&prime, buf, false);
        }
    }
    let mut pcm = std::mem::take(&mut m.surplus);
    for span in m.spans.drain(..) {
        let n = match span {
            Playout::Packet {
                payload, samples, ..
            } => {
                stats.frames_decoded += 1;
                // A shortened packet plays only its first `samples`.
                let n = decoder.decode_float(&payload, buf, false).unwrap_or(0);
                n.min(samples as usize)
            }
            Playout::Fec { payload, samples } => {
                stats.concealed_fec += 1;
                let n = (samples as usize).min(buf.len());
                decoder
                    .decode_float(&payload, &mut buf[..n], true)
                    .unwrap_or(0)
            }
            Playout::Plc { samples } => {
                stats.concealed_plc += 1;
                let n = (samples as usize).min(buf.len());
                decoder.decode_float(&[], &mut buf[..n], false).unwrap_or(0)
            }
            Playout::Silence { samples } => {
                let n = (samples as usize).min(buf.len());
                buf[..n].iter_mut().for_each(|s| *s = 0.0);
                n
            }
        };
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm.resize(pcm.len().max(FRAME_SAMPLES), 0.0);
    m.frame.clear();
    m.frame.extend_from_slice(&pcm[..FRAME_SAMPLES]);
    m.surplus.clear();
    m.surplus.extend_from_slice(&pcm[FRAME_SAMPLES..]);
    Ok(())
}

/// The redundant frames of a RED packet whose primary has `seq` and `ts`, as jitter-buffer packets, newest
/// first: frame `k` back gets sequence number `seq − k`, as long as the frames are contiguous 20 ms (or other
/// size) Opus frames right before the primary; past the first that is not, the rest is ignored. They carry
/// no audio level (the packet's level is the primary's), so the mixer decodes them like voiced frames.
pub fn red_jitter_packets<'a>(
    seq: u64,
    ts: u32,
    frames: &'a [RedundantFrame<'a>],
) -> impl Iterator<Item = JitterPacket> + 'a {
    let mut expected_offset = 0u32;
    (1u64..)
        .zip(frames.iter().rev())
        .map_while(move |(k, frame)| {
            let ts = red::frame_ts(ts, frame);
            let packet = JitterPacket::opus(seq.checked_sub(k)?, ts, frame.payload.into(), None)?;
            expected_offset = expected_offset.saturating_add(packet.samples);
            (frame.ts_offset == expected_offset).then_some(packet)
        })
}

impl JitterPacket {
    /// A received Opus packet (extended sequence number `seq`, RTP timestamp `ts`) as the jitter buffer
    /// takes it: its duration and FEC flags read from the payload here, the one place that does so. `None`
    /// for a payload that is not a valid Opus packet.
    pub fn opus(seq: u64, ts: u32, payload: Arc<[u8]>, audio_level: Option<u8>) -> Option<Self> {
        let (samples, fec_mode) = opus_packet_info(&payload)?;
        Some(Self {
            seq,
            ts,
            samples,
            fec_mode,
            has_fec: fec_mode && opus_packet_has_fec(&payload),
            audio_level,
            payload,
        })
    }
}

/// Whether an Opus packet carries in-band FEC (LBRR) for the packet before it: what an encoder puts in
/// when told to expect loss. `false` for anything that is not a valid Opus packet.
#[allow(unsafe_code)] // one FFI call into libopus (the `opus` crate does not wrap it)
pub fn opus_packet_has_fec(payload: &[u8]) -> bool {
    let Ok(len) = i32::try_from(payload.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    // SAFETY: libopus reads at most `len` bytes of `payload`, which outlives the call.
    unsafe { opusic_sys::opus_packet_has_lbrr(payload.as_ptr(), len) == 1 }
}

/// An Opus packet's duration in samples and whether its mode can carry in-band FEC (SILK or hybrid; whether
/// it does is [`opus_packet_has_fec`]); `None` for a payload that is not a valid Opus packet.
pub fn opus_packet_info(payload: &[u8]) -> Option<(u32, bool)> {
    let toc = *payload.first()?;
    let samples = opus::packet::get_nb_samples(payload, SAMPLE_RATE).ok()?;
    if samples == 0 || samples > MAX_PACKET_SAMPLES {
        return None;
    }
    // TOC config 0..=11 is SILK-only, 12..=15 hybrid; both can carry LBRR (FEC) frames. 16..=31 is CELT.
    let has_fec = (toc >> 3) < 16;
    Some((samples as u32, has_fec))
}
