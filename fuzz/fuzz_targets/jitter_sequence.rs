//! `JitterBuffer` with arbitrary arrival sequences: pushes and redundant pushes with arbitrary sequence
//! numbers, timestamps, durations, levels and arrival times, and pops at arbitrary (non-decreasing) times.
//! Invariants: no panic, never more than `max_packets` held, every span a positive, bounded duration.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::jitter::{JitterBuffer, JitterConfig, JitterPacket};

#[derive(Arbitrary, Debug)]
struct Packet {
    /// Added to the previous sequence number (wrapping in i16 steps: reorder, duplicates, jumps).
    seq_step: i16,
    /// Added to the previous timestamp.
    ts_step: i32,
    /// Index into common Opus durations, or any value.
    samples: Samples,
    fec_mode: bool,
    has_fec: bool,
    audio_level: Option<u8>,
    payload_len: u8,
}

#[derive(Arbitrary, Debug)]
enum Samples {
    Common(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Push { after_us: u16, packet: Packet },
    PushRedundant { packet: Packet },
    Pop { after_us: u16 },
    Reset,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_packets: u8,
    ops: Vec<Op>,
}

const COMMON_SAMPLES: [u32; 6] = [120, 240, 480, 960, 1920, 2880];

fuzz_target!(|input: Input| {
    let config = JitterConfig {
        max_packets: usize::from(input.max_packets % 64).max(1),
        ..JitterConfig::default()
    };
    let mut jb = JitterBuffer::new(config);
    let mut now = Instant::now();
    let (mut seq, mut ts) = (1u64 << 32, 0u32);
    let make = |p: &Packet, seq: &mut u64, ts: &mut u32| {
        *seq = seq.wrapping_add_signed(i64::from(p.seq_step));
        *ts = ts.wrapping_add_signed(p.ts_step);
        JitterPacket {
            seq: *seq,
            ts: *ts,
            samples: match p.samples {
                Samples::Common(i) => COMMON_SAMPLES[usize::from(i) % COMMON_SAMPLES.len()],
                Samples::Any(n) => n,
            },
            fec_mode: p.fec_mode,
            has_fec: p.fec_mode && p.has_fec,
            audio_level: p.audio_level.map(|l| l & 0x7f),
            payload: Arc::from(vec![0xfc; usize::from(p.payload_len)]),
        }
    };
    for op in input.ops.iter().take(4096) {
        match op {
            Op::Push { after_us, packet } => {
                now += Duration::from_micros(u64::from(*after_us));
                let p = make(packet, &mut seq, &mut ts);
                jb.push(now, p);
            }
            Op::PushRedundant { packet } => {
                let p = make(packet, &mut seq, &mut ts);
                jb.push_redundant(p);
            }
            Op::Pop { after_us } => {
                now += Duration::from_micros(u64::from(*after_us));
                let span = jb.pop(now, 0);
                let samples = span.samples();
                assert!(samples > 0, "an empty span: {span:?}");
                assert!(samples <= 5760, "a span longer than 120 ms: {span:?}");
            }
            Op::Reset => jb.reset(),
        }
        assert!(
            jb.len() <= config.max_packets,
            "{} packets held, max {}",
            jb.len(),
            config.max_packets
        );
        assert!(
            jb.target_delay() <= config.max_delay,
            "target {:?}",
            jb.target_delay()
        );
    }
});
