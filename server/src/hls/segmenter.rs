//! One room's HLS stream as data: the room's 20 ms mix frames cut into fMP4 partial segments and
//! segments of fixed lengths, and the sliding window of segments kept in memory. Time enters as Unix
//! milliseconds; no I/O.
//!
//! A segment is the concatenation of its parts (one `moof` + `mdat` each, LL-HLS `EXT-X-PART`), built as
//! the frames come: a part is published as soon as it is full, and a part request of a complete segment is
//! a slice of the segment's bytes. Without parts (`hls.part_ms = 0`) a segment is one part.
//!
//! The timeline: segments of one *run* (frames arriving without a break) follow each other, numbered
//! consecutively, each exactly `segment_frames` long. A run starts at media sequence number
//! `max(next, now / segment_ms)` — numbers grow across idle periods and server restarts alike, so an
//! origin's caches never see one number twice — and its decode time is that number × the segment's
//! samples (so decode times too only grow). A short gap inside a run (ticks the mixer skipped, at most
//! [`MAX_FILL_FRAMES`]) is filled with silent packets, keeping the audio continuous, and so is a room
//! re-made while its frames keep coming (its ticks count anew: the gap is told by the clock); anything
//! longer (frames stopped for [`MAX_PAUSE_MS`]: the room closed, or its tap stopped) closes the open
//! segment early and starts a new run marked as a discontinuity.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::fmp4::{fragment, FRAME_SAMPLES};
use crate::broadcast::ogg::crc;

/// Frames of a skipped stretch inside a run that are filled with silence (1 s); a longer gap is a
/// discontinuity.
pub const MAX_FILL_FRAMES: u64 = 50;

/// Without a frame for this long, the open segment is closed (what was said gets out) and the run ends.
pub const MAX_PAUSE_MS: u64 = 1_000;

/// A 20 ms Opus packet that decodes to silence: TOC 0xf8 (CELT, fullband, 20 ms, mono, one frame) and a
/// frame whose range coder yields the silence flag.
pub const SILENT_PACKET: [u8; 3] = [0xf8, 0xff, 0xfe];

/// One complete segment, shared by every request for it.
#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    /// `moof` + `mdat`.
    pub bytes: Bytes,
    pub frames: u32,
    /// The wall-clock time of its first sample (`EXT-X-PROGRAM-DATE-TIME`), Unix ms.
    pub start_ms: u64,
    /// When it was completed (`Last-Modified`), Unix ms.
    pub made_ms: u64,
    /// The first segment of a run after an earlier one (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// The CRC-32 of its bytes (its `ETag`).
    pub crc: u32,
    /// Requests for it: how many viewers fetched it.
    pub hits: AtomicU64,
    /// Its parts, in order: where each is in `bytes`.
    pub parts: Vec<Part>,
}

/// A partial segment (LL-HLS): its length and where it is in its segment's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub frames: u32,
    pub range: Range<usize>,
    /// The CRC-32 of its bytes (its `ETag`).
    pub crc: u32,
}

/// The segment being cut, as a playlist lists it: its number, start, and the parts done so far.
#[derive(Clone, Debug)]
pub struct Open {
    pub msn: u64,
    pub start_ms: u64,
    pub discontinuity: bool,
    pub parts: Vec<Part>,
}

impl Segment {
    pub fn duration_ms(&self) -> u64 {
        u64::from(self.frames) * 20
    }
}

/// The run being cut: its open segment and where it is.
#[derive(Debug)]
struct Run {
    /// Packets of the open segment not yet in a part.
    open: Vec<Bytes>,
    /// The open segment's bytes so far (its complete parts) and those parts.
    done: BytesMut,
    parts: Vec<Part>,
    /// The same parts' bytes, each shared by its requests.
    part_bytes: Vec<Bytes>,
    /// When its last part was completed (`Last-Modified`), Unix ms.
    part_made_ms: u64,
    /// Requests for the open segment's first part (LL-HLS viewers), carried over to the segment.
    hits: AtomicU64,
    /// The open segment's number and first sample's wall-clock time.
    msn: u64,
    start_ms: u64,
    /// The open segment starts the run after another one.
    discontinuity: bool,
    last_tick: u64,
    last_frame_ms: u64,
}

impl Run {
    /// Make the packets not yet in a part the open segment's next part (none: nothing).
    fn cut_part(&mut self, segment_samples: u64, now_ms: u64) {
        if self.open.is_empty() {
            return;
        }
        let packets = std::mem::take(&mut self.open);
        let refs: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
        let before: u32 = self.parts.iter().map(|p| p.frames).sum();
        let decode_time = self.msn * segment_samples + u64::from(before) * u64::from(FRAME_SAMPLES);
        // The fragment sequence number only has to grow (it wraps after decades of parts).
        let sequence = (self.msn.wrapping_mul(128) + self.parts.len() as u64) as u32;
        let bytes = fragment(sequence, decode_time, &refs);
        let start = self.done.len();
        self.done.extend_from_slice(&bytes);
        self.part_bytes.push(bytes.clone());
        self.parts.push(Part {
            frames: packets.len() as u32,
            range: start..self.done.len(),
            crc: crc(&bytes),
        });
        self.part_made_ms = now_ms;
    }
}

/// A room's segments: the window kept in memory, the run being cut.
#[derive(Debug)]
pub struct Segmenter {
    segment_frames: u32,
    /// Frames per part (`segment_frames` without parts).
    part_frames: u32,
    /// Segments listed in the playlist.
    window: usize,
    /// Segments kept: the playlist's and as many that left it, still served (RFC 8216 §6.2.2: a segment
    /// stays available for the playlist's duration after it leaves it).
    keep: usize,
    segments: VecDeque<Arc<Segment>>,
    /// Discontinuities that left memory (the playlist adds those still in memory but before its window).
    discontinuities_gone: u64,
    run: Option<Run>,
    /// The number the next run starts at, at least.
    next_msn: u64,
    /// A run ended: the next one is a discontinuity.
    ran: bool,
}

impl Segmenter {
    /// `part_frames`: frames per part, a divisor of `segment_frames` (equal to it: no parts).
    pub fn new(segment_frames: u32, part_frames: u32, window: usize) -> Self {
        debug_assert!(
            part_frames > 0 && segment_frames.is_multiple_of(part_frames),
            "hls.validate(): part_ms divides segment_ms"
        );
        Segmenter {
            segment_frames,
            part_frames,
            window,
            keep: window * 2,
            segments: VecDeque::new(),
            discontinuities_gone: 0,
            run: None,
            next_msn: 0,
            ran: false,
        }
    }

    fn segment_ms(&self) -> u64 {
        u64::from(self.segment_frames) * 20
    }

    /// Take one frame of the room's mix (its tick on the room's 20 ms grid). Returns the segments it
    /// completed (usually none, at most a few when a gap is filled).
    pub fn push(&mut self, tick: u64, payload: &Bytes, now_ms: u64) -> usize {
        let mut completed = 0;
        let gap = match &self.run {
            Some(run) if now_ms.saturating_sub(run.last_frame_ms) > MAX_PAUSE_MS => None,
            // The room was re-made (its ticks count anew) while frames kept coming, as when its last
            // member leaves and a tapped room's mixer is replaced: the run goes on, the ticks between
            // told by the clock (as the Ogg mount continues its stream).
            Some(run) if tick <= run.last_tick => {
                Some((now_ms.saturating_sub(run.last_frame_ms) / 20).saturating_sub(1))
            }
            Some(run) if tick - run.last_tick - 1 > MAX_FILL_FRAMES => None,
            Some(run) => Some(tick - run.last_tick - 1),
            None => None,
        };
        match gap {
            Some(skipped) => {
                let silence = Bytes::from_static(&SILENT_PACKET);
                for _ in 0..skipped {
                    completed += self.append(silence.clone(), now_ms);
                }
            }
            None => {
                completed += self.end_run(now_ms);
                let msn = self.next_msn.max(now_ms / self.segment_ms());
                self.run = Some(Run {
                    open: Vec::with_capacity(self.part_frames as usize),
                    done: BytesMut::new(),
                    parts: Vec::new(),
                    part_bytes: Vec::new(),
                    part_made_ms: now_ms,
                    hits: AtomicU64::new(0),
                    msn,
                    start_ms: now_ms,
                    discontinuity: self.ran,
                    last_tick: tick,
                    last_frame_ms: now_ms,
                });
            }
        }
        let run = self
            .run
            .as_mut()
            .expect("a run was started above or goes on");
        run.last_tick = tick;
        run.last_frame_ms = now_ms;
        completed + self.append(payload.clone(), now_ms)
    }

    /// Add a packet to the open segment; completes a part when it is full, and the segment when that was
    /// its last part (returns 1 then).
    fn append(&mut self, packet: Bytes, now_ms: u64) -> usize {
        let (part_frames, segment_frames) = (self.part_frames as usize, self.segment_frames);
        let Some(run) = self.run.as_mut() else {
            return 0;
        };
        run.open.push(packet);
        if run.open.len() < part_frames {
            return 0;
        }
        let samples = u64::from(segment_frames) * u64::from(FRAME_SAMPLES);
        run.cut_part(samples, now_ms);
        if run.parts.iter().map(|p| p.frames).sum::<u32>() < segment_frames {
            return 0;
        }
        self.close(now_ms);
        1
    }

    /// Complete the open segment (full or, at the end of a run, short); the next one follows it.
    fn close(&mut self, now_ms: u64) {
        let segment_ms = self.segment_ms();
        let samples = u64::from(self.segment_frames) * u64::from(FRAME_SAMPLES);
        let Some(run) = self.run.as_mut() else {
            return;
        };
        run.cut_part(samples, now_ms);
        if run.parts.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut run.done).freeze();
        let parts = std::mem::take(&mut run.parts);
        run.part_bytes.clear();
        let segment = Segment {
            msn: run.msn,
            crc: crc(&bytes),
            bytes,
            frames: parts.iter().map(|p| p.frames).sum(),
            start_ms: run.start_ms,
            made_ms: now_ms,
            discontinuity: run.discontinuity,
            hits: AtomicU64::new(run.hits.swap(0, Ordering::Relaxed)),
            parts,
        };
        run.msn += 1;
        run.start_ms += segment_ms;
        run.discontinuity = false;
        self.next_msn = run.msn;
        self.segments.push_back(Arc::new(segment));
        while self.segments.len() > self.keep {
            if let Some(old) = self.segments.pop_front() {
                self.discontinuities_gone += u64::from(old.discontinuity);
            }
        }
    }

    /// End the run (its open segment closed short): the next frame starts a new run, a discontinuity.
    /// Returns the segments completed (0 or 1).
    fn end_run(&mut self, now_ms: u64) -> usize {
        let Some(run) = &self.run else {
            return 0;
        };
        let had = !run.open.is_empty() || !run.parts.is_empty();
        self.close(now_ms);
        self.run = None;
        self.ran = true;
        usize::from(had)
    }

    /// Close the open segment if frames stopped coming (the room closed, the tap stopped). Returns the
    /// segments completed (0 or 1).
    pub fn flush_idle(&mut self, now_ms: u64) -> usize {
        match &self.run {
            Some(run) if now_ms.saturating_sub(run.last_frame_ms) > MAX_PAUSE_MS => {
                self.end_run(now_ms)
            }
            _ => 0,
        }
    }

    /// Nobody watches any more: the run ends and the segments go (a viewer coming later must not start
    /// in stale audio); numbers and discontinuities go on from where they were.
    pub fn stop(&mut self, now_ms: u64) {
        self.end_run(now_ms);
        for old in self.segments.drain(..) {
            self.discontinuities_gone += u64::from(old.discontinuity);
        }
    }

    /// The segment `msn`, if it is still kept.
    pub fn get(&self, msn: u64) -> Option<Arc<Segment>> {
        let first = self.segments.front()?.msn;
        // Numbers are consecutive within a run but jump between runs: search near the expected place.
        let guess = msn.checked_sub(first).map(|i| i as usize);
        if let Some(s) = guess.and_then(|i| self.segments.get(i)) {
            if s.msn == msn {
                return Some(s.clone());
            }
        }
        self.segments.iter().find(|s| s.msn == msn).cloned()
    }

    /// The newest complete segment's number.
    pub fn newest(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// How far the stream is: the open segment's number and its parts done (the segment after the newest
    /// and 0 between runs); `None` before anything was made. Grows in (number, part) order.
    pub fn position(&self) -> Option<(u64, u32)> {
        match &self.run {
            Some(run) if !run.parts.is_empty() || self.newest().is_some() => {
                Some((run.msn, run.parts.len() as u32))
            }
            _ => self.newest().map(|n| (n + 1, 0)),
        }
    }

    /// The open segment, for the playlist.
    pub fn open(&self) -> Option<Open> {
        self.run.as_ref().map(|run| Open {
            msn: run.msn,
            start_ms: run.start_ms,
            discontinuity: run.discontinuity,
            parts: run.parts.clone(),
        })
    }

    /// A viewer fetched segment `msn`, or its first part (a low-latency player fetches parts instead).
    pub fn hit(&self, msn: u64) {
        match &self.run {
            Some(run) if run.msn == msn => run.hits.fetch_add(1, Ordering::Relaxed),
            _ => match self.get(msn) {
                Some(s) => s.hits.fetch_add(1, Ordering::Relaxed),
                None => 0,
            },
        };
    }

    /// Part `index` of segment `msn` (complete or open): its bytes, CRC and when it was made.
    pub fn part(&self, msn: u64, index: u32) -> Option<(Bytes, u32, u64)> {
        let index = index as usize;
        if let Some(run) = self.run.as_ref().filter(|r| r.msn == msn) {
            let p = run.parts.get(index)?;
            let bytes = run.part_bytes.get(index)?.clone();
            return Some((bytes, p.crc, run.part_made_ms));
        }
        let s = self.get(msn)?;
        let p = s.parts.get(index)?;
        Some((s.bytes.slice(p.range.clone()), p.crc, s.made_ms))
    }

    /// The playlist's segments (the newest `window`) and its discontinuity sequence number.
    pub fn window(&self) -> (Vec<Arc<Segment>>, u64) {
        let skip = self.segments.len().saturating_sub(self.window);
        let before = self
            .segments
            .iter()
            .take(skip)
            .filter(|s| s.discontinuity)
            .count() as u64;
        (
            self.segments.iter().skip(skip).cloned().collect(),
            self.discontinuities_gone + before,
        )
    }

    /// The viewers now, estimated: requests for the segment before the newest (it has been out for a
    /// whole segment, and every player fetches every segment once).
    pub fn viewers(&self) -> u64 {
        let n = self.segments.len();
        match n {
            0 => 0,
            1 => self.segments[0].hits.load(Ordering::Relaxed),
            _ => self.segments[n - 2].hits.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 s after the epoch's segment 1000 (2 s segments) began.
    const T0: u64 = 2_000_000;

    fn packet(i: u8) -> Bytes {
        Bytes::from(vec![0xfc, i])
    }

    /// Feed `frames` frames from `tick`, 20 ms apart from `now`; returns segments completed.
    fn feed(s: &mut Segmenter, tick: u64, now: u64, frames: u64) -> usize {
        (0..frames)
            .map(|i| s.push(tick + i, &packet(i as u8), now + i * 20))
            .sum()
    }

    #[test]
    fn frames_become_consecutive_full_segments_numbered_from_the_clock() {
        let mut s = Segmenter::new(100, 100, 3);
        assert_eq!(feed(&mut s, 7, T0, 350), 3);
        let (w, disc) = s.window();
        assert_eq!(disc, 0);
        let numbers: Vec<u64> = w.iter().map(|x| x.msn).collect();
        assert_eq!(numbers, [1000, 1001, 1002], "T0 / 2000 ms");
        for (i, seg) in w.iter().enumerate() {
            assert_eq!(seg.frames, 100);
            assert_eq!(seg.start_ms, T0 + i as u64 * 2000);
            assert!(!seg.discontinuity);
            // The decode time (tfdt, version 1, at byte 64) is the number × 96,000 samples.
            let tfdt = u64::from_be_bytes(seg.bytes[64..72].try_into().expect("8 bytes"));
            assert_eq!(tfdt, seg.msn * 96_000);
        }
    }

    #[test]
    fn skipped_ticks_are_filled_with_silence_and_keep_the_timeline() {
        let mut s = Segmenter::new(100, 100, 3);
        feed(&mut s, 0, T0, 60);
        // 10 ticks skipped: 60 + 10 silent + 30 = one full segment.
        assert_eq!(feed(&mut s, 70, T0 + 1400, 30), 1);
        let seg = s.get(1000).expect("kept");
        assert_eq!(seg.frames, 100);
        let silent = seg.bytes.windows(3).filter(|w| *w == SILENT_PACKET).count();
        assert_eq!(silent, 10);
    }

    #[test]
    fn a_long_gap_or_a_remade_room_is_a_discontinuity_with_growing_numbers() {
        let mut s = Segmenter::new(100, 100, 4);
        // Segment 1000 full, 50 frames of 1001 open, the last at T0 + 2980.
        feed(&mut s, 500, T0, 150);
        // The room is re-made while its frames keep coming: its ticks start again at 0, the run goes
        // on (one tick's gap by the clock, filled with silence).
        assert_eq!(feed(&mut s, 0, T0 + 3020, 49), 1);
        let same_run = s.get(1001).expect("kept");
        assert_eq!((same_run.frames, same_run.discontinuity), (100, false));
        // 1002 open with 50 frames, the last at T0 + 4980; then frames stop for longer than
        // MAX_PAUSE_MS and the room's ticks count anew: 1002 closes short when they resume, and a new
        // run starts, numbered by the clock.
        feed(&mut s, 49, T0 + 4000, 50);
        assert_eq!(
            s.push(0, &packet(1), T0 + 6020),
            1,
            "the open segment closes short"
        );
        let short = s.get(1002).expect("kept");
        assert_eq!((short.frames, short.discontinuity), (50, false));
        feed(&mut s, 1, T0 + 6040, 99);
        let next = s.get(1003).expect("the new run's first segment");
        assert!(next.discontinuity);
        assert_eq!(next.start_ms, T0 + 6020);
        // Frames stop: the open segment goes out after MAX_PAUSE_MS.
        feed(&mut s, 100, T0 + 8020, 10);
        assert_eq!(s.flush_idle(T0 + 8300), 0);
        assert_eq!(s.flush_idle(T0 + 8200 + MAX_PAUSE_MS + 1), 1);
        assert_eq!(s.get(1004).expect("kept").frames, 10);
        // A minute later: the number follows the clock.
        feed(&mut s, 3000, T0 + 60_000, 100);
        let late = s.get((T0 + 60_000) / 2000).expect("numbered by the clock");
        assert!(late.discontinuity);
        let (w, disc) = s.window();
        assert_eq!(w.len(), 4);
        assert_eq!(disc, 0, "both discontinuities are still in the window");
    }

    #[test]
    fn the_window_slides_counting_discontinuities_that_leave_it() {
        let mut s = Segmenter::new(50, 50, 2);
        feed(&mut s, 0, T0, 50); // 2000
        feed(&mut s, 1000, T0 + 10_000, 50); // new run: discontinuity, number 2010 (1 s segments)
        assert_eq!(s.window().1, 0);
        feed(&mut s, 1050, T0 + 11_000, 50);
        let (w, disc) = s.window();
        assert_eq!(w.iter().map(|x| x.msn).collect::<Vec<_>>(), [2010, 2011]);
        assert_eq!(
            disc, 0,
            "the discontinuity is on the window's first segment"
        );
        feed(&mut s, 1100, T0 + 12_000, 50);
        assert_eq!(s.window().1, 1, "it left the playlist");
        feed(&mut s, 1150, T0 + 13_000, 100);
        assert_eq!(s.window().1, 1, "and then memory: still counted");
        assert!(s.get(2010).is_none(), "gone from memory: not served");
        assert!(s.get(2012).is_some(), "left the playlist, still served");
    }

    #[test]
    fn stopping_drops_the_segments_and_the_next_run_is_a_discontinuity() {
        let mut s = Segmenter::new(50, 50, 3);
        feed(&mut s, 0, T0, 75);
        s.stop(T0 + 2000);
        assert_eq!(s.newest(), None);
        feed(&mut s, 0, T0 + 3000, 50);
        let (w, disc) = s.window();
        assert_eq!(w.len(), 1);
        assert!(w[0].discontinuity);
        assert_eq!(w[0].msn, 2003);
        assert_eq!(disc, 0);
    }

    #[test]
    fn parts_are_published_as_they_fill_and_a_segment_is_their_concatenation() {
        // 1 s segments of 200 ms parts.
        let mut s = Segmenter::new(50, 10, 3);
        assert_eq!(s.position(), None);
        feed(&mut s, 0, T0, 25);
        assert_eq!(
            s.position(),
            Some((2000, 2)),
            "two parts of the first segment"
        );
        let open = s.open().expect("a segment is open");
        assert_eq!((open.msn, open.parts.len()), (2000, 2));
        let (p1, _, _) = s.part(2000, 1).expect("part 1 is out");
        assert_eq!(&p1[4..8], b"moof");
        // Its decode time: the segment's plus part 0's 10 frames.
        let tfdt = u64::from_be_bytes(p1[64..72].try_into().expect("8 bytes"));
        assert_eq!(tfdt, 2000 * 48_000 + 10 * 960);
        assert!(s.part(2000, 2).is_none(), "not yet full");
        feed(&mut s, 25, T0 + 500, 25);
        assert_eq!(s.position(), Some((2001, 0)));
        let seg = s.get(2000).expect("complete");
        assert_eq!(seg.parts.len(), 5);
        let mut joined = Vec::new();
        for i in 0..5 {
            let (bytes, crc, _) = s.part(2000, i).expect("a part of a complete segment");
            assert_eq!(super::crc(&bytes), crc);
            joined.extend_from_slice(&bytes);
        }
        assert_eq!(joined, seg.bytes.to_vec());
        assert_eq!(&p1[..], &seg.bytes[seg.parts[1].range.clone()]);
        // A run that ends early: its last part is short.
        feed(&mut s, 50, T0 + 1000, 13);
        assert_eq!(s.flush_idle(T0 + 1240 + MAX_PAUSE_MS + 1), 1);
        let short = s.get(2001).expect("closed short");
        let frames: Vec<u32> = short.parts.iter().map(|p| p.frames).collect();
        assert_eq!(frames, [10, 3]);
    }

    #[test]
    fn viewers_are_the_requests_for_the_segment_before_the_newest() {
        let mut s = Segmenter::new(50, 50, 3);
        feed(&mut s, 0, T0, 150);
        for _ in 0..4 {
            s.hit(2001);
        }
        s.hit(2002);
        assert_eq!(s.viewers(), 4);
        // Low-latency viewers fetch the open segment's first part: counted for it once complete.
        feed(&mut s, 150, T0 + 3000, 10);
        s.hit(2003);
        s.hit(2003);
        feed(&mut s, 160, T0 + 3200, 40);
        feed(&mut s, 200, T0 + 4000, 50);
        assert_eq!(s.viewers(), 2);
    }
}
