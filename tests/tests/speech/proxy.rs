//! A UDP impairment proxy on loopback: a client sends to [`Proxy::addr`] (its ICE remote candidate, see
//! `MediaOptions::via`), the proxy forwards to the server from a socket of its own and sends the server's
//! replies back to the client. Once [`Proxy::impair`] is called, every datagram in either direction is
//! dropped with a given probability (seeded, one generator per direction) or delayed by a uniform random
//! time, each datagram on its own, so they also arrive out of order.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media_core::sim::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What the proxy does to each datagram once impairing.
#[derive(Clone, Debug)]
pub struct Impairment {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// One-way delay added to each datagram, uniform in this range (milliseconds).
    pub delay_ms: Range<f64>,
}

/// Datagrams the proxy forwarded and dropped, both directions together.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Proxy {
    /// Where the client sends (its remote candidate).
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    impairing: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// One direction of the proxy.
struct Direction {
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    rng: Rng,
    impairment: Impairment,
    impairing: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
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
        let stats = Arc::new(ProxyStats::default());
        let impairing = Arc::new(AtomicBool::new(false));
        // The client's address, learnt from its first datagram (the server's replies go there).
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let direction = |from: &Arc<UdpSocket>, to: &Arc<UdpSocket>, seed| Direction {
            from: from.clone(),
            to: to.clone(),
            rng: Rng::new(seed),
            impairment: impairment.clone(),
            impairing: impairing.clone(),
            stats: stats.clone(),
        };
        let upstream = direction(&client_side, &server_side, seed);
        let downstream = direction(&server_side, &client_side, seed ^ 0x9e37_79b9_7f4a_7c15);
        let learnt = client.clone();
        let tasks = vec![
            tokio::spawn(upstream.run(move |from| {
                *learnt
                    .lock()
                    .expect("the client address lock is never poisoned") = Some(from);
                Some(server)
            })),
            tokio::spawn(downstream.run(move |from| {
                if from != server {
                    return None;
                }
                *client
                    .lock()
                    .expect("the client address lock is never poisoned")
            })),
        ];
        Ok(Proxy {
            addr,
            stats,
            impairing,
            tasks,
        })
    }

    /// Start impairing (until now datagrams pass at once and untouched).
    pub fn impair(&self) {
        self.impairing.store(true, Ordering::SeqCst);
    }

    /// (forwarded, dropped) datagrams so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stats.forwarded.load(Ordering::Relaxed),
            self.stats.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Direction {
    /// Forward every datagram received on `from` to `destination(source)` (None: nobody to send to yet).
    async fn run(mut self, destination: impl Fn(SocketAddr) -> Option<SocketAddr>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, source)) = self.from.recv_from(&mut buf).await else {
                return;
            };
            let Some(to) = destination(source) else {
                continue;
            };
            let data = buf[..n].to_vec();
            if !self.impairing.load(Ordering::SeqCst) {
                let _ = self.to.send_to(&data, to).await;
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.rng.chance(self.impairment.loss) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let delay_ms = self
                .rng
                .range_f64(self.impairment.delay_ms.start, self.impairment.delay_ms.end);
            let due = tokio::time::Instant::now() + Duration::from_secs_f64(delay_ms / 1000.0);
            let socket = self.to.clone();
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                let _ = socket.send_to(&data, to).await;
            });
        }
    }
}
