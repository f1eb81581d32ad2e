//! `chorus_playout_*` metrics (docs/metrics.md). Packets and source ends are counted by the ingest
//! metrics under `kind="playout"`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::JobKind;
use crate::metrics::counter_vec;

pub struct PlayoutMetrics {
    /// Playbacks, hold music and announcements in rooms now (or scheduled), by kind.
    pub running: IntGaugeVec,
    /// Items played to their end (or skipped by an operator), by format.
    pub played: IntCounterVec,
    /// Items not played (or cut short) because of what they are, by reason.
    pub skipped: IntCounterVec,
}

/// `format` of `chorus_playout_items_played_total`.
pub const FORMATS: [&str; 3] = ["ogg", "wav", "mp3"];

/// `reason` of `chorus_playout_items_skipped_total`: a name that does not resolve (the media
/// directory's errors), a file too large, or its content (the decoders' errors).
pub const SKIP_REASONS: [&str; 18] = [
    "bad_name",
    "outside",
    "not_found",
    "unsupported",
    "too_long",
    "unreadable",
    "too_large",
    "nested_playlist",
    "not_ogg",
    "crc",
    "truncated",
    "not_opus",
    "no_tags",
    "bad_packet",
    "multiplexed",
    "packet_too_large",
    "undecodable",
    "encode",
];

impl PlayoutMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let running = IntGaugeVec::new(
            Opts::new(
                "chorus_playout_running",
                "Playbacks, hold music and announcements running or scheduled now, by kind.",
            ),
            &["kind"],
        )?;
        r.register(Box::new(running.clone()))?;
        for kind in JobKind::ALL {
            running.with_label_values(&[kind.as_str()]);
        }
        Ok(PlayoutMetrics {
            running,
            played: counter_vec(
                r,
                "chorus_playout_items_played_total",
                "Playlist items played into rooms (to their end or skipped by an operator), by format.",
                "format",
                &FORMATS,
            )?,
            skipped: counter_vec(
                r,
                "chorus_playout_items_skipped_total",
                "Playlist items skipped or cut short because of the file, by reason.",
                "reason",
                &SKIP_REASONS,
            )?,
        })
    }

    pub fn skip(&self, reason: &str) {
        self.skipped.with_label_values(&[reason]).inc();
    }
}
