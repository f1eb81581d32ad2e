//! The audio mixer of one mixed room: jitter buffers in, one Opus stream out per listener.
//!
//! Every 20 ms tick (on the worker's timers; no thread per room or participant):
//!
//! 1. Each publishing member's [`JitterBuffer`] yields the next 20 ms of playout: packets, FEC or PLC spans,
//!    or silence. Members whose span is silent — DTX (no packets) or an RFC 6464 level at or below
//!    [`SILENT_LEVEL`] — are **not decoded**. Of the rest, the [`MAX_CSRCS`] loudest (by their packets' audio
//!    level, so ranking costs no decoding) are decoded to `f32` and become this tick's *talkers*.
//! 2. The talkers are summed in `f32` (nothing can wrap) into the full mix.
//! 3. **Encoding is O(talkers), not O(listeners)**: every listener who is not talking receives one shared
//!    encode of the full mix; each talker receives its own mix-minus (full mix minus itself) from its own
//!    encoder, kept for [`PERSONAL_HANGOVER_TICKS`] after it stops talking so its stream does not flip
//!    between encoders at every pause. Each output passes a soft [`Limiter`] before the encoder.
//! 4. A listener whose mix is empty (nobody else talks) is sent nothing, like DTX (with
//!    [`MixConfig::dtx`] off, a pre-encoded silence frame instead). An empty or all-silent room decodes and
//!    encodes nothing, and with DTX stops ticking altogether once every jitter buffer is idle (the next packet
//!    re-arms it).
//!
//! Each listener's stream has its own SSRC (its slot 0 stream), sequence numbers (one per packet sent) and
//! timestamps (the room's tick grid plus a per-listener random offset), so it stays continuous when the
//! listener moves between the shared and a personal mix. Packets list the talkers as CSRCs with their levels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::csrc_levels::{Contributors, MAX_CSRCS};
use crate::ids::{ParticipantId, Ssrc};
use crate::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PushOutcome};
use crate::limiter::Limiter;
use crate::red::{self, RedundantFrame};
use crate::room_config::MixConfig;
use crate::stats::{MixStats, Samples};

/// The mixer's tick: one 20 ms frame.
pub const TICK: Duration = Duration::from_millis(20);

/// Packets whose RFC 6464 level is this quiet or quieter (−dBov) count as silence and are not decoded.
pub const SILENT_LEVEL: u8 = 80;

/// Ticks a former talker keeps its personal encoder before it moves to the shared mix (200 ms).
pub const PERSONAL_HANGOVER_TICKS: u32 = 10;

/// How often each input's jitter-buffer delay is sampled for the metrics (every 50 ticks = 1 s).
const DELAY_SAMPLE_TICKS: u64 = 50;

/// Largest Opus packet we produce or decode (RFC 6716: 1275 bytes per frame).
const MAX_OPUS: usize = 1500;

/// Most PCM one Opus packet decodes to: 120 ms.
const MAX_PACKET_SAMPLES: usize = 5760;

/// One packet for one listener.
#[derive(Clone, Debug)]
pub struct MixPacket {
    pub to: ParticipantId,
    pub seq: u64,
    pub ts: u32,
    pub payload: Arc<[u8]>,
    /// The talkers in this packet, loudest first (the listener itself never).
    pub contributors: Contributors,
    /// RFC 6464 level of the mixed audio itself (0..=127, −dBov).
    pub level: u8,
}

/// An Opus encoder with its limiter: one output stream's state.
struct OutEncoder {
    encoder: opus::Encoder,
    limiter: Limiter,
}

impl OutEncoder {
    fn new(config: &MixConfig) -> Result<OutEncoder, opus::Error> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(config.bitrate_bps as i32))?;
        encoder.set_complexity(i32::from(config.complexity))?;
        encoder.set_inband_fec(config.fec)?;
        encoder.set_packet_loss_perc(if config.fec { 10 } else { 0 })?;
        // Silence is handled by the mixer (see `MixConfig::dtx`), never by libopus' voice detector.
        encoder.set_dtx(false)?;
        Ok(OutEncoder {
            encoder,
            limiter: Limiter::new(),
        })
    }

    /// Limit and encode `pcm` (one frame; modified in place) into a packet with its level; `None` if
    /// libopus fails.
    fn encode(&mut self, pcm: &mut [f32], out: &mut [u8; MAX_OPUS]) -> Option<(Arc<[u8]>, u8)> {
        self.limiter.process(pcm);
        let level = crate::audio::audio_level_from_samples(pcm);
        let n = self.encoder.encode_float(pcm, out).ok()?;
        Some((Arc::from(&out[..n]), level))
    }
}

/// The encoder in `slot`, created on first use; `None` if libopus cannot create one.
fn ensure_encoder<'a>(
    slot: &'a mut Option<OutEncoder>,
    config: &MixConfig,
) -> Option<&'a mut OutEncoder> {
    if slot.is_none() {
        *slot = OutEncoder::new(config).ok();
    }
    slot.as_mut()
}

struct Member {
    id: ParticipantId,
    publishes: bool,
    subscribes: bool,
    ssrc: Option<Ssrc>,
    jitter: JitterBuffer,
    decoder: Option<opus::Decoder>,
    /// Decoded PCM not played yet (packets longer than a tick leave some).
    surplus: Vec<f32>,
    /// This tick's decoded frame, if the member talks.
    frame: Vec<f32>,
    /// This tick's spans, before the decision to decode them.
    spans: Vec<Playout>,
    /// Loudest packet level of this tick (lower = louder), if the member is voiced.
    voiced_level: Option<u8>,
    talking: bool,
    /// The buffer's loss count already added to the room's stats.
    lost_reported: u64,
    /// The buffer's count of frames played from RED already added to the room's stats.
    red_reported: u64,
    /// The level of the member's last packet (for concealed frames).
    last_level: u8,
    /// Whether the last tick decoded audio (concealment continues a talker; silence does not start one).
    was_talking: bool,
    personal: Option<OutEncoder>,
    /// Ticks since the member last talked, while it keeps its personal encoder.
    hangover: u32,
    next_seq: u64,
    ts_offset: u32,
}

/// One mixed room's mixing state.
pub struct Mixer {
    config: MixConfig,
    jitter: JitterConfig,
    /// The tick grid: ticks happen at `epoch + k · TICK`.
    epoch: Instant,
    next_tick: Option<Instant>,
    ticks: u64,
    members: Vec<Member>,
    index: HashMap<ParticipantId, usize>,
    shared: Option<OutEncoder>,
    /// One 20 ms Opus frame of silence, for listeners of a room without DTX.
    silence: Option<Arc<[u8]>>,
    mix: Vec<f32>,
    scratch: Vec<f32>,
    decode_buf: Vec<f32>,
    encoded: Box<[u8; MAX_OPUS]>,
    talkers: Vec<usize>,
}

/// A microphone payload that is not a valid Opus packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not a valid Opus packet")]
pub struct NotOpus;

impl Mixer {
    pub fn new(now: Instant, config: MixConfig) -> Mixer {
        let jitter = JitterConfig {
            min_delay: Duration::from_millis(u64::from(config.jitter_min_ms)),
            max_delay: Duration::from_millis(u64::from(config.jitter_max_ms)),
            ..JitterConfig::default()
        };
        Mixer {
            config,
            jitter,
            epoch: now,
            next_tick: None,
            ticks: 0,
            members: Vec::new(),
            index: HashMap::new(),
            shared: None,
            silence: silence_frame(),
            mix: vec![0.0; FRAME_SAMPLES],
            scratch: vec![0.0; FRAME_SAMPLES],
            decode_buf: vec![0.0; MAX_PACKET_SAMPLES],
            encoded: Box::new([0u8; MAX_OPUS]),
            talkers: Vec::with_capacity(MAX_CSRCS),
        }
    }

    pub fn config(&self) -> &MixConfig {
        &self.config
    }

    /// When the next tick is due; `None` while the room is silent and idle.
    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Add a member. `seq` and `ts_offset` start its outgoing stream (random per listener).
    pub fn add_member(
        &mut self,
        id: ParticipantId,
        publishes: bool,
        subscribes: bool,
        seq: u16,
        ts_offset: u32,
    ) {
        if self.index.contains_key(&id) {
            return;
        }
        self.index.insert(id, self.members.len());
        self.members.push(Member {
            id,
            publishes,
            subscribes,
            ssrc: None,
            jitter: JitterBuffer::new(self.jitter),
            decoder: None,
            surplus: Vec::new(),
            frame: Vec::new(),
            spans: Vec::new(),
            voiced_level: None,
            talking: false,
            last_level: SILENT_LEVEL - 1,
            lost_reported: 0,
            red_reported: 0,
            was_talking: false,
            personal: None,
            hangover: 0,
            next_seq: u64::from(seq),
            ts_offset,
        });
    }

    pub fn remove_member(&mut self, id: ParticipantId) {
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        self.members.swap_remove(i);
        if let Some(moved) = self.members.get(i) {
            self.index.insert(moved.id, i);
        }
    }

    /// Mute (or unmute): a muted member's buffered audio is dropped.
    pub fn set_publishing(&mut self, id: ParticipantId, publishes: bool) {
        if let Some(m) = self.index.get(&id).and_then(|i| self.members.get_mut(*i)) {
            m.publishes = publishes;
            if !publishes {
                m.jitter.reset();
                m.lost_reported = m.jitter.stats().lost;
                m.surplus.clear();
                m.was_talking = false;
            }
        }
    }

    /// A member's current jitter-buffer target delay.
    pub fn jitter_target(&self, id: ParticipantId) -> Option<Duration> {
        let m = self.members.get(*self.index.get(&id)?)?;
        Some(m.jitter.target_delay())
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

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
        let (samples, has_fec) = opus_packet_info(&payload).ok_or(NotOpus)?;
        let packet = JitterPacket {
            seq,
            ts,
            samples,
            has_fec,
            audio_level,
            payload,
        };
        match m.jitter.push(now, packet) {
            PushOutcome::Duplicate => stats.packets_duplicate += 1,
            PushOutcome::Late => stats.packets_late += 1,
            PushOutcome::Invalid => return Err(NotOpus),
            PushOutcome::Accepted | PushOutcome::TooFarAhead | PushOutcome::Overflow => {}
        }
        if self.next_tick.is_none() {
            self.next_tick = Some(self.grid_at_or_after(now));
        }
        Ok(())
    }

    /// The first tick-grid instant at or after `t`.
    /// Hand a RED packet's redundant frames (oldest first, as parsed) to the member's jitter buffer as
    /// recovery data, after [`push`](Self::push) took its primary (sequence number `seq`, timestamp `ts`,
    /// level `audio_level`). Frames are assigned sequence numbers `seq − 1`, `seq − 2`, … from the newest
    /// back while they are contiguous (each one ends where the next begins, as a sender repeating its
    /// previous packets produces); past a discontinuity (a DTX gap, an unusual distance pattern) the sequence
    /// number is unknown and the rest is ignored. Frames that fill a gap play instead of FEC or PLC (and count
    /// as `recovered_red` when they do, unless the packet itself comes first); those already there, played or
    /// late are ignored without counting as duplicates or late packets.
    #[allow(clippy::too_many_arguments)]
    pub fn push_redundant(
        &mut self,
        id: ParticipantId,
        seq: u64,
        ts: u32,
        frames: &[RedundantFrame<'_>],
        audio_level: Option<u8>,
    ) {
        let Some(m) = self.index.get(&id).and_then(|i| self.members.get_mut(*i)) else {
            return;
        };
        if !m.publishes {
            return;
        }
        let mut expected_offset = 0u32;
        for (k, frame) in (1u64..).zip(frames.iter().rev()) {
            let Some((samples, has_fec)) = opus_packet_info(frame.payload) else {
                return;
            };
            expected_offset = expected_offset.saturating_add(samples);
            if frame.ts_offset != expected_offset || seq < k {
                return;
            }
            let packet = JitterPacket {
                seq: seq - k,
                ts: red::frame_ts(ts, frame),
                samples,
                has_fec,
                audio_level,
                payload: Arc::from(frame.payload),
            };
            m.jitter.push_redundant(packet);
        }
    }

    fn grid_at_or_after(&self, t: Instant) -> Instant {
        let since = t.saturating_duration_since(self.epoch);
        let ticks = since.as_nanos().div_ceil(TICK.as_nanos());
        self.epoch + TICK * ticks as u32
    }

    fn grid_index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_nanos() / TICK.as_nanos()) as u64
    }

    /// Run the tick due at `now`: mix and encode; packets for listeners go to `out`.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
        samples: &mut Samples,
    ) {
        let Some(due) = self.next_tick else {
            return;
        };
        if now < due {
            return;
        }
        stats.ticks += 1;
        if now.saturating_duration_since(due) >= TICK {
            stats.ticks_late += 1;
        }
        self.ticks += 1;
        let grid = self.grid_index(now);
        let frame_ts = (grid as u32).wrapping_mul(FRAME_SAMPLES as u32);

        // 1. Pull playout from every publisher; rank the voiced ones by level without decoding.
        self.talkers.clear();
        let mut candidates: Vec<(u8, usize)> = Vec::new();
        let mut any_active = false;
        for (i, m) in self.members.iter_mut().enumerate() {
            m.talking = false;
            m.voiced_level = None;
            m.spans.clear();
            if !m.publishes {
                continue;
            }
            let mut have = m.surplus.len();
            // Bounded: every span covers at least one sample; a tick needs at most 960 of them, and spans
            // are at least 2.5 ms (120 samples) long, so 8 spans always suffice.
            for _ in 0..8 {
                if have >= FRAME_SAMPLES {
                    break;
                }
                let span = m.jitter.pop(now);
                have += span.samples() as usize;
                m.spans.push(span);
            }
            for span in &m.spans {
                let level = match span {
                    Playout::Packet { audio_level, .. } => {
                        let l = audio_level.unwrap_or(0);
                        (l < SILENT_LEVEL).then_some(l)
                    }
                    // Concealment continues a talker (at its last level); it does not start one.
                    Playout::Fec { .. } | Playout::Plc { .. } if m.was_talking => {
                        Some(m.last_level)
                    }
                    _ => None,
                };
                if let Some(l) = level {
                    m.voiced_level = Some(m.voiced_level.map_or(l, |v| v.min(l)));
                }
                if let Playout::Packet {
                    audio_level: Some(l),
                    ..
                } = span
                {
                    m.last_level = *l;
                }
            }
            if let Some(l) = m.voiced_level {
                candidates.push((l, i));
            }
            any_active |= m.jitter.is_active();
            // The buffer knows a gap was loss (not DTX) only once the packet after it plays.
            let lost = m.jitter.stats().lost;
            stats.packets_lost += lost.saturating_sub(m.lost_reported);
            m.lost_reported = lost;
            report_recovered_red(m, stats);
            if self.ticks.is_multiple_of(DELAY_SAMPLE_TICKS) && m.jitter.is_active() {
                Samples::push(
                    &mut samples.jitter_buffer_delay_seconds,
                    m.jitter.target_delay().as_secs_f64(),
                );
            }
        }
        candidates.sort_unstable();
        candidates.truncate(MAX_CSRCS);

        // 2. Decode the talkers and sum them.
        self.mix.iter_mut().for_each(|s| *s = 0.0);
        let mut list = Vec::with_capacity(candidates.len());
        for &(level, i) in &candidates {
            let m = &mut self.members[i];
            if decode_member(m, &mut self.decode_buf, stats).is_err() {
                continue;
            }
            m.talking = true;
            for (acc, s) in self.mix.iter_mut().zip(&m.frame) {
                *acc += *s;
            }
            if let Some(ssrc) = m.ssrc {
                list.push((ssrc.0, level));
            }
            self.talkers.push(i);
        }
        // Built once per tick: the shared mix's listeners all get this one (levels shared, not copied).
        let contributors = Contributors::new(list);
        for m in &mut self.members {
            if !m.talking {
                // Not decoded this tick: its decoder state restarts cleanly next time.
                m.surplus.clear();
            }
            m.was_talking = m.talking;
        }

        // 3. Encode: one shared full mix for the listeners who do not talk, one mix-minus per talker.
        let mut shared_packet: Option<Option<(Arc<[u8]>, u8)>> = None;
        let talkers = self.talkers.len();
        for i in 0..self.members.len() {
            let (talking, subscribes) = (self.members[i].talking, self.members[i].subscribes);
            if talking {
                self.members[i].hangover = PERSONAL_HANGOVER_TICKS;
            } else if self.members[i].personal.is_some() {
                if self.members[i].hangover == 0 {
                    self.members[i].personal = None;
                } else {
                    self.members[i].hangover -= 1;
                }
            }
            if !subscribes {
                continue;
            }
            let others = talkers - usize::from(talking);
            let m = &mut self.members[i];
            if others == 0 {
                if self.config.dtx {
                    continue; // nothing to hear: send nothing (the listener's decoder sees a DTX gap)
                }
                let Some(silence) = self.silence.clone() else {
                    continue;
                };
                out.push(MixPacket {
                    to: m.id,
                    seq: m.next_seq,
                    ts: m.ts_offset.wrapping_add(frame_ts),
                    payload: silence,
                    contributors: Contributors::default(),
                    level: 127,
                });
                m.next_seq += 1;
                stats.packets_sent += 1;
                continue;
            }
            let packet = if m.personal.is_some() || talking {
                let Some(encoder) = ensure_encoder(&mut m.personal, &self.config) else {
                    continue;
                };
                self.scratch.copy_from_slice(&self.mix);
                if talking {
                    for (acc, s) in self.scratch.iter_mut().zip(&m.frame) {
                        *acc -= *s;
                    }
                }
                stats.frames_encoded += 1;
                encoder.encode(&mut self.scratch, &mut self.encoded)
            } else {
                // Encoded at most once per tick, for the first listener that needs it.
                if shared_packet.is_none() {
                    let Some(encoder) = ensure_encoder(&mut self.shared, &self.config) else {
                        continue;
                    };
                    self.scratch.copy_from_slice(&self.mix);
                    stats.frames_encoded += 1;
                    shared_packet = Some(encoder.encode(&mut self.scratch, &mut self.encoded));
                }
                shared_packet.clone().flatten()
            };
            let Some((payload, level)) = packet else {
                continue;
            };
            let m = &mut self.members[i];
            out.push(MixPacket {
                to: m.id,
                seq: m.next_seq,
                ts: m.ts_offset.wrapping_add(frame_ts),
                payload,
                contributors: match m.ssrc {
                    Some(own) if talking => contributors.without(own.0),
                    _ => contributors.clone(),
                },
                level,
            });
            m.next_seq += 1;
            stats.packets_sent += 1;
        }

        // 4. Keep ticking while anything is buffered, playing or in hangover; otherwise sleep until a packet.
        let busy = any_active
            || talkers > 0
            || self.members.iter().any(|m| m.personal.is_some())
            || (!self.config.dtx && self.members.iter().any(|m| m.subscribes));
        self.next_tick = busy.then(|| self.epoch + TICK * (grid + 1) as u32);
        if !busy {
            self.shared = None;
        }
    }
}

/// Add the frames the member's buffer played from RED since the last report to the room's stats.
fn report_recovered_red(m: &mut Member, stats: &mut MixStats) {
    let recovered = m.jitter.stats().recovered_red;
    stats.recovered_red += recovered.saturating_sub(m.red_reported);
    m.red_reported = recovered;
}

/// Decode a talker's spans into `m.frame` (exactly one tick), keeping any surplus.
fn decode_member(m: &mut Member, buf: &mut [f32], stats: &mut MixStats) -> Result<(), opus::Error> {
    if m.decoder.is_none() {
        m.decoder = Some(opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?);
    }
    let decoder = m.decoder.as_mut().expect("the decoder was just ensured");
    let mut pcm = std::mem::take(&mut m.surplus);
    for span in m.spans.drain(..) {
        let n = match span {
            Playout::Packet { payload, .. } => {
                stats.frames_decoded += 1;
                decoder.decode_float(&payload, buf, false).unwrap_or(0)
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

/// A 20 ms Opus frame of digital silence, encoded once per room.
fn silence_frame() -> Option<Arc<[u8]>> {
    opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
        .and_then(|mut e| e.encode_vec_float(&[0.0; FRAME_SAMPLES], MAX_OPUS))
        .ok()
        .map(Arc::from)
}

/// An Opus packet's duration in samples and whether it can carry in-band FEC (SILK or hybrid mode); `None`
/// for a payload that is not a valid Opus packet.
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

#[cfg(test)]
mod red_tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    fn opus_frames(count: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("an Opus encoder");
        (0..count)
            .map(|i| {
                let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|n| 0.3 * ((i * FRAME_SAMPLES + n) as f32 * 0.05).sin())
                    .collect();
                enc.encode_vec_float(&pcm, MAX_OPUS).expect("encodes")
            })
            .collect()
    }

    #[test]
    fn contiguous_redundancy_fills_gaps_and_the_rest_is_ignored() {
        let now = t0();
        let mut mixer = Mixer::new(now, MixConfig::default());
        let (talker, ssrc) = (ParticipantId(1), Ssrc(11));
        mixer.add_member(talker, true, true, 0, 0);
        let frames = opus_frames(6);
        let mut stats = MixStats::default();
        let ts = |i: u64| (i * 960) as u32;
        for i in [0u64, 1] {
            mixer
                .push(
                    now,
                    talker,
                    ssrc,
                    i,
                    ts(i),
                    Arc::from(frames[i as usize].as_slice()),
                    Some(30),
                    &mut stats,
                )
                .expect("Opus");
        }
        // 2 and 3 are lost; 4 carries 2 and 3 (oldest first) and 1 (already there).
        mixer
            .push(
                now,
                talker,
                ssrc,
                4,
                ts(4),
                Arc::from(frames[4].as_slice()),
                Some(30),
                &mut stats,
            )
            .expect("Opus");
        let red: Vec<RedundantFrame<'_>> = [1usize, 2, 3]
            .iter()
            .map(|&i| RedundantFrame {
                ts_offset: ts(4) - ts(i as u64),
                payload: &frames[i],
            })
            .collect();
        let held = |mixer: &Mixer| mixer.members[0].jitter.len();
        assert_eq!(held(&mixer), 3);
        mixer.push_redundant(talker, 4, ts(4), &red, Some(30));
        assert_eq!(held(&mixer), 5, "2 and 3 fill the gap; 1 is there already");
        assert_eq!((stats.packets_duplicate, stats.packets_late), (0, 0));
        // A gap between the redundant frames (a DTX pause, an unusual distance pattern) leaves their
        // sequence numbers unknown: nothing is recovered past it.
        let gapped = [RedundantFrame {
            ts_offset: 3 * 960,
            payload: &frames[5],
        }];
        mixer.push_redundant(talker, 9, ts(9), &gapped, Some(30));
        assert_eq!(held(&mixer), 5);
        // Not Opus: ignored.
        mixer.push_redundant(
            talker,
            6,
            ts(6),
            &[RedundantFrame {
                ts_offset: 960,
                payload: &[],
            }],
            None,
        );
        assert_eq!(held(&mixer), 5);
        // Played over the next ticks, they count as recovered from RED, not as FEC.
        let (mut out, mut samples) = (Vec::new(), Samples::default());
        for tick in 0..12 {
            mixer.tick(now + TICK * tick, &mut out, &mut stats, &mut samples);
        }
        assert_eq!(stats.recovered_red, 2, "{stats:?}");
        assert_eq!(stats.concealed_fec, 0, "{stats:?}");
    }
}
