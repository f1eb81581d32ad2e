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
mod tests {
    use super::*;
    use crate::testkit::sim::Rng;

    const FRAME: Duration = crate::audio::FRAME_DURATION;

    /// The base of virtual time; only ever offset by durations.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn id(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    /// What one participant sends in a frame.
    #[derive(Clone, Copy, Debug)]
    enum Voice {
        /// No packets (DTX or muted).
        Quiet,
        /// Packets at level 127.
        Silence,
        /// Speech-like: voiced frames at −20..−40 dBov, one in five a pause at −55..−70 dBov.
        Speech,
        /// A steady noisy microphone at −45 ± 1 dBov.
        Noise,
        /// One loud frame.
        Click,
    }

    fn level(voice: Voice, rng: &mut Rng) -> Option<u8> {
        match voice {
            Voice::Quiet => None,
            Voice::Silence => Some(127),
            Voice::Speech if rng.chance(0.2) => Some(55 + rng.below(16) as u8),
            Voice::Speech => Some(20 + rng.below(21) as u8),
            Voice::Noise => Some(44 + rng.below(3) as u8),
            Voice::Click => Some(8),
        }
    }

    /// A room of participants driven frame by frame in virtual time.
    struct Room {
        ds: DominantSpeaker,
        base: Instant,
        frame: u32,
        rng: Rng,
        /// (time, new dominant) for every change `update` reported.
        changes: Vec<(Duration, ParticipantId)>,
    }

    impl Room {
        fn new(ids: &[u64], seed: u64) -> Self {
            let mut ds = DominantSpeaker::new(DominantConfig::default());
            for n in ids {
                ds.add(id(*n));
            }
            Self {
                ds,
                base: t0(),
                frame: 0,
                rng: Rng::new(seed),
                changes: Vec::new(),
            }
        }

        fn now(&self) -> Duration {
            FRAME * self.frame
        }

        /// Runs `frames` frames; `voice(participant, time)` says what each one sends. Levels arrive with a
        /// few milliseconds of jitter inside their frame.
        fn run(&mut self, frames: u32, voice: impl Fn(u64, Duration) -> Voice, ids: &[u64]) {
            for _ in 0..frames {
                let t = self.now();
                for n in ids {
                    if let Some(level) = level(voice(*n, t), &mut self.rng) {
                        let jitter = Duration::from_micros(self.rng.below(15_000));
                        self.ds.on_level(id(*n), self.base + t + jitter, level);
                    }
                }
                self.frame += 1;
                let now = self.now();
                if let Some(new) = self.ds.update(self.base + now) {
                    self.changes.push((now, new));
                }
            }
        }

        fn frames(d: Duration) -> u32 {
            (d.as_millis() / FRAME.as_millis()) as u32
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_single_talker_becomes_dominant_quickly() {
        let ids = [1, 2, 3];
        let mut room = Room::new(&ids, 1);
        room.run(
            Room::frames(ms(2000)),
            |n, _| {
                if n == 2 {
                    Voice::Speech
                } else {
                    Voice::Silence
                }
            },
            &ids,
        );
        assert_eq!(room.ds.dominant(), Some(id(2)));
        assert_eq!(room.changes.len(), 1, "{:?}", room.changes);
        let (at, who) = room.changes[0];
        assert_eq!(who, id(2));
        assert!(at <= ms(600), "took {at:?}");
    }

    #[test]
    fn nobody_is_dominant_in_silence() {
        let ids = [1, 2];
        let mut room = Room::new(&ids, 2);
        room.run(
            Room::frames(ms(3000)),
            |n, _| if n == 1 { Voice::Quiet } else { Voice::Silence },
            &ids,
        );
        assert_eq!(room.ds.dominant(), None);
        assert!(room.changes.is_empty());
    }

    #[test]
    fn a_cough_or_click_does_not_steal_dominance() {
        let ids = [1, 2, 3];
        let mut room = Room::new(&ids, 3);
        let voice = |n: u64, t: Duration| match n {
            1 => Voice::Speech,
            // A two-frame cough at 2 s, a one-frame click at 2.5 s, and another two-frame cough at 3.1 s.
            2 if (t >= ms(2000) && t < ms(2040)) || (t >= ms(3100) && t < ms(3140)) => Voice::Click,
            3 if t >= ms(2500) && t < ms(2520) => Voice::Click,
            _ => Voice::Silence,
        };
        room.run(Room::frames(ms(5000)), voice, &ids);
        assert_eq!(
            room.changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            [id(1)]
        );
    }

    #[test]
    fn a_sustained_new_speaker_takes_over_within_a_second() {
        let ids = [1, 2];
        let mut room = Room::new(&ids, 4);
        let voice = |n: u64, t: Duration| match (n, t < ms(4000)) {
            (1, true) | (2, false) => Voice::Speech,
            _ => Voice::Silence,
        };
        room.run(Room::frames(ms(8000)), voice, &ids);
        let who: Vec<ParticipantId> = room.changes.iter().map(|c| c.1).collect();
        assert_eq!(who, [id(1), id(2)], "{:?}", room.changes);
        let handover = room.changes[1].0 - ms(4000);
        assert!(handover <= ms(1100), "took {handover:?}");
        assert!(
            handover >= ms(300),
            "switched before the old speaker's long-term activity decayed"
        );
    }

    #[test]
    fn the_dominant_speaker_keeps_the_floor_in_double_talk() {
        let ids = [1, 2];
        let mut room = Room::new(&ids, 5);
        let voice = |n: u64, t: Duration| match n {
            1 => Voice::Speech,
            _ if t >= ms(2000) => Voice::Speech,
            _ => Voice::Silence,
        };
        room.run(Room::frames(ms(6000)), voice, &ids);
        assert_eq!(
            room.changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            [id(1)]
        );
    }

    #[test]
    fn steady_background_noise_does_not_beat_a_talker() {
        let ids = [1, 2];
        let mut room = Room::new(&ids, 6);
        // 1 has a noisy microphone all along; 2 starts talking after 2 s, pauses 6..7 s, talks again.
        let voice = |n: u64, t: Duration| match n {
            1 => Voice::Noise,
            _ if t >= ms(2000) && !(t >= ms(6000) && t < ms(7000)) => Voice::Speech,
            _ => Voice::Quiet,
        };
        room.run(Room::frames(ms(10_000)), voice, &ids);
        let who: Vec<ParticipantId> = room.changes.iter().map(|c| c.1).collect();
        assert_eq!(who, [id(2)], "{:?}", room.changes);
        assert!(room.changes[0].0 <= ms(2600));
        let noise = room.ds.scores(id(1)).expect("tracked");
        let talker = room.ds.scores(id(2)).expect("tracked");
        assert!(talker[2] > noise[2], "{talker:?} vs {noise:?}");
    }

    #[test]
    fn removing_the_dominant_speaker_hands_over_at_the_next_decision() {
        let ids = [1, 2, 3];
        let mut room = Room::new(&ids, 7);
        let voice = |n: u64, t: Duration| match n {
            1 => Voice::Speech,
            2 if t >= ms(1000) => Voice::Speech,
            _ => Voice::Silence,
        };
        room.run(Room::frames(ms(3000)), voice, &ids);
        assert_eq!(room.ds.dominant(), Some(id(1)));
        room.ds.remove(id(1));
        assert_eq!(room.ds.dominant(), None);
        assert_eq!(room.ds.scores(id(1)), None);
        let before = room.changes.len();
        room.run(Room::frames(ms(400)), voice, &[2, 3]);
        assert_eq!(
            room.changes[before..]
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [id(2)]
        );
        assert!(room.changes[before].0 - ms(3000) <= ms(320));
        // Levels for a removed participant are ignored.
        room.ds.on_level(id(1), room.base + room.now(), 10);
        room.run(Room::frames(ms(1000)), voice, &[2, 3]);
        assert_eq!(room.ds.dominant(), Some(id(2)));
    }

    #[test]
    fn ties_go_to_the_lowest_id_and_runs_are_reproducible() {
        // Two participants sending identical levels: the lower id wins, in any order of adding.
        let mut ds = DominantSpeaker::new(DominantConfig::default());
        ds.add(id(9));
        ds.add(id(4));
        ds.add(id(4));
        let base = t0();
        let mut rng = Rng::new(8);
        let mut first = None;
        for frame in 0..100u32 {
            let t = base + FRAME * frame;
            let level = level(Voice::Speech, &mut rng).expect("speech has levels");
            ds.on_level(id(9), t, level);
            ds.on_level(id(4), t, level);
            if let Some(new) = ds.update(t + FRAME) {
                first.get_or_insert(new);
            }
        }
        assert_eq!(first, Some(id(4)));
        assert_eq!(ds.dominant(), Some(id(4)));
        assert_eq!(ds.scores(id(4)), ds.scores(id(9)));

        let run = |seed| {
            let ids = [1, 2, 3];
            let mut room = Room::new(&ids, seed);
            let voice = |n: u64, t: Duration| {
                let turn = (t.as_millis() / 2300) as u64 % 3 + 1;
                if n == turn {
                    Voice::Speech
                } else {
                    Voice::Silence
                }
            };
            room.run(Room::frames(ms(12_000)), voice, &ids);
            room.changes
        };
        let changes = run(9);
        assert!(changes.len() >= 4, "{changes:?}");
        assert_eq!(changes, run(9));
    }

    #[test]
    fn a_long_pause_between_updates_counts_as_silence() {
        let ids = [1];
        let mut room = Room::new(&ids, 10);
        room.run(Room::frames(ms(2000)), |_, _| Voice::Speech, &ids);
        assert!(room.ds.scores(id(1)).expect("tracked")[2] > 100.0);
        // No updates and no levels for 10 s, then one update: everything decayed, still dominant.
        room.frame += Room::frames(ms(10_000));
        room.run(1, |_, _| Voice::Quiet, &ids);
        let scores = room.ds.scores(id(1)).expect("tracked");
        assert_eq!(
            scores,
            [
                room.ds.scores[0][0],
                room.ds.scores[1][0],
                room.ds.scores[2][0]
            ]
        );
        assert_eq!(room.ds.dominant(), Some(id(1)));
    }

    #[test]
    fn score_tables_follow_the_model() {
        let ds = DominantSpeaker::new(DominantConfig::default());
        // Long and medium scores grow with activity (large noise rates), and are finite.
        for (scale, n_max) in [(1, N2), (2, N3)] {
            for n in 0..n_max {
                assert!(
                    ds.scores[scale][n + 1] > ds.scores[scale][n],
                    "scale {scale} n {n}"
                );
            }
        }
        // ln(C(13,0)·0.5¹³ / 0.78) = 13·ln 0.5 − ln 0.78
        let expected = 13.0 * 0.5f64.ln() - 0.78f64.ln();
        assert!((ds.scores[0][0] - expected).abs() < 1e-9);
        // ln C(5,2) = ln 10
        let expected = 10f64.ln() + 5.0 * 0.5f64.ln() - 24f64.ln() + 48.0;
        assert!((ds.scores[1][2] - expected).abs() < 1e-9);
        assert!(ds.scores[0].iter().all(|s| s.is_finite()));
    }

    #[test]
    fn the_noise_floor_follows_the_quietest_recent_level() {
        let mut speaker = Speaker::new(id(1));
        assert_eq!(update_floor(&mut speaker, 0, 15, 40), 40);
        assert_eq!(update_floor(&mut speaker, 0, 15, 60), 60);
        assert_eq!(update_floor(&mut speaker, 1, 15, 30), 60);
        // 15 slots later the quiet slot has been overwritten.
        assert_eq!(update_floor(&mut speaker, 15, 15, 30), 30);
        // A jump past the whole window forgets everything.
        assert_eq!(update_floor(&mut speaker, 100, 15, 35), 35);
    }
}
