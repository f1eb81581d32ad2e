//! Media workers: one thread per core, each owning one UDP socket, one [`MediaCore`] and the rooms placed on
//! it. A worker runs a single-threaded tokio runtime and waits for one of: datagrams, a command from
//! signaling, or the core's next timeout. After every input it drains the core until it returns a timeout.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_core::peer::Transmit;
use media_core::{
    CoreConfig, CoreEvent, CoreStats, JoinParams, MediaCore, Output, ParticipantId, RoomConfig,
    RoomId,
};
use signaling::media::{MediaCommand, MediaError, MediaEvent, MediaRouter, SlotAssignment};
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
    last_rooms: usize,
    last_participants: usize,
}

impl Worker {
    fn new(spec: WorkerSpec, socket: UdpSocket, metrics: Arc<MediaMetrics>) -> Self {
        let now = Instant::now();
        let seed = seed(spec.index);
        let mut config = CoreConfig::new(spec.candidate, seed);
        config.connect_timeout = spec.connect_timeout;
        info!(bind = %spec.bind, candidate = %spec.candidate, "media worker started");
        Worker {
            index: spec.index,
            core: MediaCore::new(now, config),
            socket,
            sessions: HashMap::new(),
            outbox: Vec::with_capacity(256),
            metrics,
            last_stats: CoreStats::default(),
            last_rooms: 0,
            last_participants: 0,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<MediaCommand>) {
        let mut batch = udp::RecvBatch::default();
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = self.drain();
        self.flush();
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                ready = self.socket.readable() => {
                    if let Err(e) = ready {
                        warn!(error = %e, "socket not readable");
                        continue;
                    }
                    // Read a batch, feed it datagram by datagram (draining after each), send once.
                    let fd = self.socket.as_raw_fd();
                    let received = self.socket.try_io(tokio::io::Interest::READABLE, || {
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
                            self.flush();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // ICMP errors surface here on Linux; they concern one peer only.
                        Err(e) => debug!(error = %e, "recv failed"),
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.core.handle_timeout(Instant::now());
                }
                _ = stats_tick.tick() => {
                    self.publish_stats();
                    continue;
                }
            }
            deadline = self.drain();
            self.flush();
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

    /// Send the queued datagrams in as few system calls as possible.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let sent = udp::send_all(self.socket.as_raw_fd(), &self.outbox);
        if sent.failed > 0 {
            self.metrics.send_failed.inc_by(sent.failed as u64);
        }
        self.outbox.clear();
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
                let id = ParticipantId(participant);
                let span = info_span!("participant", room = %room, participant = %id);
                let _enter = span.enter();
                let result = self
                    .core
                    .add_participant(
                        now,
                        &RoomId(room),
                        RoomConfig::forward(settings.slots as usize),
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
                            media_core::CoreError::AlreadyConnected(_) => {
                                MediaError::AlreadyConnected
                            }
                            other => MediaError::BadSdp(other.to_string()),
                        }
                    });
                if result.is_ok() {
                    self.sessions.insert(id, events);
                }
                // The session may have gone away meanwhile; its Leave follows.
                let _ = reply.send(result);
            }
            MediaCommand::Mute { participant, muted } => {
                let _ = self.core.set_muted(ParticipantId(participant), muted);
            }
            MediaCommand::Leave { participant } => {
                let id = ParticipantId(participant);
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
                let slots = slots
                    .into_iter()
                    .map(|s| SlotAssignment {
                        slot: s.index.0,
                        mid: s.mid,
                        participant: s.occupant.map(|(p, _)| p.0),
                        ssrc: s.occupant.and_then(|(_, ssrc)| ssrc).map(|s| s.0),
                    })
                    .collect();
                self.send(subscriber, MediaEvent::Slots(slots));
            }
            CoreEvent::Speakers { room, speakers } => {
                let list: Vec<(u64, f32)> = speakers.into_iter().map(|(p, l)| (p.0, l)).collect();
                let members: Vec<ParticipantId> = self.core.room_members(&room).to_vec();
                for member in members {
                    self.send(member, MediaEvent::Speakers(list.clone()));
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
        let rooms = self.core.room_count();
        let participants = self.core.participant_count();
        self.metrics
            .rooms
            .add(rooms as i64 - self.last_rooms as i64);
        self.metrics
            .participants
            .add(participants as i64 - self.last_participants as i64);
        self.last_rooms = rooms;
        self.last_participants = participants;
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
