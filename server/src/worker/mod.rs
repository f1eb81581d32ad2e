//! Media workers: one thread per core, each owning one UDP socket (two in development mode, see
//! [`WorkerSpec::extra_udp`]), one ICE-TCP listener and its connections ([`crate::tcp`]), one [`MediaCore`]
//! and the rooms placed on it. A worker runs a single-threaded tokio runtime and waits for one of:
//! datagrams, a TCP frame, a command from signaling, or the core's next timeout. After every input it
//! drains the core until it returns a timeout.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::core::net::{offer_order, LocalCandidate, NetPath, NetTransmit, Transport};
use media_core::{CoreConfig, CoreStats, MediaCore, Output, ParticipantId};
use prometheus::core::AtomicI64;
use prometheus::core::{AtomicF64, AtomicU64, GenericCounter, GenericGauge};
use prometheus::local::LocalHistogram;
use signaling::media::{MediaCommand, MediaEvent};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

use crate::broadcast::{FrameSink, Taps};
use crate::metrics::MediaMetrics;
use crate::recording::RecordSink;
use crate::tcp::{self, CloseReason, TcpEvent};
use crate::udp::{self, MediaSocket};

mod commands;
mod sched;
mod tcp_conns;
pub mod trunk;
mod turns;

use tcp_conns::{tcp_listener, TcpState};

/// Commands waiting for a worker; beyond this, signaling waits (never the media loop).
const COMMAND_QUEUE: usize = 1024;
/// Queued datagrams that are sent at once, before the rest of a receive batch is handled: four
/// `sendmmsg` batches, so the extra system calls are at most one partly filled batch per flush, and only in
/// rooms large enough to fill them.
const FLUSH_AT_DATAGRAMS: usize = 4 * chorus_udp::BATCH;
/// How often the worker publishes its counters.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

pub struct WorkerSpec {
    pub index: usize,
    pub bind: SocketAddr,
    pub candidate: SocketAddr,
    pub connect_timeout: Duration,
    /// RTP read this long after it arrived is dropped unread (`CoreConfig::stale_rtp_after`).
    pub stale_rtp_after: Duration,
    /// `CoreConfig::loss_feedback_max_percent` (`media.loss_feedback_max_percent`).
    pub loss_feedback_max_percent: u8,
    /// `SelectorConfig::speakers_interval` (`media.speakers_interval_ms`).
    pub speakers_interval: Duration,
    /// The scheduler slice the worker's thread asks for (`media.worker_slice_us`); `None`: the kernel's.
    pub slice: Option<Duration>,
    pub socket_buffer_bytes: usize,
    /// Development mode with media on loopback: also receive on this (non-loopback interface) address, at
    /// the same port if free, and offer it as a second UDP host candidate. Browsers that pair with no
    /// loopback candidate (Firefox) connect through it.
    pub extra_udp: Option<IpAddr>,
    /// ICE-TCP, when enabled.
    pub tcp: Option<TcpSpec>,
    pub broadcast: BroadcastSpec,
    /// Trunk messages of spanned rooms to and from the other workers.
    pub trunk: trunk::TrunkSpec,
}

/// Listener streams and recordings: which rooms and participants to tap, and where their frames go.
pub struct BroadcastSpec {
    pub taps: Taps,
    pub frames: FrameSink,
    pub recorder: RecordSink,
    pub hls: crate::hls::HlsSink,
}

/// A worker's ICE-TCP listener.
pub struct TcpSpec {
    pub bind: SocketAddr,
    /// The address advertised in the TCP candidate (its port is the listener's).
    pub advertised_ip: IpAddr,
    pub max_connections: usize,
    /// A connection with no STUN verified by a peer this long after it opened is closed.
    pub stun_timeout: Duration,
}

/// A running worker. Its thread lives as long as the process: it stops when every command sender is gone.
pub struct WorkerHandle {
    pub local_addr: SocketAddr,
    /// The ICE-TCP listener's address, when enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// The development-mode second UDP address, when bound.
    pub extra_udp_addr: Option<SocketAddr>,
    pub commands: mpsc::Sender<MediaCommand>,
}

/// Bind the worker's sockets (so a busy port fails start-up) and start its thread.
pub fn spawn(spec: WorkerSpec, metrics: Arc<MediaMetrics>) -> io::Result<WorkerHandle> {
    let socket = chorus_udp::bind_pair(spec.bind)?;
    let local_addr = socket.receiver.local_addr()?;
    // The second address takes the same port when it is free there, any port otherwise: it is advertised
    // with whatever it got.
    let extra = match spec.extra_udp {
        Some(ip) => {
            let bound = chorus_udp::bind_pair(SocketAddr::new(ip, local_addr.port()))
                .or_else(|_| chorus_udp::bind_pair(SocketAddr::new(ip, 0)));
            match bound {
                Ok(s) => {
                    crate::udp::set_up_media_pair(&s, spec.socket_buffer_bytes);
                    let addr = s.receiver.local_addr()?;
                    tracing::info!(
                        worker = spec.index,
                        %addr,
                        "development mode: media also on a non-loopback interface, offered as a second \
                         host candidate (Firefox pairs with no loopback candidate)"
                    );
                    Some((s, addr))
                }
                Err(e) => {
                    tracing::warn!(worker = spec.index, %ip, error = %e,
                        "development mode: cannot bind media on the non-loopback interface");
                    None
                }
            }
        }
        None => None,
    };
    let listener = match &spec.tcp {
        Some(t) => {
            let l = tcp_listener(t.bind)?;
            let addr = l.local_addr()?;
            tracing::info!(worker = spec.index, %addr, "ICE-TCP listening");
            Some((l, SocketAddr::new(t.advertised_ip, addr.port())))
        }
        None => None,
    };
    let tcp_addr = listener.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    let extra_udp_addr = extra.as_ref().map(|(_, a)| *a);
    let (rcv, snd) = crate::udp::set_up_media_pair(&socket, spec.socket_buffer_bytes);
    tracing::info!(
        worker = spec.index,
        %local_addr,
        receive_buffer_bytes = rcv,
        send_buffer_bytes = snd,
        sending_sibling = socket.sender.is_some(),
        "media socket bound"
    );
    if rcv < spec.socket_buffer_bytes / 2 {
        tracing::warn!(
            worker = spec.index,
            requested = spec.socket_buffer_bytes,
            granted = rcv,
            "the kernel granted a smaller UDP receive buffer: raise net.core.rmem_max or run with \
             CAP_NET_ADMIN, or bursts may drop packets"
        );
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let index = spec.index;
    std::thread::Builder::new()
        .name(format!("chorus-media-{index}"))
        .spawn(move || {
            if let Some(slice) = spec.slice {
                sched::log_slice(index, slice, sched::request_slice(slice));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime with IO and timers builds on Linux");
            let span = info_span!("worker", index);
            let _enter = span.enter();
            runtime.block_on(async move {
                let socket =
                    udp::register(socket).expect("a non-blocking UDP socket registers with tokio");
                let extra = extra.map(|(s, addr)| {
                    let s =
                        udp::register(s).expect("a non-blocking UDP socket registers with tokio");
                    (s, addr)
                });
                let (tcp, tcp_events) = match (listener, &spec.tcp) {
                    (Some((listener, candidate)), Some(t)) => {
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .expect("a non-blocking TCP listener registers with tokio");
                        let (events_tx, events_rx) = mpsc::channel(tcp::EVENT_QUEUE);
                        tokio::spawn(tcp::accept_loop(
                            listener,
                            events_tx,
                            t.max_connections,
                            metrics.clone(),
                        ));
                        let state = TcpState {
                            candidate,
                            stun_timeout: t.stun_timeout,
                            conns: HashMap::new(),
                        };
                        (Some(state), Some(events_rx))
                    }
                    _ => (None, None),
                };
                Worker::new(spec, socket, extra, tcp, metrics)
                    .run(rx, tcp_events)
                    .await;
            });
        })?;
    Ok(WorkerHandle {
        local_addr,
        tcp_addr,
        extra_udp_addr,
        commands: tx,
    })
}

/// Wait until `socket` is readable; never, without one.
async fn readable(socket: Option<&MediaSocket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// The tap set once it changed; never again once its sender is gone.
async fn taps_changed(taps: &mut Option<Taps>) {
    let Some(rx) = taps else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        *taps = None;
        std::future::pending::<()>().await;
    }
}

/// The next connection event; never, without ICE-TCP.
async fn next_tcp_event(events: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Worker {
    index: usize,
    core: MediaCore,
    socket: MediaSocket,
    /// The UDP socket's candidate address (as advertised).
    udp_candidate: SocketAddr,
    /// Development mode's second UDP socket and its candidate address.
    extra: Option<(MediaSocket, SocketAddr)>,
    tcp: Option<TcpState>,
    /// Event queues of the participants on this worker.
    sessions: HashMap<ParticipantId, mpsc::Sender<MediaEvent>>,
    /// Datagrams produced by the current input, sent together (reused allocation).
    outbox: Vec<NetTransmit>,
    /// The outbox split by socket when it holds more than the primary UDP socket's (reused allocations).
    outbox_primary: Vec<NetTransmit>,
    outbox_extra: Vec<NetTransmit>,
    metrics: Arc<MediaMetrics>,
    last_stats: CoreStats,
    /// This worker's series of the per-worker metrics.
    rooms_gauge: GenericGauge<AtomicI64>,
    participants_gauge: GenericGauge<AtomicI64>,
    busy_counter: GenericCounter<AtomicF64>,
    /// Time spent handling input since the last publication.
    busy: Duration,
    core_counter: GenericCounter<AtomicF64>,
    /// Of `busy`, the time spent in the core on datagrams read from the UDP sockets.
    in_core: Duration,
    socket_yields_counter: GenericCounter<AtomicU64>,
    /// Whether the sockets go first (`turns.rs`).
    turns: turns::SocketTurns,
    /// Forwarding latency observations, published with the counters (no atomics per datagram).
    forwarding: LocalHistogram,
    /// How long each datagram read waited in its socket's receive queue (`chorus_udp_receive_delay_seconds`):
    /// the worker's own lateness, which `forwarding` does not see.
    receive_delay: LocalHistogram,
    /// The rooms with listener streams, and where their mix frames go.
    taps: Option<Taps>,
    frames: FrameSink,
    recorder: RecordSink,
    hls: crate::hls::HlsSink,
    /// The packet queues of the server-side source participants on this worker.
    sources: commands::SourceQueues,
    /// Spanned rooms' other shards.
    trunk: trunk::TrunkLink,
}

/// What one read of a media socket did.
struct UdpRead {
    /// The core's next wake-up, if anything was read.
    deadline: Option<Instant>,
    /// The read filled its batch: more is probably queued.
    full: bool,
}

impl UdpRead {
    const NOTHING: UdpRead = UdpRead {
        deadline: None,
        full: false,
    };
}

/// What woke the worker up.
enum Wake {
    Command(Option<MediaCommand>),
    Readable(io::Result<()>),
    ExtraReadable(io::Result<()>),
    Tcp(Option<TcpEvent>),
    Timeout,
    Stats,
    Taps,
    Source(Option<(ParticipantId, Option<media_core::SourcePacket>)>),
    Trunk(trunk::TrunkWake),
}

impl Worker {
    fn new(
        spec: WorkerSpec,
        socket: MediaSocket,
        extra: Option<(MediaSocket, SocketAddr)>,
        tcp: Option<TcpState>,
        metrics: Arc<MediaMetrics>,
    ) -> Self {
        let now = Instant::now();
        let seed = seed(spec.index);
        let mut config = CoreConfig::new(spec.candidate, seed);
        config.candidates.extend(
            extra
                .as_ref()
                .map(|(_, addr)| LocalCandidate::udp(*addr))
                .into_iter()
                .chain(tcp.as_ref().map(|t| LocalCandidate::tcp(t.candidate))),
        );
        offer_order(&mut config.candidates);
        config.connect_timeout = spec.connect_timeout;
        config.stale_rtp_after = spec.stale_rtp_after;
        config.loss_feedback_max_percent = spec.loss_feedback_max_percent;
        config.selector.speakers_interval = spec.speakers_interval;
        let candidates: Vec<String> = config
            .candidates
            .iter()
            .map(|c| format!("{} {}", c.transport.as_str(), c.addr))
            .collect();
        info!(bind = %spec.bind, candidates = ?candidates, "media worker started");
        let label = spec.index.to_string();
        Worker {
            trunk: trunk::TrunkLink::new(spec.index, spec.trunk, &metrics.trunk),
            taps: Some(spec.broadcast.taps),
            frames: spec.broadcast.frames,
            recorder: spec.broadcast.recorder,
            hls: spec.broadcast.hls,
            sources: commands::SourceQueues::default(),
            rooms_gauge: metrics.worker_rooms.with_label_values(&[&label]),
            participants_gauge: metrics.worker_participants.with_label_values(&[&label]),
            busy_counter: metrics.worker_busy.with_label_values(&[&label]),
            busy: Duration::ZERO,
            core_counter: metrics.worker_core.with_label_values(&[&label]),
            in_core: Duration::ZERO,
            socket_yields_counter: metrics.worker_socket_yields.with_label_values(&[&label]),
            turns: turns::SocketTurns::default(),
            forwarding: metrics.forwarding_latency.local(),
            receive_delay: metrics.receive_delay.local(),
            index: spec.index,
            core: MediaCore::new(now, config),
            socket,
            udp_candidate: spec.candidate,
            extra,
            tcp,
            sessions: HashMap::new(),
            outbox: Vec::with_capacity(256),
            outbox_primary: Vec::new(),
            outbox_extra: Vec::new(),
            metrics,
            last_stats: CoreStats::default(),
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<MediaCommand>,
        mut tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    ) {
        let mut batch = udp::RecvBatch::default();
        let mut next_stats = Instant::now() + STATS_INTERVAL;
        let mut deadline = self.drain();
        self.flush();
        loop {
            // Sockets that held the worker for a turn go after everything else (`turns.rs`).
            let sockets_yield = self.turns.sockets_yield(Instant::now());
            let wake = tokio::select! {
                biased;
                cmd = commands.recv() => Wake::Command(cmd),
                // Before the socket: a busy socket is always readable, and another shard's speakers are
                // as urgent as this one's (a few messages per 20 ms, each one wake).
                trunk = self.trunk.next() => Wake::Trunk(trunk),
                ready = readable(Some(&self.socket)), if !sockets_yield => Wake::Readable(ready),
                ready = readable(self.extra.as_ref().map(|(s, _)| s)), if !sockets_yield => {
                    Wake::ExtraReadable(ready)
                }
                event = next_tcp_event(&mut tcp_events) => Wake::Tcp(event),
                _ = tokio::time::sleep_until(deadline.into()), if !sockets_yield => Wake::Timeout,
                _ = tokio::time::sleep_until(next_stats.into()) => Wake::Stats,
                () = taps_changed(&mut self.taps) => Wake::Taps,
                packet = self.sources.next() => Wake::Source(packet),
                // Yielding: the timeout after the rest (a core past its capacity can be due again as soon
                // as it ran), and the second socket before the primary, so that cannot starve it either.
                _ = tokio::time::sleep_until(deadline.into()), if sockets_yield => Wake::Timeout,
                ready = readable(self.extra.as_ref().map(|(s, _)| s)), if sockets_yield => {
                    Wake::ExtraReadable(ready)
                }
                ready = readable(Some(&self.socket)), if sockets_yield => Wake::Readable(ready),
            };
            let woke = Instant::now();
            if sockets_yield && matches!(wake, Wake::Readable(_) | Wake::Timeout) {
                // The timeout or the primary socket ran as the last of the rest: the sockets get a new turn.
                self.turns.served_last();
            }
            match wake {
                Wake::Command(Some(cmd)) => {
                    self.command(cmd);
                    deadline = self.drain();
                    self.flush();
                }
                Wake::Command(None) => break,
                Wake::Source(Some((id, packet))) => {
                    self.source_packet(woke, id, packet);
                    deadline = self.drain();
                    self.flush();
                }
                Wake::Source(None) => {}
                Wake::Trunk(trunk::TrunkWake::Message(message)) => {
                    self.trunk_message(woke, message);
                    deadline = self.drain();
                    self.flush();
                }
                Wake::Trunk(trunk::TrunkWake::Spans) => {
                    let rooms = self.trunk.refresh();
                    self.core.set_spanned_rooms(woke, rooms);
                    deadline = self.drain();
                    self.flush();
                }
                Wake::Readable(Err(e)) | Wake::ExtraReadable(Err(e)) => {
                    warn!(error = %e, "socket not readable")
                }
                Wake::Readable(Ok(())) | Wake::ExtraReadable(Ok(())) => {
                    let read =
                        self.read_sockets(matches!(wake, Wake::ExtraReadable(_)), &mut batch);
                    if let Some(d) = read.deadline {
                        deadline = d;
                    }
                    self.turns.read(woke, read.full);
                }
                Wake::Tcp(None) => {
                    warn!("the ICE-TCP accept loop stopped");
                    tcp_events = None;
                }
                Wake::Tcp(Some(event)) => {
                    if let Some(d) = self.tcp_event(event) {
                        deadline = d;
                    }
                }
                Wake::Timeout => {
                    // The core has no clock: the mixer's cost is the wall time of the timeout passes in
                    // which its tick counter moved.
                    let ticks = self.core.stats().mix.ticks;
                    self.core.handle_timeout(woke);
                    deadline = self.drain();
                    self.flush();
                    if self.core.stats().mix.ticks > ticks {
                        self.metrics
                            .mixer_tick_duration
                            .observe(woke.elapsed().as_secs_f64());
                    }
                }
                Wake::Taps => {
                    if let Some(taps) = &mut self.taps {
                        let set = taps.borrow_and_update().clone();
                        self.core.set_broadcast_rooms(woke, set.rooms.clone());
                        self.core.set_tapped_participants(set.participants.clone());
                        deadline = self.drain();
                        self.flush();
                    }
                }
                // Below, after any wake-up: a worker past its capacity may never get here.
                Wake::Stats => {}
            }
            if woke >= next_stats {
                if let Some(tcp) = &mut self.tcp {
                    tcp.sweep(woke, &self.metrics);
                }
                self.publish_stats();
                next_stats = woke + STATS_INTERVAL;
            }
            self.busy += woke.elapsed();
        }
        self.publish_stats();
        info!(index = self.index, "media worker stopped");
    }

    /// Read the socket that woke the worker (the extra one if `extra`). A full batch means a busy worker:
    /// then both sockets are read in turn, a batch each, until neither fills its batch or the turn is over
    /// ([`turns::SOCKET_TURN`]). A busy socket is readable at every wake-up, so the other one would
    /// otherwise wait behind it, and a socket with more traffic gets the rounds the other leaves.
    fn read_sockets(&mut self, extra: bool, batch: &mut udp::RecvBatch) -> UdpRead {
        let start = Instant::now();
        let mut read = self.read_udp(extra, batch);
        if !read.full || self.extra.is_none() {
            return read;
        }
        // The socket read first and the other, and whether each may have more queued.
        let sockets = [extra, !extra];
        let mut more = [true, true];
        while more.contains(&true) && start.elapsed() < turns::SOCKET_TURN {
            for i in [1, 0] {
                if more[i] {
                    let r = self.read_udp(sockets[i], batch);
                    more[i] = r.full;
                    read.deadline = r.deadline.or(read.deadline);
                }
            }
        }
        read.full = more.contains(&true);
        read
    }

    /// Read a batch from the primary UDP socket (or the extra one), feed it datagram by datagram (draining
    /// after each), send once.
    fn read_udp(&mut self, extra: bool, batch: &mut udp::RecvBatch) -> UdpRead {
        let (socket, local) = match (extra, &self.extra) {
            (true, Some((s, addr))) => (s, *addr),
            _ => (&self.socket, self.udp_candidate),
        };
        match udp::read(socket, batch) {
            Ok(count) => {
                let now = Instant::now();
                let mut deadline = None;
                for (source, arrival, data) in batch.datagrams() {
                    // The kernel's receive time: the mixers' jitter buffers measure the network's jitter,
                    // not the worker's own lateness, and RTP that waited too long is shed.
                    let arrival = match arrival {
                        Some(a) => {
                            self.receive_delay
                                .observe(now.saturating_duration_since(a).as_secs_f64());
                            a
                        }
                        None => now,
                    };
                    let start = Instant::now();
                    self.core
                        .handle_datagram_read(now, arrival, NetPath::udp(local, source), data);
                    deadline = Some(self.drain());
                    self.in_core += start.elapsed();
                    // A large room's packet fans out to hundreds: what is queued leaves now rather than
                    // after the rest of the batch (a batch of talkers' packets in a room of 1,000 is tens
                    // of thousands of datagrams, and the first ones waited for all of them).
                    if self.outbox.len() >= FLUSH_AT_DATAGRAMS {
                        self.flush_read(now);
                    }
                }
                self.flush_read(now);
                UdpRead {
                    deadline,
                    full: count == chorus_udp::BATCH,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => UdpRead::NOTHING,
            // ICMP errors surface here on Linux; they concern one peer only.
            Err(e) => {
                debug!(error = %e, "recv failed");
                UdpRead::NOTHING
            }
        }
    }

    /// [`flush`](Self::flush) what datagrams read at `now` produced, and record how long after their reading
    /// they left (`chorus_forwarding_latency_seconds`).
    fn flush_read(&mut self, now: Instant) {
        let sent = self.flush();
        let latency = now.elapsed().as_secs_f64();
        for _ in 0..sent {
            self.forwarding.observe(latency);
        }
    }

    /// Drain the core after an input: dispatch events, queue datagrams; return the next wake-up.
    fn drain(&mut self) -> Instant {
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) => self.outbox.push(t),
                Output::Event(e) => self.event(e),
                Output::Broadcast(frame) => {
                    self.recorder.room_frame(&frame);
                    self.hls.room_frame(&frame);
                    self.frames.push(frame);
                }
                Output::Microphone(packet) => self.recorder.microphone(packet),
                Output::Trunk(message) => self.trunk.send(Instant::now(), message),
                Output::Timeout(t) => return t,
            }
        }
    }

    /// Send the queued datagrams in as few system calls as possible; returns how many were queued.
    fn flush(&mut self) -> usize {
        let queued = self.outbox.len();
        if queued == 0 {
            return 0;
        }
        let primary = self.udp_candidate;
        if self
            .outbox
            .iter()
            .all(|t| t.transport == Transport::Udp && t.source == primary)
        {
            // The common case: everything leaves on the primary socket, in one batch.
            let sent = udp::send_all(self.socket.send_fd(), &self.outbox);
            self.count_failed(sent.failed);
            for t in self.outbox.drain(..) {
                self.core.recycle(t.contents);
            }
            return queued;
        }
        let extra_addr = self.extra.as_ref().map(|(_, a)| *a);
        let mut failed = 0;
        for t in self.outbox.drain(..) {
            match t.transport {
                Transport::Udp if Some(t.source) == extra_addr => self.outbox_extra.push(t),
                Transport::Udp => self.outbox_primary.push(t),
                Transport::Tcp => {
                    let Some(tcp) = self.tcp.as_mut() else {
                        failed += 1;
                        continue;
                    };
                    let Some(conn) = tcp.conns.get(&t.destination) else {
                        // The connection closed meanwhile.
                        failed += 1;
                        continue;
                    };
                    if conn.handle.send(t.contents).is_err() {
                        // The client does not read: it costs its connection, nothing else.
                        tcp.conns.remove(&t.destination);
                        self.metrics.tcp_closed(CloseReason::SlowReader);
                        failed += 1;
                    }
                }
            }
        }
        if !self.outbox_primary.is_empty() {
            failed += udp::send_all(self.socket.send_fd(), &self.outbox_primary).failed;
        }
        if let (Some((socket, _)), false) = (&self.extra, self.outbox_extra.is_empty()) {
            failed += udp::send_all(socket.send_fd(), &self.outbox_extra).failed;
        }
        for t in self
            .outbox_primary
            .drain(..)
            .chain(self.outbox_extra.drain(..))
        {
            self.core.recycle(t.contents);
        }
        self.count_failed(failed);
        queued
    }

    fn count_failed(&self, failed: usize) {
        if failed > 0 {
            self.metrics.send_failed.inc_by(failed as u64);
        }
    }

    fn publish_stats(&mut self) {
        let now = self.core.stats().clone();
        self.metrics.add_delta(&self.last_stats, &now);
        self.last_stats = now;
        self.metrics.observe(&self.core.take_samples());
        self.forwarding.flush();
        self.receive_delay.flush();
        self.trunk.publish(&self.metrics.trunk);
        self.rooms_gauge.set(self.core.room_count() as i64);
        self.participants_gauge
            .set(self.core.participant_count() as i64);
        self.busy_counter.inc_by(self.busy.as_secs_f64());
        self.busy = Duration::ZERO;
        self.core_counter.inc_by(self.in_core.as_secs_f64());
        self.in_core = Duration::ZERO;
        self.socket_yields_counter.inc_by(self.turns.take_yields());
    }
}

/// The machine's first non-loopback, non-link-local interface address, IPv4 preferred; `None` without one.
pub fn first_non_loopback_ip() -> Option<IpAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot list network interfaces");
            return None;
        }
    };
    let usable: Vec<IpAddr> = interfaces
        .iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local())
        .map(|i| i.ip())
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        .collect();
    usable
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| usable.first())
        .copied()
}

/// Seeds slot stream sequence numbers; not security relevant (SRTP keys come from DTLS).
fn seed(index: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((index as u64 + 1) << 48) ^ u64::from(std::process::id())
}
