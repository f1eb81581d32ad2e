//! Clock drift between the SDK's playout and the game's audio device.
//!
//! The network thread plays every slot out on 20 ms ticks of the system clock (the jitter buffer already
//! absorbs the *sender's* clock: it plays by RTP timestamp against a sliding-minimum arrival baseline). The
//! game's playback callback pulls from the output ring at its device's rate, which differs from the system
//! clock by up to a few hundred ppm: uncorrected, the ring fills until it overflows (drops, and up to
//! `buffer_ms` of added latency) or runs dry once every few minutes (an audible gap each time).
//!
//! A [`DriftCompensator`] sits in front of each output ring. It watches the ring's fill just before each
//! push — the lowest point since the last push, since only pulls happened in between — and keeps the
//! lowest fill of each 1 s window at a small margin ([`TARGET_MARGIN`]) with a PI controller on a slight
//! resampling ratio (linear interpolation, at most ±0.2 %: 3.5 cents, inaudible). The controller's
//! integral learns the drift itself, so the ratio settles at the device's rate. Large errors are corrected
//! coarsely where nobody hears it: a ring that ran dry gets [`TARGET_MARGIN`] of silence (as at the start of
//! playout), and a ring far above the margin (the game started pulling late, or paused) loses whole silent
//! frames.
//!
//! A stereo ring holds interleaved L/R samples: the compensator measures, pads, drops and resamples whole
//! sample frames (both channels at the same instants), so a channel never slides into the other.

use rtrb::Producer;

/// The lowest fill the ring is kept at (just before a push): the margin for the network thread waking
/// late. At most a quarter of the ring.
const TARGET_MARGIN_MS: usize = 20;
/// The fill is judged over windows of this many 20 ms ticks (1 s).
const WINDOW_TICKS: u32 = 50;
const WINDOW_SECS: f64 = WINDOW_TICKS as f64 * 0.02;
/// The PI controller's gains, for the error in seconds: critically damped at ω = 0.05 rad/s (a 20 s time
/// constant: slow next to the 1 s windows, so the windows' noise moves the ratio by ~100 ppm at most, and
/// fast next to any real drift).
const KP: f64 = 0.1;
const KI: f64 = 0.0025;
/// The largest resampling correction (±0.2 %).
const MAX_CORRECTION: f64 = 0.002;
/// A window whose lowest fill is this far above the margin is corrected by dropping silent frames
/// rather than by resampling (which would take 20 s per 40 ms).
const EXCESS_SECS: f64 = 0.040;
/// A frame whose every sample is below this (−60 dBFS) is silence that may be dropped.
const SILENT_PEAK: f32 = 0.001;

/// The most channels a ring carries (stereo).
pub(crate) const MAX_CHANNELS: usize = 2;

/// One output ring's drift compensation (see the [module docs](self)).
pub(crate) struct DriftCompensator {
    rate_hz: u32,
    /// Interleaved channels per sample frame (1 or 2).
    channels: usize,
    /// [`TARGET_MARGIN_MS`] in sample frames, at most a quarter of the ring.
    target: usize,
    /// The lowest fill of the current window, and how many ticks it has seen.
    window_min: usize,
    window_ticks: u32,
    /// The PI controller's integral of the error (s·s).
    integral: f64,
    /// Output samples per input sample.
    ratio: f64,
    /// Sample frames that may still be dropped in silent frames (from the last window's excess).
    drop_budget: usize,
    /// The resampler's read position in the current frame, in input sample frames (−1: the previous
    /// frame's last one), and that sample frame.
    position: f64,
    previous: [f32; MAX_CHANNELS],
    /// Whether anything was pushed yet (the first push is preceded by the margin of silence).
    started: bool,
    /// The resampled frame.
    out: Vec<f32>,
    counters: DriftCounters,
}

/// What a compensator did, for tests and tools.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct DriftCounters {
    /// Times the ring had run dry and got the margin of silence (the start of playout included).
    pub rebuffers: u64,
    /// Silent frames dropped because the ring was far above the margin.
    pub frames_dropped: u64,
    /// Samples the ring had no room for (each channel's counted).
    pub overflowed: u64,
}

impl DriftCompensator {
    /// A compensator for a ring of `capacity` samples at `rate_hz` with `channels` interleaved (1 or 2),
    /// fed frames of `frame` samples (all channels).
    pub(crate) fn new(rate_hz: u32, channels: usize, capacity: usize, frame: usize) -> Self {
        let channels = channels.clamp(1, MAX_CHANNELS);
        DriftCompensator {
            rate_hz,
            channels,
            target: (rate_hz as usize * TARGET_MARGIN_MS / 1000).min(capacity / channels / 4),
            window_min: usize::MAX,
            window_ticks: 0,
            integral: 0.0,
            ratio: 1.0,
            drop_budget: 0,
            position: 0.0,
            previous: [0.0; MAX_CHANNELS],
            started: false,
            out: Vec::with_capacity(frame * 2 + 2),
            counters: DriftCounters::default(),
        }
    }

    /// Push one frame into `ring` (interleaved, a whole number of sample frames), corrected for drift;
    /// returns how many samples did not fit.
    pub(crate) fn push(&mut self, frame: &[f32], ring: &mut Producer<f32>) -> usize {
        let channels = self.channels;
        // The game pulls whole sample frames, so the fill is one too.
        let fill = (ring.buffer().capacity() - ring.slots()) / channels;
        let mut overflow = 0;
        if !self.started || fill == 0 {
            // The start of playout, or the game pulled everything: the margin of silence first (an
            // underrun was heard already, or nothing was playing).
            self.started = true;
            self.counters.rebuffers += 1;
            overflow += push_silence(ring, self.target * channels, channels);
            self.restart_window();
        } else {
            self.measure(fill);
        }
        let frames = frame.len() / channels;
        if self.drop_budget >= frames && frame.iter().all(|s| s.abs() < SILENT_PEAK) {
            self.drop_budget -= frames;
            self.counters.frames_dropped += 1;
            // The resampler continues from this frame's end.
            self.remember_last(frame);
            self.restart_window();
            return overflow;
        }
        self.resample(frame);
        // Whole sample frames only: a partial one would swap the channels of everything after it.
        let room = ring.slots() / channels * channels;
        let fits = self.out.len().min(room);
        let (_, dropped) = ring.push_partial_slice(&self.out[..fits]);
        overflow += dropped.len() + self.out.len() - fits;
        self.counters.overflowed += overflow as u64;
        overflow
    }

    /// The drift the controller has learnt (its integral term), in ppm of output samples per input sample:
    /// the device's rate relative to the system clock.
    #[cfg(test)]
    pub(crate) fn learnt_ppm(&self) -> f64 {
        -KI * self.integral * 1e6
    }

    #[cfg(test)]
    pub(crate) fn counters(&self) -> DriftCounters {
        self.counters
    }

    fn restart_window(&mut self) {
        self.window_min = usize::MAX;
        self.window_ticks = 0;
    }

    /// One fill measurement; at the end of a window, the controller's step.
    fn measure(&mut self, fill: usize) {
        self.window_min = self.window_min.min(fill);
        self.window_ticks += 1;
        if self.window_ticks < WINDOW_TICKS {
            return;
        }
        let error = (self.window_min as f64 - self.target as f64) / f64::from(self.rate_hz);
        self.drop_budget = if error > EXCESS_SECS {
            self.window_min - self.target
        } else {
            0
        };
        let error = error.clamp(-EXCESS_SECS, EXCESS_SECS);
        let correction = KP * error + KI * (self.integral + error * WINDOW_SECS);
        // Anti-windup: the integral only moves while the correction is within its bounds.
        if correction.abs() < MAX_CORRECTION {
            self.integral += error * WINDOW_SECS;
        }
        // Too full (error > 0): produce fewer samples than come in.
        self.ratio = 1.0 - correction.clamp(-MAX_CORRECTION, MAX_CORRECTION);
        self.restart_window();
    }

    /// `frame` at `ratio` into `out`, by linear interpolation between sample frames, each channel from
    /// its own samples (exact copies at ratio 1).
    fn resample(&mut self, frame: &[f32]) {
        self.out.clear();
        let channels = self.channels;
        let frames = frame.len() / channels;
        if frames == 0 {
            return;
        }
        let step = 1.0 / self.ratio;
        let last = frames as f64 - 1.0;
        while self.position <= last {
            let index = self.position.floor();
            let fraction = (self.position - index) as f32;
            let i = index as isize;
            let next = ((i + 1) as usize).min(frames - 1);
            for c in 0..channels {
                let a = if i < 0 {
                    self.previous[c]
                } else {
                    frame[i as usize * channels + c]
                };
                let b = frame[next * channels + c];
                self.out.push(a + (b - a) * fraction);
            }
            self.position += step;
        }
        self.position -= frames as f64;
        self.remember_last(frame);
    }

    /// Keep `frame`'s last sample frame: the resampler's left neighbour for the next frame's start.
    fn remember_last(&mut self, frame: &[f32]) {
        let channels = self.channels;
        if frame.len() >= channels {
            let last = &frame[frame.len() - channels..];
            self.previous[..channels].copy_from_slice(last);
        }
    }
}

/// Push `n` samples of silence (whole sample frames of `channels`); returns how many did not fit.
fn push_silence(ring: &mut Producer<f32>, n: usize, channels: usize) -> usize {
    let room = (ring.slots() / channels * channels).min(n);
    if let Ok(chunk) = ring.write_chunk_uninit(room) {
        chunk.fill_from_iter(std::iter::repeat(0.0));
    }
    n - room
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
