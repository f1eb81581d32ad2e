//! A soak: the load held for a long time with participants leaving and joining all along (churn), rooms
//! in forward and mix mode side by side, and a time series of the server's memory, CPU and `/metrics`
//! counters plus the tool's own join, session-loss and packet counts. See docs/loadtest.md ("Soak").
//!
//! The pure parts (churn schedule, least-squares slope, loss-episode counting, Prometheus text parsing)
//! are unit-tested below; the driver is exercised by `scripts/soak.sh`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use signaling::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::audio::Frames;
use crate::engine::{Engine, EngineConfig, ParticipantSpec};
use crate::procstat::{self, ProcSample};
use crate::run::{self, JoinRecord, Mode, RunConfig, RunError, Target};
use crate::stats::Summary;
use crate::talk::Rng;

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

// ---------------------------------------------------------------------------------------------------
// Pure logic

/// Churn events as a Poisson process: exponential gaps with mean 60 / `per_min` s, from a seeded stream.
pub struct ChurnSchedule {
    rng: Rng,
    mean_gap_s: Option<f64>,
    abrupt: f64,
}

/// One churn event: which of the `n` candidates leaves (an index into the caller's list) and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChurnEvent {
    pub pick: usize,
    pub abrupt: bool,
}

impl ChurnSchedule {
    pub fn new(per_min: f64, abrupt: f64, seed: u64) -> ChurnSchedule {
        ChurnSchedule {
            rng: Rng::new(seed ^ 0xC4A2_0000_5EED),
            mean_gap_s: (per_min > 0.0).then(|| 60.0 / per_min),
            abrupt,
        }
    }

    /// Time to the next event; `None` without churn.
    pub fn next_gap(&mut self) -> Option<Duration> {
        let mean = self.mean_gap_s?;
        Some(Duration::from_secs_f64(self.rng.exp(mean)))
    }

    /// Who leaves among `n` candidates, and whether abruptly; `None` when there is nobody.
    pub fn pick(&mut self, n: usize) -> Option<ChurnEvent> {
        if n == 0 {
            return None;
        }
        let pick = (self.rng.next_u64() % n as u64) as usize;
        let abrupt = self.rng.unit() < self.abrupt;
        Some(ChurnEvent { pick, abrupt })
    }
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Counts loss episodes: a key that turns bad counts once, and again only after it was good in between.
#[derive(Debug, Default)]
pub struct Episodes {
    open: HashSet<usize>,
    pub count: u64,
}

impl Episodes {
    /// Observe `key`; true when this observation starts a new episode.
    pub fn observe(&mut self, key: usize, bad: bool) -> bool {
        if !bad {
            self.open.remove(&key);
            return false;
        }
        let new = self.open.insert(key);
        if new {
            self.count += 1;
        }
        new
    }

    /// The key is gone (left); a later key with the same value starts fresh.
    pub fn forget(&mut self, key: usize) {
        self.open.remove(&key);
    }
}

/// Whether a participant that should hear audio has been silent too long: since its latest packet, or
/// since it joined if it never got one.
pub fn silent_too_long(
    last_audio: Option<Instant>,
    joined: Instant,
    now: Instant,
    limit: Duration,
) -> bool {
    now.saturating_duration_since(last_audio.unwrap_or(joined).max(joined)) > limit
}

/// Every sample of a Prometheus text exposition: `name{labels}` (as written) → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => line.split_at(open + close + 1),
                None => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some(kv) => kv,
                None => continue,
            },
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.insert(key.to_owned(), v);
        }
    }
    out
}

/// The metric name of a sample key.
pub fn metric_name(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

/// Counters whose increase means something was dropped, late, skipped, missed or lost.
pub fn is_trouble_counter(key: &str) -> bool {
    let name = metric_name(key);
    name.ends_with("_total")
        && [
            "dropped",
            "late",
            "skipped",
            "missed",
            "discarded",
            "lost",
            "errors",
        ]
        .iter()
        .any(|w| name.contains(w))
}

/// The samples a soak keeps: population gauges, tick and join/leave counters, and every trouble counter.
pub fn is_watched(key: &str) -> bool {
    matches!(
        metric_name(key),
        "chorus_participants"
            | "chorus_rooms"
            | "chorus_signaling_sessions"
            | "chorus_http_connections"
            | "chorus_mixer_ticks_total"
            | "chorus_joins_total"
            | "chorus_leaves_total"
            | "process_resident_memory_bytes"
            | "process_open_fds"
    ) || is_trouble_counter(key)
}

/// `ws://host:port/...` → `http://host:port`.
pub fn http_base(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("http://{host}"))
}

// ---------------------------------------------------------------------------------------------------
// A minimal HTTP/1.0 client (loopback /metrics and admin API; no TLS)

async fn http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = async {
        let mut s = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
        if let Some(b) = bearer {
            req.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("{method} {url}: timeout"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {url}: no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {url}: bad status line"))?;
    Ok((status, body.to_owned()))
}

// ---------------------------------------------------------------------------------------------------
// Report

/// One sample of the time series (every `--sample-secs`).
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    pub t_s: f64,
    /// Seconds since the end of the ramp (negative during the ramp).
    pub steady_s: f64,
    pub participants_joined: usize,
    pub joins_ok: u64,
    pub joins_failed: u64,
    pub ws_closed_unasked: u64,
    pub silence_episodes: u64,
    /// Per mode (forward, mix): packets expected and received by every stream so far.
    pub expected: [u64; 2],
    pub received: [u64; 2],
    pub server_rss_mb: Option<f64>,
    pub server_cpu_s: Option<f64>,
    /// Server CPU since the previous sample, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Datagrams the kernel dropped on the server's full UDP receive queues so far.
    pub server_udp_drops: Option<u64>,
    pub tool_cpu_pct: f64,
    pub metrics: BTreeMap<String, f64>,
    pub metrics_error: Option<String>,
}

/// Figures of one room mode.
#[derive(Clone, Debug, Serialize)]
pub struct ModeFigures {
    pub mode: Mode,
    pub rooms: usize,
    pub seats: usize,
    pub joins_ok: u64,
    pub joins_failed: u64,
    pub leaves_clean: u64,
    pub leaves_abrupt: u64,
    pub ws_closed_unasked: u64,
    pub silence_episodes: u64,
    pub sessions_lost: u64,
    /// After the warm-up.
    pub expected: u64,
    pub received: u64,
    pub loss_pct: Option<f64>,
    /// Forward: stamped send → receive; mix: chirp → detected in the mix (ms, after the warm-up).
    pub latency_ms: Summary,
    pub first_audio_ms: Summary,
}

/// The outcome of a soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub modes: SoakModes,
    pub rooms: usize,
    pub participants: usize,
    pub talkers_per_room: usize,
    pub talk_model: String,
    pub churn_per_min: f64,
    pub churn_abrupt: f64,
    pub seed: u64,
    pub sample_s: f64,
    pub ramp_s: f64,
    pub warmup_s: f64,
    /// From the end of the warm-up to the end.
    pub measured_s: f64,
    pub rss_start_mb: Option<f64>,
    pub rss_end_mb: Option<f64>,
    pub rss_slope_mb_per_h: Option<f64>,
    pub server_cpu_mean_pct: Option<f64>,
    pub tool_cpu_mean_pct: Option<f64>,
    pub joins_ok: u64,
    pub joins_failed: u64,
    pub join_failures: BTreeMap<String, u64>,
    pub leaves_clean: u64,
    pub leaves_abrupt: u64,
    pub ws_closed_unasked: u64,
    pub silence_episodes: u64,
    pub sessions_lost: u64,
    pub mixer_ticks_per_h: Option<f64>,
    pub mixer_ticks_late_per_h: Option<f64>,
    pub mixer_ticks_skipped_per_h: Option<f64>,
    /// Session queue drops (`chorus_*_events_dropped_total`), after the warm-up.
    pub queue_drops: Option<f64>,
    /// Datagrams the kernel dropped on the server's full UDP receive queues, after the warm-up.
    pub server_udp_drops: Option<u64>,
    /// Participants that left their room, by the server's reason (`chorus_leaves_total`), whole run.
    pub server_leaves: BTreeMap<String, f64>,
    /// Increase of every trouble counter of /metrics after the warm-up.
    pub trouble_counters: BTreeMap<String, f64>,
    pub expected: u64,
    pub received: u64,
    pub loss_pct: Option<f64>,
    pub per_mode: Vec<ModeFigures>,
    pub tool_socket_drops: u64,
    pub samples: Vec<SoakSample>,
}

fn pct(lost: u64, expected: u64) -> Option<f64> {
    (expected > 0).then(|| 100.0 * lost as f64 / expected as f64)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn summary(s: &Summary) -> String {
    format!(
        "n {} p50 {} p95 {} p99 {} max {}",
        s.count,
        opt(s.p50, 2),
        opt(s.p95, 2),
        opt(s.p99, 2),
        opt(s.max, 2)
    )
}

/// The soak's text report.
pub fn text(r: &SoakReport) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: String| o.push_str(&format!("{k:<40} {v}\n"));
    line(
        "soak",
        format!(
            "{:?} rooms, {} participants in {} rooms, {} talkers/room ({}), churn {}/min ({}% abrupt), seed {}",
            r.modes,
            r.participants,
            r.rooms,
            r.talkers_per_room,
            r.talk_model,
            r.churn_per_min,
            r.churn_abrupt * 100.0,
            r.seed
        ),
    );
    line(
        "time",
        format!(
            "ramp {:.1} s, warm-up {:.0} s after the ramp (excluded), measured {:.1} s, sample every {:.0} s",
            r.ramp_s, r.warmup_s, r.measured_s, r.sample_s
        ),
    );
    line(
        "server RSS start / end, MB",
        format!("{} / {}", opt(r.rss_start_mb, 1), opt(r.rss_end_mb, 1)),
    );
    line(
        "server RSS slope, MB per hour",
        format!(
            "{} (least squares over the measured samples)",
            opt(r.rss_slope_mb_per_h, 2)
        ),
    );
    line(
        "server CPU mean, % of a core",
        opt(r.server_cpu_mean_pct, 1),
    );
    line("tool CPU mean, % of a core", opt(r.tool_cpu_mean_pct, 1));
    line(
        "joins ok / failed",
        format!("{} / {} {:?}", r.joins_ok, r.joins_failed, r.join_failures),
    );
    line(
        "leaves clean / abrupt",
        format!("{} / {}", r.leaves_clean, r.leaves_abrupt),
    );
    line(
        "sessions lost",
        format!(
            "{} (WebSocket closed unasked {}, no audio > {} s {})",
            r.sessions_lost,
            r.ws_closed_unasked,
            SILENCE_LOST.as_secs(),
            r.silence_episodes
        ),
    );
    line(
        "mixer ticks / late / skipped per hour",
        format!(
            "{} / {} / {}",
            opt(r.mixer_ticks_per_h, 0),
            opt(r.mixer_ticks_late_per_h, 1),
            opt(r.mixer_ticks_skipped_per_h, 1)
        ),
    );
    line("session queue drops", opt(r.queue_drops, 0));
    line(
        "server UDP receive-queue drops (kernel)",
        r.server_udp_drops.map_or("-".into(), |d| d.to_string()),
    );
    line(
        "server leaves by reason (last sample)",
        r.server_leaves
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches("chorus_leaves_total")))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "loss (received vs expected)",
        format!(
            "{}% ({} of {})",
            opt(r.loss_pct, 3),
            r.expected.saturating_sub(r.received),
            r.expected
        ),
    );
    line("tool socket drops", r.tool_socket_drops.to_string());
    for m in &r.per_mode {
        o.push_str(&format!(
            "{:?}: {} rooms, {} seats | joins {} ok {} failed | leaves {} clean {} abrupt | lost {} (closed {}, silent {}) | loss {}% of {} | latency ms {} | join→audio ms {}\n",
            m.mode,
            m.rooms,
            m.seats,
            m.joins_ok,
            m.joins_failed,
            m.leaves_clean,
            m.leaves_abrupt,
            m.sessions_lost,
            m.ws_closed_unasked,
            m.silence_episodes,
            opt(m.loss_pct, 3),
            m.expected,
            summary(&m.latency_ms),
            summary(&m.first_audio_ms),
        ));
    }
    o.push_str("trouble counters of /metrics, increase after the warm-up:\n");
    let nonzero: Vec<_> = r
        .trouble_counters
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .collect();
    if nonzero.is_empty() {
        o.push_str(&format!("  all {} are zero\n", r.trouble_counters.len()));
    }
    for (k, v) in nonzero {
        o.push_str(&format!("  {k} {v}\n"));
    }
    o
}

// ---------------------------------------------------------------------------------------------------
// The driver

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
        ws_url,
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

type ScrapeTask = tokio::task::JoinHandle<Result<BTreeMap<String, f64>, String>>;

/// The watched samples of the server's /metrics.
async fn scrape(url: Option<String>) -> Result<BTreeMap<String, f64>, String> {
    let url = url.ok_or_else(|| "no metrics URL".to_string())?;
    match http("GET", &url, None, None).await? {
        (200, body) => Ok(parse_metrics(&body)
            .into_iter()
            .filter(|(k, _)| is_watched(k))
            .collect()),
        (s, _) => Err(format!("HTTP {s}")),
    }
}

/// Complete a sample with its scrape, print the progress line, keep it.
fn finish_sample(
    mut sample: SoakSample,
    scraped: Result<Result<BTreeMap<String, f64>, String>, tokio::task::JoinError>,
    progress: bool,
    samples: &mut Vec<SoakSample>,
) {
    match scraped.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(m) => sample.metrics = m,
        Err(e) => sample.metrics_error = Some(e),
    }
    if progress {
        let m = |k: &str| sample.metrics.get(k).copied();
        let expected = sample.expected[0] + sample.expected[1];
        let received = sample.received[0] + sample.received[1];
        eprintln!(
            "[{:7.1}s] joined {:3} | joins {} ok {} failed | lost {} closed {} silent | loss {}% | server rss {} MB cpu {}% | tool cpu {:.1}% | ticks late {} skipped {}{}",
            sample.t_s,
            sample.participants_joined,
            sample.joins_ok,
            sample.joins_failed,
            sample.ws_closed_unasked,
            sample.silence_episodes,
            opt(pct(expected.saturating_sub(received), expected), 3),
            opt(sample.server_rss_mb, 1),
            opt(sample.server_cpu_pct, 1),
            sample.tool_cpu_pct,
            opt(m("chorus_mixer_ticks_late_total"), 0),
            opt(m("chorus_mixer_ticks_skipped_total"), 0),
            sample
                .metrics_error
                .as_ref()
                .map_or(String::new(), |e| format!(" | metrics: {e}")),
        );
    }
    samples.push(sample);
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

/// One participant: join, then stay (pinging) until told to leave — cleanly (`false`: `leave`, close
/// frame) or abruptly (`true`: the socket is dropped) — or until the server closes on it.
async fn member(
    config: Arc<RunConfig>,
    engine: Engine,
    spec: ParticipantSpec,
    tx: mpsc::UnboundedSender<Event>,
) {
    let Target::Chorus {
        ws_url,
        api_key,
        api_secret,
    } = &config.target
    else {
        return;
    };
    let index = spec.index;
    let mut record = JoinRecord {
        index,
        room: spec.room,
        talker: spec.talk.is_some(),
        connect_ms: None,
        first_audio_ms: None,
        error: None,
    };
    let joined = run::chorus_join(
        &config,
        &engine,
        spec,
        ws_url,
        api_key,
        api_secret,
        &mut record,
    )
    .await;
    let mut ws: Client = match joined {
        Ok(ws) => ws,
        Err(e) => {
            record.error = Some(e);
            engine.retire(index);
            let _ = tx.send(Event::Failed { index, record });
            return;
        }
    };
    let (leave_tx, mut leave) = oneshot::channel();
    let _ = tx.send(Event::Joined {
        index,
        record,
        leave: leave_tx,
    });
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    let mut id = 0u64;
    loop {
        tokio::select! {
            r = &mut leave => {
                engine.retire(index);
                if r != Ok(true) {
                    let bye = async {
                        let _ = ws.leave().await;
                        ws.close().await;
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
                }
                return;
            }
            _ = ping.tick() => {
                id += 1;
                if ws.ping(id).await.is_err() {
                    engine.retire(index);
                    let _ = tx.send(Event::Closed { index });
                    return;
                }
            }
            m = ws.recv() => {
                if !matches!(m, Ok(Some(_))) {
                    engine.retire(index);
                    let _ = tx.send(Event::Closed { index });
                    return;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    config: &SoakConfig,
    seats: &[Seat],
    counts: [Counts; 2],
    failures: BTreeMap<String, u64>,
    mut first_audio: [Vec<f64>; 2],
    mut latency: [Vec<f64>; 2],
    ramp_s: f64,
    tool_socket_drops: u64,
    samples: Vec<SoakSample>,
) -> SoakReport {
    let base = &config.base;
    let warm = config.warmup.as_secs_f64();
    let measured: Vec<&SoakSample> = samples.iter().filter(|s| s.steady_s >= warm).collect();
    let first = measured.first().copied();
    let last = measured.last().copied();
    let measured_s = first.zip(last).map_or(0.0, |(a, b)| b.t_s - a.t_s);
    let rss: Vec<(f64, f64)> = measured
        .iter()
        .filter_map(|s| s.server_rss_mb.map(|r| (s.t_s / 3600.0, r)))
        .collect();
    // Metric deltas between the first and last measured samples whose scrape succeeded.
    let mfirst = measured.iter().find(|s| !s.metrics.is_empty()).copied();
    let mlast = measured.iter().rfind(|s| !s.metrics.is_empty()).copied();
    let mhours = mfirst
        .zip(mlast)
        .map_or(0.0, |(a, b)| (b.t_s - a.t_s) / 3600.0);
    let delta = |k: &str| -> Option<f64> {
        let a = mfirst?.metrics.get(k)?;
        let b = mlast?.metrics.get(k)?;
        Some(b - a)
    };
    let per_h = |k: &str| delta(k).filter(|_| mhours > 0.0).map(|d| d / mhours);
    let mut trouble = BTreeMap::new();
    if let Some(l) = mlast {
        for k in l.metrics.keys().filter(|k| is_trouble_counter(k)) {
            if let Some(d) = delta(k) {
                trouble.insert(k.clone(), d);
            }
        }
    }
    let queue_drops = mlast.map(|_| {
        trouble
            .iter()
            .filter(|(k, _)| metric_name(k).ends_with("_events_dropped_total"))
            .map(|(_, v)| v)
            .sum()
    });
    let exp_rec = |m: usize| -> (u64, u64) {
        match (first, last) {
            (Some(a), Some(b)) => (
                b.expected[m].saturating_sub(a.expected[m]),
                b.received[m].saturating_sub(a.received[m]),
            ),
            _ => (0, 0),
        }
    };
    let total = add(counts[0], counts[1]);
    let mut per_mode = Vec::new();
    for mode in [Mode::Forward, Mode::Mix] {
        let m = mode_ix(mode);
        let rooms = (0..base.rooms)
            .filter(|r| config.modes.room_mode(*r) == mode)
            .count();
        if rooms == 0 {
            continue;
        }
        let (e, r) = exp_rec(m);
        let c = counts[m];
        per_mode.push(ModeFigures {
            mode,
            rooms,
            seats: seats.iter().filter(|s| s.mode == mode).count(),
            joins_ok: c.joins_ok,
            joins_failed: c.joins_failed,
            leaves_clean: c.leaves_clean,
            leaves_abrupt: c.leaves_abrupt,
            ws_closed_unasked: c.ws_closed,
            silence_episodes: c.silence,
            sessions_lost: c.ws_closed + c.silence,
            expected: e,
            received: r,
            loss_pct: pct(e.saturating_sub(r), e),
            latency_ms: Summary::of(&mut latency[m]),
            first_audio_ms: Summary::of(&mut first_audio[m]),
        });
    }
    let (e0, r0) = exp_rec(0);
    let (e1, r1) = exp_rec(1);
    let cpu_mean = first
        .zip(last)
        .and_then(|(a, b)| Some((b.server_cpu_s? - a.server_cpu_s?, b.t_s - a.t_s)))
        .filter(|(_, dt)| *dt > 0.0)
        .map(|(c, dt)| 100.0 * c / dt);
    let tool: Vec<f64> = measured.iter().skip(1).map(|s| s.tool_cpu_pct).collect();
    SoakReport {
        modes: config.modes,
        rooms: base.rooms,
        participants: base.participants,
        talkers_per_room: base.talkers,
        talk_model: format!("{:?}", base.talk).to_lowercase(),
        churn_per_min: config.churn_per_min,
        churn_abrupt: config.churn_abrupt,
        seed: base.seed,
        sample_s: config.sample_every.as_secs_f64(),
        ramp_s,
        warmup_s: warm,
        measured_s,
        rss_start_mb: first.and_then(|s| s.server_rss_mb),
        rss_end_mb: last.and_then(|s| s.server_rss_mb),
        rss_slope_mb_per_h: slope(&rss),
        server_cpu_mean_pct: cpu_mean,
        tool_cpu_mean_pct: (!tool.is_empty()).then(|| tool.iter().sum::<f64>() / tool.len() as f64),
        joins_ok: total.joins_ok,
        joins_failed: total.joins_failed,
        join_failures: failures,
        leaves_clean: total.leaves_clean,
        leaves_abrupt: total.leaves_abrupt,
        ws_closed_unasked: total.ws_closed,
        silence_episodes: total.silence,
        sessions_lost: total.ws_closed + total.silence,
        mixer_ticks_per_h: per_h("chorus_mixer_ticks_total"),
        mixer_ticks_late_per_h: per_h("chorus_mixer_ticks_late_total"),
        mixer_ticks_skipped_per_h: per_h("chorus_mixer_ticks_skipped_total"),
        queue_drops,
        server_udp_drops: first
            .zip(last)
            .and_then(|(a, b)| Some(b.server_udp_drops?.saturating_sub(a.server_udp_drops?))),
        server_leaves: mlast.map_or_else(BTreeMap::new, |l| {
            l.metrics
                .iter()
                .filter(|(k, _)| metric_name(k) == "chorus_leaves_total")
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        }),
        trouble_counters: trouble,
        expected: e0 + e1,
        received: r0 + r1,
        loss_pct: pct((e0 + e1).saturating_sub(r0 + r1), e0 + e1),
        per_mode,
        tool_socket_drops,
        samples,
    }
}

#[cfg(test)]
mod tests;
