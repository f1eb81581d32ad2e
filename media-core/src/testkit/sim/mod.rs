//! A seeded, simulated datagram network for virtual-time tests of whole calls.
//!
//! Tests drive sans-IO peers and a [`crate`] core in virtual time: whatever one side sends goes into a
//! [`SimNet`] with [`SimNet::send`]; the test advances its clock to [`SimNet::next_delivery`] (or to the next
//! timeout of a peer, whichever is earlier) and hands every [`SimNet::deliver_due`] datagram to its
//! destination. Each direction of each address pair is a link with loss, delay, jitter, duplication and
//! optional reordering ([`LinkConfig`]); everything random comes from the seed, so a run is reproducible from
//! it. Each flow (one direction of an address pair) draws from its own generator, derived from the seed and the
//! two addresses, so the order in which the peers under test interleave their flows does not decide which flow
//! loses which packet. Creating a network also seeds str0m's DTLS timers ([`super::dtls`]).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A small, fast, seeded PRNG (SplitMix64). Not cryptographic; for simulations and tests.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (0 if `n` is 0). Lemire's multiply-shift; the bias is below 2⁻³² for `n` < 2³².
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// `true` with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fills `out` with random bytes.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Which datagrams of one flow are lost: the flow's state between datagrams. One model for the simulated
/// network ([`LinkConfig::loss_burst_packets`]) and the real-UDP test proxy.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossState {
    /// In the bad state of a bursty link: every datagram is lost.
    in_burst: bool,
}

impl LossState {
    /// Whether the next datagram is lost, `loss` of them on average (0..=1). With `burst_packets` up to 1
    /// each is lost on its own chance and only one random number is drawn. Above 1, losses come in runs of
    /// `burst_packets` datagrams on average: a Gilbert model whose bad state loses everything and is left
    /// with chance 1 / `burst_packets` per datagram, entered at the rate that keeps the average at `loss`.
    pub fn lose(&mut self, rng: &mut Rng, loss: f64, burst_packets: f64) -> bool {
        if burst_packets <= 1.0 {
            return rng.chance(loss);
        }
        let loss = loss.clamp(0.0, 0.999);
        self.in_burst = if self.in_burst {
            !rng.chance(1.0 / burst_packets)
        } else {
            rng.chance(loss / (burst_packets * (1.0 - loss)))
        };
        self.in_burst
    }
}

/// The behaviour of one direction of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Probability that a datagram is lost (0..=1), on average.
    pub loss: f64,
    /// The mean length of a run of lost datagrams. Up to 1, each datagram is lost on its own chance
    /// (`loss`); above 1, losses come in bursts ([`LossState::lose`]), as Wi-Fi and cellular links lose.
    /// No further random number is drawn while it is at most 1, so links without bursts keep their
    /// sequences.
    pub loss_burst_packets: f64,
    /// Extra delay per datagram, uniform in `[0, jitter_ms]` milliseconds, on top of `base_delay_ms`.
    pub jitter_ms: f64,
    /// Fixed one-way delay in milliseconds.
    pub base_delay_ms: f64,
    /// Probability that a (not lost) datagram is delivered twice, the copy with its own delay (0..=1).
    pub duplicate: f64,
    /// Whether jitter may reorder datagrams. If `false`, each (source, destination) flow is delivered in send
    /// order (a datagram waits for the ones sent before it, as behind a FIFO queue).
    pub reorder: bool,
    /// Probability per datagram that the flow stalls from it on (0..=1): it and every datagram the flow
    /// sends until the stall ends are held until then, then delivered in order. A Wi-Fi retry burst or a
    /// queue behind cross traffic: a calm link with a sudden delay spike, the case a jitter buffer's floor
    /// is for. No random number is drawn while it is 0, so links without stalls keep their sequences.
    pub stall_chance: f64,
    /// How long a stall holds the flow, milliseconds.
    pub stall_ms: f64,
}

impl Default for LinkConfig {
    /// A perfect link: no loss, no delay, no jitter, no duplicates, in order.
    fn default() -> Self {
        Self {
            loss: 0.0,
            loss_burst_packets: 0.0,
            jitter_ms: 0.0,
            base_delay_ms: 0.0,
            duplicate: 0.0,
            reorder: false,
            stall_chance: 0.0,
            stall_ms: 0.0,
        }
    }
}

impl LinkConfig {
    /// A perfect link with a fixed one-way delay.
    pub fn with_delay(base_delay_ms: f64) -> Self {
        Self {
            base_delay_ms,
            ..Self::default()
        }
    }

    /// A delay of `base_delay_ms + U(0, jitter_ms)` and a `loss` probability; reordering allowed.
    pub fn lossy(loss: f64, base_delay_ms: f64, jitter_ms: f64) -> Self {
        Self {
            loss,
            loss_burst_packets: 0.0,
            jitter_ms,
            base_delay_ms,
            duplicate: 0.0,
            reorder: true,
            stall_chance: 0.0,
            stall_ms: 0.0,
        }
    }
}

/// A datagram in flight or delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Where it was sent from.
    pub source: SocketAddr,
    /// Where it goes.
    pub destination: SocketAddr,
    /// The payload.
    pub data: Vec<u8>,
}

/// Counters of a [`SimNet`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams handed to [`SimNet::send`].
    pub sent: u64,
    /// Of those, lost.
    pub lost: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Datagrams (copies included) handed out by [`SimNet::deliver_due`].
    pub delivered: u64,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    /// Send order, breaking ties in delivery time (FIFO).
    order: u64,
    datagram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.order == other.order
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed, so that the max-heap yields the earliest delivery first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then(other.order.cmp(&self.order))
    }
}

type Flow = (SocketAddr, SocketAddr);

/// The seed of one flow's generator: the network's seed mixed with both addresses (a fixed function, unlike the
/// standard library's randomly keyed hasher).
fn flow_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    let mut mix = Rng::new(seed);
    let mut h = mix.next_u64();
    for addr in [from, to] {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_bits()),
            std::net::IpAddr::V6(v6) => v6.to_bits(),
        };
        for word in [ip as u64, (ip >> 64) as u64, u64::from(addr.port())] {
            h = Rng::new(h ^ word).next_u64();
        }
    }
    h
}

/// A simulated network. See the [module docs](self).
#[derive(Debug)]
pub struct SimNet {
    seed: u64,
    rng: Rng,
    /// One generator per flow, so that a flow's fate depends only on the seed and its own datagrams.
    flow_rngs: HashMap<Flow, Rng>,
    default_link: LinkConfig,
    links: HashMap<Flow, LinkConfig>,
    queue: BinaryHeap<InFlight>,
    /// Latest scheduled delivery per flow, for in-order links.
    flow_tail: HashMap<Flow, Instant>,
    /// The end of each flow's current (or last) stall.
    flow_stall: HashMap<Flow, Instant>,
    /// Each flow's loss state (its bursts, [`LinkConfig::loss_burst_packets`]).
    flow_loss: HashMap<Flow, LossState>,
    order: u64,
    stats: SimStats,
}

impl SimNet {
    /// A network where every link behaves as `default_link` unless overridden, with randomness from `seed`.
    /// Also makes str0m's DTLS timers in this process reproducible ([`super::dtls::install`]): create the network
    /// before its peers.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        super::dtls::install();
        Self {
            seed,
            rng: Rng::new(seed),
            flow_rngs: HashMap::new(),
            default_link,
            links: HashMap::new(),
            queue: BinaryHeap::new(),
            flow_tail: HashMap::new(),
            flow_stall: HashMap::new(),
            flow_loss: HashMap::new(),
            order: 0,
            stats: SimStats::default(),
        }
    }

    /// Overrides the link from `from` to `to` (one direction) for datagrams sent from now on.
    pub fn set_link(&mut self, from: SocketAddr, to: SocketAddr, config: LinkConfig) {
        self.links.insert((from, to), config);
    }

    /// Overrides both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: SocketAddr, b: SocketAddr, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// Removes the override of the link from `from` to `to`.
    pub fn clear_link(&mut self, from: SocketAddr, to: SocketAddr) {
        self.links.remove(&(from, to));
    }

    /// Stalls the flow from `from` to `to` for `duration` from `now`: what it sends until then is held and
    /// delivered in order when the stall ends (each datagram then still takes the link's delay), as
    /// [`LinkConfig::stall_chance`] does at random. One outage at a chosen moment: a Wi-Fi hand-over, a
    /// cellular radio's reconnection.
    pub fn stall(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, duration: Duration) {
        self.flow_stall.insert((from, to), now + duration);
    }

    /// Changes the behaviour of links without an override.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
    }

    /// The behaviour of the link from `from` to `to`.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// The network's random generator (e.g. to derive further test randomness from the same seed).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Sends a datagram at `now`: it is lost, or scheduled once (or twice, if duplicated) for delivery.
    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.stats.sent += 1;
        let link = self.link(from, to);
        let seed = self.seed;
        let rng = self
            .flow_rngs
            .entry((from, to))
            .or_insert_with(|| Rng::new(flow_seed(seed, from, to)));
        let lost = self.flow_loss.entry((from, to)).or_default().lose(
            rng,
            link.loss,
            link.loss_burst_packets,
        );
        if lost {
            self.stats.lost += 1;
            return;
        }
        let duplicate = rng.chance(link.duplicate);
        if link.stall_chance > 0.0 && rng.chance(link.stall_chance) {
            let end = now + Duration::from_secs_f64(link.stall_ms.max(0.0) / 1000.0);
            self.flow_stall.insert((from, to), end);
        }
        let mut jitter_ms = || {
            if link.jitter_ms > 0.0 {
                rng.range_f64(0.0, link.jitter_ms)
            } else {
                0.0
            }
        };
        let first = jitter_ms();
        let second = duplicate.then(&mut jitter_ms);
        let datagram = Datagram {
            source: from,
            destination: to,
            data,
        };
        if let Some(jitter) = second {
            self.stats.duplicated += 1;
            self.schedule(now, &link, jitter, datagram.clone());
        }
        self.schedule(now, &link, first, datagram);
    }

    fn schedule(&mut self, now: Instant, link: &LinkConfig, jitter_ms: f64, datagram: Datagram) {
        let delay_ms = (link.base_delay_ms + jitter_ms).max(0.0);
        let mut at = now + Duration::from_secs_f64(delay_ms / 1000.0);
        let flow = (datagram.source, datagram.destination);
        // Held at the sending end until the stall ends; it then still takes the link's delay.
        if let Some(&end) = self.flow_stall.get(&flow).filter(|end| now < **end) {
            at = at.max(end + Duration::from_secs_f64(link.base_delay_ms.max(0.0) / 1000.0));
        }
        if !link.reorder {
            let tail = self.flow_tail.entry(flow).or_insert(at);
            if *tail > at {
                at = *tail;
            }
            *tail = at;
        }
        self.order += 1;
        self.queue.push(InFlight {
            at,
            order: self.order,
            datagram,
        });
    }

    /// When the next datagram is due, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|f| f.at)
    }

    /// The next datagram due at `now` (in delivery-time order, ties in send order), or `None`. Call it until
    /// it returns `None`.
    pub fn deliver_due(&mut self, now: Instant) -> Option<Datagram> {
        if self.queue.peek()?.at > now {
            return None;
        }
        let f = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(f.datagram)
    }

    /// How many datagrams (copies included) are in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
