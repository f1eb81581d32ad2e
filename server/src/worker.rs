//! Media workers: one thread per core, each owning one UDP socket, one [`MediaCore`] and the rooms placed on
//! it. A worker runs a single-threaded tokio runtime and waits for one of: datagrams, a command from
//! signaling, or the core's next timeout. After every input it drains the core until it returns a timeout.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_core::peer::Transmit;
use media_core::{
    CoreConfig, CoreError, CoreEvent, CoreStats, JoinParams, MediaCore, Output, ParticipantId,
    RoomId,
};
use prometheus::core::AtomicI64;
use prometheus::core::{AtomicF64, GenericCounter, GenericGauge};
use prometheus::local::LocalHistogram;
use signaling::media::{MediaCommand, MediaError, MediaEvent, MediaRouter};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

use crate::metrics::MediaMetrics;
use crate::udp;

/// Commands waiting for a worker; beyond this, signaling waits (never the media loop).
const COMMAND_QUEUE: usize = 1024;
/// How often the worker publishes its counters.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

pub struct WorkerSpec {
    pub index: usize,
    pub bind: SocketAddr,
    pub candidate: SocketAddr,
    pub connect_timeout: Duration,
    pub socket_buffer_bytes: usize,
}

/// A running worker. Its thread lives as long as the process: it stops when every command sender is gone.
pub struct WorkerHandle {
    pub local_addr: SocketAddr,
    pub commands: mpsc::Sender<MediaCommand>,
}

/// Bind the worker's socket (so a busy port fails start-up) and start its thread.
pub fn spawn(spec: WorkerSpec, metrics: Arc<MediaMetrics>) -> io::Result<WorkerHandle> {
    let socket = StdUdpSocket::bind(spec.bind)?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let (rcv, snd) = crate::udp::set_buffer_sizes(&socket, spec.socket_buffer_bytes);
    tracing::info!(
        worker = spec.index,
        %local_addr,
        receive_buffer_bytes = rcv,
        send_buffer_bytes = snd,
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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime with IO and timers builds on Linux");
            let span = info_span!("worker", index);
            let _enter = span.enter();
            runtime.block_on(async move {
                let socket = UdpSocket::from_std(socket)
                    .expect("a non-blocking UDP socket registers with tokio");
                Worker::new(spec, socket, metrics).run(rx).await;
            });
        })?;
    Ok(WorkerHandle {
        local_addr,
        commands: tx,
    })
}

struct Worker {
    index: usize,
    core: MediaCore,
    socket: UdpSocket,
    /// Event queues of the participants on this worker.
    sessions: HashMap<ParticipantId, mpsc::Sender<MediaEvent>>,
    /// Datagrams produced by the current input, sent together (reused allocation).
    outbox: Vec<Transmit>,
    metrics: Arc<MediaMetrics>,
    last_stats: CoreStats,
    /// This worker's series of the per-worker metrics.
    rooms_gauge: GenericGauge<AtomicI64>,
    participants_gauge: GenericGauge<AtomicI64>,
    busy_counter: GenericCounter<AtomicF64>,
    /// Time spent handling input since the last publication.
    busy: Duration,
    /// Forwarding latency observations, published with the counters (no atomics per datagram).
    forwarding: LocalHistogram,
}

/// What woke the worker up.
enum Wake {
    Command(Option<MediaCommand>),
    Readable(io::Result<()>),
    Timeout,
    Stats,
}

impl Worker {
    fn new(spec: WorkerSpec, socket: UdpSocket, metrics: Arc<MediaMetrics>) -> Self {
        let now = Instant::now();
        let seed = seed(spec.index);
        let mut config = CoreConfig::new(spec.candidate, seed);
        config.connect_timeout = spec.connect_timeout;
        info!(bind = %spec.bind, candidate = %spec.candidate, "media worker started");
        let label = spec.index.to_string();
        Worker {
            rooms_gauge: metrics.worker_rooms.with_label_values(&[&label]),
            participants_gauge: metrics.worker_participants.with_label_values(&[&label]),
            busy_counter: metrics.worker_busy.with_label_values(&[&label]),
            busy: Duration::ZERO,
            forwarding: metrics.forwarding_latency.local(),
            index: spec.index,
            core: MediaCore::new(now, config),
            socket,
            sessions: HashMap::new(),
            outbox: Vec::with_capacity(256),
            metrics,
            last_stats: CoreStats::default(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<MediaCommand>) {
        let mut batch = udp::RecvBatch::default();
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = self.drain();
        self.flush();
        loop {
            let wake = tokio::select! {
                biased;
                cmd = commands.recv() => Wake::Command(cmd),
                ready = self.socket.readable() => Wake::Readable(ready),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timeout,
                _ = stats_tick.tick() => Wake::Stats,
            };
            let woke = Instant::now();
            match wake {
                Wake::Command(Some(cmd)) => {
                    self.command(cmd);
                    deadline = self.drain();
                    self.flush();
                }
                Wake::Command(None) => break,
                Wake::Readable(Err(e)) => warn!(error = %e, "socket not readable"),
                Wake::Readable(Ok(())) => {
                    // Read a batch, feed it datagram by datagram (draining after each), send once.
                    let fd = self.socket.as_fd();
                    let received =
                        self.socket.try_io(tokio::io::Interest::READABLE, || {
                            match batch.recv(fd) {
                                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                                other => other,
                            }
                        });
                    match received {
                        Ok(_) => {
                            let now = Instant::now();
                            for (source, data) in batch.datagrams() {
                                self.core.handle_datagram(now, source, data);
                                deadline = self.drain();
                            }
                            let sent = self.flush();
                            // Every datagram this batch produced left in this flush.
                            let latency = now.elapsed().as_secs_f64();
                            for _ in 0..sent {
                                self.forwarding.observe(latency);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // ICMP errors surface here on Linux; they concern one peer only.
                        Err(e) => debug!(error = %e, "recv failed"),
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
                Wake::Stats => self.publish_stats(),
            }
            self.busy += woke.elapsed();
        }
        self.publish_stats();
        info!(index = self.index, "media worker stopped");
    }

    /// Drain the core after an input: dispatch events, queue datagrams; return the next wake-up.
    fn drain(&mut self) -> Instant {
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) => self.outbox.push(t),
                Output::Event(e) => self.event(e),
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
        let sent = udp::send_all(&self.socket, &self.outbox);
        if sent.failed > 0 {
            self.metrics.send_failed.inc_by(sent.failed as u64);
        }
        self.outbox.clear();
        queued
    }

    fn command(&mut self, cmd: MediaCommand) {
        let now = Instant::now();
        match cmd {
            MediaCommand::Connect {
                room,
                settings,
                participant,
                can_publish,
                can_subscribe,
                muted,
                offer_sdp,
                events,
                reply,
            } => {
                let id = participant;
                let span = info_span!("participant", room = %room, participant = %id);
                let _enter = span.enter();
                let result = self
                    .core
                    .add_participant(
                        now,
                        &RoomId(room),
                        settings,
                        id,
                        JoinParams {
                            can_publish,
                            can_subscribe,
                            muted,
                        },
                        &offer_sdp,
                    )
                    .map_err(|e| {
                        debug!(error = %e, "offer refused");
                        match e {
                            CoreError::AlreadyConnected(_) => MediaError::AlreadyConnected,
                            CoreError::BadRoomSettings(why) => MediaError::BadRoomSettings(why),
                            CoreError::RoomSettingsConflict(_) => MediaError::RoomSettingsConflict,
                            other => MediaError::BadSdp(other.client_message()),
                        }
                    });
                if result.is_ok() {
                    self.sessions.insert(id, events);
                }
                // The session may have gone away meanwhile; its Leave follows.
                let _ = reply.send(result);
            }
            MediaCommand::Mute {
                participant: id,
                muted,
            } => {
                let _enter = info_span!("participant", participant = %id).entered();
                if let Err(e) = self.core.set_muted(id, muted) {
                    // Not connected yet: the state reaches the worker with the offer.
                    debug!(error = %e, muted, "mute for a participant without media");
                }
            }
            MediaCommand::Leave { participant: id } => {
                let _enter = info_span!("participant", participant = %id).entered();
                debug!("participant leaves");
                self.sessions.remove(&id);
                let _ = self.core.remove_participant(now, id);
            }
        }
    }

    fn event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Connected(id) => self.send(id, MediaEvent::Connected),
            CoreEvent::Disconnected {
                participant,
                reason,
            } => {
                self.send(
                    participant,
                    MediaEvent::Disconnected {
                        reason: reason.to_owned(),
                    },
                );
                self.sessions.remove(&participant);
            }
            CoreEvent::Slots { subscriber, slots } => {
                self.send(subscriber, MediaEvent::Slots(slots));
            }
            CoreEvent::Speakers { room, speakers } => {
                let members: Vec<ParticipantId> = self.core.room_members(&room).to_vec();
                for member in members {
                    self.send(member, MediaEvent::Speakers(speakers.clone()));
                }
            }
            CoreEvent::DominantSpeaker { room, participant } => {
                let members: Vec<ParticipantId> = self.core.room_members(&room).to_vec();
                for member in members {
                    self.send(member, MediaEvent::DominantSpeaker(participant));
                }
            }
        }
    }

    /// Queue an event for a participant's session; a full queue is a counted drop.
    fn send(&mut self, id: ParticipantId, event: MediaEvent) {
        if let Some(tx) = self.sessions.get(&id) {
            if tx.try_send(event).is_err() {
                self.metrics.events_dropped.inc();
            }
        }
    }

    fn publish_stats(&mut self) {
        let now = self.core.stats().clone();
        self.metrics.add_delta(&self.last_stats, &now);
        self.last_stats = now;
        self.metrics.observe(&self.core.take_samples());
        self.forwarding.flush();
        self.rooms_gauge.set(self.core.room_count() as i64);
        self.participants_gauge
            .set(self.core.participant_count() as i64);
        self.busy_counter.inc_by(self.busy.as_secs_f64());
        self.busy = Duration::ZERO;
    }
}

/// Seeds slot stream sequence numbers; not security relevant (SRTP keys come from DTLS).
fn seed(index: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((index as u64 + 1) << 48) ^ u64::from(std::process::id())
}

/// Places rooms on workers: a room lives on one worker; new rooms go to the worker with fewest rooms.
pub struct Placement {
    workers: Vec<mpsc::Sender<MediaCommand>>,
    rooms: Mutex<HashMap<String, usize>>,
}

impl Placement {
    pub fn new(workers: Vec<mpsc::Sender<MediaCommand>>) -> Self {
        assert!(
            !workers.is_empty(),
            "at least one media worker is configured"
        );
        Placement {
            workers,
            rooms: Mutex::new(HashMap::new()),
        }
    }
}

impl MediaRouter for Placement {
    fn route(&self, room: &str) -> mpsc::Sender<MediaCommand> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&w) = rooms.get(room) {
            return self.workers[w].clone();
        }
        let mut load = vec![0usize; self.workers.len()];
        for &w in rooms.values() {
            load[w] += 1;
        }
        let w = (0..self.workers.len())
            .min_by_key(|&i| (load[i], i))
            .expect("there is at least one worker");
        rooms.insert(room.to_owned(), w);
        self.workers[w].clone()
    }

    fn room_closed(&self, room: &str) {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_over_workers_and_stick() {
        let (a, _ra) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(1);
        let p = Placement::new(vec![a.clone(), b.clone()]);
        let r1 = p.route("one");
        let r2 = p.route("two");
        assert!(!r1.same_channel(&r2));
        assert!(p.route("one").same_channel(&r1));
        p.room_closed("one");
        assert!(p.route("three").same_channel(&r1));
    }
}
