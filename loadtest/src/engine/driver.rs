//! The engine thread's loop: waiting on the socket, the command pair and the timers; commands; datagrams
//! routed to their participant; due timers; batched sends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audio::FRAME_SAMPLES;
use media_core::client::{ClientConfig, ClientPeer};
use tokio::sync::oneshot;

use crate::audio::ChirpDetector;
use crate::net::{participant_index, participant_ip, MultiSocket};
use crate::talk::{Rng, Talker};

use super::{
    is_rtp, Command, EngineConfig, Loop, Milestones, Participant, ParticipantSpec, PeerShape,
    Snapshot, StreamReport, Timer, Waker,
};

impl Loop {
    pub(super) fn new(
        config: EngineConfig,
        socket: MultiSocket,
        rx: mpsc::Receiver<Command>,
        waker: Arc<Waker>,
    ) -> Loop {
        let rng = Rng::new(config.seed ^ 0xD509);
        let drop_rng = Rng::new(config.seed ^ 0x10_55);
        Loop {
            config,
            socket,
            rx,
            waker,
            parts: Vec::new(),
            timers: BinaryHeap::new(),
            out: Vec::with_capacity(crate::net::BATCH * 4),
            rng,
            drop_rng,
            snap: Snapshot::default(),
            chirps: HashMap::new(),
            chirp_turns: HashMap::new(),
            stamped: Vec::with_capacity(1500),
            pcm: vec![0f32; FRAME_SAMPLES * 6],
            arrival: None,
            retired: std::collections::BTreeMap::new(),
        }
    }

    pub(super) fn run(mut self) {
        loop {
            while let Ok(cmd) = self.rx.try_recv() {
                if let Some(reply) = self.command(cmd) {
                    let streams = self.streams();
                    let _ = reply.send(streams);
                    return;
                }
            }
            // Read what is waiting (bounded, so a flood cannot starve commands). Due timers run after
            // every batch: a publisher's frame that waited behind a whole burst of received mixes (503
            // of them arrive at once from a mixer's tick) would leave late by up to 18 ms, and the
            // server cannot tell that from network jitter.
            for _ in 0..16 {
                match self.socket.recv_batch() {
                    Ok(0) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        for i in 0..n {
                            self.datagram(now, i);
                        }
                        self.timers_due();
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
        if !p.spec.measured && p.first_audio.is_none() && is_rtp(data) {
            // Heard already and not measured: what a client on another machine would decrypt is only
            // counted here (STUN, DTLS and RTCP still go to the peer, which keeps its session alive).
            self.snap.rx_bytes += data.len() as u64;
            self.snap.rx_unmeasured += 1;
            p.last_audio = Some(self.socket.arrival(i));
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
}
