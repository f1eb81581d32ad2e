//! Arrival-delay estimation: timestamp unwrapping, the sliding-minimum transit baseline, the delay
//! histogram and its target, and the loss margin (see the [module docs](super)).

use super::*;

impl JitterBuffer {
    pub(super) fn seed_histogram(&mut self) {
        let start = duration_us(self.config.initial_delay) - duration_us(self.config.headroom);
        // The bucket whose upper edge is the first at or above `start`.
        let index = usize::try_from((start - 1).max(0) / BUCKET_US)
            .unwrap_or(usize::MAX)
            .min(self.histogram.len() - 1);
        self.histogram.iter_mut().for_each(|b| *b = 0.0);
        self.histogram[index] = 1.0;
        self.update_target();
    }

    pub(super) fn unwrap_ts(&self, ts: u32) -> i64 {
        match self.max_ts {
            None => i64::from(ts),
            // Truncating to u32 keeps the value modulo 2³², which is all wrapping arithmetic needs.
            Some(max) => max + i64::from(ts.wrapping_sub(max as u32) as i32),
        }
    }

    /// The minimum transit over the window, or `None` when the newest measurement is older than the window
    /// (after a long pause the old baseline may have drifted).
    pub(super) fn baseline(&mut self, arrival_us: i64) -> Option<i64> {
        let horizon = arrival_us - duration_us(self.config.window);
        let newest = self.window.back()?;
        if newest.0 < horizon {
            return None;
        }
        while self.window.len() > 1 && self.window.front().is_some_and(|f| f.0 < horizon) {
            self.window.pop_front();
        }
        self.window.front().map(|f| f.1)
    }

    pub(super) fn measure(
        &mut self,
        arrival_us: i64,
        transit: i64,
        baseline: Option<i64>,
        samples: u32,
    ) {
        if baseline.is_none() {
            self.window.clear();
        }
        while self.window.back().is_some_and(|b| b.1 >= transit) {
            self.window.pop_back();
        }
        if self.window.len() >= WINDOW_CAPACITY {
            self.window.pop_front();
        }
        self.window.push_back((arrival_us, transit));
        let Some(min) = baseline else {
            return;
        };
        let relative = (transit - min).max(0);
        let last = self.histogram.len() - 1;
        let index = usize::try_from(relative / BUCKET_US)
            .unwrap_or(last)
            .min(last);
        // A new stream's histogram is the seed and the delays measured so far, each weighing alike (the
        // seed counts as one measurement): the n-th keeps n / (n + 1) of the mass, until the forgetting
        // factor keeps less (from the 200th, at 0.995). The seed alone used to fade at the forgetting
        // factor's pace, so the target stayed at `initial_delay` for 3.5 s whatever was measured, then fell
        // to the floor at once, 50 ms at a 10 ms floor: beyond `force_margin`, and loud packets of the first
        // long sentence were dropped.
        self.measured = self.measured.saturating_add(1);
        let n = f64::from(self.measured);
        let forget = self
            .config
            .forget_factor
            .clamp(0.0, 1.0)
            .powf(f64::from(samples) / f64::from(TICK_SAMPLES))
            .min(n / (n + 1.0));
        self.histogram.iter_mut().for_each(|b| *b *= forget);
        self.histogram[index] += 1.0 - forget;
        // Against the percentile's target before this delay moves it: a stall's packets are peaks.
        let started = self.peaks.note(arrival_us, relative, self.base_target_us);
        self.stats.delay_peaks += u64::from(started);
        self.update_target();
    }

    pub(super) fn update_target(&mut self) {
        let total: f64 = self.histogram.iter().sum();
        let wanted = self.config.percentile.clamp(0.0, 1.0) * total;
        let mut cumulative = 0.0;
        let mut index = self.histogram.len() - 1;
        for (i, mass) in self.histogram.iter().enumerate() {
            cumulative += mass;
            if cumulative >= wanted {
                index = i;
                break;
            }
        }
        let upper = (i64::try_from(index).unwrap_or(i64::MAX) + 1) * BUCKET_US;
        let min = duration_us(self.config.min_delay);
        let max = duration_us(self.config.max_delay).max(min);
        let margin = if self.loss_margin && self.redundancy {
            samples_to_us(i64::from(self.last_samples.min(MAX_PACKET_SAMPLES)))
        } else {
            0
        };
        // The headroom covers what the percentile has not seen yet, in proportion to what it has: a stream
        // whose delays spread little (a LAN, loopback, a worker that stamps arrivals with the kernel's
        // receive time) gets at most that spread again, not the full headroom.
        let headroom = duration_us(self.config.headroom).min(upper);
        self.base_target_us = (upper + headroom).clamp(min, max);
        // Repeating delay peaks the percentile does not see are covered too (to the next 1 ms).
        let peak = (self.peaks.height() + 999) / 1000 * 1000;
        // The loss margin comes on top of the floor: the next packet must be there, whatever the floor.
        self.target_us = (self.base_target_us.max(peak.min(max)) + margin).min(max);
        self.grow_target_us = (self.base_target_us + margin).min(max);
    }

    /// A packet plays after `missing` lost ones; `lost` if it is itself a copy recovered from RED (its
    /// original was lost on the wire); `fec_mode` if its mode can carry in-band FEC. Updates the loss
    /// estimate and the loss margin.
    pub(super) fn note_loss(&mut self, missing: u64, lost: bool, fec_mode: bool) {
        let keep = 1.0 - LOSS_SMOOTHING;
        // A long run of loss saturates the estimate long before 256 packets.
        let missing = i32::try_from(missing.min(256)).unwrap_or(256);
        self.loss_rate = 1.0 - (1.0 - self.loss_rate) * keep.powi(missing);
        self.loss_rate = self.loss_rate * keep + if lost { LOSS_SMOOTHING } else { 0.0 };
        let margin = if self.loss_margin {
            self.loss_rate >= LOSS_MARGIN_OFF
        } else {
            self.loss_rate >= LOSS_MARGIN_ON
        };
        let redundancy = fec_mode || self.red_seen;
        if margin != self.loss_margin || redundancy != self.redundancy {
            self.loss_margin = margin;
            self.redundancy = redundancy;
            self.update_target();
        }
    }
}
