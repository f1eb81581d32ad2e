//! Pure figures of the time series: least-squares slope, session-loss episodes, silence, and the
//! server's Prometheus text (which counters are watched, which mean trouble).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

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
