//! A soak: the load held for a long time with participants leaving and joining all along (churn), rooms
//! in forward and mix mode side by side, and a time series of the server's memory, CPU and `/metrics`
//! counters plus the tool's own join, session-loss and packet counts. See docs/loadtest.md ("Soak").
//!
//! The pure parts (churn schedule, least-squares slope, loss-episode counting, Prometheus text parsing)
//! are unit-tested in `soak/tests.rs`; the driver is exercised by `scripts/soak.sh`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::audio::Frames;
use crate::engine::{Engine, EngineConfig, ParticipantSpec};
use crate::procstat::{self, ProcSample};
use crate::run::{self, JoinRecord, Mode, RunConfig, RunError, Target};

/// A participant that should hear audio and has heard none for longer than this is a lost session.
pub const SILENCE_LOST: Duration = Duration::from_secs(2);
/// A join that failed is retried (as a new participant in the same seat) after this long.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Which kind of rooms a soak runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SoakModes {
    Forward,
    Mix,
    /// Even rooms forward, odd rooms mix.
    Both,
}

impl SoakModes {
    pub fn room_mode(self, room: usize) -> Mode {
        match self {
            SoakModes::Forward => Mode::Forward,
            SoakModes::Mix => Mode::Mix,
            SoakModes::Both if room.is_multiple_of(2) => Mode::Forward,
            SoakModes::Both => Mode::Mix,
        }
    }
}

fn mode_ix(m: Mode) -> usize {
    match m {
        Mode::Forward => 0,
        Mode::Mix => 1,
    }
}

/// Everything a soak needs beyond a run's settings (`base.duration` is the soak's length after the
/// ramp; `base.mode` is ignored in favour of `modes`).
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub base: RunConfig,
    pub modes: SoakModes,
    /// Leave-and-rejoin events per minute (Poisson, seeded).
    pub churn_per_min: f64,
    /// Share of leavers that vanish (socket dropped, no `leave`, no close frame).
    pub churn_abrupt: f64,
    pub sample_every: Duration,
    /// The server's `/metrics` (default: derived from the WebSocket URL).
    pub metrics_url: Option<String>,
    /// Figures (RSS slope, rates, loss) start this long after the ramp.
    pub warmup: Duration,
}

mod figures;
mod http;
mod member;
mod report;
mod schedule;

pub use figures::{
    is_trouble_counter, is_watched, metric_name, parse_metrics, silent_too_long, slope, Episodes,
};
pub use http::http_base;
use http::{http, scrape, ScrapeTask};
use member::member;
use report::{build_report, finish_sample};
pub use report::{text, ModeFigures, SoakReport, SoakSample};
pub use schedule::{ChurnEvent, ChurnSchedule};

enum Event {
    Joined {
        index: usize,
        record: JoinRecord,
        leave: oneshot::Sender<bool>,
    },
    Failed {
        index: usize,
        record: JoinRecord,
    },
    /// The server closed the WebSocket (or it broke) without our asking.
    Closed {
        index: usize,
    },
}

struct Seat {
    mode: Mode,
    spec: ParticipantSpec,
    /// The participant in the seat: index, and its leave handle once joined.
    current: Option<(usize, Option<oneshot::Sender<bool>>)>,
    joined_at: Option<Instant>,
    start_at: Option<Instant>,
    /// Its first participant has been started / has joined or failed (the ramp).
    started: bool,
    settled: bool,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    joins_ok: u64,
    joins_failed: u64,
    leaves_clean: u64,
    leaves_abrupt: u64,
    ws_closed: u64,
    silence: u64,
}

/// Run the soak.
pub async fn run(config: SoakConfig) -> Result<SoakReport, RunError> {
    let base = &config.base;
    let Target::Chorus {
        ws_urls,
        api_key,
        api_secret,
    } = &base.target
    else {
        return Err(RunError::Config("the soak drives Chorus only".into()));
    };
    if base.rooms == 0 || base.participants < base.rooms {
        return Err(RunError::Config(
            "need at least one participant per room".into(),
        ));
    }
    // The first node's metrics and admin API (its rooms are created there).
    let ws_url = run::entry_url(ws_urls, 0);
    let http_root = http_base(ws_url);
    let metrics_url = config
        .metrics_url
        .clone()
        .or_else(|| http_root.as_ref().map(|h| format!("{h}/metrics")));
    let cfgs = [Mode::Forward, Mode::Mix].map(|m| {
        Arc::new(RunConfig {
            mode: m,
            ..base.clone()
        })
    });
    // Rooms through the admin API, so each has its mode (mix rooms with DTX off: a listener always
    // receives the mix, and a silent stream means a problem).
    let admin = admin_token(api_key, api_secret)?;
    let root = http_root
        .clone()
        .ok_or_else(|| RunError::Config(format!("cannot derive http:// from {ws_url}")))?;
    for room in 0..base.rooms {
        let mode = config.modes.room_mode(room);
        let name = run::room_name(base, room);
        let body = match mode {
            Mode::Forward => json!({"name": name, "mode": "forward", "max_participants": 100000}),
            Mode::Mix => json!({"name": name, "mode": "mix", "max_participants": 100000,
                                "mix": {"dtx": false}}),
        };
        let (status, text) = http(
            "POST",
            &format!("{root}/admin/v1/rooms"),
            Some(&admin),
            Some(&body.to_string()),
        )
        .await
        .map_err(RunError::Config)?;
        if !(200..300).contains(&status) {
            return Err(RunError::Config(format!(
                "creating room {name}: HTTP {status} {text}"
            )));
        }
    }
    let frames = Arc::new(Frames::prepare(base.talkers.max(1))?);
    let epoch = Instant::now();
    let engine = Engine::start(EngineConfig {
        device: base.device.clone(),
        drop_rtp: base.drop_rtp,
        seed: base.seed,
        epoch,
        frames,
        chirp_period: (config.modes != SoakModes::Forward).then_some(base.chirp_period),
        dtx: base.dtx,
    })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let ramp_start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / base.ramp_rate.max(0.001));
    let mut seats: Vec<Seat> = (0..base.participants)
        .map(|s| {
            let mode = config.modes.room_mode(s % base.rooms);
            Seat {
                mode,
                spec: run::spec_for(&cfgs[mode_ix(mode)], s),
                current: None,
                joined_at: None,
                start_at: Some(ramp_start + gap.mul_f64(s as f64)),
                started: false,
                settled: false,
            }
        })
        .collect();
    let mut seat_of: HashMap<usize, usize> = HashMap::new();
    let mut next_index = base.participants;
    let mut counts = [Counts::default(); 2];
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_audio: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut latency: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut episodes = Episodes::default();
    let mut churn = ChurnSchedule::new(config.churn_per_min, config.churn_abrupt, base.seed);
    let mut samples: Vec<SoakSample> = Vec::new();
    let mut ramp_done: Option<Instant> = None;
    let mut next_churn: Option<Instant> = None;
    let mut next_check = Instant::now() + Duration::from_secs(1);
    let mut next_sample = Instant::now();
    let mut prev_proc: Option<(Instant, Option<ProcSample>, ProcSample)> = None;
    let mut tool_socket_drops = 0;
    let mut pending: Option<(SoakSample, ScrapeTask)> = None;
    loop {
        let now = Instant::now();
        // Events from the participants.
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Joined {
                    index,
                    record,
                    leave,
                } => {
                    let Some(&s) = seat_of.get(&index) else {
                        continue;
                    };
                    let seat = &mut seats[s];
                    let c = &mut counts[mode_ix(seat.mode)];
                    c.joins_ok += 1;
                    if let Some(ms) = record.first_audio_ms {
                        first_audio[mode_ix(seat.mode)].push(ms);
                    }
                    seat.current = Some((index, Some(leave)));
                    seat.joined_at = Some(now);
                    seat.settled = true;
                }
                Event::Failed { index, record } => {
                    let Some(s) = seat_of.remove(&index) else {
                        continue;
                    };
                    let seat = &mut seats[s];
                    counts[mode_ix(seat.mode)].joins_failed += 1;
                    let reason = record.error.unwrap_or_default();
                    let key = reason.split(':').take(2).collect::<Vec<_>>().join(":");
                    *failures.entry(key).or_insert(0) += 1;
                    seat.current = None;
                    seat.joined_at = None;
                    seat.start_at = Some(now + RETRY_AFTER);
                    seat.settled = true;
                }
                Event::Closed { index } => {
                    let Some(s) = seat_of.remove(&index) else {
                        continue;
                    };
                    let seat = &mut seats[s];
                    counts[mode_ix(seat.mode)].ws_closed += 1;
                    episodes.forget(index);
                    seat.current = None;
                    seat.joined_at = None;
                    seat.start_at = Some(now);
                }
            }
        }
        // Start due joins (the ramp, replacements, retries).
        for (s, seat) in seats.iter_mut().enumerate() {
            if seat.start_at.is_some_and(|t| t <= now) {
                seat.start_at = None;
                let index = if seat.started {
                    next_index += 1;
                    next_index - 1
                } else {
                    s
                };
                seat.started = true;
                let spec = ParticipantSpec { index, ..seat.spec };
                seat.current = Some((index, None));
                seat_of.insert(index, s);
                tokio::spawn(member(
                    cfgs[mode_ix(seat.mode)].clone(),
                    engine.clone(),
                    spec,
                    tx.clone(),
                ));
            }
        }
        // The ramp ends when every seat has joined or failed once.
        if ramp_done.is_none() && seats.iter().all(|s| s.settled) {
            ramp_done = Some(now);
            next_churn = churn.next_gap().map(|g| now + g);
            if base.progress {
                eprintln!(
                    "[{:7.1}s] ramp done in {:.1} s; warm-up {:.0} s, then {:.0} s measured",
                    epoch.elapsed().as_secs_f64(),
                    ramp_start.elapsed().as_secs_f64(),
                    config.warmup.as_secs_f64(),
                    base.duration.saturating_sub(config.warmup).as_secs_f64()
                );
            }
        }
        // Churn: one joined participant leaves (cleanly or not) and a new one takes its seat.
        while let Some(t) = next_churn.filter(|t| *t <= now) {
            next_churn = churn.next_gap().map(|g| t + g);
            let joined: Vec<usize> = (0..seats.len())
                .filter(|&s| seats[s].current.as_ref().is_some_and(|c| c.1.is_some()))
                .collect();
            let Some(ev) = churn.pick(joined.len()) else {
                continue;
            };
            let s = joined[ev.pick];
            let seat = &mut seats[s];
            let (index, leave) = seat.current.take().expect("picked among joined seats");
            let leave = leave.expect("a joined seat has its leave handle");
            seat_of.remove(&index);
            episodes.forget(index);
            let _ = leave.send(ev.abrupt);
            let c = &mut counts[mode_ix(seat.mode)];
            if ev.abrupt {
                c.leaves_abrupt += 1;
            } else {
                c.leaves_clean += 1;
            }
            seat.joined_at = None;
            seat.start_at = Some(now);
        }
        // Once a second: silence check, latency samples.
        if now >= next_check {
            next_check += Duration::from_secs(1);
            if let Ok(snap) = engine.snapshot().await {
                let measuring = ramp_done.is_some_and(|r| now >= r + config.warmup);
                if measuring {
                    latency[0].extend_from_slice(&snap.latency_ms);
                    latency[1].extend_from_slice(&snap.chirp_ms);
                }
                tool_socket_drops = snap.tool_socket_drops;
                let last: HashMap<usize, Option<Instant>> = snap.live.iter().copied().collect();
                let now = Instant::now();
                for seat in &seats {
                    let (Some((index, Some(_))), Some(joined)) = (&seat.current, seat.joined_at)
                    else {
                        continue;
                    };
                    if !run::expects_audio(&cfgs[mode_ix(seat.mode)], &seat.spec) {
                        continue;
                    }
                    // A peer the engine gave up on (DTLS/ICE failure) counts as silent too.
                    let last_audio = last.get(index).copied().unwrap_or(None);
                    let bad = !last.contains_key(index)
                        || silent_too_long(last_audio, joined, now, SILENCE_LOST);
                    if episodes.observe(*index, bad) {
                        counts[mode_ix(seat.mode)].silence += 1;
                    }
                }
            }
        }
        // Every sample period: a sample.
        // The scrape runs as its own task: a server that stops answering must not stop this loop (the
        // silence check above would then miss exactly the outage it is there to see).
        if pending.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let (sample, h) = pending.take().expect("checked above");
            finish_sample(sample, h.await, base.progress, &mut samples);
        }
        if now >= next_sample {
            next_sample += config.sample_every;
            if let Some((sample, h)) = pending.take() {
                finish_sample(sample, h.await, base.progress, &mut samples);
            }
            let scrape = tokio::spawn(scrape(metrics_url.clone()));
            let snap = engine.snapshot().await?;
            latency_absorb(&mut latency, &snap, ramp_done, config.warmup);
            let server = base.server_pid.and_then(|p| procstat::sample(Some(p)).ok());
            let tool = procstat::sample(None)?;
            let t = Instant::now();
            let (mut server_cpu_pct, mut tool_cpu_pct) = (None, 0.0);
            if let Some((pt, ps, ptool)) = &prev_proc {
                let dt = t.saturating_duration_since(*pt).as_secs_f64().max(1e-3);
                server_cpu_pct = server
                    .zip(*ps)
                    .map(|(a, b)| 100.0 * (a.cpu_s() - b.cpu_s()) / dt);
                tool_cpu_pct = 100.0 * (tool.cpu_s() - ptool.cpu_s()) / dt;
            }
            prev_proc = Some((t, server, tool));
            let mut expected = [0u64; 2];
            let mut received = [0u64; 2];
            for (room, (e, r)) in &snap.by_room {
                let m = mode_ix(config.modes.room_mode(*room));
                expected[m] += e;
                received[m] += r;
            }
            let total = counts.iter().fold(Counts::default(), |a, c| add(a, *c));
            let joined = seats
                .iter()
                .filter(|s| s.current.as_ref().is_some_and(|c| c.1.is_some()))
                .count();
            let sample = SoakSample {
                t_s: t.saturating_duration_since(epoch).as_secs_f64(),
                steady_s: ramp_done.map_or(-1.0, |r| t.saturating_duration_since(r).as_secs_f64()),
                participants_joined: joined,
                joins_ok: total.joins_ok,
                joins_failed: total.joins_failed,
                ws_closed_unasked: total.ws_closed,
                silence_episodes: total.silence,
                expected,
                received,
                server_rss_mb: server.map(|s| s.rss_kb as f64 / 1024.0),
                server_cpu_s: server.map(|s| s.cpu_s()),
                server_cpu_pct,
                server_udp_drops: base
                    .server_pid
                    .and_then(|p| procstat::udp_drops(p).ok())
                    .map(|(_, d)| d),
                tool_cpu_pct,
                metrics: BTreeMap::new(),
                metrics_error: None,
            };
            pending = Some((sample, scrape));
        }
        if ramp_done.is_some_and(|r| now >= r + base.duration) {
            if let Some((sample, h)) = pending.take() {
                finish_sample(sample, h.await, base.progress, &mut samples);
            }
            if samples
                .last()
                .is_some_and(|l| l.steady_s >= base.duration.as_secs_f64())
            {
                break;
            }
            next_sample = now; // one closing sample
            continue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everyone leaves cleanly; the rooms go.
    for seat in seats.iter_mut() {
        if let Some((_, Some(leave))) = seat.current.take() {
            let _ = leave.send(false);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _streams = engine.stop().await?;
    for room in 0..base.rooms {
        let name = run::room_name(base, room);
        let _ = http(
            "DELETE",
            &format!("{root}/admin/v1/rooms/{name}"),
            Some(&admin),
            None,
        )
        .await;
    }
    Ok(build_report(
        &config,
        &seats,
        counts,
        failures,
        first_audio,
        latency,
        ramp_done.map_or(0.0, |r| {
            r.saturating_duration_since(ramp_start).as_secs_f64()
        }),
        tool_socket_drops,
        samples,
    ))
}

fn latency_absorb(
    latency: &mut [Vec<f64>; 2],
    snap: &crate::engine::Snapshot,
    ramp_done: Option<Instant>,
    warmup: Duration,
) {
    if ramp_done.is_some_and(|r| Instant::now() >= r + warmup) {
        latency[0].extend_from_slice(&snap.latency_ms);
        latency[1].extend_from_slice(&snap.chirp_ms);
    }
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        joins_ok: a.joins_ok + b.joins_ok,
        joins_failed: a.joins_failed + b.joins_failed,
        leaves_clean: a.leaves_clean + b.leaves_clean,
        leaves_abrupt: a.leaves_abrupt + b.leaves_abrupt,
        ws_closed: a.ws_closed + b.ws_closed,
        silence: a.silence + b.silence,
    }
}

fn admin_token(key: &str, secret: &str) -> Result<String, RunError> {
    signaling::auth::mint_admin_token(key, secret, "chorus-loadtest-soak", 24 * 3600)
        .map_err(|e| RunError::Config(format!("admin token: {e}")))
}

#[cfg(test)]
mod tests;
