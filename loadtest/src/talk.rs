//! Who talks when: a seeded on/off model after ITU-T P.59.
//!
//! P.59 (artificial conversational speech) gives, for one talker, talkspurts with a mean of 1.004 s and
//! pauses with a mean of 1.587 s, both roughly exponential (activity ≈ 39 %). Each talker here alternates
//! exponentially distributed spurts and pauses with those means, from its own seeded random stream, so a
//! run is reproducible. `Continuous` talkers never pause (for tests that need exact packet counts).

/// Mean talkspurt, seconds (ITU-T P.59).
pub const P59_SPURT_S: f64 = 1.004;
/// Mean pause, seconds (ITU-T P.59).
pub const P59_PAUSE_S: f64 = 1.587;

/// A small seeded PRNG (SplitMix64): fast, reproducible, good enough for traffic models.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// The talk model of one publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TalkModel {
    /// ITU-T P.59 spurts and pauses.
    P59,
    /// Always talking.
    Continuous,
}

/// One talker's state, advanced one 20 ms frame at a time.
#[derive(Clone, Debug)]
pub struct Talker {
    model: TalkModel,
    rng: Rng,
    talking: bool,
    /// Frames left in the current spurt or pause.
    left: u32,
}

const FRAME_S: f64 = 0.020;

impl Talker {
    /// A talker; P.59 talkers start in a spurt so that a fresh room has audio at once.
    pub fn new(model: TalkModel, seed: u64) -> Talker {
        let mut rng = Rng::new(seed);
        let left = match model {
            TalkModel::P59 => frames(rng.exp(P59_SPURT_S)),
            TalkModel::Continuous => u32::MAX,
        };
        Talker {
            model,
            rng,
            talking: true,
            left,
        }
    }

    /// Advance one frame; returns whether this frame is speech.
    pub fn next_frame(&mut self) -> bool {
        if self.model == TalkModel::Continuous {
            return true;
        }
        while self.left == 0 {
            self.talking = !self.talking;
            let mean = if self.talking {
                P59_SPURT_S
            } else {
                P59_PAUSE_S
            };
            self.left = frames(self.rng.exp(mean));
        }
        self.left -= 1;
        self.talking
    }
}

fn frames(seconds: f64) -> u32 {
    (seconds / FRAME_S).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p59_talkers_are_active_about_39_percent_with_the_right_spurt_length() {
        let mut t = Talker::new(TalkModel::P59, 42);
        let n = 500_000;
        let mut active = 0;
        let mut spurts = 0;
        let mut prev = false;
        for _ in 0..n {
            let on = t.next_frame();
            if on {
                active += 1;
            }
            if on && !prev {
                spurts += 1;
            }
            prev = on;
        }
        let share = active as f64 / n as f64;
        let expected = P59_SPURT_S / (P59_SPURT_S + P59_PAUSE_S);
        assert!((share - expected).abs() < 0.02, "activity {share}");
        let mean_spurt = active as f64 * FRAME_S / spurts as f64;
        assert!(
            (mean_spurt - P59_SPURT_S).abs() < 0.1,
            "mean spurt {mean_spurt}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_talk() {
        let mut a = Talker::new(TalkModel::P59, 9);
        let mut b = Talker::new(TalkModel::P59, 9);
        for _ in 0..10_000 {
            assert_eq!(a.next_frame(), b.next_frame());
        }
    }

    #[test]
    fn continuous_talkers_never_pause() {
        let mut t = Talker::new(TalkModel::Continuous, 1);
        assert!((0..10_000).all(|_| t.next_frame()));
    }
}
