//! Listener mode: many HTTP listeners of Ogg/Opus streams (Chorus mounts, Icecast mounts), side by side
//! in one run, with each server's CPU and memory sampled over the same window (docs/loadtest.md,
//! "Listeners").
//!
//! Each listener is a raw HTTP/1.0 GET (close-delimited body, no chunking) read as fast as it comes; the
//! body is parsed into Ogg pages. Per target: how long the rush of connects took (all response heads
//! in), each listener's first audio (the first page with a granule position, after the header pages,
//! from the start of its own connect),
//! how far ahead of the wall clock the audio it received runs (what a player that starts at the first
//! page plays behind live: a connect burst shows here), bytes per listener, and listeners that starved
//! (no data for a second or more) or were closed before the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::procstat;

/// Granule positions of Ogg Opus count 48 kHz samples.
const GRANULE_RATE: f64 = 48_000.0;

/// A gap this long with no byte counts the listener as starved once.
const STARVED: Duration = Duration::from_secs(1);

/// The window over which each server's CPU with no listener is measured, before the rush.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// One stream to listen to.
#[derive(Clone, Debug)]
pub struct ListenTarget {
    pub label: String,
    pub addr: SocketAddr,
    /// Path and query, e.g. `/live/radio.opus?token=...`.
    pub path: String,
    /// The server's process, for CPU and memory.
    pub pid: Option<u32>,
}

impl ListenTarget {
    /// `label=host:port/path[@pid]`.
    pub fn parse(spec: &str) -> anyhow::Result<ListenTarget> {
        let (label, rest) = spec
            .split_once('=')
            .context("expected label=host:port/path[@pid]")?;
        let (rest, pid) = match rest.rsplit_once('@') {
            Some((r, p)) => (r, Some(p.parse().context("the pid after @")?)),
            None => (rest, None),
        };
        let slash = rest.find('/').context("expected a path after host:port")?;
        Ok(ListenTarget {
            label: label.to_owned(),
            addr: rest[..slash].parse().context("host:port")?,
            path: rest[slash..].to_owned(),
            pid,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub targets: Vec<ListenTarget>,
    /// Listeners per target.
    pub listeners: usize,
    /// Connects in flight at once per target (the rush).
    pub connect_concurrency: usize,
    /// How long every listener stays, from the end of the rush.
    pub duration: Duration,
    /// Other threads or processes whose CPU is reported over the same windows, `(label, pid)`: the kernel's
    /// receive threads when listeners sit behind a veth pair with threaded NAPI (the script's `REMOTE=1`),
    /// so the receive path's cost is shown apart from the server's instead of inside its system calls.
    pub also: Vec<(String, u32)>,
}

/// Parses `label=pid` (`--also`).
pub fn parse_also(spec: &str) -> anyhow::Result<(String, u32)> {
    let (label, pid) = spec.split_once('=').context("expected label=pid")?;
    Ok((label.to_owned(), pid.parse().context("the pid after =")?))
}

/// The CPU of one `--also` thread over the windows of a target.
#[derive(Clone, Debug, Serialize)]
pub struct AlsoReport {
    pub label: String,
    pub pid: u32,
    /// What it spent in the steady window minus with no listener, per 1,000 listeners of *all* targets,
    /// in % of one core (meaningful with one target).
    pub cpu_percent_per_1000: Option<f64>,
}

/// What one listener saw.
#[derive(Default, Debug)]
struct ListenerResult {
    connected_after: Option<Duration>,
    first_audio_after: Option<Duration>,
    bytes: u64,
    /// Seconds of audio received (granule span) minus the wall time it took (first to last audio page).
    ahead_s: Option<f64>,
    starved: u32,
    closed_early: bool,
    /// From the response head to the end of the run (or the connection).
    listened: Duration,
    error: Option<String>,
}

/// Parses Ogg pages out of a byte stream: their granule positions, in order.
#[derive(Default)]
struct OggScan {
    buf: Vec<u8>,
}

impl OggScan {
    /// Feed bytes; returns the granule position of every page completed.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u64>) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if rest.len() < 27 {
                break;
            }
            if &rest[..4] != b"OggS" {
                // Resynchronise on the next capture pattern.
                match rest[1..].windows(4).position(|w| w == b"OggS") {
                    Some(i) => {
                        at += 1 + i;
                        continue;
                    }
                    None => {
                        at = self.buf.len().saturating_sub(3);
                        break;
                    }
                }
            }
            let segments = rest[26] as usize;
            if rest.len() < 27 + segments {
                break;
            }
            let body: usize = rest[27..27 + segments].iter().map(|b| *b as usize).sum();
            let len = 27 + segments + body;
            if rest.len() < len {
                break;
            }
            let granule =
                u64::from_le_bytes(rest[6..14].try_into().expect("8 bytes of the header"));
            out.push(granule);
            at += len;
        }
        self.buf.drain(..at);
    }
}

async fn listen_one(
    target: &ListenTarget,
    rush: Arc<Semaphore>,
    started: Instant,
    until: tokio::sync::watch::Receiver<bool>,
    settled: Arc<AtomicUsize>,
) -> ListenerResult {
    let r = listen_inner(target, rush, started, until, &settled).await;
    if r.connected_after.is_none() {
        settled.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn listen_inner(
    target: &ListenTarget,
    rush: Arc<Semaphore>,
    started: Instant,
    until: tokio::sync::watch::Receiver<bool>,
    settled: &AtomicUsize,
) -> ListenerResult {
    let mut r = ListenerResult::default();
    let permit = rush.acquire_owned().await;
    // First audio counts from this listener's own connect (the rush's queueing is `rush_s`).
    let connecting = Instant::now();
    let mut s = match TcpStream::connect(target.addr).await {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("connect: {e}"));
            return r;
        }
    };
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: chorus-loadtest\r\n\r\n",
        target.path, target.addr
    );
    if let Err(e) = s.write_all(request.as_bytes()).await {
        r.error = Some(format!("request: {e}"));
        return r;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut scan = OggScan::default();
    let mut granules = Vec::new();
    let mut first_audio: Option<(Instant, u64)> = None;
    let mut last_audio: Option<(Instant, u64)> = None;
    let mut last_read = Instant::now();
    let mut in_body = false;
    let mut until = until;
    let finished = until.wait_for(|stop| *stop);
    tokio::pin!(finished);
    let mut permit = permit.ok();
    loop {
        let n = tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) => { r.closed_early = true; break; }
                Ok(n) => n,
                Err(e) => { r.closed_early = true; r.error = Some(format!("read: {e}")); break; }
            },
            _ = &mut finished => break,
        };
        let now = Instant::now();
        if now - last_read >= STARVED && first_audio.is_some() {
            r.starved += 1;
        }
        last_read = now;
        let mut data = &buf[..n];
        if !in_body {
            head.extend_from_slice(data);
            let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let status = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
            if !status.contains(" 200") {
                r.error = Some(format!("status: {}", status.lines().next().unwrap_or("")));
                return r;
            }
            r.connected_after = Some(now - started);
            settled.fetch_add(1, Ordering::Relaxed);
            permit = None; // the next connect of the rush may start
            in_body = true;
            let body = head.split_off(i + 4);
            scan.feed(&body, &mut granules);
            r.bytes += body.len() as u64;
            data = &[];
        }
        r.bytes += data.len() as u64;
        scan.feed(data, &mut granules);
        for g in granules.drain(..) {
            if g == 0 {
                continue; // header pages
            }
            if first_audio.is_none() {
                first_audio = Some((now, g));
                r.first_audio_after = Some(now - connecting);
            }
            last_audio = Some((now, g));
        }
    }
    drop(permit);
    if let Some(c) = r.connected_after {
        r.listened = (started + c).elapsed();
    }
    if let (Some((t0, g0)), Some((t1, g1))) = (first_audio, last_audio) {
        r.ahead_s = Some((g1 - g0) as f64 / GRANULE_RATE - (t1 - t0).as_secs_f64());
    }
    r
}

/// The figures of one target.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub label: String,
    pub listeners: usize,
    pub connected: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the first connect to the last response head.
    pub rush_s: f64,
    pub first_audio_ms_p50: f64,
    pub first_audio_ms_p95: f64,
    pub first_audio_ms_max: f64,
    /// Audio received ahead of the wall clock, median: how far behind live a player starting at the first
    /// page plays (a connect burst shows here).
    pub behind_live_s_p50: f64,
    /// Median over listeners of bytes received per second listened (a connect burst included).
    pub bytes_per_listener_per_s: f64,
    /// Listeners with a gap of a second or more in their data after their first audio.
    pub starved: usize,
    /// Listeners whose connection ended before the run did.
    pub closed_early: usize,
    /// Server CPU over the steady window (all listeners connected), in cores.
    pub server_cpu_cores: Option<f64>,
    /// The server's CPU with no listener (before the rush), in cores.
    pub server_cpu_cores_idle: Option<f64>,
    /// What the listeners added (loaded minus idle), per 1,000 listeners, in % of one core.
    pub cpu_percent_per_1000: Option<f64>,
    /// Resident memory added per listener (end of the window minus before the rush).
    pub rss_bytes_per_listener: Option<f64>,
    /// `--also` threads over the same windows.
    pub also: Vec<AlsoReport>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Run every target at once; returns one report per target.
pub async fn run(config: ListenConfig) -> anyhow::Result<Vec<TargetReport>> {
    if config.targets.is_empty() {
        bail!("no target");
    }
    // Each server's cost with no listener (its sources: Chorus' room and mixer, Icecast's source client),
    // subtracted from the loaded window's: what the listeners cost.
    let sample_all = || sample_pids(config.targets.iter().map(|t| t.pid));
    let sample_also = || sample_pids(config.also.iter().map(|(_, pid)| Some(*pid)));
    let (before, also_before) = (sample_all(), sample_also());
    let idle_begin = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_window = idle_begin.elapsed().as_secs_f64();
    let (idle_end, also_idle_end) = (sample_all(), sample_also());
    let (stop, until) = tokio::sync::watch::channel(false);
    let settled = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut groups = Vec::new();
    for target in &config.targets {
        let rush = Arc::new(Semaphore::new(config.connect_concurrency));
        let mut tasks = Vec::with_capacity(config.listeners);
        for _ in 0..config.listeners {
            let target = target.clone();
            let (rush, until, settled) = (rush.clone(), until.clone(), settled.clone());
            tasks.push(tokio::spawn(async move {
                listen_one(&target, rush, started, until, settled).await
            }));
        }
        groups.push(tasks);
    }
    // The rush: until every listener of every target has its response head (or failed), at most 120 s.
    let total = config.listeners * config.targets.len();
    let rush_deadline = started + Duration::from_secs(120);
    while settled.load(Ordering::Relaxed) < total && Instant::now() < rush_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the rush settle, then measure CPU over the steady window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window_begin = Instant::now();
    let (cpu_begin, also_begin) = (sample_all(), sample_also());
    tokio::time::sleep(config.duration).await;
    let window = window_begin.elapsed().as_secs_f64();
    let (cpu_end, also_end) = (sample_all(), sample_also());
    let _ = stop.send(true);
    let mut all_connected = 0;
    let mut reports = Vec::new();
    for (i, (target, tasks)) in config.targets.iter().zip(groups).enumerate() {
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(t.await.context("a listener task panicked")?);
        }
        let connected: Vec<&ListenerResult> = results
            .iter()
            .filter(|r| r.connected_after.is_some())
            .collect();
        let rush_s = connected
            .iter()
            .filter_map(|r| r.connected_after)
            .max()
            .map_or(f64::NAN, |d| d.as_secs_f64());
        let mut first: Vec<f64> = results
            .iter()
            .filter_map(|r| r.first_audio_after)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let mut ahead: Vec<f64> = results.iter().filter_map(|r| r.ahead_s).collect();
        let mut rates: Vec<f64> = connected
            .iter()
            .filter(|r| r.listened > Duration::from_secs(1))
            .map(|r| r.bytes as f64 / r.listened.as_secs_f64())
            .collect();
        let cpu_cores = cores(&cpu_begin[i], &cpu_end[i], window);
        let idle_cores = cores(&before[i], &idle_end[i], idle_window);
        let rss = match (&before[i], &cpu_end[i]) {
            (Some(a), Some(b)) if !connected.is_empty() => {
                Some((b.rss_kb as f64 - a.rss_kb as f64) * 1024.0 / connected.len() as f64)
            }
            _ => None,
        };
        reports.push(TargetReport {
            label: target.label.clone(),
            listeners: config.listeners,
            connected: connected.len(),
            errors: results.iter().filter(|r| r.error.is_some()).count(),
            first_error: results.iter().find_map(|r| r.error.clone()),
            rush_s,
            first_audio_ms_p50: percentile(&mut first, 0.5),
            first_audio_ms_p95: percentile(&mut first, 0.95),
            first_audio_ms_max: percentile(&mut first, 1.0),
            behind_live_s_p50: percentile(&mut ahead, 0.5),
            bytes_per_listener_per_s: percentile(&mut rates, 0.5),
            starved: results.iter().filter(|r| r.starved > 0).count(),
            closed_early: results.iter().filter(|r| r.closed_early).count(),
            server_cpu_cores: cpu_cores,
            server_cpu_cores_idle: idle_cores,
            cpu_percent_per_1000: percent_per_1000(cpu_cores, idle_cores, connected.len()),
            rss_bytes_per_listener: rss,
            also: Vec::new(),
        });
        all_connected += connected.len();
    }
    let also: Vec<AlsoReport> = config
        .also
        .iter()
        .enumerate()
        .map(|(i, (label, pid))| AlsoReport {
            label: label.clone(),
            pid: *pid,
            cpu_percent_per_1000: percent_per_1000(
                cores(&also_begin[i], &also_end[i], window),
                cores(&also_before[i], &also_idle_end[i], idle_window),
                all_connected,
            ),
        })
        .collect();
    for r in &mut reports {
        r.also.clone_from(&also);
    }
    Ok(reports)
}

/// A sample of each process (`None` where there is no pid or it cannot be read).
fn sample_pids(pids: impl Iterator<Item = Option<u32>>) -> Vec<Option<procstat::ProcSample>> {
    pids.map(|pid| pid.and_then(|p| procstat::sample(Some(p)).ok()))
        .collect()
}

/// Cores used between samples `a` and `b`, `window_s` apart.
fn cores(
    a: &Option<procstat::ProcSample>,
    b: &Option<procstat::ProcSample>,
    window_s: f64,
) -> Option<f64> {
    a.as_ref()
        .zip(b.as_ref())
        .map(|(a, b)| (b.cpu_s() - a.cpu_s()) / window_s)
}

/// What `listeners` added to a process (`busy` minus `idle` cores), in % of one core per 1,000.
fn percent_per_1000(busy: Option<f64>, idle: Option<f64>, listeners: usize) -> Option<f64> {
    busy.zip(idle)
        .filter(|_| listeners > 0)
        .map(|(c, idle)| (c - idle) * 100.0 * 1000.0 / listeners as f64)
}

/// A text table of `reports`, one row per target, and the ratio of the first two.
pub fn render(reports: &[TargetReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "target      listeners  rush_s  first_audio_ms p50/p95/max  behind_live_s  B/s/listener  starved  closed  idle_cores  cpu_%/1000  rss_B/listener\n",
    );
    for r in reports {
        out.push_str(&format!(
            "{:<10} {:>5}/{:<5} {:>6.2}  {:>7.0}/{:>6.0}/{:>6.0}         {:>9.2}  {:>12.0}  {:>7}  {:>6}  {:>10}  {:>10}  {:>14}\n",
            r.label,
            r.connected,
            r.listeners,
            r.rush_s,
            r.first_audio_ms_p50,
            r.first_audio_ms_p95,
            r.first_audio_ms_max,
            r.behind_live_s_p50,
            r.bytes_per_listener_per_s,
            r.starved,
            r.closed_early,
            r.server_cpu_cores_idle.map_or("-".into(), |c| format!("{c:.3}")),
            r.cpu_percent_per_1000.map_or("-".into(), |c| format!("{c:.2}")),
            r.rss_bytes_per_listener.map_or("-".into(), |b| format!("{b:.0}")),
        ));
        if let Some(e) = &r.first_error {
            out.push_str(&format!("  {}: {} errors, first: {e}\n", r.label, r.errors));
        }
    }
    if let Some(r) = reports.first() {
        for a in &r.also {
            out.push_str(&format!(
                "also {} (pid {}): {} % of a core per 1,000 listeners\n",
                a.label,
                a.pid,
                a.cpu_percent_per_1000
                    .map_or("-".into(), |c| format!("{c:.2}")),
            ));
        }
    }
    if let [a, b, ..] = reports {
        if let (Some(x), Some(y)) = (a.cpu_percent_per_1000, b.cpu_percent_per_1000) {
            out.push_str(&format!(
                "CPU per listener, {} / {}: {:.2}\n",
                a.label,
                b.label,
                x / y
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_found_across_reads_and_after_garbage() {
        let page = |granule: u64, body: &[u8]| {
            let mut p = b"OggS\0\0".to_vec();
            p.extend_from_slice(&granule.to_le_bytes());
            p.extend_from_slice(&[0; 12]);
            p.push(1);
            p.push(body.len() as u8);
            p.extend_from_slice(body);
            p
        };
        let mut stream = b"junk".to_vec();
        stream.extend(page(0, b"head"));
        stream.extend(page(960, &[7; 100]));
        stream.extend(page(1920, &[8; 50]));
        let mut scan = OggScan::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(7) {
            scan.feed(chunk, &mut out);
        }
        assert_eq!(out, vec![0, 960, 1920]);
        let t =
            ListenTarget::parse("chorus=127.0.0.1:7880/live/a.opus?token=x@42").expect("parses");
        assert_eq!(
            (t.label.as_str(), t.path.as_str(), t.pid),
            ("chorus", "/live/a.opus?token=x", Some(42))
        );
    }
}
