//! Dominant speaker identification from RFC 6464 audio levels, after Volfin & Cohen, "Dominant Speaker
//! Identification for Multipoint Videoconferencing" (2012).
//!
//! The loudest participant is a poor choice of "who is speaking": a cough, a door or a noisy microphone is
//! loud too. Volfin & Cohen instead score each participant's *speech activity* on three time scales and let
//! a challenger replace the current dominant speaker only when it beats the dominant one on all three.
//!
//! # Activity on three time scales
//!
//! Time is cut into frames of [`DominantConfig::frame`] (20 ms, one Opus packet). For every participant and
//! frame, [`DominantSpeaker::update`] takes the loudest level that arrived during the frame (a level is held
//! for [`DominantConfig::hold`] to bridge network jitter; no level means silence):
//!
//! - **Immediate** (one frame): how far the level is above the participant's noise floor, in steps of
//!   [`DominantConfig::step_db`] (4 dB), saturating at `N1` = 13 steps. The steps stand in for the paper's
//!   active frequency sub-bands, since only a level is available. The noise floor is the quietest level the
//!   participant sent over the last [`DominantConfig::floor_window`] (15 s, kept as the quietest level of each
//!   second in a ring), capped at [`DominantConfig::floor_cap`] (−70 dBov) so that digital silence does not
//!   make every sound look loud. A microphone with steady background noise therefore stays near zero however
//!   loud the noise is, while speech, which dips between syllables, climbs well above its floor.
//! - **Medium** (the last `N2` = 5 frames, 100 ms): the number of those frames whose immediate activity
//!   reached [`DominantConfig::frame_threshold`] steps (16 dB above the floor).
//! - **Long** (the last `N3` = 10 medium blocks, 1 s; blocks are consecutive, non-overlapping 5-frame
//!   spans): the number of blocks whose medium activity reached [`DominantConfig::block_threshold`] (3 of 5
//!   frames), so a click or cough of one or two frames never makes a block active.
//!
//! # Scores
//!
//! Each activity `n` out of `N` becomes a log-likelihood ratio between "speech" and "noise": speech makes
//! `n` binomial with success probability [`DominantConfig::speech_probability`] (0.5), noise makes it
//! exponentially distributed with rate [`DominantConfig::noise_rate`] (0.78, 24, 47 for the three scales):
//!
//! ```text
//! score(n) = ln C(N, n) + n ln p + (N − n) ln(1 − p) − ln λ + λ n
//! ```
//!
//! The scores are tabulated once in [`DominantSpeaker::new`]. Large noise rates on the longer scales make
//! their scores close to proportional to the activity counts.
//!
//! # Decisions
//!
//! Every [`DominantConfig::decision_interval`] (300 ms), for each challenger the differences of its three
//! scores to the dominant speaker's are compared with the thresholds `C1` = 3 (immediate), `C2` = 2 (medium)
//! and `C3` = 0 (long) (the paper's log-ratios of likelihood ratios are differences of log-likelihood
//! ratios). Only challengers beating all three qualify; of those, the one with the highest long, then medium,
//! then immediate score wins, ties going to the lowest [`ParticipantId`]. With no dominant speaker (at the
//! start or after [`DominantSpeaker::remove`]), the participant with the best scores among those with at
//! least one active medium block in the last second becomes dominant. When everybody is quiet the dominant
//! speaker stays.
//!
//! Each frame and each decision costs O(participants); [`DominantSpeaker::on_level`] is a binary search and
//! a compare. Nothing allocates after [`DominantSpeaker::add`].

use std::time::{Duration, Instant};

use crate::ids::ParticipantId;

/// Immediate scale: steps above the noise floor.
pub const N1: usize = 13;
/// Medium scale: frames per medium block.
pub const N2: usize = 5;
/// Long scale: medium blocks per long window.
pub const N3: usize = 10;

/// Slots of the noise-floor ring (one per second of [`DominantConfig::floor_window`], at most).
const FLOOR_SLOTS: usize = 15;

/// Frames processed in one `update` at most; a longer pause is treated as silence wholesale.
const MAX_CATCHUP_FRAMES: u32 = (N2 * N3) as u32 + 1;

/// The RFC 6464 level of silence.
const SILENCE: u8 = 127;

/// Tuning of [`DominantSpeaker`]. The defaults follow Volfin & Cohen with 20 ms frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DominantConfig {
    /// Time between decisions.
    pub decision_interval: Duration,
    /// Duration of one immediate frame (the packet time of the levels).
    pub frame: Duration,
    /// A level stands in for frames without one for this long (network jitter).
    pub hold: Duration,
    /// Score thresholds a challenger must exceed: immediate, medium, long (C1, C2, C3).
    pub thresholds: [f64; 3],
    /// Binomial success probability of the speech model on each scale.
    pub speech_probability: [f64; 3],
    /// Exponential rate of the noise model on each scale.
    pub noise_rate: [f64; 3],
    /// dB above the noise floor per immediate step.
    pub step_db: u8,
    /// Immediate steps from which a frame counts as active.
    pub frame_threshold: u8,
    /// Active frames (of [`N2`]) from which a medium block counts as active.
    pub block_threshold: u8,
    /// The noise floor is the quietest level over this long (at most 15 slots of it are kept).
    pub floor_window: Duration,
    /// The noise floor is never taken as quieter than this level (−dBov).
    pub floor_cap: u8,
}

impl Default for DominantConfig {
    fn default() -> Self {
        Self {
            decision_interval: Duration::from_millis(300),
            frame: Duration::from_millis(20),
            hold: Duration::from_millis(40),
            thresholds: [3.0, 2.0, 0.0],
            speech_probability: [0.5, 0.5, 0.5],
            noise_rate: [0.78, 24.0, 47.0],
            step_db: 4,
            frame_threshold: 4,
            block_threshold: 3,
            floor_window: Duration::from_secs(15),
            floor_cap: 70,
        }
    }
}

#[derive(Clone, Debug)]
struct Speaker {
    id: ParticipantId,
    /// Loudest level (smallest −dBov) since the last frame was processed.
    pending: Option<u8>,
    last_level: u8,
    last_at: Option<Instant>,
    /// Quietest level of each floor slot; 0 marks an empty slot (0 dBov never wins a "quietest").
    floor: [u8; FLOOR_SLOTS],
    floor_slot: Option<u64>,
    /// Immediate activity of the last frame, 0..=N1.
    immediate: u8,
    /// Activity of the last N2 frames, newest in bit 0.
    frames: u8,
    /// Activity of the last N3 medium blocks, newest in bit 0.
    blocks: u16,
}

impl Speaker {
    fn new(id: ParticipantId) -> Self {
        Self {
            id,
            pending: None,
            last_level: SILENCE,
            last_at: None,
            floor: [0; FLOOR_SLOTS],
            floor_slot: None,
            immediate: 0,
            frames: 0,
            blocks: 0,
        }
    }

    fn medium(&self) -> usize {
        self.frames.count_ones() as usize
    }

    fn long(&self) -> usize {
        self.blocks.count_ones() as usize
    }
}

/// Dominant speaker detection for one room. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct DominantSpeaker {
    config: DominantConfig,
    /// Sorted by id (ties resolve to the lowest id).
    speakers: Vec<Speaker>,
    dominant: Option<ParticipantId>,
    /// End of the frame being collected.
    frame_end: Option<Instant>,
    frame_no: u64,
    frames_per_slot: u64,
    slots: usize,
    next_decision: Option<Instant>,
    scores: [[f64; N1 + 1]; 3],
}

impl DominantSpeaker {
    /// A detector with no participants.
    pub fn new(config: DominantConfig) -> Self {
        let frame_us = config.frame.as_micros().max(1);
        let frames_per_slot = u64::try_from(1_000_000 / frame_us).unwrap_or(1).max(1);
        let slots = usize::try_from(config.floor_window.as_secs())
            .unwrap_or(FLOOR_SLOTS)
            .clamp(1, FLOOR_SLOTS);
        let mut scores = [[f64::NEG_INFINITY; N1 + 1]; 3];
        for (scale, n_max) in [N1, N2, N3].into_iter().enumerate() {
            for (n, score) in scores[scale].iter_mut().enumerate().take(n_max + 1) {
                *score = log_likelihood_ratio(
                    n,
                    n_max,
                    config.speech_probability[scale],
                    config.noise_rate[scale],
                );
            }
        }
        Self {
            config,
            speakers: Vec::new(),
            dominant: None,
            frame_end: None,
            frame_no: 0,
            frames_per_slot,
            slots,
            next_decision: None,
            scores,
        }
    }

    /// Starts tracking `id` (no-op if tracked).
    pub fn add(&mut self, id: ParticipantId) {
        if let Err(index) = self.speakers.binary_search_by_key(&id, |s| s.id) {
            self.speakers.insert(index, Speaker::new(id));
        }
    }

    /// Stops tracking `id`. If it was dominant, there is none until the next decision picks another.
    pub fn remove(&mut self, id: ParticipantId) {
        if let Ok(index) = self.speakers.binary_search_by_key(&id, |s| s.id) {
            self.speakers.remove(index);
        }
        if self.dominant == Some(id) {
            self.dominant = None;
        }
    }

    /// An audio level (RFC 6464, 0..=127 −dBov) from `id` arrived at `now`. Unknown ids are ignored.
    pub fn on_level(&mut self, id: ParticipantId, now: Instant, level: u8) {
        let level = level.min(SILENCE);
        if let Ok(index) = self.speakers.binary_search_by_key(&id, |s| s.id) {
            let speaker = &mut self.speakers[index];
            speaker.pending = Some(speaker.pending.map_or(level, |p| p.min(level)));
            speaker.last_level = level;
            speaker.last_at = Some(now);
        }
    }

    /// Advances time to `now`: closes the frames that ended and, every decision interval, decides. Returns
    /// the new dominant speaker when it changed. Call about every frame (20 ms).
    pub fn update(&mut self, now: Instant) -> Option<ParticipantId> {
        let frame = self.config.frame.max(Duration::from_millis(1));
        let mut frame_end = *self.frame_end.get_or_insert(now + frame);
        let mut processed = 0;
        while frame_end <= now {
            if processed == MAX_CATCHUP_FRAMES {
                frame_end = now + frame;
                break;
            }
            self.close_frame(frame_end);
            frame_end += frame;
            processed += 1;
        }
        self.frame_end = Some(frame_end);

        let interval = self.config.decision_interval;
        let next = *self.next_decision.get_or_insert(now + interval);
        if now < next {
            return None;
        }
        let following = next + interval;
        self.next_decision = Some(if following <= now {
            now + interval
        } else {
            following
        });
        let before = self.dominant;
        self.decide();
        if self.dominant != before {
            self.dominant
        } else {
            None
        }
    }

    /// The current dominant speaker.
    pub fn dominant(&self) -> Option<ParticipantId> {
        self.dominant
    }

    /// The immediate, medium and long scores of `id` (for metrics and debugging).
    pub fn scores(&self, id: ParticipantId) -> Option<[f64; 3]> {
        let index = self.speakers.binary_search_by_key(&id, |s| s.id).ok()?;
        Some(self.score_of(&self.speakers[index]))
    }

    fn score_of(&self, speaker: &Speaker) -> [f64; 3] {
        [
            self.scores[0][usize::from(speaker.immediate)],
            self.scores[1][speaker.medium()],
            self.scores[2][speaker.long()],
        ]
    }

    fn close_frame(&mut self, frame_end: Instant) {
        let slot = self.frame_no / self.frames_per_slot;
        let block_done = self.frame_no % N2 as u64 == N2 as u64 - 1;
        let config = self.config;
        let slots = self.slots;
        for speaker in &mut self.speakers {
            let held = speaker
                .last_at
                .filter(|at| frame_end.saturating_duration_since(*at) <= config.hold + config.frame)
                .map(|_| speaker.last_level);
            let level = speaker.pending.take().or(held);
            let steps = match level {
                Some(level) => {
                    let floor = update_floor(speaker, slot, slots, level).min(config.floor_cap);
                    let above = floor.saturating_sub(level) / config.step_db.max(1);
                    above.min(N1 as u8)
                }
                None => 0,
            };
            speaker.immediate = steps;
            let active = u8::from(steps >= config.frame_threshold);
            speaker.frames = ((speaker.frames << 1) | active) & ((1 << N2) - 1);
            if block_done {
                let block_active =
                    u16::from(speaker.medium() >= usize::from(config.block_threshold));
                speaker.blocks = ((speaker.blocks << 1) | block_active) & ((1 << N3) - 1);
            }
        }
        self.frame_no += 1;
    }

    fn decide(&mut self) {
        let ranking = |scores: &[f64; 3]| (scores[2], scores[1], scores[0]);
        let mut best: Option<(ParticipantId, [f64; 3])> = None;
        match self
            .dominant
            .and_then(|id| self.speakers.iter().find(|s| s.id == id))
        {
            Some(dominant) => {
                let incumbent = self.score_of(dominant);
                for speaker in self.speakers.iter().filter(|s| s.id != dominant.id) {
                    let scores = self.score_of(speaker);
                    let beats =
                        (0..3).all(|i| scores[i] - incumbent[i] > self.config.thresholds[i]);
                    if beats && best.is_none_or(|(_, b)| ranking(&scores) > ranking(&b)) {
                        best = Some((speaker.id, scores));
                    }
                }
            }
            None => {
                for speaker in self.speakers.iter().filter(|s| s.blocks != 0) {
                    let scores = self.score_of(speaker);
                    if best.is_none_or(|(_, b)| ranking(&scores) > ranking(&b)) {
                        best = Some((speaker.id, scores));
                    }
                }
            }
        }
        if let Some((id, _)) = best {
            self.dominant = Some(id);
        }
    }
}

/// Records `level` in the speaker's noise-floor ring for `slot` and returns the floor: the quietest level
/// of the ring.
fn update_floor(speaker: &mut Speaker, slot: u64, slots: usize, level: u8) -> u8 {
    let slots_u64 = slots as u64;
    let index = |s: u64| usize::try_from(s % slots_u64).unwrap_or(0);
    match speaker.floor_slot {
        Some(current) if current == slot => {
            let entry = &mut speaker.floor[index(slot)];
            *entry = (*entry).max(level);
        }
        Some(current) if slot > current && slot - current < slots_u64 => {
            // Slots skipped while no level came hold nothing recent.
            for skipped in current + 1..slot {
                speaker.floor[index(skipped)] = 0;
            }
            speaker.floor[index(slot)] = level;
        }
        _ => {
            speaker.floor = [0; FLOOR_SLOTS];
            speaker.floor[index(slot)] = level;
        }
    }
    speaker.floor_slot = Some(slot);
    speaker.floor[..slots]
        .iter()
        .copied()
        .max()
        .unwrap_or(level)
}

/// `ln(Binomial(n; N, p) / Exponential(n; λ))`.
fn log_likelihood_ratio(n: usize, n_max: usize, p: f64, lambda: f64) -> f64 {
    let ln_choose: f64 = (1..=n)
        .map(|k| ((n_max - n + k) as f64 / k as f64).ln())
        .sum();
    let (n, n_max) = (n as f64, n_max as f64);
    ln_choose + n * p.ln() + (n_max - n) * (1.0 - p).ln() - lambda.ln() + lambda * n
}

#[cfg(test)]
mod tests;
