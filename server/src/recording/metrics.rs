//! The `chorus_recording*` metrics (docs/metrics.md).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::metrics::{counter, counter_vec, gauge};

#[derive(Clone)]
pub struct RecordingMetrics {
    pub active: IntGauge,
    pub started: IntCounterVec,
    pub stopped: IntCounterVec,
    pub errors: IntCounterVec,
    pub bytes: IntCounter,
    pub frames_dropped: IntCounter,
    pub deleted: IntCounterVec,
    pub stored_bytes: IntGauge,
}

/// The `reason` label values of `chorus_recording_errors_total`.
pub const ERROR_REASONS: [&str; 3] = ["disk_full", "permission_denied", "io"];

impl RecordingMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(RecordingMetrics {
            active: gauge(registry, "chorus_recordings_active", "Recordings running now.")?,
            started: counter_vec(
                registry,
                "chorus_recordings_started_total",
                "Recordings started, by kind (mix, participant).",
                "kind",
                &["mix", "participant"],
            )?,
            stopped: counter_vec(
                registry,
                "chorus_recordings_stopped_total",
                "Recordings ended, by reason.",
                "reason",
                &["request", "room_closed", "participant_left", "shutdown", "error"],
            )?,
            errors: counter_vec(
                registry,
                "chorus_recording_errors_total",
                "Recordings that could not start or stopped because a file could not be written, by cause.",
                "reason",
                &ERROR_REASONS,
            )?,
            bytes: counter(registry, "chorus_recording_bytes_total",
                "Bytes written to recording files (Ogg pages).",
            )?,
            frames_dropped: counter(registry, "chorus_recording_frames_dropped_total",
                "Frames lost between the media workers and the recording writer (its queue was full).",
            )?,
            deleted: counter_vec(
                registry,
                "chorus_recordings_deleted_total",
                "Recordings deleted, by reason: age and size (retention), request (the admin API).",
                "reason",
                &["age", "size", "request"],
            )?,
            stored_bytes: gauge(registry, "chorus_recording_stored_bytes",
                "Bytes of all recordings kept (as of the last retention pass or change).",
            )?,
        })
    }
}
