//! Rooms spanning nodes have one roster (docs/architecture.md, "Rooms larger than a node"): each node
//! holding a shard of such a room keeps its participants in a members hash in Redis and publishes each
//! change on the cluster's roster channel; the others apply them through [`Signaling::remote_roster`].
//!
//! One task per node owns this: it takes the node's local roster changes (signaling's sink), the
//! heartbeat's word on which rooms span and where, a join's opened shard, and the channel's notices (one
//! subscription per node, whatever the number of rooms). Rooms that do not span cost no Redis traffic.
//! A node reads another node's members hash when it first sees that node in a room (or after it lost
//! notices); a node whose record expired is dropped from the room (`participant_left`, `disconnected`).
//! Reading a hash and applying notices happen in this one task, in order, so a snapshot never undoes a
//! later change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use signaling::roster::{LocalRosterChange, RemoteRoster, RosterChange, RosterOutcome};
use signaling::Signaling;
use tokio::sync::mpsc;
use tracing::warn;

use super::span::parse_members;
use super::store::MemberChange;
use super::Cluster;

/// Roster notices waiting for the roster task; a full queue loses one and has the rooms read again.
const INBOUND_QUEUE: usize = 4096;
/// Local changes written in one Redis round trip at most.
const BATCH: usize = 256;
/// How many local roster changes may wait for the roster task (signaling's sink).
pub(super) const LOCAL_QUEUE: usize = 8192;

/// What the heartbeat and the joins tell the roster task.
#[derive(Debug)]
pub(super) enum RosterCommand {
    /// A join opened a shard of `room` here: its roster is published from now on.
    Opened(String),
    /// The rooms whose shards this node wrote, each with the other live nodes holding one, as read after
    /// `read_at`.
    Beat {
        rooms: HashMap<String, Vec<String>>,
        read_at: Instant,
    },
}

/// A message on the roster channel: a node's change of a room's roster, or (no change) "read my shard
/// and members of this room again" (a shard opened, a hash written whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Notice {
    node: String,
    room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<RosterChange>,
}

/// What the subscription hands the roster task.
#[derive(Debug)]
enum Inbound {
    Notice(Notice),
    /// Subscribed (again), or notices were lost: every other node's members are read again.
    Resync,
}

/// The channels a cluster node's roster runs on: made with the cluster, taken once by its task.
pub(super) struct RosterParts {
    pub commands: mpsc::Receiver<RosterCommand>,
    pub local: mpsc::Receiver<LocalRosterChange>,
}

/// Starts the subscription and the roster task; both end with the runtime (or when aborted).
pub(super) fn spawn(cluster: Arc<Cluster>, signaling: Arc<Signaling>, parts: RosterParts) {
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    tokio::spawn(subscribe(Arc::clone(&cluster), inbound_tx));
    let roster = Roster {
        cluster,
        signaling,
        published: HashMap::new(),
        synced: HashMap::new(),
    };
    tokio::spawn(roster.run(parts, inbound));
}

/// Listens on the roster channel, reconnecting after a heartbeat when the connection is lost.
async fn subscribe(cluster: Arc<Cluster>, inbound: mpsc::Sender<Inbound>) {
    let retry = Duration::from_millis(cluster.config.heartbeat_ms);
    loop {
        let subscribed = cluster.store.subscribe_roster().await;
        cluster.observe(&subscribed, "roster");
        if let Ok(pubsub) = subscribed {
            let mut lost = inbound.send(Inbound::Resync).await.is_err();
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(notice) = serde_json::from_slice::<Notice>(message.get_payload_bytes())
                else {
                    cluster.metrics.roster_received("malformed");
                    continue;
                };
                if notice.node == cluster.id {
                    continue;
                }
                if lost && inbound.try_send(Inbound::Resync).is_ok() {
                    lost = false;
                }
                if let Err(error) = inbound.try_send(Inbound::Notice(notice)) {
                    if matches!(error, mpsc::error::TrySendError::Closed(_)) {
                        return;
                    }
                    cluster.metrics.roster_received("dropped");
                    lost = true;
                }
            }
            warn!("cluster: the roster subscription ended; subscribing again");
        }
        tokio::time::sleep(retry).await;
    }
}

/// The roster task's state.
struct Roster {
    cluster: Arc<Cluster>,
    signaling: Arc<Signaling>,
    /// The rooms whose roster this node publishes (it wrote its shard of them), since when.
    published: HashMap<String, Instant>,
    /// Room → the other nodes whose members this node knows, and since when (none: to read again).
    synced: HashMap<String, HashMap<String, Option<Instant>>>,
}

impl Roster {
    async fn run(mut self, parts: RosterParts, mut inbound: mpsc::Receiver<Inbound>) {
        let RosterParts {
            mut commands,
            mut local,
        } = parts;
        loop {
            // A join's opened shard before its participant's own change, and both before notices.
            tokio::select! {
                biased;
                Some(command) = commands.recv() => self.command(command).await,
                Some(change) = local.recv() => {
                    let mut batch = vec![change];
                    while batch.len() < BATCH {
                        match local.try_recv() {
                            Ok(change) => batch.push(change),
                            Err(_) => break,
                        }
                    }
                    self.local(batch).await;
                }
                Some(message) = inbound.recv() => self.inbound(message).await,
                else => return,
            }
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.cluster.config.claim_ttl_ms)
    }

    fn notice(&self, room: &str, change: Option<RosterChange>) -> String {
        let notice = Notice {
            node: self.cluster.id.clone(),
            room: room.to_owned(),
            change,
        };
        serde_json::to_string(&notice).unwrap_or_default()
    }

    async fn command(&mut self, command: RosterCommand) {
        match command {
            RosterCommand::Opened(room) => {
                self.write_whole(&room).await;
                self.published.insert(room, Instant::now());
            }
            RosterCommand::Beat { rooms, read_at } => self.beat(rooms, read_at).await,
        }
    }

    /// Writes this node's members of `room` whole and tells the others to read them.
    async fn write_whole(&self, room: &str) {
        let members: Vec<(String, String)> = self
            .signaling
            .local_roster(room)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.sid.clone(), serde_json::to_string(&p).ok()?)))
            .collect();
        let notice = self.notice(room, None);
        let cluster = &self.cluster;
        let written = cluster
            .store
            .write_members(room, &cluster.id, &members, &notice, self.ttl())
            .await;
        cluster.observe(&written, "roster");
    }

    async fn beat(&mut self, rooms: HashMap<String, Vec<String>>, read_at: Instant) {
        let cluster = Arc::clone(&self.cluster);
        if self.signaling.take_roster_lost() {
            // A change never reached Redis: every published roster is written whole again.
            cluster.metrics.roster_resynced();
            self.published.clear();
        }
        let mut keep = Vec::new();
        for room in rooms.keys() {
            if self.published.contains_key(room) {
                keep.push(room.clone());
            } else {
                self.write_whole(room).await;
                self.published.insert(room.clone(), Instant::now());
            }
        }
        // A shard opened by a join after this beat's read is kept: the next beat lists it.
        let drop: Vec<String> = self
            .published
            .iter()
            .filter(|(room, since)| !rooms.contains_key(*room) && **since < read_at)
            .map(|(room, _)| room.clone())
            .collect();
        let touched = cluster
            .store
            .touch_members(&keep, &drop, &cluster.id, self.ttl())
            .await;
        cluster.observe(&touched, "roster");
        for room in &drop {
            self.published.remove(room);
        }

        // Other nodes: read those not known yet, drop those gone (unless heard of since the read).
        let gone_rooms: Vec<String> = self
            .synced
            .keys()
            .filter(|room| !rooms.contains_key(*room))
            .cloned()
            .collect();
        for room in gone_rooms {
            self.drop_nodes(&room, &[], read_at);
        }
        for (room, nodes) in &rooms {
            self.drop_nodes(room, nodes, read_at);
            let known = self.synced.get(room);
            let unread: Vec<String> = nodes
                .iter()
                .filter(|node| known.and_then(|k| k.get(*node)).is_none_or(Option::is_none))
                .cloned()
                .collect();
            self.read(room, unread).await;
        }
    }

    /// Forgets the nodes of `room` not in `live` that were known before `read_at`: their participants
    /// leave.
    fn drop_nodes(&mut self, room: &str, live: &[String], read_at: Instant) {
        let Some(known) = self.synced.get_mut(room) else {
            return;
        };
        let gone: Vec<String> = known
            .iter()
            .filter(|(node, since)| {
                !live.contains(node) && since.is_none_or(|since| since < read_at)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            known.remove(&node);
            let outcome = self
                .signaling
                .remote_roster(room, &node, RemoteRoster::Gone);
            self.cluster.metrics.roster_received(outcome.as_str());
        }
        if known.is_empty() {
            self.synced.remove(room);
        }
    }

    /// Reads the members of `room` on `nodes` and applies them (only for a room this node holds).
    async fn read(&mut self, room: &str, nodes: Vec<String>) {
        if nodes.is_empty() || !self.signaling.has_room(room) {
            return;
        }
        let cluster = Arc::clone(&self.cluster);
        let members = cluster.store.members(room, &nodes).await;
        cluster.observe(&members, "roster");
        let Ok(members) = members else {
            return;
        };
        let now = Instant::now();
        for (node, members) in nodes.into_iter().zip(members) {
            let sync = RemoteRoster::Sync(parse_members(&members));
            let outcome = self.signaling.remote_roster(room, &node, sync);
            cluster.metrics.roster_received(outcome.as_str());
            if outcome != RosterOutcome::NoRoom {
                self.synced
                    .entry(room.to_owned())
                    .or_default()
                    .insert(node, Some(now));
            }
        }
    }

    /// This node's changes, for the rooms it publishes: written to its members hashes and published.
    async fn local(&mut self, batch: Vec<LocalRosterChange>) {
        let changes: Vec<MemberChange> = batch
            .into_iter()
            .filter(|c| self.published.contains_key(&c.room))
            .map(|LocalRosterChange { room, change }| {
                let (sid, participant) = match &change {
                    RosterChange::Joined { participant, .. }
                    | RosterChange::Updated { participant } => (
                        participant.sid.clone(),
                        serde_json::to_string(participant).ok(),
                    ),
                    RosterChange::Left { sid, .. } => (sid.clone(), None),
                };
                let notice = self.notice(&room, Some(change));
                MemberChange {
                    room,
                    sid,
                    participant,
                    notice,
                }
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        let cluster = &self.cluster;
        let written = cluster
            .store
            .change_members(&changes, &cluster.id, self.ttl())
            .await;
        cluster.observe(&written, "roster");
        match written {
            Ok(()) => cluster.metrics.roster_published(changes.len()),
            // Lost for the others: the next heartbeat writes those rooms whole.
            Err(_) => {
                for change in &changes {
                    self.published.remove(&change.room);
                }
            }
        }
    }

    async fn inbound(&mut self, message: Inbound) {
        let notice = match message {
            Inbound::Notice(notice) => notice,
            Inbound::Resync => {
                for known in self.synced.values_mut() {
                    known.values_mut().for_each(|since| *since = None);
                }
                return;
            }
        };
        let Notice { node, room, change } = notice;
        match change {
            Some(change) => {
                let outcome =
                    self.signaling
                        .remote_roster(&room, &node, RemoteRoster::Change(change));
                self.cluster.metrics.roster_received(outcome.as_str());
            }
            // A shard opened (or a hash written whole): its trunk address now, and its members.
            None if self.signaling.has_room(&room) => {
                let cluster = Arc::clone(&self.cluster);
                if let (Some(spanning), Ok(nodes)) = (&cluster.spanning, cluster.nodes().await) {
                    let refreshed = spanning
                        .refresh(&cluster.store, &cluster.id, &room, &nodes)
                        .await;
                    cluster.observe(&refreshed, "shards");
                }
                self.read(&room, vec![node]).await;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::protocol::ParticipantLeftReason;

    #[test]
    fn a_notice_round_trips() {
        let left = Notice {
            node: "node-b".into(),
            room: "wide".into(),
            change: Some(RosterChange::Left {
                sid: "PA_0000000000b0".into(),
                reason: ParticipantLeftReason::Left,
            }),
        };
        let json = serde_json::to_string(&left).expect("serializes");
        assert_eq!(
            json,
            r#"{"node":"node-b","room":"wide","change":{"kind":"left","sid":"PA_0000000000b0","reason":"left"}}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&json).expect("parses"), left);
        let opened = r#"{"node":"node-b","room":"wide"}"#;
        let opened: Notice = serde_json::from_str(opened).expect("parses");
        assert_eq!(opened.change, None);
    }
}
