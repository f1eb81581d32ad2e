//! An adaptive jitter buffer for one mixer input (one participant's Opus stream), as pure logic.
//!
//! The buffer holds encoded packets and tells the mixer, span by span, what to render: decode a packet
//! ([`Playout::Packet`]), recover a lost frame from the next packet's in-band FEC ([`Playout::Fec`]), run
//! Opus packet-loss concealment ([`Playout::Plc`]), or render nothing ([`Playout::Silence`]). It never decodes.
//!
//! # Timeline
//!
//! Everything is keyed by the RTP timestamp (48 kHz), never by `sequence × 960`: packets of 10, 20, 40 or
//! 60 ms and DTX gaps (timestamp jumps without missing sequence numbers) all fit. Timestamps are unwrapped to
//! `i64` relative to the highest timestamp seen, so the 32-bit wrap is invisible. The *playout position* is
//! the timestamp of the next sample to render. Playout starts once the earliest buffered packet, had it
//! come on the fastest path, would have waited the target delay.
//!
//! # Delay measurement
//!
//! For every packet the buffer computes its *transit* `arrival − ts / 48 kHz` (an unknown constant apart
//! from the one-way delay). The minimum transit over a sliding window ([`JitterConfig::window`], 2 s) is
//! the "fastest path" baseline; a packet's *relative delay* is its transit minus that minimum. Measuring
//! against a recent minimum (not the first packet) keeps sender clock drift and route changes from
//! accumulating.
//!
//! Relative delays go into a histogram of 5 ms buckets with exponential forgetting (NetEQ-like):
//! per 20 ms of audio, every bucket is multiplied by [`JitterConfig::forget_factor`] (0.983) and the
//! packet's bucket gains the remainder, so the histogram always sums to one and old jitter fades within a few
//! seconds. The *target delay* is the [`JitterConfig::percentile`] (95th) of that histogram plus
//! [`JitterConfig::headroom`], clamped to `[min_delay, max_delay]`. The histogram starts with all its mass
//! at [`JitterConfig::initial_delay`], so a new stream starts there and converges within a few seconds.
//!
//! The *current delay* ([`JitterBuffer::current_delay`]) is how long a packet on the fastest path waits
//! between arriving and being needed: `now − playout position / 48 kHz − minimum transit`, where `now` is
//! the tick time passed to [`JitterBuffer::pop`] when the playout position is asked for (its deadline: the
//! mixer decodes at the tick, even if part of the result plays later from its surplus). A packet is on time
//! exactly when its relative delay is at most the current delay, so steering the current delay onto the
//! target keeps about 95 % of packets on time.
//!
//! **Loss margin.** A lost frame comes back from the next packet (its in-band FEC, or its RED copy) only
//! if that packet has arrived when the lost frame is decided. The consumer decides a whole tick at once and
//! may hold part of a tick already decoded (its surplus), so the delay can be on target while the next
//! packet is still 10 ms away: then every loss became PLC, held the playout position and moved the delay in
//! the middle of a sentence. While the stream loses packets (a smoothed loss estimate over the last ~256
//! packets of at least 0.6 %, off again below 0.2 %) and can recover them (its packets can carry FEC, or its
//! sender sends RED), the target gains one packet duration. A clean stream keeps its delay.
//!
//! # Steering the delay
//!
//! The buffer cannot stretch audio (it never sees PCM), so it changes the delay in whole spans:
//!
//! - **In a gap** (a DTX pause or a run of lost packets, i.e. the next buffered packet starts after the
//!   playout position): too much delay is removed by jumping the playout position forward (up to the whole
//!   gap, exactly to the target); too little is added by rendering extra silence without advancing. This is
//!   free, and it is how each talk spurt after a DTX pause is re-anchored at the target delay, which also
//!   absorbs sender clock drift.
//! - **On a quiet packet** (RFC 6464 level of −[`JitterConfig::quiet_level`] dBov or quieter, −60 dBov
//!   by default): a packet is shortened (played only in part, down to 2.5 ms, but still decoded, so a
//!   decoder's state stays continuous) so that the delay lands on the target; silence is inserted when the
//!   delay is below target. Quiet packets give up time *inside a pause* (after 80 ms of quiet packets); inside a
//!   sentence (a stop consonant, a breath: a shorter quiet run) only when the delay is 10 ms too long, so
//!   the wander of the delay estimate under jitter is not heard as time shifts mid-sentence; never the first
//!   quiet packet after audio (the sender's codec delay carries the end of the audio into it) nor the last
//!   one before audio (it primes the mixer's decoder for the audio after it). Silence is inserted right after
//!   any quiet packet (too little delay makes packets late, which costs more; and after the quiet packet
//!   that carries the end of some audio, nothing is split).
//! - **Forced**: when the delay is more than [`JitterConfig::force_margin`] (40 ms) off target and no quiet
//!   moment comes (for shrinking: none for 4 s of audio, since speech pauses far more often and a pause
//!   shrinks the delay for free), loud packets are dropped (or PLC is inserted) until the delay is back in the band, at most
//!   one such step per 100 ms of audio. Packets are only dropped when their successor is already buffered,
//!   and never the first packet after concealment (the one that was waited for).
//!
//! When the buffer runs empty mid-stream after a packet that was not quiet (a delayed packet, a loss, or a
//! talker who stopped without DTX), the playout position stays where it is and the buffer conceals with PLC
//! for at most [`JitterConfig::max_plc`] (300 ms). Not advancing means a delayed packet still plays when it
//! arrives (the delay grows, and is trimmed later) and a lost one can still be recovered by FEC once its
//! successor arrives. After a quiet packet (the usual end of a talk spurt before DTX), or once PLC has run
//! out, the buffer renders silence and the playout position moves on with time, keeping the current delay.
//! If the next talk spurt then starts behind the playout position (a sender clock slower than ours over a
//! long pause), but after the last audio rendered, it is not late: the buffer starts it afresh like a new
//! stream, waiting the target delay.
//!
//! # Loss, DTX, duplicates, late and wild packets
//!
//! A gap before the next buffered packet is *loss* if sequence numbers are missing, else *DTX* (silence,
//! never counted as loss). Loss is concealed with PLC spans of the last packet's duration, except that the
//! frame right before a packet with `has_fec` is recovered with [`Playout::Fec`] from that packet. Lost
//! packets are counted when the packet after the gap plays.
//!
//! A packet whose timestamp is already buffered, or whose sequence number was played in the last 64, is a
//! duplicate; one whose audio starts before the playout position is late. A packet claiming a timestamp more
//! than `max_delay` + [`JitterConfig::far_margin`] ahead of what its arrival time implies is dropped as too
//! far ahead; and when [`JitterConfig::resync_packets`] consecutive wild packets (too far ahead, or late by
//! more than that) agree with each other, the sender has restarted with a new timestamp base and the buffer
//! re-anchors on them. At most [`JitterConfig::max_packets`] packets are held; beyond that the packet furthest
//! in the future is dropped. The delay window holds at most [`WINDOW_CAPACITY`] entries.
//!
//! # Span sizes
//!
//! Spans are not always whole packets or ticks: delay steering inserts silence (or PLC) in steps of 2.5 ms
//! and may skip part of a gap, so a span can be anything from 120 samples up to the packet duration (or a
//! tick). PLC and FEC spans are multiples of 2.5 ms (120 samples), as Opus decoding requires, whenever the
//! sender's timestamps are; a remainder that is not is rendered as silence. The mixer keeps any surplus
//! beyond its tick, as it does for 40 ms packets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The RTP clock rate of Opus (RFC 7587): always 48 kHz.
pub const CLOCK_RATE: u32 = 48_000;

/// Samples in one mixer tick (20 ms); the size of silence and expansion spans.
pub const TICK_SAMPLES: u32 = 960;

/// Granularity of Opus PLC/FEC frame sizes: 2.5 ms.
const GRAIN: i64 = 120;

/// Width of one bucket of the relative-delay histogram.
const BUCKET_US: i64 = 5_000;

/// Most entries the sliding minimum-transit window holds (a bound against floods of packets).
pub const WINDOW_CAPACITY: usize = 1024;

/// Largest packet duration accepted (120 ms, the longest Opus packet).
const MAX_PACKET_SAMPLES: u32 = 5_760;

/// Audio rendered between two forced delay corrections (100 ms).
const FORCE_SPACING: i64 = 4_800;

/// Most missing sequence numbers counted as loss in one gap (20 s of 20 ms packets); more is a
/// discontinuity.
const MAX_COUNTED_LOSS: u64 = 1_000;

/// Audio played without a quiet moment before loud packets may be dropped to shrink the delay (4 s): speech
/// pauses far more often, and a pause shrinks it for free.
const FORCE_SHRINK_PATIENCE: i64 = 192_000;

/// Quiet packets a talker must have played in a row before the delay is steered on quiet packets (80 ms): a
/// stop consonant or a breath inside a sentence is shorter, and a delay change there is heard (and, in a mixer
/// still decoding the talker, skips its decoder). Pauses between sentences are longer, or DTX gaps.
const STEER_AFTER_QUIET_PACKETS: u32 = 4;

/// Inside a sentence (a quiet run shorter than [`STEER_AFTER_QUIET_PACKETS`]) the delay is shrunk only when it
/// is this far above target (10 ms): the small wander of the delay estimate under jitter is left alone, a fast
/// sender clock's drift is still absorbed.
const MID_SENTENCE_STEER_US: i64 = 10_000;

/// Smoothing of the loss estimate per packet (lost or played): about the last 256 packets (5 s of 20 ms
/// packets) count.
const LOSS_SMOOTHING: f64 = 1.0 / 256.0;

/// Loss estimate at and above which a stream with redundancy gets the loss margin (two losses close
/// together), and below which it loses it again (a few seconds without loss).
const LOSS_MARGIN_ON: f64 = 0.006;
const LOSS_MARGIN_OFF: f64 = 0.002;

fn samples_to_us(samples: i64) -> i64 {
    // 1 sample = 1e6 / 48000 µs = 125 / 6 µs.
    samples * 125 / 6
}

fn us_to_samples(us: i64) -> i64 {
    us * 6 / 125
}

fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn us_duration(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0))
}

/// Tuning of a [`JitterBuffer`]. The defaults suit 20 ms Opus voice on the public internet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterConfig {
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay.
    pub max_delay: Duration,
    /// Target delay of a new stream, before any jitter has been measured.
    pub initial_delay: Duration,
    /// Most packets held at once.
    pub max_packets: usize,
    /// Fraction of packets the target delay should have on time (0.95).
    pub percentile: f64,
    /// Forgetting factor of the delay histogram per 20 ms of audio (0.983: old jitter fades over ~3 s).
    pub forget_factor: f64,
    /// Added to the measured percentile.
    pub headroom: Duration,
    /// Length of the sliding window for the minimum transit (the relative-delay baseline).
    pub window: Duration,
    /// Deviation of the current delay from the target beyond which loud packets are dropped (or PLC
    /// inserted) instead of waiting for a quiet moment.
    pub force_margin: Duration,
    /// RFC 6464 levels at or above this (−dBov: quieter) count as quiet, where delay changes are inaudible.
    pub quiet_level: u8,
    /// After this much consecutive PLC, conceal with silence instead.
    pub max_plc: Duration,
    /// Packets more than `max_delay` plus this ahead of their arrival are dropped as too far ahead.
    pub far_margin: Duration,
    /// Consecutive, mutually consistent wild packets that make the buffer re-anchor (sender restart).
    pub resync_packets: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(60),
            max_packets: 50,
            percentile: 0.95,
            forget_factor: 0.983,
            headroom: Duration::from_millis(20),
            window: Duration::from_secs(2),
            force_margin: Duration::from_millis(40),
            quiet_level: 60,
            max_plc: Duration::from_millis(300),
            far_margin: Duration::from_millis(100),
            resync_packets: 3,
        }
    }
}

/// One received packet, as the caller parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterPacket {
    /// Extended (64-bit, never wrapping) RTP sequence number.
    pub seq: u64,
    /// RTP timestamp (48 kHz, wraps).
    pub ts: u32,
    /// Duration of the packet in samples (from the Opus TOC: 480, 960, 1920, 2880, …).
    pub samples: u32,
    /// The packet carries in-band FEC for the frame before it.
    pub has_fec: bool,
    /// RFC 6464 audio level (0..=127, −dBov), if the packet had the extension.
    pub audio_level: Option<u8>,
    /// The Opus payload.
    pub payload: Arc<[u8]>,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Accepted,
    /// The same timestamp is buffered, or the same sequence number was recently played: dropped.
    Duplicate,
    /// Its audio starts before the playout position: dropped.
    Late,
    /// Its timestamp is implausibly far ahead of its arrival time: dropped.
    TooFarAhead,
    /// The buffer was full and the packet was the furthest in the future: dropped.
    Overflow,
    /// A duration of zero or more than 120 ms: dropped.
    Invalid,
}

/// What [`JitterBuffer::push_redundant`] did with a frame recovered from RED redundancy. None of these is
/// counted as a duplicate or late packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedundantOutcome {
    /// It fills a missing frame and will play in its place.
    Recovered,
    /// Its frame is buffered or was played already.
    NotMissing,
    /// Its playout time has passed.
    TooLate,
    /// It does not fit: no stream to place it in yet, it overlaps its neighbours, its sequence number
    /// contradicts theirs, a bad duration, or a full buffer.
    Refused,
}

/// The next span of audio to render, from [`JitterBuffer::pop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet normally and play the first `samples` of it: all of it, unless the buffer shortened
    /// a quiet packet inside a pause to steer its delay (the packet is still decoded, so the decoder's state
    /// stays continuous).
    Packet {
        payload: Arc<[u8]>,
        samples: u32,
        audio_level: Option<u8>,
    },
    /// The frame before `payload`'s packet is missing: decode `payload` with FEC to recover `samples`.
    Fec { payload: Arc<[u8]>, samples: u32 },
    /// Missing and no FEC source: run Opus PLC for `samples`.
    Plc { samples: u32 },
    /// Nothing to render for `samples` (not started, DTX, inserted delay); the mixer does not decode.
    Silence { samples: u32 },
}

impl Playout {
    /// The duration of the span in samples.
    pub fn samples(&self) -> u32 {
        match *self {
            Playout::Packet { samples, .. }
            | Playout::Fec { samples, .. }
            | Playout::Plc { samples }
            | Playout::Silence { samples } => samples,
        }
    }
}

/// Counters of one [`JitterBuffer`] since it was created ([`JitterBuffer::reset`] keeps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets buffered.
    pub accepted: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Packets dropped because they came after their playout time.
    pub late: u64,
    /// Packets dropped as too far ahead.
    pub too_far_ahead: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Packets with a zero or oversized duration.
    pub invalid: u64,
    /// Packets handed out for decoding.
    pub played: u64,
    /// Packets never received by their playout time (missing sequence numbers at playout).
    pub lost: u64,
    /// Frames recovered from in-band FEC.
    pub concealed_fec: u64,
    /// Missing frames played from RED (RFC 2198) redundancy (also counted in `lost`: they were lost on
    /// the wire).
    pub recovered_red: u64,
    /// PLC spans handed out for loss or an empty buffer (not counting `delay_inserted`).
    pub concealed_plc: u64,
    /// Spans inserted (silence or PLC) to raise the delay while packets were buffered.
    pub delay_inserted: u64,
    /// Packets dropped to lower the delay.
    pub delay_dropped: u64,
    /// Times the buffer re-anchored on a new timestamp base (sender restart).
    pub resyncs: u64,
    /// Calls to [`JitterBuffer::reset`].
    pub resets: u64,
    /// Target delay when the stats were taken.
    pub target_delay: Duration,
    /// Current delay when the stats were taken.
    pub current_delay: Duration,
}

#[derive(Clone, Debug)]
struct Buffered {
    ts: i64,
    seq: u64,
    samples: u32,
    has_fec: bool,
    audio_level: Option<u8>,
    payload: Arc<[u8]>,
    /// Recovered from RED redundancy rather than received.
    recovered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing buffered since creation, reset or resync.
    Idle,
    /// Packets buffered, waiting for the first one to have waited the target delay.
    Buffering,
    /// Playout running; `pos` is meaningful.
    Playing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Force {
    None,
    Shrink,
    Grow,
}

/// An adaptive jitter buffer for one Opus stream. See the [module docs](self) for the algorithm.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    /// Origin of all microsecond times; the first arrival.
    base: Option<Instant>,
    /// Buffered packets, ascending by timestamp, all at or after `pos` while playing.
    packets: VecDeque<Buffered>,
    /// Highest unwrapped timestamp accepted (the unwrapping reference).
    max_ts: Option<i64>,
    phase: Phase,
    /// Playout position: the timestamp of the next sample to render.
    pos: i64,
    /// Sequence number of the last packet played or dropped.
    last_seq: Option<u64>,
    /// Highest played sequence number and a bitmask of the 64 at and below it (bit 0 = `played_top`).
    played_top: u64,
    played_mask: u64,
    last_samples: u32,
    /// Playout position at the end of the last audio (packet, FEC or PLC) handed out.
    audio_end: i64,
    last_quiet: bool,
    /// Quiet packets played in a row (see [`STEER_AFTER_QUIET_PACKETS`]).
    quiet_run: u32,
    last_silent: bool,
    /// The current delay as of the last span handed out (µs).
    last_delay_us: i64,
    /// Consecutive concealment (PLC) samples.
    conceal_run: i64,
    /// Samples played since the last moment the delay could shrink for free: a gap or a quiet packet between
    /// quiet ones (see [`FORCE_SHRINK_PATIENCE`]).
    loud_run: i64,
    force: Force,
    /// Playout position of the last forced correction.
    last_forced: Option<i64>,
    /// Monotonic deque for the sliding minimum transit: (arrival µs, transit µs), transit increasing.
    window: VecDeque<(i64, i64)>,
    histogram: Vec<f64>,
    target_us: i64,
    /// Smoothed share of packets lost (see [`LOSS_SMOOTHING`]); kept across restarts, like the histogram.
    loss_rate: f64,
    /// The loss margin is on (see [`LOSS_MARGIN_ON`]).
    loss_margin: bool,
    /// The stream can recover a lost frame from a later packet: its last packet could carry in-band FEC,
    /// or its sender sends RED.
    redundancy: bool,
    /// RED redundancy was ever pushed.
    red_seen: bool,
    outliers: u32,
    last_outlier_transit: i64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with `config`. Allocates its storage once, here.
    pub fn new(config: JitterConfig) -> Self {
        let max_delay_us = duration_us(config.max_delay).max(BUCKET_US);
        let buckets = usize::try_from(max_delay_us / BUCKET_US)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut buffer = Self {
            config,
            base: None,
            packets: VecDeque::with_capacity(config.max_packets.max(1)),
            max_ts: None,
            phase: Phase::Idle,
            pos: 0,
            last_seq: None,
            played_top: 0,
            played_mask: 0,
            last_samples: TICK_SAMPLES,
            audio_end: 0,
            last_quiet: false,
            quiet_run: 0,
            last_silent: true,
            last_delay_us: 0,
            conceal_run: 0,
            loud_run: 0,
            force: Force::None,
            last_forced: None,
            window: VecDeque::with_capacity(WINDOW_CAPACITY),
            histogram: vec![0.0; buckets],
            target_us: 0,
            loss_rate: 0.0,
            loss_margin: false,
            redundancy: false,
            red_seen: false,
            outliers: 0,
            last_outlier_transit: 0,
            stats: JitterStats::default(),
        };
        buffer.seed_histogram();
        buffer
    }

    /// The configuration.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// A packet arrived at `arrival`.
    pub fn push(&mut self, arrival: Instant, packet: JitterPacket) -> PushOutcome {
        if packet.samples == 0 || packet.samples > MAX_PACKET_SAMPLES {
            self.stats.invalid += 1;
            return PushOutcome::Invalid;
        }
        let base = *self.base.get_or_insert(arrival);
        let arrival_us = duration_us(arrival.saturating_duration_since(base));
        let ts = self.unwrap_ts(packet.ts);
        let transit = arrival_us - samples_to_us(ts);
        let baseline = self.baseline(arrival_us);
        let far_us = duration_us(self.config.max_delay) + duration_us(self.config.far_margin);

        let index = self.packets.partition_point(|p| p.ts < ts);
        if let Some(p) = self.packets.get(index).filter(|p| p.ts == ts) {
            if !(p.recovered && p.seq == packet.seq) {
                self.stats.duplicate += 1;
                return PushOutcome::Duplicate;
            }
            // The packet itself came after its RED copy: it replaces the copy (it has its own level).
            self.packets.remove(index);
        }
        let resting = self.phase == Phase::Playing && self.packets.is_empty() && self.last_silent;
        if resting
            && ts < self.pos
            && ts >= self.audio_end
            && samples_to_us(self.pos - ts) <= far_us
            && !self.was_played(packet.seq)
        {
            // Only silence was rendered since the last audio, and the playout position ran ahead of this
            // sender (a slow clock over a long pause): start the talk spurt afresh instead of dropping it.
            self.phase = Phase::Buffering;
        }
        let playing = self.phase == Phase::Playing;
        if playing && ts < self.pos && self.was_played(packet.seq) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }

        let ahead = baseline.is_some_and(|min| transit - min < -far_us);
        let behind = playing && samples_to_us(self.pos - ts) > far_us;
        if ahead || behind {
            let coherent =
                self.outliers > 0 && (transit - self.last_outlier_transit).abs() <= far_us;
            self.outliers = if coherent { self.outliers + 1 } else { 1 };
            self.last_outlier_transit = transit;
            if self.outliers >= self.config.resync_packets.max(1) {
                self.stats.resyncs += 1;
                self.restart();
                return self.push(arrival, packet);
            }
            if ahead {
                self.stats.too_far_ahead += 1;
                return PushOutcome::TooFarAhead;
            }
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        self.outliers = 0;

        // Late packets still tell us about the network: measure before deciding.
        self.measure(arrival_us, transit, baseline, packet.samples);

        if playing && ts < self.pos {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if self.packets.len() >= self.config.max_packets.max(1) {
            self.stats.overflow += 1;
            match self.packets.back() {
                Some(last) if last.ts > ts => {
                    self.packets.pop_back();
                }
                _ => return PushOutcome::Overflow,
            }
        }
        let index = self.packets.partition_point(|p| p.ts < ts);
        self.packets.insert(
            index,
            Buffered {
                ts,
                seq: packet.seq,
                samples: packet.samples,
                has_fec: packet.has_fec,
                audio_level: packet.audio_level,
                payload: packet.payload,
                recovered: false,
            },
        );
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        if self.phase == Phase::Idle {
            self.phase = Phase::Buffering;
        }
        self.stats.accepted += 1;
        PushOutcome::Accepted
    }

    /// A frame recovered from RED (RFC 2198) redundancy: an earlier frame repeated inside a later packet,
    /// with the sequence number and timestamp it had. It only fills a gap: a frame that is buffered, was
    /// played, or whose playout time has passed is ignored without counting it as a duplicate or late
    /// packet, and it does not enter the delay measurement (its arrival says nothing about its own path).
    /// Filling the gap before playout reaches it means a missing frame comes from RED first, then from the
    /// next packet's FEC, then PLC. Call it after pushing the packet that carried the redundancy.
    pub fn push_redundant(&mut self, packet: JitterPacket) -> RedundantOutcome {
        if packet.samples == 0 || packet.samples > MAX_PACKET_SAMPLES {
            return RedundantOutcome::Refused;
        }
        self.red_seen = true;
        let ts = self.unwrap_ts(packet.ts);
        let end = ts + i64::from(packet.samples);
        let index = self.packets.partition_point(|p| p.ts < ts);
        if self.packets.get(index).is_some_and(|p| p.ts == ts)
            || self.was_played(packet.seq)
            || self.packets.iter().any(|p| p.seq == packet.seq)
        {
            return RedundantOutcome::NotMissing;
        }
        match self.phase {
            Phase::Idle => return RedundantOutcome::Refused,
            // Before playout starts, only a gap between buffered packets is filled: a frame before the first
            // would belong to an earlier talk spurt (or the time before the stream).
            Phase::Buffering if index == 0 => return RedundantOutcome::Refused,
            Phase::Buffering => {}
            Phase::Playing => {
                if ts < self.pos || self.last_seq.is_some_and(|l| packet.seq <= l) {
                    return RedundantOutcome::TooLate;
                }
            }
        }
        let prev = index.checked_sub(1).and_then(|i| self.packets.get(i));
        let next = self.packets.get(index);
        let fits = prev.is_none_or(|p| p.ts + i64::from(p.samples) <= ts && p.seq < packet.seq)
            && next.is_none_or(|n| end <= n.ts && packet.seq < n.seq);
        if !fits || self.packets.len() >= self.config.max_packets.max(1) {
            return RedundantOutcome::Refused;
        }
        self.packets.insert(
            index,
            Buffered {
                ts,
                seq: packet.seq,
                samples: packet.samples,
                has_fec: packet.has_fec,
                audio_level: packet.audio_level,
                payload: packet.payload,
                recovered: true,
            },
        );
        RedundantOutcome::Recovered
    }

    /// The next span to render; `now` is when it starts to play: the consumer's tick time plus the audio it
    /// already holds for that tick (its surplus and the spans popped before). Measuring the delay at the
    /// span's own start, not at the tick, keeps a shortened packet and the spans after it from looking like
    /// too little delay (which inserted silence right after every trim).
    pub fn pop(&mut self, now: Instant) -> Playout {
        let Some(base) = self.base else {
            // Nothing ever arrived: there is no timeline yet.
            return Playout::Silence {
                samples: TICK_SAMPLES,
            };
        };
        let now_us = duration_us(now.saturating_duration_since(base));
        let out = self.next_span(now_us);
        if !matches!(out, Playout::Silence { .. }) {
            self.audio_end = self.pos;
        }
        self.last_silent = matches!(out, Playout::Silence { .. });
        out
    }

    /// The delay the buffer aims for.
    pub fn target_delay(&self) -> Duration {
        us_duration(self.target_us)
    }

    /// The delay the buffer currently applies, as of the last span handed out: how long a packet on the
    /// fastest recent path waits between arriving and being asked for by [`pop`](Self::pop) (see the module
    /// docs). This is what is steered onto [`target_delay`](Self::target_delay). Zero before playout starts.
    pub fn current_delay(&self) -> Duration {
        match self.phase {
            Phase::Playing => us_duration(self.last_delay_us),
            _ => Duration::ZERO,
        }
    }

    /// Audio buffered ahead of the playout position (from the playout position to the end of the last
    /// buffered packet).
    pub fn buffered(&self) -> Duration {
        let Some(last) = self.packets.back() else {
            return Duration::ZERO;
        };
        let start = match self.phase {
            Phase::Playing => self.pos,
            _ => self.packets.front().map_or(last.ts, |p| p.ts),
        };
        us_duration(samples_to_us(last.ts + i64::from(last.samples) - start))
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// No packets held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Counters, with the current target and delay.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay: self.target_delay(),
            current_delay: self.current_delay(),
            ..self.stats
        }
    }

    /// Playing a talk spurt: the last span was audio (or concealment), or the next packet is due now.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Playing
            && (!self.last_silent || self.packets.front().is_some_and(|p| p.ts <= self.pos))
    }

    /// Forgets the stream (buffered packets, playout position, delay baseline) but keeps the jitter
    /// histogram, hence the target delay, and the counters. For a mute, a new SSRC, or a sender restart.
    pub fn reset(&mut self) {
        self.stats.resets += 1;
        self.restart();
    }

    fn restart(&mut self) {
        self.packets.clear();
        self.max_ts = None;
        self.phase = Phase::Idle;
        self.pos = 0;
        self.last_seq = None;
        self.played_top = 0;
        self.played_mask = 0;
        self.last_samples = TICK_SAMPLES;
        self.audio_end = 0;
        self.last_quiet = false;
        self.quiet_run = 0;
        self.last_silent = true;
        self.conceal_run = 0;
        self.loud_run = 0;
        self.force = Force::None;
        self.last_forced = None;
        self.window.clear();
        self.outliers = 0;
    }

    fn seed_histogram(&mut self) {
        let start = duration_us(self.config.initial_delay) - duration_us(self.config.headroom);
        // The bucket whose upper edge is the first at or above `start`.
        let index = usize::try_from((start - 1).max(0) / BUCKET_US)
            .unwrap_or(usize::MAX)
            .min(self.histogram.len() - 1);
        self.histogram.iter_mut().for_each(|b| *b = 0.0);
        self.histogram[index] = 1.0;
        self.update_target();
    }

    fn unwrap_ts(&self, ts: u32) -> i64 {
        match self.max_ts {
            None => i64::from(ts),
            // Truncating to u32 keeps the value modulo 2³², which is all wrapping arithmetic needs.
            Some(max) => max + i64::from(ts.wrapping_sub(max as u32) as i32),
        }
    }

    /// The minimum transit over the window, or `None` when the newest measurement is older than the window
    /// (after a long pause the old baseline may have drifted).
    fn baseline(&mut self, arrival_us: i64) -> Option<i64> {
        let horizon = arrival_us - duration_us(self.config.window);
        let newest = self.window.back()?;
        if newest.0 < horizon {
            return None;
        }
        while self.window.len() > 1 && self.window.front().is_some_and(|f| f.0 < horizon) {
            self.window.pop_front();
        }
        self.window.front().map(|f| f.1)
    }

    fn measure(&mut self, arrival_us: i64, transit: i64, baseline: Option<i64>, samples: u32) {
        if baseline.is_none() {
            self.window.clear();
        }
        while self.window.back().is_some_and(|b| b.1 >= transit) {
            self.window.pop_back();
        }
        if self.window.len() >= WINDOW_CAPACITY {
            self.window.pop_front();
        }
        self.window.push_back((arrival_us, transit));
        let Some(min) = baseline else {
            return;
        };
        let relative = (transit - min).max(0);
        let last = self.histogram.len() - 1;
        let index = usize::try_from(relative / BUCKET_US)
            .unwrap_or(last)
            .min(last);
        let forget = self
            .config
            .forget_factor
            .clamp(0.0, 1.0)
            .powf(f64::from(samples) / f64::from(TICK_SAMPLES));
        self.histogram.iter_mut().for_each(|b| *b *= forget);
        self.histogram[index] += 1.0 - forget;
        self.update_target();
    }

    fn update_target(&mut self) {
        let total: f64 = self.histogram.iter().sum();
        let wanted = self.config.percentile.clamp(0.0, 1.0) * total;
        let mut cumulative = 0.0;
        let mut index = self.histogram.len() - 1;
        for (i, mass) in self.histogram.iter().enumerate() {
            cumulative += mass;
            if cumulative >= wanted {
                index = i;
                break;
            }
        }
        let upper = (i64::try_from(index).unwrap_or(i64::MAX) + 1) * BUCKET_US;
        let min = duration_us(self.config.min_delay);
        let max = duration_us(self.config.max_delay).max(min);
        let margin = if self.loss_margin && self.redundancy {
            samples_to_us(i64::from(self.last_samples.min(MAX_PACKET_SAMPLES)))
        } else {
            0
        };
        self.target_us = (upper + duration_us(self.config.headroom) + margin).clamp(min, max);
    }

    /// A packet plays after `missing` lost ones; `lost` if it is itself a copy recovered from RED (its
    /// original was lost on the wire). Updates the loss estimate and the loss margin.
    fn note_loss(&mut self, missing: u64, lost: bool, has_fec: bool) {
        let keep = 1.0 - LOSS_SMOOTHING;
        // A long run of loss saturates the estimate long before 256 packets.
        let missing = i32::try_from(missing.min(256)).unwrap_or(256);
        self.loss_rate = 1.0 - (1.0 - self.loss_rate) * keep.powi(missing);
        self.loss_rate = self.loss_rate * keep + if lost { LOSS_SMOOTHING } else { 0.0 };
        let margin = if self.loss_margin {
            self.loss_rate >= LOSS_MARGIN_OFF
        } else {
            self.loss_rate >= LOSS_MARGIN_ON
        };
        let redundancy = has_fec || self.red_seen;
        if margin != self.loss_margin || redundancy != self.redundancy {
            self.loss_margin = margin;
            self.redundancy = redundancy;
            self.update_target();
        }
    }

    fn was_played(&self, seq: u64) -> bool {
        seq <= self.played_top
            && self.played_top - seq < 64
            && self.played_mask & (1 << (self.played_top - seq)) != 0
    }

    fn mark_played(&mut self, seq: u64) {
        if self.played_mask == 0 || seq > self.played_top {
            let shift = seq - self.played_top;
            self.played_mask = if self.played_mask == 0 || shift >= 64 {
                0
            } else {
                self.played_mask << shift
            };
            self.played_top = seq;
        }
        if self.played_top - seq < 64 {
            self.played_mask |= 1 << (self.played_top - seq);
        }
    }

    /// Current delay in µs: how long before `now_us` (the deadline of the playout position) a packet on the
    /// fastest path carrying the playout position arrived.
    fn delay_us(&self, now_us: i64) -> i64 {
        let min_transit = self.window.front().map_or(0, |f| f.1);
        now_us - samples_to_us(self.pos) - min_transit
    }

    fn next_span(&mut self, now_us: i64) -> Playout {
        match self.phase {
            Phase::Idle => {
                return Playout::Silence {
                    samples: TICK_SAMPLES,
                }
            }
            Phase::Buffering => {
                let Some(first) = self.packets.front() else {
                    self.phase = Phase::Idle;
                    return Playout::Silence {
                        samples: TICK_SAMPLES,
                    };
                };
                let min_transit = self.window.front().map_or(0, |f| f.1);
                let waited = now_us - samples_to_us(first.ts) - min_transit;
                if waited < self.target_us {
                    return Playout::Silence {
                        samples: TICK_SAMPLES,
                    };
                }
                self.pos = first.ts;
                self.phase = Phase::Playing;
            }
            Phase::Playing => {}
        }
        // Each pass either returns or shortens the buffer / the gap, so this ends; the bound is a backstop.
        for _ in 0..=self.config.max_packets.saturating_add(2) {
            if let Some(span) = self.step(now_us) {
                return span;
            }
        }
        Playout::Silence {
            samples: TICK_SAMPLES,
        }
    }

    /// One decision at the playout position; `None` means the state changed and the caller should decide
    /// again.
    fn step(&mut self, now_us: i64) -> Option<Playout> {
        let delay = self.delay_us(now_us);
        self.last_delay_us = delay;
        let target = self.target_us;
        let force_us = duration_us(self.config.force_margin);
        self.force = match self.force {
            _ if delay - target > force_us => Force::Shrink,
            _ if target - delay > force_us => Force::Grow,
            Force::Shrink if delay <= target + samples_to_us(GRAIN) => Force::None,
            Force::Grow if delay >= target => Force::None,
            other => other,
        };
        let force_allowed = self
            .last_forced
            .is_none_or(|at| self.pos - at >= FORCE_SPACING);

        let Some(head) = self.packets.front() else {
            return Some(self.conceal_empty());
        };
        if head.ts < self.pos {
            // Only possible with overlapping timestamps from a confused sender.
            self.packets.pop_front();
            self.stats.late += 1;
            return None;
        }

        if head.ts == self.pos {
            let samples = i64::from(head.samples);
            let quiet = head
                .audio_level
                .is_some_and(|l| l >= self.config.quiet_level);
            let next = self.packets.get(1).filter(|n| n.ts == head.ts + samples);
            let next_ready = next.is_some();
            // Quiet packets give up time inside a pause; between two quiet packets inside a sentence (a stop
            // consonant, a breath) only a large excess is removed, and never on the first quiet packet after
            // audio (it carries the end of it: the sender's codec delay) nor the last one before audio (it
            // primes the decoder for it).
            let in_pause = quiet && self.quiet_run >= STEER_AFTER_QUIET_PACKETS;
            let between = quiet && self.quiet_run >= 1;
            let may_shrink = in_pause || (between && delay - target >= MID_SENTENCE_STEER_US);
            let steerable = may_shrink
                && next
                    .is_some_and(|n| n.audio_level.is_some_and(|l| l >= self.config.quiet_level));
            let spare = delay - samples_to_us(samples) - target;
            // Right after concealment, play the packet that was waited for; drop later ones.
            let forced_drop = self.force == Force::Shrink
                && force_allowed
                && spare >= 0
                && self.conceal_run == 0
                && self.loud_run >= FORCE_SHRINK_PATIENCE;
            if next_ready && forced_drop {
                let dropped = self
                    .packets
                    .pop_front()
                    .expect("front() was Some just above");
                self.pos += samples;
                self.last_seq = Some(dropped.seq);
                self.mark_played(dropped.seq);
                self.stats.delay_dropped += 1;
                self.last_forced = Some(self.pos);
                return None;
            }
            // A quiet packet gives up what keeps the delay at the target, down to 2.5 ms of it: it is still
            // handed out (and decoded: a decoder that skipped it would continue from a stale state), but
            // only its first part is played.
            let trim = round_down_grain(us_to_samples(delay - target)).min(samples - GRAIN);
            if steerable && trim >= GRAIN {
                let trimmed = self
                    .packets
                    .pop_front()
                    .expect("front() was Some just above");
                self.pos += samples;
                self.last_seq = Some(trimmed.seq);
                self.mark_played(trimmed.seq);
                self.last_samples = trimmed.samples;
                self.last_quiet = true;
                self.quiet_run += 1;
                self.conceal_run = 0;
                self.loud_run = 0;
                self.stats.played += 1;
                self.stats.delay_dropped += 1;
                return Some(Playout::Packet {
                    payload: trimmed.payload,
                    samples: to_u32(samples - trim),
                    audio_level: trimmed.audio_level,
                });
            }
            // Time is added right after a quiet packet, before whatever comes next: that never separates
            // audio from its end (which the quiet packet after it carries).
            let after_quiet = self.last_quiet;
            if delay < target && (after_quiet || (self.force == Force::Grow && force_allowed)) {
                self.stats.delay_inserted += 1;
                if after_quiet {
                    let samples = round_up_grain(us_to_samples(target - delay).max(1))
                        .min(i64::from(TICK_SAMPLES));
                    return Some(Playout::Silence {
                        samples: to_u32(samples),
                    });
                }
                self.last_forced = Some(self.pos);
                return Some(Playout::Plc {
                    samples: TICK_SAMPLES,
                });
            }
            let packet = self
                .packets
                .pop_front()
                .expect("front() was Some just above");
            let mut missing = 0;
            if let Some(last) = self.last_seq {
                let gap = packet.seq.saturating_sub(last).saturating_sub(1);
                // A jump of thousands of sequence numbers is a sender discontinuity, not loss.
                if gap <= MAX_COUNTED_LOSS {
                    self.stats.lost += gap;
                    missing = gap;
                }
            }
            self.note_loss(missing, packet.recovered, packet.has_fec);
            self.pos += i64::from(packet.samples);
            self.last_seq = Some(packet.seq);
            self.mark_played(packet.seq);
            self.last_samples = packet.samples;
            self.last_quiet = quiet;
            self.quiet_run = if quiet { self.quiet_run + 1 } else { 0 };
            self.conceal_run = 0;
            self.loud_run = if steerable {
                0
            } else {
                self.loud_run + i64::from(packet.samples)
            };
            if packet.recovered {
                self.stats.recovered_red += 1;
                self.stats.lost += 1;
            } else {
                self.stats.played += 1;
            }
            return Some(Playout::Packet {
                payload: packet.payload,
                samples: packet.samples,
                audio_level: packet.audio_level,
            });
        }

        // A gap before the next packet: loss if sequence numbers are missing, else DTX.
        let gap = head.ts - self.pos;
        let loss = self
            .last_seq
            .is_some_and(|last| head.seq > last + 1 && head.seq - last - 1 <= MAX_COUNTED_LOSS);
        // The frame right before `head` can come back from its FEC if the whole frame is still missing.
        let fec_frame = i64::from(head.samples);
        let fec_frame = if loss && head.has_fec && gap >= fec_frame {
            fec_frame
        } else {
            0
        };
        if delay - target >= samples_to_us(GRAIN) {
            let skip = round_down_grain(us_to_samples(delay - target)).min(gap - fec_frame);
            if skip > 0 {
                self.pos += skip;
                return None;
            }
        }
        if target - delay >= samples_to_us(GRAIN)
            && (!loss || (self.force == Force::Grow && force_allowed))
        {
            let samples =
                round_up_grain(us_to_samples(target - delay)).min(i64::from(TICK_SAMPLES));
            self.stats.delay_inserted += 1;
            if loss {
                self.last_forced = Some(self.pos);
                self.conceal_run += samples;
                return Some(Playout::Plc {
                    samples: to_u32(samples),
                });
            }
            return Some(Playout::Silence {
                samples: to_u32(samples),
            });
        }
        if !loss {
            let samples = gap.min(i64::from(TICK_SAMPLES));
            self.pos += samples;
            self.loud_run = 0;
            return Some(Playout::Silence {
                samples: to_u32(samples),
            });
        }
        if fec_frame > 0 && gap == fec_frame {
            let payload = head.payload.clone();
            self.pos += gap;
            self.stats.concealed_fec += 1;
            return Some(Playout::Fec {
                payload,
                samples: to_u32(gap),
            });
        }
        let span = (gap - fec_frame).min(i64::from(self.last_samples));
        let span = if span > GRAIN {
            round_down_grain(span)
        } else {
            span
        };
        self.pos += span;
        if span % GRAIN != 0 || self.conceal_run >= us_to_samples(duration_us(self.config.max_plc))
        {
            return Some(Playout::Silence {
                samples: to_u32(span),
            });
        }
        self.conceal_run += span;
        self.stats.concealed_plc += 1;
        Some(Playout::Plc {
            samples: to_u32(span),
        })
    }

    /// Nothing buffered. After a loud packet, hold the playout position and conceal with PLC (a delayed
    /// packet still plays when it comes); after a quiet one or once PLC has run out, render silence and let
    /// the playout position move on with time, keeping the current delay.
    fn conceal_empty(&mut self) -> Playout {
        let max_plc = us_to_samples(duration_us(self.config.max_plc));
        if self.last_quiet || self.conceal_run >= max_plc {
            self.pos += i64::from(TICK_SAMPLES);
            self.loud_run = 0;
            return Playout::Silence {
                samples: TICK_SAMPLES,
            };
        }
        self.conceal_run += i64::from(TICK_SAMPLES);
        self.stats.concealed_plc += 1;
        Playout::Plc {
            samples: TICK_SAMPLES,
        }
    }
}

fn round_down_grain(samples: i64) -> i64 {
    samples.div_euclid(GRAIN) * GRAIN
}

fn round_up_grain(samples: i64) -> i64 {
    (samples + GRAIN - 1).div_euclid(GRAIN) * GRAIN
}

fn to_u32(samples: i64) -> u32 {
    u32::try_from(samples.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Rng;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);
    const TICK: Duration = Duration::from_millis(20);

    /// The base of virtual time; only ever offset by durations.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn packet(
        seq: u64,
        ts: u32,
        samples: u32,
        has_fec: bool,
        audio_level: Option<u8>,
    ) -> JitterPacket {
        JitterPacket {
            seq,
            ts,
            samples,
            has_fec,
            audio_level,
            payload: Arc::from(seq.to_le_bytes().as_slice()),
        }
    }

    fn seq_of(payload: &[u8]) -> u64 {
        u64::from_le_bytes(
            payload
                .try_into()
                .expect("test payloads are 8-byte sequence numbers"),
        )
    }

    /// One frame the sender produces: at sender-clock sample `at` (relative), lasting `samples`.
    #[derive(Clone, Copy, Debug)]
    struct Frame {
        at: i64,
        samples: u32,
        level: Option<u8>,
        has_fec: bool,
    }

    /// `count` back-to-back frames of `samples` each, all at `level`.
    fn continuous(count: usize, samples: u32, level: Option<u8>) -> Vec<Frame> {
        (0..count)
            .map(|i| Frame {
                at: i as i64 * i64::from(samples),
                samples,
                level,
                has_fec: false,
            })
            .collect()
    }

    /// Like [`continuous`], but the last frame is quiet, so the end of the stream is silence, not PLC.
    fn spurt(count: usize, samples: u32, level: Option<u8>) -> Vec<Frame> {
        let mut frames = continuous(count, samples, level);
        if let Some(last) = frames.last_mut() {
            last.level = Some(80);
        }
        frames
    }

    /// Talk spurts of 1–3 s of 20 ms frames (speech-like levels, some quiet frames, the last three quiet)
    /// separated by DTX pauses of 0.4–2 s (the sender sends nothing, timestamps jump), for `seconds`.
    fn talk_spurts(rng: &mut Rng, seconds: f64, fec: bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut at = 0i64;
        let end = (seconds * 48_000.0) as i64;
        while at < end {
            let spurt = 50 + rng.below(100) as usize;
            for i in 0..spurt {
                let level = if i + 3 >= spurt || rng.chance(0.1) {
                    70
                } else {
                    20 + rng.below(25) as u8
                };
                frames.push(Frame {
                    at,
                    samples: 960,
                    level: Some(level),
                    has_fec: fec,
                });
                at += 960;
            }
            at += 960 * (20 + rng.below(80) as i64);
        }
        frames
    }

    /// A packet scheduled to arrive `at` after the start of the simulation.
    #[derive(Clone, Debug)]
    struct Arrival {
        at: Duration,
        packet: JitterPacket,
    }

    /// Sends `frames` from sequence number `seq0` and timestamp `ts0`, skipping those `lost` says (their
    /// sequence numbers are still used). The sender's clock runs `1 + drift` times as fast as real time;
    /// each packet arrives `delay(index)` after it was sent. Sorted by arrival.
    fn send(
        frames: &[Frame],
        seq0: u64,
        ts0: u32,
        drift: f64,
        mut delay: impl FnMut(usize) -> Duration,
        lost: impl Fn(usize) -> bool,
    ) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let sent = Duration::from_secs_f64(frame.at as f64 / 48_000.0 / (1.0 + drift));
            let at = sent + delay(i);
            if lost(i) {
                continue;
            }
            let ts = ts0.wrapping_add(frame.at as u32);
            arrivals.push(Arrival {
                at,
                packet: packet(
                    seq0 + i as u64,
                    ts,
                    frame.samples,
                    frame.has_fec,
                    frame.level,
                ),
            });
        }
        arrivals.sort_by_key(|a| a.at);
        arrivals
    }

    /// For the packets of `frames` (sent from sequence number 0 and timestamp 0), the `levels` frames before
    /// each as RED redundancy, whether those arrived or not: index = carrier's sequence number.
    fn red_for(frames: &[Frame], levels: u64) -> Vec<Vec<JitterPacket>> {
        (0..frames.len() as u64)
            .map(|seq| {
                (1..=levels.min(seq))
                    .map(|k| {
                        let f = frames[(seq - k) as usize];
                        packet(seq - k, f.at as u32, f.samples, f.has_fec, f.level)
                    })
                    .collect()
            })
            .collect()
    }

    fn constant(ms: u64) -> impl FnMut(usize) -> Duration {
        move |_| Duration::from_millis(ms)
    }

    fn none(_: usize) -> bool {
        false
    }

    #[derive(Debug, Default)]
    struct Trace {
        played: Vec<u64>,
        fec: Vec<u64>,
        plc_spans: u64,
        plc_samples: u64,
        silence_samples: u64,
        outcomes: Vec<(u64, PushOutcome)>,
        red_outcomes: Vec<(u64, RedundantOutcome)>,
        max_len: usize,
        /// (tick time, target, current delay) once per tick while playing.
        delays: Vec<(Duration, Duration, Duration)>,
        /// Output kinds in order: 'P'acket, 'F'ec, 'L' (PLC), 'S'ilence.
        kinds: String,
        /// `is_active` after each tick: 'A'ctive or '-'.
        active: String,
    }

    /// Drives a buffer like the mixer does: every 20 ms tick, hand it the packets that arrived by then, then
    /// pop until the tick has 960 samples, carrying any surplus into the next tick.
    struct Harness {
        jb: JitterBuffer,
        base: Instant,
        t: Duration,
        surplus: i64,
        arrivals: Vec<Arrival>,
        next: usize,
        trace: Trace,
        /// RED redundancy carried by each packet (index: sequence number), pushed after it.
        redundant: Vec<Vec<JitterPacket>>,
    }

    impl Harness {
        fn new(config: JitterConfig, arrivals: Vec<Arrival>) -> Self {
            Self {
                jb: JitterBuffer::new(config),
                base: t0(),
                t: Duration::ZERO,
                surplus: 0,
                arrivals,
                next: 0,
                trace: Trace::default(),
                redundant: Vec::new(),
            }
        }

        fn run_until(&mut self, end: Duration) {
            while self.t <= end {
                while let Some(arrival) = self.arrivals.get(self.next).filter(|a| a.at <= self.t) {
                    let seq = arrival.packet.seq;
                    let outcome = self.jb.push(self.base + arrival.at, arrival.packet.clone());
                    self.trace.outcomes.push((seq, outcome));
                    let redundant = self.redundant.get(seq as usize).into_iter().flatten();
                    for r in redundant {
                        let outcome = self.jb.push_redundant(r.clone());
                        self.trace.red_outcomes.push((r.seq, outcome));
                    }
                    self.next += 1;
                }
                self.trace.max_len = self.trace.max_len.max(self.jb.len());
                let mut need = i64::from(TICK_SAMPLES) - self.surplus;
                while need > 0 {
                    let held = i64::from(TICK_SAMPLES) - need;
                    let out = self
                        .jb
                        .pop(self.base + self.t + us_duration(samples_to_us(held)));
                    assert!(out.samples() > 0, "empty span at {:?}", self.t);
                    need -= i64::from(out.samples());
                    match out {
                        Playout::Packet { payload, .. } => {
                            self.trace.played.push(seq_of(&payload));
                            self.trace.kinds.push('P');
                        }
                        Playout::Fec { payload, .. } => {
                            self.trace.fec.push(seq_of(&payload));
                            self.trace.kinds.push('F');
                        }
                        Playout::Plc { samples } => {
                            self.trace.plc_spans += 1;
                            self.trace.plc_samples += u64::from(samples);
                            self.trace.kinds.push('L');
                        }
                        Playout::Silence { samples } => {
                            self.trace.silence_samples += u64::from(samples);
                            self.trace.kinds.push('S');
                        }
                    }
                }
                self.surplus = -need;
                self.trace
                    .active
                    .push(if self.jb.is_active() { 'A' } else { '-' });
                if self.jb.phase == Phase::Playing {
                    self.trace.delays.push((
                        self.t,
                        self.jb.target_delay(),
                        self.jb.current_delay(),
                    ));
                }
                self.t += TICK;
            }
        }

        fn outcome(&self, seq: u64) -> Vec<PushOutcome> {
            self.trace
                .outcomes
                .iter()
                .filter(|(s, _)| *s == seq)
                .map(|(_, o)| *o)
                .collect()
        }
    }

    /// A fixed 40 ms target, so tests about ordering are not disturbed by delay adaptation.
    fn fixed_40ms() -> JitterConfig {
        JitterConfig {
            min_delay: 40 * MS,
            initial_delay: 40 * MS,
            ..JitterConfig::default()
        }
    }

    fn ascending(from: u64, to: u64) -> Vec<u64> {
        (from..to).collect()
    }

    #[test]
    fn in_order_stream_plays_every_packet_once_in_order() {
        let frames = continuous(500, 960, Some(30));
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 1000, 12_345, 0.0, constant(30), none),
        );
        h.run_until(12 * SECOND);
        assert_eq!(h.trace.played, ascending(1000, 1500));
        let kinds = h.trace.kinds.trim_start_matches('S');
        let audio = &kinds[..500];
        assert!(audio.chars().all(|k| k == 'P'), "{audio}");
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.accepted,
                stats.played,
                stats.lost,
                stats.late,
                stats.duplicate
            ),
            (500, 500, 0, 0, 0)
        );
        assert_eq!(stats.target_delay, 40 * MS);
        // Playout started once the first packet had waited the target delay (arrival 30 ms + 40 ms).
        let silent_ticks = h.trace.kinds.len() - h.trace.kinds.trim_start_matches('S').len();
        assert_eq!(
            silent_ticks, 4,
            "ticks 0..=60 ms silent, first packet at 80 ms"
        );
        // After the stream ends: PLC for at most max_plc, then silence, and the buffer is idle.
        assert!(h.trace.plc_samples <= 300 * 48, "{}", h.trace.plc_samples);
        assert!(h.trace.kinds.ends_with("SSS"));
        assert!(!h.jb.is_active());
    }

    #[test]
    fn playout_starts_after_the_target_delay_and_is_active_in_a_talk_spurt() {
        let mut jb = JitterBuffer::new(fixed_40ms());
        let base = t0();
        assert_eq!(jb.pop(base), Playout::Silence { samples: 960 });
        assert!(!jb.is_active());
        assert_eq!(
            jb.push(base + 5 * MS, packet(7, 0, 960, false, Some(20))),
            PushOutcome::Accepted
        );
        assert_eq!(jb.pop(base + 20 * MS), Playout::Silence { samples: 960 });
        assert_eq!(
            jb.push(base + 25 * MS, packet(8, 960, 960, false, Some(20))),
            PushOutcome::Accepted
        );
        assert_eq!(jb.pop(base + 40 * MS), Playout::Silence { samples: 960 });
        assert_eq!(jb.buffered(), 40 * MS);
        let first = jb.pop(base + 60 * MS);
        assert!(
            matches!(
                first,
                Playout::Packet {
                    samples: 960,
                    audio_level: Some(20),
                    ..
                }
            ),
            "{first:?}"
        );
        assert!(jb.is_active());
        assert_eq!(
            jb.current_delay(),
            55 * MS,
            "arrived at 5 ms, rendered at 60 ms"
        );
    }

    #[test]
    fn reordering_within_the_delay_is_repaired() {
        let frames = spurt(400, 960, Some(30));
        // Every 7th packet is held back 30 ms: it arrives after its successor.
        let delay = |i: usize| if i % 7 == 3 { 60 * MS } else { 30 * MS };
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
        h.run_until(10 * SECOND);
        assert_eq!(h.trace.played, ascending(0, 400));
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.lost,
                stats.late,
                stats.concealed_plc,
                stats.concealed_fec
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn duplicates_are_counted_and_dropped() {
        let frames = spurt(200, 960, Some(30));
        let mut arrivals = send(&frames, 0, 0, 0.0, constant(30), none);
        // Every packet again 5 ms later (while buffered), and packet 60 once more long after it played.
        let mut again: Vec<Arrival> = arrivals
            .iter()
            .map(|a| Arrival {
                at: a.at + 5 * MS,
                packet: a.packet.clone(),
            })
            .collect();
        again.push(Arrival {
            at: 2 * SECOND,
            packet: arrivals[60].packet.clone(),
        });
        arrivals.extend(again);
        arrivals.sort_by_key(|a| a.at);
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.run_until(5 * SECOND);
        assert_eq!(h.trace.played, ascending(0, 200));
        assert_eq!(h.jb.stats().duplicate, 201);
        assert_eq!(
            h.outcome(60),
            [
                PushOutcome::Accepted,
                PushOutcome::Duplicate,
                PushOutcome::Duplicate
            ]
        );
        assert_eq!(h.jb.stats().late, 0);
    }

    #[test]
    fn single_loss_is_recovered_from_fec_of_the_next_packet() {
        let mut frames = continuous(100, 960, Some(30));
        frames.iter_mut().for_each(|f| f.has_fec = true);
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 0, 0, 0.0, constant(30), |i| i == 50),
        );
        h.run_until(3 * SECOND);
        let mut expected = ascending(0, 100);
        expected.remove(50);
        assert_eq!(h.trace.played, expected);
        assert_eq!(h.trace.fec, [51]);
        let stats = h.jb.stats();
        assert_eq!((stats.lost, stats.concealed_fec), (1, 1));
        let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
        assert_eq!(audio, format!("{}F{}", "P".repeat(50), "P".repeat(49)));
    }

    #[test]
    fn a_lost_frame_comes_from_red_before_fec() {
        let mut frames = spurt(100, 960, Some(30));
        frames.iter_mut().for_each(|f| f.has_fec = true);
        let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| i == 50);
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.redundant = red_for(&frames, 1);
        h.run_until(3 * SECOND);
        assert_eq!(h.trace.played, ascending(0, 100), "50 plays from 51's RED");
        assert!(h.trace.fec.is_empty());
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.lost,
                stats.recovered_red,
                stats.concealed_fec,
                stats.concealed_plc
            ),
            (1, 1, 0, 0)
        );
        assert_eq!((stats.played, stats.duplicate, stats.late), (99, 0, 0));
        let recovered: Vec<u64> = h
            .trace
            .red_outcomes
            .iter()
            .filter(|(_, o)| *o == RedundantOutcome::Recovered)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(recovered, [50]);
        assert!(h
            .trace
            .red_outcomes
            .iter()
            .all(|(s, o)| *s == 50 || *o == RedundantOutcome::NotMissing));
    }

    /// Speech-like spurts with in-band FEC on a 30 ms path, every 17th packet lost (6 %), played by a
    /// consumer that decides each tick's audio at the tick, like the mixer.
    fn lossy_fec_run(lost: fn(usize) -> bool, fec: bool) -> (Harness, Vec<Frame>) {
        let mut rng = Rng::new(7);
        let frames = talk_spurts(&mut rng, 30.0, fec);
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, 0.0, constant(30), lost),
        );
        h.run_until(32 * SECOND);
        (h, frames)
    }

    fn every_17th(i: usize) -> bool {
        i % 17 == 5
    }

    #[test]
    fn under_loss_the_target_gains_a_packet_so_fec_finds_the_next_packet_in_time() {
        let (clean, _) = lossy_fec_run(none, true);
        let (lossy, frames) = lossy_fec_run(every_17th, true);
        assert_eq!(
            lossy.jb.target_delay(),
            clean.jb.target_delay() + 20 * MS,
            "a lossy stream with FEC waits one packet longer"
        );
        // Once the margin is on (after the first losses) and applied (at the next pause), a lost frame's
        // successor is buffered when the lost frame is due: it comes back from FEC, never from PLC.
        let settled = frames
            .iter()
            .position(|f| f.at >= 5 * 48_000)
            .expect("30 s of frames");
        let lost: Vec<usize> = (settled..frames.len() - 1)
            .filter(|&i| every_17th(i) && !every_17th(i + 1))
            .collect();
        let recovered = lost
            .iter()
            .filter(|&&i| lossy.trace.fec.contains(&(i as u64 + 1)))
            .count();
        assert!(
            lost.len() > 40 && recovered == lost.len(),
            "{recovered} of {} lost frames after 5 s came back from FEC",
            lost.len()
        );
    }

    #[test]
    fn without_redundancy_or_loss_the_target_gains_nothing() {
        let (clean, _) = lossy_fec_run(none, true);
        let (lossy_no_fec, _) = lossy_fec_run(every_17th, false);
        assert_eq!(lossy_no_fec.jb.target_delay(), clean.jb.target_delay());
        assert_eq!(clean.jb.stats().lost, 0);
    }

    #[test]
    fn a_burst_is_recovered_from_red_then_fec_then_plc() {
        // 50, 51 and 52 are lost; 53 carries 52 as RED (distance 1) and 52 carries FEC for 51: 52 comes
        // from RED, 51 from the FEC inside the recovered 52, and 50 (no source left) is concealed with PLC.
        let mut frames = spurt(100, 960, Some(30));
        frames.iter_mut().for_each(|f| f.has_fec = true);
        let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| (50..53).contains(&i));
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.redundant = red_for(&frames, 1);
        h.run_until(3 * SECOND);
        let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
        assert_eq!(audio, format!("{}LFP{}", "P".repeat(50), "P".repeat(47)));
        assert_eq!(h.trace.fec, [52]);
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.lost,
                stats.recovered_red,
                stats.concealed_fec,
                stats.concealed_plc
            ),
            (3, 1, 1, 1)
        );

        // Two levels of redundancy (53 carries 51 and 52): 53 comes after 50's playout time, so PLC holds the
        // playout position for a span, then 50 comes back from the FEC in the recovered 51.
        let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| (50..53).contains(&i));
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.redundant = red_for(&frames, 2);
        h.run_until(3 * SECOND);
        assert_eq!(h.trace.fec, [51]);
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.lost,
                stats.recovered_red,
                stats.concealed_fec,
                stats.concealed_plc
            ),
            (3, 2, 1, 1)
        );
    }

    #[test]
    fn redundancy_that_comes_too_late_is_ignored_without_counting() {
        // 50 is lost and 51 (which carries it) is held up past 50's playout time: 50 is concealed, and its
        // redundant copy is neither a late packet nor a duplicate. 51 plays from 52's redundancy, so 51 itself,
        // when it comes, is a duplicate of audio already played.
        let frames = spurt(100, 960, Some(30));
        let delay = |i: usize| if i == 51 { 130 * MS } else { 30 * MS };
        let arrivals = send(&frames, 0, 0, 0.0, delay, |i| i == 50);
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.redundant = red_for(&frames, 1);
        h.run_until(3 * SECOND);
        assert!(h
            .trace
            .red_outcomes
            .contains(&(50, RedundantOutcome::TooLate)));
        let stats = h.jb.stats();
        assert_eq!((stats.recovered_red, stats.lost), (1, 2));
        assert_eq!((stats.duplicate, stats.late), (1, 0));
    }

    #[test]
    fn redundancy_that_does_not_fit_is_refused() {
        let base = t0();
        let mut jb = JitterBuffer::new(fixed_40ms());
        assert_eq!(
            jb.push_redundant(packet(9, 0, 960, false, None)),
            RedundantOutcome::Refused,
            "nothing to place it in yet"
        );
        assert_eq!(
            jb.push(base, packet(10, 9600, 960, false, None)),
            PushOutcome::Accepted
        );
        assert_eq!(
            jb.push_redundant(packet(9, 8640, 960, false, None)),
            RedundantOutcome::Refused,
            "before the first packet of a stream that has not started"
        );
        assert_eq!(
            jb.push(base + TICK * 2, packet(12, 11_520, 960, false, None)),
            PushOutcome::Accepted
        );
        for bad in [
            packet(11, 10_000, 960, false, None),  // overlaps 10
            packet(11, 10_560, 1920, false, None), // overlaps 12
            packet(13, 10_560, 960, false, None),  // sequence number after 12's
            packet(11, 10_560, 0, false, None),    // no duration
        ] {
            assert_eq!(jb.push_redundant(bad), RedundantOutcome::Refused);
        }
        assert_eq!(
            jb.push_redundant(packet(12, 11_520, 960, false, None)),
            RedundantOutcome::NotMissing
        );
        assert_eq!(
            jb.push_redundant(packet(11, 10_560, 960, false, None)),
            RedundantOutcome::Recovered
        );
        assert_eq!(jb.len(), 3);
        // The packet itself arriving after its copy replaces it, without counting a duplicate.
        assert_eq!(
            jb.push(base + TICK * 3, packet(11, 10_560, 960, false, Some(20))),
            PushOutcome::Accepted
        );
        assert_eq!(jb.len(), 3);
        assert_eq!(jb.stats().duplicate, 0);
    }

    #[test]
    fn single_loss_without_fec_is_concealed_with_plc() {
        let frames = continuous(100, 960, Some(30));
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 0, 0, 0.0, constant(30), |i| i == 50),
        );
        h.run_until(3 * SECOND);
        let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
        assert_eq!(audio, format!("{}L{}", "P".repeat(50), "P".repeat(49)));
        let stats = h.jb.stats();
        assert_eq!((stats.lost, stats.concealed_fec, stats.played), (1, 0, 99));
        assert!(h.trace.fec.is_empty());
    }

    #[test]
    fn fec_comes_from_the_packet_after_the_gap() {
        // Packet 50 is lost and 51 is held up past its playout time while 52 is on time: 50 has no FEC
        // source (51 is not there) and is concealed with PLC; 51 is recovered from 52's FEC and then
        // arrives late.
        let mut frames = spurt(100, 960, Some(30));
        frames.iter_mut().for_each(|f| f.has_fec = true);
        let delay = |i: usize| if i == 51 { 130 * MS } else { 30 * MS };
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, |i| i == 50));
        h.run_until(3 * SECOND);
        assert_eq!(h.trace.fec, [52]);
        // (Skipping part of the gap moves the mixer's deadlines; a quiet packet may get silence inserted.)
        let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').replace('S', "");
        assert_eq!(audio, format!("{}LF{}", "P".repeat(50), "P".repeat(48)));
        assert_eq!(h.outcome(51), [PushOutcome::Late]);
        let stats = h.jb.stats();
        assert_eq!(
            (
                stats.lost,
                stats.late,
                stats.concealed_plc,
                stats.concealed_fec
            ),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn a_delayed_packet_after_a_loud_one_is_waited_for_with_plc() {
        // The network stalls for 100 ms, then packets 50..55 arrive together: the buffer runs dry, PLC
        // holds the playout position, then 50.. play (nothing lost) and the extra delay is trimmed again.
        let frames = spurt(300, 960, Some(30));
        let delay = |i: usize| {
            if (50..55).contains(&i) {
                Duration::from_millis(130 - 20 * (i as u64 - 50))
            } else {
                30 * MS
            }
        };
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
        h.run_until(7 * SECOND);
        assert_eq!(
            h.trace.played.len() as u64 + h.jb.stats().delay_dropped,
            300
        );
        assert!(h.trace.played.contains(&50));
        let stats = h.jb.stats();
        assert_eq!((stats.lost, stats.late), (0, 0));
        assert!(
            stats.concealed_plc >= 3 && stats.delay_dropped >= 3,
            "{stats:?}"
        );
        let (_, target, current) = *h
            .trace
            .delays
            .iter()
            .rev()
            .find(|(t, ..)| *t < 6 * SECOND)
            .expect("playing");
        assert!(current <= target + 25 * MS, "{current:?} vs {target:?}");
    }

    #[test]
    fn a_late_packet_is_counted_and_dropped() {
        let frames = continuous(100, 960, Some(30));
        let delay = |i: usize| if i == 40 { 250 * MS } else { 30 * MS };
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
        h.run_until(3 * SECOND);
        assert_eq!(h.outcome(40), [PushOutcome::Late]);
        let stats = h.jb.stats();
        assert_eq!((stats.late, stats.lost), (1, 1));
        assert!(!h.trace.played.contains(&40));
        assert_eq!(h.trace.played.len(), 99);
    }

    #[test]
    fn burst_loss_conceals_with_plc_then_silence_and_resumes() {
        let frames = spurt(200, 960, Some(30));
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 0, 0, 0.0, constant(30), |i| (60..110).contains(&i)),
        );
        h.run_until(6 * SECOND);
        let mut expected = ascending(0, 60);
        expected.extend(110..200);
        assert_eq!(h.trace.played, expected);
        let stats = h.jb.stats();
        assert_eq!(stats.lost, 50);
        // PLC for at most max_plc (300 ms) after the last packet, then silence until packets come back.
        assert!(
            (14_400..=15_360).contains(&h.trace.plc_samples),
            "{}",
            h.trace.plc_samples
        );
        let gap = h
            .trace
            .kinds
            .split("P")
            .find(|run| run.len() > 5)
            .expect("the burst shows as a run of non-packets");
        assert!(
            gap.starts_with("LLLLLLLLLLLLLLL") && gap.ends_with("SSSS"),
            "{gap}"
        );
        assert!(!gap.contains('F'));
        // Playout re-anchored at the target instead of keeping the burst's worth of delay.
        let (_, target, current) = *h.trace.delays.last().expect("playing");
        assert!(current <= target + 25 * MS, "{current:?} vs {target:?}");
    }

    #[test]
    fn dtx_gap_is_silence_not_loss_and_playout_resumes() {
        let mut frames = continuous(50, 960, Some(30));
        frames[47..].iter_mut().for_each(|f| f.level = Some(80));
        let resume = 50 * 960 + 48_000; // one second of DTX
        frames.extend((0..50).map(|i| Frame {
            at: resume + i * 960,
            samples: 960,
            level: Some(30),
            has_fec: true,
        }));
        frames.last_mut().expect("100 frames").level = Some(80);
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
        h.run_until(4 * SECOND);
        // Every loud packet plays; the quiet ones before the pause may be rendered as trimmed silence.
        let loud: Vec<u64> = (0..47).chain(50..99).collect();
        let played: Vec<u64> = h
            .trace
            .played
            .iter()
            .copied()
            .filter(|s| loud.contains(s))
            .collect();
        assert_eq!(played, loud);
        let stats = h.jb.stats();
        assert_eq!(stats.played, 100);
        assert_eq!(
            (stats.lost, stats.concealed_plc, stats.concealed_fec),
            (0, 0, 0)
        );
        // The pause is the longest run of silence after playout started (trimmed quiet packets before it
        // show as short runs).
        let gap_len = h
            .trace
            .kinds
            .trim_start_matches('S')
            .split('P')
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(
            (48..=52).contains(&gap_len),
            "about one second of silence ticks, got {gap_len}"
        );
        let (_, target, current) = *h.trace.delays.last().expect("playing");
        assert!(
            current >= target && current <= target + 25 * MS,
            "{current:?} vs {target:?}"
        );
        // Active in both talk spurts, not before, in the pause, or after.
        let spurts: Vec<&str> = h
            .trace
            .active
            .split('-')
            .filter(|run| !run.is_empty())
            .collect();
        assert_eq!(spurts.len(), 2, "{}", h.trace.active);
        assert!(
            spurts.iter().all(|run| (49..=51).contains(&run.len())),
            "{}",
            h.trace.active
        );
        assert!(h.trace.active.starts_with("----") && h.trace.active.ends_with("----"));
    }

    #[test]
    fn a_long_pause_from_a_slow_sender_does_not_make_the_next_spurt_late() {
        // The sender's clock runs 0.5 % slow; during a 20 s pause our playout position runs 100 ms ahead of
        // its timestamps. The next talk spurt must re-anchor instead of arriving "late".
        for drift in [-0.005, 0.005] {
            let mut frames = spurt(100, 960, Some(30));
            let resume = 100 * 960 + 20 * 48_000;
            frames.extend((0..100).map(|i| Frame {
                at: resume + i * 960,
                samples: 960,
                level: Some(30),
                has_fec: false,
            }));
            frames.last_mut().expect("200 frames").level = Some(80);
            let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, drift, constant(30), none));
            h.run_until(26 * SECOND);
            assert_eq!(h.trace.played, ascending(0, 200), "drift {drift}");
            let stats = h.jb.stats();
            assert_eq!(
                (stats.lost, stats.late, stats.concealed_plc),
                (0, 0, 0),
                "drift {drift}"
            );
            let (_, target, current) = *h.trace.delays.last().expect("playing");
            assert!(
                current >= target && current <= target + 25 * MS,
                "{current:?} vs {target:?}"
            );
        }
    }

    #[test]
    fn dtx_without_audio_levels_fades_from_plc_to_silence_without_counting_loss() {
        let mut frames = continuous(50, 960, None);
        frames.extend((0..50).map(|i| Frame {
            at: 98_400 + i * 960,
            samples: 960,
            level: None,
            has_fec: false,
        }));
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
        h.run_until(4 * SECOND);
        assert_eq!(h.trace.played, ascending(0, 100));
        assert_eq!(h.jb.stats().lost, 0);
        // One PLC phase in the pause, one after the end.
        assert!(h.trace.plc_samples <= 2 * 14_400, "{}", h.trace.plc_samples);
    }

    /// Fraction of the loud frames (by sequence number in `range`) that were played (quiet ones may be
    /// trimmed to silence).
    fn loud_played_fraction(trace: &Trace, frames: &[Frame], range: std::ops::Range<u64>) -> f64 {
        let loud = |s: &u64| {
            range.contains(s)
                && frames
                    .get(*s as usize)
                    .is_some_and(|f| f.level.is_none_or(|l| l < 60))
        };
        let played = trace.played.iter().filter(|s| loud(s)).count();
        let sent = range.clone().filter(loud).count();
        played as f64 / sent.max(1) as f64
    }

    #[test]
    fn target_rises_to_cover_jitter_and_falls_when_the_network_calms() {
        let mut rng = Rng::new(7);
        let mut frames = continuous(3000, 960, Some(30)); // 60 s
        for f in frames.iter_mut() {
            if rng.chance(0.1) {
                f.level = Some(70);
            }
        }
        let mut jitter = Rng::new(8);
        // ±30 ms for the first 20 s, then ±1 ms.
        let delay = |i: usize| {
            let spread = if i < 1000 { 30.0 } else { 1.0 };
            Duration::from_secs_f64((50.0 + jitter.range_f64(-spread, spread)) / 1000.0)
        };
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, 0.0, delay, none),
        );
        h.run_until(20 * SECOND);
        let target = h.jb.target_delay();
        assert!(target >= 55 * MS && target <= 90 * MS, "{target:?}");
        let on_time = loud_played_fraction(&h.trace, &frames, 150..950);
        assert!(on_time >= 0.95, "{on_time}");
        h.run_until(62 * SECOND);
        let target = h.jb.target_delay();
        assert!(target <= 25 * MS, "{target:?}");
        let (_, _, current) = *h
            .trace
            .delays
            .iter()
            .rev()
            .find(|(t, ..)| *t <= 60 * SECOND)
            .expect("playing");
        assert!(current <= 50 * MS, "{current:?}");
        assert!(loud_played_fraction(&h.trace, &frames, 1000..2990) >= 0.97);
        assert!(h.trace.max_len <= 10, "{}", h.trace.max_len);
    }

    fn drift_run(drift: f64, dtx: bool) -> (Harness, u64) {
        let mut rng = Rng::new(11);
        let frames = if dtx {
            talk_spurts(&mut rng, 300.0, true)
        } else {
            let mut frames = spurt(15_000, 960, Some(30));
            frames
                .iter_mut()
                .for_each(|f| f.level = Some(if rng.chance(0.05) { 70 } else { 25 }));
            frames.last_mut().expect("15000 frames").level = Some(80);
            frames
        };
        let sent = frames.len() as u64;
        let mut jitter = Rng::new(12);
        let delay = move |_| Duration::from_secs_f64((40.0 + jitter.range_f64(0.0, 20.0)) / 1000.0);
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, drift, delay, none),
        );
        h.run_until(Duration::from_secs(305));
        (h, sent)
    }

    fn assert_drift_absorbed(h: &Harness, sent: u64) {
        let stats = h.jb.stats();
        let (max_current, min_current) = h.trace.delays[500..]
            .iter()
            .fold((Duration::ZERO, SECOND), |(hi, lo), (.., c)| {
                (hi.max(*c), lo.min(*c))
            });
        assert!(
            max_current <= 130 * MS,
            "delay grew to {max_current:?}: {stats:?}"
        );
        assert!(
            min_current >= 5 * MS,
            "delay fell to {min_current:?}: {stats:?}"
        );
        assert!(h.trace.max_len <= 12, "{}", h.trace.max_len);
        let played = stats.played as f64 / sent as f64;
        assert!(played >= 0.97, "{played}: {stats:?}");
        assert!(
            stats.concealed_plc as f64 <= 0.01 * sent as f64,
            "{stats:?}"
        );
        assert_eq!(
            stats.late + stats.too_far_ahead + stats.resyncs,
            stats.late,
            "{stats:?}"
        );
    }

    #[test]
    fn fast_sender_clock_with_dtx_is_absorbed() {
        let (h, sent) = drift_run(0.005, true);
        assert_drift_absorbed(&h, sent);
    }

    #[test]
    fn slow_sender_clock_with_dtx_is_absorbed() {
        let (h, sent) = drift_run(-0.005, true);
        assert_drift_absorbed(&h, sent);
    }

    #[test]
    fn fast_sender_clock_in_continuous_speech_is_absorbed() {
        let (h, sent) = drift_run(0.005, false);
        assert_drift_absorbed(&h, sent);
        assert!(h.jb.stats().delay_dropped >= 50, "{:?}", h.jb.stats());
    }

    #[test]
    fn slow_sender_clock_in_continuous_speech_is_absorbed() {
        let (h, sent) = drift_run(-0.005, false);
        assert_drift_absorbed(&h, sent);
        // Delay is added as silence right after the rare quiet packets, or by concealment while a packet is
        // waited for (within the 1 % of PLC `assert_drift_absorbed` allows).
        let stats = h.jb.stats();
        assert!(
            stats.delay_inserted + stats.concealed_plc >= 50,
            "{stats:?}"
        );
    }

    #[test]
    fn timestamps_wrap_around() {
        let frames = continuous(300, 960, Some(30));
        let ts0 = u32::MAX - 960 * 100 + 1;
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 5, ts0, 0.0, constant(30), |i| i == 120),
        );
        h.run_until(8 * SECOND);
        let mut expected = ascending(5, 305);
        expected.remove(120);
        assert_eq!(h.trace.played, expected);
        assert_eq!(h.jb.stats().lost, 1);
        assert_eq!(h.jb.stats().late + h.jb.stats().too_far_ahead, 0);
    }

    #[test]
    fn ten_millisecond_packets() {
        let mut frames = continuous(600, 480, Some(30));
        frames.iter_mut().for_each(|f| f.has_fec = true);
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 0, 0, 0.0, constant(30), |i| i == 300),
        );
        h.run_until(7 * SECOND);
        let mut expected = ascending(0, 600);
        expected.remove(300);
        assert_eq!(h.trace.played, expected);
        assert_eq!(h.trace.fec, [301]);
        assert_eq!(h.jb.stats().lost, 1);
    }

    #[test]
    fn forty_millisecond_packets() {
        let frames = continuous(150, 1920, Some(30));
        let mut h = Harness::new(
            fixed_40ms(),
            send(&frames, 0, 0, 0.0, constant(30), |i| i == 70),
        );
        h.run_until(8 * SECOND);
        let mut expected = ascending(0, 150);
        expected.remove(70);
        assert_eq!(h.trace.played, expected);
        let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
        assert_eq!(audio, format!("{}L{}", "P".repeat(70), "P".repeat(79)));
        assert_eq!(h.jb.stats().lost, 1);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_far_future_packets() {
        let frames = continuous(500, 960, Some(30));
        let mut arrivals = send(&frames, 0, 0, 0.0, constant(30), none);
        let mut rng = Rng::new(99);
        for i in 0..20_000u64 {
            let at = Duration::from_micros(500_000 + rng.below(9_500_000));
            let ts = (480_000 + rng.below(48_000 * 1000)) as u32;
            arrivals.push(Arrival {
                at,
                packet: packet(1_000_000 + i, ts, 960, false, Some(10)),
            });
        }
        arrivals.sort_by_key(|a| a.at);
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.run_until(11 * SECOND);
        let stats = h.jb.stats();
        assert!(h.trace.max_len <= 50);
        assert_eq!(stats.resyncs, 0);
        assert!(stats.too_far_ahead >= 19_000, "{stats:?}");
        assert_eq!(h.trace.played.iter().filter(|s| **s < 500).count(), 500);
        assert!(h.jb.window.len() <= WINDOW_CAPACITY);
    }

    #[test]
    fn a_full_buffer_drops_the_furthest_packet() {
        let config = JitterConfig {
            max_packets: 4,
            ..fixed_40ms()
        };
        let mut jb = JitterBuffer::new(config);
        let base = t0();
        for (seq, ts) in [(0, 0), (1, 960), (3, 2880), (4, 3840)] {
            assert_eq!(
                jb.push(base, packet(seq, ts, 960, false, None)),
                PushOutcome::Accepted
            );
        }
        assert_eq!(
            jb.push(base, packet(5, 4800, 960, false, None)),
            PushOutcome::Overflow
        );
        assert_eq!(
            jb.push(base, packet(2, 1920, 960, false, None)),
            PushOutcome::Accepted
        );
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.stats().overflow, 2);
        assert_eq!(jb.buffered(), 80 * MS);
    }

    #[test]
    fn sender_restart_with_a_new_timestamp_base_resyncs() {
        let frames = spurt(100, 960, Some(30));
        let mut arrivals = send(&frames, 0, 1_000, 0.0, constant(30), none);
        let restarted = send(&frames, 50_000, 3_000_000_000, 0.0, constant(30), none);
        arrivals.extend(restarted.into_iter().map(|a| Arrival {
            at: a.at + 2500 * MS,
            ..a
        }));
        let mut h = Harness::new(fixed_40ms(), arrivals);
        h.run_until(7 * SECOND);
        let stats = h.jb.stats();
        assert_eq!(stats.resyncs, 1, "{stats:?}");
        assert_eq!(stats.too_far_ahead + stats.late, 2, "{stats:?}");
        let played_after: Vec<u64> = h
            .trace
            .played
            .iter()
            .copied()
            .filter(|s| *s >= 50_000)
            .collect();
        assert_eq!(played_after, ascending(50_002, 50_100));
    }

    #[test]
    fn reset_forgets_the_stream_but_keeps_counters_and_target() {
        let frames = continuous(100, 960, Some(30));
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
        h.run_until(SECOND);
        let before = h.jb.stats();
        h.jb.reset();
        assert!(h.jb.is_empty());
        assert!(!h.jb.is_active());
        assert_eq!(h.jb.current_delay(), Duration::ZERO);
        let stats = h.jb.stats();
        assert_eq!(
            (stats.resets, stats.played, stats.target_delay),
            (1, before.played, before.target_delay)
        );
        // The rest of the stream starts playing again after the target delay.
        h.run_until(3 * SECOND);
        assert!(h.trace.played.ends_with(&[99]));
    }

    #[test]
    fn invalid_durations_are_rejected() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(
            jb.push(t0(), packet(0, 0, 0, false, None)),
            PushOutcome::Invalid
        );
        assert_eq!(
            jb.push(t0(), packet(0, 0, 6000, false, None)),
            PushOutcome::Invalid
        );
        assert_eq!(jb.stats().invalid, 2);
        assert!(jb.is_empty());
    }
}
