//! The node's trunk socket (docs/architecture.md, "Rooms larger than a node"): one UDP socket that sends
//! this node's trunk messages to the other nodes holding shards of its spanned rooms and hands the
//! verified datagrams it receives to the workers holding the room's shards here.
//!
//! The workers see the socket as one more peer: its outbox is the inbox at index `workers` of the
//! [`Spans`], listed for every room with shards on other nodes, so a worker's trunk sends to it like to
//! another worker (bounded; a full outbox is the worker's counted drop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use media_core::RoomId;
use prometheus::{IntCounter, IntCounterVec, Registry};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::trunk_wire::{Opener, Sealer, WireError, MAX_DATAGRAM_BYTES};
use crate::metrics::counter_vec;
use crate::worker::trunk::{Spans, Trunked};

/// The rooms with shards on other nodes, each with those nodes' trunk addresses.
pub type RemoteShards = Arc<HashMap<RoomId, Vec<SocketAddr>>>;

/// `chorus_cluster_trunk_datagrams_total` (docs/metrics.md): the per-datagram results resolved once, the
/// refusals (rare) by their label.
#[derive(Clone)]
pub struct TrunkNetMetrics {
    datagrams: IntCounterVec,
    sent: IntCounter,
    send_failed: IntCounter,
    received: IntCounter,
    no_shard: IntCounter,
    dropped: IntCounter,
}

impl TrunkNetMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let mut results = vec!["sent", "send_failed", "received", "no_shard", "dropped"];
        results.extend(WireError::LABELS);
        let datagrams = counter_vec(
            registry,
            "chorus_cluster_trunk_datagrams_total",
            "Trunk datagrams between nodes: sent, failed to send, received and handed to a worker, received for a room with no shard here, dropped (the worker's inbox full), or refused (truncated, oversized, bad_version, bad_tag, malformed, replay, stale).",
            "result",
            &results,
        )?;
        let result = |l: &str| datagrams.with_label_values(&[l]);
        Ok(TrunkNetMetrics {
            sent: result("sent"),
            send_failed: result("send_failed"),
            received: result("received"),
            no_shard: result("no_shard"),
            dropped: result("dropped"),
            datagrams,
        })
    }

    fn refused(&self, error: &WireError) {
        self.datagrams.with_label_values(&[error.label()]).inc();
    }
}

/// What woke the socket task.
enum Wake {
    Outbox(Option<Trunked>),
    Datagram(std::io::Result<usize>),
}

/// What the socket task needs.
struct TrunkNet {
    socket: UdpSocket,
    /// The workers' trunk messages for other nodes.
    outbox: mpsc::Receiver<Trunked>,
    /// Every worker's trunk inbox, by index.
    workers: Vec<mpsc::Sender<Trunked>>,
    spans: watch::Receiver<Spans>,
    remote: watch::Receiver<RemoteShards>,
    sealer: Sealer,
    opener: Opener,
    metrics: TrunkNetMetrics,
}

impl TrunkNet {
    /// Runs until the outbox closes (every worker gone).
    async fn run(mut self) {
        // One byte more than the largest datagram: a longer one is seen as such, not cut to size.
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        loop {
            let woke = tokio::select! {
                message = self.outbox.recv() => Wake::Outbox(message),
                received = self.socket.recv_from(&mut buf) => Wake::Datagram(received.map(|(n, _)| n)),
            };
            match woke {
                Wake::Outbox(Some(trunked)) => self.send(trunked).await,
                Wake::Outbox(None) => return,
                Wake::Datagram(Ok(n)) => self.received(&buf[..n]),
                Wake::Datagram(Err(error)) => {
                    tracing::debug!(%error, "trunk socket receive failed");
                }
            }
        }
    }

    /// One of this node's messages to each other node with a shard of its room.
    async fn send(&mut self, trunked: Trunked) {
        // The published map (an `Arc`), not the room's list: nothing is copied per message.
        let remote = RemoteShards::clone(&self.remote.borrow());
        let Some(addrs) = remote.get(trunked.message.room()) else {
            // The room's other shards closed since the worker sent it.
            return;
        };
        let datagram = match self.sealer.seal(&trunked.message, SystemTime::now()) {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%error, "trunk message not sendable");
                self.metrics.send_failed.inc();
                return;
            }
        };
        for &addr in addrs {
            match self.socket.send_to(&datagram, addr).await {
                Ok(_) => self.metrics.sent.inc(),
                Err(error) => {
                    tracing::debug!(%error, %addr, "trunk datagram not sent");
                    self.metrics.send_failed.inc();
                }
            }
        }
    }

    /// A datagram from another node: verified, then to every worker with a shard of its room here. The
    /// hop is measured from the sender's clock.
    fn received(&mut self, datagram: &[u8]) {
        let wall = SystemTime::now();
        let opened = match self.opener.open(datagram, wall) {
            Ok(opened) => opened,
            Err(error) => {
                self.metrics.refused(&error);
                return;
            }
        };
        let now = Instant::now();
        let age = wall.duration_since(opened.sent).unwrap_or_default();
        let sent = now.checked_sub(age).unwrap_or(now);
        // The published spans (an `Arc`); the room's workers here are those below `workers.len()` (the
        // index `workers.len()` is this socket's own outbox).
        let spans = Spans::clone(&self.spans.borrow());
        let local = self.workers.len();
        let mut shards = spans
            .get(opened.message.room())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&w| w < local)
            .peekable();
        if shards.peek().is_none() {
            tracing::trace!(
                node = %opened.node,
                room = %opened.message.room().0,
                "trunk datagram for a room with no shard here"
            );
            self.metrics.no_shard.inc();
            return;
        }
        for w in shards {
            let trunked = Trunked {
                sent,
                message: opened.message.clone(),
            };
            match self.workers[w].try_send(trunked) {
                Ok(()) => self.metrics.received.inc(),
                Err(_) => self.metrics.dropped.inc(),
            }
        }
    }
}

/// What the workers and placement give the trunk socket.
pub struct TrunkParts {
    /// The workers' trunk messages for other nodes (the inbox at index `workers` of the spans).
    pub outbox: mpsc::Receiver<Trunked>,
    /// Every worker's trunk inbox, by index.
    pub workers: Vec<mpsc::Sender<Trunked>>,
    pub spans: watch::Receiver<Spans>,
}

/// Binds the trunk socket on `listen` and starts its task; returns the address the other nodes send to
/// (`public`, else the bound one) and the sender of the remote shards it sends to.
pub fn start(
    listen: SocketAddr,
    public: Option<SocketAddr>,
    sealer: Sealer,
    opener: Opener,
    parts: TrunkParts,
    metrics: TrunkNetMetrics,
) -> anyhow::Result<(SocketAddr, watch::Sender<RemoteShards>)> {
    use anyhow::Context;
    let std_socket = std::net::UdpSocket::bind(listen)
        .with_context(|| format!("cannot bind cluster.trunk_listen {listen} (UDP)"))?;
    std_socket.set_nonblocking(true)?;
    let bound = std_socket.local_addr()?;
    let socket = UdpSocket::from_std(std_socket)?;
    let (remote_tx, remote) = watch::channel(RemoteShards::default());
    let net = TrunkNet {
        socket,
        outbox: parts.outbox,
        workers: parts.workers,
        spans: parts.spans,
        remote,
        sealer,
        opener,
        metrics,
    };
    tokio::spawn(net.run());
    let addr = public.unwrap_or(bound);
    tracing::info!(%bound, public = %addr, "cluster trunk socket (rooms spanning nodes)");
    Ok((addr, remote_tx))
}
