//! The churn schedule: when participants leave and join.

use std::time::Duration;

use crate::talk::Rng;

/// Churn events as a Poisson process: exponential gaps with mean 60 / `per_min` s, from a seeded stream.
pub struct ChurnSchedule {
    rng: Rng,
    mean_gap_s: Option<f64>,
    abrupt: f64,
}

/// One churn event: which of the `n` candidates leaves (an index into the caller's list) and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChurnEvent {
    pub pick: usize,
    pub abrupt: bool,
}

impl ChurnSchedule {
    pub fn new(per_min: f64, abrupt: f64, seed: u64) -> ChurnSchedule {
        ChurnSchedule {
            rng: Rng::new(seed ^ 0xC4A2_0000_5EED),
            mean_gap_s: (per_min > 0.0).then(|| 60.0 / per_min),
            abrupt,
        }
    }

    /// Time to the next event; `None` without churn.
    pub fn next_gap(&mut self) -> Option<Duration> {
        let mean = self.mean_gap_s?;
        Some(Duration::from_secs_f64(self.rng.exp(mean)))
    }

    /// Who leaves among `n` candidates, and whether abruptly; `None` when there is nobody.
    pub fn pick(&mut self, n: usize) -> Option<ChurnEvent> {
        if n == 0 {
            return None;
        }
        let pick = (self.rng.next_u64() % n as u64) as usize;
        let abrupt = self.rng.unit() < self.abrupt;
        Some(ChurnEvent { pick, abrupt })
    }
}
