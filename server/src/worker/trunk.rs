//! The workers' side of rooms larger than a worker (docs/architecture.md, "Rooms larger than a worker"):
//! placement publishes which rooms span which workers ([`Spans`]); each worker tells its core which of its
//! rooms are spanned, carries the core's [`Output::Trunk`](media_core::Output::Trunk) messages to the
//! room's other shards over their bounded inboxes (a full inbox is a counted drop, never a wait) and feeds
//! the messages arriving in its own inbox into its core, measuring each hop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use media_core::{CoreError, RoomId, TrunkMessage, TrunkStats};
use prometheus::local::LocalHistogram;
use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};
use tokio::sync::{mpsc, watch};

use crate::metrics::{counter, counter_vec};

/// The rooms on more than one worker of this process, each with its shards' worker indexes; index
/// `workers` (one past the last worker) is the node's trunk socket, listed for rooms with shards on other
/// nodes (`cluster::trunk_net`).
pub type Spans = Arc<HashMap<RoomId, Vec<usize>>>;

/// A trunk message on its way to another worker, with the instant the sending worker handed it over.
#[derive(Debug)]
pub struct Trunked {
    pub sent: Instant,
    pub message: TrunkMessage,
}

/// What a worker needs to exchange trunk messages: its inbox, every worker's inbox (by index, its own
/// included and never used), and the published spans.
pub struct TrunkSpec {
    pub inbox: mpsc::Receiver<Trunked>,
    pub peers: Vec<mpsc::Sender<Trunked>>,
    pub spans: watch::Receiver<Spans>,
}

/// The inboxes of `workers` workers, each bounded to `queue_packets` messages.
pub fn inboxes(
    workers: usize,
    queue_packets: usize,
) -> (Vec<mpsc::Sender<Trunked>>, Vec<mpsc::Receiver<Trunked>>) {
    (0..workers).map(|_| mpsc::channel(queue_packets)).unzip()
}

/// Hop latency buckets: from 5 µs (a wake-up of an idle worker) to 25 ms (a busy one).
const HOP_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025,
];

/// Trunk metrics (docs/metrics.md), all workers together.
pub struct TrunkMetrics {
    packets: IntCounterVec,
    expired: IntCounter,
    hop: Histogram,
}

impl TrunkMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let hop = Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "chorus_trunk_hop_seconds",
                "Time from a worker handing a trunk message to another shard's worker to that worker feeding it into its core, in seconds.",
            )
            .buckets(HOP_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(hop.clone()))?;
        Ok(TrunkMetrics {
            packets: counter_vec(
                registry,
                "chorus_trunk_packets_total",
                "Trunk packets between the shards of spanned rooms: sent to another worker, dropped because its queue was full, received and fed to the core, or refused there (no shard of the room here, or a speaker that is local there).",
                "result",
                &["sent", "dropped", "received", "no_room", "refused"],
            )?,
            expired: counter(
                registry,
                "chorus_trunk_remote_expired_total",
                "Remote participants removed after 2 s without a trunk packet (a lost withdrawal or a dead shard).",
            )?,
            hop,
        })
    }

    /// Publish a core's trunk counters as deltas.
    pub fn add_delta(&self, before: &TrunkStats, now: &TrunkStats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let label = |l: &str| self.packets.with_label_values(&[l]);
        label("received").inc_by(d(before.packets_in, now.packets_in));
        label("no_room").inc_by(d(before.no_room, now.no_room));
        label("refused").inc_by(d(before.refused, now.refused));
        self.expired.inc_by(d(before.expired, now.expired));
    }
}

/// What woke a worker's trunk.
pub(super) enum TrunkWake {
    /// A message from another shard's worker.
    Message(Trunked),
    /// Placement published other spans.
    Spans,
}

/// One worker's trunk: its inbox, where its spanned rooms' other shards are, and the counters it keeps
/// between publications.
pub(super) struct TrunkLink {
    index: usize,
    inbox: mpsc::Receiver<Trunked>,
    peers: Vec<mpsc::Sender<Trunked>>,
    spans: Option<watch::Receiver<Spans>>,
    current: Spans,
    sent: u64,
    dropped: u64,
    hop: LocalHistogram,
}

impl TrunkLink {
    pub(super) fn new(index: usize, spec: TrunkSpec, metrics: &TrunkMetrics) -> Self {
        let current = spec.spans.borrow().clone();
        TrunkLink {
            index,
            inbox: spec.inbox,
            peers: spec.peers,
            current,
            spans: Some(spec.spans),
            sent: 0,
            dropped: 0,
            hop: metrics.hop.local(),
        }
    }

    /// The next message in the inbox, or a change of the spans. The inbox never closes (every worker holds
    /// a sender of it, its own included); the spans stop changing once placement is gone.
    pub(super) async fn next(&mut self) -> TrunkWake {
        let TrunkLink { inbox, spans, .. } = self;
        let changed = async {
            match spans.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let alive = tokio::select! {
            Some(message) = inbox.recv() => return TrunkWake::Message(message),
            alive = changed => alive,
        };
        if !alive {
            self.spans = None;
        }
        TrunkWake::Spans
    }

    /// Take the published spans; returns the rooms this worker is a shard of.
    pub(super) fn refresh(&mut self) -> HashSet<RoomId> {
        if let Some(rx) = &mut self.spans {
            self.current = rx.borrow_and_update().clone();
        }
        self.current
            .iter()
            .filter(|(_, workers)| workers.contains(&self.index))
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// Hand one of the core's trunk messages to every other shard of its room.
    pub(super) fn send(&mut self, now: Instant, message: TrunkMessage) {
        let Some(workers) = self.current.get(message.room()) else {
            return;
        };
        for &w in workers.iter().filter(|&&w| w != self.index) {
            let Some(peer) = self.peers.get(w) else {
                continue;
            };
            let trunked = Trunked {
                sent: now,
                message: message.clone(),
            };
            match peer.try_send(trunked) {
                Ok(()) => self.sent += 1,
                // A full inbox: that worker is behind; a closed one: it stopped. The packet is lost either way.
                Err(_) => self.dropped += 1,
            }
        }
    }

    /// The hop of a message that arrived at `now`; whether the core refused it (counted there) is not an
    /// error of this worker.
    pub(super) fn arrived(&mut self, now: Instant, trunked: &Trunked) {
        self.hop
            .observe(now.saturating_duration_since(trunked.sent).as_secs_f64());
    }

    /// Publish what this worker counted since the last call.
    pub(super) fn publish(&mut self, metrics: &TrunkMetrics) {
        let label = |l: &str| metrics.packets.with_label_values(&[l]);
        label("sent").inc_by(std::mem::take(&mut self.sent));
        label("dropped").inc_by(std::mem::take(&mut self.dropped));
        self.hop.flush();
    }
}

impl super::Worker {
    /// A trunk message from another shard's worker into the core (refusals are counted by the core; a
    /// room whose shard here just ended is routine, anything else is logged at debug).
    pub(super) fn trunk_message(&mut self, now: Instant, trunked: Trunked) {
        self.trunk.arrived(now, &trunked);
        match self.core.push_trunk(now, trunked.message) {
            Ok(()) | Err(CoreError::UnknownRoom(_)) => {}
            Err(e) => tracing::debug!(error = %e, "trunk message refused"),
        }
    }
}
