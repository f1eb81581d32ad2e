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
//! per 20 ms of audio, every bucket is multiplied by [`JitterConfig::forget_factor`] (0.995) and the
//! packet's bucket gains the remainder, so the histogram always sums to one and old jitter fades over about
//! ten seconds. (It was 0.983, fading within three: the 95th percentile of so short a memory moved by a
//! bucket or two every few seconds under steady jitter, and each move was steered: over real UDP at 30 ± 20
//! ms per leg a forwarded listener inserted 11 to 18 and dropped 0 to 20 spans in 11 s of speech, and its
//! PESQ-WB ranged 1.75 to 2.67 over the same packets; Chorus issue 15.) The *target delay* is the
//! [`JitterConfig::percentile`] (95th) of that histogram plus [`JitterConfig::headroom`] (at most the
//! percentile itself, so a stream with little jitter gets little headroom), clamped to
//! `[min_delay, max_delay]`. The histogram starts with all its mass
//! at [`JitterConfig::initial_delay`], so a new stream starts playing there, but that seed weighs as one
//! measurement: the n-th delay measured keeps only n / (n + 1) of the mass (until the forgetting factor
//! keeps less, from the 200th), so the histogram is the plain distribution of what was measured, the seed
//! included, and the target reaches the measured one within about 20 packets (0.4 s). (The seed used to fade
//! at the forgetting factor's pace: the target stayed at `initial_delay` for 3.5 s whatever was measured,
//! then fell to the floor in one step, and at a 10 ms floor that step, 50 ms, was beyond `force_margin`:
//! loud packets of the first long sentence were dropped, Chorus issue 15.)
//!
//! **Delay peaks** ([`peaks`]). A calm link with an occasional stall (a Wi-Fi retry burst, a queue behind
//! cross traffic) has a percentile of a few milliseconds, while every few seconds a packet or two come
//! 15–60 ms late: too rare for the 95th percentile, too frequent to conceal each time. A relative delay
//! above what the percentile asks for (bucket edge plus headroom, at least the floor) is a *peak*; delays
//! within 200 ms of it belong to it. The target covers the highest peak of the last 20 s (arrival time),
//! then falls back. Growth toward a peak's height is never forced inside speech (see "Steering"): after a
//! stall the delay has grown by the stall already, and a lone late packet does not warrant PLC mid-sentence.
//! In virtual-time speech on a calm leg with 30 ms stalls every ~2 s, a mixed room scored PESQ-WB 3.23 at
//! a 10 ms floor and 3.53 at 20 ms without peaks, 4.17 at 10 ms with them (Chorus issue 15), which let the
//! mixer's default floor come down from 20 to 10 ms. One peak is enough (NetEQ waits for two): waiting
//! for a second cost a second concealment early in every such call (3.81 instead of 4.17).
//!
//! The *current delay* ([`JitterBuffer::current_delay`]) is how long a packet on the fastest path waits
//! between arriving and being needed: `now − playout position / 48 kHz − minimum transit`, where `now` is
//! when the span asked for starts to play: the consumer's tick passed to [`JitterBuffer::pop`] plus the
//! audio it already holds for that tick (its surplus from the last tick and the spans popped before). That
//! is the delay a listener hears.
//!
//! **The margin.** The consumer decodes a whole tick at once, so a packet must be buffered at the tick
//! that needs it, however late in that tick it starts to play: what protects it from jitter is the
//! *margin*, the same measure as of the tick itself (the current delay less what the consumer holds). A
//! packet is on time when its relative delay is at most the margin, so keeping the margin at the target
//! keeps about 95 % of packets on time. (Steering the current delay onto the target instead left the
//! margin up to a tick short: on a loaded machine, packets 10 ms late against a 20 ms target were
//! concealed.) A stream whose packets arrive a fixed phase before the consumer's ticks has a margin of that
//! phase plus whole ticks (the mixer's grid is shared by all its inputs): the delay heard is the first such
//! margin at or above the target, plus what the consumer holds on top of it, which quiet packets give up
//! (see below).
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
//!   playout position): too much margin is removed by jumping the playout position forward (up to the whole
//!   gap, exactly to the target); too little is added by rendering silence to the end of the tick without
//!   advancing, which moves the next packet to the next tick (in a run of lost packets, only a forced insert
//!   adds time, by what the delay lacks). This is
//!   free, and it is how each talk spurt after a DTX pause is re-anchored at the target delay, which also
//!   absorbs sender clock drift.
//! - **On a quiet packet** (RFC 6464 level of −[`JitterConfig::quiet_level`] dBov or quieter, −60 dBov
//!   by default): a packet is shortened (played only in part, down to 2.5 ms, but still decoded, so a
//!   decoder's state stays continuous) so that the margin lands on the target, or (without cost to the
//!   margin) so that its successor starts its tick; silence is inserted when the margin is more than a
//!   bucket (5 ms) below target (a whole tick of it: when any shortfall at all added one, it was trimmed
//!   again in the next pause, and the delay changed in almost every pause).
//!   Quiet packets give up time *inside a pause* (after 80 ms of quiet packets); inside a
//!   sentence (a stop consonant, a breath: a shorter quiet run) only when the delay is 10 ms too long, so
//!   the wander of the delay estimate under jitter is not heard as time shifts mid-sentence; never the first
//!   quiet packet after audio (the sender's codec delay carries the end of the audio into it) nor one whose
//!   successor is buffered and loud (the last before audio). Once the delay is below a packet plus what
//!   the consumer holds, a quiet packet's successor has not arrived yet when it plays (a stream without DTX
//!   pauses, as browsers send by default, would then keep up to a tick of extra delay for good): inside a
//!   pause such a packet is still shortened, but only by the part of it in the last tick it reaches, so
//!   its successor stays due at the tick it was due at anyway (its margin unchanged). Silence is inserted right after
//!   any quiet packet (too little delay makes packets late, which costs more; and after the quiet packet
//!   that carries the end of some audio, nothing is split).
//! - **Forced**: when the margin is more than [`JitterConfig::force_margin`] (40 ms) above target, or the
//!   delay as far below the target without its peaks' part (see "Delay peaks"), and no quiet
//!   moment comes (for shrinking: none for 4 s of audio, since speech pauses far more often and a pause
//!   shrinks the delay for free), loud packets are dropped (or PLC is inserted) until the delay is back in the band, at most
//!   one such step per 100 ms of audio. Packets are only dropped when their successor is already buffered,
//!   and never the first packet after concealment (the one that was waited for). Until the stream's first
//!   quiet moment (a gap, or a quiet packet that steers), the delay is not forced below the target playout
//!   started at: the first talk spurt starts at the start-up target and keeps it while the target falls to
//!   the measured one; its first pause gives that up for free. Only what a stall adds on top is forced out.
//!   A stream with no quiet moment in its first 8 s of audio (music, a source that never pauses) is treated
//!   as settled then, so it does not keep the start-up delay for good.
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
//! frame right before a packet that carries FEC (`has_fec`) is recovered with [`Playout::Fec`] from that
//! packet (one whose mode could carry it but does not has the frame concealed with PLC, steered alike). Lost
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

mod arrival;
mod estimate;
mod peaks;
mod playout;

/// Samples in one mixer tick (one frame, 20 ms); the size of silence and expansion spans.
pub const TICK_SAMPLES: u32 = crate::audio::FRAME_SAMPLES as u32;

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

/// Audio played without a quiet moment after which a stream's start-up delay may be forced down like any
/// excess (8 s): speech has paused long before, so this is a source that never pauses (music, hold music
/// through a source participant), which would otherwise keep the start-up delay for good.
const SETTLE_PATIENCE: i64 = 2 * FORCE_SHRINK_PATIENCE;

/// Quiet packets a talker must have played in a row before the delay is steered on quiet packets (80 ms): a
/// stop consonant or a breath inside a sentence is shorter, and a delay change there is heard (and, in a mixer
/// still decoding the talker, skips its decoder). Pauses between sentences are longer, or DTX gaps.
const STEER_AFTER_QUIET_PACKETS: u32 = 4;

/// Inside a sentence (a quiet run shorter than [`STEER_AFTER_QUIET_PACKETS`]) the delay is shrunk only when it
/// is this far above target (10 ms): the small wander of the delay estimate under jitter is left alone, a fast
/// sender clock's drift is still absorbed.
const MID_SENTENCE_STEER_US: i64 = 10_000;

/// After a quiet packet, time is added only when the margin is more than this short of the target (one
/// histogram bucket, 5 ms). The margin follows the minimum transit, which wanders by a few ms under jitter,
/// and an addition is a whole tick: adding for any shortfall put the delay up to a tick above the target,
/// trimmed off again in the next pause, so the listener's delay changed in almost every pause. The target
/// has the headroom above the measured percentile that this slack takes from.
const ADD_AFTER_QUIET_SLACK_US: i64 = BUCKET_US;

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
    /// Forgetting factor of the delay histogram per 20 ms of audio (0.995: old jitter fades over ~10 s).
    pub forget_factor: f64,
    /// Added to the measured percentile, but never more than the percentile itself (the upper edge of its
    /// 5 ms bucket): delays that spread over 5 ms get 5 ms of headroom, over 20 ms or more the full 20.
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
            forget_factor: 0.995,
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
    /// Its mode can carry in-band FEC (SILK or hybrid, from the TOC): a lost frame right before it is
    /// decoded from it, and the stream gets the loss margin (see "Loss margin").
    pub fec_mode: bool,
    /// It does carry in-band FEC (LBRR) for the frame before it ([`opus_packet_has_fec`]): an encoder
    /// codes it only when told to expect loss, and only into frames it judges speech. A lost frame before
    /// a packet of a FEC mode that carries none is concealed with PLC in the same place (libopus decodes
    /// such a packet with FEC into exactly its PLC), and counted as PLC.
    ///
    /// [`opus_packet_has_fec`]: crate::mixer::opus_packet_has_fec
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
    /// Delay peaks seen: stalls the percentile does not cover, each raising the target to cover it for
    /// 20 s (see "Delay peaks").
    pub delay_peaks: u64,
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
    fec_mode: bool,
    has_fec: bool,
    audio_level: Option<u8>,
    payload: Arc<[u8]>,
    /// Recovered from RED redundancy rather than received.
    recovered: bool,
}

impl Buffered {
    /// `packet` at unwrapped timestamp `ts`.
    fn new(ts: i64, packet: JitterPacket, recovered: bool) -> Self {
        Self {
            ts,
            seq: packet.seq,
            samples: packet.samples,
            fec_mode: packet.fec_mode,
            has_fec: packet.has_fec,
            audio_level: packet.audio_level,
            payload: packet.payload,
            recovered,
        }
    }
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
    /// A moment to shrink the delay for free (see `loud_run`) has come since the stream started. Until then
    /// the delay playout started at (`start_target_us`) is not forced down: what the first talk spurt keeps
    /// above a target that fell while it played is given up in the talker's first pause.
    settled: bool,
    /// The target when playout last started (µs).
    start_target_us: i64,
    force: Force,
    /// Playout position of the last forced correction.
    last_forced: Option<i64>,
    /// Monotonic deque for the sliding minimum transit: (arrival µs, transit µs), transit increasing.
    window: VecDeque<(i64, i64)>,
    histogram: Vec<f64>,
    /// Delays measured into the histogram (saturating): until the forgetting factor takes over, each
    /// measurement weighs as much as the seed and every one before it (see [`JitterBuffer::measure`]).
    measured: u32,
    target_us: i64,
    /// What the histogram alone asks for: its percentile's bucket edge plus headroom, at least the floor.
    base_target_us: i64,
    /// Delay peaks the percentile does not cover (see [`peaks`]).
    peaks: peaks::Peaks,
    /// The target without the peaks' part: what concealment inside speech may grow the delay to.
    grow_target_us: i64,
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
            settled: false,
            start_target_us: 0,
            force: Force::None,
            last_forced: None,
            window: VecDeque::with_capacity(WINDOW_CAPACITY),
            histogram: vec![0.0; buckets],
            measured: 0,
            target_us: 0,
            base_target_us: 0,
            peaks: peaks::Peaks::default(),
            grow_target_us: 0,
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

    /// The next span to render. `tick` is when the consumer decodes it (its tick: the span's packet must be
    /// buffered by then); `held` is the audio (48 kHz samples) it already holds for that tick before this
    /// span (its surplus and the spans popped before), so the span starts to play at `tick + held`.
    /// Measuring the delay at the span's own start, not at the tick, keeps a shortened packet and the spans
    /// after it from looking like too little delay (which inserted silence right after every trim).
    /// `held` also bounds how much of a quiet packet may be cut while its successor has not arrived (see
    /// the module docs).
    pub fn pop(&mut self, tick: Instant, held: u32) -> Playout {
        let Some(base) = self.base else {
            // Nothing ever arrived: there is no timeline yet.
            return Playout::Silence {
                samples: TICK_SAMPLES,
            };
        };
        let held = i64::from(held);
        let now_us = duration_us(tick.saturating_duration_since(base)) + samples_to_us(held);
        let out = self.next_span(now_us, held);
        if !matches!(out, Playout::Silence { .. }) {
            self.audio_end = self.pos;
        }
        self.last_silent = matches!(out, Playout::Silence { .. });
        out
    }

    /// The margin the buffer aims for (the delay as of the consumer's tick; see the module docs).
    pub fn target_delay(&self) -> Duration {
        us_duration(self.target_us)
    }

    /// The delay the buffer currently applies, as of the last span handed out: how long a packet on the
    /// fastest recent path waits between arriving and being asked for by [`pop`](Self::pop) (see the module
    /// docs). Less what the consumer held at that span, this is the margin steered onto
    /// [`target_delay`](Self::target_delay). Zero before playout starts.
    pub fn current_delay(&self) -> Duration {
        match self.phase {
            Phase::Playing => us_duration(self.last_delay_us),
            _ => Duration::ZERO,
        }
    }

    /// When the earliest buffered packet will have waited the target on the fastest recent path: the tick at
    /// which a buffering stream starts to play it (a stream in a gap steers onto the same point). `None`
    /// with nothing buffered.
    pub fn due(&self) -> Option<Instant> {
        let base = self.base?;
        let first = self.packets.front()?;
        Some(base + us_duration(samples_to_us(first.ts) + self.min_transit_us() + self.target_us))
    }

    /// How much sooner than `tick` the consumer could decode the packet at the playout position and still
    /// give it the target's margin on the fastest recent path: its margin as of `tick` less the target,
    /// zero when it is short; `None` unless playing. The mixer moves its tick grid by the least of its
    /// talkers' (`Mixer::rephase`).
    pub fn spare_margin(&self, tick: Instant) -> Option<Duration> {
        let base = self.base?;
        if self.phase != Phase::Playing {
            return None;
        }
        let now_us = duration_us(tick.saturating_duration_since(base));
        Some(us_duration(self.delay_us(now_us) - self.target_us))
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

    /// Delay peaks seen so far (as in [`JitterStats::delay_peaks`], without building the stats).
    pub fn delay_peaks(&self) -> u64 {
        self.stats.delay_peaks
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
}

#[cfg(test)]
mod tests;
