//! The mixer on its own (`media_core::mixer::Mixer`): up to four members added, removed, muted and unmuted,
//! fed arbitrary packets (tone frames from libopus, silence, arbitrary bytes claiming to be Opus, RED
//! redundancy built from arbitrary blocks) with arbitrary sequence numbers, timestamps, levels, SSRC
//! changes and arrival times, DTX gaps and jumps of up to an hour, listeners stating loss (so moving
//! between the shared mix's clean and protected encodes) and a broadcast tap turned on and off, ticking
//! as the core does. Every packet out is checked: valid Opus of one 20 ms frame (or a quiet move's fill of
//! silence: fewer 2.5 ms frames, nobody heard), per listener sequence numbers consecutive and timestamps
//! moving forward by at least the last packet (by whole frames after a packet in which someone was heard:
//! the timeline shifts only in silence), at most 15 talkers and never the listener itself, a level in 0..=127,
//! the RED redundancy valid Opus too; and each listener's stream decodes to finite samples within the
//! limiter's range. The tap's frames are valid 20 ms Opus frames, on consecutive ticks while it is on.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::encoder::{EncoderSettings, MixEncoder};
use media_core::mixer::{opus_packet_info, MixPacket, Mixer};
use media_core::red::RedundantFrame;
use media_core::{MixSettings, MixStats, ParticipantId, Samples, Ssrc};

const MEMBERS: u8 = 4;
const FRAME: u32 = 960;
/// Decoded samples may overshoot full scale a little (Opus is lossy, the limiter works before the encoder).
const MAX_SAMPLE: f32 = 2.0;

/// Fifty 20 ms Opus frames of a 440 Hz tone (libopus, 32 kb/s, FEC): the well-formed packets.
fn tone() -> &'static [Vec<u8>] {
    static TONE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    TONE.get_or_init(|| {
        let mut encoder = MixEncoder::new(EncoderSettings {
            bitrate_bps: 32_000,
            complexity: 5,
            fec: true,
            channels: 1,
        })
        .expect("libopus creates a mono 48 kHz encoder");
        let mut phase = 0.0;
        let mut pcm = vec![0.0f32; 960];
        let mut out = [0u8; 1500];
        (0..50)
            .map(|_| {
                media_core::audio::sine(440.0, 0.5, 48_000, &mut phase, &mut pcm);
                let n = encoder
                    .encode(&pcm, &mut out)
                    .expect("libopus encodes a 20 ms frame");
                out[..n].to_vec()
            })
            .collect()
    })
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Tone(u8),
    /// A 20 ms CELT frame with no data (what DTX comfort packets look like to a parser).
    Empty,
    Raw(Vec<u8>),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Tone(n) => tone()[usize::from(*n) % tone().len()].clone(),
            Payload::Empty => vec![0xf8],
            Payload::Raw(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Add {
        id: u8,
        publishes: bool,
        subscribes: bool,
        seq: u16,
        ts_offset: u32,
    },
    Remove {
        id: u8,
    },
    Publish {
        id: u8,
        on: bool,
    },
    Push {
        after_us: u32,
        id: u8,
        /// Switch to another SSRC (a restarted microphone).
        new_ssrc: bool,
        seq_delta: i16,
        ts_delta: i32,
        level: Option<u8>,
        payload: Payload,
        /// RED redundancy for this packet: (timestamp offset, frame), oldest first.
        redundant: Vec<(u16, Payload)>,
    },
    /// `frames` well-formed consecutive frames from one member, 20 ms apart, ticking in between.
    Talk {
        id: u8,
        frames: u8,
        level: u8,
    },
    /// What the member's receiver reports state (percent).
    Loss {
        id: u8,
        percent: u8,
    },
    /// A broadcast mount starts or stops listening.
    Tap {
        on: bool,
    },
    Tick {
        after_ms: u16,
    },
    Jump {
        secs: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    dtx: bool,
    fec: bool,
    jitter_min_ms: u8,
    jitter_max_ms: u16,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Sender {
    ssrc: u32,
    seq: u64,
    ts: u32,
}

struct Listener {
    /// The last packet's sequence number and timestamp, whether anyone was heard in it, its samples, and
    /// the ticks given up before the call that sent it (some may have been given up in that call after it).
    last: Option<(u64, u32, bool, u32, u64)>,
    decoder: opus::Decoder,
}

struct Check {
    listeners: HashMap<ParticipantId, Listener>,
    pcm: Vec<f32>,
    /// The tick of the tap's last frame while it is on.
    last_tap: Option<u64>,
}

impl Check {
    fn tapped(&mut self, mixer: &mut Mixer) {
        for tap in mixer.take_tapped() {
            assert_eq!(
                opus_packet_info(&tap.payload).map(|(n, _)| n),
                Some(FRAME),
                "a tapped frame is one valid 20 ms Opus frame"
            );
            if let Some(last) = self.last_tap {
                assert!(tap.tick > last, "the tap's ticks move forward");
            }
            self.last_tap = Some(tap.tick);
        }
    }

    /// `skipped`: the ticks the mixer had given up (a worker too far behind, where a stream may jump)
    /// before and after the call that made `out`.
    fn packets(
        &mut self,
        out: &mut Vec<MixPacket>,
        ssrcs: &HashMap<ParticipantId, Sender>,
        (skipped_before, skipped): (u64, u64),
    ) {
        for p in out.drain(..) {
            let samples = opus_packet_info(&p.payload).map_or(0, |(n, _)| n);
            // One 20 ms frame; or, right after a quiet move of the grid, the rest of the last frame's
            // silence as a whole number of 2.5 ms frames, in which nobody is heard.
            assert!(
                samples == FRAME
                    || (samples > 0
                        && samples < FRAME
                        && samples % (FRAME / 8) == 0
                        && p.contributors.is_empty()),
                "a mixed packet is one valid 20 ms Opus frame, or a fill of silence: {samples} samples"
            );
            for prev in p.previous.iter().flatten() {
                assert!(
                    opus_packet_info(prev).is_some(),
                    "RED redundancy is valid Opus"
                );
            }
            assert!(
                p.previous[0].is_some() || p.previous[1].is_none(),
                "RED redundancy 40 ms back only with the packet 20 ms back"
            );
            assert!(p.level <= 127, "RFC 6464 level out of range");
            assert!(p.contributors.len() <= 15, "at most 15 CSRCs");
            if let Some(me) = ssrcs.get(&p.to) {
                assert!(
                    !p.contributors.ssrcs().contains(&me.ssrc),
                    "a mix-minus never contains the listener"
                );
            }
            let l = self.listeners.entry(p.to).or_insert_with(|| Listener {
                last: None,
                decoder: opus::Decoder::new(48_000, opus::Channels::Mono)
                    .expect("libopus creates a decoder"),
            });
            if let Some((seq, ts, heard, last_samples, skipped_then)) = l.last {
                assert_eq!(
                    p.seq,
                    seq + 1,
                    "sequence numbers are consecutive per listener"
                );
                let step = p.ts.wrapping_sub(ts);
                assert!(
                    (last_samples..1 << 31).contains(&step),
                    "timestamps move forward by at least the last packet (packets never overlap): {ts} then {}",
                    p.ts
                );
                // The listener's timeline follows the wall clock across an idle spell and a quiet move of
                // the grid: a step of part of a frame, but only after a packet in which nobody was heard.
                assert!(
                    step % FRAME == 0 || !heard,
                    "timestamps move by whole frames after a packet in which someone was heard: {ts} then {}",
                    p.ts
                );
                // A talk spurt's end is never cut: after a packet in which someone was heard comes the
                // next frame (more of the mix, or its last frame, then silence), unless ticks were given up.
                assert!(
                    !heard || skipped != skipped_then || step == FRAME,
                    "a stream stopped or jumped right after a packet in which someone was heard: {ts} then {}",
                    p.ts
                );
            }
            l.last = Some((
                p.seq,
                p.ts,
                !p.contributors.is_empty(),
                samples,
                skipped_before,
            ));
            let n = l
                .decoder
                .decode_float(&p.payload, &mut self.pcm, false)
                .expect("a mixed packet decodes");
            for s in &self.pcm[..n] {
                assert!(s.is_finite() && s.abs() <= MAX_SAMPLE, "decoded sample {s}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let start = Instant::now();
    let min = u32::from(input.jitter_min_ms) % 200;
    let config = MixSettings {
        dtx: input.dtx,
        fec: input.fec,
        jitter_min_ms: min,
        jitter_max_ms: min + u32::from(input.jitter_max_ms) % 1000,
        ..MixSettings::default()
    };
    if config.validate().is_err() {
        return;
    }
    let mut mixer = Mixer::new(start, config);
    let mut stats = MixStats::default();
    let mut samples = Samples::default();
    let mut out = Vec::new();
    let mut senders: HashMap<ParticipantId, Sender> = HashMap::new();
    let mut check = Check {
        listeners: HashMap::new(),
        pcm: vec![0.0; 5760],
        last_tap: None,
    };
    let mut now = start;
    let member = |id: u8| ParticipantId(u64::from(id % MEMBERS));
    for op in input.ops.iter().take(128) {
        match op {
            Op::Add {
                id,
                publishes,
                subscribes,
                seq,
                ts_offset,
            } => {
                let id = member(*id);
                mixer.add_member(id, *publishes, *subscribes, *seq, *ts_offset);
                senders.entry(id).or_insert_with(|| Sender {
                    ssrc: 1000 + id.0 as u32,
                    ..Sender::default()
                });
            }
            Op::Remove { id } => {
                let id = member(*id);
                mixer.remove_member(id);
                senders.remove(&id);
                check.listeners.remove(&id);
            }
            Op::Publish { id, on } => mixer.set_publishing(member(*id), *on),
            Op::Push {
                after_us,
                id,
                new_ssrc,
                seq_delta,
                ts_delta,
                level,
                payload,
                redundant,
            } => {
                now += Duration::from_micros(u64::from(*after_us % 200_000));
                let id = member(*id);
                let Some(s) = senders.get_mut(&id) else {
                    continue;
                };
                if *new_ssrc {
                    s.ssrc = s.ssrc.wrapping_add(100);
                }
                let seq = s.seq.saturating_add_signed(i64::from(*seq_delta));
                let ts = s.ts.wrapping_add_signed(*ts_delta);
                s.seq = seq + 1;
                s.ts = ts.wrapping_add(FRAME);
                let payload: Arc<[u8]> = payload.bytes().into();
                let pushed = mixer.push(
                    now,
                    id,
                    Ssrc(s.ssrc),
                    seq,
                    ts,
                    payload,
                    level.map(|l| l % 128),
                    &mut stats,
                );
                if pushed.is_ok() && !redundant.is_empty() {
                    let blocks: Vec<Vec<u8>> =
                        redundant.iter().take(8).map(|(_, p)| p.bytes()).collect();
                    let frames: Vec<RedundantFrame<'_>> = redundant
                        .iter()
                        .zip(&blocks)
                        .map(|((offset, _), payload)| RedundantFrame {
                            ts_offset: u32::from(*offset),
                            payload,
                        })
                        .collect();
                    mixer.push_redundant(id, seq, ts, &frames);
                }
            }
            Op::Talk { id, frames, level } => {
                let id = member(*id);
                for f in 0..usize::from(*frames % 50) {
                    let Some(s) = senders.get_mut(&id) else {
                        break;
                    };
                    let (seq, ts) = (s.seq, s.ts);
                    s.seq += 1;
                    s.ts = s.ts.wrapping_add(FRAME);
                    let _ = mixer.push(
                        now,
                        id,
                        Ssrc(s.ssrc),
                        seq,
                        ts,
                        tone()[f % tone().len()].clone().into(),
                        Some(level % 128),
                        &mut stats,
                    );
                    now += Duration::from_millis(20);
                    let skipped = stats.ticks_skipped;
                    mixer.tick(now, &mut out, &mut stats, &mut samples);
                    check.packets(&mut out, &senders, (skipped, stats.ticks_skipped));
                    check.tapped(&mut mixer);
                }
            }
            Op::Loss { id, percent } => mixer.set_listener_loss(member(*id), *percent),
            Op::Tap { on } => {
                mixer.set_tap(now, *on);
                check.tapped(&mut mixer);
                if !*on {
                    check.last_tap = None;
                }
            }
            Op::Tick { after_ms } => {
                now += Duration::from_millis(u64::from(*after_ms % 2_000));
            }
            Op::Jump { secs } => {
                now += Duration::from_secs(u64::from(*secs % 3_600));
            }
        }
        // Tick whenever one is due, as the core does.
        let mut ticks = 0;
        while mixer.next_tick().is_some_and(|t| t <= now) {
            ticks += 1;
            assert!(ticks < 1_000, "the mixer never catches up");
            let skipped = stats.ticks_skipped;
            mixer.tick(now, &mut out, &mut stats, &mut samples);
            check.packets(&mut out, &senders, (skipped, stats.ticks_skipped));
            check.tapped(&mut mixer);
        }
        assert!(mixer.member_count() <= usize::from(MEMBERS));
    }
});
