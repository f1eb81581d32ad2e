//! `chorus_whip_*` metrics (docs/metrics.md): WHIP publishers and WHEP listeners.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Kind;

pub struct WhipMetrics {
    /// Sessions now, by kind.
    pub sessions: IntGaugeVec,
    /// Requests, by kind and result.
    pub requests: IntCounterVec,
    /// Sessions that ended, by kind and reason.
    pub ended: IntCounterVec,
}

/// `result` of `chorus_whip_requests_total`.
pub const RESULTS: [&str; 14] = [
    "created",
    "deleted",
    "trickle",
    "ice_restart",
    "unauthorized",
    "forbidden",
    "unsupported_media_type",
    "bad_sdp",
    "no_audio",
    "too_large",
    "not_found",
    "precondition_failed",
    "full",
    "media_unavailable",
];

/// `reason` of `chorus_whip_sessions_ended_total`.
pub const END_REASONS: [&str; 6] = [
    "deleted",
    "ice_failed",
    "kicked",
    "replaced",
    "moved",
    "shutdown",
];

fn by_kind(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let kinds = Kind::ALL.map(Kind::as_str);
    crate::metrics::counter_vec2(r, name, help, ["kind", label], &kinds, values)
}

impl WhipMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let sessions = IntGaugeVec::new(
            Opts::new(
                "chorus_whip_sessions",
                "WHIP publishers and WHEP listeners in rooms now, by kind.",
            ),
            &["kind"],
        )?;
        r.register(Box::new(sessions.clone()))?;
        for kind in Kind::ALL {
            sessions.with_label_values(&[kind.as_str()]);
        }
        Ok(WhipMetrics {
            sessions,
            requests: by_kind(
                r,
                "chorus_whip_requests_total",
                "WHIP/WHEP requests (POST, PATCH, DELETE), by kind and result.",
                "result",
                &RESULTS,
            )?,
            ended: by_kind(
                r,
                "chorus_whip_sessions_ended_total",
                "WHIP/WHEP sessions that ended, by kind and reason.",
                "reason",
                &END_REASONS,
            )?,
        })
    }

    pub fn request(&self, kind: Kind, result: &str) {
        self.requests
            .with_label_values(&[kind.as_str(), result])
            .inc();
    }
}
