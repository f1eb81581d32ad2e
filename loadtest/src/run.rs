//! A load run: ramp participants up, hold the load, measure, report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use signaling::client::{Client, ClientError};
use signaling::protocol::ServerMessage;
use tokio::sync::watch;

use crate::audio::Frames;
use crate::engine::{Engine, EngineConfig, ParticipantSpec, PeerShape, Snapshot, StreamReport};
use crate::floor::{Floor, FloorConfig};
use crate::procstat::{self, ProcSample};
use crate::signal::{self, SignalError};
use crate::stats::Summary;
use crate::talk::TalkModel;

/// Which server the run talks to.
#[derive(Clone, Debug)]
pub enum Target {
    Chorus {
        ws_url: String,
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
    pub chirp_period: Duration,
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
    /// WebSocket open → media connected (DTLS done), ms.
    pub connect_ms: Option<f64>,
    /// WebSocket open → first remote audio packet, ms.
    pub first_audio_ms: Option<f64>,
    pub error: Option<String>,
}

/// One point of the time series (one per second).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub joined: usize,
    pub rx_pps: f64,
    pub loss_pct: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub mix_latency_p50_ms: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub tool_cpu_pct: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: Mode,
    pub rooms: usize,
    pub participants: usize,
    pub talkers_per_room: usize,
    pub talk_model: String,
    pub dtx: bool,
    pub ramp_rate: f64,
    pub duration_s: f64,
    pub drop_rtp: f64,
    pub seed: u64,
    pub floor: Option<Floor>,
    pub joins: JoinSummary,
    pub streams: StreamSummary,
    /// Forward mode: publisher send → subscriber receive, ms, steady state.
    pub latency_ms: Summary,
    /// Mix mode: chirp sent → chirp in the received mix, ms, codec delay removed, steady state.
    pub mix_latency_ms: Summary,
    pub server: Option<ServerSummary>,
    /// CPU share of one core used by this tool in the steady state.
    pub tool_cpu_share: f64,
    /// Datagrams dropped on the tool's own full receive queue during the whole run (should be 0).
    pub tool_socket_drops: u64,
    pub series: Vec<Point>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JoinSummary {
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// One full error message per failure reason.
    pub failure_examples: BTreeMap<String, String>,
    pub first_audio_ms: Summary,
    pub connect_ms: Summary,
    /// Wall time from the first join started to the last one done, s.
    pub ramp_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    pub count: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub loss_pct_per_stream: Summary,
    pub jitter_ms: Summary,
    /// RTP packets the publishers sent (after injected drops) and the drops injected.
    pub sent_rtp: u64,
    pub injected_drops: u64,
    /// Non-RTP datagrams (RTCP feedback, STUN consent, DTLS) the participants sent, per second of the run.
    pub sent_other_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    pub window_s: f64,
    pub cpu_s: f64,
    pub cpu_share_of_core: f64,
    /// Packets the subscribers received in the window (what the server forwarded or mixed and sent).
    pub packets_out: u64,
    pub cpu_us_per_packet: Option<f64>,
    pub ratio_to_floor: Option<f64>,
    /// Share of a core per connected participant (mix mode's figure of merit).
    pub cpu_share_per_participant: f64,
    pub participants_per_core: Option<f64>,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub rss_kb_per_participant: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
            let packets = s1.rx_packets - s0.rx_packets;
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
        server,
        tool_cpu_share: (tool1.cpu_s() - tool0.cpu_s()) / window,
        tool_socket_drops: s1.tool_socket_drops,
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
        chirper: config.mode == Mode::Mix && talker && ordinal == 0,
        probe,
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

async fn participant(
    config: Arc<RunConfig>,
    engine: Engine,
    spec: ParticipantSpec,
    stop: watch::Receiver<bool>,
) -> JoinRecord {
    let mut rec = JoinRecord {
        index: spec.index,
        room: spec.room,
        talker: spec.talk.is_some(),
        connect_ms: None,
        first_audio_ms: None,
        error: None,
    };
    let r = match &config.target {
        Target::Chorus {
            ws_url,
            api_key,
            api_secret,
        } => {
            chorus_session(
                &config, &engine, spec, ws_url, api_key, api_secret, stop, &mut rec,
            )
            .await
        }
        Target::Janus {
            ws_url,
            prebuffer,
            room_base,
        } => {
            let params = crate::janus::JanusParams {
                url: ws_url,
                room_base: *room_base,
                prebuffer: *prebuffer,
            };
            crate::janus::session(&config, &engine, spec, params, stop, &mut rec).await
        }
    };
    if let Err(e) = r {
        rec.error = Some(e);
        engine.remove(spec.index);
    }
    rec
}

/// Wait for the media milestones; fills `rec`. Errors are short reasons.
pub async fn await_media(
    config: &RunConfig,
    spec: &ParticipantSpec,
    t0: Instant,
    milestones: crate::engine::Milestones,
    rec: &mut JoinRecord,
) -> Result<(), String> {
    let deadline = t0 + config.join_timeout;
    let connected = tokio::time::timeout_at(deadline.into(), milestones.connected)
        .await
        .map_err(|_| "timeout:media_connected".to_string())?
        .map_err(|_| "media_failed".to_string())?;
    rec.connect_ms = Some(ms(connected.saturating_duration_since(t0)));
    if expects_audio(config, spec) {
        let first = tokio::time::timeout_at(deadline.into(), milestones.first_audio)
            .await
            .map_err(|_| "timeout:first_audio".to_string())?
            .map_err(|_| "media_failed".to_string())?;
        rec.first_audio_ms = Some(ms(first.saturating_duration_since(t0)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn chorus_session(
    config: &RunConfig,
    engine: &Engine,
    spec: ParticipantSpec,
    ws_url: &str,
    api_key: &str,
    api_secret: &str,
    mut stop: watch::Receiver<bool>,
    rec: &mut JoinRecord,
) -> Result<(), String> {
    let mut ws = chorus_join(config, engine, spec, ws_url, api_key, api_secret, rec).await?;
    // Joined. Stay in the room until the run stops, answering the idle timeout with pings.
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    let mut id = 0u64;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = ws.leave().await;
                    ws.close().await;
                    return;
                }
                _ = ping.tick() => {
                    id += 1;
                    if ws.ping(id).await.is_err() { return; }
                }
                m = ws.recv() => {
                    if !matches!(m, Ok(Some(_))) { return; }
                }
            }
        }
    });
    Ok(())
}

/// Join a Chorus room and wait for the media milestones (fills `rec`); returns the open signaling
/// WebSocket, which the caller must keep reading (and pinging) while the participant stays.
pub async fn chorus_join(
    config: &RunConfig,
    engine: &Engine,
    mut spec: ParticipantSpec,
    ws_url: &str,
    api_key: &str,
    api_secret: &str,
    rec: &mut JoinRecord,
) -> Result<Client, String> {
    let room = room_name(config, spec.room);
    let identity = format!("lt-{}", spec.index);
    let token =
        signal::chorus_token(api_key, api_secret, &room, &identity).map_err(|e| e.detailed())?;
    let t = config.join_timeout;
    let t0 = Instant::now();
    let detailed = |e: ClientError| SignalError::from(e).detailed();
    let mut ws = Client::connect(ws_url).await.map_err(detailed)?;
    let joined = ws
        .join(&token, Some(&room), Some(&identity), t)
        .await
        .map_err(detailed)?;
    spec.slots = usize::from(joined.room.slots);
    let (offer, milestones) = engine.create(spec).await.map_err(|e| e.to_string())?;
    let answer = ws.offer(&offer, t).await.map_err(detailed)?;
    engine
        .answer(spec.index, answer.sdp)
        .await
        .map_err(|e| e.to_string())?;
    // Keep reading signaling while waiting for media, so the server never blocks on us.
    let media = await_media(config, &spec, t0, milestones, rec);
    tokio::pin!(media);
    loop {
        tokio::select! {
            r = &mut media => { r?; break; }
            m = ws.recv() => {
                match m {
                    Ok(Some(ServerMessage::Error(e))) => return Err(detailed(ClientError::Server(e))),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("closed:media".into()),
                    Err(e) => return Err(detailed(e)),
                }
            }
        }
    }
    Ok(ws)
}

pub fn join_summary(records: &[JoinRecord], ramp_s: f64) -> JoinSummary {
    let mut failures = BTreeMap::new();
    let mut failure_examples = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.error {
            let (key, example) = match e.split_once('|') {
                Some((k, x)) => (k.to_owned(), x.to_owned()),
                None => (
                    e.split(':').take(2).collect::<Vec<_>>().join(":"),
                    e.clone(),
                ),
            };
            *failures.entry(key.clone()).or_insert(0) += 1;
            failure_examples.entry(key).or_insert(example);
        }
    }
    let mut first: Vec<f64> = records.iter().filter_map(|r| r.first_audio_ms).collect();
    let mut conn: Vec<f64> = records.iter().filter_map(|r| r.connect_ms).collect();
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    JoinSummary {
        attempted: records.len(),
        succeeded: records.len() - failed,
        failed,
        failures,
        failure_examples,
        first_audio_ms: Summary::of(&mut first),
        connect_ms: Summary::of(&mut conn),
        ramp_s,
    }
}

fn stream_summary(streams: &[StreamReport], last: &Snapshot, run_s: f64) -> StreamSummary {
    let expected: u64 = streams.iter().map(|s| s.expected).sum();
    let received: u64 = streams.iter().map(|s| s.received).sum();
    let lost: u64 = streams.iter().map(|s| s.lost).sum();
    let mut per: Vec<f64> = streams
        .iter()
        .map(|s| 100.0 * s.lost as f64 / s.expected.max(1) as f64)
        .collect();
    let mut jit: Vec<f64> = streams.iter().map(|s| s.jitter_ms).collect();
    StreamSummary {
        count: streams.len(),
        expected,
        received,
        lost,
        loss_pct: 100.0 * lost as f64 / expected.max(1) as f64,
        loss_pct_per_stream: Summary::of(&mut per),
        jitter_ms: Summary::of(&mut jit),
        sent_rtp: last.tx_rtp,
        injected_drops: last.injected_drops,
        sent_other_per_s: last.tx_other as f64 / run_s.max(1e-3),
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
}

impl Monitor {
    fn new(epoch: Instant, pid: Option<u32>, progress: bool) -> Monitor {
        Monitor {
            epoch,
            pid,
            progress,
            last: None,
            series: Vec::new(),
            measuring: false,
            window_latency: Vec::new(),
            window_chirp: Vec::new(),
        }
    }

    async fn tick(&mut self, engine: &Engine, joined: &usize) {
        self.tick_n(engine, *joined).await;
    }

    fn absorb(&mut self, s: &mut Snapshot) {
        if self.measuring {
            self.window_latency.append(&mut s.latency_ms);
            self.window_chirp.append(&mut s.chirp_ms);
        }
    }

    async fn tick_n(&mut self, engine: &Engine, joined: usize) {
        let Ok(mut s) = engine.snapshot().await else {
            return;
        };
        let now = Instant::now();
        let server = sample_opt(self.pid);
        let Ok(tool) = procstat::sample(None) else {
            return;
        };
        let mut lat = s.latency_ms.clone();
        let lat_sum = Summary::of(&mut lat);
        let mut chirp = s.chirp_ms.clone();
        let chirp_sum = Summary::of(&mut chirp);
        self.absorb(&mut s);
        let mut p = Point {
            t_s: now.saturating_duration_since(self.epoch).as_secs_f64(),
            joined,
            latency_p50_ms: lat_sum.p50,
            latency_p99_ms: lat_sum.p99,
            mix_latency_p50_ms: chirp_sum.p50,
            server_rss_mb: server.map(|x| x.rss_kb as f64 / 1024.0),
            ..Point::default()
        };
        if let Some((t, prev, prev_server, prev_tool)) = &self.last {
            let dt = now.saturating_duration_since(*t).as_secs_f64().max(1e-3);
            p.rx_pps = (s.rx_packets - prev.rx_packets) as f64 / dt;
            let de = s.expected.saturating_sub(prev.expected);
            let dr = s.received.saturating_sub(prev.received);
            p.loss_pct = (de > 0).then(|| 100.0 * de.saturating_sub(dr) as f64 / de as f64);
            p.server_cpu_pct = server
                .zip(*prev_server)
                .map(|(a, b)| 100.0 * (a.cpu_s() - b.cpu_s()) / dt);
            p.tool_cpu_pct = 100.0 * (tool.cpu_s() - prev_tool.cpu_s()) / dt;
        }
        if self.progress {
            use std::io::IsTerminal;
            let start = if std::io::stderr().is_terminal() {
                "\r"
            } else {
                "\n"
            };
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            eprint!(
                "{start}[{:6.1}s] joined {:4} connected {:4} | rx {:7.0} pkt/s loss {:>5}% | latency p50 {:>6} p99 {:>6} ms | mix {:>6} ms | server cpu {:>6}% | tool cpu {:5.1}%   ",
                p.t_s,
                joined,
                s.connected,
                p.rx_pps,
                f(p.loss_pct),
                f(p.latency_p50_ms),
                f(p.latency_p99_ms),
                f(p.mix_latency_p50_ms),
                f(p.server_cpu_pct),
                p.tool_cpu_pct,
            );
        }
        self.series.push(p);
        self.last = Some((now, s, server, tool));
    }
}
