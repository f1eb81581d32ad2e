//! Pacing a stream that arrives in bursts (Ogg pages over TCP, or a whole file as fast as the network
//! goes) to real time: every packet is given a place on the source's own timeline from its page's granule
//! position, and a due time on the wall clock. The caller sleeps until each packet is due before it reads
//! on, so a source faster than real time waits on its own socket (bounded memory), never in a buffer here.

use std::time::{Duration, Instant};

use vocab::{SourcePacket, SAMPLE_RATE};

/// A jump in granule positions beyond this (or backwards) is a discontinuity, not a pause to wait out:
/// the stream continues right after the previous packet.
const MAX_GAP_SAMPLES: u64 = 5 * SAMPLE_RATE as u64;

/// One packet placed on the timeline: when to hand it on, and the packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Paced {
    pub due: Instant,
    pub packet: SourcePacket,
    /// It arrived after its time: the timeline was moved (the source stalled).
    pub late: bool,
}

#[derive(Debug)]
pub struct Pacer {
    delay: Duration,
    /// The page being collected: packets and their durations in samples.
    page: Vec<(Vec<u8>, u32)>,
    /// Where the source's granule positions put position 0 of our timeline.
    origin: Option<u64>,
    /// The end of the last packet on our timeline, samples.
    end: u64,
    /// The wall time of timeline position 0.
    anchor: Option<Instant>,
    seq: u16,
    ts_base: u32,
}

impl Pacer {
    /// `delay`: how long after the first packet arrives it is due (room for later pages' jitter).
    /// `seq` and `ts_base` start the packets' numbering (random, like an RTP sender's).
    pub fn new(delay: Duration, seq: u16, ts_base: u32) -> Self {
        Pacer {
            delay,
            page: Vec::new(),
            origin: None,
            end: 0,
            anchor: None,
            seq,
            ts_base,
        }
    }

    /// One audio packet of `samples` samples, from a page with granule position `granule`; `last`: the last
    /// packet completed on that page. Returns the page's packets, timed, once its last one is in.
    pub fn push(
        &mut self,
        now: Instant,
        packet: Vec<u8>,
        samples: u32,
        granule: Option<u64>,
        last: bool,
    ) -> Vec<Paced> {
        self.page.push((packet, samples));
        if !last {
            return Vec::new();
        }
        let total: u64 = self.page.iter().map(|(_, s)| u64::from(*s)).sum();
        // The page's first sample in granule terms: its granule is the end of its last packet.
        let start = match (granule, self.origin) {
            (Some(g), None) => {
                let start = g.saturating_sub(total);
                self.origin = Some(start);
                0
            }
            (Some(g), Some(origin)) => {
                let pos = g.saturating_sub(total).saturating_sub(origin);
                if pos < self.end || pos > self.end + MAX_GAP_SAMPLES {
                    // A jump: continue right after the previous packet, from these granules on.
                    self.origin = Some(g.saturating_sub(total).saturating_sub(self.end));
                    self.end
                } else {
                    pos
                }
            }
            (None, _) => self.end,
        };
        let mut anchor = *self.anchor.get_or_insert(now + self.delay);
        let mut pos = start;
        let mut out = Vec::with_capacity(self.page.len());
        for (payload, samples) in self.page.drain(..) {
            let mut due = anchor + samples_to_duration(pos);
            let late = due + self.delay < now;
            if late {
                // Behind by more than the hold-back: the source stalled. Move the timeline so this packet
                // is due now plus the hold-back again (the audio continues; its timestamps do not jump).
                anchor += now + self.delay - due;
                self.anchor = Some(anchor);
                due = now + self.delay;
            }
            out.push(Paced {
                due,
                packet: SourcePacket {
                    seq: self.seq,
                    timestamp: self.ts_base.wrapping_add(pos as u32),
                    payload: payload.into(),
                },
                late,
            });
            self.seq = self.seq.wrapping_add(1);
            pos += u64::from(samples);
        }
        self.end = pos;
        out
    }
}

fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the origin of the test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    const D: Duration = Duration::from_millis(100);

    /// A page of `n` 20 ms packets ending at granule `g`.
    fn page(p: &mut Pacer, now: Instant, n: usize, g: u64) -> Vec<Paced> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(p.push(now, vec![0xfc, i as u8], 960, Some(g), i + 1 == n));
        }
        out
    }

    #[test]
    fn a_burst_of_pages_is_spread_over_real_time_by_granule() {
        let t0 = epoch();
        let mut p = Pacer::new(D, 65535, u32::MAX - 959);
        // ffmpeg's first page: 50 packets, granule = 1 s + pre-skip.
        let a = page(&mut p, t0, 50, 48_000 + 312);
        assert_eq!(a.len(), 50);
        assert_eq!(a[0].due, t0 + D);
        assert_eq!(a[49].due, t0 + D + Duration::from_millis(980));
        assert_eq!(a[1].packet.seq, 0, "sequence numbers wrap");
        assert_eq!(a[1].packet.timestamp, 0, "timestamps wrap");
        // A whole file at once (no -re): every page lands at t0, due one after the other.
        let b = page(&mut p, t0, 50, 2 * 48_000 + 312);
        assert_eq!(b[0].due, t0 + D + Duration::from_secs(1));
        assert!(b.iter().all(|x| !x.late));
    }

    #[test]
    fn gaps_are_kept_jumps_and_stalls_are_retimed() {
        let t0 = epoch();
        let mut p = Pacer::new(D, 0, 0);
        page(&mut p, t0, 5, 4800);
        // 200 ms missing in the source: a timestamp gap and a pause.
        let gap = page(&mut p, t0, 5, 4800 + 9600 + 4800);
        assert_eq!(gap[0].packet.timestamp, 4800 + 9600);
        assert_eq!(gap[0].due, t0 + D + Duration::from_millis(300));
        // Granules backwards (an encoder restart): continue after the last packet.
        let back = page(&mut p, t0, 1, 960);
        assert_eq!(back[0].packet.timestamp, 4800 + 9600 + 4800);
        // The source stalls for 3 s: the next packet is late, re-timed to now + delay.
        let t = t0 + Duration::from_secs(4);
        let late = page(&mut p, t, 2, 960 + 1920);
        assert!(late[0].late);
        assert_eq!(late[0].due, t + D);
        assert_eq!(late[1].due, t + D + Duration::from_millis(20));
        assert!(!late[1].late);
    }
}
