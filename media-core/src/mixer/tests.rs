//! The mixer driven directly, packet by packet, with a browser-like sender (libopus with DTX, RFC 6464
//! levels) and a receiver that decodes what a listener gets: frame-exact talk-spurt edges, inaudible
//! encoder switches, and late ticks.
use super::*;
use crate::audio::{audio_level_from_samples, mean_square, SAMPLE_RATE};
use crate::testkit::analysis::{goertzel_power, sine};

const MS: Duration = Duration::from_millis(1);
const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

/// A browser-like microphone: libopus VOIP at 32 kb/s with DTX, 20 ms frames, levels from the frame.
struct Sender {
    encoder: opus::Encoder,
    ssrc: Ssrc,
    seq: u64,
}

impl Sender {
    fn new(ssrc: u32) -> Sender {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("libopus creates an encoder");
        encoder
            .set_bitrate(opus::Bitrate::Bits(32_000))
            .expect("valid bitrate");
        encoder.set_dtx(true).expect("DTX is a valid setting");
        Sender {
            encoder,
            ssrc: Ssrc(ssrc),
            seq: 100,
        }
    }

    /// Encode frame `k`; `None` when libopus is in DTX (WebRTC sends nothing then).
    fn frame(&mut self, k: usize, pcm: &[f32]) -> Option<(u64, u32, Arc<[u8]>, u8)> {
        let packet = self
            .encoder
            .encode_vec_float(pcm, MAX_OPUS)
            .expect("a 20 ms frame encodes");
        if packet.len() <= 2 {
            return None;
        }
        self.seq += 1;
        let ts = (k * FRAME_SAMPLES) as u32;
        Some((
            self.seq,
            ts,
            Arc::from(packet),
            audio_level_from_samples(pcm),
        ))
    }
}

/// What one listener receives, decoded in timestamp order (DTX gaps as silence), indexed by the mixer's
/// tick grid.
#[derive(Default)]
struct Received {
    decoder: Option<opus::Decoder>,
    pcm: Vec<f32>,
    next_ts: Option<u32>,
    packets: usize,
    /// Packets whose timestamp did not follow the previous packet's end (DTX gaps count too): the index in
    /// `sent` of the packet after the jump, and the gap in samples.
    gaps: Vec<(usize, u32)>,
    /// Each packet's tick and RTP timestamp, for the packets that [`Room::tick`] ran.
    clock: Vec<(Instant, u32)>,
    /// Each packet's tick (on the mixer's grid) and payload.
    sent: Vec<(usize, Arc<[u8]>)>,
}

impl Received {
    fn take(&mut self, p: &MixPacket, ts_offset: u32) {
        let decoder = self.decoder.get_or_insert_with(|| {
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder")
        });
        let at = p.ts.wrapping_sub(ts_offset) as usize;
        if let Some(next) = self.next_ts {
            assert!(
                p.ts.wrapping_sub(next) as i32 >= 0,
                "timestamps went backwards"
            );
            if p.ts != next {
                self.gaps.push((self.sent.len(), p.ts.wrapping_sub(next)));
            }
        }
        self.pcm.resize(at, 0.0);
        self.sent.push((at / FRAME_SAMPLES, p.payload.clone()));
        let mut buf = vec![0.0; MAX_PACKET_SAMPLES];
        let n = decoder
            .decode_float(&p.payload, &mut buf, false)
            .expect("the mixer sends valid Opus");
        self.pcm.extend_from_slice(&buf[..n]);
        self.next_ts = Some(p.ts.wrapping_add(n as u32));
        self.packets += 1;
    }
}

impl Received {
    /// The stream has no gap, and its packets shorter than a frame are the room's fills of silence, each
    /// right after silence: where the grid moved in a pause ([`Mixer::move_in_quiet`]), never in sound.
    fn gapless_with_fills_only_in_silence(&self, pause: &PausePackets) -> Result<(), String> {
        if let Some(&(i, gap)) = self.gaps.first() {
            return Err(format!(
                "a gap of {gap} samples before packet {i} (tick {}) of {}",
                self.sent[i].0,
                self.sent.len()
            ));
        }
        for (i, (tick, p)) in self.sent.iter().enumerate() {
            let samples =
                opus::packet::get_nb_samples(p, SAMPLE_RATE).map_err(|e| e.to_string())?;
            if samples == FRAME_SAMPLES {
                continue;
            }
            let is_fill = pause.fills.iter().any(|f| f == p);
            let after = i.checked_sub(1).map(|j| &self.sent[j].1);
            let after_silence = after.is_some_and(|a| pause.is_pause_packet(a) && a.len() > 1);
            if !is_fill || !after_silence {
                return Err(format!(
                    "packet {i} (tick {tick}) of {samples} samples: {} a fill, after {:?}",
                    if is_fill { "" } else { "not" },
                    after.map(|a| a.len())
                ));
            }
        }
        Ok(())
    }

    /// [`gapless_with_fills_only_in_silence`](Self::gapless_with_fills_only_in_silence), and the stream
    /// ends with the room's silence frame, then the DTX packet.
    fn gapless_ending_in_dtx(&self, pause: &PausePackets) -> Result<(), String> {
        self.gapless_with_fills_only_in_silence(pause)?;
        let ends = match self.sent.as_slice() {
            [.., (_, silence), (_, dtx)] => {
                pause.silence.as_ref() == Some(silence) && pause.dtx.as_ref() == Some(dtx)
            }
            _ => false,
        };
        if ends {
            Ok(())
        } else {
            Err(format!(
                "the stream of {} packets does not end with silence, then the DTX packet",
                self.sent.len()
            ))
        }
    }

    /// How many of its packets are fills of a quiet move's gap.
    fn fills(&self, pause: &PausePackets) -> usize {
        self.sent
            .iter()
            .filter(|(_, p)| pause.fills.iter().any(|f| f == p))
            .count()
    }
}

/// One 20 ms frame of a 440 Hz tone at 0.3 while `talking`, silence otherwise; `phase` carries the tone
/// across frames.
fn gated_tone(phase: &mut f64, talking: bool) -> Vec<f32> {
    (0..FRAME_SAMPLES)
        .map(|_| {
            *phase += std::f64::consts::TAU * 440.0 / f64::from(SAMPLE_RATE);
            if talking {
                (0.3 * phase.sin()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// How far (seconds) a listener's stream, given as (tick, RTP timestamp) of each packet, ran ahead of the
/// clock from its first packet to its last: its timestamps advanced that much more than the time.
fn ahead_of_clock(packets: &[(Instant, u32)]) -> f64 {
    let (Some(first), Some(last)) = (packets.first(), packets.last()) else {
        return 0.0;
    };
    f64::from(last.1.wrapping_sub(first.1)) / f64::from(SAMPLE_RATE)
        - last.0.duration_since(first.0).as_secs_f64()
}

struct Room {
    mixer: Mixer,
    t0: Instant,
    stats: MixStats,
    samples: Samples,
    rx: HashMap<ParticipantId, Received>,
    /// The room's policy, if it has one (a spatial room's positions).
    audibility: Option<crate::audibility::Audibility>,
}

const TS_OFFSET: u32 = 7_000;

/// The base of virtual time; only ever offset by durations.
#[allow(clippy::disallowed_methods)]
pub(super) fn t0() -> Instant {
    Instant::now()
}

impl Room {
    fn new(members: &[ParticipantId]) -> Room {
        Room::with_config(members, MixSettings::default())
    }

    fn with_config(members: &[ParticipantId], config: MixSettings) -> Room {
        let t0 = t0();
        let mut mixer = Mixer::new(t0, config);
        for &id in members {
            mixer.add_member(id, true, true, 0, TS_OFFSET);
        }
        Room {
            mixer,
            t0,
            stats: MixStats::default(),
            samples: Samples::default(),
            rx: HashMap::new(),
            audibility: None,
        }
    }

    fn push(&mut self, at: Instant, id: ParticipantId, ssrc: Ssrc, p: (u64, u32, Arc<[u8]>, u8)) {
        let (seq, ts, payload, level) = p;
        self.mixer
            .push(at, id, ssrc, seq, ts, payload, Some(level), &mut self.stats)
            .expect("valid Opus");
    }

    /// Every tick due before the frame sent at `sent` ends, none run earlier than `sent` (a worker woken
    /// by that frame's packet runs the ticks it finds due then).
    fn tick_frame(&mut self, sent: Instant) {
        while let Some(t) = self
            .mixer
            .next_tick()
            .filter(|t| *t < sent + FRAME_DURATION)
        {
            self.tick(sent.max(t));
        }
    }

    /// `who`'s stream has no gap, its packets shorter than a frame only in silence (where the grid moved in
    /// a pause), and ran no further ahead of (or behind) the clock than the fills' drift, 1.25 ms: the
    /// grid's moves were made in pauses
    /// (moved in speech, the stream ran ahead by each move, and a browser time-compressed speech to shed
    /// it).
    fn kept_the_clock(&self, who: ParticipantId) {
        let rx = &self.rx[&who];
        assert_eq!(
            rx.gapless_with_fills_only_in_silence(&self.mixer.pause),
            Ok(())
        );
        let ahead = ahead_of_clock(&rx.clock);
        // the fills' drift: within half a short frame (`Mixer::fill_after_quiet_move`)
        let drift = (SHORT_FRAME / 2).as_secs_f64() + 0.000_1;
        assert!(
            ahead.abs() < drift,
            "{who:?}'s stream ran {:.1} ms ahead of the clock after {} moves of the grid",
            ahead * 1000.0,
            self.stats.grid_moves
        );
    }

    /// A room of A, B and C without DTX in which A and C talk (a 440 Hz tone) when `talks(0 or 1, k)`
    /// says so, from senders without DTX whose frame `k` arrives 5.3 ms (A) and 15.3 ms (C) into the k-th
    /// 20 ms period: two phases half a tick apart. Every tick due before a packet arrives runs first;
    /// `each(room, k)` sees the room before frame `k`.
    fn two_talkers(
        frames: std::ops::Range<usize>,
        talks: impl Fn(usize, usize) -> bool,
        mut each: impl FnMut(&Room, usize),
    ) -> Room {
        let config = MixSettings {
            dtx: false,
            ..MixSettings::default()
        };
        let mut room = Room::with_config(&[A, B, C], config);
        let mut mics = [
            (A, Sender::new(0xA), 5_300u64),
            (C, Sender::new(0xC), 15_300),
        ];
        for (_, mic, _) in &mut mics {
            mic.encoder.set_dtx(false).expect("DTX is a valid setting");
        }
        let mut phase = 0.0;
        let t0 = room.t0;
        for k in frames {
            each(&room, k);
            for (who, (id, mic, offset_us)) in mics.iter_mut().enumerate() {
                let pcm = gated_tone(&mut phase, talks(who, k));
                let arrival = t0 + FRAME_DURATION * k as u32 + Duration::from_micros(*offset_us);
                while let Some(t) = room.mixer.next_tick().filter(|t| *t <= arrival) {
                    room.tick(t);
                }
                let p = mic.frame(k, &pcm).expect("no DTX: every frame is sent");
                room.push(arrival, *id, mic.ssrc, p);
            }
        }
        room
    }

    /// Make the room spatial: each of `places` stands at x metres on a line, `talkers` talk.
    fn make_spatial(&mut self, places: &[(ParticipantId, f64)], talkers: &[ParticipantId]) {
        use crate::audibility::Audibility;
        use vocab::{Position, SpatialSettings};
        let mut audibility = Audibility::new(Some(SpatialSettings::default()));
        for &(id, x) in places {
            let p = Position::new(x, 0.0, 0.0, 0.0).expect("a place in the world");
            audibility.set_position(self.t0, id, p);
        }
        let members: Vec<ParticipantId> = places.iter().map(|&(id, _)| id).collect();
        let mut changed = Vec::new();
        audibility.refresh(self.t0, &members, talkers, &mut changed);
        self.audibility = Some(audibility);
    }

    fn tick(&mut self, now: Instant) {
        let mut out = Vec::new();
        self.mixer.tick_in(
            now,
            &mut out,
            &mut self.stats,
            &mut self.samples,
            self.audibility.as_ref(),
        );
        for p in &out {
            let rx = self.rx.entry(p.to).or_default();
            rx.take(p, TS_OFFSET);
            rx.clock.push((now, p.ts));
        }
    }

    /// Frames `frames` from each of `mics`: [`voiced_frame`] `k` where `talks(who, k)`, digital silence
    /// otherwise (DTX as the sender's encoder decides), each arriving 10 ms after it is due, the room
    /// ticking in between.
    fn speak(
        &mut self,
        mics: &mut [(ParticipantId, Sender)],
        frames: std::ops::Range<usize>,
        talks: impl Fn(ParticipantId, usize) -> bool,
    ) {
        for k in frames {
            let sent = self.t0 + FRAME_DURATION * k as u32;
            for (who, mic) in mics.iter_mut() {
                let pcm = if talks(*who, k) {
                    voiced_frame(k)
                } else {
                    vec![0.0; FRAME_SAMPLES]
                };
                if let Some(p) = mic.frame(k, &pcm) {
                    self.push(sent + 10 * MS, *who, mic.ssrc, p);
                }
            }
            self.tick_frame(sent);
        }
    }
}

/// Frame `k` of the test signal: a distinct tone per frame during talk runs, digital silence in pauses.
/// Returns the tone's frequency, `None` in a pause.
fn frame_tone(k: usize) -> Option<f32> {
    // Runs of 6..13 frames separated by pauses of 4..19 frames (80..380 ms, as in speech).
    let mut start = 5;
    let mut run = 0;
    loop {
        let len = 6 + (run * 5) % 8;
        let pause = 4 + (run * 7) % 16;
        if k < start {
            return None;
        }
        if k < start + len {
            // Neighbouring frames differ by at least 250 Hz.
            return Some(400.0 + 250.0 * ((k * 3) % 11) as f32);
        }
        start += len + pause;
        run += 1;
    }
}

/// Frame `k` of the test signal: each talk frame's tone continues the previous frame's phase, and talk
/// runs fade in and out over 5 ms, so the codec sees no click at any edge.
fn tone_frame(k: usize, amplitude: f32, phase: &mut f64) -> Vec<f32> {
    let mut pcm = vec![0.0; FRAME_SAMPLES];
    let Some(f) = frame_tone(k) else {
        *phase = 0.0;
        return pcm;
    };
    sine(f64::from(f), amplitude, SAMPLE_RATE, phase, &mut pcm);
    let fade = 240;
    for i in 0..fade {
        let g = 0.5 - 0.5 * (std::f32::consts::PI * i as f32 / fade as f32).cos();
        if k == 0 || frame_tone(k - 1).is_none() {
            pcm[i] *= g;
        }
        if frame_tone(k + 1).is_none() {
            pcm[FRAME_SAMPLES - 1 - i] *= g;
        }
    }
    pcm
}

/// The central 10 ms of frame `k` of `pcm` shifted by `lag` samples.
fn window(pcm: &[f32], k: usize, lag: usize) -> &[f32] {
    let start = (k * FRAME_SAMPLES + lag + 240).min(pcm.len());
    let end = (start + 480).min(pcm.len());
    &pcm[start..end]
}

/// The talk runs of the test signal among its first `frames`: (first frame, frames).
fn runs(frames: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for k in 0..frames {
        if frame_tone(k).is_none() {
            continue;
        }
        match runs.last_mut() {
            Some((start, len)) if *start + *len == k => *len += 1,
            _ => runs.push((k, 1)),
        }
    }
    runs
}

/// Check that each talk run of the signal is in `pcm` whole — every frame once, in order, at its level,
/// at one delay per run (the jitter buffer re-anchors each talk spurt) — and that nothing is heard
/// outside the runs. Returns the errors and each run's delay in samples.
fn check_runs(pcm: &[f32], frames: usize, amplitude: f32) -> (Vec<String>, Vec<usize>) {
    let power = amplitude * amplitude / 2.0;
    let mut errors = Vec::new();
    let mut lags = Vec::new();
    let mut covered = Vec::new();
    for (start, len) in runs(frames) {
        let score = |lag: usize| -> f32 {
            (start..start + len)
                .map(|k| {
                    let f = frame_tone(k).expect("a talk frame");
                    goertzel_power(window(pcm, k, lag), f, SAMPLE_RATE)
                })
                .sum()
        };
        // Within a few ms of the true lag every frame's central window holds only its own tone, so the
        // score is flat there (to the codec's noise): the middle of that plateau is the lag. (The highest
        // single score landed anywhere on it, and a lag a few ms late put the run's own onset into the
        // silence check before it.)
        let scores: Vec<(usize, f32)> = (0..=200).map(|ms| (ms * 48, score(ms * 48))).collect();
        let best = scores.iter().map(|s| s.1).fold(0.0f32, f32::max);
        let plateau: Vec<usize> = scores
            .iter()
            .filter(|s| s.1 >= 0.9 * best)
            .map(|s| s.0)
            .collect();
        let lag = plateau[plateau.len() / 2];
        lags.push(lag);
        covered.push((
            start * FRAME_SAMPLES + lag,
            (start + len) * FRAME_SAMPLES + lag,
        ));
        for k in start..start + len {
            let f = frame_tone(k).expect("a talk frame");
            let w = window(pcm, k, lag);
            // Its own tone, at its level, and far louder than any other frame's tone.
            let own = goertzel_power(w, f, SAMPLE_RATE);
            let db = 10.0 * (own / power).log10();
            let other = (0..11)
                .map(|i| 400.0 + 250.0 * i as f32)
                .filter(|g| *g != f)
                .map(|g| goertzel_power(w, g, SAMPLE_RATE))
                .fold(0.0f32, f32::max);
            if db < -3.0 || own < 10.0 * other {
                errors.push(format!("run at {start}: frame {k} ({f} Hz) at {db:.1} dB"));
            }
        }
    }
    // Outside the runs silence, in 5 ms windows: below −45 dBFS, except 5 ms of codec ringing after a run
    // and, in the 20 ms before one, the pre-echo of its onset (the mixer's encoder frames do not line up
    // with the sender's, so an onset can fall late in a frame): there 15 dB below the run's level.
    let first = covered.first().map_or(0, |c| c.0);
    let last = covered.last().map_or(0, |c| c.1);
    let guard = 240;
    let mut at = first;
    while at + 240 <= last.min(pcm.len()) {
        let inside = covered.iter().any(|&(a, b)| at + 240 > a && at < b + guard);
        let onset = covered
            .iter()
            .any(|&(a, _)| at + 240 > a.saturating_sub(960) && at < a);
        let limit = if onset {
            10.0 * f64::from(power).log10() - 15.0
        } else {
            -45.0
        };
        if !inside {
            let db = 10.0 * mean_square(&pcm[at..at + 240]).max(1e-12).log10();
            if db > limit {
                let after = covered
                    .iter()
                    .rev()
                    .find(|c| c.1 <= at)
                    .map_or(0, |c| at - c.1);
                let before = covered.iter().find(|c| c.0 >= at).map_or(0, |c| c.0 - at);
                errors.push(format!(
                    "{db:.1} dBFS between runs at {} ms ({} ms after one, {} ms before the next)",
                    at / 48,
                    after / 48,
                    before / 48
                ));
            }
        }
        at += 240;
    }
    (errors, lags)
}

#[test]
fn every_talk_frame_reaches_the_mix_once_and_pauses_stay_silent() {
    let mut room = Room::new(&[A, B]);
    let mut mic = Sender::new(0xA);
    let frames = 600; // 12 s
    let mut phase = 0.0;
    let amplitude = 0.3;
    for k in 0..frames {
        let sent = room.t0 + FRAME_DURATION * k as u32;
        if let Some(p) = mic.frame(k, &tone_frame(k, amplitude, &mut phase)) {
            // 10 ms one-way delay with ±4 ms of jitter.
            let jitter = Duration::from_micros(((k * 7919) % 8000) as u64);
            room.push(sent + 6 * MS + jitter, A, mic.ssrc, p);
        }
        // The mixer's ticks up to the next frame.
        while let Some(t) = room
            .mixer
            .next_tick()
            .filter(|t| *t < sent + FRAME_DURATION)
        {
            room.tick(t);
        }
    }
    let pcm = &room.rx.get(&B).expect("B heard A").pcm;
    let (errors, lags) = check_runs(pcm, frames - 20, amplitude);
    let lags_ms: Vec<usize> = lags.iter().map(|l| l / 48).collect();
    assert!(
        errors.is_empty(),
        "{} errors: {errors:?}; delay per run (ms): {lags_ms:?}",
        errors.len()
    );
    assert_eq!(room.stats.ticks_late, 0);
}

/// How far `pcm` is from a pure sine at `freq` (least-squares fit of amplitude and phase): the energy of
/// what remains, relative to the whole, in dB. Clicks and codec artefacts show here.
fn residual_db(pcm: &[f32], freq: f32) -> f32 {
    let w = std::f64::consts::TAU * f64::from(freq) / f64::from(SAMPLE_RATE);
    let (mut ss, mut cc, mut sc, mut ys, mut yc, mut yy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &y) in pcm.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let y = f64::from(y);
        ss += s * s;
        cc += c * c;
        sc += s * c;
        ys += y * s;
        yc += y * c;
        yy += y * y;
    }
    let det = ss * cc - sc * sc;
    let a = (ys * cc - yc * sc) / det;
    let b = (yc * ss - ys * sc) / det;
    let residual: f64 = pcm
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let (s, c) = (w * i as f64).sin_cos();
            (f64::from(y) - a * s - b * c).powi(2)
        })
        .sum();
    (10.0 * (residual / yy.max(1e-12)).log10()) as f32
}

/// A talks a steady tone (with one pause of 300 ms from frame 200); B talks in frames `b_talks`; C only
/// listens. A stalled worker runs no tick in frames `stall`.
fn switch_run(
    frames: usize,
    b_talks: std::ops::Range<usize>,
    stall: Option<(usize, usize)>,
) -> Room {
    switch_run_with(MixSettings::default(), frames, b_talks, stall)
}

/// [`switch_run`] with the mix settings `base` (its jitter floor set to 60 ms).
fn switch_run_with(
    base: MixSettings,
    frames: usize,
    b_talks: std::ops::Range<usize>,
    stall: Option<(usize, usize)>,
) -> Room {
    // A jitter buffer that never needs to steer its delay (it starts at 60 ms): its own corrections of a
    // continuous talker (dropping a packet) would hide what this measures.
    let config = MixSettings {
        jitter_min_ms: 60,
        ..base
    };
    let mut room = Room::with_config(&[A, B, C], config);
    let (mut mic_a, mut mic_b) = (Sender::new(0xA), Sender::new(0xB));
    let (mut tone_a, mut tone_b) = (
        crate::testkit::analysis::ToneGenerator::new(440.0, 0.3, SAMPLE_RATE),
        crate::testkit::analysis::ToneGenerator::new(1_000.0, 0.2, SAMPLE_RATE),
    );
    let mut pcm = vec![0.0; FRAME_SAMPLES];
    for k in 0..frames {
        let sent = room.t0 + FRAME_DURATION * k as u32;
        tone_a.fill(&mut pcm);
        if (200..215).contains(&k) {
            pcm.iter_mut().for_each(|s| *s = 0.0);
        }
        if let Some(p) = mic_a.frame(k, &pcm) {
            room.push(sent + 10 * MS, A, mic_a.ssrc, p);
        }
        if b_talks.contains(&k) {
            tone_b.fill(&mut pcm);
        } else {
            pcm.iter_mut().for_each(|s| *s = 0.0);
        }
        if let Some(p) = mic_b.frame(k, &pcm) {
            room.push(sent + 10 * MS, B, mic_b.ssrc, p);
        }
        // A stalled worker runs no tick from `from` until `to`, then catches up.
        if stall.is_some_and(|(from, to)| (from..to).contains(&k)) {
            continue;
        }
        room.tick_frame(sent);
    }
    room
}

#[test]
fn moving_between_shared_and_personal_encodes_is_not_heard() {
    let frames = 300;
    let room = switch_run(frames, 100..160, None);
    let b = &room.rx.get(&B).expect("B heard A").pcm;
    let c = &room.rx.get(&C).expect("C heard A and B").pcm;
    // B never hears itself; C hears B while it talks.
    let talk = 110 * FRAME_SAMPLES..150 * FRAME_SAMPLES;
    assert!(goertzel_power(&b[talk.clone()], 1_000.0, SAMPLE_RATE) < 1e-6);
    assert!(goertzel_power(&c[talk], 1_000.0, SAMPLE_RATE) > 0.01);
    // B moved back to the shared encode in A's pause.
    let b_member = &room.mixer.members[1];
    assert!(b_member.personal.is_none() && b_member.feed == Feed::Shared);
    // Everything B hears is A's tone. In 10 ms windows every 2.5 ms, what is not the tone must not stand
    // out where B moves to its own encode (when it starts talking, ≈ frame 103) and back (in A's pause):
    // while B is silent it is compared with C's window (the same shared packets, so the codec's own
    // artefacts cancel out); while C hears B, with B's median.
    let windows: Vec<(usize, f32, f32, bool)> = (40 * FRAME_SAMPLES..(frames - 20) * FRAME_SAMPLES)
        .step_by(120)
        .filter(|at| !(195 * FRAME_SAMPLES..225 * FRAME_SAMPLES).contains(at))
        .map(|at| {
            let c_hears_b = goertzel_power(&c[at..at + 480], 1_000.0, SAMPLE_RATE) > 1e-5;
            (
                at,
                residual_db(&b[at..at + 480], 440.0),
                residual_db(&c[at..at + 480], 440.0),
                c_hears_b,
            )
        })
        .collect();
    let mut steady: Vec<f32> = windows.iter().map(|w| w.1).collect();
    steady.sort_by(f32::total_cmp);
    let median = steady[steady.len() / 2];
    let (worst_at, worst) = windows
        .iter()
        .map(|&(at, b, c, c_hears_b)| (at, if c_hears_b { b - median } else { b - c }))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("windows");
    // A fresh encoder at the move (what the mixer did before) stands 37 dB out. What remains after the
    // move back is the decoders' older state (SILK's, kept through CELT stretches), which can surface
    // later at a mode change of the shared stream: measured 15.6 dB above C, about −25 dB of the tone.
    assert!(
        worst <= 20.0,
        "a discontinuity {worst:.1} dB above the reference at {} ms (median {median:.1} dB)",
        worst_at / 48
    );
}

// The shared mix is what most listeners hear, once per room: it gets the better encode. A talker's own mix
// starts as a copy of the shared encode (its decoder sees one stream) and goes on at the personal mixes'
// complexity, one encode per talker.
#[test]
fn the_shared_mix_encodes_at_its_own_complexity_and_a_talkers_copy_at_the_personal_one() {
    let defaults = MixSettings {
        complexity: 5,
        shared_complexity: 8,
        ..MixSettings::default()
    };
    let room = switch_run_with(defaults, 130, 100..160, None);
    let shared = (room.mixer.clean.encoder())
        .or(room.mixer.protected.encoder())
        .expect("C hears a shared mix");
    assert_eq!(shared.complexity(), i32::from(defaults.shared_complexity));
    let b = &room.mixer.members[1];
    assert_eq!(b.feed, Feed::Personal);
    let personal = b.personal.as_ref().expect("B talks: a mix of its own");
    assert_eq!(personal.complexity(), i32::from(defaults.complexity));
}

#[test]
fn a_late_worker_catches_up_without_holes_and_counts_what_it_gave_up() {
    // 100 ms without ticks: caught up, every timestamp there, counted late.
    let room = switch_run(200, 0..0, Some((100, 105)));
    assert_eq!(room.stats.ticks_skipped, 0);
    assert!(room.stats.ticks_late >= 4, "{:?}", room.stats);
    let b = &room.rx.get(&B).expect("B heard A");
    assert_eq!(b.gaps.len(), 0, "a hole in B's stream");
    // 400 ms without ticks: 10 caught up, the rest given up and counted.
    let room = switch_run(200, 0..0, Some((100, 120)));
    assert!(
        (9..=11).contains(&room.stats.ticks_skipped),
        "{:?}",
        room.stats
    );
}

/// A broadcast mount hears the full mix — both talkers, where each talker hears only the other — one frame
/// per tick with no gap, silence included (the mount's stream is continuous), and who talks; from the
/// clean encode (its listeners are on TCP), whatever loss a listener of the room states.
#[test]
fn the_broadcast_tap_carries_the_full_mix_every_tick_silence_included() {
    // C only listens, and states the loss every listener starts with.
    let mut room = Room::new(&[A, B, C]);
    room.mixer.set_tap(room.t0, true);
    let mut mic_a = Sender::new(0xA);
    let mut mic_b = Sender::new(0xB);
    let (mut pa, mut pb) = (0.0, 0.0);
    let frames = 150; // 3 s: 1 s of silence, then A at 500 Hz and B at 1,300 Hz
    let mut tapped: Vec<MixTap> = Vec::new();
    for k in 0..frames {
        let sent = room.t0 + FRAME_DURATION * k as u32;
        if k >= 50 {
            let mut a = vec![0.0; FRAME_SAMPLES];
            sine(500.0, 0.2, SAMPLE_RATE, &mut pa, &mut a);
            let mut b = vec![0.0; FRAME_SAMPLES];
            sine(1300.0, 0.2, SAMPLE_RATE, &mut pb, &mut b);
            if let Some(p) = mic_a.frame(k, &a) {
                room.push(sent + 6 * MS, A, mic_a.ssrc, p);
            }
            if let Some(p) = mic_b.frame(k, &b) {
                room.push(sent + 6 * MS, B, mic_b.ssrc, p);
            }
        }
        while let Some(t) = room
            .mixer
            .next_tick()
            .filter(|t| *t < sent + FRAME_DURATION)
        {
            room.tick(t);
            tapped.extend(room.mixer.take_tapped());
        }
    }
    assert!(tapped.len() >= frames - 1, "{} frames", tapped.len());
    for pair in tapped.windows(2) {
        assert_eq!(pair[1].tick, pair[0].tick + 1, "a frame every tick");
    }
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
    let mut pcm = Vec::new();
    for f in &tapped {
        let mut out = vec![0.0; MAX_PACKET_SAMPLES];
        let n = decoder
            .decode_float(&f.payload, &mut out, false)
            .expect("the tap is valid Opus");
        pcm.extend_from_slice(&out[..n]);
    }
    let silent = &pcm[..40 * FRAME_SAMPLES];
    assert!(mean_square(silent) < 1e-8, "silence before anyone talks");
    let talk = &pcm[pcm.len() - 50 * FRAME_SAMPLES..];
    let total = mean_square(talk) as f32;
    let a = goertzel_power(talk, 500.0, SAMPLE_RATE);
    let b = goertzel_power(talk, 1300.0, SAMPLE_RATE);
    assert!(
        a > 0.2 * total && b > 0.2 * total,
        "both talkers: {a} {b} of {total}"
    );
    let last = tapped.last().expect("frames");
    assert_eq!(last.talkers.len(), 2, "both talk: {:?}", last.talkers);
    let with_fec = |packets: &mut dyn Iterator<Item = &[u8]>| {
        packets.filter(|p| opus_packet_has_fec(p)).count()
    };
    let tap_fec = with_fec(&mut tapped.iter().map(|f| &f.payload[..]));
    let c_fec = with_fec(&mut room.rx[&C].sent.iter().map(|(_, p)| &p[..]));
    assert_eq!(tap_fec, 0, "the tap is the clean encode");
    assert!(c_fec > 20, "C's encode codes FEC: {c_fec} packets");
    let sent_fec: usize = room
        .rx
        .values()
        .map(|r| with_fec(&mut r.sent.iter().map(|(_, p)| &p[..])))
        .sum();
    assert_eq!(
        room.stats.fec_packets_sent, sent_fec as u64,
        "the packets with FEC sent to listeners are counted"
    );
    room.mixer
        .set_tap(room.t0 + FRAME_DURATION * frames as u32, false);
    assert_eq!(room.mixer.take_tapped().count(), 0);
}

#[test]
fn a_talker_waking_an_idle_mixer_plays_at_its_target_not_a_tick_later() {
    // Chorus issue 15: the tick grid stayed wherever the room's creation put it, so a talker's packet
    // waited for its jitter buffer's target and then for the next tick, up to a tick more (the mix latency
    // p50 at 503 participants: 48 to 50 ms with a 20 ms target, 33 ms anchored). The packet that wakes an idle mixer now sets
    // the grid's phase. Two talk spurts, at two phases against the room's original grid, with a DTX pause
    // (the mixer idle) between them; the output's timestamps never go back (`Received::take`).
    let mut room = Room::new(&[A, B]);
    let mut mic = Sender::new(0xA);
    let mut phase = 0.0;
    let mut out = Vec::new();
    let mut first_heard = Vec::new();
    // The pause between them (3 s) outlasts the silence frames that follow a spurt (2 s).
    for (start_ms, offset_us) in [(1_000u64, 7_300u64), (5_000, 15_900)] {
        let first_k = (start_ms / 20) as usize;
        let arrival0 = room.t0 + Duration::from_millis(start_ms) + Duration::from_micros(offset_us);
        assert!(
            room.mixer.next_tick().is_none(),
            "the mixer is idle before the spurt at {start_ms} ms"
        );
        let mut heard = None;
        let mut waking_target = None;
        for k in first_k..first_k + 50 {
            let arrival = arrival0 + FRAME_DURATION * (k - first_k) as u32;
            // A loud, steady frame (no DTX inside the spurt).
            let pcm = gated_tone(&mut phase, true);
            if let Some(p) = mic.frame(k, &pcm) {
                room.push(arrival, A, mic.ssrc, p);
            }
            if k == first_k {
                waking_target = room.mixer.jitter_target(A);
            }
            while let Some(t) = room
                .mixer
                .next_tick()
                .filter(|t| *t < arrival + FRAME_DURATION)
            {
                out.clear();
                room.mixer
                    .tick(t, &mut out, &mut room.stats, &mut room.samples);
                for p in &out {
                    room.rx.entry(p.to).or_default().take(p, TS_OFFSET);
                    if p.to == B && p.payload.len() > 10 && heard.is_none() {
                        heard = Some(t);
                    }
                }
            }
        }
        let target = waking_target.expect("A is a member");
        let heard = heard.expect("B heard A's spurt");
        first_heard.push((start_ms, heard.duration_since(arrival0), target));
        // Silence until the mixer goes idle: 2 s of silence frames to B (`PAUSE_SILENCE_TICKS`), then
        // nothing (DTX).
        let end = arrival0 + FRAME_DURATION * 50 + Duration::from_millis(2_500);
        while let Some(t) = room.mixer.next_tick().filter(|t| *t < end) {
            out.clear();
            room.mixer
                .tick(t, &mut out, &mut room.stats, &mut room.samples);
            for p in &out {
                room.rx.entry(p.to).or_default().take(p, TS_OFFSET);
            }
        }
    }
    // Each spurt plays 1 ms after its first packet's target (the start-up target, 50 ms at the 10 ms
    // floor, then the one measured since), where the room's own grid gave up to a tick more.
    for (start_ms, waited, target) in first_heard {
        assert!(
            waited >= target && waited <= target + 2 * MS,
            "the spurt at {start_ms} ms was first heard {waited:?} after it arrived, target {target:?}"
        );
    }
}

#[test]
fn the_listeners_timestamps_follow_the_clock_across_idle_spells() {
    // A talker's comfort noise wakes an idle mixer every few ticks, each time at another phase of the
    // grid, so each wake moves the grid back by up to a tick. Stamped by grid index, every move put the
    // listener's timestamps ahead of the clock: in Chromium speech runs the grid moved back 20 ms every
    // 120 ms of a pause, the next talk spurt came a tenth of a second ahead of the listener's jitter
    // buffer, and Chromium caught up by time-compressing the speech. Here: two spurts with a 4 s pause
    // between them, in which A sends a silent packet every third frame at alternating phases. Between
    // any two packets B receives, the timestamps must advance as much as the clock (the ticks that sent
    // them), to within a millisecond and a quiet move's fill drift, and never by less than the last
    // packet's length (a frame, or a quiet move's fill).
    let mut room = Room::new(&[A, B]);
    let mut mic = Sender::new(0xA);
    mic.encoder.set_dtx(false).expect("DTX is a valid setting");
    let mut phase = 0.0;
    let mut out = Vec::new();
    let t0 = room.t0;
    let talking = |k: usize| (50..100).contains(&k) || (300..350).contains(&k);
    // (tick, timestamp, grid moves so far, samples) of each packet to B
    let mut to_b: Vec<(Instant, u32, u64, u32)> = Vec::new();
    for k in 50..360usize {
        let arrival = if talking(k) {
            t0 + FRAME_DURATION * k as u32 + Duration::from_micros(5_300)
        } else if k % 3 == 0 {
            let wander = if k % 2 == 0 { 5_300 } else { 12_800 };
            t0 + FRAME_DURATION * k as u32 + Duration::from_micros(wander)
        } else {
            continue;
        };
        let pcm = gated_tone(&mut phase, talking(k));
        let p = mic.frame(k, &pcm).expect("no DTX: every frame encodes");
        room.push(arrival, A, mic.ssrc, p);
        while let Some(t) = room
            .mixer
            .next_tick()
            .filter(|t| *t < arrival + FRAME_DURATION)
        {
            // a move counts from the tick after the one that made it
            let moves = room.stats.grid_moves;
            out.clear();
            room.mixer
                .tick(t, &mut out, &mut room.stats, &mut room.samples);
            for p in out.iter().filter(|p| p.to == B) {
                let samples = opus::packet::get_nb_samples(&p.payload, SAMPLE_RATE)
                    .expect("the mixer sends valid Opus");
                to_b.push((t, p.ts, moves, samples as u32));
            }
        }
    }
    let mut idle_gaps = 0;
    for pair in to_b.windows(2) {
        let ((t1, ts1, moves1, samples1), (t2, ts2, moves2, _)) = (pair[0], pair[1]);
        let step = ts2.wrapping_sub(ts1);
        let elapsed = t2.duration_since(t1);
        assert!(
            step >= samples1,
            "B got a packet of {samples1} samples and the next {step} samples later"
        );
        if moves1 != moves2 || samples1 < FRAME_SAMPLES as u32 {
            // a ticking room's move keeps the stream continuous: ahead by the move, or (in a pause)
            // filled up to the next tick
            continue;
        }
        let clock = elapsed.as_secs_f64() * f64::from(SAMPLE_RATE);
        let tolerance = (MS + SHORT_FRAME / 2).as_secs_f64() * f64::from(SAMPLE_RATE);
        assert!(
            (f64::from(step) - clock).abs() <= tolerance,
            "B's timestamps advanced {step} samples over {elapsed:?}"
        );
        idle_gaps += usize::from(elapsed > FRAME_DURATION * 10);
    }
    assert!(idle_gaps >= 1, "the pause reached B as a gap: {idle_gaps}");
}

#[test]
fn a_room_that_never_idles_moves_its_grid_to_its_talkers_phase() {
    // Chorus issue 15: the grid's phase came only from the packet that woke an idle room. A room without
    // DTX never goes idle again, and a waking packet that came late set the phase late for every packet
    // after it: at 503 participants one run in two measured a mix latency p50 of 48 ms instead of 33 ms.
    // Here the waking packet is 14 ms late and the rest are on time; neither the sender nor the room uses
    // DTX (silence frames in the pause, so the mixer keeps ticking). The second talk spurt must be heard
    // within its target + 2 ms of arriving (the old grid: 35 ms against a 20 ms target), and the listener's
    // stream must stay continuous across the grid's moves.
    let config = MixSettings {
        dtx: false,
        ..MixSettings::default()
    };
    let mut room = Room::with_config(&[A, B], config);
    let mut mic = Sender::new(0xA);
    mic.encoder.set_dtx(false).expect("DTX is a valid setting");
    let mut phase = 0.0;
    let spurt2 = 150usize;
    // Frame `k` arrives 5.3 ms into its 20 ms period; the first, 14 ms later still.
    let t0 = room.t0;
    let arrival_of = |k: usize| {
        let late = if k == 50 { 14 * MS } else { Duration::ZERO };
        t0 + FRAME_DURATION * k as u32 + Duration::from_micros(5_300) + late
    };
    let mut heard = None;
    let mut target = None;
    for k in 50..260usize {
        let talking = (50..100).contains(&k) || (spurt2..spurt2 + 50).contains(&k);
        let pcm = gated_tone(&mut phase, talking);
        let arrival = arrival_of(k);
        let p = mic.frame(k, &pcm).expect("no DTX: every frame is sent");
        room.push(arrival, A, mic.ssrc, p);
        if k == spurt2 {
            target = room.mixer.jitter_target(A);
        }
        while let Some(t) = room
            .mixer
            .next_tick()
            .filter(|t| *t < arrival + FRAME_DURATION)
        {
            let decoded = room.stats.frames_decoded;
            room.tick(t);
            if k >= spurt2 && heard.is_none() && room.stats.frames_decoded > decoded {
                heard = Some(t);
            }
        }
    }
    let target = target.expect("A is a member");
    let waited = heard
        .expect("A's second spurt was mixed")
        .duration_since(arrival_of(spurt2));
    assert!(
        waited >= target && waited <= target + 2 * MS,
        "the second spurt was mixed {waited:?} after it arrived, target {target:?}"
    );
    assert!(
        (1..=6).contains(&room.stats.grid_moves),
        "grid moves: {}",
        room.stats.grid_moves
    );
    assert!(
        room.rx[&B].gaps.len() <= 2,
        "B's stream jumped {} times",
        room.rx[&B].gaps.len()
    );
    room.kept_the_clock(B);
}

#[test]
fn a_conversation_moves_the_grid_in_its_pauses_not_ahead_of_the_listeners() {
    // Two people take turns in a room that never idles (the Firefox test's mixed room: both talk, with
    // short pauses). Their packets come at different phases of the tick grid, 5.3 and 15.3 ms into each
    // period, and the grid follows whoever talks: about half a tick earlier at each change of talker.
    // Made in speech, each move brought the listeners' packets that much sooner for their timestamps, and
    // their jitter buffers time-compressed speech to give it back (25 moves in the Firefox test's 90 s;
    // Chromium there accelerated 35–121 ms of the mix, 0–20 ms of a forwarded stream). Made in the pauses, the
    // listener's stream never runs ahead of the clock, its only gaps are in silence, and neither talker
    // is played short of its target.
    // A, C, A, C, …: turns of 1 s and pauses of 0.2 s from tick 50
    let turn = |k: usize| (k - 50) / 60 % 2;
    let room = Room::two_talkers(
        50..410,
        |who, k| turn(k) == who && (k - 50) % 60 < 50,
        |_, _| {},
    );
    assert!(
        room.stats.grid_moves >= 5,
        "the grid followed the talkers: {} moves",
        room.stats.grid_moves
    );
    assert_eq!(
        (room.stats.concealed_plc, room.stats.packets_late),
        (0, 0),
        "nobody was played short"
    );
    room.kept_the_clock(B);
    assert_eq!(
        room.rx[&B].fills(&room.mixer.pause) as u64,
        room.stats.grid_moves,
        "each move in a pause was filled in the listener's stream"
    );
}

#[test]
fn a_move_decided_for_one_talker_waits_for_no_other_talker_with_less_to_spare() {
    // The grid sits at A's phase (A has 1 ms to spare). C talks, its packets 10 ms later in the period,
    // and the grid decides to move 9 ms for C; before a quiet tick comes, A talks again. Neither uses DTX,
    // so A's jitter buffer keeps playing through its pauses: C's move made in the pause that follows takes
    // A's margin below its target (A's buffer then has to win it back in that pause, or A's next words
    // come late to the mix and are concealed). The move shrinks to what A spares (here nothing).
    // A: 50..100 (the pause after it moves the grid to A's phase), then right after C's turn 170..200 and,
    // after a pause, 220..280; C: 120..170, long enough for the grid to decide a move for C.
    let talks = |who: usize, k: usize| match who {
        0 => (50..100).contains(&k) || (170..200).contains(&k) || (220..280).contains(&k),
        _ => (120..170).contains(&k),
    };
    let (mut plc_before, mut moves_after_c) = (0, 0);
    let room = Room::two_talkers(50..300, talks, |room, k| {
        if k == 170 {
            moves_after_c = room.stats.grid_moves;
        }
        if k == 220 {
            plc_before = room.stats.concealed_plc;
        }
    });
    assert_eq!(
        (
            room.stats.concealed_plc - plc_before,
            room.stats.packets_late
        ),
        (0, 0),
        "A's last turn was played whole"
    );
    assert_eq!(
        room.stats.grid_moves, moves_after_c,
        "the grid moved after C's turn: C's move was not given up when A talked"
    );
}

/// A browser-like voice encoder (libopus VOIP at 32 kb/s, in-band FEC enabled) told to expect
/// `expected_loss` percent loss, as a receiver report would tell it.
fn fec_encoder(expected_loss: i32) -> opus::Encoder {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
        .expect("an Opus encoder for 48 kHz mono");
    enc.set_bitrate(opus::Bitrate::Bits(32_000))
        .and_then(|()| enc.set_inband_fec(true))
        .and_then(|()| enc.set_packet_loss_perc(expected_loss))
        // Coded as voice, as a browser's microphone mostly is: SILK or hybrid, where FEC lives.
        .and_then(|()| enc.set_signal(opus::Signal::Voice))
        .expect("valid Opus encoder settings");
    enc
}

/// Frame `k` of a voiced sound, as syllables: harmonics of a pitch gliding around 140 Hz, its loudness
/// rising and falling four times a second.
fn voiced_frame(k: usize) -> Vec<f32> {
    (k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            let envelope = 0.6 + 0.4 * (std::f32::consts::TAU * 4.0 * t).sin();
            let pitch = 140.0 * t + 3.0 * (std::f32::consts::TAU * 0.5 * t).sin();
            (1..12)
                .map(|h| (std::f32::consts::TAU * pitch * h as f32).sin() / h as f32)
                .sum::<f32>()
                * 0.2
                * envelope
        })
        .collect()
}

/// `count` packets of the voiced sound from [`fec_encoder`]`(expected_loss)`.
fn voiced_packets(expected_loss: i32, count: usize) -> Vec<Vec<u8>> {
    let mut enc = fec_encoder(expected_loss);
    (0..count)
        .map(|k| {
            enc.encode_vec_float(&voiced_frame(k), MAX_OPUS)
                .expect("Opus encodes a frame")
        })
        .collect()
}

/// `opus_packet_has_fec` tells a packet that carries in-band FEC (an encoder told to expect loss) from one
/// that does not (the same encoder expecting none), and says no to anything that is not Opus.
#[test]
fn fec_is_seen_only_in_packets_an_encoder_coded_it_into() {
    let share_with_fec = |expected_loss: i32| {
        let packets = voiced_packets(expected_loss, 100);
        for p in &packets {
            // A packet that carries FEC is of a mode that can.
            let (samples, fec_mode) = opus_packet_info(p).expect("Opus");
            assert_eq!(samples, FRAME_SAMPLES as u32);
            assert!(fec_mode || !opus_packet_has_fec(p));
        }
        let with_fec = packets.iter().filter(|p| opus_packet_has_fec(p)).count();
        with_fec as f64 / packets.len() as f64
    };
    assert_eq!(share_with_fec(0), 0.0);
    // 0.64 measured: SILK codes a frame's copy only where it judges the frame speech.
    let share = share_with_fec(10);
    assert!(share > 0.5, "{share}");
    assert!(!opus_packet_has_fec(&[]));
    assert!(!opus_packet_has_fec(&[0xff; 3]));
}

/// A talker losing every tenth packet: a lost frame counts as recovered by FEC only when the packet after
/// it carries FEC. Before, a packet whose mode *could* carry FEC was taken for one that did: an encoder
/// expecting no loss had every lost frame "recovered by FEC" (PLC, in fact: libopus decodes such a packet
/// with FEC into its PLC). The buffer steers both streams alike: the same loss margin, the same delay
/// (the speech tests scored a listener worse when a loss before a packet without FEC was treated as
/// plain PLC, which may shorten the delay into the gap; docs/architecture.md, "Jitter buffer per input").
#[test]
fn only_packets_that_carry_fec_count_as_recovering_a_lost_frame() {
    let run = |expected_loss: i32| {
        let packets = voiced_packets(expected_loss, 300);
        let mut room = Room::new(&[A, B]);
        let sender = Ssrc(11);
        let end = room.t0 + FRAME_DURATION * (packets.len() as u32 + 20);
        let mut now = room.t0;
        let mut next = 0;
        let mut target = Duration::ZERO;
        while now < end {
            // Each packet arrives 1 ms after its frame ends; every tenth is lost.
            while next < packets.len() && room.t0 + FRAME_DURATION * (next as u32 + 1) + MS <= now {
                if next % 10 != 5 {
                    let ts = (next * FRAME_SAMPLES) as u32;
                    let payload = Arc::from(packets[next].as_slice());
                    room.push(now, A, sender, (next as u64 + 100, ts, payload, 30));
                }
                next += 1;
            }
            room.tick(now);
            if next == 250 {
                target = room.mixer.members[0].jitter.target_delay();
            }
            now += MS;
        }
        (room.mixer.members[0].jitter.stats(), room.stats, target)
    };
    let (without, mix_without, target_without) = run(0);
    let (with, mix_with, target_with) = run(15);
    assert_eq!((without.lost, with.lost), (30, 30), "{without:?} {with:?}");
    assert_eq!(without.concealed_fec, 0, "{without:?}");
    assert!(without.concealed_plc >= 30, "{without:?}");
    // About two thirds of the frames are judged speech and carry a copy of the frame before them.
    assert!((12..=30).contains(&with.concealed_fec), "{with:?}");
    // The mixer's counters agree with its input's buffer.
    assert_eq!(
        (mix_without.concealed_fec, mix_with.concealed_fec),
        (without.concealed_fec, with.concealed_fec)
    );
    assert_eq!(target_with, target_without);
}

/// What [`shared_mix_moves`] measured: the FEC shares of B's packets and of C's before, while and after
/// it states loss; the ticks where C's packets start or stop being B's; how much B's and C's decodes
/// differ while they hear different encodes (the median of 10 ms windows, against the voice's power),
/// and at most in the 200 ms from each of those ticks.
struct SharedMixMoves {
    b_fec: f64,
    c_fec: [f64; 3],
    flips: Vec<usize>,
    apart_db: f32,
    worst_db: Vec<f32>,
}

/// A talks a voiced sound without a break but for 300 ms from frame 300; listener B states `b_loss`
/// throughout, C none until frame 100, then 10 % until frame 260.
fn shared_mix_moves(b_loss: u8) -> SharedMixMoves {
    let config = MixSettings {
        jitter_min_ms: 60,
        ..MixSettings::default()
    };
    let mut room = Room::with_config(&[A, B, C], config);
    room.mixer.set_listener_loss(B, b_loss);
    room.mixer.set_listener_loss(C, 0);
    let mut mic = Sender::new(0xA);
    let frames = 400;
    for k in 0..frames {
        let sent = room.t0 + FRAME_DURATION * k as u32;
        match k {
            100 => room.mixer.set_listener_loss(C, 10),
            260 => room.mixer.set_listener_loss(C, 0),
            _ => {}
        }
        let mut pcm = voiced_frame(k);
        if (300..315).contains(&k) {
            pcm.iter_mut().for_each(|s| *s = 0.0);
        }
        if let Some(p) = mic.frame(k, &pcm) {
            room.push(sent + 10 * MS, A, mic.ssrc, p);
        }
        room.tick_frame(sent);
    }
    let share = |id: ParticipantId, ticks: std::ops::Range<usize>| {
        let inside: Vec<bool> = room.rx[&id]
            .sent
            .iter()
            .filter(|(k, _)| ticks.contains(k))
            .map(|(_, p)| opus_packet_has_fec(p))
            .collect();
        inside.iter().filter(|f| **f).count() as f64 / inside.len().max(1) as f64
    };
    // Where C's packets start or stop being B's: where C moved. The silence frames of A's pause
    // (`PAUSE_SILENCE_TICKS`) are the room's one pre-encoded frame, the same for everyone: no encode's.
    let silence = room.mixer.pause.silence.clone();
    let b_sent: HashMap<usize, &Arc<[u8]>> =
        room.rx[&B].sent.iter().map(|(k, p)| (*k, p)).collect();
    let same: Vec<(usize, bool)> = room.rx[&C]
        .sent
        .iter()
        .filter(|(_, p)| silence.as_ref() != Some(p))
        .map(|(k, p)| (*k, b_sent.get(k).is_some_and(|b| *b == p)))
        .collect();
    let flips: Vec<usize> = same
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1].0)
        .collect();
    let (b, c) = (&room.rx[&B].pcm, &room.rx[&C].pcm);
    let voice = mean_square(&b[40 * FRAME_SAMPLES..95 * FRAME_SAMPLES]);
    let diff_db = |at: usize| {
        let n = 480
            .min(b.len().saturating_sub(at))
            .min(c.len().saturating_sub(at));
        let d: Vec<f32> = (at..at + n).map(|i| b[i] - c[i]).collect();
        (10.0 * (mean_square(&d).max(1e-12) / voice).log10()) as f32
    };
    // 10 ms windows every 5 ms.
    let windows = |ticks: std::ops::Range<usize>| {
        (ticks.start * 4..ticks.end * 4).map(|q| diff_db(q * FRAME_SAMPLES / 4))
    };
    let apart = if b_loss > 0 { 40..95 } else { 180..250 };
    let mut steady: Vec<f32> = windows(apart).collect();
    steady.sort_by(f32::total_cmp);
    SharedMixMoves {
        b_fec: share(B, 20..frames),
        c_fec: [share(C, 0..100), share(C, 160..260), share(C, 330..frames)],
        apart_db: steady[steady.len() / 2],
        worst_db: flips
            .iter()
            .map(|&k| windows(k..k + 10).fold(f32::MIN, f32::max))
            .collect(),
        flips,
    }
}

/// A listener of the shared mix that starts stating loss moves to the protected encode (FEC) within
/// [`SHARED_SWITCH_MAX_TICKS`] in a room that is never quiet, and back to the clean one when it states
/// none, at the next quiet tick; neither move stands out of what it hears (an encode that had no
/// listener starts as a copy of the other), and the other listener's encode never changes.
#[test]
fn a_listener_moves_between_the_clean_and_protected_shared_mix_unheard() {
    for b_loss in [10, 0] {
        let run = shared_mix_moves(b_loss);
        eprintln!(
            "B states {b_loss} %: C moved at ticks {:?}; C against B: {:.1} dB apart, {:?} dB from each \
             move; FEC shares: B {:.2}, C before / while stating loss / after {:.2?}",
            run.flips, run.apart_db, run.worst_db, run.b_fec, run.c_fec
        );
        let [before, during, after] = run.c_fec;
        assert_eq!((before, after), (0.0, 0.0), "B states {b_loss} %");
        assert!(during > 0.5, "B states {b_loss} %: C protected {during}");
        if b_loss > 0 {
            assert!(run.b_fec > 0.5, "B kept its FEC: {}", run.b_fec);
        } else {
            assert_eq!(run.b_fec, 0.0, "B kept its clean mix");
        }
        let [start, end] = run.flips[..] else {
            panic!("B states {b_loss} %: C moved at {:?}", run.flips);
        };
        let max_wait = SHARED_SWITCH_MAX_TICKS as usize + 5;
        assert!((100..=100 + max_wait).contains(&start), "{start}");
        assert!(
            (300..320).contains(&end),
            "C moved back in A's pause: {end}"
        );
        // A move back to a clean encoder that had skipped the ticks in between (a stale state) stood
        // 13 dB out of the apart figure.
        for worst in run.worst_db {
            assert!(
                worst <= run.apart_db + 6.0,
                "B states {b_loss} %: {worst} dB against {} dB",
                run.apart_db
            );
        }
    }
}

/// The room's only talker hears nobody, so it is sent nothing and never reports: its figure (the
/// unreported 10 %) must not tune the shared mix's protected encode, which codes FEC for the loss its
/// listeners state. The listener stating 3 % receives the same packets whether the talker stated
/// nothing or 0 % (before, the talker's unreported figure made it FEC for 10 %).
#[test]
fn the_only_talker_does_not_tune_the_protected_encode() {
    let received = |talker_reported: bool| {
        let mut room = Room::new(&[A, B]);
        room.mixer.set_listener_loss(B, 3);
        if talker_reported {
            room.mixer.set_listener_loss(A, 0);
        }
        let mut mic = Sender::new(0xA);
        for k in 0..150 {
            let sent = room.t0 + FRAME_DURATION * k as u32;
            if let Some(p) = mic.frame(k, &voiced_frame(k)) {
                room.push(sent + 10 * MS, A, mic.ssrc, p);
            }
            room.tick_frame(sent);
        }
        assert!(!room.rx.contains_key(&A), "the only talker is sent nothing");
        room.rx[&B].sent.clone()
    };
    let (unreported, reported) = (received(false), received(true));
    assert!(unreported.len() > 100, "{} packets", unreported.len());
    assert!(
        unreported == reported,
        "the talker's figure tuned its listener's encode"
    );
}

/// The fills of a quiet move's gap (`PausePackets::fills`): k = 1..=7 short frames of 2.5 ms in one valid
/// Opus packet, which a decoder plays between the room's silence frames (mono, or CELT where the room's
/// frames are SILK) as silence: a listener hears nothing where the grid moved.
#[test]
fn the_fills_of_a_quiet_moves_gap_are_short_frames_of_silence_in_one_packet() {
    for config in [
        MixSettings::default(),
        MixSettings {
            fec: false,
            bitrate_bps: 64_000,
            ..MixSettings::default()
        },
    ] {
        let pause = PausePackets::new(&config);
        let silence = pause.silence.clone().expect("libopus encodes silence");
        assert_eq!(pause.fills.len(), 7, "{config:?}");
        let mut decoder =
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("a mono decoder");
        let mut pcm = vec![0.0; MAX_PACKET_SAMPLES];
        for (i, fill) in pause.fills.iter().enumerate() {
            let k = i + 1;
            assert_eq!(
                opus_packet_info(fill).map(|(n, _)| n as usize),
                Some(k * FRAME_SAMPLES / 8),
                "fill of {k}: {fill:?}"
            );
            assert!(pause.is_pause_packet(fill));
            for packet in [&silence, fill, &silence] {
                let n = decoder
                    .decode_float(packet, &mut pcm, false)
                    .expect("a pause packet decodes");
                let peak = pcm[..n].iter().fold(0f32, |m, s| m.max(s.abs()));
                assert!(peak < 1e-4, "fill of {k}: a peak of {peak} around it");
            }
        }
    }
}

/// Whatever the moves, each fill is the nearest whole number of short frames to its gap less the drift
/// so far, and the listeners' timeline stays within half a short frame of the wall clock; the fill starts
/// where the last frame ended.
#[test]
fn the_fills_keep_the_timeline_within_half_a_short_frame_of_the_clock() {
    let t0 = t0();
    let mut mixer = Mixer::new(t0, MixSettings::default());
    let mut due = t0 + Duration::from_secs(1);
    let half = (SHORT_FRAME / 2).as_nanos() as i64;
    for i in 0..2_000u64 {
        // moves of 2 to 19 ms, in steps of 1/7 ms: every remainder of a short frame
        let back = Duration::from_micros(2_000 + (i * 1_000 / 7 * 13) % 17_000);
        let last_end = duration_samples(mixer.timeline(due + back)) as u32;
        let fill = mixer.fill_after_quiet_move(due, back);
        assert_eq!(fill.start, last_end);
        assert!(fill.frames <= 8);
        assert!(
            mixer.fill_drift_ns.abs() <= half,
            "move {i} of {back:?}: drift {} ns",
            mixer.fill_drift_ns
        );
        // the next tick's frame starts where the fill ends
        let next = duration_samples(mixer.timeline(due + FRAME_DURATION)) as u32;
        assert_eq!(
            next.wrapping_sub(fill.start),
            (fill.frames * FRAME_SAMPLES / 8) as u32,
            "move {i} of {back:?}"
        );
        due += FRAME_DURATION * 3 - back;
    }
}

/// A listener who starts talking in the very tick its talker stops (two people taking turns) still gets
/// the last frame of the mix it was hearing, then silence: every tick, no gap. It got nothing in that
/// tick (a talker who hears nobody had no encoder of its own to end its stream with, and is never sent
/// the shared mix, which holds its own voice), so its browser concealed 20 ms after the other's speech
/// (seen in the Firefox test's capture of the mix to Firefox: a timestamp step of two frames right after
/// speech).
#[test]
fn a_listener_who_starts_talking_as_its_talker_stops_gets_the_end_of_the_mix_without_a_gap() {
    // A talks for a second; B starts a few frames later, so that in one of the runs its first voiced
    // frame is decoded in the tick after A's last (A's decode hangover included); with DTX and without
    for dtx in [true, false] {
        for b_starts in 48..58 {
            let room = turns(b_starts, dtx);
            let b = &room.rx[&B];
            let pause = &room.mixer.pause;
            assert!(b.packets > 40, "B heard A: {} packets", b.packets);
            let stream = if dtx {
                b.gapless_ending_in_dtx(pause)
            } else {
                b.gapless_with_fills_only_in_silence(pause)
            };
            assert_eq!(
                stream,
                Ok(()),
                "B's stream from A's spurt to the silence after it, B starting at frame {b_starts}, \
                 DTX {dtx}"
            );
        }
    }
}

/// A call's first packet sets the grid's phase from its jitter buffer's target, which then is only the
/// seed (`seed_delay`); on a calm path the target settles on the floor. The seed must set the phase that
/// target wants: the default 60 ms set it 10 ms late, and the grid moved back 10 ms at the first quiet
/// tick, a few seconds into the call (until then every packet waited 10 ms more than its target). A
/// talks from the call's start in runs with pauses, every packet 10 ms after it is due: over
/// 20 s the grid never moves, and its ticks come the floor (to within the 1 ms slack) after A's
/// packets arrive.
#[test]
fn a_calls_first_packet_sets_the_phase_its_settled_target_wants() {
    for floor_ms in [10, 20, 35] {
        let config = MixSettings {
            jitter_min_ms: floor_ms,
            ..MixSettings::default()
        };
        let mut room = Room::with_config(&[A, B], config);
        let mut mics = [(A, Sender::new(0xA))];
        room.speak(&mut mics, 0..1_000, |_, k| frame_tone(k).is_some());
        assert_eq!(
            room.stats.grid_moves, 0,
            "the grid moved with a {floor_ms} ms floor"
        );
        assert_eq!(
            room.mixer.jitter_target(A),
            Some(Duration::from_millis(u64::from(floor_ms))),
            "the target settled on the floor"
        );
        // The tick that takes a packet (arrived 10 ms after it was due) comes the floor after it, or up
        // to the slack later: no margin to spare.
        let tick = room.mixer.next_tick().expect("A still talks in runs");
        let phase_us = tick.duration_since(room.t0).as_micros() % FRAME_DURATION.as_micros();
        let floor_us = u128::from(floor_ms + 10) * 1_000 % FRAME_DURATION.as_micros();
        assert!(
            (floor_us..=floor_us + ANCHOR_SLACK.as_micros()).contains(&phase_us),
            "the grid's phase with a {floor_ms} ms floor: {phase_us} µs, the floor's {floor_us} µs"
        );
    }
}

/// A room of A and B (with DTX or without): A talks for frames 0..50, B for `b_starts..b_starts + 50`.
fn turns(b_starts: usize, dtx: bool) -> Room {
    let config = MixSettings {
        dtx,
        ..MixSettings::default()
    };
    let mut room = Room::with_config(&[A, B], config);
    let mut mics = [(A, Sender::new(0xA)), (B, Sender::new(0xB))];
    room.speak(&mut mics, 0..200, |who, k| {
        if who == A {
            k < 50
        } else {
            (b_starts..b_starts + 50).contains(&k)
        }
    });
    room
}

/// In a spatial room, listeners who hear the same share one stereo encode, made by the first of them;
/// when their talker stops, each gets the last frame of that stream (its encoder's lookahead: the end of
/// the talker's last syllable), then silence, then the DTX packet: no gap. Only the one whose encoder it
/// was got that frame; the others got nothing in that tick, a gap their browsers concealed.
#[test]
fn in_a_spatial_room_everyone_who_shared_an_encode_gets_its_last_frame() {
    let mut room = Room::new(&[A, B, C]);
    // B and C stand together, 3 m from A: they hear A alike
    room.make_spatial(&[(A, 0.0), (B, 3.0), (C, 3.0)], &[A]);
    room.speak(&mut [(A, Sender::new(0xA))], 0..200, |_, k| k < 50);
    for who in [B, C] {
        let rx = &room.rx[&who];
        assert!(rx.packets > 40, "{who:?} heard A: {} packets", rx.packets);
        assert_eq!(
            rx.gapless_ending_in_dtx(&room.mixer.pause),
            Ok(()),
            "{who:?}'s stream"
        );
    }
}

/// RED to a listener: the packet before as redundancy, and the two before while the listener states
/// loss of `RED_TWO_BACK_LOSS_PERCENT` or more (losses come in runs that one frame back cannot bridge).
#[test]
fn a_listener_stating_loss_gets_two_packets_back_as_red_redundancy_others_one() {
    let config = MixSettings {
        dtx: false,
        ..MixSettings::default()
    };
    let mut room = Room::with_config(&[A, B, C], config);
    room.mixer.set_listener_loss(B, RED_TWO_BACK_LOSS_PERCENT);
    room.mixer
        .set_listener_loss(C, RED_TWO_BACK_LOSS_PERCENT - 1);
    let mut mic = Sender::new(0xA);
    mic.encoder.set_dtx(false).expect("DTX is a valid setting");
    let mut phase = 0.0;
    let mut packets: Vec<MixPacket> = Vec::new();
    for k in 0..30 {
        let arrival = room.t0 + FRAME_DURATION * k as u32 + 5 * MS;
        while let Some(t) = room.mixer.next_tick().filter(|t| *t <= arrival) {
            room.mixer
                .tick_in(t, &mut packets, &mut room.stats, &mut room.samples, None);
        }
        let pcm = gated_tone(&mut phase, true);
        let p = mic.frame(k, &pcm).expect("no DTX: every frame is sent");
        room.push(arrival, A, mic.ssrc, p);
    }
    let same = |a: &Option<Arc<[u8]>>, b: &Arc<[u8]>| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b));
    let frame = FRAME_SAMPLES as u32;
    for (who, depth) in [(B, 2), (C, 1)] {
        let got: Vec<&MixPacket> = packets.iter().filter(|p| p.to == who).collect();
        let mut checked = 0;
        for w in got.windows(3) {
            let contiguous =
                w[1].ts.wrapping_sub(w[0].ts) == frame && w[2].ts.wrapping_sub(w[1].ts) == frame;
            if !contiguous {
                continue;
            }
            assert!(
                same(&w[2].previous[0], &w[1].payload),
                "{who:?}: 20 ms back"
            );
            if depth == 2 {
                assert!(
                    same(&w[2].previous[1], &w[0].payload),
                    "{who:?}: 40 ms back"
                );
            } else {
                assert!(
                    w[2].previous[1].is_none(),
                    "{who:?} states little loss: one back"
                );
            }
            checked += 1;
        }
        assert!(checked >= 20, "{who:?}: {checked} runs of three packets");
    }
}

/// Without DTX too, a listener whose talker stops gets one last frame from the encoder it was hearing:
/// the encoder's lookahead, the end of the talker's last syllable (about 6.5 ms), then the room's silence
/// frames. Only rooms with DTX did; without, the listener went straight to the room's silence frame and
/// the end of each talk spurt was cut where the talker stopped loud (muted mid-sentence, or, in a spatial
/// room, out of earshot). In a mono and in a spatial room, A talks and is muted after frame 50: the
/// packet before B's first silence frame sounds at its start and is silent at its end.
#[test]
fn without_dtx_a_listener_still_gets_the_last_frame_of_the_stream_it_heard() {
    for spatial in [false, true] {
        let config = MixSettings {
            dtx: false,
            ..MixSettings::default()
        };
        let mut room = Room::with_config(&[A, B], config);
        if spatial {
            room.make_spatial(&[(A, 0.0), (B, 3.0)], &[A]);
        }
        // A is muted mid-sentence: its stream ends loud
        let mut mics = [(A, Sender::new(0xA))];
        room.speak(&mut mics, 0..50, |_, _| true);
        room.mixer.set_publishing(A, false);
        room.speak(&mut mics, 50..100, |_, _| true);
        let rx = &room.rx[&B];
        let pause = &room.mixer.pause;
        assert_eq!(rx.gapless_with_fills_only_in_silence(pause), Ok(()));
        // (silence frames before A's first packet plays, too)
        let heard = rx
            .sent
            .iter()
            .position(|(_, p)| !pause.is_pause_packet(p))
            .expect("B heard A");
        let first_silence = heard
            + rx.sent[heard..]
                .iter()
                .position(|(_, p)| pause.is_pause_packet(p))
                .expect("silence after A's spurt");
        assert!(
            first_silence - heard > 40,
            "B heard A: {} packets",
            first_silence - heard
        );
        assert!(
            rx.sent[first_silence..]
                .iter()
                .all(|(_, p)| pause.is_pause_packet(p)),
            "only silence after the spurt"
        );
        // the packet before it, as B's decoder played it
        let at = rx.sent[first_silence - 1].0 * FRAME_SAMPLES;
        let frame = &rx.pcm[at..at + FRAME_SAMPLES];
        let rms = |s: &[f32]| mean_square(s).sqrt();
        let (head, tail) = (rms(&frame[..120]), rms(&frame[FRAME_SAMPLES - 240..]));
        assert!(
            head > 0.002 && tail < head / 10.0,
            "spatial {spatial}: B's last frame before the silence is not the encoder's flush: \
             the first 2.5 ms at rms {head}, the last 5 ms at {tail}"
        );
    }
}

/// With DTX a listener is sent nothing while nobody talks, but only after 2 s of silence frames
/// (`PAUSE_SILENCE_TICKS`): Chromium cannot tell a pause without packets from loss, so it concealed every
/// pause and time-compressed the next spurt (docs/architecture.md, "Pauses reach a listener as silence").
/// A 1-s pause inside speech reaches the listener as silence frames, every tick; after the last spurt its
/// stream ends 2 s later with a DTX packet (the TOC byte alone: browsers, getting none, took the stop for
/// loss and concealed), and the mixer goes idle.
#[test]
fn a_pause_reaches_a_listener_as_silence_frames_for_two_seconds_then_a_dtx_packet() {
    let mut room = Room::new(&[A, B]);
    room.speak(&mut [(A, Sender::new(0xA))], 0..450, |_, k| {
        k < 50 || (100..150).contains(&k)
    });
    let silence = room
        .mixer
        .pause
        .silence
        .clone()
        .expect("libopus encodes silence");
    let sent = &room.rx[&B].sent;
    let ticks: Vec<usize> = sent.iter().map(|(k, _)| *k).collect();
    // every tick, without a gap (where the grid moved in the pause, the rest of the frame was filled)
    let pause = &room.mixer.pause;
    assert_eq!(
        room.rx[&B].gapless_with_fills_only_in_silence(pause),
        Ok(())
    );
    assert!(
        ticks.windows(2).all(|w| w[1] <= w[0] + 2),
        "a gap in the listener's stream: ticks {ticks:?}"
    );
    let (last, spurt_and_pause) = sent.split_last().expect("B heard A");
    assert_eq!(
        last.1.len(),
        1,
        "the stream ends with a DTX packet: {:?}",
        last.1
    );
    assert_eq!(
        last.1[0],
        silence[0] & 0xFC,
        "the DTX packet is one frame of the stream's configuration"
    );
    let last_voiced = spurt_and_pause
        .iter()
        .rposition(|(_, p)| !pause.is_pause_packet(p))
        .expect("B heard A");
    assert!(
        ticks[last_voiced] >= 150,
        "the second spurt reached B: {ticks:?}"
    );
    let fills = spurt_and_pause[last_voiced..]
        .iter()
        .filter(|(_, p)| pause.fills.contains(p))
        .count();
    assert_eq!(
        sent.len() - 1 - last_voiced - fills,
        PAUSE_SILENCE_TICKS as usize,
        "silence frames, then the DTX packet, after the last spurt"
    );
    let dtx = sent.iter().filter(|(_, p)| p.len() <= 2).count();
    assert_eq!(dtx, 1, "a pause inside speech is silence, not DTX");
    assert!(
        !room.rx.contains_key(&A),
        "the only talker hears nobody and is sent nothing"
    );
    assert!(room.mixer.next_tick().is_none(), "the mixer went idle");
}
