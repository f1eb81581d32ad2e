//! The cluster's shared state in Redis: node records with a TTL, and room claims taken and refreshed by
//! Lua scripts (atomic on the Redis server, so two nodes racing for a room agree on its owner).
//!
//! Keys (`{p}` is `cluster.key_prefix`):
//! - `{p}:node:{id}`: the node's [`NodeRecord`] as JSON, expiring `node_ttl_ms` after its last heartbeat;
//! - `{p}:nodes`: the set of node ids that may have a record (stale ids are removed when listed);
//! - `{p}:room:{name}`: the id of the node that owns the room, expiring `claim_ttl_ms` after the owner's
//!   last refresh;
//! - `{p}:placed:{id}`: rooms placed on the node since its last heartbeat (not yet in its record), so that
//!   rooms created in a burst spread instead of all going to the node that looked emptiest;
//! - `{p}:shards:{name}`: a hash of the nodes holding a shard of a room that spans (or may span) nodes,
//!   node id → its participants in the room, expiring `claim_ttl_ms` after the last node's refresh (a dead
//!   node's field is ignored by readers: its record is gone).
//! - `{p}:settings:{name}`: the settings of such a room as its owner has them ([`signaling::roster::SharedRoom`]
//!   as JSON), written with the owner's shard and expiring with it; a node opening a shard takes them;
//! - `{p}:members:{name}:{id}`: a hash of the node's participants in such a room, sid → participant object
//!   (JSON), expiring `claim_ttl_ms` after the node's last heartbeat (a dead node's hash goes with it);
//! - `{p}:roster` (a pub/sub channel, one per cluster): the changes of those hashes, and "re-read my shard
//!   and members of this room" when a node opens a shard or rewrites its hash (`roster.rs`).
//!
//! The scripts name the node and placed keys they touch from a prefix: a single Redis (or a primary with
//! replicas), not Redis Cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

/// One node as the cluster sees it: what it writes at each heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// The signaling URL clients are redirected to.
    pub url: String,
    /// The admin API's base URL, for admin requests forwarded to this node (empty from nodes of a version
    /// without it: nothing is forwarded to them).
    #[serde(default)]
    pub admin_url: String,
    pub region: String,
    /// Draining: its calls go on, it takes no new rooms.
    pub draining: bool,
    pub capacity_participants: u32,
    pub participants: u64,
    pub rooms: u64,
    /// The media workers' busy share, 0.0..=1.0 (1.0: every worker saturated), over the last heartbeat.
    pub worker_cpu: f64,
    pub workers: u32,
    pub version: String,
    /// Where other nodes send trunk datagrams for rooms spanning this node (`cluster.trunk_public_addr`);
    /// none: rooms do not span this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk_addr: Option<SocketAddr>,
}

impl NodeRecord {
    /// 0.0 idle, 1.0 full: participants against capacity, or the workers' CPU if higher.
    pub fn load(&self) -> f64 {
        let participants = self.participants as f64 / f64::from(self.capacity_participants.max(1));
        participants.max(self.worker_cpu)
    }

    /// Whether new rooms may be placed here.
    pub fn takes_rooms(&self) -> bool {
        !self.draining && self.load() < 1.0
    }
}

/// A live node (its record has not expired) and the rooms placed on it since its last heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveNode {
    pub record: NodeRecord,
    pub placed: u64,
}

/// A Redis command failed (unreachable, timed out, or an unexpected reply).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct StoreError(#[from] redis::RedisError);

/// Claims are refreshed and released in batches of this many keys (one script call each).
const BATCH: usize = 256;

/// Takes a room for a node unless a live node owns it. KEYS[1] the claim; ARGV: candidate id ('' for
/// none), claim TTL (ms), node key prefix, placed key prefix, placed TTL (ms). Returns the owner, or
/// nil when nobody owns the room and there is no candidate.
const PLACE: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return owner end
if ARGV[1] == '' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('INCR', ARGV[4] .. ARGV[1])
redis.call('PEXPIRE', ARGV[4] .. ARGV[1], ARGV[5])
return ARGV[1]
";

/// The owner keeps its rooms: each claim is renewed if it is this node's, taken if it is nobody's or a
/// dead node's. KEYS the claims; ARGV: this node's id, claim TTL (ms), node key prefix. Returns the
/// (1-based) indexes of the claims a live other node holds.
const REFRESH: &str = r"
local conflicts = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif (not owner) or redis.call('EXISTS', ARGV[3] .. owner) == 0 then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(conflicts, i)
  end
end
return conflicts
";

/// Drops the claims this node holds. KEYS the claims; ARGV[1] this node's id.
const RELEASE: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
";

/// The Redis side of the cluster: one multiplexed connection that reconnects by itself.
pub struct Store {
    /// For the roster subscription (a connection of its own).
    client: redis::Client,
    timeout: Duration,
    conn: ConnectionManager,
    prefix: String,
    place: Script,
    refresh: Script,
    release: Script,
}

impl Store {
    /// A store on `url`; connects lazily (on the first command), so a node starts while Redis is down.
    /// Every command and connection attempt gives up after `timeout`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One quick retry; after that a command fails and the next one tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Store {
            client,
            timeout,
            conn,
            prefix: prefix.to_owned(),
            place: Script::new(PLACE),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
        })
    }

    fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    fn placed_prefix(&self) -> String {
        format!("{}:placed:", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    fn shards_key(&self, room: &str) -> String {
        format!("{}:shards:{room}", self.prefix)
    }

    fn settings_key(&self, room: &str) -> String {
        format!("{}:settings:{room}", self.prefix)
    }

    fn members_key(&self, room: &str, node: &str) -> String {
        format!("{}:members:{room}:{node}", self.prefix)
    }

    /// The pub/sub channel of the rooms' rosters.
    pub fn roster_channel(&self) -> String {
        format!("{}:roster", self.prefix)
    }

    /// Writes this node's shard of each room (its participants there), alive for `ttl`, with the settings
    /// of the rooms it owns (`settings`: room → JSON), and reads every node's shards of those rooms (node
    /// id → participants), in one round trip.
    pub async fn shards(
        &self,
        mine: &[(String, u64)],
        settings: &[(String, String)],
        me: &str,
        ttl: Duration,
    ) -> Result<Vec<HashMap<String, u64>>, StoreError> {
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (room, json) in settings {
            pipe.set_options(
                self.settings_key(room),
                json,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl))),
            )
            .ignore();
        }
        for (room, participants) in mine {
            let key = self.shards_key(room);
            pipe.hset(&key, me, participants)
                .ignore()
                .pexpire(&key, millis_i64(ttl))
                .ignore()
                .hgetall(&key);
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Every node's shards of `room` (node id → participants), and its settings as its owner wrote them.
    pub async fn room_shards(
        &self,
        room: &str,
    ) -> Result<(HashMap<String, u64>, Option<String>), StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::pipe()
            .hgetall(self.shards_key(room))
            .get(self.settings_key(room))
            .query_async(&mut conn)
            .await?)
    }

    /// Replaces this node's members of `room` (sid → participant JSON), alive for `ttl`, and publishes
    /// `notice` on the roster channel, atomically.
    pub async fn write_members(
        &self,
        room: &str,
        me: &str,
        members: &[(String, String)],
        notice: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.members_key(room, me);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !members.is_empty() {
            pipe.hset_multiple(&key, members).ignore();
        }
        pipe.pexpire(&key, millis_i64(ttl))
            .ignore()
            .publish(self.roster_channel(), notice)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Applies changes to this node's members hashes (room, sid, participant JSON or none when it left)
    /// and publishes each one's notice, in order and atomically.
    pub async fn change_members(
        &self,
        changes: &[MemberChange],
        me: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for change in changes {
            let key = self.members_key(&change.room, me);
            match &change.participant {
                Some(json) => pipe.hset(&key, &change.sid, json).ignore(),
                None => pipe.hdel(&key, &change.sid).ignore(),
            };
            pipe.pexpire(&key, millis_i64(ttl))
                .ignore()
                .publish(self.roster_channel(), &change.notice)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Keeps this node's members hashes of `keep` alive for `ttl`, and deletes those of `drop`.
    pub async fn touch_members(
        &self,
        keep: &[String],
        drop: &[String],
        me: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if keep.is_empty() && drop.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for room in keep {
            pipe.pexpire(self.members_key(room, me), millis_i64(ttl))
                .ignore();
        }
        for room in drop {
            pipe.del(self.members_key(room, me)).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The members of `room` on each of `nodes` (participant JSONs), in one round trip.
    pub async fn members(
        &self,
        room: &str,
        nodes: &[String],
    ) -> Result<Vec<Vec<String>>, StoreError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for node in nodes {
            pipe.hvals(self.members_key(room, node));
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// A connection of its own subscribed to the roster channel.
    pub async fn subscribe_roster(&self) -> Result<redis::aio::PubSub, StoreError> {
        let timed_out = || {
            StoreError(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the roster subscription timed out",
            )))
        };
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.roster_channel()).await?;
            Ok::<_, StoreError>(pubsub)
        };
        tokio::time::timeout(self.timeout, subscribe)
            .await
            .map_err(|_| timed_out())?
    }

    /// Removes this node's shards of `rooms`.
    pub async fn remove_shards(&self, rooms: &[String], me: &str) -> Result<(), StoreError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.hdel(self.shards_key(room), me).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Writes this node's record (alive for `ttl`) and clears its placed count: the record counts its rooms
    /// now.
    pub async fn heartbeat(&self, record: &NodeRecord, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "node record", e.to_string()))
        })?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .set_options(
                format!("{}{}", self.node_prefix(), record.id),
                json,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl))),
            )
            .ignore()
            .sadd(self.nodes_key(), &record.id)
            .ignore()
            .del(format!("{}{}", self.placed_prefix(), record.id))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes this node from the cluster at once (rather than when its record expires).
    pub async fn deregister(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(format!("{}{id}", self.node_prefix()))
            .ignore()
            .srem(self.nodes_key(), id)
            .ignore()
            .del(format!("{}{id}", self.placed_prefix()))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Every live node, by id. Ids whose record expired leave the set.
    pub async fn nodes(&self) -> Result<Vec<LiveNode>, StoreError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(self.nodes_key()).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let record_keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}{id}", self.node_prefix()))
            .collect();
        let placed_keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}{id}", self.placed_prefix()))
            .collect();
        let (records, placed): (Vec<Option<String>>, Vec<Option<u64>>) = redis::pipe()
            .mget(record_keys)
            .mget(placed_keys)
            .query_async(&mut conn)
            .await?;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for ((id, record), placed) in ids.into_iter().zip(records).zip(placed) {
            match record.and_then(|json| serde_json::from_str::<NodeRecord>(&json).ok()) {
                Some(record) => live.push(LiveNode {
                    record,
                    placed: placed.unwrap_or(0),
                }),
                None => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let _: () = conn.srem(self.nodes_key(), stale).await?;
        }
        Ok(live)
    }

    /// The owner of `room`: its current owner if that node is live, else `candidate` (which now owns
    /// it); `None` when nobody owns it and there is no candidate.
    pub async fn place(
        &self,
        room: &str,
        candidate: Option<&str>,
        claim_ttl: Duration,
        placed_ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let owner = self
            .place
            .key(self.room_key(room))
            .arg(candidate.unwrap_or(""))
            .arg(millis(claim_ttl))
            .arg(self.node_prefix())
            .arg(self.placed_prefix())
            .arg(millis(placed_ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(owner)
    }

    /// Renews (or takes) this node's claims on `rooms`; returns the rooms a live other node owns.
    pub async fn refresh(
        &self,
        rooms: &[String],
        me: &str,
        claim_ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let mut conflicts = Vec::new();
        let mut conn = self.conn.clone();
        for batch in rooms.chunks(BATCH) {
            let mut call = self.refresh.prepare_invoke();
            for room in batch {
                call.key(self.room_key(room));
            }
            call.arg(me).arg(millis(claim_ttl)).arg(self.node_prefix());
            let indexes: Vec<usize> = call.invoke_async(&mut conn).await?;
            conflicts.extend(
                indexes
                    .into_iter()
                    .filter_map(|i| batch.get(i.checked_sub(1)?).cloned()),
            );
        }
        Ok(conflicts)
    }

    /// Drops this node's claims on `rooms` (others' claims stay).
    pub async fn release(&self, rooms: &[String], me: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for batch in rooms.chunks(BATCH) {
            let mut call = self.release.prepare_invoke();
            for room in batch {
                call.key(self.room_key(room));
            }
            call.arg(me);
            let _: i64 = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One change of this node's members of a room, with the notice that tells the other nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberChange {
    pub room: String,
    pub sid: String,
    /// The participant object as JSON; none: it left.
    pub participant: Option<String>,
    pub notice: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(participants: u64, cpu: f64, draining: bool) -> NodeRecord {
        NodeRecord {
            id: "a".into(),
            url: "ws://a/ws".into(),
            admin_url: String::new(),
            region: String::new(),
            draining,
            capacity_participants: 100,
            participants,
            rooms: 1,
            worker_cpu: cpu,
            workers: 2,
            version: "0".into(),
            trunk_addr: Some("10.0.0.7:7884".parse().expect("an address")),
        }
    }

    #[test]
    fn load_is_the_higher_of_participants_and_cpu() {
        assert_eq!(record(50, 0.2, false).load(), 0.5);
        assert_eq!(record(10, 0.7, false).load(), 0.7);
        assert!(record(99, 0.0, false).takes_rooms());
        assert!(!record(100, 0.0, false).takes_rooms(), "full");
        assert!(!record(0, 0.0, true).takes_rooms(), "draining");
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = record(3, 0.25, true);
        let json = serde_json::to_string(&r).expect("serializes");
        assert_eq!(
            serde_json::from_str::<NodeRecord>(&json).expect("parses"),
            r
        );
    }
}
