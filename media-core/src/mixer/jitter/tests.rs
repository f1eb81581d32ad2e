use super::*;
use crate::testkit::sim::Rng;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
use crate::audio::FRAME_DURATION;

/// The base of virtual time; only ever offset by durations.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn packet(seq: u64, ts: u32, samples: u32, has_fec: bool, audio_level: Option<u8>) -> JitterPacket {
    JitterPacket {
        seq,
        ts,
        samples,
        fec_mode: has_fec,
        has_fec,
        audio_level,
        payload: Arc::from(seq.to_le_bytes().as_slice()),
    }
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(
        payload
            .try_into()
            .expect("test payloads are 8-byte sequence numbers"),
    )
}

/// One frame the sender produces: at sender-clock sample `at` (relative), lasting `samples`.
#[derive(Clone, Copy, Debug)]
struct Frame {
    at: i64,
    samples: u32,
    level: Option<u8>,
    has_fec: bool,
}

/// `count` back-to-back frames of `samples` each, all at `level`.
fn continuous(count: usize, samples: u32, level: Option<u8>) -> Vec<Frame> {
    (0..count)
        .map(|i| Frame {
            at: i as i64 * i64::from(samples),
            samples,
            level,
            has_fec: false,
        })
        .collect()
}

/// Like [`continuous`], but the last frame is quiet, so the end of the stream is silence, not PLC.
fn spurt(count: usize, samples: u32, level: Option<u8>) -> Vec<Frame> {
    let mut frames = continuous(count, samples, level);
    if let Some(last) = frames.last_mut() {
        last.level = Some(80);
    }
    frames
}

/// Talk spurts of 1–3 s of 20 ms frames (speech-like levels, some quiet frames, the last three quiet)
/// separated by DTX pauses of 0.4–2 s (the sender sends nothing, timestamps jump), for `seconds`.
fn talk_spurts(rng: &mut Rng, seconds: f64, fec: bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0i64;
    let end = (seconds * f64::from(crate::audio::SAMPLE_RATE)) as i64;
    while at < end {
        let spurt = 50 + rng.below(100) as usize;
        for i in 0..spurt {
            let level = if i + 3 >= spurt || rng.chance(0.1) {
                70
            } else {
                20 + rng.below(25) as u8
            };
            frames.push(Frame {
                at,
                samples: 960,
                level: Some(level),
                has_fec: fec,
            });
            at += 960;
        }
        at += 960 * (20 + rng.below(80) as i64);
    }
    frames
}

/// A packet scheduled to arrive `at` after the start of the simulation.
#[derive(Clone, Debug)]
struct Arrival {
    at: Duration,
    packet: JitterPacket,
}

/// Sends `frames` from sequence number `seq0` and timestamp `ts0`, skipping those `lost` says (their
/// sequence numbers are still used). The sender's clock runs `1 + drift` times as fast as real time;
/// each packet arrives `delay(index)` after it was sent. Sorted by arrival.
fn send(
    frames: &[Frame],
    seq0: u64,
    ts0: u32,
    drift: f64,
    mut delay: impl FnMut(usize) -> Duration,
    lost: impl Fn(usize) -> bool,
) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let sent = Duration::from_secs_f64(
            frame.at as f64 / f64::from(crate::audio::SAMPLE_RATE) / (1.0 + drift),
        );
        let at = sent + delay(i);
        if lost(i) {
            continue;
        }
        let ts = ts0.wrapping_add(frame.at as u32);
        arrivals.push(Arrival {
            at,
            packet: packet(
                seq0 + i as u64,
                ts,
                frame.samples,
                frame.has_fec,
                frame.level,
            ),
        });
    }
    arrivals.sort_by_key(|a| a.at);
    arrivals
}

/// For the packets of `frames` (sent from sequence number 0 and timestamp 0), the `levels` frames before
/// each as RED redundancy, whether those arrived or not: index = carrier's sequence number.
fn red_for(frames: &[Frame], levels: u64) -> Vec<Vec<JitterPacket>> {
    (0..frames.len() as u64)
        .map(|seq| {
            (1..=levels.min(seq))
                .map(|k| {
                    let f = frames[(seq - k) as usize];
                    packet(seq - k, f.at as u32, f.samples, f.has_fec, f.level)
                })
                .collect()
        })
        .collect()
}

fn constant(ms: u64) -> impl FnMut(usize) -> Duration {
    move |_| Duration::from_millis(ms)
}

fn none(_: usize) -> bool {
    false
}

#[derive(Debug, Default)]
struct Trace {
    played: Vec<u64>,
    fec: Vec<u64>,
    plc_spans: u64,
    plc_samples: u64,
    silence_samples: u64,
    outcomes: Vec<(u64, PushOutcome)>,
    red_outcomes: Vec<(u64, RedundantOutcome)>,
    max_len: usize,
    /// (tick time, target, current delay) once per tick while playing.
    delays: Vec<(Duration, Duration, Duration)>,
    /// Output kinds in order: 'P'acket, 'F'ec, 'L' (PLC), 'S'ilence.
    kinds: String,
    /// `is_active` after each tick: 'A'ctive or '-'.
    active: String,
}

/// Drives a buffer like the mixer does: every 20 ms tick, hand it the packets that arrived by then, then
/// pop until the tick has 960 samples, carrying any surplus into the next tick.
struct Harness {
    jb: JitterBuffer,
    base: Instant,
    t: Duration,
    surplus: i64,
    arrivals: Vec<Arrival>,
    next: usize,
    trace: Trace,
    /// RED redundancy carried by each packet (index: sequence number), pushed after it.
    redundant: Vec<Vec<JitterPacket>>,
}

impl Harness {
    fn new(config: JitterConfig, arrivals: Vec<Arrival>) -> Self {
        Self {
            jb: JitterBuffer::new(config),
            base: t0(),
            t: Duration::ZERO,
            surplus: 0,
            arrivals,
            next: 0,
            trace: Trace::default(),
            redundant: Vec::new(),
        }
    }

    fn run_until(&mut self, end: Duration) {
        while self.t <= end {
            while let Some(arrival) = self.arrivals.get(self.next).filter(|a| a.at <= self.t) {
                let seq = arrival.packet.seq;
                let outcome = self.jb.push(self.base + arrival.at, arrival.packet.clone());
                self.trace.outcomes.push((seq, outcome));
                let redundant = self.redundant.get(seq as usize).into_iter().flatten();
                for r in redundant {
                    let outcome = self.jb.push_redundant(r.clone());
                    self.trace.red_outcomes.push((r.seq, outcome));
                }
                self.next += 1;
            }
            self.trace.max_len = self.trace.max_len.max(self.jb.len());
            let mut need = i64::from(TICK_SAMPLES) - self.surplus;
            while need > 0 {
                let held = i64::from(TICK_SAMPLES) - need;
                let out = self.jb.pop(
                    self.base + self.t,
                    u32::try_from(held).expect("0 ≤ held < a tick"),
                );
                assert!(out.samples() > 0, "empty span at {:?}", self.t);
                need -= i64::from(out.samples());
                match out {
                    Playout::Packet { payload, .. } => {
                        self.trace.played.push(seq_of(&payload));
                        self.trace.kinds.push('P');
                    }
                    Playout::Fec { payload, .. } => {
                        self.trace.fec.push(seq_of(&payload));
                        self.trace.kinds.push('F');
                    }
                    Playout::Plc { samples } => {
                        self.trace.plc_spans += 1;
                        self.trace.plc_samples += u64::from(samples);
                        self.trace.kinds.push('L');
                    }
                    Playout::Silence { samples } => {
                        self.trace.silence_samples += u64::from(samples);
                        self.trace.kinds.push('S');
                    }
                }
            }
            self.surplus = -need;
            self.trace
                .active
                .push(if self.jb.is_active() { 'A' } else { '-' });
            if self.jb.phase == Phase::Playing {
                self.trace
                    .delays
                    .push((self.t, self.jb.target_delay(), self.jb.current_delay()));
            }
            self.t += FRAME_DURATION;
        }
    }

    fn outcome(&self, seq: u64) -> Vec<PushOutcome> {
        self.trace
            .outcomes
            .iter()
            .filter(|(s, _)| *s == seq)
            .map(|(_, o)| *o)
            .collect()
    }
}

/// A fixed 40 ms target, so tests about ordering are not disturbed by delay adaptation.
fn fixed_40ms() -> JitterConfig {
    JitterConfig {
        min_delay: 40 * MS,
        initial_delay: 40 * MS,
        ..JitterConfig::default()
    }
}

fn ascending(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

#[test]
fn in_order_stream_plays_every_packet_once_in_order() {
    let frames = continuous(500, 960, Some(30));
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 1000, 12_345, 0.0, constant(30), none),
    );
    h.run_until(12 * SECOND);
    assert_eq!(h.trace.played, ascending(1000, 1500));
    let kinds = h.trace.kinds.trim_start_matches('S');
    let audio = &kinds[..500];
    assert!(audio.chars().all(|k| k == 'P'), "{audio}");
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.played,
            stats.lost,
            stats.late,
            stats.duplicate
        ),
        (500, 500, 0, 0, 0)
    );
    assert_eq!(stats.target_delay, 40 * MS);
    // Playout started once the first packet had waited the target delay (arrival 30 ms + 40 ms).
    let silent_ticks = h.trace.kinds.len() - h.trace.kinds.trim_start_matches('S').len();
    assert_eq!(
        silent_ticks, 4,
        "ticks 0..=60 ms silent, first packet at 80 ms"
    );
    // After the stream ends: PLC for at most max_plc, then silence, and the buffer is idle.
    assert!(h.trace.plc_samples <= 300 * 48, "{}", h.trace.plc_samples);
    assert!(h.trace.kinds.ends_with("SSS"));
    assert!(!h.jb.is_active());
}

#[test]
fn playout_starts_after_the_target_delay_and_is_active_in_a_talk_spurt() {
    let mut jb = JitterBuffer::new(fixed_40ms());
    let base = t0();
    assert_eq!(jb.pop(base, 0), Playout::Silence { samples: 960 });
    assert!(!jb.is_active());
    assert_eq!(
        jb.push(base + 5 * MS, packet(7, 0, 960, false, Some(20))),
        PushOutcome::Accepted
    );
    assert_eq!(jb.pop(base + 20 * MS, 0), Playout::Silence { samples: 960 });
    assert_eq!(
        jb.push(base + 25 * MS, packet(8, 960, 960, false, Some(20))),
        PushOutcome::Accepted
    );
    assert_eq!(jb.pop(base + 40 * MS, 0), Playout::Silence { samples: 960 });
    assert_eq!(jb.buffered(), 40 * MS);
    let first = jb.pop(base + 60 * MS, 0);
    assert!(
        matches!(
            first,
            Playout::Packet {
                samples: 960,
                audio_level: Some(20),
                ..
            }
        ),
        "{first:?}"
    );
    assert!(jb.is_active());
    assert_eq!(
        jb.current_delay(),
        55 * MS,
        "arrived at 5 ms, rendered at 60 ms"
    );
}

#[test]
fn reordering_within_the_delay_is_repaired() {
    let frames = spurt(400, 960, Some(30));
    // Every 7th packet is held back 30 ms: it arrives after its successor.
    let delay = |i: usize| if i % 7 == 3 { 60 * MS } else { 30 * MS };
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
    h.run_until(10 * SECOND);
    assert_eq!(h.trace.played, ascending(0, 400));
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.lost,
            stats.late,
            stats.concealed_plc,
            stats.concealed_fec
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn duplicates_are_counted_and_dropped() {
    let frames = spurt(200, 960, Some(30));
    let mut arrivals = send(&frames, 0, 0, 0.0, constant(30), none);
    // Every packet again 5 ms later (while buffered), and packet 60 once more long after it played.
    let mut again: Vec<Arrival> = arrivals
        .iter()
        .map(|a| Arrival {
            at: a.at + 5 * MS,
            packet: a.packet.clone(),
        })
        .collect();
    again.push(Arrival {
        at: 2 * SECOND,
        packet: arrivals[60].packet.clone(),
    });
    arrivals.extend(again);
    arrivals.sort_by_key(|a| a.at);
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.run_until(5 * SECOND);
    assert_eq!(h.trace.played, ascending(0, 200));
    assert_eq!(h.jb.stats().duplicate, 201);
    assert_eq!(
        h.outcome(60),
        [
            PushOutcome::Accepted,
            PushOutcome::Duplicate,
            PushOutcome::Duplicate
        ]
    );
    assert_eq!(h.jb.stats().late, 0);
}

#[test]
fn single_loss_is_recovered_from_fec_of_the_next_packet() {
    let mut frames = continuous(100, 960, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 0, 0, 0.0, constant(30), |i| i == 50),
    );
    h.run_until(3 * SECOND);
    let mut expected = ascending(0, 100);
    expected.remove(50);
    assert_eq!(h.trace.played, expected);
    assert_eq!(h.trace.fec, [51]);
    let stats = h.jb.stats();
    assert_eq!((stats.lost, stats.concealed_fec), (1, 1));
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
    assert_eq!(audio, format!("{}F{}", "P".repeat(50), "P".repeat(49)));
}

/// A packet whose mode can carry FEC but which carries none (its encoder expects no loss, or judged the
/// frame before it not speech): the lost frame is concealed with PLC in the very place FEC would have
/// filled, and counted as PLC. (Counted as FEC until the sixteenth session.)
#[test]
fn a_loss_before_a_packet_without_fec_is_plc_in_the_same_place() {
    let mut frames = spurt(100, 960, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let mut arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| i == 50);
    arrivals
        .iter_mut()
        .filter(|a| a.packet.seq == 51)
        .for_each(|a| a.packet.has_fec = false);
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.run_until(3 * SECOND);
    let mut expected = ascending(0, 100);
    expected.remove(50);
    assert_eq!(h.trace.played, expected);
    assert!(h.trace.fec.is_empty());
    let stats = h.jb.stats();
    assert_eq!(
        (stats.lost, stats.concealed_fec, stats.concealed_plc),
        (1, 0, 1)
    );
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
    assert_eq!(audio, format!("{}L{}", "P".repeat(50), "P".repeat(49)));
}

#[test]
fn a_lost_frame_comes_from_red_before_fec() {
    let mut frames = spurt(100, 960, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| i == 50);
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.redundant = red_for(&frames, 1);
    h.run_until(3 * SECOND);
    assert_eq!(h.trace.played, ascending(0, 100), "50 plays from 51's RED");
    assert!(h.trace.fec.is_empty());
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.lost,
            stats.recovered_red,
            stats.concealed_fec,
            stats.concealed_plc
        ),
        (1, 1, 0, 0)
    );
    assert_eq!((stats.played, stats.duplicate, stats.late), (99, 0, 0));
    let recovered: Vec<u64> = h
        .trace
        .red_outcomes
        .iter()
        .filter(|(_, o)| *o == RedundantOutcome::Recovered)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(recovered, [50]);
    assert!(h
        .trace
        .red_outcomes
        .iter()
        .all(|(s, o)| *s == 50 || *o == RedundantOutcome::NotMissing));
}

/// Speech-like spurts with in-band FEC on a 30 ms path, every 17th packet lost (6 %), played by a
/// consumer that decides each tick's audio at the tick, like the mixer.
fn lossy_fec_run(lost: fn(usize) -> bool, fec: bool) -> (Harness, Vec<Frame>) {
    let mut rng = Rng::new(7);
    let frames = talk_spurts(&mut rng, 30.0, fec);
    let mut h = Harness::new(
        JitterConfig::default(),
        send(&frames, 0, 0, 0.0, constant(30), lost),
    );
    h.run_until(32 * SECOND);
    (h, frames)
}

fn every_17th(i: usize) -> bool {
    i % 17 == 5
}

#[test]
fn under_loss_the_target_gains_a_packet_so_fec_finds_the_next_packet_in_time() {
    let (clean, _) = lossy_fec_run(none, true);
    let (lossy, frames) = lossy_fec_run(every_17th, true);
    assert_eq!(
        lossy.jb.target_delay(),
        clean.jb.target_delay() + 20 * MS,
        "a lossy stream with FEC waits one packet longer"
    );
    // Once the margin is on (after the first losses) and applied (at the next pause), a lost frame's
    // successor is buffered when the lost frame is due: it comes back from FEC, never from PLC.
    let settled = frames
        .iter()
        .position(|f| f.at >= 5 * 48_000)
        .expect("30 s of frames");
    let lost: Vec<usize> = (settled..frames.len() - 1)
        .filter(|&i| every_17th(i) && !every_17th(i + 1))
        .collect();
    let recovered = lost
        .iter()
        .filter(|&&i| lossy.trace.fec.contains(&(i as u64 + 1)))
        .count();
    assert!(
        lost.len() > 40 && recovered == lost.len(),
        "{recovered} of {} lost frames after 5 s came back from FEC",
        lost.len()
    );
}

#[test]
fn without_redundancy_or_loss_the_target_gains_nothing() {
    let (clean, _) = lossy_fec_run(none, true);
    let (lossy_no_fec, _) = lossy_fec_run(every_17th, false);
    assert_eq!(lossy_no_fec.jb.target_delay(), clean.jb.target_delay());
    assert_eq!(clean.jb.stats().lost, 0);
}

#[test]
fn a_burst_is_recovered_from_red_then_fec_then_plc() {
    // 50, 51 and 52 are lost; 53 carries 52 as RED (distance 1) and 52 carries FEC for 51: 52 comes
    // from RED, 51 from the FEC inside the recovered 52, and 50 (no source left) is concealed with PLC.
    let mut frames = spurt(100, 960, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| (50..53).contains(&i));
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.redundant = red_for(&frames, 1);
    h.run_until(3 * SECOND);
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
    assert_eq!(audio, format!("{}LFP{}", "P".repeat(50), "P".repeat(47)));
    assert_eq!(h.trace.fec, [52]);
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.lost,
            stats.recovered_red,
            stats.concealed_fec,
            stats.concealed_plc
        ),
        (3, 1, 1, 1)
    );

    // Two levels of redundancy (53 carries 51 and 52): 53 comes after 50's playout time, so PLC holds the
    // playout position for a span, then 50 comes back from the FEC in the recovered 51.
    let arrivals = send(&frames, 0, 0, 0.0, constant(30), |i| (50..53).contains(&i));
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.redundant = red_for(&frames, 2);
    h.run_until(3 * SECOND);
    assert_eq!(h.trace.fec, [51]);
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.lost,
            stats.recovered_red,
            stats.concealed_fec,
            stats.concealed_plc
        ),
        (3, 2, 1, 1)
    );
}

#[test]
fn redundancy_that_comes_too_late_is_ignored_without_counting() {
    // 50 is lost and 51 (which carries it) is held up past 50's playout time: 50 is concealed, and its
    // redundant copy is neither a late packet nor a duplicate. 51 plays from 52's redundancy, so 51 itself,
    // when it comes, is a duplicate of audio already played.
    let frames = spurt(100, 960, Some(30));
    let delay = |i: usize| if i == 51 { 130 * MS } else { 30 * MS };
    let arrivals = send(&frames, 0, 0, 0.0, delay, |i| i == 50);
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.redundant = red_for(&frames, 1);
    h.run_until(3 * SECOND);
    assert!(h
        .trace
        .red_outcomes
        .contains(&(50, RedundantOutcome::TooLate)));
    let stats = h.jb.stats();
    assert_eq!((stats.recovered_red, stats.lost), (1, 2));
    assert_eq!((stats.duplicate, stats.late), (1, 0));
}

#[test]
fn redundancy_that_does_not_fit_is_refused() {
    let base = t0();
    let mut jb = JitterBuffer::new(fixed_40ms());
    assert_eq!(
        jb.push_redundant(packet(9, 0, 960, false, None)),
        RedundantOutcome::Refused,
        "nothing to place it in yet"
    );
    assert_eq!(
        jb.push(base, packet(10, 9600, 960, false, None)),
        PushOutcome::Accepted
    );
    assert_eq!(
        jb.push_redundant(packet(9, 8640, 960, false, None)),
        RedundantOutcome::Refused,
        "before the first packet of a stream that has not started"
    );
    assert_eq!(
        jb.push(
            base + FRAME_DURATION * 2,
            packet(12, 11_520, 960, false, None)
        ),
        PushOutcome::Accepted
    );
    for bad in [
        packet(11, 10_000, 960, false, None),  // overlaps 10
        packet(11, 10_560, 1920, false, None), // overlaps 12
        packet(13, 10_560, 960, false, None),  // sequence number after 12's
        packet(11, 10_560, 0, false, None),    // no duration
    ] {
        assert_eq!(jb.push_redundant(bad), RedundantOutcome::Refused);
    }
    assert_eq!(
        jb.push_redundant(packet(12, 11_520, 960, false, None)),
        RedundantOutcome::NotMissing
    );
    assert_eq!(
        jb.push_redundant(packet(11, 10_560, 960, false, None)),
        RedundantOutcome::Recovered
    );
    assert_eq!(jb.len(), 3);
    // The packet itself arriving after its copy replaces it, without counting a duplicate.
    assert_eq!(
        jb.push(
            base + FRAME_DURATION * 3,
            packet(11, 10_560, 960, false, Some(20))
        ),
        PushOutcome::Accepted
    );
    assert_eq!(jb.len(), 3);
    assert_eq!(jb.stats().duplicate, 0);
}

#[test]
fn single_loss_without_fec_is_concealed_with_plc() {
    let frames = continuous(100, 960, Some(30));
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 0, 0, 0.0, constant(30), |i| i == 50),
    );
    h.run_until(3 * SECOND);
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
    assert_eq!(audio, format!("{}L{}", "P".repeat(50), "P".repeat(49)));
    let stats = h.jb.stats();
    assert_eq!((stats.lost, stats.concealed_fec, stats.played), (1, 0, 99));
    assert!(h.trace.fec.is_empty());
}

#[test]
fn fec_comes_from_the_packet_after_the_gap() {
    // Packet 50 is lost and 51 is held up past its playout time while 52 is on time: 50 has no FEC
    // source (51 is not there) and is concealed with PLC; 51 is recovered from 52's FEC and then
    // arrives late.
    let mut frames = spurt(100, 960, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let delay = |i: usize| if i == 51 { 130 * MS } else { 30 * MS };
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, |i| i == 50));
    h.run_until(3 * SECOND);
    assert_eq!(h.trace.fec, [52]);
    // (Skipping part of the gap moves the mixer's deadlines; a quiet packet may get silence inserted.)
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').replace('S', "");
    assert_eq!(audio, format!("{}LF{}", "P".repeat(50), "P".repeat(48)));
    assert_eq!(h.outcome(51), [PushOutcome::Late]);
    let stats = h.jb.stats();
    assert_eq!(
        (
            stats.lost,
            stats.late,
            stats.concealed_plc,
            stats.concealed_fec
        ),
        (2, 1, 1, 1)
    );
}

#[test]
fn a_delayed_packet_after_a_loud_one_is_waited_for_with_plc() {
    // The network stalls for 100 ms, then packets 50..55 arrive together: the buffer runs dry, PLC
    // holds the playout position, then 50.. play (nothing lost). The stall is a delay peak: the target
    // covers it (the delay is kept) until it is older than the peaks' memory, and then the extra delay is
    // trimmed again.
    let frames = spurt(1_500, 960, Some(30));
    let delay = |i: usize| {
        if (50..55).contains(&i) {
            Duration::from_millis(130 - 20 * (i as u64 - 50))
        } else {
            30 * MS
        }
    };
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
    h.run_until(31 * SECOND);
    assert_eq!(
        h.trace.played.len() as u64 + h.jb.stats().delay_dropped,
        1_500
    );
    assert!(h.trace.played.contains(&50));
    let stats = h.jb.stats();
    assert_eq!((stats.lost, stats.late), (0, 0));
    assert!(
        stats.concealed_plc >= 3 && stats.delay_dropped >= 3,
        "{stats:?}"
    );
    assert_eq!(stats.delay_peaks, 1, "one stall, one peak: {stats:?}");
    let at = |limit: Duration| {
        *h.trace
            .delays
            .iter()
            .rev()
            .find(|(t, ..)| *t < limit)
            .expect("playing")
    };
    let (_, target, current) = at(6 * SECOND);
    assert!(
        target >= 100 * MS,
        "the stall's peak is covered: {target:?}"
    );
    assert!(current >= 100 * MS, "and its delay kept: {current:?}");
    let (_, target, current) = at(30 * SECOND);
    assert!(target <= 45 * MS, "the peak is forgotten: {target:?}");
    assert!(current <= target + 25 * MS, "{current:?} vs {target:?}");
}

#[test]
fn a_late_packet_is_counted_and_dropped() {
    let frames = continuous(100, 960, Some(30));
    let delay = |i: usize| if i == 40 { 250 * MS } else { 30 * MS };
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, delay, none));
    h.run_until(3 * SECOND);
    assert_eq!(h.outcome(40), [PushOutcome::Late]);
    let stats = h.jb.stats();
    assert_eq!((stats.late, stats.lost), (1, 1));
    assert!(!h.trace.played.contains(&40));
    assert_eq!(h.trace.played.len(), 99);
}

#[test]
fn burst_loss_conceals_with_plc_then_silence_and_resumes() {
    let frames = spurt(200, 960, Some(30));
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 0, 0, 0.0, constant(30), |i| (60..110).contains(&i)),
    );
    h.run_until(6 * SECOND);
    let mut expected = ascending(0, 60);
    expected.extend(110..200);
    assert_eq!(h.trace.played, expected);
    let stats = h.jb.stats();
    assert_eq!(stats.lost, 50);
    // PLC for at most max_plc (300 ms) after the last packet, then silence until packets come back.
    assert!(
        (14_400..=15_360).contains(&h.trace.plc_samples),
        "{}",
        h.trace.plc_samples
    );
    let gap = h
        .trace
        .kinds
        .split("P")
        .find(|run| run.len() > 5)
        .expect("the burst shows as a run of non-packets");
    assert!(
        gap.starts_with("LLLLLLLLLLLLLLL") && gap.ends_with("SSSS"),
        "{gap}"
    );
    assert!(!gap.contains('F'));
    // Playout re-anchored at the target instead of keeping the burst's worth of delay.
    let (_, target, current) = *h.trace.delays.last().expect("playing");
    assert!(current <= target + 25 * MS, "{current:?} vs {target:?}");
}

#[test]
fn dtx_gap_is_silence_not_loss_and_playout_resumes() {
    let mut frames = continuous(50, 960, Some(30));
    frames[47..].iter_mut().for_each(|f| f.level = Some(80));
    let resume = 50 * 960 + 48_000; // one second of DTX
    frames.extend((0..50).map(|i| Frame {
        at: resume + i * 960,
        samples: 960,
        level: Some(30),
        has_fec: true,
    }));
    frames.last_mut().expect("100 frames").level = Some(80);
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
    h.run_until(4 * SECOND);
    // Every loud packet plays; the quiet ones before the pause may be rendered as trimmed silence.
    let loud: Vec<u64> = (0..47).chain(50..99).collect();
    let played: Vec<u64> = h
        .trace
        .played
        .iter()
        .copied()
        .filter(|s| loud.contains(s))
        .collect();
    assert_eq!(played, loud);
    let stats = h.jb.stats();
    assert_eq!(stats.played, 100);
    assert_eq!(
        (stats.lost, stats.concealed_plc, stats.concealed_fec),
        (0, 0, 0)
    );
    // The pause is the longest run of silence after playout started (trimmed quiet packets before it
    // show as short runs).
    let gap_len = h
        .trace
        .kinds
        .trim_start_matches('S')
        .split('P')
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        (48..=52).contains(&gap_len),
        "about one second of silence ticks, got {gap_len}"
    );
    let (_, target, current) = *h.trace.delays.last().expect("playing");
    assert!(
        current >= target && current <= target + 25 * MS,
        "{current:?} vs {target:?}"
    );
    // Active in both talk spurts, not before, in the pause, or after.
    let spurts: Vec<&str> = h
        .trace
        .active
        .split('-')
        .filter(|run| !run.is_empty())
        .collect();
    assert_eq!(spurts.len(), 2, "{}", h.trace.active);
    assert!(
        spurts.iter().all(|run| (49..=51).contains(&run.len())),
        "{}",
        h.trace.active
    );
    assert!(h.trace.active.starts_with("----") && h.trace.active.ends_with("----"));
}

#[test]
fn a_long_pause_from_a_slow_sender_does_not_make_the_next_spurt_late() {
    // The sender's clock runs 0.5 % slow; during a 20 s pause our playout position runs 100 ms ahead of
    // its timestamps. The next talk spurt must re-anchor instead of arriving "late".
    for drift in [-0.005, 0.005] {
        let mut frames = spurt(100, 960, Some(30));
        let resume = 100 * 960 + 20 * 48_000;
        frames.extend((0..100).map(|i| Frame {
            at: resume + i * 960,
            samples: 960,
            level: Some(30),
            has_fec: false,
        }));
        frames.last_mut().expect("200 frames").level = Some(80);
        let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, drift, constant(30), none));
        h.run_until(26 * SECOND);
        assert_eq!(h.trace.played, ascending(0, 200), "drift {drift}");
        let stats = h.jb.stats();
        assert_eq!(
            (stats.lost, stats.late, stats.concealed_plc),
            (0, 0, 0),
            "drift {drift}"
        );
        // The margin (the delay as of the tick) is at least the target; what is heard may add up to a tick
        // on top (how far into its tick the spurt's first packet starts), and the drift over the spurt.
        let (_, target, current) = *h.trace.delays.last().expect("playing");
        assert!(
            current >= target && current <= target + 20 * MS + 25 * MS,
            "{current:?} vs {target:?}"
        );
    }
}

#[test]
fn dtx_without_audio_levels_fades_from_plc_to_silence_without_counting_loss() {
    let mut frames = continuous(50, 960, None);
    frames.extend((0..50).map(|i| Frame {
        at: 98_400 + i * 960,
        samples: 960,
        level: None,
        has_fec: false,
    }));
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
    h.run_until(4 * SECOND);
    assert_eq!(h.trace.played, ascending(0, 100));
    assert_eq!(h.jb.stats().lost, 0);
    // One PLC phase in the pause, one after the end.
    assert!(h.trace.plc_samples <= 2 * 14_400, "{}", h.trace.plc_samples);
}

/// Fraction of the loud frames (by sequence number in `range`) that were played (quiet ones may be
/// trimmed to silence).
fn loud_played_fraction(trace: &Trace, frames: &[Frame], range: std::ops::Range<u64>) -> f64 {
    let loud = |s: &u64| {
        range.contains(s)
            && frames
                .get(*s as usize)
                .is_some_and(|f| f.level.is_none_or(|l| l < 60))
    };
    let played = trace.played.iter().filter(|s| loud(s)).count();
    let sent = range.clone().filter(loud).count();
    played as f64 / sent.max(1) as f64
}

#[test]
fn target_rises_to_cover_jitter_and_falls_when_the_network_calms() {
    let mut rng = Rng::new(7);
    let mut frames = continuous(3000, 960, Some(30)); // 60 s
    for f in frames.iter_mut() {
        if rng.chance(0.1) {
            f.level = Some(70);
        }
    }
    let mut jitter = Rng::new(8);
    // ±30 ms for the first 20 s, then ±1 ms.
    let delay = |i: usize| {
        let spread = if i < 1000 { 30.0 } else { 1.0 };
        Duration::from_secs_f64((50.0 + jitter.range_f64(-spread, spread)) / 1000.0)
    };
    let mut h = Harness::new(
        JitterConfig::default(),
        send(&frames, 0, 0, 0.0, delay, none),
    );
    h.run_until(20 * SECOND);
    let target = h.jb.target_delay();
    assert!(target >= 55 * MS && target <= 90 * MS, "{target:?}");
    let on_time = loud_played_fraction(&h.trace, &frames, 150..950);
    assert!(on_time >= 0.95, "{on_time}");
    h.run_until(62 * SECOND);
    let target = h.jb.target_delay();
    assert!(target <= 25 * MS, "{target:?}");
    let (_, _, current) = *h
        .trace
        .delays
        .iter()
        .rev()
        .find(|(t, ..)| *t <= 60 * SECOND)
        .expect("playing");
    assert!(current <= 50 * MS, "{current:?}");
    assert!(loud_played_fraction(&h.trace, &frames, 1000..2990) >= 0.97);
    assert!(h.trace.max_len <= 10, "{}", h.trace.max_len);
}

#[test]
fn headroom_follows_the_measured_spread_so_a_calm_stream_waits_only_the_floor() {
    // A calm path (delays within ±1 ms: a LAN, or a worker stamping arrivals with the kernel's receive
    // time) waits the floor, and so do delays spread over 8 ms (their 95th percentile, 10 ms, plus as
    // much headroom, where the full 20 ms made it 30); a spread of 16 ms gets the full headroom. Every
    // loud packet still plays.
    for (spread, floor, ceiling) in [(1.0, 20, 20), (4.0, 20, 20), (8.0, 35, 45)] {
        let frames = continuous(1500, 960, Some(30)); // 30 s
        let mut jitter = Rng::new(9);
        let delay =
            |_: usize| Duration::from_secs_f64((40.0 + jitter.range_f64(-spread, spread)) / 1000.0);
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, 0.0, delay, none),
        );
        h.run_until(32 * SECOND);
        let target = h.jb.target_delay();
        assert!(
            target >= floor * MS && target <= ceiling * MS,
            "±{spread} ms: {target:?}"
        );
        let on_time = loud_played_fraction(&h.trace, &frames, 500..1490);
        assert!(on_time >= 0.97, "±{spread} ms: {on_time}");
    }
}

fn drift_run(drift: f64, dtx: bool) -> (Harness, u64) {
    let mut rng = Rng::new(11);
    let frames = if dtx {
        talk_spurts(&mut rng, 300.0, true)
    } else {
        let mut frames = spurt(15_000, 960, Some(30));
        frames
            .iter_mut()
            .for_each(|f| f.level = Some(if rng.chance(0.05) { 70 } else { 25 }));
        frames.last_mut().expect("15000 frames").level = Some(80);
        frames
    };
    let sent = frames.len() as u64;
    let mut jitter = Rng::new(12);
    let delay = move |_| Duration::from_secs_f64((40.0 + jitter.range_f64(0.0, 20.0)) / 1000.0);
    let mut h = Harness::new(
        JitterConfig::default(),
        send(&frames, 0, 0, drift, delay, none),
    );
    h.run_until(Duration::from_secs(305));
    (h, sent)
}

fn assert_drift_absorbed(h: &Harness, sent: u64) {
    let stats = h.jb.stats();
    let (max_current, min_current) = h.trace.delays[500..]
        .iter()
        .fold((Duration::ZERO, SECOND), |(hi, lo), (.., c)| {
            (hi.max(*c), lo.min(*c))
        });
    assert!(
        max_current <= 130 * MS,
        "delay grew to {max_current:?}: {stats:?}"
    );
    assert!(
        min_current >= 5 * MS,
        "delay fell to {min_current:?}: {stats:?}"
    );
    assert!(h.trace.max_len <= 12, "{}", h.trace.max_len);
    let played = stats.played as f64 / sent as f64;
    assert!(played >= 0.97, "{played}: {stats:?}");
    assert!(
        stats.concealed_plc as f64 <= 0.01 * sent as f64,
        "{stats:?}"
    );
    assert_eq!(
        stats.late + stats.too_far_ahead + stats.resyncs,
        stats.late,
        "{stats:?}"
    );
}

#[test]
fn fast_sender_clock_with_dtx_is_absorbed() {
    let (h, sent) = drift_run(0.005, true);
    assert_drift_absorbed(&h, sent);
}

#[test]
fn slow_sender_clock_with_dtx_is_absorbed() {
    let (h, sent) = drift_run(-0.005, true);
    assert_drift_absorbed(&h, sent);
}

#[test]
fn fast_sender_clock_in_continuous_speech_is_absorbed() {
    let (h, sent) = drift_run(0.005, false);
    assert_drift_absorbed(&h, sent);
    assert!(h.jb.stats().delay_dropped >= 50, "{:?}", h.jb.stats());
}

#[test]
fn slow_sender_clock_in_continuous_speech_is_absorbed() {
    let (h, sent) = drift_run(-0.005, false);
    assert_drift_absorbed(&h, sent);
    // Delay is added as silence right after the rare quiet packets, or by concealment while a packet is
    // waited for (within the 1 % of PLC `assert_drift_absorbed` allows).
    let stats = h.jb.stats();
    assert!(
        stats.delay_inserted + stats.concealed_plc >= 50,
        "{stats:?}"
    );
}

#[test]
fn timestamps_wrap_around() {
    let frames = continuous(300, 960, Some(30));
    let ts0 = u32::MAX - 960 * 100 + 1;
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 5, ts0, 0.0, constant(30), |i| i == 120),
    );
    h.run_until(8 * SECOND);
    let mut expected = ascending(5, 305);
    expected.remove(120);
    assert_eq!(h.trace.played, expected);
    assert_eq!(h.jb.stats().lost, 1);
    assert_eq!(h.jb.stats().late + h.jb.stats().too_far_ahead, 0);
}

#[test]
fn ten_millisecond_packets() {
    let mut frames = continuous(600, 480, Some(30));
    frames.iter_mut().for_each(|f| f.has_fec = true);
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 0, 0, 0.0, constant(30), |i| i == 300),
    );
    h.run_until(7 * SECOND);
    let mut expected = ascending(0, 600);
    expected.remove(300);
    assert_eq!(h.trace.played, expected);
    assert_eq!(h.trace.fec, [301]);
    assert_eq!(h.jb.stats().lost, 1);
}

#[test]
fn forty_millisecond_packets() {
    let frames = continuous(150, 1920, Some(30));
    let mut h = Harness::new(
        fixed_40ms(),
        send(&frames, 0, 0, 0.0, constant(30), |i| i == 70),
    );
    h.run_until(8 * SECOND);
    let mut expected = ascending(0, 150);
    expected.remove(70);
    assert_eq!(h.trace.played, expected);
    let audio: String = h.trace.kinds.trim_matches(|k| k != 'P').into();
    assert_eq!(audio, format!("{}L{}", "P".repeat(70), "P".repeat(79)));
    assert_eq!(h.jb.stats().lost, 1);
}

#[test]
fn memory_stays_bounded_under_a_flood_of_far_future_packets() {
    let frames = continuous(500, 960, Some(30));
    let mut arrivals = send(&frames, 0, 0, 0.0, constant(30), none);
    let mut rng = Rng::new(99);
    for i in 0..20_000u64 {
        let at = Duration::from_micros(500_000 + rng.below(9_500_000));
        let ts = (480_000 + rng.below(48_000 * 1000)) as u32;
        arrivals.push(Arrival {
            at,
            packet: packet(1_000_000 + i, ts, 960, false, Some(10)),
        });
    }
    arrivals.sort_by_key(|a| a.at);
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.run_until(11 * SECOND);
    let stats = h.jb.stats();
    assert!(h.trace.max_len <= 50);
    assert_eq!(stats.resyncs, 0);
    assert!(stats.too_far_ahead >= 19_000, "{stats:?}");
    assert_eq!(h.trace.played.iter().filter(|s| **s < 500).count(), 500);
    assert!(h.jb.window.len() <= WINDOW_CAPACITY);
}

#[test]
fn a_full_buffer_drops_the_furthest_packet() {
    let config = JitterConfig {
        max_packets: 4,
        ..fixed_40ms()
    };
    let mut jb = JitterBuffer::new(config);
    let base = t0();
    for (seq, ts) in [(0, 0), (1, 960), (3, 2880), (4, 3840)] {
        assert_eq!(
            jb.push(base, packet(seq, ts, 960, false, None)),
            PushOutcome::Accepted
        );
    }
    assert_eq!(
        jb.push(base, packet(5, 4800, 960, false, None)),
        PushOutcome::Overflow
    );
    assert_eq!(
        jb.push(base, packet(2, 1920, 960, false, None)),
        PushOutcome::Accepted
    );
    assert_eq!(jb.len(), 4);
    assert_eq!(jb.stats().overflow, 2);
    assert_eq!(jb.buffered(), 80 * MS);
}

#[test]
fn sender_restart_with_a_new_timestamp_base_resyncs() {
    let frames = spurt(100, 960, Some(30));
    let mut arrivals = send(&frames, 0, 1_000, 0.0, constant(30), none);
    let restarted = send(&frames, 50_000, 3_000_000_000, 0.0, constant(30), none);
    arrivals.extend(restarted.into_iter().map(|a| Arrival {
        at: a.at + 2500 * MS,
        ..a
    }));
    let mut h = Harness::new(fixed_40ms(), arrivals);
    h.run_until(7 * SECOND);
    let stats = h.jb.stats();
    assert_eq!(stats.resyncs, 1, "{stats:?}");
    assert_eq!(stats.too_far_ahead + stats.late, 2, "{stats:?}");
    let played_after: Vec<u64> = h
        .trace
        .played
        .iter()
        .copied()
        .filter(|s| *s >= 50_000)
        .collect();
    assert_eq!(played_after, ascending(50_002, 50_100));
}

#[test]
fn reset_forgets_the_stream_but_keeps_counters_and_target() {
    let frames = continuous(100, 960, Some(30));
    let mut h = Harness::new(fixed_40ms(), send(&frames, 0, 0, 0.0, constant(30), none));
    h.run_until(SECOND);
    let before = h.jb.stats();
    h.jb.reset();
    assert!(h.jb.is_empty());
    assert!(!h.jb.is_active());
    assert_eq!(h.jb.current_delay(), Duration::ZERO);
    let stats = h.jb.stats();
    assert_eq!(
        (stats.resets, stats.played, stats.target_delay),
        (1, before.played, before.target_delay)
    );
    // The rest of the stream starts playing again after the target delay.
    h.run_until(3 * SECOND);
    assert!(h.trace.played.ends_with(&[99]));
}

#[test]
fn invalid_durations_are_rejected() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    assert_eq!(
        jb.push(t0(), packet(0, 0, 0, false, None)),
        PushOutcome::Invalid
    );
    assert_eq!(
        jb.push(t0(), packet(0, 0, 6000, false, None)),
        PushOutcome::Invalid
    );
    assert_eq!(jb.stats().invalid, 2);
    assert!(jb.is_empty());
}

/// A talker without DTX: spurts of 1 s of voice and runs of 1 s of quiet packets (the silence frames a
/// browser sends by default), back to back for `seconds`: no gap ever re-anchors the delay.
fn spurts_without_dtx(seconds: usize) -> Vec<Frame> {
    let mut frames = continuous(seconds * 50, 960, Some(30));
    for (i, f) in frames.iter_mut().enumerate() {
        if (i / 50) % 2 == 1 {
            f.level = Some(90);
        }
    }
    frames
}

#[test]
fn without_dtx_the_quiet_runs_bring_the_delay_down_to_the_first_tick_past_a_10ms_target() {
    // The mixer decodes a whole tick at once: a packet must be there at the tick that needs it, so what
    // protects it from jitter is the margin, how long it waits for that tick (`wait`, the arrival's phase
    // against the tick grid, plus whole ticks). The target is a margin: packets arriving 13 ms after a
    // tick wait 7 ms for the next, short of 10 ms, so they play from the tick after (27 ms); arriving 3 ms
    // after one, they wait 17 ms. Quiet packets are shortened so that each packet starts its tick: what is
    // heard is then the margin itself. Before, a quiet packet was shortened only once its successor had
    // arrived, which never happens once the delay is below a packet, so the delay stayed wherever the last
    // such trim left it (up to a tick above); and before that, the delay as of the span's start was
    // steered onto the target, which left the margin up to a tick short of it.
    for (arrival_ms, wait_ms) in [(13.0, 27.0_f64), (3.0, 17.0), (19.0, 21.0)] {
        let frames = spurts_without_dtx(30);
        let mut jitter = Rng::new(17);
        let delay = |_: usize| {
            Duration::from_secs_f64((40.0 + arrival_ms + jitter.range_f64(-0.4, 0.4)) / 1000.0)
        };
        let config = JitterConfig {
            min_delay: 10 * MS,
            ..JitterConfig::default()
        };
        let mut h = Harness::new(config, send(&frames, 0, 0, 0.0, delay, none));
        h.run_until(32 * SECOND);
        let what = format!("arriving {arrival_ms} ms after a tick");
        assert_eq!(h.jb.target_delay(), 10 * MS, "{what}");
        // Inside each voice spurt after the first few (100 ms after its first packet was sent).
        let expected = Duration::from_secs_f64(wait_ms / 1000.0);
        for spurt in (5..15).map(|k| k * 100) {
            let at = frames[spurt].at as u64 * 1_000 / 48 + 100_000;
            let (_, _, current) = *h
                .trace
                .delays
                .iter()
                .find(|(t, ..)| t.as_micros() as u64 >= at)
                .expect("playing");
            assert!(
                current >= expected.saturating_sub(MS) && current <= expected + 3 * MS,
                "{what}: spurt at packet {spurt} plays with {current:?} of delay, not ≈ {expected:?}"
            );
        }
        let stats = h.jb.stats();
        assert_eq!(stats.late + stats.concealed_plc, 0, "{what}: {stats:?}");
        assert_eq!(
            loud_played_fraction(&h.trace, &frames, 50..1450),
            1.0,
            "{what}"
        );
    }
}

#[test]
fn packets_inside_the_targets_spread_are_on_time_whatever_the_consumer_holds() {
    // A stream without DTX (quiet runs instead of pauses), each packet late by up to 8 ms at random, against
    // the default 20 ms target, at three phases against the consumer's ticks. A packet that starts to play
    // late in a tick must still be there at the tick's start: what covers the spread is the margin, the
    // delay as of the tick. Steering the delay as of the span's start left it up to a tick short: arriving
    // 13 ms after a tick, 9 concealments in 30 s with the delay at 21.9 ms against the 20 ms target (as a
    // real-UDP speech test met on a CI machine).
    for arrival_ms in [3.0, 13.0, 19.0] {
        let frames = spurts_without_dtx(30);
        let mut jitter = Rng::new(23);
        let delay = |_: usize| {
            Duration::from_secs_f64((40.0 + arrival_ms + jitter.range_f64(0.0, 8.0)) / 1000.0)
        };
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, 0.0, delay, none),
        );
        h.run_until(32 * SECOND);
        let stats = h.jb.stats();
        assert_eq!(
            (stats.late, stats.lost, stats.concealed_plc),
            (0, 0, 0),
            "arriving {arrival_ms} ms after a tick, target {:?}: {stats:?}",
            h.jb.target_delay()
        );
        assert_eq!(
            loud_played_fraction(&h.trace, &frames, 50..1450),
            1.0,
            "arriving {arrival_ms} ms after a tick"
        );
    }
}

/// Arrivals on a loaded machine: 40 ms of path plus 0–3 ms of scheduling noise, and every second or two
/// a stall of 10–20 ms that holds back the packet it hits.
fn loaded(seed: u64) -> impl FnMut(usize) -> Duration {
    let mut rng = Rng::new(seed);
    move |_| {
        let mut ms = 40.0 + rng.range_f64(0.0, 3.0);
        if rng.chance(1.0 / 75.0) {
            ms += rng.range_f64(10.0, 20.0);
        }
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// Speech without DTX pauses: `voice_s` seconds of voice (a quiet frame now and then, as between words),
/// then one second of quiet frames, repeated for `seconds`.
fn sentences_without_dtx(rng: &mut Rng, seconds: usize, voice_s: usize) -> Vec<Frame> {
    let period = (voice_s + 1) * 50;
    let mut frames = continuous(seconds * 50, 960, Some(30));
    for (i, f) in frames.iter_mut().enumerate() {
        let quiet = i % period >= voice_s * 50 || rng.chance(0.05);
        f.level = Some(if quiet { 70 } else { 20 + rng.below(25) as u8 });
    }
    frames
}

#[test]
fn a_new_stream_converges_at_once_and_its_first_sentence_keeps_every_loud_packet() {
    // Chorus issue 15: at a 10 ms floor, one loaded real-UDP speech run in three lost loud packets of the
    // mix's input. The histogram started with all its mass at the start-up target (60 ms) and that seed
    // faded only at the forgetting factor's pace: the target stayed at 60 ms for 3.5 s whatever was
    // measured, then fell to the floor in one step, 50 ms, beyond the 40 ms force margin, and 4 s into the
    // first sentence loud packets were dropped (here 200, 206, 212 of every seed without DTX). Now the seed
    // weighs as one measurement, the target reaches the floor within half a second, and what the first talk
    // spurt keeps above it (it started at 60 ms) is given up in the first pause, not by forced drops.
    let config = JitterConfig {
        min_delay: 10 * MS,
        ..JitterConfig::default()
    };
    for dtx in [true, false] {
        for seed in 0..4u64 {
            let what = format!("dtx {dtx}, seed {seed}");
            let mut rng = Rng::new(100 + seed);
            let frames = if dtx {
                talk_spurts(&mut rng, 12.0, true)
            } else {
                sentences_without_dtx(&mut rng, 12, 5)
            };
            let mut h = Harness::new(config, send(&frames, 0, 0, 0.0, loaded(200 + seed), none));
            h.run_until(12 * SECOND);
            let (converged, ..) = *h
                .trace
                .delays
                .iter()
                .find(|(_, target, _)| *target <= 20 * MS)
                .expect("the target reaches the floor");
            assert!(
                converged <= SECOND,
                "{what}: at the floor after {converged:?}"
            );
            let played: Vec<u64> = h.trace.played.clone();
            // Every loud packet of the first 5 s (the first sentence without DTX) is played.
            let dropped: Vec<u64> = (0..frames.len() as u64)
                .filter(|s| frames[*s as usize].at < 5 * 48_000)
                .filter(|s| frames[*s as usize].level.is_some_and(|l| l < 60))
                .filter(|s| !played.contains(s))
                .collect();
            assert!(
                dropped.is_empty(),
                "{what}: loud packets dropped: {dropped:?}"
            );
            // After the first pause (DTX, or the first quiet second), the delay is the target's.
            let first_pause_end = if dtx {
                frames
                    .windows(2)
                    .find(|w| w[1].at - w[0].at > 960)
                    .map(|w| w[1].at)
                    .expect("a pause")
            } else {
                6 * 48_000
            };
            let after = Duration::from_micros(first_pause_end as u64 * 1_000 / 48) + 200 * MS;
            let (_, target, current) = *h
                .trace
                .delays
                .iter()
                .find(|(t, ..)| *t >= after)
                .expect("playing");
            // At most a tick above the target then (the phase): 30 ms at the floor, more where the
            // profile's 10–20 ms spikes (one packet in 75) have raised the target to cover them (peaks).
            assert!(
                current <= (target + 20 * MS).max(30 * MS),
                "{what}: {current:?} after the first pause (target {target:?})"
            );
        }
    }
}

#[test]
fn a_stream_that_never_pauses_gives_up_its_start_up_delay_all_the_same() {
    // The start-up delay (playout starts at the 60 ms seed target) is kept until the stream's first quiet
    // moment rather than forced down mid-sentence; a source that never has one (music, hold music) gives it
    // up by forced steps once it has played 8 s, and ends near the floor's delay.
    let config = JitterConfig {
        min_delay: 10 * MS,
        ..JitterConfig::default()
    };
    let frames = continuous(1_000, 960, Some(20));
    let mut h = Harness::new(config, send(&frames, 0, 0, 0.0, constant(0), none));
    h.run_until(20 * SECOND);
    let delay_at = |at: Duration| {
        h.trace
            .delays
            .iter()
            .find(|(t, ..)| *t >= at)
            .map(|(_, _, current)| *current)
            .expect("playing")
    };
    let early = delay_at(5 * SECOND);
    assert!(
        early >= 40 * MS,
        "the start-up delay is kept at 5 s: {early:?}"
    );
    let late = delay_at(19 * SECOND);
    assert!(late <= 40 * MS, "given up by 19 s: {late:?}");
}

#[test]
fn a_steady_network_gets_a_steady_target() {
    // Chorus issue 15: over real UDP at 30 ± 20 ms per leg (two legs, as a forwarded listener hears a
    // speaker; 5 % loss each), the listener's buffer changed its delay in almost every pause, 11 to 18
    // insertions and 0 to 20 trims in 11 s of speech, and PESQ-WB ranged 1.75 to 2.67 over the same
    // packets. The 95th percentile of a histogram that forgot within 3 s wandered over 15 ms (95 to 110
    // ms here, 50 to 66 moves in 50 s) and each move down was trimmed in the next pause, each move up
    // added again. With ~10 s of memory it stays within one bucket of 5 ms.
    for seed in [3, 5, 8] {
        let mut rng = Rng::new(seed);
        let frames = talk_spurts(&mut rng, 60.0, true);
        let lost: Vec<bool> = (0..frames.len()).map(|_| rng.chance(0.1)).collect();
        let mut jitter = Rng::new(seed + 100);
        let delay = |_: usize| {
            let ms = jitter.range_f64(10.0, 50.0) + jitter.range_f64(10.0, 50.0);
            Duration::from_secs_f64(ms / 1000.0)
        };
        let mut h = Harness::new(
            JitterConfig::default(),
            send(&frames, 0, 0, 0.0, delay, |i| lost[i]),
        );
        h.run_until(62 * SECOND);
        let targets = || {
            h.trace
                .delays
                .iter()
                .filter(|(t, ..)| *t >= 10 * SECOND)
                .map(|(_, target, _)| *target)
        };
        let (low, high) = (targets().min(), targets().max());
        let (Some(low), Some(high)) = (low, high) else {
            panic!("seed {seed}: not playing after 10 s");
        };
        assert!(
            high - low <= 5 * MS,
            "seed {seed}: the target wandered over {low:?}..{high:?} on a steady network"
        );
    }
}
