//! RTP sequence number and timestamp rewriting for audio slots.
//!
//! A subscriber's slot is one continuous outgoing RTP stream (own SSRC, own sequence numbers and timestamps)
//! although the speaker in it changes. A [`SlotRewriter`] maps each forwarded packet's source sequence number
//! and timestamp into the slot's output space so that the receiver's jitter buffer sees one well-behaved
//! stream:
//!
//! - **Within one source** the mapping is a fixed offset: sequence gaps (network loss) stay gaps, so the
//!   receiver conceals and NACKs as usual; timestamp jumps (DTX) stay jumps; reordering is passed through.
//! - **At a switch** (another source, or the same one restarted or jumping ahead by more than
//!   [`MAX_SEQ_JUMP`]) the output sequence continues at the highest output so far + 1 and the output
//!   timestamp advances from the latest output timestamp by the wall-clock time since the last output packet
//!   (48 kHz, at least one 20 ms frame), so the receiver sees natural timing across the switch.
//! - **A source that falls behind the wall clock** is re-timed as at a switch: a packet next in sequence whose
//!   timestamp advances [`MAX_TS_LAG`] or more less than the wall clock since the stream's last packet.
//!   Firefox, whose microphone starts late, sends a few packets, then none for seconds, then goes on with
//!   timestamps that did not advance over the gap; passed on, a receiver takes every packet after it for
//!   seconds late (Chromium raised its jitter-buffer delay to over 0.6 s and then time-compressed the
//!   speech). A network stall that delivers its packets late in a burst looks the same and is re-timed too;
//!   measured in Chromium and with our own jitter buffer, a listener hears no difference (docs/architecture.md).
//! - Packets older than the switch point and duplicates (64-packet window) are dropped.
//!
//! Sequence numbers are extended (u64) on both sides: the input as the receive side extends it (see
//! [`extend_seq`]), the output for SRTP (the rollover counter is `out_seq >> 16`; the RTP header carries
//! `out_seq as u16`). The first output sequence number is the caller's random 16-bit start, so the
//! rollover counter starts at 0. Timestamps wrap (u32 arithmetic). O(1), no allocation.

use std::time::{Duration, Instant};

use crate::audio::duration_samples;
use crate::ids::Ssrc;

/// One 20 ms frame in RTP timestamp units: the least the output timestamp advances at a switch.
pub const FRAME_TICKS: u32 = crate::audio::FRAME_SAMPLES as u32;

/// A forward jump of more source sequence numbers than this (20 s of audio) is a stream restart: treated as a
/// switch rather than preserved as a gap. So is a backward jump of more than this.
pub const MAX_SEQ_JUMP: u64 = 1000;

/// How far a source's timestamps may fall behind the wall clock between two packets in sequence before the
/// source is re-timed (1 s: beyond what a receiver's jitter buffer waits for, far beyond any DTX rounding).
pub const MAX_TS_LAG: Duration = Duration::from_secs(1);

/// [`MAX_TS_LAG`] in 48 kHz RTP clock ticks.
const MAX_TS_LAG_TICKS: i64 = MAX_TS_LAG.as_secs() as i64 * crate::audio::SAMPLE_RATE as i64;

/// How far behind the highest forwarded sequence number duplicates are detected; older packets are dropped.
const WINDOW: u64 = 64;

/// The largest timestamp advance at a switch (≈ 12 h), keeping it unambiguously "forward" for receivers.
const MAX_TS_ADVANCE: u64 = i32::MAX as u64;

/// Extends a 16-bit RTP sequence number to 64 bits given the extended value `last` of a recent packet:
/// picks the candidate (same rollover, previous or next) closest to `last`. Never goes below 0.
pub fn extend_seq(seq: u16, last: u64) -> u64 {
    let cand = (last & !0xFFFF) | u64::from(seq);
    if cand > last && cand - last > 0x8000 && cand >= 0x1_0000 {
        cand - 0x1_0000 // a late packet from before the last rollover
    } else if cand < last && last - cand > 0x8000 {
        cand + 0x1_0000 // rolled over
    } else {
        cand
    }
}

/// Extends the 16-bit sequence numbers of one incoming stream (keeps the highest extended value seen).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// A fresh extender: the first sequence number extends to itself (rollover 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended value of `seq`.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            None => u64::from(seq),
            Some(h) => extend_seq(seq, h),
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }
}

/// The mapping of the current source into the output.
#[derive(Clone, Copy, Debug)]
struct Source {
    ssrc: Ssrc,
    base_in_seq: u64,
    base_out_seq: u64,
    base_in_ts: u32,
    base_out_ts: u32,
    highest_in_seq: u64,
    /// Bit `i` set: `highest_in_seq - i` was forwarded.
    window: u64,
}

/// What has been sent.
#[derive(Clone, Copy, Debug)]
struct Output {
    /// The highest output sequence number so far, and its timestamp.
    max_seq: u64,
    ts_at_max: u32,
    /// When the latest output packet was produced.
    last_time: Instant,
    /// Before this instant no packet can lag the wall clock by [`MAX_TS_LAG`]: it is at most `last_time`
    /// plus that (`last_time` only grows), refreshed about once a second, so a live stream's packets skip
    /// the time arithmetic.
    check_lag_at: Instant,
}

/// Rewrites one (subscriber, slot) output stream. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct SlotRewriter {
    initial_seq: u16,
    initial_ts: u32,
    source: Option<Source>,
    output: Option<Output>,
    switches: u64,
    retimes: u64,
}

impl SlotRewriter {
    /// A rewriter whose first output packet gets sequence number `initial_seq` (extended: rollover 0) and
    /// timestamp `initial_ts`. Both should be random.
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            initial_seq,
            initial_ts,
            source: None,
            output: None,
            switches: 0,
            retimes: 0,
        }
    }

    /// Maps a packet of `source` with extended sequence number `seq` and RTP timestamp `ts`, received at `now`,
    /// to its output (extended sequence number, timestamp); `None` drops it (duplicate, or older than the
    /// switch point or the duplicate window). O(1), no allocation.
    pub fn rewrite(&mut self, now: Instant, source: Ssrc, seq: u64, ts: u32) -> Option<(u64, u32)> {
        let switch = match &self.source {
            None => true,
            Some(s) if s.ssrc != source => true,
            Some(s) => {
                seq > s.highest_in_seq + MAX_SEQ_JUMP || s.highest_in_seq > seq + MAX_SEQ_JUMP
            }
        };
        if switch {
            if self.source.is_some() {
                self.switches += 1;
            }
            self.start_source(now, source, seq, ts);
        } else if self.lags_wall_clock(now, seq, ts) {
            self.start_source(now, source, seq, ts);
            self.retimes += 1;
        }
        let s = self.source.as_mut().expect("a source");
        if seq < s.base_in_seq {
            return None;
        }
        if seq > s.highest_in_seq {
            let d = seq - s.highest_in_seq;
            s.window = if d >= WINDOW { 0 } else { s.window << d };
            s.window |= 1;
            s.highest_in_seq = seq;
        } else {
            let d = s.highest_in_seq - seq;
            if d >= WINDOW {
                return None;
            }
            let bit = 1u64 << d;
            if s.window & bit != 0 {
                return None;
            }
            s.window |= bit;
        }
        let out_seq = s.base_out_seq + (seq - s.base_in_seq);
        let out_ts = s.base_out_ts.wrapping_add(ts.wrapping_sub(s.base_in_ts));
        match &mut self.output {
            Some(o) => {
                if out_seq > o.max_seq {
                    o.max_seq = out_seq;
                    o.ts_at_max = out_ts;
                }
                if now > o.last_time {
                    o.last_time = now;
                }
            }
            None => {
                self.output = Some(Output {
                    max_seq: out_seq,
                    ts_at_max: out_ts,
                    last_time: now,
                    check_lag_at: now.checked_add(MAX_TS_LAG).unwrap_or(now),
                })
            }
        }
        Some((out_seq, out_ts))
    }

    /// Starts mapping `source` from the packet (`seq`, `ts`) on.
    fn start_source(&mut self, now: Instant, ssrc: Ssrc, seq: u64, ts: u32) {
        let (base_out_seq, base_out_ts) = match self.output {
            None => (u64::from(self.initial_seq), self.initial_ts),
            Some(o) => {
                let elapsed = now.saturating_duration_since(o.last_time);
                let advance =
                    duration_samples(elapsed).clamp(u64::from(FRAME_TICKS), MAX_TS_ADVANCE);
                (o.max_seq + 1, o.ts_at_max.wrapping_add(advance as u32))
            }
        };
        self.source = Some(Source {
            ssrc,
            base_in_seq: seq,
            base_out_seq,
            base_in_ts: ts,
            base_out_ts,
            highest_in_seq: seq,
            window: 0,
        });
    }

    /// Whether the current source's packet `seq`, next in sequence, advances its timestamp `ts` less than
    /// the wall clock since the stream's last packet by [`MAX_TS_LAG`] or more.
    fn lags_wall_clock(&mut self, now: Instant, seq: u64, ts: u32) -> bool {
        let (Some(s), Some(o)) = (&self.source, &mut self.output) else {
            return false;
        };
        if seq != s.highest_in_seq + 1 {
            return false;
        }
        let out_ts = s.base_out_ts.wrapping_add(ts.wrapping_sub(s.base_in_ts));
        let advance = i64::from(out_ts.wrapping_sub(o.ts_at_max) as i32);
        if advance >= 0 && now < o.check_lag_at {
            return false; // a live stream's packets: no time arithmetic on the fan-out's path
        }
        let elapsed = now.saturating_duration_since(o.last_time);
        if advance >= 0 && elapsed < MAX_TS_LAG {
            o.check_lag_at = o.last_time.checked_add(MAX_TS_LAG).unwrap_or(o.last_time);
            return false;
        }
        let wall = i64::try_from(duration_samples(elapsed)).unwrap_or(i64::MAX);
        wall.saturating_sub(advance) >= MAX_TS_LAG_TICKS
    }

    /// The source currently mapped, if any.
    pub fn current_source(&self) -> Option<Ssrc> {
        self.source.map(|s| s.ssrc)
    }

    /// The highest output (extended sequence number, timestamp) so far.
    pub fn last_output(&self) -> Option<(u64, u32)> {
        self.output.map(|o| (o.max_seq, o.ts_at_max))
    }

    /// Whether RTP timestamp `ts` of the current source lies in this stream's part of it: at or after the
    /// packet where the source took over (at its last switch). Redundant audio (RFC 2198) from before that
    /// point belongs to another timeline (the previous speaker's) and must not be forwarded into this one.
    pub fn covers(&self, ts: u32) -> bool {
        self.source
            .is_some_and(|s| ts.wrapping_sub(s.base_in_ts) as i32 >= 0)
    }

    /// How many switches (new source, restart or jump) there have been after the first source.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// How many times the current sources were re-timed for falling behind the wall clock.
    pub fn retimes(&self) -> u64 {
        self.retimes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = crate::audio::FRAME_DURATION;
    const A: Ssrc = Ssrc(0xAAAA);
    const B: Ssrc = Ssrc(0xBBBB);

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn extend_seq_handles_wraparound() {
        assert_eq!(extend_seq(5, 3), 5);
        assert_eq!(extend_seq(1, 3), 1);
        assert_eq!(extend_seq(0, 65535), 65536);
        assert_eq!(extend_seq(10, 65530), 65546);
        assert_eq!(extend_seq(65530, 65546), 65530);
        assert_eq!(extend_seq(65535, 2 * 65536 + 3), 65536 + 65535);
        // Never negative.
        assert_eq!(extend_seq(65535, 3), 65535);
        assert_eq!(extend_seq(40000, 0), 40000);

        let mut x = SeqExtender::new();
        let mut seq = 65530u16;
        let mut exts = Vec::new();
        for _ in 0..10 {
            exts.push(x.extend(seq));
            seq = seq.wrapping_add(1);
        }
        assert_eq!(exts, (65530..65540).collect::<Vec<u64>>());
        assert_eq!(x.extend(65534), 65534); // a late packet from before the wrap
        assert_eq!(x.extend(10), 65546);
    }

    /// Feeds `n` packets of `ssrc` from (`seq`, `ts`), 20 ms and 960 ticks apart, from `*t`. Returns outputs.
    fn feed(
        rw: &mut SlotRewriter,
        t: &mut Instant,
        ssrc: Ssrc,
        seq: u64,
        ts: u32,
        n: u64,
    ) -> Vec<(u64, u32)> {
        (0..n)
            .map(|i| {
                let out = rw
                    .rewrite(*t, ssrc, seq + i, ts.wrapping_add(960 * i as u32))
                    .expect("forwarded");
                *t += MS20;
                out
            })
            .collect()
    }

    #[test]
    fn first_packet_uses_initial_values_with_rollover_zero() {
        let mut rw = SlotRewriter::new(65000, 123);
        let t = t0();
        assert_eq!(rw.current_source(), None);
        assert_eq!(rw.rewrite(t, A, 7_000_000, 999), Some((65000, 123)));
        assert_eq!(rw.current_source(), Some(A));
        assert_eq!(rw.switches(), 0);
        // The output rolls over naturally.
        let out = feed(&mut rw, &mut (t + MS20), A, 7_000_001, 999 + 960, 600);
        assert_eq!(out.last().unwrap().0, 65600);
        assert_eq!(rw.last_output(), Some((65600, 123 + 600 * 960)));
    }

    #[test]
    fn continuity_across_a_switch() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(100, 5000);
        let a = feed(&mut rw, &mut t, A, 40, 1_000_000, 10);
        assert_eq!(
            a.iter().map(|o| o.0).collect::<Vec<_>>(),
            (100..110).collect::<Vec<_>>()
        );
        assert_eq!(a[9].1, 5000 + 9 * 960);
        // B arrives 20 ms after A's last packet: one frame on.
        let b = feed(&mut rw, &mut t, B, 30_000, 77, 5);
        assert_eq!(b[0], (110, 5000 + 10 * 960));
        assert_eq!(b[4], (114, 5000 + 14 * 960));
        assert_eq!(rw.switches(), 1);
    }

    #[test]
    fn switch_after_silence_advances_by_wall_clock() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(0, 0);
        feed(&mut rw, &mut t, A, 0, 0, 3);
        let last = rw.last_output().unwrap();
        // 2.5 s after A's last packet (t is already 20 ms on).
        t += Duration::from_millis(2480);
        let b = rw.rewrite(t, B, 500, 42).unwrap();
        assert_eq!(b, (last.0 + 1, last.1 + 2500 * 48));
        // A switch with no time in between still advances one frame.
        let a = rw.rewrite(t, A, 3, 2880).unwrap();
        assert_eq!(a, (b.0 + 1, b.1 + 960));
    }

    #[test]
    fn dtx_gap_within_a_source_is_preserved() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(1, 1);
        let a = feed(&mut rw, &mut t, A, 10, 0, 3);
        // DTX: 1 s without packets; the sender's next packet has the next seq and ts + 1 s.
        t += Duration::from_secs(1);
        let next = rw.rewrite(t, A, 13, 3 * 960 + 48_000).unwrap();
        assert_eq!(next, (a[2].0 + 1, a[2].1 + 960 + 48_000));
        assert_eq!(rw.switches(), 0);
    }

    /// Firefox with a microphone that starts late (measured): a few packets, 1,981 ms with none, then the
    /// next packet's timestamp one frame after the last one's. Passed on, a receiver would take every packet
    /// after the gap for 2 s late; re-timed, it sees a DTX gap.
    #[test]
    fn a_source_whose_timestamps_fall_behind_the_wall_clock_is_retimed() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(1, 1);
        let a = feed(&mut rw, &mut t, A, 10, 0, 6);
        t += Duration::from_millis(1981 - 20);
        let next = rw.rewrite(t, A, 16, 6 * 960).unwrap();
        assert_eq!(next.0, a[5].0 + 1, "the sequence goes on");
        assert_eq!(
            next.1.wrapping_sub(a[5].1),
            duration_samples(Duration::from_millis(1981)) as u32,
            "the timestamp advances by the wall clock"
        );
        assert_eq!((rw.retimes(), rw.switches()), (1, 0));
        // Then the source's own spacing again, from the new base.
        t += MS20;
        let after = rw.rewrite(t, A, 17, 7 * 960).unwrap();
        assert_eq!(after, (next.0 + 1, next.1 + 960));
        assert_eq!(rw.retimes(), 1);
        // 4 s live (the lag check's deadline moves on every second), then the clock stops again.
        t += MS20;
        let live = feed(&mut rw, &mut t, A, 18, 8 * 960, 200);
        assert_eq!(rw.retimes(), 1);
        t += Duration::from_millis(1500 - 20);
        let again = rw.rewrite(t, A, 218, 208 * 960).unwrap();
        assert_eq!(
            again.1.wrapping_sub(live[199].1),
            duration_samples(Duration::from_millis(1500)) as u32
        );
        assert_eq!(rw.retimes(), 2);
    }

    /// Below [`MAX_TS_LAG`] the source's timing is passed on (a receiver's jitter buffer absorbs it), and a
    /// packet after a loss is never re-timed (the receiver conceals the lost ones at their timestamps).
    #[test]
    fn lag_below_the_bound_and_packets_after_a_loss_keep_the_offset() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(1, 1);
        let a = feed(&mut rw, &mut t, A, 10, 0, 3);
        t += Duration::from_millis(900);
        assert_eq!(
            rw.rewrite(t, A, 13, 3 * 960),
            Some((a[2].0 + 1, a[2].1 + 960))
        );
        t += Duration::from_secs(3);
        // 14 and 15 lost on the way
        assert_eq!(
            rw.rewrite(t, A, 16, 6 * 960),
            Some((a[2].0 + 4, a[2].1 + 4 * 960))
        );
        assert_eq!(rw.retimes(), 0);
    }

    #[test]
    fn loss_gaps_are_preserved() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(1000, 0);
        rw.rewrite(t, A, 50, 0).unwrap();
        t += MS20;
        // 51, 52 lost.
        assert_eq!(rw.rewrite(t, A, 53, 3 * 960), Some((1003, 3 * 960)));
        // A gap up to the restart threshold is still a gap.
        assert_eq!(
            rw.rewrite(t, A, 53 + MAX_SEQ_JUMP, 0),
            Some((1003 + MAX_SEQ_JUMP, 0))
        );
        assert_eq!(rw.switches(), 0);
    }

    #[test]
    fn reordering_within_a_source() {
        let t = t0();
        let mut rw = SlotRewriter::new(200, 0);
        assert_eq!(rw.rewrite(t, A, 10, 0), Some((200, 0)));
        assert_eq!(rw.rewrite(t, A, 12, 1920), Some((202, 1920)));
        assert_eq!(rw.rewrite(t, A, 11, 960), Some((201, 960)));
        assert_eq!(rw.rewrite(t, A, 13, 2880), Some((203, 2880)));
        assert_eq!(rw.last_output(), Some((203, 2880)));
        // Late, but within the window and not seen: still forwarded.
        assert_eq!(rw.rewrite(t, A, 80, 70 * 960), Some((270, 70 * 960)));
        assert_eq!(rw.rewrite(t, A, 20, 10 * 960), Some((210, 10 * 960)));
        // Older than the window: dropped.
        assert_eq!(rw.rewrite(t, A, 16, 6 * 960), None);
    }

    #[test]
    fn packets_older_than_the_switch_point_are_dropped() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(0, 0);
        feed(&mut rw, &mut t, A, 0, 0, 5);
        let first_b = rw.rewrite(t, B, 100, 0).unwrap();
        assert_eq!(first_b.0, 5);
        // B's packet 99 arrives late: before the switch point.
        assert_eq!(rw.rewrite(t, B, 99, 0), None);
        assert_eq!(rw.rewrite(t, B, 101, 960), Some((6, first_b.1 + 960)));
    }

    #[test]
    fn duplicates_are_dropped() {
        let t = t0();
        let mut rw = SlotRewriter::new(0, 0);
        assert!(rw.rewrite(t, A, 1, 0).is_some());
        assert_eq!(rw.rewrite(t, A, 1, 0), None);
        assert!(rw.rewrite(t, A, 3, 1920).is_some());
        assert!(rw.rewrite(t, A, 2, 960).is_some());
        assert_eq!(rw.rewrite(t, A, 2, 960), None);
        assert_eq!(rw.rewrite(t, A, 3, 1920), None);
        // Far ahead then a duplicate of the old one near the window edge.
        assert!(rw.rewrite(t, A, 66, 65 * 960).is_some());
        assert_eq!(rw.rewrite(t, A, 3, 1920), None); // 63 behind: in the window, seen
        assert!(rw.rewrite(t, A, 4, 3 * 960).is_some()); // 62 behind: not seen
        assert_eq!(rw.rewrite(t, A, 2, 960), None); // 64 behind: too old
                                                    // Window shifted by a big jump forgets everything older.
        assert!(rw.rewrite(t, A, 500, 0).is_some());
        assert_eq!(rw.rewrite(t, A, 66, 0), None);
    }

    #[test]
    fn big_jump_or_restart_is_a_switch() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(10, 0);
        feed(&mut rw, &mut t, A, 100, 0, 3);
        // Forward by more than the threshold: continues at + 1, not with a 5000-packet gap.
        let out = rw.rewrite(t, A, 5102, 123_456).unwrap();
        assert_eq!(out, (13, 2 * 960 + 960));
        assert_eq!(rw.switches(), 1);
        t += MS20;
        assert_eq!(rw.rewrite(t, A, 5103, 123_456 + 960), Some((14, 4 * 960)));
        // Restart: far backwards.
        t += MS20;
        assert_eq!(rw.rewrite(t, A, 7, 0), Some((15, 5 * 960)));
        assert_eq!(rw.switches(), 2);
    }

    #[test]
    fn timestamp_and_sequence_wraparound() {
        let mut t = t0();
        // Output timestamps near the top of the u32 range; source timestamps too.
        let mut rw = SlotRewriter::new(65534, u32::MAX - 1000);
        let a = feed(&mut rw, &mut t, A, 65534, u32::MAX - 500, 4);
        assert_eq!(
            a.iter().map(|o| o.0).collect::<Vec<_>>(),
            vec![65534, 65535, 65536, 65537]
        );
        assert_eq!(a[1].1, (u32::MAX - 1000).wrapping_add(960));
        assert_eq!(a[3].1, (u32::MAX - 1000).wrapping_add(3 * 960));
        // Switch: ts wraps too.
        let b = rw.rewrite(t, B, 9, 0).unwrap();
        assert_eq!(b, (65538, (u32::MAX - 1000).wrapping_add(4 * 960)));
        // Source sequence numbers extended across their rollover map contiguously.
        let mut ext = SeqExtender::new();
        let mut rw = SlotRewriter::new(0, 0);
        let mut outs = Vec::new();
        for i in 0..10u16 {
            let seq16 = 65531u16.wrapping_add(i);
            outs.push(
                rw.rewrite(t, A, ext.extend(seq16), u32::from(i) * 960)
                    .unwrap()
                    .0,
            );
        }
        assert_eq!(outs, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn returning_speaker() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(300, 0);
        let a1 = feed(&mut rw, &mut t, A, 1000, 50_000, 5);
        let b = feed(&mut rw, &mut t, B, 20, 7, 5);
        // A resumes, its sequence numbers having moved on meanwhile.
        let a2 = feed(&mut rw, &mut t, A, 1010, 50_000 + 10 * 960, 5);
        let all: Vec<u64> = a1.iter().chain(&b).chain(&a2).map(|o| o.0).collect();
        assert_eq!(all, (300..315).collect::<Vec<_>>());
        let ts: Vec<u32> = a1.iter().chain(&b).chain(&a2).map(|o| o.1).collect();
        assert!(
            ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960),
            "{ts:?}"
        );
        assert_eq!(rw.switches(), 2);
        // A late packet of A's first turn (before the new switch point) is dropped.
        assert_eq!(rw.rewrite(t, A, 1004, 0), None);
    }

    #[test]
    fn output_is_strictly_increasing_across_many_switches() {
        let mut t = t0();
        let mut rw = SlotRewriter::new(12345, 678);
        let mut last: Option<(u64, u32)> = None;
        let sources = [A, B, Ssrc(3), A];
        for (round, &src) in sources.iter().cycle().take(40).enumerate() {
            // Each turn: a few packets, a loss, a reorder, a duplicate.
            // Far enough apart that consecutive turns of the same source count as restarts.
            let base = 2000 * round as u64;
            let order = [0u64, 1, 3, 2, 2, 5, 6];
            let mut outs = Vec::new();
            for &i in &order {
                if let Some(o) = rw.rewrite(t, src, base + i, (base + i) as u32 * 960) {
                    outs.push(o);
                }
                t += Duration::from_millis(13);
            }
            assert_eq!(outs.len(), 6, "duplicate dropped");
            if let Some(l) = last {
                assert_eq!(outs[0].0, l.0 + 1);
                assert!(outs[0].1.wrapping_sub(l.1) >= 960);
            }
            last = rw.last_output();
        }
    }

    #[test]
    fn covers_only_timestamps_from_the_switch_point_of_the_current_source() {
        let t = t0();
        let mut r = SlotRewriter::new(100, 5000);
        assert!(!r.covers(0), "no source yet");
        r.rewrite(t, A, 10, 96_000).expect("first packet");
        assert!(r.covers(96_000) && r.covers(96_960));
        assert!(!r.covers(95_040), "before A took the slot");
        r.rewrite(t + MS20, B, 500, u32::MAX - 100)
            .expect("switch to B");
        assert!(r.covers(u32::MAX - 100) && r.covers(860), "across the wrap");
        assert!(!r.covers(u32::MAX - 1060), "B's audio before the switch");
    }
}
