//! The media engine: every simulated participant's str0m client peer, driven by one thread over one
//! socket ([`crate::net::MultiSocket`]).
//!
//! The thread waits (`ppoll`) on the socket, a socket pair that signals commands, and the earliest timer
//! (a str0m timeout or a publisher's next 20 ms frame). Received datagrams are routed to a participant by
//! the loopback address they were sent to; everything the peers want sent goes out in `sendmmsg`
//! batches. Publishers re-send pre-encoded Opus frames ([`crate::audio::Frames`]) with a send-time stamp
//! in the Opus padding; subscribers count every received packet per stream (loss, jitter), read the stamp
//! back (forward-mode latency) and, if they are latency probes in mix mode, decode and look for chirps.

mod driver;
mod media;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::client::ClientPeer;
use media_core::router::is_rtp;
use tokio::sync::oneshot;

use crate::audio::{ChirpDetector, Frames};
use crate::net::{participant_ip, MultiSocket, Outgoing};
use crate::stats::StreamStats;
use crate::talk::{Rng, TalkModel, Talker};

// One Opus frame (20 ms).
use media_core::audio::FRAME_DURATION as FRAME;

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
    /// Sends chirps (mix mode), in its turn among its room's chirpers.
    pub chirper: Option<ChirpTurn>,
    /// Decodes what it receives and detects chirps (mix mode).
    pub probe: bool,
    /// Hands every RTP packet it receives to its peer. When false, only those until its first audio; the
    /// rest are counted ([`Snapshot::rx_unmeasured`]) and dropped undecrypted.
    pub measured: bool,
    /// The shape of its WebRTC session.
    pub shape: PeerShape,
}

/// A chirper's place in its room's rotation: the room sends one chirp per period, from its chirpers in turn
/// (`turn` of `of`), so the mix latency covers every talker's phase against the mixer's grid, not only the
/// first talker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChirpTurn {
    pub turn: usize,
    pub of: usize,
}

impl ChirpTurn {
    /// Whether this chirper starts a chirp at `now`, given its room's next due time and whose turn it is
    /// (`room`, advanced by one turn when it does). A turn overdue by a whole `period` (its talker is not
    /// sending: not joined yet, or gone) is taken by whoever is sending, and the rotation goes on after it.
    pub fn take(self, room: &mut (Instant, usize), now: Instant, period: Duration) -> bool {
        let (due, turn) = room;
        if now < *due || (*turn != self.turn && now < *due + period) {
            return false;
        }
        *due = now + period;
        *turn = (*turn + 1) % self.of.max(1);
        true
    }
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
    /// Publishers: how late each frame they sent left its 20 ms grid (handled after its due time), ms,
    /// since the previous snapshot. The server cannot tell this from network jitter.
    pub send_late_ms: Vec<f64>,
    /// CPU seconds of the engine thread so far.
    pub engine_cpu_s: f64,
    /// Datagrams the kernel dropped on the tool's full receive queue (the tool fell behind).
    pub tool_socket_drops: u64,
    /// RTP packets received by participants that are not measured ([`ParticipantSpec::measured`]) after
    /// their first audio: counted, not decrypted.
    pub rx_unmeasured: u64,
    /// Per room: (expected, received) packets of every stream so far, retired participants included.
    pub by_room: std::collections::BTreeMap<usize, (u64, u64)>,
    /// Every participant still in the engine and alive: (index, arrival of its latest audio packet).
    pub live: Vec<(usize, Option<Instant>)>,
}

impl Snapshot {
    /// RTP packets the server delivered to the tool so far: decrypted by measured receivers, or only
    /// counted by the others ([`ParticipantSpec::measured`]).
    pub fn rtp_delivered(&self) -> u64 {
        self.rx_packets + self.rx_unmeasured
    }
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
    /// The injected loss's draws alone (`drop_rtp`), one per RTP packet sent: with a fixed seed the k-th
    /// packet's fate does not depend on how many other draws (publishers' phases) came before it.
    drop_rng: Rng,
    snap: Snapshot,
    /// Per room: send time of the latest chirp.
    chirps: HashMap<usize, Instant>,
    /// Per room: when the next chirp is due, and whose turn it is ([`ChirpTurn::turn`]).
    chirp_turns: HashMap<usize, (Instant, usize)>,
    stamped: Vec<u8>,
    pcm: Vec<f32>,
    /// Kernel arrival time of the datagram being handled (RTP in it is timed by this).
    arrival: Option<Instant>,
    /// Per room: (expected, received) of the streams of retired participants.
    retired: std::collections::BTreeMap<usize, (u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chirps_rotate_over_the_rooms_talkers_and_a_missing_one_is_skipped() {
        let period = Duration::from_secs(2);
        #[allow(clippy::disallowed_methods)] // the base of a virtual timeline
        let t0 = Instant::now();
        let talkers = [0, 1, 2].map(|turn| ChirpTurn { turn, of: 3 });
        let mut room = (t0, 0);
        let mut chirped = Vec::new();
        // Every talker asks at every 20 ms frame for 13 s.
        for k in 0..650u32 {
            let now = t0 + Duration::from_millis(20) * k;
            for t in talkers {
                if t.take(&mut room, now, period) {
                    chirped.push((t.turn, (now - t0).as_millis()));
                }
            }
        }
        assert_eq!(
            chirped,
            [
                (0, 0),
                (1, 2000),
                (2, 4000),
                (0, 6000),
                (1, 8000),
                (2, 10000),
                (0, 12000)
            ]
        );
        // Talker 1 never sends: its turn passes after a period to whoever asks, and the rotation goes on.
        let mut room = (t0, 0);
        let mut chirped = Vec::new();
        for k in 0..650u32 {
            let now = t0 + Duration::from_millis(20) * k;
            for t in [talkers[0], talkers[2]] {
                if t.take(&mut room, now, period) {
                    chirped.push((t.turn, (now - t0).as_millis()));
                }
            }
        }
        assert_eq!(
            chirped,
            [(0, 0), (0, 4000), (2, 6000), (0, 8000), (0, 12000)]
        );
    }
}
