//! The media engine: every simulated participant's str0m client peer, driven by one thread over one
//! socket ([`crate::net::MultiSocket`]).
//!
//! The thread waits (`ppoll`) on the socket, a socket pair that signals commands, and the earliest timer
//! (a str0m timeout or a publisher's next 20 ms frame). Received datagrams are routed to a participant by
//! the loopback address they were sent to; everything the peers want sent goes out in `sendmmsg`
//! batches. Publishers re-send pre-encoded Opus frames ([`crate::audio::Frames`]) with a send-time stamp
//! in the Opus padding; subscribers count every received packet per stream (loss, jitter), read the stamp
//! back (forward-mode latency) and, if they are latency probes in mix mode, decode and look for chirps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audio::FRAME_SAMPLES;
use media_core::client::{ClientConfig, ClientOutput, ClientPeer, ReceivedAudio};
use tokio::sync::oneshot;

use crate::audio::{ChirpDetector, Frames};
use crate::net::{participant_index, participant_ip, MultiSocket, Outgoing};
use crate::stamp::{self, Stamp};
use crate::stats::StreamStats;
use crate::talk::{Rng, TalkModel, Talker};

const FRAME: Duration = Duration::from_millis(20);

/// How the engine runs.
#[derive(Clone)]
pub struct EngineConfig {
    /// Bind the socket to this device ("lo"); `None` inside a private network namespace.
    pub device: Option<String>,
    /// Share of outgoing RTP packets to drop on purpose (a known loss for testing the measurements).
    pub drop_rtp: f64,
    pub seed: u64,
    /// Time zero of the run: stamps carry nanoseconds since it.
    pub epoch: Instant,
    pub frames: Arc<Frames>,
    /// Mix mode: one chirp every this long from each room's chirp publisher.
    pub chirp_period: Option<Duration>,
    /// In talk pauses send nothing (Opus DTX); otherwise send encoded silence every 20 ms, as a browser
    /// does by default.
    pub dtx: bool,
}

/// What a new participant is.
#[derive(Clone, Copy, Debug)]
pub struct ParticipantSpec {
    pub index: usize,
    pub room: usize,
    pub slots: usize,
    /// Publishes audio with this talk model.
    pub talk: Option<TalkModel>,
    /// Voice (tone) to send.
    pub voice: usize,
    /// Sends chirps (mix mode).
    pub chirper: bool,
    /// Decodes what it receives and detects chirps (mix mode).
    pub probe: bool,
    /// The shape of its WebRTC session.
    pub shape: PeerShape,
}

/// The m-lines a participant offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerShape {
    /// Chorus: a microphone m-line plus `slots` receive-only slots.
    Slots,
    /// One send-receive m-line (a mixer such as Janus AudioBridge).
    SendRecv,
}

/// Media milestones of one participant.
pub struct Milestones {
    pub connected: oneshot::Receiver<Instant>,
    pub first_audio: oneshot::Receiver<Instant>,
}

/// Engine counters (cumulative) and the latency samples since the previous snapshot.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub at: Option<Instant>,
    pub participants: usize,
    pub connected: usize,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_rtp: u64,
    /// Datagrams the tool sent that are not RTP (RTCP, STUN, DTLS).
    pub tx_other: u64,
    pub injected_drops: u64,
    pub send_errors: u64,
    pub expected: u64,
    pub received: u64,
    pub disconnects: u64,
    pub peer_errors: u64,
    /// Forward mode: send → receive latency of stamped packets, ms, since the previous snapshot.
    pub latency_ms: Vec<f64>,
    /// Mix mode: chirp send → detected in the mix, ms (codec delay removed), since the previous snapshot.
    pub chirp_ms: Vec<f64>,
    /// CPU seconds of the engine thread so far.
    pub engine_cpu_s: f64,
    /// Datagrams the kernel dropped on the tool's full receive queue (the tool fell behind).
    pub tool_socket_drops: u64,
    /// Per room: (expected, received) packets of every stream so far, retired participants included.
    pub by_room: std::collections::BTreeMap<usize, (u64, u64)>,
    /// Every participant still in the engine and alive: (index, arrival of its latest audio packet).
    pub live: Vec<(usize, Option<Instant>)>,
}

/// One received stream's final figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamReport {
    pub participant: usize,
    pub ssrc: u32,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub jitter_ms: f64,
}

enum Command {
    Create {
        spec: ParticipantSpec,
        reply: oneshot::Sender<Result<(String, Milestones), String>>,
    },
    CreateAnswering {
        spec: ParticipantSpec,
        offer: String,
        reply: oneshot::Sender<Result<(String, Milestones), String>>,
    },
    Answer {
        index: usize,
        sdp: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Remove {
        index: usize,
    },
    Retire {
        index: usize,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Stop {
        reply: oneshot::Sender<Vec<StreamReport>>,
    },
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the engine thread has stopped")]
    Stopped,
    #[error("{0}")]
    Peer(String),
}

/// Wakes the engine thread when a command is queued: a byte on one end of a socket pair makes the
/// other end readable until [`Waker::clear`] reads it.
struct Waker {
    tx: UnixStream,
    rx: UnixStream,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Waker { tx, rx })
    }

    fn wake(&self) {
        // A full pair (WouldBlock) is already readable, so it still wakes.
        let _ = (&self.tx).write(&[1]);
    }

    fn clear(&self) {
        let mut pending = [0u8; 64];
        while matches!((&self.rx).read(&mut pending), Ok(n) if n > 0) {}
    }
}

/// A handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    port: u16,
}

impl Engine {
    /// Bind the socket and start the thread.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let socket = MultiSocket::bind(0, config.device.as_deref())?;
        let port = socket.port();
        let waker = Arc::new(Waker::new()?);
        let (tx, rx) = mpsc::channel();
        let w = waker.clone();
        std::thread::Builder::new()
            .name("loadtest-media".into())
            .spawn(move || Loop::new(config, socket, rx, w).run())?;
        Ok(Engine { tx, waker, port })
    }

    /// The local address participant `index` uses.
    pub fn local_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(participant_ip(index), self.port))
    }

    fn send(&self, c: Command) -> Result<(), EngineError> {
        self.tx.send(c).map_err(|_| EngineError::Stopped)?;
        self.waker.wake();
        Ok(())
    }

    /// Create a participant's peer; returns its SDP offer and its milestones.
    pub async fn create(&self, spec: ParticipantSpec) -> Result<(String, Milestones), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Create { spec, reply })?;
        rx.await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::Peer)
    }

    /// Create a receive-only participant from the server's offer; returns its SDP answer.
    pub async fn create_answering(
        &self,
        spec: ParticipantSpec,
        offer: String,
    ) -> Result<(String, Milestones), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::CreateAnswering { spec, offer, reply })?;
        rx.await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::Peer)
    }

    /// Apply the server's answer; ICE and DTLS start.
    pub async fn answer(&self, index: usize, sdp: String) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Answer { index, sdp, reply })?;
        rx.await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::Peer)
    }

    pub fn remove(&self, index: usize) {
        let _ = self.send(Command::Remove { index });
    }

    /// Drop participant `index` for good (it left): its peer goes silent at once and its memory is
    /// freed; its streams' counts stay in the totals (and in [`Snapshot::by_room`]).
    pub fn retire(&self, index: usize) {
        let _ = self.send(Command::Retire { index });
    }

    pub async fn snapshot(&self) -> Result<Snapshot, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Snapshot { reply })?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Stop the thread; returns every received stream's figures.
    pub async fn stop(&self) -> Result<Vec<StreamReport>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stop { reply })?;
        rx.await.map_err(|_| EngineError::Stopped)
    }
}

struct Participant {
    spec: ParticipantSpec,
    peer: ClientPeer,
    ip: Ipv4Addr,
    talker: Option<Talker>,
    frame_no: usize,
    /// The str0m timeout currently scheduled.
    timeout: Option<Instant>,
    next_frame: Option<Instant>,
    connected: Option<oneshot::Sender<Instant>>,
    first_audio: Option<oneshot::Sender<Instant>>,
    streams: HashMap<u32, StreamStats>,
    decoder: Option<opus::Decoder>,
    detector: ChirpDetector,
    /// Remaining chirp-sequence frames to send (index into `Frames::chirp`), if a chirp is under way.
    chirp_pos: Option<usize>,
    next_chirp: Option<Instant>,
    alive: bool,
    last_audio: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Peer,
    Frame,
}

struct Loop {
    config: EngineConfig,
    socket: MultiSocket,
    rx: mpsc::Receiver<Command>,
    waker: Arc<Waker>,
    parts: Vec<Option<Participant>>,
    timers: BinaryHeap<Reverse<(Instant, Timer, usize)>>,
    out: Vec<Outgoing>,
    rng: Rng,
    snap: Snapshot,
    /// Per room: send time of the latest chirp.
    chirps: HashMap<usize, Instant>,
    stamped: Vec<u8>,
    pcm: Vec<f32>,
    /// Kernel arrival time of the datagram being handled (RTP in it is timed by this).
    arrival: Option<Instant>,
    /// Per room: (expected, received) of the streams of retired participants.
    retired: std::collections::BTreeMap<usize, (u64, u64)>,
}

fn is_rtp(d: &[u8]) -> bool {
    // RFC 7983: 128..=191 is RTP or RTCP; RTCP packet types 192..=223 sit in the second byte
    // (RFC 5761: with the marker bit, 64..=95 after masking).
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

impl Loop {
    fn new(
        config: EngineConfig,
        socket: MultiSocket,
        rx: mpsc::Receiver<Command>,
        waker: Arc<Waker>,
    ) -> Loop {
        let rng = Rng::new(config.seed ^ 0xD509);
        Loop {
            config,
            socket,
            rx,
            waker,
            parts: Vec::new(),
            timers: BinaryHeap::new(),
            out: Vec::with_capacity(crate::net::BATCH * 4),
            rng,
            snap: Snapshot::default(),
            chirps: HashMap::new(),
            stamped: Vec::with_capacity(1500),
            pcm: vec![0f32; FRAME_SAMPLES * 6],
            arrival: None,
            retired: std::collections::BTreeMap::new(),
        }
    }

    fn run(mut self) {
        loop {
            while let Ok(cmd) = self.rx.try_recv() {
                if let Some(reply) = self.command(cmd) {
                    let streams = self.streams();
                    let _ = reply.send(streams);
                    return;
                }
            }
            // Read what is waiting (bounded, so timers are not starved under a flood).
            for _ in 0..16 {
                match self.socket.recv_batch() {
                    Ok(0) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        for i in 0..n {
                            self.datagram(now, i);
                        }
                        self.flush();
                    }
                    Err(_) => break,
                }
            }
            self.timers_due();
            self.flush();
            let wait = self
                .timers
                .peek()
                .map(|Reverse((t, _, _))| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            if !wait.is_zero() {
                self.wait(wait);
            }
        }
    }

    fn wait(&self, wait: Duration) {
        let woken = chorus_udp::wait_readable([self.socket.as_fd(), self.waker.rx.as_fd()], wait);
        if matches!(woken, Ok([_, true])) {
            self.waker.clear();
        }
    }

    fn command(&mut self, cmd: Command) -> Option<oneshot::Sender<Vec<StreamReport>>> {
        let now = Instant::now();
        match cmd {
            Command::Create { spec, reply } => {
                let _ = reply.send(self.create(now, spec, None));
            }
            Command::CreateAnswering { spec, offer, reply } => {
                let r = self.create(now, spec, Some(&offer));
                if r.is_ok() {
                    self.drain(now, spec.index);
                }
                let _ = reply.send(r);
            }
            Command::Answer { index, sdp, reply } => {
                let r = match self.parts.get_mut(index).and_then(|p| p.as_mut()) {
                    Some(p) => p.peer.accept_answer(&sdp).map_err(|e| e.to_string()),
                    None => Err(format!("no participant {index}")),
                };
                if r.is_ok() {
                    self.drain(now, index);
                }
                let _ = reply.send(r);
            }
            Command::Remove { index } => {
                if let Some(p) = self.parts.get_mut(index).and_then(|p| p.as_mut()) {
                    p.alive = false;
                }
            }
            Command::Retire { index } => {
                if let Some(p) = self.parts.get_mut(index).and_then(|p| p.take()) {
                    let e = self.retired.entry(p.spec.room).or_default();
                    for s in p.streams.values() {
                        e.0 += s.expected();
                        e.1 += s.received;
                    }
                }
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Stop { reply } => return Some(reply),
        }
        None
    }

    fn create(
        &mut self,
        now: Instant,
        spec: ParticipantSpec,
        remote_offer: Option<&str>,
    ) -> Result<(String, Milestones), String> {
        let ip = participant_ip(spec.index);
        let local_addr = SocketAddr::V4(SocketAddrV4::new(ip, self.socket.port()));
        let created = match (remote_offer, spec.shape) {
            (Some(offer), _) => ClientPeer::from_offer(now, local_addr, offer),
            (None, PeerShape::SendRecv) => ClientPeer::new_sendrecv(now, local_addr),
            (None, PeerShape::Slots) => ClientPeer::new(
                now,
                ClientConfig {
                    local_addr,
                    slots: spec.slots,
                    publish: spec.talk.is_some(),
                    red: 0,
                },
            ),
        };
        let (peer, offer) = created.map_err(|e| e.to_string())?;
        let (ctx, crx) = oneshot::channel();
        let (atx, arx) = oneshot::channel();
        let decoder = if spec.probe {
            Some(
                opus::Decoder::new(media_core::audio::SAMPLE_RATE, opus::Channels::Mono)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let seed = self.config.seed.wrapping_mul(0x100_0000_01B3) ^ spec.index as u64;
        let p = Participant {
            spec,
            peer,
            ip,
            talker: spec.talk.map(|m| Talker::new(m, seed)),
            frame_no: 0,
            timeout: None,
            next_frame: None,
            connected: Some(ctx),
            first_audio: Some(atx),
            streams: HashMap::new(),
            decoder,
            detector: ChirpDetector::new(),
            chirp_pos: None,
            next_chirp: None,
            alive: true,
            last_audio: None,
        };
        if self.parts.len() <= spec.index {
            self.parts.resize_with(spec.index + 1, || None);
        }
        self.parts[spec.index] = Some(p);
        self.snap.participants += 1;
        Ok((
            offer,
            Milestones {
                connected: crx,
                first_audio: arx,
            },
        ))
    }

    fn datagram(&mut self, now: Instant, i: usize) {
        let Some((source, dest, data)) = self.socket.datagram(i) else {
            return;
        };
        let Some(index) = participant_index(dest) else {
            return;
        };
        let Some(Some(p)) = self.parts.get_mut(index) else {
            return;
        };
        if !p.alive {
            return;
        }
        if let Err(e) = p.peer.handle_datagram(now, source, data) {
            p.alive = false;
            self.snap.peer_errors += 1;
            let _ = e;
            return;
        }
        self.snap.rx_bytes += data.len() as u64;
        self.arrival = Some(self.socket.arrival(i));
        self.drain(now, index);
        self.arrival = None;
    }

    fn timers_due(&mut self) {
        loop {
            let now = Instant::now();
            let Some(Reverse((t, kind, index))) = self.timers.peek().copied() else {
                return;
            };
            if t > now {
                return;
            }
            self.timers.pop();
            let Some(Some(p)) = self.parts.get_mut(index) else {
                continue;
            };
            if !p.alive {
                continue;
            }
            match kind {
                Timer::Peer => {
                    if p.timeout != Some(t) {
                        continue;
                    }
                    p.timeout = None;
                    if p.peer.handle_timeout(now).is_err() {
                        p.alive = false;
                        self.snap.peer_errors += 1;
                        continue;
                    }
                    self.drain(now, index);
                }
                Timer::Frame => {
                    if p.next_frame != Some(t) {
                        continue;
                    }
                    self.frame(now, t, index);
                    self.drain(now, index);
                }
            }
            if self.out.len() >= crate::net::BATCH {
                self.flush();
            }
        }
    }

    /// A publisher's 20 ms frame is due (scheduled at `due`, now is `now`).
    fn frame(&mut self, now: Instant, due: Instant, index: usize) {
        let frames = self.config.frames.clone();
        let epoch = self.config.epoch;
        let chirp_period = self.config.chirp_period;
        let Some(Some(p)) = self.parts.get_mut(index) else {
            return;
        };
        // Next frame on the 20 ms grid; if we fell behind by more than a frame, skip rather than burst.
        let mut next = due + FRAME;
        if next <= now {
            next = now + FRAME;
        }
        p.next_frame = Some(next);
        self.timers.push(Reverse((next, Timer::Frame, index)));
        // Mix mode: a chirp replaces the voice for a few frames every period.
        if p.spec.chirper {
            if let Some(period) = chirp_period {
                if p.chirp_pos.is_none() && p.next_chirp.is_none_or(|c| c <= now) {
                    p.chirp_pos = Some(0);
                    p.next_chirp = Some(now + period);
                }
            }
        }
        let (frame, talking) = if let Some(pos) = p.chirp_pos {
            if pos == frames.chirp_onset_frame {
                self.chirps.insert(p.spec.room, now);
            }
            p.chirp_pos = (pos + 1 < frames.chirp.len()).then_some(pos + 1);
            (&frames.chirp[pos], true)
        } else {
            let voice = &frames.voices[p.spec.voice % frames.voices.len()];
            let f = &voice[p.frame_no % voice.len()];
            p.frame_no += 1;
            let talking = p.talker.as_mut().is_some_and(|t| t.next_frame());
            (f, talking)
        };
        let frame = if talking {
            frame
        } else if self.config.dtx {
            // A DTX sender in silence: media time passes, nothing is sent.
            p.peer.skip_audio(FRAME_SAMPLES as u32);
            return;
        } else {
            &frames.silence
        };
        let sent_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        stamp::stamp_into(
            &frame.opus,
            Stamp {
                sender: index as u32,
                sent_ns,
            },
            &mut self.stamped,
        );
        if p.peer
            .send_audio(now, &self.stamped, FRAME_SAMPLES as u32, frame.level)
            .is_err()
        {
            self.snap.peer_errors += 1;
            p.alive = false;
            return;
        }
        self.snap.tx_rtp += 1;
    }

    fn drain(&mut self, now: Instant, index: usize) {
        loop {
            let Some(Some(p)) = self.parts.get_mut(index) else {
                return;
            };
            let out = match p.peer.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    p.alive = false;
                    self.snap.peer_errors += 1;
                    return;
                }
            };
            match out {
                ClientOutput::Timeout(t) => {
                    if p.timeout != Some(t) {
                        p.timeout = Some(t);
                        self.timers.push(Reverse((t, Timer::Peer, index)));
                    }
                    return;
                }
                ClientOutput::Transmit(t) => {
                    let rtp = is_rtp(&t.contents);
                    if !rtp {
                        self.snap.tx_other += 1;
                    }
                    if self.config.drop_rtp > 0.0 && rtp && self.rng.unit() < self.config.drop_rtp {
                        self.snap.injected_drops += 1;
                        continue;
                    }
                    self.out.push(Outgoing {
                        source: p.ip,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    });
                }
                ClientOutput::Connected => {
                    self.snap.connected += 1;
                    if let Some(tx) = p.connected.take() {
                        let _ = tx.send(now);
                    }
                    if p.talker.is_some() {
                        // Spread publishers over the 20 ms grid.
                        let phase = Duration::from_micros(self.rng.next_u64() % 20_000);
                        let t = now + phase;
                        p.next_frame = Some(t);
                        self.timers.push(Reverse((t, Timer::Frame, index)));
                    }
                }
                ClientOutput::Disconnected => {
                    p.alive = false;
                    self.snap.disconnects += 1;
                    return;
                }
                ClientOutput::Audio(a) => self.audio(index, a),
            }
        }
    }

    fn audio(&mut self, index: usize, a: ReceivedAudio) {
        let epoch = self.config.epoch;
        let Some(Some(p)) = self.parts.get_mut(index) else {
            return;
        };
        self.snap.rx_packets += 1;
        // str0m's arrival is when we handed it the datagram; the kernel's is when it reached the socket.
        let arrival = self.arrival.unwrap_or(a.arrival);
        if let Some(tx) = p.first_audio.take() {
            let _ = tx.send(arrival);
        }
        p.last_audio = Some(arrival);
        p.streams
            .entry(a.ssrc)
            .or_insert_with(|| StreamStats::new(a.seq, epoch))
            .packet(a.seq, a.timestamp, arrival);
        if let Some(st) = stamp::read(&a.payload) {
            let sent = epoch + Duration::from_nanos(st.sent_ns);
            let ms = arrival.saturating_duration_since(sent).as_secs_f64() * 1e3;
            self.snap.latency_ms.push(ms);
        }
        if let Some(dec) = p.decoder.as_mut() {
            if a.slot == 0 {
                if let Ok(n) = dec.decode_float(&a.payload, &mut self.pcm, false) {
                    if let Some(off) = p.detector.feed(&self.pcm[..n]) {
                        if let Some(sent) = self.chirps.get(&p.spec.room) {
                            let delay = self.config.frames.chirp_codec_delay as f64 / 48.0;
                            let at = arrival.saturating_duration_since(*sent).as_secs_f64() * 1e3
                                + off as f64 / 48.0
                                - delay;
                            // Attribute a detection to the latest chirp only within half a chirp period:
                            // later "onsets" are not that chirp (a false trigger, e.g. on a concealment
                            // artefact) and would read as seconds of latency.
                            let window_ms = self
                                .config
                                .chirp_period
                                .map_or(1_000.0, |p| p.as_secs_f64() * 500.0);
                            if (0.0..window_ms).contains(&at) {
                                self.snap.chirp_ms.push(at);
                            }
                        }
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        match self.socket.send_all(&self.out) {
            Ok(r) => self.snap.send_errors += r.dropped as u64,
            Err(_) => self.snap.send_errors += self.out.len() as u64,
        }
        self.out.clear();
    }

    fn snapshot(&mut self, now: Instant) -> Snapshot {
        let mut by_room = self.retired.clone();
        self.snap.live.clear();
        for p in self.parts.iter().flatten() {
            let e = by_room.entry(p.spec.room).or_default();
            for s in p.streams.values() {
                e.0 += s.expected();
                e.1 += s.received;
            }
            if p.alive {
                self.snap.live.push((p.spec.index, p.last_audio));
            }
        }
        let expected = by_room.values().map(|v| v.0).sum();
        let received = by_room.values().map(|v| v.1).sum();
        self.snap.by_room = by_room;
        self.snap.expected = expected;
        self.snap.received = received;
        self.snap.at = Some(now);
        let (u, s) = crate::floor::thread_cpu();
        self.snap.engine_cpu_s = (u + s).as_secs_f64();
        self.snap.tool_socket_drops = u64::from(self.socket.dropped());
        let out = self.snap.clone();
        self.snap.latency_ms.clear();
        self.snap.chirp_ms.clear();
        out
    }

    fn streams(&self) -> Vec<StreamReport> {
        let mut v = Vec::new();
        for p in self.parts.iter().flatten() {
            for (ssrc, s) in &p.streams {
                v.push(StreamReport {
                    participant: p.spec.index,
                    ssrc: *ssrc,
                    expected: s.expected(),
                    received: s.received,
                    lost: s.lost(),
                    jitter_ms: s.jitter_ms(),
                });
            }
        }
        v.sort_by_key(|s| (s.participant, s.ssrc));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_and_dtls_and_stun() {
        let mut rtp = vec![0x80, 111];
        rtp.resize(40, 0);
        assert!(is_rtp(&rtp));
        let mut marker = vec![0x80, 0x80 | 111];
        marker.resize(40, 0);
        assert!(is_rtp(&marker));
        let mut sr = vec![0x80, 200];
        sr.resize(40, 0);
        assert!(!is_rtp(&sr));
        let mut rr = vec![0x81, 201];
        rr.resize(40, 0);
        assert!(!is_rtp(&rr));
        let mut dtls = vec![22, 254, 253];
        dtls.resize(40, 0);
        assert!(!is_rtp(&dtls));
        let mut stun = vec![0x00, 0x01];
        stun.resize(40, 0);
        assert!(!is_rtp(&stun));
    }
}
