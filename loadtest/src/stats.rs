//! Counting what arrives: per-stream loss and jitter (RFC 3550), and percentiles.

use std::time::Instant;

use media_core::audio::SAMPLE_RATE;

/// Receive statistics of one RTP stream (one slot of one subscriber).
#[derive(Clone, Debug)]
pub struct StreamStats {
    first_seq: u64,
    max_seq: u64,
    pub received: u64,
    /// RFC 3550 interarrival jitter, in RTP timestamp units (48 kHz).
    jitter: f64,
    last_transit: Option<f64>,
    epoch: Instant,
}

impl StreamStats {
    pub fn new(seq: u64, epoch: Instant) -> StreamStats {
        StreamStats {
            first_seq: seq,
            max_seq: seq,
            received: 0,
            jitter: 0.0,
            last_transit: None,
            epoch,
        }
    }

    /// One packet: its extended sequence number, RTP timestamp (48 kHz) and arrival time.
    pub fn packet(&mut self, seq: u64, timestamp: u32, arrival: Instant) {
        self.received += 1;
        if seq > self.max_seq {
            self.max_seq = seq;
        }
        if seq < self.first_seq {
            self.first_seq = seq;
        }
        let clock_hz = f64::from(SAMPLE_RATE);
        let arrival_units = arrival.saturating_duration_since(self.epoch).as_secs_f64() * clock_hz;
        let transit = arrival_units - f64::from(timestamp);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A timestamp that wrapped or jumped by more than a second is a discontinuity, not jitter.
            if d > clock_hz {
                d = 0.0;
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets the sequence numbers say were sent.
    pub fn expected(&self) -> u64 {
        self.max_seq - self.first_seq + 1
    }

    /// Packets missing (never negative; duplicates do not count as negative loss).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter / 48.0
    }
}

/// Percentile `p` (0..=100) of `sorted` (ascending), nearest rank; `None` if empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 / p95 / p99 / max of a set of values.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Summary {
    pub fn of(values: &mut [f64]) -> Summary {
        values.sort_by(f64::total_cmp);
        Summary {
            count: values.len(),
            p50: percentile(values, 50.0),
            p95: percentile(values, 95.0),
            p99: percentile(values, 99.0),
            max: values.last().copied(),
            mean: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loss_counts_the_gaps() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(100, t0);
        for seq in (100..200).filter(|s| s % 10 != 3) {
            s.packet(
                seq,
                (seq as u32) * 960,
                t0 + Duration::from_millis(seq * 20),
            );
        }
        assert_eq!(s.expected(), 100);
        assert_eq!(s.received, 90);
        assert_eq!(s.lost(), 10);
    }

    #[test]
    fn jitter_is_zero_for_a_perfect_clock_and_grows_with_delay_variation() {
        let t0 = Instant::now();
        let mut s = StreamStats::new(0, t0);
        for seq in 0..200u64 {
            s.packet(seq, seq as u32 * 960, t0 + Duration::from_millis(seq * 20));
        }
        assert!(s.jitter_ms() < 0.01);
        let mut j = StreamStats::new(0, t0);
        for seq in 0..2000u64 {
            let wobble = if seq % 2 == 0 { 0 } else { 4 };
            j.packet(
                seq,
                seq as u32 * 960,
                t0 + Duration::from_millis(seq * 20 + wobble),
            );
        }
        // Alternating 4 ms delay: |D| = 4 ms every packet, so J converges to 4 ms.
        assert!((j.jitter_ms() - 4.0).abs() < 0.1, "{}", j.jitter_ms());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.p50, Some(50.0));
        assert_eq!(s.p95, Some(95.0));
        assert_eq!(s.p99, Some(99.0));
        assert_eq!(s.max, Some(100.0));
        assert_eq!(Summary::of(&mut []).p50, None);
    }
}
