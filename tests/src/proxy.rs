//! A UDP impairment proxy on loopback, shared by the real-time tests (`speech`, `faults`, `rebinding`,
//! the native SDK's `fec`): a client sends to [`Proxy::addr`] (its ICE remote candidate, see
//! `MediaOptions::via`), the proxy forwards to the server from a socket of its own (the client's address
//! as the server sees it, like a NAT's) and sends the server's replies back to the client.
//!
//! Once [`Proxy::impair`] is called, every datagram in either direction is dropped with a given probability
//! (seeded, one generator per direction; on its own or in bursts, as the simulated network drops), delayed by a uniform random time (each datagram on its own, so
//! they also arrive out of order), held back further with a given probability (reordering past several
//! successors), and sent twice with a given probability. Independently of that, [`Proxy::blackout`] drops
//! everything in both directions for a while (a dead link: this kernel has no `netem`), and
//! [`Proxy::rebind`] moves the server side to a new socket (a NAT rebinding: the client's source port
//! changes and the old one is gone).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media_core::sim::{LossState, Rng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does to each datagram once impairing.
#[derive(Clone, Debug, Default)]
pub struct Impairment {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// The mean length of a run of dropped datagrams: up to 1 each is dropped on its own, above 1 in
    /// bursts (the simulated network's model, [`LossState::lose`]).
    pub loss_burst_packets: f64,
    /// One-way delay added to each datagram, uniform in this range (milliseconds).
    pub delay_ms: Range<f64>,
    /// Probability of holding a datagram back a further [`REORDER_HOLD`], behind its successors.
    pub reorder: f64,
    /// Probability of sending a datagram twice (the copy [`DUPLICATE_AFTER`] later).
    pub duplicate: f64,
    /// Probability per datagram that its direction stalls from it on for [`Impairment::stall`]: it and
    /// every datagram after it are held until the stall ends (a Wi-Fi retry burst, a queue behind cross
    /// traffic), then sent with their own delay.
    pub stall_chance: f64,
    /// How long a stall holds a direction.
    pub stall: Duration,
}

/// How much longer a reordered datagram is held: three 20 ms frames.
pub const REORDER_HOLD: Duration = Duration::from_millis(60);
/// How long after the original a duplicate is sent.
pub const DUPLICATE_AFTER: Duration = Duration::from_millis(5);

/// Datagrams the proxy forwarded and dropped, both directions together.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    /// Of `dropped`: during a blackout.
    pub blacked_out: AtomicU64,
    pub reordered: AtomicU64,
    /// STUN binding requests the client sent (its connectivity and consent checks).
    pub binding_requests: AtomicU64,
    /// Of `binding_requests`: those with USE-CANDIDATE (the client nominating the path).
    pub nominations: AtomicU64,
    pub duplicated: AtomicU64,
}

/// What both directions share.
struct Shared {
    impairment: Impairment,
    impairing: AtomicBool,
    /// Until when everything is dropped.
    blackout_until: Mutex<Option<Instant>>,
    stats: ProxyStats,
    /// The socket the proxy talks to the server from (replaced by [`Proxy::rebind`]).
    server_side: Mutex<Arc<UdpSocket>>,
    /// The client's address, learnt from its first datagram (the server's replies go there).
    client: Mutex<Option<SocketAddr>>,
    /// The client's latest STUN binding request, as an on-path observer sees it.
    binding_request: Mutex<Option<Vec<u8>>>,
}

impl Shared {
    fn server_side(&self) -> Arc<UdpSocket> {
        self.server_side
            .lock()
            .expect("the server socket lock is never poisoned")
            .clone()
    }

    fn blacked_out(&self) -> bool {
        self.blackout_until
            .lock()
            .expect("the blackout lock is never poisoned")
            .is_some_and(|until| Instant::now() < until)
    }
}

pub struct Proxy {
    /// Where the client sends (its remote candidate).
    pub addr: SocketAddr,
    server: SocketAddr,
    client_side: Arc<UdpSocket>,
    shared: Arc<Shared>,
    seed: u64,
    upstream: JoinHandle<()>,
    /// The task reading the current server-side socket.
    downstream: Mutex<JoinHandle<()>>,
    rebinds: AtomicU64,
}

/// One direction of the proxy.
struct Direction {
    rng: Rng,
    /// Whether this direction is in a burst of losses.
    loss: LossState,
    shared: Arc<Shared>,
    /// The end of this direction's current (or last) stall.
    stall_until: Option<Instant>,
    /// When the last datagram held by a stall goes out: those after it go later (a stall keeps order).
    last_held_due: Option<Instant>,
    /// What stalls hold, sent in order by one task (started with the first stall): a task per datagram
    /// could race with the next one's, the timer being coarser than the 0.1 ms between them.
    held: Option<mpsc::UnboundedSender<Held>>,
}

/// A datagram held by a stall: when it goes out, and where.
struct Held {
    due: Instant,
    data: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

impl Direction {
    /// Sends `held` in its turn after everything held before it.
    fn hold(&mut self, held: Held) {
        let queue = self.held.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Held>();
            tokio::spawn(async move {
                while let Some(h) = rx.recv().await {
                    tokio::time::sleep_until(h.due).await;
                    let _ = h.socket.send_to(&h.data, h.to).await;
                }
            });
            tx
        });
        // The task lives as long as this direction does.
        let _ = queue.send(held);
    }
}

impl Proxy {
    /// A proxy to `server` that impairs as `impairment` says (from [`Proxy::impair`] on), seeded by `seed`.
    pub async fn start(
        server: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> anyhow::Result<Proxy> {
        let client_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let server_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = client_side.local_addr()?;
        let shared = Arc::new(Shared {
            impairment,
            impairing: AtomicBool::new(false),
            blackout_until: Mutex::new(None),
            stats: ProxyStats::default(),
            server_side: Mutex::new(server_side.clone()),
            client: Mutex::new(None),
            binding_request: Mutex::new(None),
        });
        let upstream = Direction {
            rng: Rng::new(seed),
            loss: LossState::default(),
            shared: shared.clone(),
            stall_until: None,
            last_held_due: None,
            held: None,
        };
        let learnt = shared.clone();
        let upstream = tokio::spawn(upstream.run(client_side.clone(), move |from| {
            *learnt
                .client
                .lock()
                .expect("the client address lock is never poisoned") = Some(from);
            Some((learnt.server_side(), server))
        }));
        let downstream =
            Self::downstream(&shared, server_side, client_side.clone(), server, seed, 0);
        Ok(Proxy {
            addr,
            server,
            client_side,
            shared,
            seed,
            upstream,
            downstream: Mutex::new(downstream),
            rebinds: AtomicU64::new(0),
        })
    }

    /// The task forwarding what the server sends to `server_side` back to the client.
    fn downstream(
        shared: &Arc<Shared>,
        server_side: Arc<UdpSocket>,
        client_side: Arc<UdpSocket>,
        server: SocketAddr,
        seed: u64,
        generation: u64,
    ) -> JoinHandle<()> {
        let direction = Direction {
            rng: Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15 ^ generation),
            loss: LossState::default(),
            shared: shared.clone(),
            stall_until: None,
            last_held_due: None,
            held: None,
        };
        let shared = shared.clone();
        tokio::spawn(direction.run(server_side, move |from| {
            if from != server {
                return None;
            }
            let client = *shared
                .client
                .lock()
                .expect("the client address lock is never poisoned");
            client.map(|c| (client_side.clone(), c))
        }))
    }

    /// Start impairing (until now datagrams pass at once and untouched).
    pub fn impair(&self) {
        self.shared.impairing.store(true, Ordering::SeqCst);
    }

    /// Drop every datagram in both directions for `duration` from now.
    pub fn blackout(&self, duration: Duration) {
        *self
            .shared
            .blackout_until
            .lock()
            .expect("the blackout lock is never poisoned") = Some(Instant::now() + duration);
    }

    /// A NAT rebinding: talk to the server from a new socket (a new source port) from now on, and close the
    /// old one (the server's datagrams to the old port go nowhere). Returns the new address.
    pub async fn rebind(&self) -> anyhow::Result<SocketAddr> {
        let fresh = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = fresh.local_addr()?;
        let generation = self.rebinds.fetch_add(1, Ordering::SeqCst) + 1;
        *self
            .shared
            .server_side
            .lock()
            .expect("the server socket lock is never poisoned") = fresh.clone();
        let mut downstream = self
            .downstream
            .lock()
            .expect("the downstream task lock is never poisoned");
        downstream.abort();
        *downstream = Self::downstream(
            &self.shared,
            fresh,
            self.client_side.clone(),
            self.server,
            self.seed,
            generation,
        );
        Ok(addr)
    }

    /// The address the server sees the client at (the proxy's server-side socket).
    pub fn server_side_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.shared.server_side().local_addr()?)
    }

    /// (forwarded, dropped) datagrams so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.stats.forwarded.load(Ordering::Relaxed),
            self.shared.stats.dropped.load(Ordering::Relaxed),
        )
    }

    /// The latest STUN binding request the client sent through the proxy (its consent checks).
    pub fn binding_request(&self) -> Option<Vec<u8>> {
        self.shared
            .binding_request
            .lock()
            .expect("the binding request lock is never poisoned")
            .clone()
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }
}

/// Whether a STUN message has a USE-CANDIDATE attribute (0x0025).
fn has_use_candidate(message: &[u8]) -> bool {
    let mut at = 20;
    while let Some(header) = message.get(at..at + 4) {
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if kind == 0x0025 {
            return true;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    false
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.upstream.abort();
        self.downstream
            .lock()
            .expect("the downstream task lock is never poisoned")
            .abort();
    }
}

impl Direction {
    /// Forward every datagram received on `from` as `destination(source)` says: the socket to send it on
    /// and where to (None: nobody to send to yet).
    async fn run(
        mut self,
        from: Arc<UdpSocket>,
        destination: impl Fn(SocketAddr) -> Option<(Arc<UdpSocket>, SocketAddr)>,
    ) {
        let mut buf = vec![0u8; 2048];
        let shared = self.shared.clone();
        let stats = &shared.stats;
        loop {
            let Ok((n, source)) = from.recv_from(&mut buf).await else {
                return;
            };
            let Some((socket, to)) = destination(source) else {
                continue;
            };
            if self.shared.blacked_out() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                stats.blacked_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let data = buf[..n].to_vec();
            if data.len() >= 20 && data[..2] == [0x00, 0x01] {
                stats.binding_requests.fetch_add(1, Ordering::Relaxed);
                if has_use_candidate(&data) {
                    stats.nominations.fetch_add(1, Ordering::Relaxed);
                }
                *self
                    .shared
                    .binding_request
                    .lock()
                    .expect("the binding request lock is never poisoned") = Some(data.clone());
            }
            if !self.shared.impairing.load(Ordering::SeqCst) {
                let _ = socket.send_to(&data, to).await;
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let impairment = &self.shared.impairment;
            if self.loss.lose(
                &mut self.rng,
                impairment.loss,
                impairment.loss_burst_packets,
            ) {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let delay_ms = if impairment.delay_ms.is_empty() {
                0.0
            } else {
                self.rng
                    .range_f64(impairment.delay_ms.start, impairment.delay_ms.end)
            };
            let mut delay = Duration::from_secs_f64(delay_ms / 1000.0);
            // Only impairments in use draw from the generator: the speech tests' seeds keep their pattern.
            if impairment.reorder > 0.0 && self.rng.chance(impairment.reorder) {
                delay += REORDER_HOLD;
                stats.reordered.fetch_add(1, Ordering::Relaxed);
            }
            let copies = if impairment.duplicate > 0.0 && self.rng.chance(impairment.duplicate) {
                stats.duplicated.fetch_add(1, Ordering::Relaxed);
                2
            } else {
                1
            };
            let now = Instant::now();
            if impairment.stall_chance > 0.0 && self.rng.chance(impairment.stall_chance) {
                self.stall_until = Some(now + impairment.stall);
            }
            let held = self.stall_until.filter(|end| *end > now);
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            // Held at the sending end until the stall ends; it then still takes its delay, in order behind
            // what the stall held before it (each 0.1 ms apart, sent by one task in turn), as do those that
            // come while the held ones are still on their way. (A duplicated one goes on its own.)
            let mut due = held.unwrap_or(now) + delay;
            if held.is_some() || self.last_held_due.is_some_and(|last| last > now) {
                if let Some(last) = self.last_held_due {
                    due = due.max(last + Duration::from_micros(100));
                }
                self.last_held_due = Some(due);
                if copies == 1 {
                    self.hold(Held {
                        due,
                        data,
                        socket,
                        to,
                    });
                    continue;
                }
            }
            if due <= now && copies == 1 {
                let _ = socket.send_to(&data, to).await;
                continue;
            }
            tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                let _ = socket.send_to(&data, to).await;
                if copies == 2 {
                    tokio::time::sleep(DUPLICATE_AFTER).await;
                    let _ = socket.send_to(&data, to).await;
                }
            });
        }
    }
}
