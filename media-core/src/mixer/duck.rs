//! Ducking: while an announcement plays, the room's mixer lowers every other voice by a gain set by the
//! announcement's arrival ([`Mixer::set_duck`](super::Mixer::set_duck)) and lifts it when it leaves, with
//! linear ramps of [`DUCK_RAMP`] so neither edge clicks. The gain is one per room and moves once per tick:
//! every ducked talker of a tick gets the same ramp, so mixes and mix-minus stay consistent.

use std::time::Duration;

use crate::audio::FRAME_SAMPLES;
use crate::ids::ParticipantId;

/// How long the gain takes to move between full level and the duck level (either way).
pub const DUCK_RAMP: Duration = Duration::from_millis(60);

/// Samples of one full ramp at 48 kHz.
const RAMP_SAMPLES: f32 = (DUCK_RAMP.as_micros() as f32) * 48.0 / 1000.0;

/// The linear gain of `db` decibels.
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// The room's duck: whose voice is exempt (the announcement) and the gain everyone else is moving to.
#[derive(Clone, Debug, PartialEq)]
pub struct Duck {
    exempt: Option<ParticipantId>,
    target: f32,
    gain: f32,
    /// How far the last duck went below full level: the ramp's height, so both edges take [`DUCK_RAMP`].
    depth: f32,
}

impl Default for Duck {
    fn default() -> Self {
        Duck {
            exempt: None,
            target: 1.0,
            gain: 1.0,
            depth: 1.0,
        }
    }
}

impl Duck {
    /// Lower everyone but `exempt` to `gain` (linear, 0..=1).
    pub fn set(&mut self, exempt: ParticipantId, gain: f32) {
        self.exempt = Some(exempt);
        self.target = gain.clamp(0.0, 1.0);
        self.depth = (1.0 - self.target).max(0.01);
    }

    /// `id` left the room: if it was the announcement, everyone goes back to full level.
    pub fn member_left(&mut self, id: ParticipantId) {
        if self.exempt == Some(id) {
            self.exempt = None;
            self.target = 1.0;
        }
    }

    /// Whether `id` is the announcement (never lowered).
    pub fn is_exempt(&self, id: ParticipantId) -> bool {
        self.exempt == Some(id)
    }

    /// Advances one tick: the gain at its start and at its end.
    pub fn advance(&mut self) -> (f32, f32) {
        let start = self.gain;
        let step = FRAME_SAMPLES as f32 / RAMP_SAMPLES * self.depth;
        self.gain = if self.gain < self.target {
            (self.gain + step).min(self.target)
        } else {
            (self.gain - step).max(self.target)
        };
        (start, self.gain)
    }
}

/// Scales `frame` (one tick, interleaved when stereo) from `start` to `end` linearly.
pub fn apply_ramp(frame: &mut [f32], start: f32, end: f32) {
    let n = frame.len().max(1) as f32;
    for (i, s) in frame.iter_mut().enumerate() {
        *s *= start + (end - start) * (i as f32 + 1.0) / n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(duck: &mut Duck, n: usize) -> Vec<(f32, f32)> {
        (0..n).map(|_| duck.advance()).collect()
    }

    #[test]
    fn the_gain_ramps_down_to_the_duck_level_and_back_without_jumps() {
        let mut duck = Duck::default();
        let announcer = ParticipantId(7);
        let talker = ParticipantId(1);
        assert_eq!(duck.advance(), (1.0, 1.0), "no duck: full level");
        duck.set(announcer, db_to_gain(-12.0));
        assert!(!duck.is_exempt(talker));
        assert!(duck.is_exempt(announcer));
        let down = ticks(&mut duck, 10);
        // Continuous: each tick starts where the last ended; the ramp takes DUCK_RAMP (3 ticks).
        for w in down.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        let ticks_down = down.iter().position(|t| t.1 == db_to_gain(-12.0)).unwrap() + 1;
        assert_eq!(ticks_down, 3, "{down:?}");
        // No step in a tick larger than the ramp's slope allows: no click.
        assert!(down.iter().all(|(a, b)| (a - b).abs() <= 0.35));
        duck.member_left(talker);
        assert!(
            duck.is_exempt(announcer),
            "another member leaving changes nothing"
        );
        duck.member_left(announcer);
        let up = ticks(&mut duck, 10);
        assert_eq!(up.last().unwrap().1, 1.0);
        assert!(up.iter().all(|(a, b)| b >= a && (a - b).abs() <= 0.35));
        assert!(!duck.is_exempt(announcer));
        assert_eq!(duck.advance(), (1.0, 1.0), "back at full level");
    }

    #[test]
    fn a_ramp_scales_a_frame_linearly_to_its_end_gain() {
        let mut frame = vec![1.0f32; 960];
        apply_ramp(&mut frame, 1.0, 0.5);
        assert!((frame[959] - 0.5).abs() < 1e-6);
        assert!((frame[479] - 0.75).abs() < 1e-3);
        assert!(frame.windows(2).all(|w| w[1] <= w[0]));
        assert!((db_to_gain(-12.0) - 0.2512).abs() < 1e-3);
    }
}
