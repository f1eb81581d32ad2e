//! The heartbeat (docs/architecture.md, "Cluster"): every `heartbeat_ms` a node writes its record, refreshes
//! and releases its room claims, hands its rooms over while draining, and (with rooms spanning nodes)
//! writes its shards and tells the roster task where the rooms span.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::CounterVec;
use signaling::Signaling;
use tracing::{info, warn};

use super::roster::RosterCommand;
use super::{choose, Cluster, NodeRecord};

/// One heartbeat's work, with what it remembers between beats.
pub(super) struct Heart {
    pub(super) cluster: Arc<Cluster>,
    pub(super) signaling: Arc<Signaling>,
    pub(super) cpu: WorkerCpu,
    /// The rooms this node hosted at the last beat: those gone since have their claims released.
    pub(super) hosted: HashSet<String>,
    /// The rooms whose shard this node wrote at the last beat: those no longer written are removed.
    pub(super) shards: HashSet<String>,
}

impl Heart {
    pub(super) async fn beat(&mut self) {
        let cluster = &self.cluster;
        let sizes: HashMap<String, usize> = self.signaling.room_sizes().into_iter().collect();
        let rooms: Vec<String> = sizes.keys().cloned().collect();
        let record = NodeRecord {
            id: cluster.id.clone(),
            url: cluster.url.clone(),
            admin_url: cluster.admin_url.clone(),
            region: cluster.region.clone(),
            draining: self.signaling.is_draining(),
            capacity_participants: cluster.config.capacity_participants,
            participants: self.signaling.participant_count() as u64,
            rooms: rooms.len() as u64,
            worker_cpu: self.cpu.sample(Instant::now()),
            workers: u32::try_from(self.cpu.workers).unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            trunk_addr: cluster.spanning.as_ref().map(|s| s.trunk_addr),
        };
        let was_up = cluster.metrics.redis_up();
        let written = cluster
            .store
            .heartbeat(&record, Duration::from_millis(cluster.config.node_ttl_ms))
            .await;
        cluster.observe(&written, "heartbeat");
        if written.is_err() {
            return;
        }
        if !was_up {
            info!(node = %cluster.id, "cluster: Redis reachable; node registered");
        }
        if record.draining && cluster.config.migrate_on_drain {
            self.migrate(&rooms).await;
        }
        // Rooms handed to another node are that node's claim now.
        let claimed: Vec<String> = rooms
            .iter()
            .filter(|room| !self.signaling.is_migrated(room))
            .cloned()
            .collect();
        let cluster = &self.cluster;
        let claim_ttl = Duration::from_millis(cluster.config.claim_ttl_ms);
        let mut refreshed = cluster
            .store
            .refresh(&claimed, &cluster.id, claim_ttl)
            .await;
        cluster.observe(&refreshed, "refresh");
        if let (Ok(conflicts), Some(spanning)) = (&mut refreshed, &cluster.spanning) {
            // A shard of another node's room is not a conflict; one whose claim came here is owned now.
            for room in &claimed {
                if spanning.is_opened(room) && !conflicts.contains(room) {
                    spanning.owned(room);
                }
            }
            conflicts.retain(|room| !spanning.is_opened(room));
        }
        if let Ok(conflicts) = &refreshed {
            if !conflicts.is_empty() {
                warn!(
                    rooms = ?conflicts,
                    "cluster: rooms hosted here are claimed by another live node; calls here go on"
                );
                cluster.metrics.claim_conflicts(conflicts.len());
            }
        }
        let now: HashSet<String> = rooms.into_iter().collect();
        let gone: Vec<String> = self.hosted.difference(&now).cloned().collect();
        if !gone.is_empty() {
            let released = cluster.store.release(&gone, &cluster.id).await;
            cluster.observe(&released, "release");
        }
        self.hosted = now;
        if let Ok(nodes) = cluster.nodes().await {
            cluster.metrics.totals(&nodes);
            if let Some(spanning) = &cluster.spanning {
                let read_at = Instant::now();
                let spanned = spanning
                    .beat(cluster, &self.signaling, &sizes, &nodes, &mut self.shards)
                    .await;
                cluster.observe(&spanned, "shards");
                if let (Ok(rooms), Some(roster)) = (spanned, &cluster.roster) {
                    // A full queue skips this beat's word; the next one says it again.
                    let _ = roster.try_send(RosterCommand::Beat { rooms, read_at });
                }
            }
        }
    }
}

impl Heart {
    /// A draining node hands each room it hosts to another node (chosen as for a new room, counting the
    /// rooms handed out so far) and has its sessions redirected there. Rooms that no node takes, or whose
    /// hand-over Redis did not confirm, stay and are tried again at the next beat.
    async fn migrate(&self, rooms: &[String]) {
        let cluster = &self.cluster;
        let pending: Vec<&String> = rooms
            .iter()
            .filter(|room| !self.signaling.is_migrated(room))
            .collect();
        if pending.is_empty() {
            return;
        }
        let Ok(mut nodes) = cluster.nodes().await else {
            return;
        };
        nodes.retain(|n| n.record.id != cluster.id);
        let claim_ttl = Duration::from_millis(cluster.config.claim_ttl_ms);
        let placed_ttl = Duration::from_millis(2 * cluster.config.heartbeat_ms);
        for room in pending {
            let Some(target) =
                choose(&nodes, &cluster.region, cluster.config.same_region).map(|n| n.id.clone())
            else {
                warn!(
                    node = %cluster.id,
                    "cluster: no other node takes rooms; the calls left here finish here"
                );
                return;
            };
            let released = cluster
                .store
                .release(std::slice::from_ref(room), &cluster.id)
                .await;
            cluster.observe(&released, "release");
            let placed = cluster
                .store
                .place(room, Some(&target), claim_ttl, placed_ttl)
                .await;
            cluster.observe(&placed, "place");
            // Another node's join may have placed it in between: the room goes wherever Redis says.
            let Ok(Some(owner)) = placed else {
                continue;
            };
            let Some(node) = nodes.iter_mut().find(|n| n.record.id == owner) else {
                // Placed back here (a race with this node's own heartbeat) or on a node not listed.
                continue;
            };
            node.placed += 1;
            if self.signaling.migrate_room(room, &node.record.url) {
                cluster.metrics.room_migrated();
                info!(%room, to = %owner, "cluster: room handed over; its participants are redirected");
            }
        }
    }
}

/// The media workers' busy share since the last sample, from `chorus_worker_busy_seconds_total`.
pub(super) struct WorkerCpu {
    busy: CounterVec,
    workers: usize,
    last: Option<(Instant, f64)>,
}

impl WorkerCpu {
    pub(super) fn new(busy: CounterVec, workers: usize) -> Self {
        WorkerCpu {
            busy,
            workers: workers.max(1),
            last: None,
        }
    }

    fn total(&self) -> f64 {
        self.busy
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    /// 0.0..=1.0: the workers' busy time over the time since the previous sample, per worker.
    fn sample(&mut self, now: Instant) -> f64 {
        let total = self.total();
        let share = match self.last {
            Some((then, before)) => {
                let elapsed = now.duration_since(then).as_secs_f64();
                if elapsed > 0.0 {
                    (total - before) / elapsed / self.workers as f64
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, total));
        share.clamp(0.0, 1.0)
    }
}
