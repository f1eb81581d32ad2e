//! A load run: ramp participants up, hold the load, measure, report.

mod join;
mod monitor;
mod report;

use join::participant;
pub use join::{await_media, chorus_join};
pub use report::{join_summary, JoinSummary, Point, Report, ServerSummary, StreamSummary};
use report::{ms, stream_summary};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::audio::Frames;
use crate::engine::{ChirpTurn, Engine, EngineConfig, ParticipantSpec, PeerShape, Snapshot};
use crate::floor::FloorConfig;
use crate::procstat::{self, ProcSample};
use crate::stats::Summary;
use crate::talk::TalkModel;

/// Which server the run talks to.
#[derive(Clone, Debug)]
pub enum Target {
    Chorus {
        /// Entry URLs (the nodes of a cluster): participant `i` joins through `ws_urls[i % len]`.
        ws_urls: Vec<String>,
        api_key: String,
        api_secret: String,
    },
    Janus {
        ws_url: String,
        /// AudioBridge: jitter buffer packets before mixing (Janus' `default_prebuffering`).
        prebuffer: Option<u32>,
        /// Janus room numbers of this run: `room_base + room`.
        room_base: u64,
    },
}

/// The entry URL of participant `index`: the URLs taken round-robin.
pub fn entry_url(ws_urls: &[String], index: usize) -> &str {
    match ws_urls.len() {
        0 => "",
        n => &ws_urls[index % n],
    }
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Chorus { .. } => "chorus",
            Target::Janus { .. } => "janus",
        }
    }
}

/// Forwarding (SFU) or mixing (MCU) rooms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Forward,
    Mix,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: Target,
    pub mode: Mode,
    pub rooms: usize,
    /// Participants in all rooms together.
    pub participants: usize,
    /// Publishers per room (they join first); the others only listen.
    pub talkers: usize,
    pub talk: TalkModel,
    /// Send nothing in talk pauses (Opus DTX) instead of encoded silence.
    pub dtx: bool,
    /// Chorus: slot count to offer when the server does not say (it does, in `joined`).
    pub slots: usize,
    /// Joins started per second.
    pub ramp_rate: f64,
    /// Measured steady state after the ramp.
    pub duration: Duration,
    pub join_timeout: Duration,
    pub drop_rtp: f64,
    pub seed: u64,
    pub server_pid: Option<u32>,
    pub device: Option<String>,
    /// Mix mode: listeners per room that decode and detect chirps.
    pub probes: usize,
    /// Only the first K participants of each room are measured after their first audio (`None`: all;
    /// [`ParticipantSpec::measured`]).
    pub measure_receivers: Option<usize>,
    pub chirp_period: Duration,
    /// Mix mode: only the first talker of each room chirps (the measurement before 2026-12-03), instead of
    /// every talker in turn.
    pub chirp_first_only: bool,
    pub room_prefix: String,
    /// Measure the machine's floor first (in the same run).
    pub floor: Option<FloorConfig>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("media engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("preparing audio: {0}")]
    Audio(#[from] crate::audio::AudioError),
    #[error("floor: {0}")]
    Floor(#[from] crate::floor::FloorError),
    #[error("server process: {0}")]
    Proc(#[from] procstat::ProcError),
    #[error("{0}")]
    Config(String),
}

/// One participant's join.
#[derive(Clone, Debug, Serialize)]
pub struct JoinRecord {
    pub index: usize,
    pub room: usize,
    pub talker: bool,
    /// WebSocket open → the server's answer to the offer (the signaling part of a join), ms. Chorus only.
    pub answer_ms: Option<f64>,
    /// WebSocket open → media connected (DTLS done), ms.
    pub connect_ms: Option<f64>,
    /// WebSocket open → first remote audio packet, ms.
    pub first_audio_ms: Option<f64>,
    pub error: Option<String>,
}

/// Run the load; returns the report.
pub async fn run(config: RunConfig) -> Result<Report, RunError> {
    if config.rooms == 0 || config.participants < config.rooms {
        return Err(RunError::Config(
            "need at least one participant per room".into(),
        ));
    }
    let floor = match config.floor {
        Some(f) => {
            if config.progress {
                eprintln!("measuring the machine's floor (AES-GCM seal + sendmmsg to loopback)...");
            }
            Some(
                tokio::task::spawn_blocking(move || crate::floor::measure(f))
                    .await
                    .map_err(|e| RunError::Config(format!("floor task: {e}")))??,
            )
        }
        None => None,
    };
    let frames = Arc::new(Frames::prepare(config.talkers.max(1))?);
    let epoch = Instant::now();
    let engine = Engine::start(EngineConfig {
        device: config.device.clone(),
        drop_rtp: config.drop_rtp,
        seed: config.seed,
        epoch,
        frames,
        chirp_period: (config.mode == Mode::Mix).then_some(config.chirp_period),
        dtx: config.dtx,
    })?;
    let janus_control = match &config.target {
        Target::Janus {
            ws_url,
            prebuffer,
            room_base,
        } => Some(
            crate::janus::create_rooms(&config, ws_url, *room_base, *prebuffer)
                .await
                .map_err(|e| RunError::Config(format!("creating Janus rooms: {e}")))?,
        ),
        Target::Chorus { .. } => None,
    };
    let server_before = match config.server_pid {
        Some(pid) => Some(procstat::sample(Some(pid))?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(config.participants);
    let cfg = Arc::new(config.clone());
    let ramp_start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / config.ramp_rate.max(0.001));
    let mut monitor = Monitor::new(epoch, config.server_pid, config.progress);
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    // The server's RSS when half the participants have been started: the second half's growth is what a
    // participant costs once the first joins have paged in the binary's code (once per process).
    let mut rss_half: Option<(usize, u64)> = None;
    for index in 0..config.participants {
        let start_at = ramp_start + interval.mul_f64(index as f64);
        loop {
            let now = Instant::now();
            if now >= start_at {
                break;
            }
            if now >= next_tick {
                monitor.tick(&engine, &tasks_done(&tasks)).await;
                next_tick += Duration::from_secs(1);
                continue;
            }
            tokio::time::sleep_until(start_at.min(next_tick).into()).await;
        }
        if index == config.participants / 2 && index >= 10 {
            rss_half = sample_opt(config.server_pid).map(|s| (index, s.rss_kb));
        }
        let spec = spec_for(&config, index);
        let t = tokio::spawn(participant(
            cfg.clone(),
            engine.clone(),
            spec,
            stop_rx.clone(),
        ));
        tasks.push(Joining {
            task: Some(t),
            record: None,
        });
    }
    // Wait for every join to finish (succeed or fail).
    loop {
        for j in tasks.iter_mut() {
            if j.task.as_ref().is_some_and(|t| t.is_finished()) {
                let t = j.task.take().expect("a finished task is taken only once");
                j.record = Some(match t.await {
                    Ok(r) => r,
                    Err(e) => JoinRecord {
                        index: usize::MAX,
                        room: 0,
                        talker: false,
                        answer_ms: None,
                        connect_ms: None,
                        first_audio_ms: None,
                        error: Some(format!("task: {e}")),
                    },
                });
            }
        }
        if tasks.iter().all(|j| j.record.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() >= next_tick {
            monitor.tick(&engine, &tasks_done(&tasks)).await;
            next_tick += Duration::from_secs(1);
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    let records: Vec<JoinRecord> = tasks.into_iter().filter_map(|j| j.record).collect();
    let done = records.iter().filter(|r| r.error.is_none()).count();
    // Let the last joiners' streams settle, then measure the steady state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s0 = engine.snapshot().await?;
    let p0 = sample_opt(config.server_pid);
    let tool0 = procstat::sample(None)?;
    let w0 = Instant::now();
    monitor.window_latency.clear();
    monitor.window_chirp.clear();
    monitor.window_send_late.clear();
    monitor.measuring = true;
    let end = w0 + config.duration;
    while Instant::now() < end {
        tokio::time::sleep_until(next_tick.min(end).into()).await;
        if Instant::now() >= next_tick {
            monitor.tick_n(&engine, done).await;
            next_tick += Duration::from_secs(1);
        }
    }
    let mut s1 = engine.snapshot().await?;
    monitor.absorb(&mut s1);
    let p1 = sample_opt(config.server_pid);
    let tool1 = procstat::sample(None)?;
    let window = w0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let streams = engine.stop().await?;
    if let (Some((session, handle)), Target::Janus { room_base, .. }) =
        (janus_control, &config.target)
    {
        crate::janus::destroy_rooms(session, handle, &config, *room_base).await;
    }
    if config.progress {
        eprintln!();
    }
    let server = match (config.server_pid, server_before, p0, p1) {
        (Some(pid), Some(before), Some(a), Some(b)) => {
            let cpu = b.cpu_s() - a.cpu_s();
            let packets = s1.rtp_delivered() - s0.rtp_delivered();
            let per = (packets > 0).then(|| cpu * 1e6 / packets as f64);
            let share = cpu / window;
            let per_part = share / done.max(1) as f64;
            Some(ServerSummary {
                pid,
                window_s: window,
                cpu_s: cpu,
                cpu_share_of_core: share,
                packets_out: packets,
                cpu_us_per_packet: per,
                ratio_to_floor: per
                    .zip(floor.as_ref())
                    .map(|(p, f)| p / f.cpu_us_per_packet),
                cpu_share_per_participant: per_part,
                participants_per_core: (per_part > 0.0).then(|| 1.0 / per_part),
                rss_before_kb: before.rss_kb,
                rss_after_kb: b.rss_kb,
                rss_kb_per_participant: (b.rss_kb as f64 - before.rss_kb as f64)
                    / done.max(1) as f64,
                rss_kb_per_participant_second_half: rss_half.and_then(|(started, kb)| {
                    let later = done.checked_sub(started).filter(|n| *n > 0)?;
                    Some((b.rss_kb as f64 - kb as f64) / later as f64)
                }),
                anon_kb_per_participant: (b.rss_anon_kb > 0).then(|| {
                    (b.rss_anon_kb as f64 - before.rss_anon_kb as f64) / done.max(1) as f64
                }),
            })
        }
        _ => None,
    };
    Ok(Report {
        target: config.target.name().into(),
        mode: config.mode,
        rooms: config.rooms,
        participants: config.participants,
        talkers_per_room: config.talkers,
        talk_model: format!("{:?}", config.talk).to_lowercase(),
        dtx: config.dtx,
        ramp_rate: config.ramp_rate,
        duration_s: window,
        drop_rtp: config.drop_rtp,
        seed: config.seed,
        floor,
        joins: join_summary(&records, ramp_s),
        streams: stream_summary(&streams, &s1, epoch.elapsed().as_secs_f64()),
        latency_ms: Summary::of(&mut monitor.window_latency),
        mix_latency_ms: Summary::of(&mut monitor.window_chirp),
        send_late_ms: Summary::of(&mut monitor.window_send_late),
        server,
        tool_cpu_share: (tool1.cpu_s() - tool0.cpu_s()) / window,
        tool_socket_drops: s1.tool_socket_drops,
        rx_unmeasured: s1.rx_unmeasured,
        series: monitor.series,
    })
}

fn sample_opt(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|p| procstat::sample(Some(p)).ok())
}

struct Joining {
    task: Option<tokio::task::JoinHandle<JoinRecord>>,
    record: Option<JoinRecord>,
}

fn tasks_done(tasks: &[Joining]) -> usize {
    tasks
        .iter()
        .filter(|j| {
            j.record.as_ref().is_some_and(|r| r.error.is_none())
                || j.task.as_ref().is_some_and(|t| t.is_finished())
        })
        .count()
}

/// Participant `index`: room `index % rooms`; the first `talkers` of each room publish.
pub fn spec_for(config: &RunConfig, index: usize) -> ParticipantSpec {
    let room = index % config.rooms;
    let ordinal = index / config.rooms;
    let talker = ordinal < config.talkers;
    let probe = config.mode == Mode::Mix && !talker && ordinal < config.talkers + config.probes;
    ParticipantSpec {
        index,
        room,
        slots: config.slots,
        talk: talker.then_some(config.talk),
        voice: ordinal,
        chirper: (config.mode == Mode::Mix && talker && (ordinal == 0 || !config.chirp_first_only))
            .then_some(if config.chirp_first_only {
                ChirpTurn { turn: 0, of: 1 }
            } else {
                ChirpTurn {
                    turn: ordinal,
                    of: config.talkers,
                }
            }),
        probe,
        measured: talker || probe || config.measure_receivers.is_none_or(|k| ordinal < k),
        shape: match (&config.target, config.mode) {
            (Target::Janus { .. }, Mode::Mix) => PeerShape::SendRecv,
            _ => PeerShape::Slots,
        },
    }
}

pub fn room_name(config: &RunConfig, room: usize) -> String {
    format!("{}{}", config.room_prefix, room)
}

/// Whether participant `spec` should ever hear anyone (someone else in its room talks).
pub fn expects_audio(config: &RunConfig, spec: &ParticipantSpec) -> bool {
    let others = config.talkers - usize::from(spec.talk.is_some());
    match config.mode {
        Mode::Forward => others > 0,
        // A mixer sends its mix (silence included) to everyone.
        Mode::Mix => true,
    }
}

/// Once a second: a snapshot, a point of the series, the progress line.
struct Monitor {
    epoch: Instant,
    pid: Option<u32>,
    progress: bool,
    last: Option<(Instant, Snapshot, Option<ProcSample>, ProcSample)>,
    series: Vec<Point>,
    measuring: bool,
    window_latency: Vec<f64>,
    window_chirp: Vec<f64>,
    window_send_late: Vec<f64>,
}
