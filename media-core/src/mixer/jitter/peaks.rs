//! Delay peaks: the rare, large delays that the percentile does not cover (see the [module docs](super),
//! "Delay peaks").
//!
//! A calm link with an occasional stall (a Wi-Fi retry burst, a queue behind a burst of cross traffic) has
//! a 95th percentile of a few milliseconds, while every few seconds a packet or two come 15–60 ms late:
//! too rare to move the percentile, too frequent to conceal every time. A peak is a delay above the
//! percentile's own target (its bucket edge plus headroom, at least the floor); delays within
//! [`PEAK_MERGE_US`] of a peak belong to it. The target covers the highest peak seen within
//! [`PEAK_MEMORY_US`], from the first one on: the first stall costs a concealment and raises the target.
//! (NetEQ waits for a second peak; in virtual-time speech with a stall every ~2 s, waiting for it cost a
//! second concealment early in every call: PESQ-WB 3.81 against 4.17 at 30 ms stalls, media-core's speech
//! tests.)

use std::collections::VecDeque;

/// Delays this soon after a peak's first late packet belong to that peak (one stall delays a burst).
pub(super) const PEAK_MERGE_US: i64 = 200_000;
/// A peak is remembered this long (measured in arrival time): peaks every 10 s keep the target up.
pub(super) const PEAK_MEMORY_US: i64 = 20_000_000;
/// Peaks remembered at most (the newest).
const MAX_PEAKS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peak {
    /// Arrival of its first late packet (µs on the buffer's arrival clock).
    at_us: i64,
    /// The largest relative delay of its burst (µs).
    height_us: i64,
}

/// The delay peaks of one stream (arrival-clock µs).
#[derive(Clone, Debug, Default)]
pub(super) struct Peaks {
    list: VecDeque<Peak>,
}

impl Peaks {
    /// Notes a relative delay measured at `arrival_us`, where `base_target_us` is what the percentile asks
    /// for (its bucket edge plus headroom, at least the floor), and forgets peaks older than the memory.
    /// Returns whether this delay started a new peak.
    pub(super) fn note(&mut self, arrival_us: i64, relative_us: i64, base_target_us: i64) -> bool {
        let mut started = false;
        while self
            .list
            .front()
            .is_some_and(|p| p.at_us < arrival_us - PEAK_MEMORY_US)
        {
            self.list.pop_front();
        }
        if relative_us > base_target_us {
            match self.list.back_mut() {
                Some(last) if arrival_us - last.at_us <= PEAK_MERGE_US => {
                    last.height_us = last.height_us.max(relative_us);
                }
                _ => {
                    started = true;
                    if self.list.len() == MAX_PEAKS {
                        self.list.pop_front();
                    }
                    self.list.push_back(Peak {
                        at_us: arrival_us,
                        height_us: relative_us,
                    });
                }
            }
        }
        started
    }

    /// The height the target must cover: the highest remembered peak (0: none).
    pub(super) fn height(&self) -> i64 {
        self.list.iter().map(|p| p.height_us).max().unwrap_or(0)
    }

    /// Peaks remembered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const MS: i64 = 1_000;

    #[test]
    fn a_stall_raises_the_target_until_it_is_older_than_the_memory() {
        let mut p = Peaks::default();
        // Calm delays never count.
        for i in 0..100 {
            assert!(!p.note(i * 20 * MS, 3 * MS, 10 * MS));
            assert_eq!(p.height(), 0);
        }
        // A stall: a burst of late packets is one peak, at its highest.
        assert!(p.note(3 * S, 30 * MS, 10 * MS));
        assert_eq!(p.height(), 30 * MS);
        assert!(!p.note(3 * S + 20 * MS, 12 * MS, 10 * MS));
        assert_eq!(p.height(), 30 * MS);
        assert_eq!(p.len(), 1);
        // A second stall 8 s later, lower: the target covers the highest.
        assert!(p.note(11 * S, 18 * MS, 10 * MS));
        assert_eq!(p.height(), 30 * MS);
        assert_eq!(p.len(), 2);
        // Each forgotten once older than the memory.
        assert!(!p.note(3 * S + PEAK_MEMORY_US + MS, 3 * MS, 10 * MS));
        assert_eq!(p.height(), 18 * MS);
        assert!(!p.note(11 * S + PEAK_MEMORY_US + MS, 3 * MS, 10 * MS));
        assert_eq!(p.height(), 0);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn peaks_are_measured_against_the_percentiles_target_and_bounded_in_number() {
        let mut p = Peaks::default();
        // At or below what the percentile covers: not a peak.
        assert!(!p.note(0, 10 * MS, 10 * MS));
        assert_eq!(p.height(), 0);
        assert_eq!(p.len(), 0);
        for i in 0..20 {
            assert!(p.note(i * S, 15 * MS + i * MS, 10 * MS), "each a new peak");
        }
        assert_eq!(p.len(), MAX_PEAKS);
        // The newest eight: 27..=34 ms.
        assert_eq!(p.height(), 34 * MS);
    }
}
