//! The `chorus_hls_*` metrics (docs/metrics.md).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::metrics::{counter, counter_vec, gauge};

#[derive(Clone)]
pub struct HlsMetrics {
    pub streams: IntGauge,
    pub viewers: IntGauge,
    pub segments: IntCounter,
    pub requests: IntCounterVec,
    pub refused: IntCounterVec,
    pub bytes: IntCounterVec,
    pub frames_dropped: IntCounter,
}

/// The `kind` label values of `chorus_hls_requests_total` and `chorus_hls_bytes_total`.
pub const KINDS: [&str; 4] = ["playlist", "init", "segment", "part"];

/// The `reason` label values of `chorus_hls_refused_total`.
pub const REFUSALS: [&str; 6] = [
    "not_found",
    "unauthorized",
    "bad_request",
    "outside_window",
    "over_capacity",
    "timeout",
];

impl HlsMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(HlsMetrics {
            streams: gauge(
                registry,
                "chorus_hls_streams",
                "Rooms whose mix is segmented for HLS now (their playlist was asked for lately).",
            )?,
            viewers: gauge(
                registry,
                "chorus_hls_viewers",
                "HLS viewers now, estimated: requests for each stream's last complete segment but one \
                 (behind a CDN, its edges count once each).",
            )?,
            segments: counter(
                registry,
                "chorus_hls_segments_total",
                "HLS segments produced, over all rooms (each once, whatever the viewers).",
            )?,
            requests: counter_vec(
                registry,
                "chorus_hls_requests_total",
                "HLS requests answered with content or 304, by kind (playlist, init, segment, part).",
                "kind",
                &KINDS,
            )?,
            refused: counter_vec(
                registry,
                "chorus_hls_refused_total",
                "HLS requests refused, by reason: not_found (room, file), unauthorized, bad_request (a \
                 malformed _HLS_msn, or one too far ahead), outside_window (a segment no longer or not yet kept: 404), \
                 over_capacity (hls.max_streams), timeout (a blocking reload or first segment not ready).",
                "reason",
                &REFUSALS,
            )?,
            bytes: counter_vec(
                registry,
                "chorus_hls_bytes_total",
                "HLS bytes served, by kind (playlist, init, segment, part).",
                "kind",
                &KINDS,
            )?,
            frames_dropped: counter(
                registry,
                "chorus_hls_frames_dropped_total",
                "Mix frames lost between the media workers and the HLS segmenter (its queue was full).",
            )?,
        })
    }
}
