//! Media and server metrics (docs/metrics.md lists every one). Workers publish their core counters here
//! as deltas every half second, feed the core's RTT / jitter / jitter-buffer samples into histograms, and
//! time their own loop (forwarding latency, mixer ticks, busy time). No per-room or per-participant labels:
//! the only label with more than a handful of values is `worker`, bounded by the core count.

use media_core::{CoreStats, DropReason, PathMove, Samples};
use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// Forwarding latency buckets: from 10 µs (a datagram forwarded within one receive batch) to 25 ms.
const FORWARDING_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05,
];
/// Receive delay buckets: from 10 µs (a worker waiting for its socket) to 1 s, past the 200 ms after which
/// waiting RTP is shed (`media.stale_rtp_ms`), so a worker falling behind shows before and while it sheds.
const RECEIVE_DELAY_BUCKETS: [f64; 15] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.2, 1.0,
];
/// Mixer pass buckets: a 20 ms tick must finish well inside its period.
const MIXER_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02,
    0.05,
];
const RTT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
];
const JITTER_BUCKETS: [f64; 10] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2,
];
const JITTER_BUFFER_BUCKETS: [f64; 10] = [0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5];

pub struct MediaMetrics {
    pub datagrams_in: IntCounter,
    pub bytes_in: IntCounter,
    pub datagrams_out: IntCounter,
    pub bytes_out: IntCounter,
    pub rtp_in: IntCounter,
    pub rtp_forwarded: IntCounter,
    pub rtp_red_in: IntCounter,
    pub rtp_fec_in: IntCounter,
    pub rtp_levels_measured: IntCounter,
    pub rtp_red_forwarded: IntCounter,
    pub rtp_red_added: IntCounter,
    pub rtp_unrouted: IntCounter,
    pub slot_switches: IntCounter,
    pub slot_retimes: IntCounter,
    pub drops: IntCounterVec,
    pub send_failed: IntCounter,
    pub events_dropped: IntCounter,
    pub nacks_received: IntCounter,
    pub nacks_sent: IntCounter,
    pub path_moves: IntCounterVec,
    pub rtt: Histogram,
    pub jitter: Histogram,
    pub forwarding_latency: Histogram,
    pub receive_delay: Histogram,
    pub mixer_ticks: IntCounter,
    pub mixer_ticks_late: IntCounter,
    pub mixer_ticks_skipped: IntCounter,
    pub mixer_grid_moves: IntCounter,
    pub mixer_tick_duration: Histogram,
    pub mixer_frames_decoded: IntCounter,
    pub mixer_frames_encoded: IntCounter,
    pub mixer_packets_sent: IntCounter,
    pub mixer_fec_packets_sent: IntCounter,
    pub jitter_buffer_delay: Histogram,
    pub concealed: IntCounterVec,
    pub jitter_buffer_discarded: IntCounterVec,
    pub jitter_buffer_lost: IntCounter,
    pub jitter_buffer_delay_peaks: IntCounter,
    pub worker_rooms: IntGaugeVec,
    pub worker_participants: IntGaugeVec,
    pub worker_busy: CounterVec,
    pub worker_core: CounterVec,
    pub worker_socket_yields: IntCounterVec,
    /// Open ICE-TCP connections (all workers).
    pub tcp_connections: IntGauge,
    pub tcp_closed: IntCounterVec,
    /// Spanned rooms' trunks between workers.
    pub trunk: crate::worker::trunk::TrunkMetrics,
}

pub(crate) fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

pub(crate) fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

pub(crate) fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    r.register(Box::new(c.clone()))?;
    for v in values {
        c.with_label_values(&[*v]);
    }
    Ok(c)
}

/// A counter with two labels, every pair of `firsts` × `seconds` exposed from the start (at 0).
pub(crate) fn counter_vec2(
    r: &Registry,
    name: &str,
    help: &str,
    labels: [&str; 2],
    firsts: &[&str],
    seconds: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &labels)?;
    r.register(Box::new(c.clone()))?;
    for a in firsts {
        for b in seconds {
            c.with_label_values(&[*a, *b]);
        }
    }
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl MediaMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let drop_reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let move_causes: Vec<&str> = PathMove::ALL.iter().map(|m| m.as_str()).collect();
        let tcp_reasons: Vec<&str> = crate::tcp::CloseReason::COUNTED
            .iter()
            .map(|r| r.as_str())
            .collect();
        let worker_rooms = IntGaugeVec::new(
            Opts::new(
                "chorus_worker_rooms",
                "Rooms with media on each media worker.",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_rooms.clone()))?;
        let worker_participants = IntGaugeVec::new(
            Opts::new(
                "chorus_worker_participants",
                "Participants with a media peer on each media worker.",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_participants.clone()))?;
        let worker_busy = CounterVec::new(
            Opts::new(
                "chorus_worker_busy_seconds_total",
                "Time each media worker spent handling input rather than waiting, in seconds (rate = load, 1.0 = one core saturated).",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_busy.clone()))?;
        let worker_core = CounterVec::new(
            Opts::new(
                "chorus_worker_core_seconds_total",
                "Time each media worker spent in its media core on datagrams read from its UDP sockets (decrypting, routing, fanning out and sealing; not the system calls), in seconds.",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_core.clone()))?;
        let worker_socket_yields = IntCounterVec::new(
            Opts::new(
                "chorus_worker_socket_yields_total",
                "Times a media worker's sockets, full at every read for 5 ms, let its taps, ingest sources, ICE-TCP events and then its core's timeout go first (a rising rate: the worker is given more than its core).",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(worker_socket_yields.clone()))?;
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
            rtp_red_in: counter(
                registry,
                "chorus_rtp_red_packets_received_total",
                "Microphone RTP packets received as RED (RFC 2198 redundancy).",
            )?,
            rtp_fec_in: counter(
                registry,
                "chorus_rtp_fec_packets_received_total",
                "Microphone RTP packets whose Opus carries in-band FEC for the packet before it.",
            )?,
            rtp_levels_measured: counter(
                registry,
                "chorus_rtp_levels_measured_total",
                "Microphone RTP packets without an audio level whose level was measured by decoding them.",
            )?,
            rtp_red_forwarded: counter(
                registry,
                "chorus_rtp_red_packets_forwarded_total",
                "RTP packets forwarded into subscriber slots as RED (RFC 2198 redundancy).",
            )?,
            rtp_red_added: counter(
                registry,
                "chorus_rtp_red_packets_added_total",
                "RTP packets forwarded as RED with redundancy the server added from its copies of the speaker's previous frames: a plain Opus speaker's (none after a pause), or a RED speaker's that carried less than the subscriber's depth.",
            )?,
            rtp_unrouted: counter(
                registry,
                "chorus_rtp_packets_unrouted_total",
                "Microphone packets no subscriber was routed to (e.g. alone in a room).",
            )?,
            slot_switches: counter(
                registry,
                "chorus_rtp_slot_switches_total",
                "Subscribers' slot streams that went on with another speaker (or a restarted stream).",
            )?,
            slot_retimes: counter(
                registry,
                "chorus_rtp_slot_retimes_total",
                "Subscribers' slot streams re-timed: the speaker's timestamps fell over 1 s behind the wall clock.",
            )?,
            drops: counter_vec(
                registry,
                "chorus_packets_dropped_total",
                "Datagrams and RTP packets not used, by reason.",
                "reason",
                &drop_reasons,
            )?,
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
            nacks_received: counter(
                registry,
                "chorus_rtcp_nacks_received_total",
                "RTCP NACKs received from subscribers (retransmission requests for the server's streams).",
            )?,
            path_moves: counter_vec(
                registry,
                "chorus_media_path_moves_total",
                "Peers whose media moved to another path of their client, by cause.",
                "cause",
                &move_causes,
            )?,
            nacks_sent: counter(
                registry,
                "chorus_rtcp_nacks_sent_total",
                "RTCP NACKs sent to publishers for packets the server did not receive.",
            )?,
            rtt: histogram(
                registry,
                "chorus_rtt_seconds",
                "Round-trip time between the server and its peers, from RTCP reports, in seconds.",
                &RTT_BUCKETS,
            )?,
            jitter: histogram(
                registry,
                "chorus_jitter_seconds",
                "Interarrival jitter of publishers' audio streams (RFC 3550), in seconds.",
                &JITTER_BUCKETS,
            )?,
            forwarding_latency: histogram(
                registry,
                "chorus_forwarding_latency_seconds",
                "Time from a receive batch returning from the socket to the datagrams it produced being handed to the socket, per datagram sent, in seconds.",
                &FORWARDING_BUCKETS,
            )?,
            receive_delay: histogram(
                registry,
                "chorus_udp_receive_delay_seconds",
                "Time each UDP datagram waited in a media worker's socket receive queue, from the kernel's receive time to the worker reading it, in seconds.",
                &RECEIVE_DELAY_BUCKETS,
            )?,
            mixer_ticks: counter(
                registry,
                "chorus_mixer_ticks_total",
                "Mixer ticks run (one per mixed room every 20 ms).",
            )?,
            mixer_ticks_late: counter(
                registry,
                "chorus_mixer_ticks_late_total",
                "Mixer ticks that ran more than one period after their deadline (missed deadlines, caught up).",
            )?,
            mixer_ticks_skipped: counter(
                registry,
                "chorus_mixer_ticks_skipped_total",
                "Mixer ticks given up because the worker was more than 200 ms behind.",
            )?,
            mixer_grid_moves: counter(
                registry,
                "chorus_mixer_grid_moves_total",
                "Times a ticking mixed room moved its 20 ms tick grid earlier to its talkers' arrival phase.",
            )?,
            mixer_tick_duration: histogram(
                registry,
                "chorus_mixer_tick_duration_seconds",
                "Wall time of a worker's timeout handling in which mixer ticks ran (all mixed rooms due), in seconds.",
                &MIXER_BUCKETS,
            )?,
            mixer_frames_decoded: counter(
                registry,
                "chorus_mixer_frames_decoded_total",
                "Opus frames decoded from participants of mixed rooms.",
            )?,
            mixer_frames_encoded: counter(
                registry,
                "chorus_mixer_frames_encoded_total",
                "Opus frames encoded by mixers.",
            )?,
            mixer_packets_sent: counter(
                registry,
                "chorus_mixer_packets_sent_total",
                "Mixed RTP packets sent to listeners.",
            )?,
            mixer_fec_packets_sent: counter(
                registry,
                "chorus_mixer_fec_packets_sent_total",
                "Mixed RTP packets sent to listeners that carried Opus in-band FEC (LBRR): only listeners whose receiver reports state loss hear an encode that codes it.",
            )?,
            jitter_buffer_delay: histogram(
                registry,
                "chorus_jitter_buffer_delay_seconds",
                "Target delay of mixed rooms' jitter buffers, sampled once per second per input, in seconds.",
                &JITTER_BUFFER_BUCKETS,
            )?,
            concealed: counter_vec(
                registry,
                "chorus_jitter_buffer_concealed_frames_total",
                "Missing frames of mixed inputs concealed, by method: red (recovered from RFC 2198 redundancy), fec (recovered from in-band FEC) or plc (Opus packet-loss concealment).",
                "method",
                &["fec", "plc"],
            )?,
            jitter_buffer_discarded: counter_vec(
                registry,
                "chorus_jitter_buffer_discarded_packets_total",
                "Packets of mixed inputs the jitter buffer discarded, by reason: late (after their playout time) or duplicate.",
                "reason",
                &["late", "duplicate"],
            )?,
            jitter_buffer_lost: counter(
                registry,
                "chorus_jitter_buffer_lost_frames_total",
                "Frames of mixed inputs never received by their playout time (before concealment).",
            )?,
            jitter_buffer_delay_peaks: counter(
                registry,
                "chorus_jitter_buffer_delay_peaks_total",
                "Delay peaks of mixed inputs: stalls their 95th percentile does not cover; each raises that input's jitter-buffer target to cover it for 20 s.",
            )?,
            worker_rooms,
            worker_participants,
            worker_busy,
            worker_core,
            worker_socket_yields,
            tcp_connections: {
                let g = IntGauge::new(
                    "chorus_tcp_connections",
                    "Open ICE-TCP media connections (all workers).",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            tcp_closed: counter_vec(
                registry,
                "chorus_tcp_connections_closed_total",
                "ICE-TCP media connections closed, by reason: peer_closed, bad_frame (a frame length of 0 or above a datagram), slow_reader (its write queue was full), no_stun (no verified STUN in time: idle, half-open or not ICE), idle (silent after verification), limit (refused: the worker's maximum was open), error.",
                "reason",
                &tcp_reasons,
            )?,
            trunk: crate::worker::trunk::TrunkMetrics::new(registry)?,
        })
    }

    /// Count an ICE-TCP connection closed (or refused) for `reason`.
    pub fn tcp_closed(&self, reason: crate::tcp::CloseReason) {
        self.tcp_closed.with_label_values(&[reason.as_str()]).inc();
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
        self.rtp_red_in.inc_by(d(before.rtp_red_in, now.rtp_red_in));
        self.rtp_fec_in.inc_by(d(before.rtp_fec_in, now.rtp_fec_in));
        self.rtp_levels_measured
            .inc_by(d(before.rtp_levels_measured, now.rtp_levels_measured));
        self.rtp_red_forwarded
            .inc_by(d(before.rtp_red_forwarded, now.rtp_red_forwarded));
        self.rtp_red_added
            .inc_by(d(before.rtp_red_added, now.rtp_red_added));
        self.rtp_unrouted
            .inc_by(d(before.rtp_unrouted, now.rtp_unrouted));
        self.slot_switches
            .inc_by(d(before.slot_switches, now.slot_switches));
        self.slot_retimes
            .inc_by(d(before.slot_retimes, now.slot_retimes));
        for r in DropReason::ALL {
            let n = d(before.dropped(r), now.dropped(r));
            if n > 0 {
                self.drops.with_label_values(&[r.as_str()]).inc_by(n);
            }
        }
        self.nacks_received
            .inc_by(d(before.nacks_received, now.nacks_received));
        self.nacks_sent.inc_by(d(before.nacks_sent, now.nacks_sent));
        for m in PathMove::ALL {
            let n = d(before.path_moves(m), now.path_moves(m));
            if n > 0 {
                self.path_moves.with_label_values(&[m.as_str()]).inc_by(n);
            }
        }
        let (b, n) = (&before.mix, &now.mix);
        self.mixer_ticks.inc_by(d(b.ticks, n.ticks));
        self.mixer_ticks_late.inc_by(d(b.ticks_late, n.ticks_late));
        self.mixer_ticks_skipped
            .inc_by(d(b.ticks_skipped, n.ticks_skipped));
        self.mixer_grid_moves.inc_by(d(b.grid_moves, n.grid_moves));
        self.mixer_frames_decoded
            .inc_by(d(b.frames_decoded, n.frames_decoded));
        self.mixer_frames_encoded
            .inc_by(d(b.frames_encoded, n.frames_encoded));
        self.mixer_packets_sent
            .inc_by(d(b.packets_sent, n.packets_sent));
        self.mixer_fec_packets_sent
            .inc_by(d(b.fec_packets_sent, n.fec_packets_sent));
        self.concealed
            .with_label_values(&["red"])
            .inc_by(d(b.recovered_red, n.recovered_red));
        self.concealed
            .with_label_values(&["fec"])
            .inc_by(d(b.concealed_fec, n.concealed_fec));
        self.concealed
            .with_label_values(&["plc"])
            .inc_by(d(b.concealed_plc, n.concealed_plc));
        self.jitter_buffer_discarded
            .with_label_values(&["late"])
            .inc_by(d(b.packets_late, n.packets_late));
        self.jitter_buffer_discarded
            .with_label_values(&["duplicate"])
            .inc_by(d(b.packets_duplicate, n.packets_duplicate));
        self.jitter_buffer_lost
            .inc_by(d(b.packets_lost, n.packets_lost));
        self.jitter_buffer_delay_peaks
            .inc_by(d(b.jitter_delay_peaks, n.jitter_delay_peaks));
        self.trunk.add_delta(&before.trunk, &now.trunk);
    }

    /// Feed a core's observations into the histograms.
    pub fn observe(&self, samples: &Samples) {
        for &v in &samples.rtt_seconds {
            self.rtt.observe(v);
        }
        for &v in &samples.jitter_seconds {
            self.jitter.observe(v);
        }
        for &v in &samples.jitter_buffer_delay_seconds {
            self.jitter_buffer_delay.observe(v);
        }
    }
}

/// Server-wide metrics that belong to no worker: build, drain state, admin API, webhooks.
#[derive(Clone)]
pub struct ServerMetrics {
    pub draining: IntGauge,
    pub admin_requests: IntCounterVec,
    pub webhook_attempts: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_duration: HistogramVec,
    pub webhooks_in_flight: IntGauge,
    pub webhook_retry_wait: Counter,
    /// Open HTTP connections (WebSockets included).
    pub http_connections: IntGauge,
    /// HTTP connection limits hit, by reason ([`CONNECTION_LIMITS`]).
    pub http_connection_limits: IntCounterVec,
}

/// The `reason` label values of `chorus_http_connection_limits_total`.
pub const CONNECTION_LIMITS: [&str; 4] = [
    "max_connections",
    "max_connections_per_ip",
    "header_timeout",
    "accept_error",
];

/// The `result` label values of `chorus_admin_requests_total`.
pub const ADMIN_RESULTS: [&str; 8] = [
    "ok",
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "unavailable",
    "internal",
];

impl ServerMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let build = IntGaugeVec::new(
            Opts::new(
                "chorus_build_info",
                "Always 1; the labels name the running build.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let draining = IntGauge::new(
            "chorus_draining",
            "1 while the server drains (refuses joins, waits for calls to end), else 0.",
        )?;
        registry.register(Box::new(draining.clone()))?;
        let webhook_duration = HistogramVec::new(
            HistogramOpts::new(
                "chorus_webhook_request_duration_seconds",
                "Duration of webhook HTTP requests (one attempt), by outcome, in seconds.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["outcome"],
        )?;
        registry.register(Box::new(webhook_duration.clone()))?;
        let webhooks_in_flight = IntGauge::new(
            "chorus_webhooks_in_flight",
            "Webhook deliveries under way (including those waiting to retry).",
        )?;
        registry.register(Box::new(webhooks_in_flight.clone()))?;
        let webhook_retry_wait = Counter::new(
            "chorus_webhook_retry_wait_seconds_total",
            "Time webhook deliveries spent waiting between attempts (backoff), in seconds.",
        )?;
        registry.register(Box::new(webhook_retry_wait.clone()))?;
        let outcomes = ["ok", "http_error", "transport_error"];
        for o in outcomes {
            webhook_duration.with_label_values(&[o]);
        }
        Ok(ServerMetrics {
            draining,
            admin_requests: counter_vec(
                registry,
                "chorus_admin_requests_total",
                "Admin API requests, by result.",
                "result",
                &ADMIN_RESULTS,
            )?,
            webhook_attempts: counter_vec(
                registry,
                "chorus_webhook_attempts_total",
                "Webhook HTTP requests, by outcome: ok (2xx), http_error (another status) or transport_error (no response).",
                "outcome",
                &outcomes,
            )?,
            webhook_deliveries: counter_vec(
                registry,
                "chorus_webhook_deliveries_total",
                "Webhook events, by final result: delivered, failed (attempts exhausted or refused with 4xx).",
                "result",
                &["delivered", "failed"],
            )?,
            webhook_duration,
            webhooks_in_flight,
            webhook_retry_wait,
            http_connections: {
                let gauge = IntGauge::new(
                    "chorus_http_connections",
                    "Open HTTP connections, WebSockets included.",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            http_connection_limits: counter_vec(
                registry,
                "chorus_http_connection_limits_total",
                "HTTP connection limits hit, by reason: max_connections and max_connections_per_ip (connection refused with 503), header_timeout (request headers not complete within http.header_timeout_ms; closed), accept_error (accept failed, e.g. out of file descriptors).",
                "reason",
                &CONNECTION_LIMITS,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_samples_reach_the_registry() {
        let registry = Registry::new();
        let m = MediaMetrics::new(&registry).expect("registers once");
        ServerMetrics::new(&registry).expect("no name clashes");
        let mut now = CoreStats {
            nacks_received: 3,
            slot_retimes: 1,
            ..CoreStats::default()
        };
        now.mix.concealed_plc = 2;
        now.mix.recovered_red = 3;
        now.path_moved(PathMove::Silence);
        m.add_delta(&CoreStats::default(), &now);
        assert_eq!(m.path_moves.with_label_values(&["silence"]).get(), 1);
        assert_eq!(m.path_moves.with_label_values(&["nomination"]).get(), 0);
        assert_eq!(m.nacks_received.get(), 3);
        assert_eq!((m.slot_retimes.get(), m.slot_switches.get()), (1, 0));
        assert_eq!(m.concealed.with_label_values(&["plc"]).get(), 2);
        assert_eq!(m.concealed.with_label_values(&["red"]).get(), 3);
        m.observe(&Samples {
            rtt_seconds: vec![0.02, 0.04],
            jitter_seconds: vec![0.003],
            jitter_buffer_delay_seconds: vec![],
        });
        assert_eq!(m.rtt.get_sample_count(), 2);
        assert_eq!(m.jitter.get_sample_count(), 1);
    }
}

/// Listener streams (docs/broadcast.md).
#[derive(Clone)]
pub struct BroadcastMetrics {
    pub listeners: IntGauge,
    pub mounts: IntGauge,
    pub requests: IntCounterVec,
    pub listeners_dropped: IntCounterVec,
    pub bytes: IntCounter,
    pub pages: IntCounter,
    pub frames_dropped: IntCounter,
    pub relays: IntCounterVec,
}

/// The `result` label values of `chorus_broadcast_relays_total`.
pub const RELAY_RESULTS: [&str; 7] = [
    "started",
    "ended",
    "no_owner",
    "cluster_unavailable",
    "upstream_failed",
    "bad_stream",
    "no_key",
];

/// The `result` label values of `chorus_broadcast_requests_total`.
pub const BROADCAST_RESULTS: [&str; 4] = ["accepted", "unauthorized", "not_found", "over_capacity"];

impl BroadcastMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(BroadcastMetrics {
            listeners: gauge(
                registry,
                "chorus_broadcast_listeners",
                "Listeners connected to broadcast mounts now.",
            )?,
            mounts: gauge(
                registry,
                "chorus_broadcast_mounts",
                "Mounts with listeners now (rooms whose mix is tapped and paged).",
            )?,
            requests: counter_vec(
                registry,
                "chorus_broadcast_requests_total",
                "Listener requests for a mount, by result.",
                "result",
                &BROADCAST_RESULTS,
            )?,
            listeners_dropped: counter_vec(
                registry,
                "chorus_broadcast_listeners_dropped_total",
                "Listeners the server closed, by reason: slow (fell a whole queue behind live).",
                "reason",
                &["slow"],
            )?,
            bytes: counter(
                registry,
                "chorus_broadcast_bytes_total",
                "Bytes handed to listener connections (Ogg pages and ICY metadata).",
            )?,
            pages: counter(
                registry,
                "chorus_broadcast_pages_total",
                "Ogg pages published, over all mounts (each once, whatever the listeners).",
            )?,
            frames_dropped: counter(
                registry,
                "chorus_broadcast_frames_dropped_total",
                "Mix frames lost between the media workers and the pager (its queue was full).",
            )?,
            relays: counter_vec(
                registry,
                "chorus_broadcast_relays_total",
                "Relays of another node's mount for listeners here (cluster), by result: started, ended, or why one could not start.",
                "result",
                &RELAY_RESULTS,
            )?,
        })
    }
}
