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
//!    between encoders at every pause. Each output passes a soft [`Limiter`](limiter::Limiter) before the
//!    encoder. The switches are not heard: a new personal encoder starts as an exact copy of the shared one (see
//!    [`crate::mixer::encoder`]), and the move back waits for a quiet mix ([`QUIET_SWITCH_LEVEL`], at most
//!    [`PERSONAL_MAX_HANGOVER_TICKS`]).
//! 4. A listener whose mix just became empty (nobody else talks) is sent one last frame from the encoder
//!    it was hearing (its lookahead: the end of the last syllable), then the room's pre-encoded silence
//!    frame for [`PAUSE_SILENCE_TICKS`], the last of them a DTX packet (the TOC byte alone, as a WebRTC sender
//!    marks the start of DTX), then nothing (with [`MixSettings::dtx`] off, the silence frame always). An
//!    empty or all-silent room decodes and encodes nothing, and with DTX stops ticking altogether once every
//!    jitter buffer is idle and every pause is sent (the next packet re-arms it).
//!
//! A worker that falls behind runs the missed ticks when it gets to them (up to [`MAX_CATCH_UP_TICKS`]), each
//! as of its own grid point, so listeners get the audio late but with no timestamp hole; beyond that the
//! mixer resumes on the grid and counts the ticks it gave up (`MixStats::ticks_skipped`).
//!
//! Each listener's stream has its own SSRC (its slot 0 stream), sequence numbers (one per packet sent) and
//! timestamps (the room's tick grid plus a per-listener random offset), so it stays continuous when the
//! listener moves between the shared and a personal mix. Packets list the talkers as CSRCs with their levels.

pub mod duck;
pub mod encoder;
pub mod jitter;
pub mod limiter;

mod input;
mod output;
mod spatial;
mod tick;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::{duration_samples, FRAME_DURATION, FRAME_SAMPLES};
use crate::ids::{ParticipantId, Ssrc};
use crate::mixer::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::speakers::csrc_levels::{Contributors, MAX_CSRCS};
use crate::stats::{MixStats, Samples};
use vocab::MixSettings;

/// With DTX, how long a listener's stream goes on as silence frames after the mix it hears falls silent
/// (2 s, the last frame the DTX packet): pauses inside speech reach it as silence, not as a gap.
pub const PAUSE_SILENCE_TICKS: u32 = 100;

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

/// A listener of the shared mix whose reports start or stop stating loss moves between the shared mix's
/// clean and protected encodes at the first quiet tick too ([`QUIET_SWITCH_LEVEL`]), or after this many
/// ticks (1 s) in a room that is never quiet: a listener losing packets waits at most that long for FEC.
pub const SHARED_SWITCH_MAX_TICKS: u32 = 50;

/// A listener that negotiated RED gets the two packets before each one as its redundancy (40 ms back)
/// while its reports state at least this much loss (percent), else the one before (20 ms). Losses come in
/// runs on Wi-Fi and cellular links, which one frame back cannot bridge: in virtual time, 5 % loss in runs
/// of 3 packets on every leg, two back to the listener lifted a mixed room's PESQ-WB from 3.38 to 3.51
/// with the speaker sending RED depth 1, and from 3.76 to 3.85 with depth 2 (three seeds; media-core's
/// `speech_through_bursty_loss_stays_above_its_measured_floor`); at independent loss it changes nothing
/// (4.51, 4.52). It costs one more frame a packet: at the mix's 48 kb/s, about 120 bytes. Every listener
/// states [`UNREPORTED_LOSS_PERCENT`] until its first report.
pub const RED_TWO_BACK_LOSS_PERCENT: u8 = 3;

/// How many frames back a RED receiver's redundancy reaches while it states `loss_percent` (see
/// [`RED_TWO_BACK_LOSS_PERCENT`]): the mixer's listeners and, in a forwarding room, RED subscribers of a
/// speaker that sends less (plain Opus, Chrome's one frame back), up to [`crate::red::HISTORY_FRAMES`].
pub fn red_frames_back(loss_percent: u8) -> usize {
    if loss_percent >= RED_TWO_BACK_LOSS_PERCENT {
        2
    } else {
        1
    }
}

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
    /// The payloads of the packets sent to this listener just before, newest first, as far as each ends
    /// where the next starts: the redundancy of a RED (RFC 2198) packet for a listener that negotiated
    /// RED. The second only while the listener states [`RED_TWO_BACK_LOSS_PERCENT`] or more loss.
    pub previous: [Option<Arc<[u8]>>; 2],
}

/// One tick of the room's full mix — what a listener who talks to no one hears — for a broadcast mount
/// (see [`Mixer::set_tap`]): the shared encode, taken once per tick whoever else receives it.
#[derive(Clone, Debug)]
pub struct MixTap {
    /// The tick's number on the room's timeline (20 ms each, with the wall clock since the room was made):
    /// a gap means ticks were skipped.
    pub tick: u64,
    pub payload: Arc<[u8]>,
    /// Who talks in this tick, loudest first.
    pub talkers: Vec<ParticipantId>,
}

pub(crate) use encoder::UNREPORTED_LOSS_PERCENT;
pub use input::{opus_packet_has_fec, opus_packet_info, red_jitter_packets};
use output::{Fill, OutEncoder, PausePackets, SharedEncode, SHORT_FRAME, SHORT_FRAMES_PER_FRAME};

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
    /// This tick: it talks to the room (it is in the full mix); a whisper or team talk is not.
    public: bool,
    /// This tick: it hears other than the full mix (a rule of the room's audibility), so it gets its own.
    custom: bool,
    /// This tick: how many talkers it hears.
    heard_talkers: usize,
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
    /// The packet loss (percent) the member's receiver reports state for the mix it receives (see
    /// [`Mixer::set_listener_loss`]): its personal encoder's FEC is tuned for it, the protected shared
    /// one's for the highest of its listeners'.
    expected_loss: u8,
    /// It hears the shared mix's protected encode (it states loss), not the clean one.
    protected: bool,
    /// Ticks its loss class has differed from the encode it hears (see [`SHARED_SWITCH_MAX_TICKS`]).
    switch_wait: u32,
    /// Silence frames still owed after its last frame of a talk spurt (with DTX): a pause shorter than
    /// [`PAUSE_SILENCE_TICKS`] is sent as silence, not as a gap a browser would conceal.
    pause_ticks: u32,
    /// Ticks since the member last talked, while it keeps its personal encoder.
    since_talked: u32,
    /// The encode the member received last tick.
    feed: Feed,
    /// Timestamp and payload of the last two packets sent to the member, newest first (the next one's
    /// RED redundancy).
    sent: [Option<(u32, Arc<[u8]>)>; 2],
    next_seq: u64,
    ts_offset: u32,
    /// Spatial rooms: what the member hears this tick (see [`spatial`]), its own stereo encoder (while
    /// its packets come from it), and whose encoder its last packet came from.
    spatial_key: Vec<spatial::KeyEntry>,
    stereo: Option<OutEncoder>,
    heard_from: Option<ParticipantId>,
}

/// How long after a packet is due the tick that plays it falls when the grid is set for it (see
/// [`Mixer::wake_anchored`] and [`Mixer::rephase`]).
const ANCHOR_SLACK: Duration = Duration::from_millis(1);

/// A ticking room moves its grid only when every talker has had at least this much margin to spare for
/// [`REPHASE_TICKS`] ticks in a row (see [`Mixer::rephase`]): smaller moves are not worth a listener's early
/// packet, and the spare wanders by a millisecond or two with the fastest path.
const REPHASE_MIN_SPARE: Duration = Duration::from_millis(3);

/// Ticks in a row (200 ms) every talker must have spared [`REPHASE_MIN_SPARE`] before the grid moves.
const REPHASE_TICKS: u32 = 10;

/// How long (5 s) a move of the grid waits for a quiet tick (see [`Mixer::move_in_quiet`]) before it is
/// made in speech: a room where someone always talks still follows its talkers.
const REPHASE_QUIET_WAIT_TICKS: u64 = 250;

/// A pending move of `back` (first decided at tick `since`), or none if it is smaller than a move
/// [`Mixer::rephase`] would decide (what is left of a move made in steps, or a move shrunk to what the
/// talkers spare).
fn worth_waiting(back: Duration, since: u64) -> Option<(Duration, u64)> {
    (back + ANCHOR_SLACK >= REPHASE_MIN_SPARE).then_some((back, since))
}

/// The target delay a new input's jitter buffer starts at: [`JitterConfig`]'s default (60 ms) brought down
/// to the nearest whole number of ticks above the floor, `min_delay + k · 20 ms` (50 ms at the 10 ms
/// floor), never below the floor. A packet that wakes an idle room sets the grid's phase from the target
/// ([`Mixer::wake_anchored`]), and at a call's start that is this seed; on a calm path the target settles
/// on the floor within about 0.4 s. A seed a whole number of ticks from the floor sets the phase the
/// settled target wants. The default's 60 ms set it 10 ms late at the 10 ms floor: every call's packets
/// waited 10 ms more than their target until the grid moved back, at the first quiet tick after 200 ms
/// of spare margin ([`Mixer::rephase`]), seconds into the call.
fn seed_delay(min_delay: Duration) -> Duration {
    let default = JitterConfig::default().initial_delay;
    let above = default.saturating_sub(min_delay).as_nanos() / FRAME_DURATION.as_nanos();
    min_delay + FRAME_DURATION * above as u32
}

/// One mixed room's mixing state.
pub struct Mixer {
    config: MixSettings,
    jitter: JitterConfig,
    /// The tick grid: ticks happen at `epoch + k · FRAME_DURATION`.
    epoch: Instant,
    next_tick: Option<Instant>,
    /// The listeners' timeline (their RTP timestamps, the broadcast tap's tick numbers) runs with the
    /// wall clock from the room's creation, whatever the grid's moves, plus `timeline_lead`:
    /// [`Mixer::timeline`].
    origin: Instant,
    /// How far the timeline runs ahead of the wall clock: the sum of [`Mixer::rephase`]'s moves, each of
    /// which brings the next tick sooner without a hole in the listeners' streams.
    timeline_lead: Duration,
    /// And how much further (nanoseconds, negative: behind): what the fills of the quiet moves' gaps, in
    /// whole short frames, added to the gaps (see [`Mixer::fill_after_quiet_move`]); within half a short
    /// frame of zero.
    fill_drift_ns: i64,
    /// The grid point of the last tick run: the next one is at least a frame after it.
    last_due: Option<Instant>,
    ticks: u64,
    /// A move [`Mixer::rephase`] decided, made at the next quiet tick ([`Mixer::move_in_quiet`]), and
    /// the tick count when it was first decided.
    pending_move: Option<(Duration, u64)>,
    /// The move [`Mixer::move_in_quiet`] made before this tick: the listeners' packets of this tick, if it
    /// is quiet, would overlap their last ones; those whose silence goes on are sent a fill of the gap
    /// instead ([`Mixer::fill_after_quiet_move`]).
    moved_quietly: Option<Duration>,
    /// Ticks in a row in which every talker could spare [`REPHASE_MIN_SPARE`], and the least any spared.
    spare_run: u32,
    least_spare: Duration,
    members: Vec<Member>,
    index: HashMap<ParticipantId, usize>,
    /// The full mix for the listeners who do not talk, in two encodes: `clean` codes no FEC (the clean
    /// listeners' and a broadcast tap's, whose listeners are on TCP), `protected` codes FEC for the
    /// highest loss its listeners state; each exists while it has listeners. One lossy listener no longer
    /// makes every other pay for its FEC (the espeak-ng passage to a clean listener beside one losing
    /// 10 %: PESQ-WB 4.38 with one encode for both, 4.47 now).
    clean: SharedEncode,
    protected: SharedEncode,
    /// The frame of silence for listeners in a pause (and always in a room without DTX), and the DTX
    /// packet that ends a listener's pause.
    pause: PausePackets,
    mix: Vec<f32>,
    scratch: Vec<f32>,
    decode_buf: Vec<f32>,
    encoded: Box<[u8; MAX_OPUS]>,
    talkers: Vec<usize>,
    /// A broadcast mount listens: the full mix is encoded every tick (silence included) into `tapped`.
    tap: bool,
    tapped: Vec<MixTap>,
    /// This tick's talkers with their packet levels (−dBov).
    talker_levels: Vec<(usize, u8)>,
    /// A spatial room's interleaved stereo mix.
    stereo_buf: Vec<f32>,
    /// An announcement's duck of every other voice.
    duck: duck::Duck,
}

/// A microphone payload that is not a valid Opus packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not a valid Opus packet")]
pub struct NotOpus;

impl Mixer {
    pub fn new(now: Instant, config: MixSettings) -> Mixer {
        let min_delay = Duration::from_millis(u64::from(config.jitter_min_ms));
        let jitter = JitterConfig {
            min_delay,
            max_delay: Duration::from_millis(u64::from(config.jitter_max_ms)),
            initial_delay: seed_delay(min_delay),
            ..JitterConfig::default()
        };
        let pause = PausePackets::new(&config);
        Mixer {
            config,
            jitter,
            epoch: now,
            next_tick: None,
            origin: now,
            timeline_lead: Duration::ZERO,
            fill_drift_ns: 0,
            last_due: None,
            ticks: 0,
            pending_move: None,
            moved_quietly: None,
            spare_run: 0,
            least_spare: Duration::MAX,
            members: Vec::new(),
            index: HashMap::new(),
            clean: SharedEncode::default(),
            protected: SharedEncode::default(),
            pause,
            mix: vec![0.0; FRAME_SAMPLES],
            scratch: vec![0.0; FRAME_SAMPLES],
            decode_buf: vec![0.0; MAX_PACKET_SAMPLES],
            encoded: Box::new([0u8; MAX_OPUS]),
            talkers: Vec::with_capacity(MAX_CSRCS),
            tap: false,
            tapped: Vec::new(),
            talker_levels: Vec::with_capacity(MAX_CSRCS),
            stereo_buf: vec![0.0; 2 * FRAME_SAMPLES],
            duck: duck::Duck::default(),
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
            public: true,
            custom: false,
            heard_talkers: 0,
            last_level: SILENT_LEVEL - 1,
            lost_reported: 0,
            red_reported: 0,
            was_talking: false,
            decode_hangover: 0,
            prime: None,
            personal: None,
            expected_loss: UNREPORTED_LOSS_PERCENT,
            protected: false,
            switch_wait: 0,
            pause_ticks: 0,
            since_talked: 0,
            feed: Feed::Nothing,
            sent: [None, None],
            next_seq: u64::from(seq),
            ts_offset,
            spatial_key: Vec::new(),
            stereo: None,
            heard_from: None,
        });
    }

    pub fn remove_member(&mut self, id: ParticipantId) {
        self.duck.member_left(id);
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        self.members.swap_remove(i);
        if let Some(moved) = self.members.get(i) {
            self.index.insert(moved.id, i);
        }
    }

    /// What member `id`'s receiver reports on the mix it receives state, as a percentage lost (rounded):
    /// the encoder it hears (its own, or the shared mix's protected one) codes in-band FEC for that much
    /// loss, up to [`UNREPORTED_LOSS_PERCENT`] (the tuning of every listener before its reports, and of
    /// every mix before they were followed), and none while it reports none (the shared mix's clean
    /// encode). A clean listener's mix spends all its bits on the audio (the espeak-ng passage through a
    /// clean mixed room: PESQ-WB 4.38 with FEC for 10 %, 4.47 without).
    pub fn set_listener_loss(&mut self, id: ParticipantId, percent: u8) {
        if let Some(m) = self.index.get(&id).and_then(|i| self.members.get_mut(*i)) {
            m.expected_loss = percent.min(UNREPORTED_LOSS_PERCENT);
        }
    }

    /// An announcement by member `exempt` plays: every other voice is lowered to `gain` (linear) with a
    /// short ramp, until `exempt` leaves (see [`duck`]).
    pub fn set_duck(&mut self, exempt: ParticipantId, gain: f32) {
        self.duck.set(exempt, gain);
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

    /// Start (or stop) the broadcast tap: while on, every tick encodes the full mix once — silence too, so
    /// the mount's stream is continuous — and keeps it for [`Mixer::take_tapped`]. The room keeps ticking
    /// while tapped, even when silent.
    pub fn set_tap(&mut self, now: Instant, on: bool) {
        self.tap = on;
        if !on {
            self.tapped.clear();
        } else if self.next_tick.is_none() {
            self.next_tick = Some(self.grid_at_or_after(now));
        }
    }

    pub fn is_tapped(&self) -> bool {
        self.tap
    }

    /// The full-mix frames of the ticks run since the last call, oldest first.
    pub fn take_tapped(&mut self) -> std::vec::Drain<'_, MixTap> {
        self.tapped.drain(..)
    }

    /// A member's current jitter-buffer target delay.
    pub fn jitter_target(&self, id: ParticipantId) -> Option<Duration> {
        let m = self.members.get(*self.index.get(&id)?)?;
        Some(m.jitter.target_delay())
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether any member hears the mix.
    pub fn has_listeners(&self) -> bool {
        self.members.iter().any(|m| m.subscribes)
    }

    /// Wake an idle mixer for a packet that arrived at `arrival` and is `due` to play (when its jitter buffer
    /// would start it: it has waited the target on the fastest recent path; [`JitterBuffer::due`]). Nothing
    /// if a tick is scheduled. Unless a tick of the grid already falls within [`ANCHOR_SLACK`] after `due`,
    /// the grid first moves so that one falls [`ANCHOR_SLACK`] after it. Nobody is playing while the mixer is
    /// idle, so the move is free, and the packet that wakes the mixer plays at the first tick its buffer
    /// allows, not up to a tick later. The grid is otherwise wherever the room's creation put it, and a
    /// packet waits for its target and then for the next tick: on average half a tick more, up to a whole
    /// one (Chorus issue 15: the mix latency p50 at 503 participants was 48 to 50 ms with a 20 ms target,
    /// 33 ms with the grid anchored). `due` is on the fastest path, not the waking packet's own arrival: a
    /// waking packet that came a few ms late would otherwise set the phase late, and [`Mixer::rephase`]
    /// would take it back a few ticks later, a whole tick of grid (and of output timestamps) per talk
    /// spurt. Only the waking talker is aligned here; the others by `rephase`. The grid only moves back, by
    /// less than a tick, and never puts a tick less than a frame after the last one ran, so a listener never
    /// gets two frames in less than a frame's time. The listeners' timestamps do not follow the grid's move:
    /// they follow the wall clock ([`Mixer::timeline`]), so the first packet after an idle spell is as far
    /// (in its timestamp) from the last one as it is in time. Stamped by grid index, as they were before,
    /// each move put the stream ahead of the clock by up to a tick: a room woken every few ticks by a
    /// talker's comfort-noise packets moved its grid back 20 ms every 120 ms (seen in Chromium speech
    /// runs), so the listeners' next talk spurt came up to a tenth of a second ahead of their jitter
    /// buffers' clock, which Chromium then played late and caught up on by time-compressing the speech
    /// (`removedSamplesForAcceleration` 150–175 ms per 32 s, against 10–45 ms for a forwarded stream).
    fn wake_anchored(&mut self, arrival: Instant, due: Instant) {
        if self.next_tick.is_some() {
            return;
        }
        let after_last = self.last_due.map(|last| last + FRAME_DURATION);
        let earliest = after_last.map_or(due, |a| a.max(due));
        let want = earliest + ANCHOR_SLACK;
        let tick = self.grid_at_or_after(earliest);
        if tick > want {
            // The grid point at or after `want` is `tick`: the grid moves back by the difference.
            if let Some(epoch) = self.epoch.checked_sub(tick - want) {
                self.epoch = epoch;
            }
        }
        let first = after_last.map_or(arrival, |a| a.max(arrival));
        self.next_tick = Some(self.grid_at_or_after(first));
    }

    /// Where grid point `due` falls on the listeners' timeline: the time since the room's creation, plus
    /// what [`Mixer::rephase`] moved the grid earlier while it ticked (those moves keep the timestamps
    /// continuous; an idle room's moves in [`Mixer::wake_anchored`] do not count).
    fn timeline(&self, due: Instant) -> Duration {
        let t = due.saturating_duration_since(self.origin) + self.timeline_lead;
        let drift = Duration::from_nanos(self.fill_drift_ns.unsigned_abs());
        if self.fill_drift_ns >= 0 {
            t + drift
        } else {
            t.saturating_sub(drift)
        }
    }

    /// The fill a quiet tick `due` right after a quiet move of the grid by `back` sends the listeners whose
    /// stream of silence goes on ([`PausePackets::packet_for`]). Their last frame ends where this tick's
    /// would have started had the grid not moved (`due + back`); the next tick comes a frame after this
    /// one, so the gap is a frame less the move. A packet can only fill it with whole 2.5 ms short frames
    /// (Opus' shortest): the nearest number, 0 to 8, to the gap less the drift of earlier fills, and the
    /// timeline shifts by what the fill adds to the gap (so the next tick's frame starts exactly where the
    /// fill ends). The drift stays within half a short frame, ahead or behind: a listener's jitter buffer
    /// sees its packets come up to 1.25 ms sooner or later than before, once.
    fn fill_after_quiet_move(&mut self, due: Instant, back: Duration) -> Fill {
        let start = duration_samples(self.timeline(due + back)) as u32; // RTP timestamps wrap
        let gap_ns = FRAME_DURATION.saturating_sub(back).as_nanos() as i64;
        let short_ns = SHORT_FRAME.as_nanos() as i64;
        let wanted = gap_ns - self.fill_drift_ns;
        let frames = (wanted + short_ns / 2)
            .div_euclid(short_ns)
            .clamp(0, SHORT_FRAMES_PER_FRAME as i64);
        self.fill_drift_ns += frames * short_ns - gap_ns;
        Fill {
            start,
            frames: frames as usize,
        }
    }

    /// Move a ticking room's grid earlier when its talkers' packets wait longer than their targets: once
    /// every talker (every input decoded this tick) has spared at least [`REPHASE_MIN_SPARE`] of margin
    /// for [`REPHASE_TICKS`] ticks in a row, the ticks come sooner by the least spared, less
    /// [`ANCHOR_SLACK`], at the next quiet tick ([`move_in_quiet`](Self::move_in_quiet)).
    /// [`wake_anchored`](Self::wake_anchored) sets the phase only when a packet wakes an idle room, from
    /// that one packet: a room that never goes idle (a browser room without DTX) kept whatever phase it
    /// started with, and a waking packet that came late set the grid late for every packet after it
    /// (Chorus issue 15: at 503 participants one run in four measured a mix latency p50 of 48 ms instead of
    /// 33 ms). Nothing is heard: every input plays the same spans, only sooner, with a margin still at or
    /// above its target. With several talkers at different phases the tightest one sets the grid and the
    /// others keep waiting for it; in a conversation the grid follows whoever talks, moving in the pauses.
    /// (Holding it for 10 s at a phase that suited everyone who had talked cost the other talkers up to a
    /// tick each: the load tester's mix latency p50 23.3–33.3 ms in five runs against 22.5–23.2 without.)
    /// A room that stays loud for [`REPHASE_QUIET_WAIT_TICKS`] moves in speech, by less than a tick: the
    /// listeners' timestamps stay continuous (the move is added to `timeline_lead`), so their packets come
    /// that much sooner from then on, and their jitter buffers give it back by time-compressing what they
    /// play (Chromium's `removedSamplesForAcceleration`).
    fn rephase(&mut self, stats: &mut MixStats) {
        let Some(next) = self.next_tick else {
            return;
        };
        let least = self
            .talkers
            .iter()
            .map(|&i| {
                self.members[i]
                    .jitter
                    .spare_margin(next)
                    .unwrap_or(Duration::ZERO)
            })
            .min();
        // A move waiting for a quiet tick never takes more than this tick's talkers can spare: it was
        // decided for others, and whoever talks now will talk again at the same phase.
        if let (Some(least), Some((wanted, since))) = (least, self.pending_move) {
            let allowed = least.saturating_sub(ANCHOR_SLACK);
            if wanted > allowed {
                self.pending_move = worth_waiting(allowed, since);
            }
        }
        match least {
            Some(least) if least >= REPHASE_MIN_SPARE => {
                self.spare_run += 1;
                self.least_spare = self.least_spare.min(least);
            }
            _ => {
                self.spare_run = 0;
                self.least_spare = Duration::MAX;
                return;
            }
        }
        if self.spare_run < REPHASE_TICKS {
            return;
        }
        // in speech, by less than a tick at a time; in quiet, in as many steps as that takes
        let wanted = self.least_spare - ANCHOR_SLACK;
        let back = wanted.min(FRAME_DURATION - ANCHOR_SLACK);
        self.spare_run = 0;
        self.least_spare = Duration::MAX;
        match self.pending_move {
            Some((_, since)) if self.ticks - since >= REPHASE_QUIET_WAIT_TICKS => {
                // No quiet tick for that long: move now, in speech.
                self.pending_move = None;
                if self.move_grid_earlier(next, back, stats) {
                    self.timeline_lead += back;
                }
            }
            Some((_, since)) => self.pending_move = Some((wanted, since)),
            None => self.pending_move = Some((wanted, self.ticks)),
        }
    }

    /// Make the move [`rephase`](Self::rephase) decided, if one waits and this tick was quiet: nobody was
    /// heard, no listener was sent a mix (at most the room's pause packets), no broadcast mount listens.
    /// The next tick comes sooner by the move, as in speech, but the listeners' timeline does not jump
    /// ahead: that tick, if it is quiet too, sends each listener whose stream of silence goes on a fill
    /// of the gap, the frame less the move, in short frames of silence (its own frame would overlap the
    /// last; see [`Mixer::fill_after_quiet_move`]), and their next packet's timestamp follows the wall
    /// clock (within 1.25 ms), right after that fill. Their packets come no sooner than before, so they
    /// have nothing to time-compress, and nothing to conceal. (Before the fills a browser concealed the
    /// gap: Chromium counted an event per move, 10–16 ms each. If someone is heard at that tick after all,
    /// the stream stays continuous and runs ahead by the move, as a move in speech does.) A move in
    /// speech brings every packet after it sooner, and the listeners' jitter buffers shed the surplus by
    /// time-compressing speech (`mixer::tests`: 32.7 ms ahead after one talk spurt, 69 ms after a
    /// conversation's 8 moves; within 1.25 ms now).
    fn move_in_quiet(&mut self, stats: &mut MixStats) {
        let Some((wanted, since)) = self.pending_move else {
            return;
        };
        let Some(next) = self.next_tick.filter(|_| self.is_quiet()) else {
            return;
        };
        // Less than a tick per tick (the next tick must still come after this one); the rest at the next
        // tick if it is quiet too.
        let back = wanted.min(FRAME_DURATION - ANCHOR_SLACK);
        if self.move_grid_earlier(next, back, stats) {
            let rest = wanted - back;
            self.pending_move = worth_waiting(rest, since);
            self.moved_quietly = Some(back);
        }
    }

    /// The grid, and the tick scheduled at `next`, `back` earlier (counted in `grid_moves`); false if the
    /// clock cannot go back that far (the process started less than `back` ago).
    fn move_grid_earlier(&mut self, next: Instant, back: Duration, stats: &mut MixStats) -> bool {
        let (Some(epoch), Some(tick)) = (self.epoch.checked_sub(back), next.checked_sub(back))
        else {
            return false;
        };
        self.epoch = epoch;
        self.next_tick = Some(tick);
        stats.grid_moves += 1;
        true
    }

    /// Nobody is heard this tick (as far as step 2 of the tick has decided), every listener's last packet
    /// was one of the room's pause packets (not a mix, nor the last frame that ends a talk spurt), and no
    /// broadcast mount listens.
    fn is_quiet(&self) -> bool {
        self.talkers.is_empty()
            && !self.tap
            && self.members.iter().all(|m| {
                m.feed == Feed::Nothing
                    && m.sent[0]
                        .as_ref()
                        .is_none_or(|(_, p)| self.pause.is_pause_packet(p))
            })
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
        self.tick_in(now, out, stats, samples, None);
    }

    /// [`tick`](Self::tick) under the room's audibility policy: in a spatial room each listener gets its
    /// own stereo mix of the talkers it hears (see [`spatial`]); in a flat room a listener that does not
    /// hear exactly the full mix (a whisper to it, its team's talk, its volumes) gets its own mono mix,
    /// and everyone else keeps sharing one encode.
    pub fn tick_in(
        &mut self,
        now: Instant,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
        samples: &mut Samples,
        audibility: Option<&crate::audibility::Audibility>,
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
            self.tick_at(due, out, stats, samples, audibility);
            ran += 1;
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod red_tests;
