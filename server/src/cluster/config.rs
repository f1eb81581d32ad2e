//! The `[cluster]` section: several nodes sharing rooms through Redis. Without `redis_url` the node is
//! alone, as before.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis the nodes share (`redis://host:port/db`, `rediss://` for TLS is not built in). Unset: no
    /// cluster.
    pub redis_url: Option<String>,
    /// This node's id in the cluster (unique among its nodes); unset: a random one at each start.
    pub node_id: Option<String>,
    /// The signaling URL clients are redirected to for rooms on this node (`ws://…/ws` or `wss://…/ws`);
    /// unset: `ws://{http.listen}/ws`, which needs a concrete listen address.
    pub public_url: Option<String>,
    /// Where the other nodes reach this node's admin API (`http://10.0.0.7:7880`), to forward an admin
    /// request for a room this node hosts; unset: `http://{http.listen}`, which needs a concrete listen
    /// address.
    pub admin_url: Option<String>,
    /// A label for placement (e.g. `eu-west`): with `same_region`, new rooms go to nodes with the label
    /// of the node the client reached, when one of them is live.
    pub region: String,
    /// Place new rooms on nodes of this node's region first.
    pub same_region: bool,
    /// Participants this node is meant to carry: load is participants / capacity (or the workers' CPU,
    /// if higher). Nodes at or above capacity take no new rooms.
    pub capacity_participants: u32,
    /// Prefix of every Redis key, so that several clusters can share one Redis.
    pub key_prefix: String,
    /// How often this node writes its record and refreshes its room claims.
    pub heartbeat_ms: u64,
    /// How long a node's record lives without a heartbeat: a node silent this long is gone (its rooms are
    /// placed again on their next join).
    pub node_ttl_ms: u64,
    /// How long a room claim lives without its owner's refresh (a claim for a node that a redirected
    /// client has not reached yet lasts this long).
    pub claim_ttl_ms: u64,
    /// A Redis command (and a connection attempt) that takes longer fails: joins of rooms this node does
    /// not host then get `cluster_unavailable` instead of waiting.
    pub redis_timeout_ms: u64,
    /// When this node drains, hand its rooms to other nodes and redirect their participants there (a
    /// break of about a rejoin, well under a second), instead of letting the calls finish here. Rooms no
    /// other node takes (all draining or full) still finish here.
    pub migrate_on_drain: bool,
    /// Rooms spanning nodes: the UDP address this node receives the other nodes' trunk datagrams on
    /// (`0.0.0.0:7884`). Unset: rooms never span nodes (a join for another node's room is redirected).
    pub trunk_listen: Option<SocketAddr>,
    /// The address the other nodes send this node's trunk datagrams to (published in its record); unset:
    /// `trunk_listen`, which then needs a concrete IP (and a port other than 0 only if it is to be stable).
    pub trunk_public_addr: Option<SocketAddr>,
    /// The secret every node of the cluster shares to authenticate trunk datagrams (at least 32 bytes;
    /// required with `trunk_listen`).
    pub trunk_secret: Option<String>,
    /// With `trunk_listen`: when the room's owner node already holds this many of its participants, a join
    /// reaching another node opens a shard of the room there instead of being redirected.
    pub room_node_participants: usize,
    /// Trunk messages waiting for the trunk socket; a full queue is a counted drop.
    pub trunk_queue_packets: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            public_url: None,
            admin_url: None,
            region: String::new(),
            same_region: true,
            capacity_participants: 1_000,
            key_prefix: "chorus".to_owned(),
            heartbeat_ms: 1_000,
            node_ttl_ms: 5_000,
            claim_ttl_ms: 10_000,
            redis_timeout_ms: 1_000,
            migrate_on_drain: true,
            trunk_listen: None,
            trunk_public_addr: None,
            trunk_secret: None,
            room_node_participants: 5_000,
            trunk_queue_packets: 4_096,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    /// Whether rooms may span this node and others.
    pub fn spans_nodes(&self) -> bool {
        self.enabled() && self.trunk_listen.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("redis+unix://") {
                return invalid("cluster.redis_url must be a redis:// or redis+unix:// URL");
            }
        }
        if let Some(id) = &self.node_id {
            if !valid_label(id) || id.is_empty() {
                return invalid("cluster.node_id must be 1..=64 of [A-Za-z0-9_.-]");
            }
        }
        if !valid_label(&self.region) {
            return invalid("cluster.region must be at most 64 of [A-Za-z0-9_.-]");
        }
        if !valid_label(&self.key_prefix) || self.key_prefix.is_empty() {
            return invalid("cluster.key_prefix must be 1..=64 of [A-Za-z0-9_.-]");
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.len() > 512 {
                return invalid(
                    "cluster.public_url must be a ws:// or wss:// URL (at most 512 bytes)",
                );
            }
        }
        if let Some(url) = &self.admin_url {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() > 512
                || url.ends_with('/')
            {
                return invalid(
                    "cluster.admin_url must be an http:// or https:// URL without a trailing / (at most 512 bytes)",
                );
            }
        }
        if self.capacity_participants == 0 {
            return invalid("cluster.capacity_participants must be at least 1");
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            return invalid("cluster.heartbeat_ms must be 100..=60000");
        }
        if self.node_ttl_ms < 2 * self.heartbeat_ms || self.node_ttl_ms > 600_000 {
            return invalid(
                "cluster.node_ttl_ms must be at least twice cluster.heartbeat_ms (and at most 600000)",
            );
        }
        if self.claim_ttl_ms < 2 * self.heartbeat_ms || self.claim_ttl_ms > 600_000 {
            return invalid(
                "cluster.claim_ttl_ms must be at least twice cluster.heartbeat_ms (and at most 600000)",
            );
        }
        if !(50..=30_000).contains(&self.redis_timeout_ms) {
            return invalid("cluster.redis_timeout_ms must be 50..=30000");
        }
        if let Some(listen) = self.trunk_listen {
            if self
                .trunk_secret
                .as_ref()
                .is_none_or(|s| s.len() < MIN_TRUNK_SECRET_BYTES)
            {
                return invalid("cluster.trunk_secret of at least 32 bytes is required with cluster.trunk_listen");
            }
            let public = self.trunk_public_addr.unwrap_or(listen);
            if public.ip().is_unspecified() {
                return invalid("cluster.trunk_public_addr is required when cluster.trunk_listen has no concrete IP");
            }
        }
        if self.room_node_participants == 0 {
            return invalid("cluster.room_node_participants must be at least 1");
        }
        if !(16..=1_000_000).contains(&self.trunk_queue_packets) {
            return invalid("cluster.trunk_queue_packets must be 16..=1000000");
        }
        Ok(())
    }
}

/// The shortest `trunk_secret`: 256 bits of a random hex or base64 string.
pub const MIN_TRUNK_SECRET_BYTES: usize = 32;

/// At most 64 of `[A-Za-z0-9_.-]` (Redis keys and node ids stay readable and bounded).
fn valid_label(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_no_cluster_and_valid() {
        let config = ClusterConfig::default();
        assert!(!config.enabled());
        config.validate().expect("the default is valid");
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            ClusterConfig {
                redis_url: Some("http://redis".into()),
                ..Default::default()
            },
            ClusterConfig {
                node_id: Some("a b".into()),
                ..Default::default()
            },
            ClusterConfig {
                public_url: Some("http://node/ws".into()),
                ..Default::default()
            },
            ClusterConfig {
                heartbeat_ms: 1_000,
                node_ttl_ms: 1_500,
                ..Default::default()
            },
            ClusterConfig {
                capacity_participants: 0,
                ..Default::default()
            },
            ClusterConfig {
                key_prefix: String::new(),
                ..Default::default()
            },
            ClusterConfig {
                trunk_listen: Some("127.0.0.1:7884".parse().expect("an address")),
                trunk_secret: Some("short".into()),
                ..Default::default()
            },
            ClusterConfig {
                trunk_listen: Some("0.0.0.0:7884".parse().expect("an address")),
                trunk_secret: Some("x".repeat(32)),
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
