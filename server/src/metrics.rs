//! Media metrics: workers publish their core counters here as deltas every half second.

use media_core::{CoreStats, DropReason};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct MediaMetrics {
    pub datagrams_in: IntCounter,
    pub bytes_in: IntCounter,
    pub datagrams_out: IntCounter,
    pub bytes_out: IntCounter,
    pub rtp_in: IntCounter,
    pub rtp_forwarded: IntCounter,
    pub rtp_unrouted: IntCounter,
    pub drops: IntCounterVec,
    pub send_failed: IntCounter,
    pub events_dropped: IntCounter,
    pub rooms: IntGauge,
    pub participants: IntGauge,
}

impl MediaMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        }
        let drops = IntCounterVec::new(
            Opts::new(
                "chorus_packets_dropped_total",
                "Datagrams and RTP packets not used, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(drops.clone()))?;
        for r in DropReason::ALL {
            drops.with_label_values(&[r.as_str()]);
        }
        Ok(MediaMetrics {
            datagrams_in: counter(
                registry,
                "chorus_udp_datagrams_received_total",
                "UDP datagrams received on media sockets.",
            )?,
            bytes_in: counter(
                registry,
                "chorus_udp_received_bytes_total",
                "Bytes received on media sockets.",
            )?,
            datagrams_out: counter(
                registry,
                "chorus_udp_datagrams_sent_total",
                "UDP datagrams handed to media sockets.",
            )?,
            bytes_out: counter(
                registry,
                "chorus_udp_sent_bytes_total",
                "Bytes handed to media sockets.",
            )?,
            rtp_in: counter(
                registry,
                "chorus_rtp_packets_received_total",
                "Microphone RTP packets received.",
            )?,
            rtp_forwarded: counter(
                registry,
                "chorus_rtp_packets_forwarded_total",
                "RTP packets forwarded into subscriber slots.",
            )?,
            rtp_unrouted: counter(
                registry,
                "chorus_rtp_packets_unrouted_total",
                "Microphone packets no subscriber was routed to (e.g. alone in a room).",
            )?,
            drops,
            send_failed: counter(
                registry,
                "chorus_udp_send_errors_total",
                "Datagrams the socket refused to send.",
            )?,
            events_dropped: counter(
                registry,
                "chorus_media_events_dropped_total",
                "Media events dropped because a session's queue was full.",
            )?,
            rooms: gauge(registry, "chorus_rooms", "Rooms with media on this server.")?,
            participants: gauge(
                registry,
                "chorus_participants",
                "Participants with a media peer on this server.",
            )?,
        })
    }

    /// Add what changed between two snapshots of a worker's counters.
    pub fn add_delta(&self, before: &CoreStats, now: &CoreStats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.datagrams_in
            .inc_by(d(before.datagrams_in, now.datagrams_in));
        self.bytes_in.inc_by(d(before.bytes_in, now.bytes_in));
        self.datagrams_out
            .inc_by(d(before.datagrams_out, now.datagrams_out));
        self.bytes_out.inc_by(d(before.bytes_out, now.bytes_out));
        self.rtp_in.inc_by(d(before.rtp_in, now.rtp_in));
        self.rtp_forwarded
            .inc_by(d(before.rtp_forwarded, now.rtp_forwarded));
        self.rtp_unrouted
            .inc_by(d(before.rtp_unrouted, now.rtp_unrouted));
        for r in DropReason::ALL {
            let n = d(before.dropped(r), now.dropped(r));
            if n > 0 {
                self.drops.with_label_values(&[r.as_str()]).inc_by(n);
            }
        }
    }
}
