//! A cluster of Chorus nodes sharing rooms through Redis (docs/architecture.md, "Cluster").
//!
//! Each node writes its record (URL, region, capacity, load) every heartbeat with a TTL, so a node that
//! stops is gone within `node_ttl_ms`; a room is owned by the node whose claim its key holds, taken
//! atomically by a Lua script on the first join anywhere (the least loaded live node, preferably in the
//! region of the node the client reached) and refreshed by the owner while the room exists there. A join
//! reaching another node is answered with `redirect` to the owner's URL ([`signaling::locator`]); a join
//! of a room this node hosts never waits for Redis, so calls and their joins go on while Redis is down.
//!
//! With `trunk_listen`, a room whose owner holds `room_node_participants` of it spans nodes instead: a join
//! reaching another node opens a shard there (`span`), and the shards exchange trunk messages as
//! authenticated UDP datagrams (`trunk_wire`, `trunk_net`), and the room has one roster and one set of
//! settings (`roster`).
//!
//! `heart` (the heartbeat), `config` (the `[cluster]` section), `store` (keys, records, the scripts),
//! `metrics`, `admin` (the cluster-wide node list), `remote` (moderations of other nodes' participants).

pub mod admin;
pub mod config;
mod heart;
mod metrics;
mod remote;
mod roster;
mod span;
mod store;
pub mod trunk_net;
pub mod trunk_wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::CounterVec;
use signaling::locator::{LocateError, Locating, Location, RoomLocator};
use signaling::Signaling;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use config::ClusterConfig;
use heart::{Heart, WorkerCpu};
use metrics::{ClusterMetrics, Located};
use roster::RosterCommand;
pub use span::Spanning;
pub use store::{LiveNode, NodeRecord};
use store::{Store, StoreError};

/// This node's part in the cluster: its identity, the shared state, its metrics.
pub struct Cluster {
    id: String,
    url: String,
    admin_url: String,
    region: String,
    config: ClusterConfig,
    store: Store,
    metrics: ClusterMetrics,
    /// For admin requests forwarded to other nodes.
    http: reqwest::Client,
    /// Rooms spanning nodes (with `trunk_listen`).
    spanning: Option<Spanning>,
    /// To the roster task of rooms spanning nodes (with `spanning`).
    roster: Option<mpsc::Sender<RosterCommand>>,
    /// The roster task's end of `roster`, until [`Cluster::spawn`] starts it.
    roster_commands: std::sync::Mutex<Option<mpsc::Receiver<RosterCommand>>>,
}

impl Cluster {
    /// Joins the cluster of `config` (which must have a `redis_url`) as the node serving signaling on
    /// `http_addr`. Connects lazily: a node starts while Redis is down and joins when it returns.
    pub fn new(
        config: &ClusterConfig,
        http_addr: SocketAddr,
        registry: &prometheus::Registry,
        trunk: Option<(Arc<crate::placement::Placement>, trunk_net::TrunkParts)>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let redis_url = config
            .redis_url
            .as_deref()
            .context("cluster.redis_url is not set")?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let store = Store::new(redis_url, &config.key_prefix, timeout)
            .context("cluster.redis_url is not a usable Redis URL")?;
        let id = match &config.node_id {
            Some(id) => id.clone(),
            None => random_node_id()?,
        };
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("ws://{http_addr}/ws"));
        let admin_url = config
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}"));
        info!(node = %id, %url, region = %config.region, "cluster node (Redis shared state)");
        let trunk_metrics = trunk_net::TrunkNetMetrics::new(registry)?;
        let spanning = match (trunk, config.trunk_listen, &config.trunk_secret) {
            (Some((placement, parts)), Some(listen), Some(secret)) => {
                let key = trunk_wire::WireKey::derive(secret.as_bytes());
                let mut boot = [0u8; 8];
                aws_lc_rs::rand::fill(&mut boot)
                    .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
                let (addr, remote) = trunk_net::start(
                    listen,
                    config.trunk_public_addr,
                    trunk_wire::Sealer::new(key.clone(), &id, u64::from_be_bytes(boot)),
                    trunk_wire::Opener::new(key),
                    parts,
                    trunk_metrics,
                )?;
                Some(Spanning::new(
                    placement,
                    remote,
                    addr,
                    config.room_node_participants,
                    // A join located here is admitted well within two heartbeats.
                    Duration::from_millis(2 * config.heartbeat_ms),
                ))
            }
            _ => None,
        };
        // A join's opened shard and a heartbeat's rooms: a few at once.
        let (roster, roster_commands) = match spanning {
            Some(_) => {
                let (tx, rx) = mpsc::channel(64);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        Ok(Arc::new(Cluster {
            roster,
            roster_commands: std::sync::Mutex::new(roster_commands),
            id,
            url,
            admin_url,
            region: config.region.clone(),
            config: config.clone(),
            store,
            metrics: ClusterMetrics::new(registry)?,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("the HTTP client for forwarded admin requests")?,
            spanning,
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every live node of the cluster (this one included once it has written its record), by id.
    pub async fn nodes(&self) -> Result<Vec<LiveNode>, StoreError> {
        let nodes = self.store.nodes().await;
        self.observe(&nodes, "nodes");
        nodes
    }

    fn observe<T>(&self, result: &Result<T, StoreError>, op: &'static str) {
        match result {
            Ok(_) => self.metrics.redis_ok(),
            Err(error) => {
                if self.metrics.redis_up() {
                    warn!(%error, op, "cluster: Redis unreachable; rooms hosted here go on");
                }
                self.metrics.redis_failed(op);
            }
        }
    }

    /// The node a join of a room this node does not host goes to: the room's live owner, or the node it
    /// is placed on now.
    async fn place(&self, room: &str) -> Result<(Location, Located), LocateError> {
        let nodes = self.nodes().await.map_err(|_| LocateError::Unreachable)?;
        let candidate = choose(&nodes, &self.region, self.config.same_region);
        let placed = self
            .store
            .place(
                room,
                candidate.map(|n| n.id.as_str()),
                Duration::from_millis(self.config.claim_ttl_ms),
                // Until the node's next heartbeat counts the room in its record.
                Duration::from_millis(2 * self.config.heartbeat_ms),
            )
            .await;
        self.observe(&placed, "place");
        let owner = placed
            .map_err(|_| LocateError::Unreachable)?
            .ok_or(LocateError::NoCandidate)?;
        if owner == self.id {
            return Ok((Location::Here, Located::Here));
        }
        // A shard opens only on a node that takes rooms (not draining, below capacity).
        let open_here = nodes
            .iter()
            .any(|n| n.record.id == self.id && n.record.takes_rooms());
        if let (Some(spanning), true) = (&self.spanning, open_here) {
            let ttl = Duration::from_millis(self.config.claim_ttl_ms);
            let opened = spanning
                .open(&self.store, &self.id, ttl, room, &owner, &nodes)
                .await;
            self.observe(&opened, "shards");
            if let Ok(Some(seed)) = opened {
                info!(%room, %owner, "room spans this node: a shard of it opened here");
                if let Some(roster) = &self.roster {
                    // The roster task is never far behind: a full queue leaves this to the heartbeat.
                    let _ = roster.try_send(RosterCommand::Opened(room.to_owned()));
                }
                return Ok((Location::Shard(seed), Located::Shard));
            }
        }
        let redirect = |url: String| -> Result<(Location, Located), LocateError> {
            Ok((Location::Elsewhere { url }, Located::Redirect))
        };
        match nodes.iter().find(|n| n.record.id == owner) {
            Some(node) => redirect(node.record.url.clone()),
            // The owner wrote its first record after the list was read: read it again.
            None => {
                let nodes = self.nodes().await.map_err(|_| LocateError::Unreachable)?;
                let node = nodes
                    .into_iter()
                    .find(|n| n.record.id == owner)
                    .ok_or(LocateError::Unreachable)?;
                redirect(node.record.url)
            }
        }
    }

    /// The live node other than this one that owns `room`, if any (a room this node does not host).
    pub async fn owner_elsewhere(&self, room: &str) -> Result<Option<NodeRecord>, StoreError> {
        let ttl = Duration::from_millis(self.config.claim_ttl_ms);
        let owner = self.store.place(room, None, ttl, ttl).await;
        self.observe(&owner, "place");
        let Some(owner) = owner? else {
            return Ok(None);
        };
        if owner == self.id {
            return Ok(None);
        }
        self.live_node(&owner).await
    }

    /// The record of the live node `id` (none if its record expired).
    pub async fn live_node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .map(|n| n.record)
            .find(|r| r.id == id))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Counts an admin request forwarded to another node.
    pub fn forwarded(&self, ok: bool) {
        self.metrics.admin_forwarded(ok);
    }

    /// Starts the heartbeat: this node's record and room claims, every `heartbeat_ms`, until aborted.
    pub fn spawn(
        self: &Arc<Self>,
        signaling: Arc<Signaling>,
        busy: CounterVec,
        workers: usize,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = Arc::clone(self);
        let commands = self
            .roster_commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(commands) = commands {
            let (sink, local) = mpsc::channel(roster::LOCAL_QUEUE);
            signaling.set_roster_sink(sink);
            let parts = roster::RosterParts { commands, local };
            roster::spawn(Arc::clone(self), Arc::clone(&signaling), parts);
            // Moderations of the other nodes' participants of the rooms spanning nodes.
            let (actions, requests) = mpsc::channel(remote::QUEUE);
            signaling.set_remote_actions(actions);
            remote::spawn(Arc::clone(self), Arc::clone(&signaling), requests);
        }
        tokio::spawn(async move {
            let mut heart = Heart {
                cluster,
                signaling,
                cpu: WorkerCpu::new(busy, workers),
                hosted: HashSet::new(),
                shards: HashSet::new(),
            };
            let period = Duration::from_millis(heart.cluster.config.heartbeat_ms);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut drain = heart.signaling.drain_notices();
            let mut drain_begun = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // The drain's first beat does not wait for the tick: other nodes stop placing
                    // rooms here, and the rooms move, at once.
                    changed = drain.changed(), if !drain_begun => {
                        drain_begun = changed.is_err() || drain.borrow().is_some();
                        if !drain_begun {
                            continue;
                        }
                    }
                }
                heart.beat().await;
            }
        })
    }

    /// Leaves the cluster at once (the drain is over): the record and this node's room claims go.
    pub async fn leave(&self, signaling: &Signaling) {
        let rooms = signaling.room_names();
        let released = self.store.release(&rooms, &self.id).await;
        self.observe(&released, "release");
        let left = self.store.deregister(&self.id).await;
        self.observe(&left, "heartbeat");
        if left.is_ok() {
            info!(node = %self.id, "left the cluster");
        }
    }
}

impl RoomLocator for Cluster {
    fn locate<'a>(&'a self, room: &'a str, hosted_here: bool) -> Locating<'a> {
        Box::pin(async move {
            if hosted_here {
                self.metrics.located(Located::Hosted);
                return Ok(Location::Here);
            }
            let located = self.place(room).await;
            self.metrics.located(match &located {
                Ok((_, how)) => *how,
                Err(LocateError::Unreachable) => Located::Unavailable,
                Err(LocateError::NoCandidate) => Located::NoCandidate,
            });
            located.map(|(location, _)| location)
        })
    }
}

/// The node a new room goes to: among the live nodes that take rooms (not draining, below capacity) —
/// those of `region` if `same_region` and one of them is live — the least loaded (in 5 % steps), then the
/// one with the fewest rooms (counting rooms placed since its last heartbeat), then by id.
pub fn choose<'a>(
    nodes: &'a [LiveNode],
    region: &str,
    same_region: bool,
) -> Option<&'a NodeRecord> {
    let open = || nodes.iter().filter(|n| n.record.takes_rooms());
    let regional = same_region && !region.is_empty() && open().any(|n| n.record.region == region);
    open()
        .filter(|n| !regional || n.record.region == region)
        .min_by_key(|n| {
            let step = (n.record.load() * 20.0).floor() as u32;
            (step, n.record.rooms + n.placed, n.record.id.as_str())
        })
        .map(|n| &n.record)
}

/// `node-` and 8 random hex digits.
fn random_node_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(format!(
        "node-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, participants: u64, rooms: u64, placed: u64) -> LiveNode {
        LiveNode {
            record: NodeRecord {
                id: id.into(),
                url: format!("ws://{id}/ws"),
                admin_url: String::new(),
                region: region.into(),
                draining: false,
                capacity_participants: 100,
                participants,
                rooms,
                worker_cpu: 0.0,
                workers: 1,
                version: "0".into(),
                trunk_addr: None,
            },
            placed,
        }
    }

    fn chosen(nodes: &[LiveNode], region: &str, same: bool) -> Option<String> {
        choose(nodes, region, same).map(|r| r.id.clone())
    }

    #[test]
    fn the_least_loaded_node_takes_a_new_room() {
        let nodes = [node("a", "", 40, 2, 0), node("b", "", 10, 5, 0)];
        assert_eq!(chosen(&nodes, "", true).as_deref(), Some("b"));
    }

    #[test]
    fn equal_load_goes_to_the_node_with_fewest_rooms_counting_recent_placements() {
        let nodes = [
            node("a", "", 0, 1, 0),
            node("b", "", 0, 0, 2),
            node("c", "", 0, 1, 1),
        ];
        assert_eq!(chosen(&nodes, "", true).as_deref(), Some("a"));
    }

    #[test]
    fn draining_and_full_nodes_take_no_rooms() {
        let mut draining = node("a", "", 0, 0, 0);
        draining.record.draining = true;
        let full = node("b", "", 100, 1, 0);
        assert_eq!(chosen(&[draining.clone(), full.clone()], "", true), None);
        let open = node("c", "", 99, 9, 0);
        assert_eq!(
            chosen(&[draining, full, open], "", true).as_deref(),
            Some("c")
        );
    }

    #[test]
    fn the_same_region_is_preferred_while_it_has_a_node_that_takes_rooms() {
        let nodes = [node("eu", "eu", 50, 9, 0), node("us", "us", 0, 0, 0)];
        assert_eq!(chosen(&nodes, "eu", true).as_deref(), Some("eu"));
        assert_eq!(chosen(&nodes, "eu", false).as_deref(), Some("us"));
        assert_eq!(chosen(&nodes, "ap", true).as_deref(), Some("us"));
        let mut full = nodes.clone();
        full[0].record.participants = 100;
        assert_eq!(chosen(&full, "eu", true).as_deref(), Some("us"));
    }
}
