//! Speech quality, objectively: real speech (espeak-ng, with pauses) through a room to a listener that plays
//! it through a jitter buffer like a browser, scored by PESQ wide-band (ITU-T P.862.2); and a frame-exact
//! whole-call test (every sent 20 ms frame heard exactly once, in order, nothing in the pauses). Steady tones
//! never exercise the start and end of a talk spurt; speech does (issue 9).
//!
//! Needs `espeak-ng`, `sox` and the `.venv` with PyPI `pesq`: `scripts/test.sh` installs them.

use std::time::Duration;

use media_core::audio::{self, FRAME_SAMPLES, SAMPLE_RATE};
use media_core::sim::LinkConfig;
use media_core::{MixSettings, RoomSettings};

use crate::support::{speech_call, speech_call_per_leg, Sim};

/// A clean leg as a real network has it: no loss, 20–22 ms one-way (2 ms of jitter, in order). With no jitter
/// at all, the delay estimates never wander, which hid a mixer bug (mid-sentence delay changes).
fn clean_leg() -> LinkConfig {
    LinkConfig {
        reorder: false,
        ..LinkConfig::lossy(0.0, 20.0, 2.0)
    }
}

/// The lossy condition on each leg: 5 % random loss, 30 ± 20 ms one-way delay (reordering).
fn lossy_leg() -> LinkConfig {
    LinkConfig::lossy(0.05, 10.0, 40.0)
}

#[test]
fn forwarded_speech_scores_at_least_4_4_on_a_clean_link() {
    let call = speech_call(
        "forward-clean",
        11,
        RoomSettings::forward(3),
        clean_leg(),
        0,
        0,
    );
    eprintln!(
        "forward, clean: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms ({} frames \
         sent, {} DTX)",
        call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms, call.frames_sent, call.frames_dtx
    );
    assert!(call.frames_dtx > 20, "the speaker's DTX never engaged");
    assert!(
        call.pesq.mos_lqo >= 4.4,
        "forwarded speech scores PESQ-WB {:.2} < 4.4",
        call.pesq.mos_lqo
    );
}

/// The passage through a mixed room with `mix` on clean legs (seed 12) scores at least 3.9 against the
/// sender's decode.
fn mixed_clean_at_least_3_9(tag: &str, mix: MixSettings) {
    let call = speech_call(tag, 12, RoomSettings::mix(mix), clean_leg(), 0, 0);
    eprintln!(
        "{tag}: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms",
        call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms
    );
    assert!(
        call.pesq.mos_lqo >= 3.9,
        "{tag}: mixed speech scores PESQ-WB {:.2} < 3.9",
        call.pesq.mos_lqo
    );
}

#[test]
fn mixed_speech_scores_at_least_3_9_on_a_clean_link() {
    mixed_clean_at_least_3_9("mix-clean", MixSettings::default());
}

/// A room without DTX (`dtx = false`: silence frames to every listener in the pauses, as for receivers
/// that cannot take a DTX gap) had no speech test; the ends of its talk spurts once went straight to the
/// room's silence frame, without the last frame of the encoder the listener heard.
#[test]
fn mixed_speech_without_dtx_scores_at_least_3_9_on_a_clean_link() {
    let mix = MixSettings {
        dtx: false,
        ..MixSettings::default()
    };
    mixed_clean_at_least_3_9("mix-clean-no-dtx", mix);
}

/// The mean PESQ-WB of the passage through a mixed room over three seeds (which packets are lost and how
/// late they come decides a single score by ±0.3): 5 % loss and 30 ± 20 ms on every leg, the speaker's
/// in-band FEC on, RED depth `red`. Prints each call.
fn mixed_lossy_mean(red: u8) -> f64 {
    mixed_mean(&format!("mix-lossy-red{red}"), lossy_leg(), 5, red)
}

/// The mean PESQ-WB of the passage through a mixed room (default settings) over seeds 1, 2 and 4, every
/// leg as `leg`, the speaker's encoder expecting `expected_loss_percent`, RED depth `red`. Prints each call.
fn mixed_mean(name: &str, leg: LinkConfig, expected_loss_percent: i32, red: u8) -> f64 {
    let room = RoomSettings::mix(MixSettings::default());
    mean_over_seeds(name, room, leg, expected_loss_percent, red)
}

/// The mean PESQ-WB of the passage through `room` over seeds 1, 2 and 4, as [`mixed_mean`].
fn mean_over_seeds(
    name: &str,
    room: RoomSettings,
    leg: LinkConfig,
    expected_loss_percent: i32,
    red: u8,
) -> f64 {
    let scores: Vec<f64> = [1u64, 2, 4]
        .into_iter()
        .map(|seed| {
            let name = format!("{name}-seed{seed}");
            let call = speech_call(&name, seed, room, leg, expected_loss_percent, red);
            eprintln!(
                "{name}: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms",
                call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms
            );
            call.pesq.mos_lqo
        })
        .collect();
    scores.iter().sum::<f64>() / scores.len() as f64
}

// The targets at 5 % loss with 30 ± 20 ms jitter: 3.0 with FEC and 3.5 with RED. Before the jitter
// buffer's loss margin they were missed (2.79 and 3.08): the mixer decided a lost frame before the packet
// carrying its FEC or RED copy had arrived, so it was concealed with PLC and the delay moved mid-sentence.
#[test]
fn mixed_speech_with_fec_survives_5_percent_loss_and_jitter_on_each_leg() {
    let mean = mixed_lossy_mean(0);
    eprintln!("mix, 5 % loss, 30 ± 20 ms, FEC: mean PESQ-WB {mean:.2}");
    assert!(
        mean >= 3.0,
        "mixed speech at 5 % loss scores PESQ-WB {mean:.2} < 3.0"
    );
}

#[test]
fn red_lifts_mixed_speech_at_5_percent_loss_and_jitter_on_each_leg() {
    let mean = mixed_lossy_mean(1);
    eprintln!("mix, 5 % loss, 30 ± 20 ms, RED: mean PESQ-WB {mean:.2}");
    assert!(
        mean >= 3.5,
        "mixed speech with RED at 5 % loss scores PESQ-WB {mean:.2} < 3.5"
    );
}

/// Wi-Fi and cellular links lose packets in runs, which in-band FEC (one frame back) and RED depth 1 cannot
/// bridge: the condition (5 % loss, 30 ± 20 ms) with the losses in runs of 3 packets on average (a
/// Gilbert model). The independent-loss tests never showed what a listener then hears. Measured when
/// this test was written (three seeds each, PESQ-WB against the sender's decode; the same passage at
/// independent loss in brackets): mixed with FEC alone 2.22, 3.55, 2.60 (mean 2.79; 3.62), with RED
/// depth 1 3.11, 3.88, 3.16 (3.38; 4.51); forwarded with RED depth 1 2.51, 4.17, 3.41 (3.36; 4.48); with
/// the speaker at depth 2, mixed 3.76 and forwarded 3.82. The mixer then sent its listeners depth 1; it
/// now sends depth 2 to a listener that states loss (`mixer::RED_TWO_BACK_LOSS_PERCENT`): mixed with RED
/// (the speaker at depth 1) 3.51, the speaker at depth 2 3.85, and 4.51 / 4.52 at independent loss as
/// before.
fn bursty_leg() -> LinkConfig {
    LinkConfig {
        loss_burst_packets: 3.0,
        ..lossy_leg()
    }
}

/// A speaker that sends plain Opus (Firefox, a WHIP encoder, ingest, a playlist) to a listener that
/// negotiated RED, forwarded, the listener's downlink lossy: the server adds its copies of the speaker's
/// previous frames as redundancy (`red::History`), so what the listener's leg loses is bridged as if the
/// speaker had sent RED. The speaker's own leg is clean here: what it loses no server can restore.
/// Measured when the server began adding it (seeds 1, 2, 4; the same calls to a listener without RED in
/// brackets): 5 % independent loss 4.64, 4.64, 4.64, mean 4.64 (4.22, 3.94, 3.74: 3.97); bursty 4.41,
/// 4.41, 4.12, mean 4.32 (3.23, 3.93, 3.92: 3.69). With one frame back until the listener's first report
/// (not two, as now) the bursty mean was 4.24. The floors sit ≈ 0.3 below, well above the plain calls.
///
/// A speaker that sends Chrome's one frame back gets the same: the server adds the frame before it for
/// a listener that states loss. Bursty, seeds 1, 2, 4: 4.41, 4.41, 4.12, mean 4.32, the listener
/// concealing 7 of 38 lost frames by PLC (27 recovered by RED), where the speaker's one frame alone gave
/// 4.17, 4.38, 4.14, mean 4.23, 11 by PLC (19 by RED). Its floor is below both: the mechanism is held by
/// `the_servers_redundancy_reaches_two_frames_back_for_a_subscriber_stating_loss`.
#[test]
fn the_servers_redundancy_bridges_a_lossy_red_listeners_leg() {
    let room = RoomSettings::forward(3);
    let mut failures = Vec::new();
    for (name, leg, speaker_red, floor) in [
        ("forward-plain-to-red-lossy", lossy_leg(), 0, 4.35),
        ("forward-plain-to-red-bursty", bursty_leg(), 0, 4.0),
        ("forward-red1-to-red-bursty", bursty_leg(), 1, 4.05),
    ] {
        let scores: Vec<f64> = [1u64, 2, 4]
            .into_iter()
            .map(|seed| {
                let name = format!("{name}-seed{seed}");
                let call = speech_call_per_leg(&name, seed, room, [clean_leg(), leg], 5, [speaker_red, 1]);
                let j = call.listener_jitter;
                eprintln!(
                    "{name}: {} vs the sender's decode; listener: {} lost, {} by RED, {} by FEC, {} by PLC",
                    call.pesq, j.lost, j.recovered_red, j.concealed_fec, j.concealed_plc
                );
                call.pesq.mos_lqo
            })
            .collect();
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        eprintln!("{name}: mean PESQ-WB {mean:.2} (floor {floor})");
        if mean < floor {
            failures.push(format!("{name}: mean PESQ-WB {mean:.2} < {floor}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Virtual time: each mean is the same on every run of the same code; the floors sit ≈ 0.25 below what
// was measured, so they catch a change that makes bursts worse, not a seed's luck.
#[test]
fn speech_through_bursty_loss_stays_above_its_measured_floor() {
    let mix = RoomSettings::mix(MixSettings::default());
    let forward = RoomSettings::forward(3);
    let cases = [
        ("mix-bursty-fec", mix, 0u8, 2.55),
        ("mix-bursty-red1", mix, 1, 3.25),
        ("mix-bursty-red2", mix, 2, 3.6),
        ("forward-bursty-red1", forward, 1, 3.1),
    ];
    let mut failures = Vec::new();
    for (name, room, red, floor) in cases {
        let mean = mean_over_seeds(name, room, bursty_leg(), 5, red);
        eprintln!("{name}: mean PESQ-WB {mean:.2} (floor {floor})");
        if mean < floor {
            failures.push(format!("{name}: mean PESQ-WB {mean:.2} < {floor}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Frame tones of the frame-exact test: neighbouring frames differ by 300 Hz, far beyond the ±200 Hz main
/// lobe of a Hann-windowed 10 ms analysis, and all within what Opus codes at 32 kb/s.
const FRAME_FREQS: [f32; 8] = [350.0, 650.0, 950.0, 1250.0, 1550.0, 1850.0, 2150.0, 2450.0];
const FRAME_AMPLITUDE: f32 = 0.3;
/// Silence before the first run (frames), then (run frames, pause frames after it): single frames, short
/// pauses the sender codes as silence frames, and long ones where its DTX stops sending.
const LEAD_IN_FRAMES: usize = 25;
const RUNS: [(usize, usize); 9] = [
    (6, 3),
    (1, 15),
    (12, 1),
    (3, 30),
    (25, 6),
    (2, 12),
    (8, 50),
    (1, 2),
    (4, 40),
];

/// The frame-exact signal: per 20 ms frame its tone (None: silence), and the samples. Each run is one
/// phase-continuous signal whose frequency steps every frame, with a 1 ms fade in and out.
fn frame_signal() -> (Vec<Option<f32>>, Vec<f32>) {
    let mut frames: Vec<Option<f32>> = vec![None; LEAD_IN_FRAMES];
    let mut k = 0;
    for (run, pause) in RUNS {
        for _ in 0..run {
            frames.push(Some(FRAME_FREQS[k % FRAME_FREQS.len()]));
            k += 1;
        }
        frames.extend(std::iter::repeat_n(None, pause));
    }
    let mut samples = vec![0f32; frames.len() * FRAME_SAMPLES];
    let fade = SAMPLE_RATE as usize / 1000;
    let mut phase = 0f64;
    let mut i = 0;
    while i < frames.len() {
        if frames[i].is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while i < frames.len() && frames[i].is_some() {
            let f = frames[i].expect("inside a run every frame has a tone");
            let out = &mut samples[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES];
            audio::sine(f64::from(f), FRAME_AMPLITUDE, SAMPLE_RATE, &mut phase, out);
            i += 1;
        }
        let run = &mut samples[start * FRAME_SAMPLES..i * FRAME_SAMPLES];
        let n = run.len();
        for j in 0..fade {
            let g = 0.5 - 0.5 * (std::f32::consts::PI * j as f32 / fade as f32).cos();
            run[j] *= g;
            run[n - 1 - j] *= g;
        }
    }
    (frames, samples)
}

/// RMS per 1 ms block: the envelope the alignment correlates.
fn envelope(samples: &[f32]) -> Vec<f32> {
    samples
        .chunks(SAMPLE_RATE as usize / 1000)
        .map(|b| audio::mean_square(b).sqrt() as f32)
        .collect()
}

/// The lag (in 1 ms blocks, `received[i + lag] ≈ sent[i]`) in `lags` whose normalised correlation with
/// `sent[range]` is highest (normalised, so a short run is not pulled onto a louder neighbour).
fn best_lag(
    sent: &[f32],
    received: &[f32],
    range: std::ops::Range<usize>,
    lags: std::ops::RangeInclusive<i64>,
) -> i64 {
    let mut best = (f32::MIN, *lags.start());
    for lag in lags {
        let (mut dot, mut energy) = (0f32, 1e-9f32);
        for i in range.clone() {
            let j = i as i64 + lag;
            if j >= 0 && (j as usize) < received.len() {
                let r = received[j as usize];
                dot += sent[i] * r;
                energy += r * r;
            }
        }
        let score = dot / energy.sqrt();
        if score > best.0 {
            best = (score, lag);
        }
    }
    best.1
}

/// Sends [`frame_signal`] through a room and checks the listener's decoded stream (in RTP time, DTX gaps
/// as silence) frame by frame on the central 10 ms of each frame, after aligning each run by its envelope
/// (codec, network and jitter-buffer delay; a mixer may change its delay in a pause, never within a run).
/// Returns the failures.
fn frame_exact_failures(name: &str, room: RoomSettings) -> Vec<String> {
    let (frames, signal) = frame_signal();
    let mut sim = Sim::with_room(
        21,
        LinkConfig::with_delay(10.0),
        room,
        &[(0.0, 0.0), (0.0, 0.0)],
    );
    sim.play_slots = true;
    sim.connect();
    sim.net.set_default_link(LinkConfig::with_delay(20.0));
    sim.play_pcm(0, signal.clone().into(), 0);
    let secs = signal.len() as f64 / f64::from(SAMPLE_RATE) + 1.0;
    sim.run_for(Duration::from_secs_f64(secs));
    let received = &sim
        .played(1)
        .unwrap_or_else(|| panic!("{name}: the listener received nothing"))
        .pcm;
    let (env_sent, env_received) = (envelope(&signal), envelope(received));
    let global = best_lag(
        &env_sent,
        &env_received,
        0..env_sent.len(),
        -(env_sent.len() as i64)..=1000,
    );
    let block = SAMPLE_RATE as i64 / 1000;
    let expected_power = FRAME_AMPLITUDE * FRAME_AMPLITUDE / 2.0;
    let mut failures = Vec::new();
    let mut lag = global;
    let mut lags = Vec::new();
    // First the delay of every run, then the frames: a pause is checked at the delay of the run before it
    // and of the run after it (the mixer may change its delay in a pause).
    let mut segments = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let start = i;
        let tone = frames[i].is_some();
        while i < frames.len() && frames[i].is_some() == tone {
            i += 1;
        }
        if tone {
            // Re-align on this run: the delay (±60 ms around the previous run's, 1 ms steps) at which the
            // run's frames carry most of their own tones, so a repeated or lost frame shows as such.
            let run_power = |lag: i64| -> f32 {
                (start..i)
                    .map(|f| {
                        let from = (f * FRAME_SAMPLES + FRAME_SAMPLES / 4) as i64 + lag * block;
                        let to = from + FRAME_SAMPLES as i64 / 2;
                        if from < 0 || to as usize > received.len() {
                            return 0.0;
                        }
                        let freq = frames[f].expect("inside a run every frame has a tone");
                        audio::goertzel_power(
                            &received[from as usize..to as usize],
                            freq,
                            SAMPLE_RATE,
                        )
                    })
                    .sum()
            };
            // The central 10 ms window leaves a plateau of ±5 ms around the true delay: take its middle.
            let powers: Vec<(i64, f32)> =
                (lag - 60..=lag + 60).map(|l| (l, run_power(l))).collect();
            let peak = (0..powers.len())
                .max_by(|&a, &b| powers[a].1.total_cmp(&powers[b].1))
                .expect("the lag range is not empty");
            let near = |k: usize| powers[k].1 >= 0.9 * powers[peak].1;
            let (mut lo, mut hi) = (peak, peak);
            while lo > 0 && near(lo - 1) {
                lo -= 1;
            }
            while hi + 1 < powers.len() && near(hi + 1) {
                hi += 1;
            }
            lag = (powers[lo].0 + powers[hi].0) / 2;
            lags.push(lag);
        }
        segments.push((start, i, tone, lag));
    }
    let (mut run_index, mut heard) = (0, 0);
    for (k, &(start, i, tone, lag)) in segments.iter().enumerate() {
        run_index += usize::from(tone);
        // A pause's other alignment: the run after it (the last pause has none).
        let next_lag = segments
            .get(k + 1)
            .filter(|next| next.2)
            .map_or(lag, |next| next.3);
        for (f, sent) in frames.iter().enumerate().take(i).skip(start) {
            let window_at = |lag: i64| {
                let from = (f * FRAME_SAMPLES + FRAME_SAMPLES / 4) as i64 + lag * block;
                let to = from + FRAME_SAMPLES as i64 / 2;
                if from >= 0 && to as usize <= received.len() {
                    &received[from as usize..to as usize]
                } else {
                    &[][..]
                }
            };
            let window = window_at(lag);
            let what = match sent {
                Some(freq) => format!("run {run_index} frame {} ({freq} Hz)", f - start + 1),
                None => format!("pause frame {f}"),
            };
            match sent {
                Some(freq) => {
                    if window.is_empty() {
                        failures.push(format!("{what}: never received"));
                        continue;
                    }
                    let power = audio::goertzel_power(window, *freq, SAMPLE_RATE);
                    let db = 10.0 * (power / expected_power).log10();
                    let share = power / audio::mean_square(window).max(1e-12) as f32;
                    if !(-6.0..=3.0).contains(&db) || share < 0.5 {
                        let loudest = FRAME_FREQS
                            .iter()
                            .map(|&f| (audio::goertzel_power(window, f, SAMPLE_RATE), f))
                            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
                        failures.push(format!(
                            "{what}: heard at {db:.1} dB with {:.0} % of the frame's energy; \
                             loudest frame tone {} Hz at {:.1} dB, frame at {:.1} dBFS",
                            share * 100.0,
                            loudest.1,
                            10.0 * (loudest.0 / expected_power).log10(),
                            audio::rms_dbov(window)
                        ));
                    } else {
                        heard += 1;
                    }
                }
                None => {
                    // Next to a run, a second encode (the mixer's, whose 20 ms frames do not line up with
                    // the sender's) spreads its coding noise into the frame: ringing after the run's end and
                    // pre-echo before its onset, some 30 dB under the run (the stray audio of the issue was
                    // 17 dB under it, or a whole frame). Anywhere else a pause is silent.
                    let edge = f == start || f + 1 == i;
                    let limit = if edge { -40.0 } else { -50.0 };
                    let dbov = audio::rms_dbov(window).min(audio::rms_dbov(window_at(next_lag)));
                    if dbov > limit {
                        failures.push(format!("{what}: {dbov:.1} dBFS of stray audio"));
                    }
                }
            }
        }
    }
    let tones = frames.iter().filter(|f| f.is_some()).count();
    eprintln!(
        "{name}: {heard} of {tones} tone frames heard exactly, {} failures; delay per run (ms) {lags:?}",
        failures.len()
    );
    failures
}

fn assert_frame_exact(name: &str, room: RoomSettings) {
    let failures = frame_exact_failures(name, room);
    assert!(
        failures.is_empty(),
        "{name}: {} frames wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn forwarding_delivers_every_frame_exactly_once_and_nothing_in_the_pauses() {
    assert_frame_exact("forward", RoomSettings::forward(3));
}

#[test]
fn mixing_delivers_every_frame_exactly_once_and_nothing_in_the_pauses() {
    assert_frame_exact("mix", RoomSettings::mix(MixSettings::default()));
}

/// A calm leg (as [`clean_leg`]) whose flow stalls for 30 ms now and then (one datagram in 100 starts a
/// stall: every ~2 s at 50 packets a second), as a Wi-Fi retry burst or a queue behind cross traffic does.
/// The stalls are too rare for the jitter buffer's 95th percentile, and each one delays a packet or two
/// beyond a target sized for the calm link.
fn stalling_leg() -> LinkConfig {
    LinkConfig {
        stall_chance: 0.01,
        stall_ms: 30.0,
        ..clean_leg()
    }
}

// Before the jitter buffer covered delay peaks, every stall was concealed: a mean PESQ-WB of 3.53 at a
// 20 ms floor and 3.23 at 10 ms over these seeds; the percentile alone never sees them.
#[test]
fn mixed_speech_survives_delay_stalls_on_a_calm_link() {
    let mean = mixed_mean("mix-stalls", stalling_leg(), 0, 0);
    eprintln!("mix, 30 ms stalls on a calm link: mean PESQ-WB {mean:.2}");
    assert!(
        mean >= 3.9,
        "mixed speech with 30 ms stalls scores PESQ-WB {mean:.2} < 3.9"
    );
}

/// A speaker (client 0) and a listener (client 1) join without RED, connect on the set-up link, and every
/// leg then becomes [`clean_leg`]; the listener plays what it receives in slot 0 through a jitter buffer.
fn join_speaker_and_listener(sim: &mut Sim) {
    for _ in 0..2 {
        sim.join_with_red(0.0, 0.0, 0);
    }
    sim.drain_core();
    sim.play_slots = true;
    sim.connect();
    sim.net.set_default_link(clean_leg());
}

/// A forwarding room where only the listener's downlink is bad: the speaker on a clean leg, the server's
/// datagrams to the listener lost at 5 % and delayed 30 ± 20 ms. The speaker's encoder expects the loss the
/// server's receiver reports state, as a browser's does; with `loss_feedback_max_percent` 0 they state the
/// speaker's own clean uplink. The passage plays twice, 15 s apart: the first time while the reports
/// travel (the listener's to the server, the server's to the speaker, every 5 s each), the second is
/// scored (PESQ-WB against the speaker's own decode of that pass). Returns the score and the loss the speaker had been
/// told when the scored pass began.
fn lossy_listener_call(name: &str, seed: u64, loss_feedback_max_percent: u8) -> (f64, Option<f32>) {
    let speech = crate::support::speech::passage_48k();
    let mut sim = Sim::with_room(
        seed,
        LinkConfig::with_delay(10.0),
        RoomSettings::forward(3),
        &[],
    );
    let mut config = media_core::CoreConfig::new(sim.server, seed);
    config.loss_feedback_max_percent = loss_feedback_max_percent;
    sim.core = media_core::MediaCore::new(sim.now, config);
    join_speaker_and_listener(&mut sim);
    let (server, listener) = (sim.server, sim.clients[1].addr);
    sim.net.set_link(server, listener, lossy_leg());
    let pass = Duration::from_secs_f64(speech.len() as f64 / f64::from(SAMPLE_RATE) + 1.0);
    sim.play_pcm_following_reports(0, speech.clone());
    sim.run_for(pass);
    // A pause, as in a conversation. The reports are 5 s apart: the speaker hears of the listener's
    // loss about 12 s into the call (`sim.rs`, `a_listeners_loss_reaches_publishers_…`).
    sim.run_for(Duration::from_secs(15));
    let start = sim.played(1).map_or(0, |p| p.played.len());
    let told = sim.clients[0].peer.reported_mic_loss();
    sim.play_pcm_following_reports(0, speech.clone());
    sim.run_for(pass);
    let (src, played) = sim.speech_pair(name);
    let pesq = crate::support::speech::pesq_wb(name, &src.decoded, &played.played[start..]);
    eprintln!("{name}: {pesq}; the speaker was told {told:?} lost");
    (pesq.mos_lqo, told)
}

// A browser on a clean uplink measures no loss and adds no in-band FEC, so a forwarding room's listener on
// a bad link heard the passage unprotected (RED aside, which not every client sends). The server's receiver
// reports now state its listeners' loss (`core/loss_feedback.rs`).
#[test]
fn loss_feedback_lifts_forwarded_speech_to_a_lossy_listener() {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for seed in [1u64, 2, 4] {
        let (score, told) = lossy_listener_call(&format!("forward-feedback-seed{seed}"), seed, 10);
        let told = told.unwrap_or(0.0);
        assert!(
            (0.03..=0.10).contains(&told),
            "seed {seed}: the speaker was told {told:.3} lost, not its listener's ≈ 0.05"
        );
        with.push(score);
        let (score, told) =
            lossy_listener_call(&format!("forward-no-feedback-seed{seed}"), seed, 0);
        let told = told.unwrap_or(0.0);
        assert!(
            told < 0.01,
            "seed {seed}: feedback off, yet the speaker was told {told:.3}"
        );
        without.push(score);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (with, without) = (mean(&with), mean(&without));
    eprintln!("forward, listener's downlink 5 % loss: mean PESQ-WB {with:.2} with feedback, {without:.2} without");
    // Measured: 3.70 with, 2.51 without (seeds 1, 2, 4).
    assert!(
        with >= 3.3 && with >= without + 0.5,
        "loss feedback lifts the lossy listener's PESQ-WB only from {without:.2} to {with:.2}"
    );
}

/// What a forwarding room's listener hears when the speaker's uplink stops for `stall` (a Wi-Fi hand-over:
/// nothing arrives, then everything held arrives at once) 3 s into the passage, on clean legs otherwise:
/// PESQ-WB of that pass, and of a second pass 3 s after it with how much later the listener plays it than
/// the speaker decoded it (what a stall leaves behind as latency). All against the speaker's own decode.
struct StallCall {
    stalled: crate::support::speech::Pesq,
    after: crate::support::speech::Pesq,
    retimes: u64,
}

fn forwarded_stall_call(name: &str, seed: u64, stall: Duration) -> StallCall {
    let speech = crate::support::speech::passage_48k();
    let mut sim = Sim::with_room(
        seed,
        LinkConfig::with_delay(10.0),
        RoomSettings::forward(3),
        &[],
    );
    join_speaker_and_listener(&mut sim);
    let (speaker, server) = (sim.clients[0].addr, sim.server);
    let pass = Duration::from_secs_f64(speech.len() as f64 / f64::from(SAMPLE_RATE) + 1.0);
    sim.play_pcm(0, speech.clone(), 0);
    sim.run_for(Duration::from_secs(3));
    if !stall.is_zero() {
        sim.net.stall(sim.now, speaker, server, stall);
    }
    sim.run_for(pass - Duration::from_secs(3));
    let (src, played) = sim.speech_pair(name);
    let stalled = crate::support::speech::pesq_wb(name, &src.decoded, &played.played);
    sim.run_for(Duration::from_secs(3));
    let start = sim.played(1).map_or(0, |p| p.played.len());
    sim.play_pcm(0, speech.clone(), 0);
    sim.run_for(pass);
    let (src, played) = sim.speech_pair(name);
    let after = crate::support::speech::pesq_wb(
        &format!("{name}-after"),
        &src.decoded,
        &played.played[start..],
    );
    let retimes = sim.core.stats().slot_retimes;
    eprintln!("{name}: the stalled pass {stalled}; the next {after}; {retimes} re-timings");
    StallCall {
        stalled,
        after,
        retimes,
    }
}

// A stall longer than a second re-times the speaker's stream at every listener (`sfu/rewrite.rs`): the
// held packets then reach the listener as if sent on time from the stall's end. Measured (seed 5): the
// stalled pass 2.90 (no stall 4.64: the 1.5 s and the burst's excess are lost), the next pass 4.64 at the
// same latency as without a stall, with or without the re-timing.
#[test]
fn a_forwarded_speaker_stalled_for_1_5_s_is_heard_again_at_the_same_latency() {
    let calm = forwarded_stall_call("forward-no-stall", 5, Duration::ZERO);
    let stalled = forwarded_stall_call("forward-stall-1500ms", 5, Duration::from_millis(1500));
    eprintln!(
        "forward, 1.5 s uplink stall: PESQ-WB {:.2} (no stall {:.2}); the next pass {:.2} at +{:.0} ms \
         (no stall {:.2} at +{:.0} ms)",
        stalled.stalled.mos_lqo,
        calm.stalled.mos_lqo,
        stalled.after.mos_lqo,
        stalled.after.delay_ms,
        calm.after.mos_lqo,
        calm.after.delay_ms
    );
    assert_eq!(
        (calm.retimes, stalled.retimes),
        (0, 1),
        "re-timings without and with the stall"
    );
    assert!(
        stalled.stalled.mos_lqo >= 2.5,
        "the stalled pass scores PESQ-WB {:.2} < 2.5",
        stalled.stalled.mos_lqo
    );
    assert!(
        stalled.after.mos_lqo >= 4.4 && calm.after.mos_lqo >= 4.4,
        "after the stall the passage scores {:.2} (without a stall {:.2}), not ≥ 4.4",
        stalled.after.mos_lqo,
        calm.after.mos_lqo
    );
    assert!(
        (stalled.after.delay_ms - calm.after.delay_ms).abs() <= 40.0,
        "after the stall the listener plays {:.0} ms behind the speaker, without one {:.0} ms",
        stalled.after.delay_ms,
        calm.after.delay_ms
    );
}
