//! `[recording]`: rooms and participants recorded to Ogg/Opus files (docs/broadcast.md, "Recording").

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Accept recordings (the admin API and the rooms' `record` setting). Off: both answer 503.
    pub enabled: bool,
    /// Where recordings are written (made when the first one starts); files are named by recording id.
    pub dir: PathBuf,
    /// Audio per Ogg page, a multiple of 20 ms: each page is written (and handed to the kernel) once full,
    /// or this long after its first packet, so a crash of the process loses at most this much.
    pub page_ms: u32,
    /// fsync a recording's file this often (0: only when it ends). The kernel holds what is written
    /// without it: a process crash loses nothing more, a power loss what was not yet synced.
    pub fsync_interval_ms: u64,
    /// Recordings running at once, at most.
    pub max_active: usize,
    /// Frames waiting between the media workers and the writer thread; beyond this they are dropped and
    /// counted (`chorus_recording_frames_dropped_total`).
    pub queue_frames: usize,
    /// Ended recordings older than this are deleted (0: no age limit).
    pub retention_max_age_secs: u64,
    /// When all recordings together exceed this, the oldest ended ones are deleted (0: no size limit).
    pub retention_max_total_bytes: u64,
    /// How often retention is enforced (also once at start).
    pub retention_interval_secs: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: false,
            dir: PathBuf::from("recordings"),
            page_ms: 1000,
            fsync_interval_ms: 10_000,
            max_active: 64,
            queue_frames: 10_000,
            retention_max_age_secs: 0,
            retention_max_total_bytes: 0,
            retention_interval_secs: 300,
        }
    }
}

impl RecordingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.enabled && self.dir.as_os_str().is_empty() {
            return invalid("recording.dir must name a directory");
        }
        if !(20..=1000).contains(&self.page_ms) || !self.page_ms.is_multiple_of(20) {
            return invalid("recording.page_ms must be a multiple of 20 in 20..=1000");
        }
        if self.fsync_interval_ms > 3_600_000 {
            return invalid("recording.fsync_interval_ms must be 0..=3600000");
        }
        if !(1..=10_000).contains(&self.max_active) {
            return invalid("recording.max_active must be 1..=10000");
        }
        if !(100..=1_000_000).contains(&self.queue_frames) {
            return invalid("recording.queue_frames must be 100..=1000000");
        }
        if !(1..=86_400).contains(&self.retention_interval_secs) {
            return invalid("recording.retention_interval_secs must be 1..=86400");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        assert!(RecordingConfig::default().validate().is_ok());
        for bad in [
            RecordingConfig {
                page_ms: 1020,
                ..Default::default()
            },
            RecordingConfig {
                page_ms: 30,
                ..Default::default()
            },
            RecordingConfig {
                max_active: 0,
                ..Default::default()
            },
            RecordingConfig {
                queue_frames: 1,
                ..Default::default()
            },
            RecordingConfig {
                retention_interval_secs: 0,
                ..Default::default()
            },
            RecordingConfig {
                enabled: true,
                dir: PathBuf::new(),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
