//! `chorus_ingest_*` metrics (docs/metrics.md).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Kind;

pub struct IngestMetrics {
    /// Sources in rooms now, by kind.
    pub sources: IntGaugeVec,
    /// Source requests, by kind and result.
    pub requests: IntCounterVec,
    /// Sources that left, by kind and reason.
    pub ended: IntCounterVec,
    /// Opus packets handed to rooms, by kind.
    pub packets: IntCounterVec,
    /// Bad input, by kind and error.
    pub errors: IntCounterVec,
    /// Paced packets that came later than their time (the source stalled): re-timed, by kind.
    pub late: IntCounterVec,
}

/// `result` of `chorus_ingest_requests_total`.
pub const REQUEST_RESULTS: [&str; 8] = [
    "accepted",
    "unauthorized",
    "not_found",
    "bad_request",
    "unsupported",
    "full",
    "banned",
    "media_unavailable",
];

/// `error` of `chorus_ingest_errors_total` (the Ogg reader's `OggError::as_str`, `timeout`, and the RTP
/// endpoints' `not_rtp`, `foreign_source`, `queue_full`, and SRTP's `srtp_auth`, `srtp_replay`).
pub const ERRORS: [&str; 14] = [
    "not_ogg",
    "crc",
    "truncated",
    "not_opus",
    "no_tags",
    "multiplexed",
    "packet_too_large",
    "bad_packet",
    "timeout",
    "not_rtp",
    "foreign_source",
    "queue_full",
    "srtp_auth",
    "srtp_replay",
];

/// `reason` of `chorus_ingest_sources_ended_total`.
pub const END_REASONS: [&str; 6] = [
    "finished", "failed", "kicked", "replaced", "moved", "shutdown",
];

fn vec2(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let kinds = Kind::ALL.map(Kind::as_str);
    crate::metrics::counter_vec2(r, name, help, ["kind", label], &kinds, values)
}

impl IngestMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let sources = IntGaugeVec::new(
            Opts::new(
                "chorus_ingest_sources",
                "Server-side sources in rooms now, by kind.",
            ),
            &["kind"],
        )?;
        r.register(Box::new(sources.clone()))?;
        let per_kind = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &["kind"])?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let m = IngestMetrics {
            sources,
            requests: vec2(
                r,
                "chorus_ingest_requests_total",
                "Source connections and endpoint packets' senders, by kind and result.",
                "result",
                &REQUEST_RESULTS,
            )?,
            ended: vec2(
                r,
                "chorus_ingest_sources_ended_total",
                "Sources that left their room, by kind and reason.",
                "reason",
                &END_REASONS,
            )?,
            packets: per_kind(
                "chorus_ingest_packets_total",
                "Opus packets sources handed to their rooms, by kind.",
            )?,
            errors: vec2(
                r,
                "chorus_ingest_errors_total",
                "Bad source input, by kind and error (docs/metrics.md lists them).",
                "error",
                &ERRORS,
            )?,
            late: per_kind(
                "chorus_ingest_late_packets_total",
                "Paced packets that arrived after their time (the source stalled) and were re-timed.",
            )?,
        };
        for kind in Kind::ALL {
            m.sources.with_label_values(&[kind.as_str()]);
            m.packets.with_label_values(&[kind.as_str()]);
            m.late.with_label_values(&[kind.as_str()]);
        }
        Ok(m)
    }

    pub fn error(&self, kind: Kind, error: &str) {
        self.errors.with_label_values(&[kind.as_str(), error]).inc();
    }

    pub fn request(&self, kind: Kind, result: &str) {
        self.requests
            .with_label_values(&[kind.as_str(), result])
            .inc();
    }
}
