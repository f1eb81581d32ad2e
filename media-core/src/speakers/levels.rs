//! Per-publisher loudness tracking from RFC 6464 audio levels.
//!
//! Every audio packet carries the `ssrc-audio-level` header extension: the packet's RMS level as `-dBov`
//! (0 = full scale, 127 = silence) and optionally a voice-activity flag. A [`LevelTracker`] turns that stream
//! into three things:
//!
//! - a smoothed loudness ([`LevelTracker::smoothed_dbov`], [`LevelTracker::score`]) for choosing the loudest
//!   speakers: exponential smoothing of the *linear* energy, with a fast attack (100 ms) and a slower decay
//!   (300 ms). Smoothing energy rather than dB makes loud syllables dominate, as loudness perception does;
//!   it also makes the attack fast in dB terms (one loud packet after silence lifts the level to within
//!   ~7 dB of it). Packets stop during DTX: once none has come for more than 100 ms the missing time counts
//!   as silence, so the loudness decays (≈ 14.5 dB/s) towards nothing instead of freezing;
//! - a display level in `0.0..=1.0` ([`LevelTracker::level`]) for the `speakers` event;
//! - a speaking flag ([`LevelTracker::is_speaking`]) with hysteresis: speech starts after a few consecutive
//!   packets of at least −50 dBov (3 packets: 40–60 ms after onset) and ends 500 ms after the last packet of
//!   at least −55 dBov.
//!
//! Each packet is taken to represent one frame of [`LevelConfig::frame`] (20 ms), whatever its arrival time:
//! bursts after network jitter then weigh as much as evenly spaced packets, and results do not depend on
//! arrival jitter. Everything is O(1) and allocation-free.

use std::time::{Duration, Instant};

/// The lowest level the trackers represent (RFC 6464's −127 dBov).
pub const FLOOR_DBOV: f32 = -127.0;

/// The dynamic range [`LevelTracker::level`] maps onto `0.0..=1.0`: −60 dBov (a quiet room with a typical
/// microphone) is 0.0, 0 dBov is 1.0, linearly in dB, so normal speech (−20 to −35 dBov) shows as 0.4–0.67.
pub const DISPLAY_RANGE_DB: f32 = 60.0;

/// Linear energy of [`FLOOR_DBOV`]; smoothed energies below it are treated as exact silence.
const FLOOR_ENERGY: f64 = 1.995_262_314_968_883e-13; // 10^(-12.7)

/// Tuning of a [`LevelTracker`]. The defaults suit 20 ms Opus packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelConfig {
    /// The audio duration one packet represents (the sender's ptime).
    pub frame: Duration,
    /// Time constant of the smoothing while the level rises.
    pub attack: Duration,
    /// Time constant of the smoothing while the level falls (and of the decay during missing packets).
    pub decay: Duration,
    /// A gap between packets longer than this counts as silence (DTX, or the sender went away).
    pub missing_after: Duration,
    /// RFC 6464 level (`-dBov`) a packet must reach (be at or below) to count towards speech onset.
    pub speech_threshold: u8,
    /// While speaking, packets at or below this level keep the speech going (hysteresis: ≥ `speech_threshold`).
    pub continue_threshold: u8,
    /// Consecutive loud packets that start speech.
    pub onset_packets: u8,
    /// Speech ends this long after the last loud packet.
    pub hangover: Duration,
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(20),
            attack: Duration::from_millis(100),
            decay: Duration::from_millis(300),
            missing_after: Duration::from_millis(100),
            speech_threshold: 50,
            continue_threshold: 55,
            onset_packets: 3,
            hangover: Duration::from_millis(500),
        }
    }
}

/// Converts an RFC 6464 level (`-dBov`, 0..=127) to linear energy relative to full scale.
#[inline]
pub fn energy_from_level(level: u8) -> f64 {
    let level = level.min(127);
    if level >= 127 {
        return 0.0;
    }
    10f64.powf(-f64::from(level) / 10.0)
}

/// Maps a level in dBov to the `speakers` event's display level in `0.0..=1.0` (see [`DISPLAY_RANGE_DB`]).
#[inline]
pub fn display_level(dbov: f32) -> f32 {
    ((dbov + DISPLAY_RANGE_DB) / DISPLAY_RANGE_DB).clamp(0.0, 1.0)
}

/// Smoothed loudness and speaking state of one publisher. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct LevelTracker {
    config: LevelConfig,
    alpha_attack: f64,
    alpha_decay: f64,
    decay_secs: f64,
    /// Smoothed linear energy as of `last_packet`.
    energy: f64,
    last_packet: Option<Instant>,
    /// Consecutive loud packets (saturating).
    loud_run: u8,
    /// Arrival of the last packet that started or continued speech.
    last_loud: Option<Instant>,
    /// The sender has set the voice-activity flag at least once, so a cleared flag means "no voice".
    vad_seen: bool,
}

impl Default for LevelTracker {
    fn default() -> Self {
        Self::new(LevelConfig::default())
    }
}

impl LevelTracker {
    /// A tracker that has seen no packet yet (silent, not speaking).
    pub fn new(config: LevelConfig) -> Self {
        let frame = config.frame.as_secs_f64();
        let alpha = |tau: Duration| {
            let tau = tau.as_secs_f64();
            if tau <= 0.0 {
                1.0
            } else {
                1.0 - (-frame / tau).exp()
            }
        };
        Self {
            config,
            alpha_attack: alpha(config.attack),
            alpha_decay: alpha(config.decay),
            decay_secs: config.decay.as_secs_f64(),
            energy: 0.0,
            last_packet: None,
            loud_run: 0,
            last_loud: None,
            vad_seen: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LevelConfig {
        &self.config
    }

    /// Forgets everything (e.g. on mute), as if no packet had been seen.
    pub fn reset(&mut self) {
        *self = Self::new(self.config);
    }

    /// Feeds one packet's RFC 6464 level (`-dBov`: 0 loudest, 127 silence) and voice-activity flag, received
    /// at `now`. O(1), no allocation.
    ///
    /// The voice-activity flag is trusted only once the sender has set it at least once (some senders never
    /// set it); after that, a packet with the flag cleared never counts as speech. It does not change the
    /// loudness.
    pub fn on_level(&mut self, now: Instant, level: u8, voice_activity: Option<bool>) {
        let level = level.min(127);
        if voice_activity == Some(true) {
            self.vad_seen = true;
        }
        let voice = !(self.vad_seen && voice_activity == Some(false));

        if let Some(last) = self.last_packet {
            let gap = now.saturating_duration_since(last);
            if gap > self.config.missing_after {
                self.energy *= self.silence_factor(gap);
                self.loud_run = 0;
            }
        }
        let e = energy_from_level(level);
        let alpha = if e > self.energy {
            self.alpha_attack
        } else {
            self.alpha_decay
        };
        self.energy += alpha * (e - self.energy);
        if self.energy < FLOOR_ENERGY {
            self.energy = 0.0;
        }
        // Keep the latest arrival (a packet handed in with an older `now` does not move time backwards).
        if self.last_packet.is_none_or(|t| now > t) {
            self.last_packet = Some(now);
        }

        let speaking = self.is_speaking(now);
        let threshold = if speaking {
            self.config
                .continue_threshold
                .max(self.config.speech_threshold)
        } else {
            self.config.speech_threshold
        };
        if voice && level <= threshold {
            self.loud_run = self.loud_run.saturating_add(1);
            let started = speaking || self.loud_run >= self.config.onset_packets;
            if started && self.last_loud.is_none_or(|t| now > t) {
                self.last_loud = Some(now);
            }
        } else {
            self.loud_run = 0;
        }
    }

    /// The factor the energy decays by over a gap of `gap` without packets (the gap less one frame of audio,
    /// the last packet's own, counts as silence).
    fn silence_factor(&self, gap: Duration) -> f64 {
        if self.decay_secs <= 0.0 {
            return 0.0;
        }
        let silent = gap.saturating_sub(self.config.frame).as_secs_f64();
        (-silent / self.decay_secs).exp()
    }

    /// The smoothed linear energy at `now` (relative to full scale; 0.0 = silence).
    pub fn energy(&self, now: Instant) -> f64 {
        let Some(last) = self.last_packet else {
            return 0.0;
        };
        let gap = now.saturating_duration_since(last);
        let e = if gap > self.config.missing_after {
            self.energy * self.silence_factor(gap)
        } else {
            self.energy
        };
        if e < FLOOR_ENERGY {
            0.0
        } else {
            e
        }
    }

    /// The smoothed level at `now` in dBov, `FLOOR_DBOV..=0.0` (−127 for silence or no packets).
    pub fn smoothed_dbov(&self, now: Instant) -> f32 {
        let e = self.energy(now);
        if e <= 0.0 {
            return FLOOR_DBOV;
        }
        ((10.0 * e.log10()) as f32).clamp(FLOOR_DBOV, 0.0)
    }

    /// The loudness score for speaker selection: the smoothed level in dB above −127 dBov (`0.0..=127.0`).
    /// Higher is louder and differences are in dB; it decays to 0 once packets stop.
    pub fn score(&self, now: Instant) -> f32 {
        self.smoothed_dbov(now) - FLOOR_DBOV
    }

    /// The display level at `now` for the `speakers` event, `0.0..=1.0` (see [`display_level`]).
    pub fn level(&self, now: Instant) -> f32 {
        display_level(self.smoothed_dbov(now))
    }

    /// Whether the publisher is speaking at `now`: speech has started (a few consecutive loud packets) and the
    /// last loud packet is less than the hangover ago.
    pub fn is_speaking(&self, now: Instant) -> bool {
        self.last_loud
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.hangover)
    }

    /// The arrival time of the latest packet, if any.
    pub fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    const MS20: Duration = crate::audio::FRAME_DURATION;

    /// Feeds `n` packets of `level`, 20 ms apart, starting at `*t`; leaves `*t` at the next packet time.
    fn feed(tr: &mut LevelTracker, t: &mut Instant, n: usize, level: u8, va: Option<bool>) {
        for _ in 0..n {
            tr.on_level(*t, level, va);
            *t += MS20;
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(energy_from_level(127), 0.0);
        assert_eq!(energy_from_level(200), 0.0);
        assert!((energy_from_level(0) - 1.0).abs() < 1e-12);
        assert!((energy_from_level(20) - 0.01).abs() < 1e-12);
        assert_eq!(display_level(0.0), 1.0);
        assert_eq!(display_level(-60.0), 0.0);
        assert_eq!(display_level(-127.0), 0.0);
        assert!((display_level(-30.0) - 0.5).abs() < 1e-6);
        assert!((FLOOR_ENERGY - 10f64.powf(-12.7)).abs() < 1e-20);
    }

    #[test]
    fn fresh_tracker_is_silent() {
        let t = t0();
        let tr = LevelTracker::default();
        assert_eq!(tr.score(t), 0.0);
        assert_eq!(tr.level(t), 0.0);
        assert_eq!(tr.smoothed_dbov(t), FLOOR_DBOV);
        assert!(!tr.is_speaking(t));
        assert_eq!(tr.last_packet(), None);
    }

    #[test]
    fn steady_level_converges_and_attack_is_fast() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        tr.on_level(t, 20, None);
        // One packet after silence: within ~8 dB.
        assert!(tr.smoothed_dbov(t) > -28.0, "{}", tr.smoothed_dbov(t));
        t += MS20;
        feed(&mut tr, &mut t, 4, 20, None);
        // 100 ms: within 2 dB.
        assert!(tr.smoothed_dbov(t) > -22.0, "{}", tr.smoothed_dbov(t));
        feed(&mut tr, &mut t, 50, 20, None);
        let now = t - MS20;
        assert!(
            (tr.smoothed_dbov(now) + 20.0).abs() < 0.05,
            "{}",
            tr.smoothed_dbov(now)
        );
        assert!((tr.score(now) - 107.0).abs() < 0.05);
        assert!((tr.level(now) - (40.0 / 60.0)).abs() < 0.01);
    }

    #[test]
    fn louder_scores_higher() {
        let mut t = t0();
        let mut a = LevelTracker::default();
        let mut b = LevelTracker::default();
        for _ in 0..50 {
            a.on_level(t, 25, None);
            b.on_level(t, 35, None);
            t += MS20;
        }
        let d = a.score(t) - b.score(t);
        assert!((d - 10.0).abs() < 0.1, "{d}");
    }

    #[test]
    fn decays_through_quiet_packets_and_through_missing_packets_alike() {
        let mut t = t0();
        let mut with_packets = LevelTracker::default();
        let mut dtx = LevelTracker::default();
        for _ in 0..50 {
            with_packets.on_level(t, 20, None);
            dtx.on_level(t, 20, None);
            t += MS20;
        }
        let start = t - MS20;
        // 50 silence packets vs. nothing at all for 1 s.
        for _ in 0..50 {
            with_packets.on_level(t, 127, None);
            t += MS20;
        }
        let end = t - MS20;
        let a = with_packets.smoothed_dbov(end);
        let b = dtx.smoothed_dbov(end);
        assert!((a - b).abs() < 0.5, "{a} vs {b}");
        // 1 s at 300 ms decay: about 14.5 dB down.
        assert!((a - (-20.0 - 14.5)).abs() < 1.0, "{a}");
        // Within 100 ms of the last packet nothing decays (jitter, one lost packet).
        assert_eq!(
            dtx.smoothed_dbov(start + Duration::from_millis(100)),
            dtx.smoothed_dbov(start)
        );
        assert!(dtx.smoothed_dbov(start + Duration::from_millis(101)) < dtx.smoothed_dbov(start));
        // Eventually to nothing.
        assert_eq!(dtx.score(start + Duration::from_secs(10)), 0.0);
        assert_eq!(dtx.level(start + Duration::from_secs(10)), 0.0);
        // A packet after a long gap starts from (almost) silence.
        dtx.on_level(start + Duration::from_secs(10), 60, None);
        assert!(dtx.smoothed_dbov(start + Duration::from_secs(10)) < -60.0);
    }

    #[test]
    fn speech_onset_is_fast_and_needs_a_few_loud_packets() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 20, 80, Some(true));
        assert!(!tr.is_speaking(t));
        let onset = t;
        tr.on_level(t, 30, Some(true));
        assert!(!tr.is_speaking(t));
        t += MS20;
        tr.on_level(t, 30, Some(true));
        assert!(!tr.is_speaking(t));
        t += MS20;
        tr.on_level(t, 30, Some(true));
        assert!(tr.is_speaking(t));
        assert!(t - onset <= Duration::from_millis(60));
    }

    #[test]
    fn isolated_loud_packets_do_not_start_speech() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        for _ in 0..20 {
            feed(&mut tr, &mut t, 2, 30, None);
            feed(&mut tr, &mut t, 1, 90, None);
            assert!(!tr.is_speaking(t));
        }
    }

    #[test]
    fn speech_ends_after_hangover_with_hysteresis() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 10, 30, None);
        assert!(tr.is_speaking(t));
        // Between the thresholds (−53 dBov): continues speech once started.
        feed(&mut tr, &mut t, 50, 53, None);
        assert!(tr.is_speaking(t));
        // Quiet: ends 500 ms after the last loud packet.
        let last_loud = t - MS20;
        feed(&mut tr, &mut t, 30, 90, None);
        assert!(tr.is_speaking(last_loud + Duration::from_millis(499)));
        assert!(!tr.is_speaking(last_loud + Duration::from_millis(500)));
        // −53 dBov does not start speech on its own.
        feed(&mut tr, &mut t, 50, 53, None);
        assert!(!tr.is_speaking(t));
    }

    #[test]
    fn dtx_ends_speech_after_hangover() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 10, 25, None);
        let last = t - MS20;
        assert!(tr.is_speaking(last + Duration::from_millis(400)));
        assert!(!tr.is_speaking(last + Duration::from_millis(600)));
    }

    #[test]
    fn a_gap_resets_the_onset_count() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 2, 30, None);
        t += Duration::from_millis(500);
        feed(&mut tr, &mut t, 1, 30, None);
        assert!(!tr.is_speaking(t));
        feed(&mut tr, &mut t, 2, 30, None);
        assert!(tr.is_speaking(t));
    }

    #[test]
    fn voice_activity_flag_is_trusted_once_seen() {
        let mut t = t0();
        // A sender that never sets V: loud packets with V=0 are speech.
        let mut never = LevelTracker::default();
        feed(&mut never, &mut t, 5, 30, Some(false));
        assert!(never.is_speaking(t));
        // A sender that uses V: loud packets with V=0 are not speech (but still count for loudness).
        let mut uses = LevelTracker::default();
        feed(&mut uses, &mut t, 1, 90, Some(true));
        feed(&mut uses, &mut t, 10, 30, Some(false));
        assert!(!uses.is_speaking(t));
        assert!(uses.smoothed_dbov(t) > -32.0);
        feed(&mut uses, &mut t, 3, 30, Some(true));
        assert!(uses.is_speaking(t));
    }

    #[test]
    fn bursts_and_out_of_order_times_are_tolerated() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 10, 20, None);
        // A burst of three packets at the same instant, then one with an older time.
        for _ in 0..3 {
            tr.on_level(t, 20, None);
        }
        tr.on_level(t - Duration::from_millis(30), 20, None);
        assert_eq!(tr.last_packet(), Some(t));
        assert!(tr.smoothed_dbov(t) > -22.0);
        assert!(tr.is_speaking(t));
    }

    #[test]
    fn reset_forgets() {
        let mut t = t0();
        let mut tr = LevelTracker::default();
        feed(&mut tr, &mut t, 10, 20, None);
        tr.reset();
        assert_eq!(tr.score(t), 0.0);
        assert!(!tr.is_speaking(t));
        assert_eq!(tr.config(), &LevelConfig::default());
    }
}
