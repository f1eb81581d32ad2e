//! A run's report: the time series' points, the join, stream and server summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::{Snapshot, StreamReport};
use crate::floor::Floor;
use crate::stats::Summary;

use super::{JoinRecord, Mode};

/// One point of the time series (one per second).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub joined: usize,
    pub rx_pps: f64,
    pub loss_pct: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub mix_latency_p50_ms: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub tool_cpu_pct: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: Mode,
    pub rooms: usize,
    pub participants: usize,
    pub talkers_per_room: usize,
    pub talk_model: String,
    pub dtx: bool,
    pub ramp_rate: f64,
    pub duration_s: f64,
    pub drop_rtp: f64,
    pub seed: u64,
    pub floor: Option<Floor>,
    pub joins: JoinSummary,
    pub streams: StreamSummary,
    /// Forward mode: publisher send → subscriber receive, ms, steady state.
    pub latency_ms: Summary,
    /// Mix mode: chirp sent → chirp in the received mix, ms, codec delay removed, steady state.
    pub mix_latency_ms: Summary,
    /// The tool's own publishers: how late each frame was sent after its 20 ms grid time, ms, steady
    /// state. It reaches the server as jitter, so a mixer's jitter buffer is right to wait for it.
    pub send_late_ms: Summary,
    pub server: Option<ServerSummary>,
    /// CPU share of one core used by this tool in the steady state.
    pub tool_cpu_share: f64,
    /// Datagrams dropped on the tool's own full receive queue during the whole run (should be 0).
    pub tool_socket_drops: u64,
    /// RTP packets that participants not measured (`--measure-receivers`) counted without decrypting.
    pub rx_unmeasured: u64,
    pub series: Vec<Point>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JoinSummary {
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// One full error message per failure reason.
    pub failure_examples: BTreeMap<String, String>,
    pub first_audio_ms: Summary,
    /// WebSocket open → the server's answer: how much of a join is signaling (Chorus only).
    pub answer_ms: Summary,
    pub connect_ms: Summary,
    /// Wall time from the first join started to the last one done, s.
    pub ramp_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    pub count: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub loss_pct_per_stream: Summary,
    pub jitter_ms: Summary,
    /// RTP packets the publishers sent (after injected drops) and the drops injected.
    pub sent_rtp: u64,
    pub injected_drops: u64,
    /// Non-RTP datagrams (RTCP feedback, STUN consent, DTLS) the participants sent, per second of the run.
    pub sent_other_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    pub window_s: f64,
    pub cpu_s: f64,
    pub cpu_share_of_core: f64,
    /// Packets the subscribers received in the window (what the server forwarded or mixed and sent).
    pub packets_out: u64,
    pub cpu_us_per_packet: Option<f64>,
    pub ratio_to_floor: Option<f64>,
    /// Share of a core per connected participant (mix mode's figure of merit).
    pub cpu_share_per_participant: f64,
    pub participants_per_core: Option<f64>,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub rss_kb_per_participant: f64,
    /// RSS growth from the moment half the participants were started to the end, per participant who
    /// joined in that half: a participant's own cost, without the code pages the first joins fault in
    /// (a few MB once per process, which the whole-run figure spreads over the participants).
    pub rss_kb_per_participant_second_half: Option<f64>,
    /// Growth of the anonymous part of the RSS (`RssAnon`) over the whole run, per participant: what the
    /// participants cost in private memory, without the code pages of the binary that the first joins
    /// fault in (file pages, shared through the page cache), which `rss_kb_per_participant` spreads over
    /// them. `None` when /proc does not give `RssAnon`.
    pub anon_kb_per_participant: Option<f64>,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn join_summary(records: &[JoinRecord], ramp_s: f64) -> JoinSummary {
    let mut failures = BTreeMap::new();
    let mut failure_examples = BTreeMap::new();
    for r in records {
        if let Some(e) = &r.error {
            let (key, example) = match e.split_once('|') {
                Some((k, x)) => (k.to_owned(), x.to_owned()),
                None => (
                    e.split(':').take(2).collect::<Vec<_>>().join(":"),
                    e.clone(),
                ),
            };
            *failures.entry(key.clone()).or_insert(0) += 1;
            failure_examples.entry(key).or_insert(example);
        }
    }
    let mut first: Vec<f64> = records.iter().filter_map(|r| r.first_audio_ms).collect();
    let mut conn: Vec<f64> = records.iter().filter_map(|r| r.connect_ms).collect();
    let mut answer: Vec<f64> = records.iter().filter_map(|r| r.answer_ms).collect();
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    JoinSummary {
        attempted: records.len(),
        succeeded: records.len() - failed,
        failed,
        failures,
        failure_examples,
        first_audio_ms: Summary::of(&mut first),
        answer_ms: Summary::of(&mut answer),
        connect_ms: Summary::of(&mut conn),
        ramp_s,
    }
}

pub(super) fn stream_summary(
    streams: &[StreamReport],
    last: &Snapshot,
    run_s: f64,
) -> StreamSummary {
    let expected: u64 = streams.iter().map(|s| s.expected).sum();
    let received: u64 = streams.iter().map(|s| s.received).sum();
    let lost: u64 = streams.iter().map(|s| s.lost).sum();
    let mut per: Vec<f64> = streams
        .iter()
        .map(|s| 100.0 * s.lost as f64 / s.expected.max(1) as f64)
        .collect();
    let mut jit: Vec<f64> = streams.iter().map(|s| s.jitter_ms).collect();
    StreamSummary {
        count: streams.len(),
        expected,
        received,
        lost,
        loss_pct: 100.0 * lost as f64 / expected.max(1) as f64,
        loss_pct_per_stream: Summary::of(&mut per),
        jitter_ms: Summary::of(&mut jit),
        sent_rtp: last.tx_rtp,
        injected_drops: last.injected_drops,
        sent_other_per_s: last.tx_other as f64 / run_s.max(1e-3),
    }
}
