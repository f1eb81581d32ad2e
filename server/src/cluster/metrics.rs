//! The cluster's metrics (docs/metrics.md, "Cluster"): registered only on a node with a `cluster` section.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::LiveNode;
use crate::metrics::{counter, counter_vec, gauge};

/// The `op` label values of `chorus_cluster_redis_errors_total`.
pub const OPS: [&str; 7] = [
    "heartbeat",
    "nodes",
    "place",
    "refresh",
    "release",
    "roster",
    "shards",
];

/// The `result` label values of `chorus_cluster_roster_received_total`.
pub const ROSTER_RESULTS: [&str; 5] = ["applied", "no_room", "collision", "malformed", "dropped"];

/// The `result` label values of `chorus_cluster_remote_actions_total`.
pub const REMOTE_ACTION_RESULTS: [&str; 4] = ["ok", "not_found", "refused", "unavailable"];

/// How a join of a room was located (`result` of `chorus_cluster_locate_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// The room exists on this node: no Redis asked.
    Hosted,
    /// This node owns the room now (it was placed here, or this node already owned it).
    Here,
    /// Another node owns it: `redirect`.
    Redirect,
    /// Another node owns it and holds `room_node_participants` of it: a shard of it opened here.
    Shard,
    /// Redis did not answer: `cluster_unavailable`.
    Unavailable,
    /// No live node takes new rooms: `cluster_unavailable`.
    NoCandidate,
}

impl Located {
    pub const ALL: [Located; 6] = [
        Located::Hosted,
        Located::Here,
        Located::Redirect,
        Located::Shard,
        Located::Unavailable,
        Located::NoCandidate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Located::Hosted => "hosted",
            Located::Here => "here",
            Located::Redirect => "redirect",
            Located::Shard => "shard",
            Located::Unavailable => "unavailable",
            Located::NoCandidate => "no_candidate",
        }
    }
}

#[derive(Clone)]
pub struct ClusterMetrics {
    redis_up: IntGauge,
    redis_errors: IntCounterVec,
    locate: IntCounterVec,
    nodes: IntGauge,
    claim_conflicts: IntCounter,
    migrated: IntCounter,
    participants: IntGauge,
    rooms: IntGauge,
    draining: IntGauge,
    forwarded: IntCounterVec,
    remote_actions: IntCounterVec,
    roster_received: IntCounterVec,
    roster_published: IntCounter,
    roster_resyncs: IntCounter,
}

impl ClusterMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let locate_results = Located::ALL.map(Located::as_str);
        let redis_up = gauge(
            registry,
            "chorus_cluster_redis_up",
            "1 while this node's last Redis command succeeded, else 0.",
        )?;
        let redis_errors = counter_vec(
            registry,
            "chorus_cluster_redis_errors_total",
            "Redis commands of the cluster that failed (unreachable, timed out), by operation.",
            "op",
            &OPS,
        )?;
        let locate = counter_vec(
            registry,
            "chorus_cluster_locate_total",
            "Joins of this node located in the cluster, by result.",
            "result",
            &locate_results,
        )?;
        let nodes = gauge(
            registry,
            "chorus_cluster_nodes",
            "Live nodes of the cluster (records not expired), as of this node's last heartbeat.",
        )?;
        let claim_conflicts = counter(
            registry,
            "chorus_cluster_claim_conflicts_total",
            "Rooms this node hosts whose claim another live node holds (seen at a heartbeat).",
        )?;
        let migrated = counter(
            registry,
            "chorus_cluster_rooms_migrated_total",
            "Rooms this node handed to another node while draining (their clients were redirected there).",
        )?;
        let participants = gauge(
            registry,
            "chorus_cluster_participants",
            "Participants on all live nodes of the cluster, from their records at this node's last heartbeat.",
        )?;
        let rooms = gauge(
            registry,
            "chorus_cluster_rooms",
            "Rooms on all live nodes of the cluster, from their records at this node's last heartbeat.",
        )?;
        let draining = gauge(
            registry,
            "chorus_cluster_nodes_draining",
            "Live nodes of the cluster that are draining, at this node's last heartbeat.",
        )?;
        let forwarded = counter_vec(
            registry,
            "chorus_cluster_admin_forwarded_total",
            "Admin requests for a room another node hosts or a participant another node holds, forwarded to it, by result.",
            "result",
            &["ok", "failed"],
        )?;
        let remote_actions = counter_vec(
            registry,
            "chorus_cluster_remote_actions_total",
            "Moderations of participants other nodes hold (rooms spanning nodes), sent to their node's admin API, by result.",
            "result",
            &REMOTE_ACTION_RESULTS,
        )?;
        let roster_received = counter_vec(
            registry,
            "chorus_cluster_roster_received_total",
            "Roster changes of other nodes' participants in rooms spanning nodes, by result.",
            "result",
            &ROSTER_RESULTS,
        )?;
        let roster_published = counter(
            registry,
            "chorus_cluster_roster_published_total",
            "Roster changes of this node's participants in rooms spanning nodes, published to the others.",
        )?;
        let roster_resyncs = counter(
            registry,
            "chorus_cluster_roster_resyncs_total",
            "Times this node wrote its rosters of rooms spanning nodes whole again after losing a change.",
        )?;
        Ok(ClusterMetrics {
            roster_received,
            roster_published,
            roster_resyncs,
            redis_up,
            redis_errors,
            locate,
            nodes,
            claim_conflicts,
            migrated,
            participants,
            rooms,
            draining,
            forwarded,
            remote_actions,
        })
    }

    /// A Redis command of `op` (one of [`OPS`]) failed.
    pub fn redis_failed(&self, op: &'static str) {
        self.redis_up.set(0);
        self.redis_errors.with_label_values(&[op]).inc();
    }

    /// A Redis command succeeded.
    pub fn redis_ok(&self) {
        self.redis_up.set(1);
    }

    pub fn redis_up(&self) -> bool {
        self.redis_up.get() == 1
    }

    pub fn located(&self, located: Located) {
        self.locate.with_label_values(&[located.as_str()]).inc();
    }

    /// The cluster's totals, from the live nodes' records.
    pub fn totals(&self, nodes: &[LiveNode]) {
        let sum = |f: fn(&LiveNode) -> u64| {
            i64::try_from(nodes.iter().map(f).sum::<u64>()).unwrap_or(i64::MAX)
        };
        self.nodes
            .set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
        self.participants.set(sum(|n| n.record.participants));
        self.rooms.set(sum(|n| n.record.rooms));
        self.draining.set(sum(|n| u64::from(n.record.draining)));
    }

    pub fn admin_forwarded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.forwarded.with_label_values(&[result]).inc();
    }

    /// A moderation sent to another node ended with `result` (one of [`REMOTE_ACTION_RESULTS`]).
    pub fn remote_action(&self, result: &'static str) {
        self.remote_actions.with_label_values(&[result]).inc();
    }

    pub fn claim_conflicts(&self, n: usize) {
        self.claim_conflicts.inc_by(n as u64);
    }

    pub fn room_migrated(&self) {
        self.migrated.inc();
    }

    /// A roster change from another node (or a read of its members), by result (one of
    /// [`ROSTER_RESULTS`]).
    pub fn roster_received(&self, result: &str) {
        self.roster_received.with_label_values(&[result]).inc();
    }

    pub fn roster_published(&self, n: usize) {
        self.roster_published.inc_by(n as u64);
    }

    pub fn roster_resynced(&self) {
        self.roster_resyncs.inc();
    }
}
