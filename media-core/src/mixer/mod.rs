//! The audio mixer of one mixed room: jitter buffers in, one Opus stream out per listener.
//!
//! Every 20 ms tick (on the worker's timers; no thread per room or participant):
//!
//! 1. Each publishing member's [`JitterBuffer`] yields the next 20 ms of playout: packets, FEC or PLC spans,
//!    or silence. Members whose span is silent — DTX (no packets) or an RFC 6464 level at or below
//!    [`SILENT_LEVEL`] — are **not decoded**. Of the rest, the [`MAX_CSRCS`] loudest (by their packets' audio
//!    level, so ranking costs no decoding) are decoded to `f32` and become this tick's *talkers*. The gate's
//!    edges are exact: a talker stays decoded for [`DECODE_HANGOVER_TICKS`] after its last voiced packet
//!    (the sender's codec delay carries the end of a talk spurt into the next, quiet, packet), and a talker
//!    that was not decoded last tick restarts from a reset decoder primed with the packet played just before,
//!    so nothing of an earlier spurt leaks into the new one.
//! 2. The talkers are summed in `f32` (nothing can wrap) into the full mix.
//! 3. **Encoding is O(talkers), not O(listeners)**: every listener who is not talking receives one shared
//!    encode of the full mix; each talker receives its own mix-minus (full mix minus itself) from its own
//!    encoder, kept for [`PERSONAL_HANGOVER_TICKS`] after it stops talking so its stream does not flip
//!    between encoders at every pause. Each output passes a soft [`Limiter`] before the encoder. The switches
//!    are not heard: a new personal encoder starts as an exact copy of the shared one (see
//!    [`crate::mixer::encoder`]), and the move back waits for a quiet mix ([`QUIET_SWITCH_LEVEL`], at most
//!    [`PERSONAL_MAX_HANGOVER_TICKS`]).
//! 4. A listener whose mix is empty (nobody else talks) is sent nothing, like DTX (with
//!    [`MixSettings::dtx`] off, a pre-encoded silence frame instead). An empty or all-silent room decodes and
//!    encodes nothing, and with DTX stops ticking altogether once every jitter buffer is idle (the next packet
//!    re-arms it).
//!
//! A worker that falls behind runs the missed ticks when it gets to them (up to [`MAX_CATCH_UP_TICKS`]), each
//! as of its own grid point, so listeners get the audio late but with no timestamp hole; beyond that the
//! mixer resumes on the grid and counts the ticks it gave up (`MixStats::ticks_skipped`).
//!
//! Each listener's stream has its own SSRC (its slot 0 stream), sequence numbers (one per packet sent) and
//! timestamps (the room's tick grid plus a per-listener random offset), so it stays continuous when the
//! listener moves between the shared and a personal mix. Packets list the talkers as CSRCs with their levels.

pub mod encoder;
pub mod jitter;
pub mod limiter;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::{FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
use crate::ids::{ParticipantId, Ssrc};
use crate::mixer::encoder::{EncoderSettings, MixEncoder, OpusError};
use crate::mixer::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PushOutcome};
use crate::mixer::limiter::Limiter;
use crate::red::{self, RedundantFrame};
use crate::speakers::csrc_levels::{Contributors, MAX_CSRCS};
use crate::stats::{MixStats, Samples};
use vocab::MixSettings;

/// Packets whose RFC 6464 level is this quiet or quieter (−dBov) count as silence and are not decoded.
pub const SILENT_LEVEL: u8 = 80;

/// Ticks a former talker keeps its personal encoder before it moves back to the shared mix (200 ms), so
/// its stream does not flip between encoders at every pause.
pub const PERSONAL_HANGOVER_TICKS: u32 = 10;

/// After its hangover a former talker moves back to the shared mix at the first tick whose mix is this quiet
/// (RFC 6464, −dBov) or quieter. The two encoders' states differ (a decoder's pitch history lasts as long as
/// a voice holds its pitch), so the move is made where nothing can be heard of it …
pub const QUIET_SWITCH_LEVEL: u8 = 50;

/// … or, in a room that is never quiet, after this many ticks (5 s), which bounds the encodes per tick.
pub const PERSONAL_MAX_HANGOVER_TICKS: u32 = 250;

/// Ticks an input is still decoded after its last voiced packet (60 ms): the end of a talk spurt reaches the
/// first quiet packets after it through the sender's codec delay.
pub const DECODE_HANGOVER_TICKS: u32 = 3;

/// Most overdue ticks run in one call when the worker fell behind (200 ms of audio); beyond that the mixer
/// resumes on the grid and counts the ticks it gave up.
pub const MAX_CATCH_UP_TICKS: u32 = 10;

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
    /// The payload of the packet sent to this listener just before, when it ends where this one starts:
    /// the redundancy of a RED (RFC 2198) packet for a listener that negotiated RED.
    pub previous: Option<Arc<[u8]>>,
}

/// An Opus encoder with its limiter: one output stream's state. Cloned whole when a listener moves from the
/// shared encode to its own, so its decoder sees one continuous stream.
struct OutEncoder {
    encoder: MixEncoder,
    limiter: Limiter,
}

impl OutEncoder {
    fn new(config: &MixSettings) -> Result<OutEncoder, OpusError> {
        Ok(OutEncoder {
            encoder: MixEncoder::new(encoder_settings(config))?,
            limiter: Limiter::new(),
        })
    }

    fn try_clone(&self) -> Result<OutEncoder, OpusError> {
        Ok(OutEncoder {
            encoder: self.encoder.try_clone()?,
            limiter: self.limiter.clone(),
        })
    }

    /// Limit and encode `pcm` (one frame; modified in place) into a packet with its level; `None` if
    /// libopus fails.
    fn encode(&mut self, pcm: &mut [f32], out: &mut [u8; MAX_OPUS]) -> Option<(Arc<[u8]>, u8)> {
        self.limiter.process(pcm);
        let level = crate::audio::audio_level_from_samples(pcm);
        let n = self.encoder.encode(pcm, out).ok()?;
        Some((Arc::from(&out[..n]), level))
    }
}

fn encoder_settings(config: &MixSettings) -> EncoderSettings {
    EncoderSettings {
        bitrate_bps: config.bitrate_bps,
        complexity: config.complexity,
        fec: config.fec,
    }
}

/// The encoder in `slot`, created on first use; `None` if libopus cannot create one.
fn ensure_encoder<'a>(
    slot: &'a mut Option<OutEncoder>,
    config: &MixSettings,
) -> Option<&'a mut OutEncoder> {
    if slot.is_none() {
        *slot = OutEncoder::new(config).ok();
    }
    slot.as_mut()
}

/// Which encode a listener received in the last tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    /// Nothing (nobody else talked, or the listener just joined).
    Nothing,
    Shared,
    Personal,
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
    /// Ticks the member is still decoded after its last voiced one: the codec's delay puts the end of every
    /// talk spurt into the first quiet packet after it, which must be mixed too.
    decode_hangover: u32,
    /// The packet played (not decoded) right before this tick, to prime the decoder when a talk spurt starts.
    prime: Option<Arc<[u8]>>,
    personal: Option<OutEncoder>,
    /// Ticks since the member last talked, while it keeps its personal encoder.
    since_talked: u32,
    /// The encode the member received last tick.
    feed: Feed,
    /// Timestamp and payload of the last packet sent to the member (the next one's RED redundancy).
    last_sent: Option<(u32, Arc<[u8]>)>,
    next_seq: u64,
    ts_offset: u32,
}

impl Member {
    /// Send the member the packet of the tick whose room timestamp is `frame_ts`.
    fn send(
        &mut self,
        frame_ts: u32,
        payload: Arc<[u8]>,
        contributors: Contributors,
        level: u8,
        out: &mut Vec<MixPacket>,
    ) {
        let ts = self.ts_offset.wrapping_add(frame_ts);
        let previous = match self.last_sent.take() {
            Some((last_ts, last)) if ts.wrapping_sub(last_ts) == FRAME_SAMPLES as u32 => Some(last),
            _ => None,
        };
        self.last_sent = Some((ts, payload.clone()));
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

/// One mixed room's mixing state.
pub struct Mixer {
    config: MixSettings,
    jitter: JitterConfig,
    /// The tick grid: ticks happen at `epoch + k · FRAME_DURATION`.
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
    pub fn new(now: Instant, config: MixSettings) -> Mixer {
        let jitter = JitterConfig {
            min_delay: Duration::from_millis(u64::from(config.jitter_min_ms)),
            max_delay: Duration::from_millis(u64::from(config.jitter_max_ms)),
            ..JitterConfig::default()
        };
        let silence = silence_frame(&config);
        Mixer {
            config,
            jitter,
            epoch: now,
            next_tick: None,
            ticks: 0,
            members: Vec::new(),
            index: HashMap::new(),
            shared: None,
            silence,
            mix: vec![0.0; FRAME_SAMPLES],
            scratch: vec![0.0; FRAME_SAMPLES],
            decode_buf: vec![0.0; MAX_PACKET_SAMPLES],
            encoded: Box::new([0u8; MAX_OPUS]),
            talkers: Vec::with_capacity(MAX_CSRCS),
        }
    }

    pub fn config(&self) -> &MixSettings {
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
            decode_hangover: 0,
            prime: None,
            personal: None,
            since_talked: 0,
            feed: Feed::Nothing,
            last_sent: None,
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

    /// The first tick-grid instant at or after `t`.
    fn grid_at_or_after(&self, t: Instant) -> Instant {
        let since = t.saturating_duration_since(self.epoch);
        let ticks = since.as_nanos().div_ceil(FRAME_DURATION.as_nanos());
        self.epoch + FRAME_DURATION * ticks as u32
    }

    fn grid_index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_nanos() / FRAME_DURATION.as_nanos()) as u64
    }

    /// Run every tick due at `now` (more than one when the worker fell behind, up to
    /// [`MAX_CATCH_UP_TICKS`]): mix and encode; packets for listeners go to `out`.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
        samples: &mut Samples,
    ) {
        let mut ran = 0;
        while let Some(due) = self.next_tick.filter(|due| *due <= now) {
            if ran == MAX_CATCH_UP_TICKS {
                // Still behind after catching up this much: resume at the next grid point and count the ticks
                // given up (their audio stays buffered and the jitter buffers trim it later).
                let resume = self.grid_index(now) + 1;
                stats.ticks_skipped += resume - self.grid_index(due);
                self.next_tick = Some(self.epoch + FRAME_DURATION * resume as u32);
                return;
            }
            if now.saturating_duration_since(due) >= FRAME_DURATION {
                stats.ticks_late += 1;
            }
            self.tick_at(due, out, stats, samples);
            ran += 1;
        }
    }

    /// The tick of grid point `due`: every input plays and every output is stamped as of that point, however
    /// late it actually runs, so a late worker delays the audio but never leaves a hole in it.
    fn tick_at(
        &mut self,
        due: Instant,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
        samples: &mut Samples,
    ) {
        stats.ticks += 1;
        self.ticks += 1;
        let grid = self.grid_index(due);
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
                // The span starts to play after what the member already holds for this tick.
                let span = m.jitter.pop(due + crate::audio::samples_duration(have));
                have += span.samples() as usize;
                m.spans.push(span);
            }
            let mut audible = false;
            for span in &m.spans {
                let level = match span {
                    Playout::Packet { audio_level, .. } => {
                        audible = true;
                        let l = audio_level.unwrap_or(0);
                        (l < SILENT_LEVEL).then_some(l)
                    }
                    // Concealment continues a talker (at its last level); it does not start one.
                    Playout::Fec { .. } | Playout::Plc { .. } if m.was_talking => {
                        audible = true;
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
                m.decode_hangover = DECODE_HANGOVER_TICKS;
                candidates.push((l, i));
            } else if m.was_talking && m.decode_hangover > 0 && audible {
                // The quiet packets right after a talk spurt still carry its end (codec delay): keep
                // decoding them into the mix, ranked after every voiced input.
                m.decode_hangover -= 1;
                candidates.push((SILENT_LEVEL.max(m.last_level), i));
            } else {
                m.decode_hangover = 0;
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
                list.push((ssrc.0, level.min(127)));
            }
            self.talkers.push(i);
        }
        // Built once per tick: the shared mix's listeners all get this one (levels shared, not copied).
        let contributors = Contributors::new(list);
        for m in &mut self.members {
            if !m.talking {
                // Not decoded this tick: the decoder restarts from the last packet played (see `prime`).
                // What the spans covered beyond this tick is still owed to the next one (as silence: the
                // member was silent), or its buffer would see time vanish and add it back every tick.
                let covered =
                    m.surplus.len() + m.spans.iter().map(|s| s.samples() as usize).sum::<usize>();
                m.surplus.clear();
                m.surplus.resize(covered.saturating_sub(FRAME_SAMPLES), 0.0);
                m.prime = match m.spans.last() {
                    Some(Playout::Packet { payload, .. }) => Some(payload.clone()),
                    _ => None,
                };
            }
            m.was_talking = m.talking;
        }

        // 3. Decide each listener's encode. A listener who starts hearing its own mix-minus continues the
        //    shared stream it was hearing: its personal encoder starts as a copy of the shared one, taken
        //    before this tick's shared encode.
        //    A former talker moves back to the shared encode once its hangover is over and the mix is quiet:
        //    its decoder's state (pitch history above all) then no longer matters.
        let talkers = self.talkers.len();
        let mix_quiet = crate::audio::audio_level_from_samples(&self.mix) >= QUIET_SWITCH_LEVEL;
        for m in &mut self.members {
            if m.talking {
                m.since_talked = 0;
            } else if m.personal.is_some() {
                m.since_talked += 1;
                if m.since_talked > PERSONAL_MAX_HANGOVER_TICKS
                    || (m.since_talked > PERSONAL_HANGOVER_TICKS && mix_quiet)
                {
                    m.personal = None;
                }
            }
            let others = talkers - usize::from(m.talking);
            if !m.subscribes || others == 0 {
                continue;
            }
            if m.talking && m.personal.is_none() {
                m.personal = match (&self.shared, m.feed) {
                    (Some(shared), Feed::Shared) => shared.try_clone().ok(),
                    _ => OutEncoder::new(&self.config).ok(),
                };
            }
        }

        // 4. Encode: one shared full mix for the listeners who do not talk, one mix-minus per talker.
        let mut shared_packet: Option<Option<(Arc<[u8]>, u8)>> = None;
        for i in 0..self.members.len() {
            let talking = self.members[i].talking;
            let m = &mut self.members[i];
            let was_fed = m.feed != Feed::Nothing;
            m.feed = Feed::Nothing;
            if !m.subscribes {
                continue;
            }
            let others = talkers - usize::from(talking);
            // Nothing to hear. With DTX the listener is sent nothing, but only after one last frame of its
            // (now silent) mix from the encoder it was hearing: that flushes the encoder's lookahead (the
            // last milliseconds of the talk spurt) and ends the stream on silence, so a receiver that
            // conceals the gap (it cannot tell DTX from loss) conceals silence.
            let last_frame = others == 0 && was_fed && self.config.dtx;
            if others == 0 && !last_frame {
                if self.config.dtx {
                    continue; // the listener's decoder sees a DTX gap
                }
                let Some(silence) = self.silence.clone() else {
                    continue;
                };
                m.send(frame_ts, silence, Contributors::default(), 127, out);
                stats.packets_sent += 1;
                continue;
            }
            let packet = if let Some(encoder) = m.personal.as_mut() {
                self.scratch.copy_from_slice(&self.mix);
                if talking {
                    for (acc, s) in self.scratch.iter_mut().zip(&m.frame) {
                        *acc -= *s;
                    }
                }
                stats.frames_encoded += 1;
                m.feed = Feed::Personal;
                encoder.encode(&mut self.scratch, &mut self.encoded)
            } else if talking {
                continue; // libopus could not create the personal encoder; never send a talker itself
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
                m.feed = Feed::Shared;
                shared_packet.clone().flatten()
            };
            let Some((payload, level)) = packet else {
                continue;
            };
            if last_frame {
                m.feed = Feed::Nothing;
            }
            let m = &mut self.members[i];
            let heard = match m.ssrc {
                Some(own) if talking => contributors.without(own.0),
                _ => contributors.clone(),
            };
            m.send(frame_ts, payload, heard, level, out);
            stats.packets_sent += 1;
        }
        // 5. Keep ticking while anything is buffered, playing or in hangover; otherwise sleep until a packet.
        let busy = any_active
            || talkers > 0
            || self.members.iter().any(|m| m.feed != Feed::Nothing)
            || self.members.iter().any(|m| m.personal.is_some())
            || (!self.config.dtx && self.members.iter().any(|m| m.subscribes));
        self.next_tick = busy.then(|| self.epoch + FRAME_DURATION * (grid + 1) as u32);
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

/// Decode a talker's spans into `m.frame` (exactly one tick), keeping any surplus. A talker that was not
/// decoded last tick starts from a clean decoder primed with the packet played just before (when there was
/// one), so nothing of an earlier talk spurt leaks into this one and its first frame decodes as the sender
/// encoded it.
fn decode_member(m: &mut Member, buf: &mut [f32], stats: &mut MixStats) -> Result<(), opus::Error> {
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

/// A 20 ms Opus frame of digital silence, encoded once per room.
fn silence_frame(config: &MixSettings) -> Option<Arc<[u8]>> {
    let mut encoder = MixEncoder::new(encoder_settings(config)).ok()?;
    let mut out = [0u8; MAX_OPUS];
    let n = encoder.encode(&[0.0; FRAME_SAMPLES], &mut out).ok()?;
    Some(Arc::from(&out[..n]))
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
            let (samples, has_fec) = opus_packet_info(frame.payload)?;
            expected_offset = expected_offset.saturating_add(samples);
            (frame.ts_offset == expected_offset && seq >= k).then(|| JitterPacket {
                seq: seq - k,
                ts: red::frame_ts(ts, frame),
                samples,
                has_fec,
                audio_level: None,
                payload: Arc::from(frame.payload),
            })
        })
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
mod tests;

#[cfg(test)]
mod red_tests;
