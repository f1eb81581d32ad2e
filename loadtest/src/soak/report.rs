//! The soak's report: the time series, per-mode figures, and their text form.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    add, is_trouble_counter, metric_name, mode_ix, slope, Counts, Seat, SoakConfig, SoakModes,
    SILENCE_LOST,
};
use crate::run::Mode;
use crate::stats::Summary;

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

/// Complete a sample with its scrape, print the progress line, keep it.
pub(super) fn finish_sample(
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

#[allow(clippy::too_many_arguments)]
pub(super) fn build_report(
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
