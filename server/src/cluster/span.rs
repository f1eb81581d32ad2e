//! Rooms larger than a node (docs/architecture.md, "Rooms larger than a node"): which rooms have shards
//! on other nodes, and where.
//!
//! A node holding a room that may span nodes (its owner holds `room_node_participants` of it, or it already
//! spans) writes its shard into the room's shard hash in Redis (node id → participants there) at every
//! heartbeat and reads the others'; a join of a full room reaching another node opens a shard there
//! ([`Spanning::open`]) instead of being redirected. The other live nodes' trunk addresses (from their
//! records) become the [`RemoteShards`] the trunk socket sends to, and the rooms among them are told to
//! placement, which lists the trunk socket in the room's [`Spans`](crate::worker::trunk::Spans).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_core::RoomId;
use signaling::protocol::ParticipantInfo;
use signaling::roster::ShardSeed;
use signaling::Signaling;
use tokio::sync::watch;

use super::store::{LiveNode, Store, StoreError};
use super::trunk_net::RemoteShards;
use super::Cluster;
use crate::placement::Placement;

/// This node's part in rooms spanning nodes.
pub struct Spanning {
    placement: Arc<Placement>,
    remote: watch::Sender<RemoteShards>,
    /// This node's trunk address, as published in its record.
    pub(super) trunk_addr: SocketAddr,
    /// `cluster.room_node_participants`.
    limit: u64,
    /// How long a shard opened by a join waits for that join to be admitted before the heartbeat drops it.
    admit_grace: Duration,
    /// The rooms this node opened a shard of while another node owns them, and when.
    opened: Mutex<HashMap<String, Instant>>,
}

impl Spanning {
    pub fn new(
        placement: Arc<Placement>,
        remote: watch::Sender<RemoteShards>,
        trunk_addr: SocketAddr,
        limit: usize,
        admit_grace: Duration,
    ) -> Spanning {
        Spanning {
            placement,
            remote,
            trunk_addr,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            admit_grace,
            opened: Mutex::new(HashMap::new()),
        }
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node holds `room` as a shard of another node's room (its claim is not this node's).
    pub(super) fn is_opened(&self, room: &str) -> bool {
        self.opened().contains_key(room)
    }

    /// A room this node opened a shard of is its own now (its owner released the claim).
    pub(super) fn owned(&self, room: &str) {
        self.opened().remove(room);
    }

    /// A join of `room`, owned by `owner` on another node, reached this node: when the owner holds
    /// `room_node_participants` of it, a shard opens here and the room's other shards are known at once.
    /// Returns what the join brings to the room (none: no shard, redirect): the owner's settings and the
    /// other live nodes' participants.
    pub(super) async fn open(
        &self,
        store: &Store,
        me: &str,
        ttl: Duration,
        room: &str,
        owner: &str,
        nodes: &[LiveNode],
    ) -> Result<Option<ShardSeed>, StoreError> {
        let (shards, settings) = store.room_shards(room).await?;
        if shards.get(owner).is_none_or(|&n| n < self.limit) {
            return Ok(None);
        }
        let mine = [(room.to_owned(), 0)];
        let shards = store.shards(&mine, &[], me, ttl).await?;
        self.opened().insert(room.to_owned(), Instant::now());
        let shards = shards.into_iter().next().unwrap_or_default();
        let others = live_others(me, &shards, nodes);
        let members = store.members(room, &others).await?;
        let settings = settings.and_then(|json| match serde_json::from_str(&json) {
            Ok(shared) => Some(shared),
            Err(error) => {
                tracing::warn!(%room, %error, "cluster: a room's shared settings do not parse; this node's defaults apply");
                None
            }
        });
        let seed = ShardSeed {
            room: settings,
            members: others
                .into_iter()
                .zip(members)
                .map(|(node, members)| (node, parse_members(&members)))
                .collect(),
        };
        let mut remote = (**self.remote.borrow()).clone();
        remote.insert(RoomId(room.to_owned()), addresses(me, &shards, nodes));
        self.publish(remote);
        Ok(Some(seed))
    }

    /// Another node opened a shard of `room`, which this node holds: its shards are read now rather than
    /// at the next heartbeat, so that audio flows both ways at once.
    pub(super) async fn refresh(
        &self,
        store: &Store,
        me: &str,
        room: &str,
        nodes: &[LiveNode],
    ) -> Result<(), StoreError> {
        let (shards, _) = store.room_shards(room).await?;
        let addrs = addresses(me, &shards, nodes);
        let mut remote = (**self.remote.borrow()).clone();
        let id = RoomId(room.to_owned());
        if addrs.is_empty() {
            remote.remove(&id);
        } else {
            remote.insert(id, addrs);
        }
        self.publish(remote);
        Ok(())
    }

    /// At a heartbeat: writes this node's shards of the rooms that may span (`sizes`: the participants of
    /// each room hosted here) with the settings of those it owns, reads the others', removes the shards of
    /// rooms that ended here (`written`: the rooms written at the previous beat) and publishes the remote
    /// shards. Returns the rooms written, each with the other live nodes holding a shard of it.
    pub(super) async fn beat(
        &self,
        cluster: &Cluster,
        signaling: &Signaling,
        sizes: &HashMap<String, usize>,
        nodes: &[LiveNode],
        written: &mut HashSet<String>,
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let (store, me) = (&cluster.store, cluster.id.as_str());
        let ttl = Duration::from_millis(cluster.config.claim_ttl_ms);
        let now = Instant::now();
        let opened: HashSet<String> = {
            let mut opened = self.opened();
            opened.retain(|room, at| {
                sizes.contains_key(room) || now.duration_since(*at) < self.admit_grace
            });
            opened.keys().cloned().collect()
        };
        let spanned = self.remote.borrow().clone();
        let mut mine: Vec<(String, u64)> = sizes
            .iter()
            .map(|(room, &n)| (room, u64::try_from(n).unwrap_or(u64::MAX)))
            .filter(|(room, n)| {
                *n >= self.limit
                    || opened.contains(*room)
                    || spanned.contains_key(&RoomId((*room).clone()))
            })
            .map(|(room, n)| (room.clone(), n))
            .collect();
        mine.extend(
            opened
                .iter()
                .filter(|room| !sizes.contains_key(*room))
                .map(|room| (room.clone(), 0)),
        );
        // The owner's settings are the room's: a shard opened here has the owner's already.
        let settings: Vec<(String, String)> = mine
            .iter()
            .filter(|(room, _)| !opened.contains(room))
            .filter_map(|(room, _)| {
                let shared = signaling.shared_room(room)?;
                Some((room.clone(), serde_json::to_string(&shared).ok()?))
            })
            .collect();
        let shards = store.shards(&mine, &settings, me, ttl).await?;
        let now_written: HashSet<String> = mine.iter().map(|(room, _)| room.clone()).collect();
        let gone: Vec<String> = written.difference(&now_written).cloned().collect();
        store.remove_shards(&gone, me).await?;
        *written = now_written;
        let mut remote: HashMap<RoomId, Vec<SocketAddr>> = mine
            .iter()
            .zip(&shards)
            .map(|((room, _), s)| (RoomId(room.clone()), addresses(me, s, nodes)))
            .filter(|(_, addrs)| !addrs.is_empty())
            .collect();
        // Shards opened by joins while this beat ran keep what those joins found.
        let current = self.remote.borrow().clone();
        for room in self.opened().keys() {
            let id = RoomId(room.clone());
            if !written.contains(room) {
                if let Some(addrs) = current.get(&id) {
                    remote.insert(id, addrs.clone());
                }
            }
        }
        self.publish(remote);
        Ok(mine
            .iter()
            .zip(&shards)
            .map(|((room, _), s)| (room.clone(), live_others(me, s, nodes)))
            .collect())
    }

    /// The rooms with shards elsewhere, to the trunk socket and to placement.
    fn publish(&self, remote: HashMap<RoomId, Vec<SocketAddr>>) {
        let rooms: HashSet<String> = remote.keys().map(|r| r.0.clone()).collect();
        self.remote.send_if_modified(|current| {
            if **current == remote {
                return false;
            }
            *current = Arc::new(remote);
            true
        });
        self.placement.set_remote_rooms(rooms);
    }
}

/// The live nodes other than `me` holding a shard, in id order.
fn live_others(me: &str, shards: &HashMap<String, u64>, nodes: &[LiveNode]) -> Vec<String> {
    let mut ids: Vec<String> = shards
        .keys()
        .filter(|id| id.as_str() != me && nodes.iter().any(|n| &n.record.id == *id))
        .cloned()
        .collect();
    ids.sort();
    ids
}

/// Participant objects as another node wrote them; one that does not parse is skipped.
pub(super) fn parse_members(members: &[String]) -> Vec<ParticipantInfo> {
    members
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

/// The trunk addresses of the live nodes other than `me` holding a shard, in node id order.
fn addresses(me: &str, shards: &HashMap<String, u64>, nodes: &[LiveNode]) -> Vec<SocketAddr> {
    live_others(me, shards, nodes)
        .iter()
        .filter_map(|id| nodes.iter().find(|n| &n.record.id == id))
        .filter_map(|n| n.record.trunk_addr)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeRecord;

    fn live(id: &str, trunk: Option<&str>) -> LiveNode {
        LiveNode {
            record: NodeRecord {
                id: id.into(),
                url: format!("ws://{id}/ws"),
                admin_url: String::new(),
                region: String::new(),
                draining: false,
                capacity_participants: 100,
                participants: 0,
                rooms: 0,
                worker_cpu: 0.0,
                workers: 1,
                version: "0".into(),
                trunk_addr: trunk.map(|t| t.parse().expect("an address")),
            },
            placed: 0,
        }
    }

    #[test]
    fn the_other_live_nodes_with_a_trunk_are_the_addresses() {
        let nodes = [
            live("a", Some("10.0.0.1:7884")),
            live("b", Some("10.0.0.2:7884")),
            live("c", None),
        ];
        let shards = HashMap::from([
            ("a".to_owned(), 3),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
            ("dead".to_owned(), 9),
        ]);
        let addrs = addresses("a", &shards, &nodes);
        assert_eq!(
            addrs,
            vec!["10.0.0.2:7884".parse::<SocketAddr>().expect("an address")]
        );
    }

    #[test]
    fn the_other_live_nodes_are_read_and_a_bad_member_is_skipped() {
        let nodes = [live("a", None), live("c", None), live("b", None)];
        let shards = HashMap::from([
            ("a".to_owned(), 3),
            ("c".to_owned(), 1),
            ("b".to_owned(), 1),
            ("dead".to_owned(), 9),
        ]);
        assert_eq!(live_others("a", &shards, &nodes), vec!["b", "c"]);
        let bob = r#"{"sid":"PA_0000000000b0","identity":"bob","name":"Bob","muted":false,"can_publish":true,"can_subscribe":true}"#;
        let members = parse_members(&[bob.to_owned(), "{not json".to_owned()]);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].identity, "bob");
    }
}
