//! The virtual-time call harness shared by the simulation tests and the forwarding benchmark: a
//! [`MediaCore`] and str0m client peers exchange real DTLS-SRTP datagrams over a seeded [`SimNet`]; clients
//! send Opus-encoded tones with their audio level, and what each receives can be decoded per CSRC.
#![allow(dead_code)] // each user of the harness needs a different part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media_core::audio::{self, ToneAnalysis, ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};
use media_core::client::{ClientConfig, ClientOutput, ClientPeer, ReceivedAudio};
use media_core::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
use media_core::sim::{LinkConfig, SimNet};
use media_core::{
    CoreConfig, CoreEvent, JoinParams, MediaCore, Output, ParticipantId, RoomConfig, RoomId,
};

pub const FRAME: Duration = Duration::from_millis(20);
pub const MAX_STEPS_PER_SECOND: u64 = 200_000;

/// The one place a test takes the real clock: the origin of virtual time.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// Real elapsed time, for measuring how long the core itself works (benchmarks).
#[allow(clippy::disallowed_methods)]
fn wall() -> Instant {
    Instant::now()
}

pub struct Client {
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub peer: ClientPeer,
    pub tone: ToneGenerator,
    pub freq: f32,
    /// 0.0: silent (DTX: nothing is sent, media time still advances).
    pub amplitude: f32,
    pub encoder: opus::Encoder,
    pub next_frame: Instant,
    pub timeout: Instant,
    pub mic_ssrc: u32,
    pub received: Vec<ReceivedAudio>,
    pub decoders: HashMap<u32, opus::Decoder>,
    pub pcm_by_csrc: HashMap<u32, Vec<f32>>,
    /// Mixed rooms: the decoded slot-0 stream in sequence order, with loss concealed and DTX gaps as
    /// silence, and for each decoded packet (arrival, first sample index, contributors).
    pub mix: MixedStream,
    /// Whether the client ever talked, and silence frames sent since it stopped (DTX hangover).
    pub talked: bool,
    pub silent_frames: u32,
}

/// Silence frames a client sends after it stops talking before it goes quiet (DTX).
pub const DTX_HANGOVER_FRAMES: u32 = 10;

pub struct MixedStream {
    pub decoder: Option<opus::Decoder>,
    /// Every packet decoded in arrival order (late ones skipped): exact packet ↔ sample mapping.
    pub pcm: Vec<f32>,
    pub last: Option<(u64, u32)>,
    pub packets: Vec<MixedPacketInfo>,
    pub concealed: u64,
    /// What a real receiver plays: the same stream through a jitter buffer with FEC and PLC, 20 ms at a time.
    pub played: Vec<f32>,
    pub jitter: JitterBuffer,
    pub play_decoder: opus::Decoder,
    pub next_play: Option<Instant>,
}

impl Default for MixedStream {
    fn default() -> Self {
        MixedStream {
            decoder: None,
            pcm: Vec::new(),
            last: None,
            packets: Vec::new(),
            concealed: 0,
            played: Vec::new(),
            jitter: JitterBuffer::new(JitterConfig::default()),
            play_decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                .expect("an Opus decoder"),
            next_play: None,
        }
    }
}

pub struct MixedPacketInfo {
    pub arrival: Instant,
    pub start: usize,
    pub len: usize,
    pub contributors: Vec<(u32, Option<u8>)>,
}

impl MixedStream {
    fn receive(&mut self, a: &ReceivedAudio) {
        if let Some((samples, has_fec)) = media_core::mixer::opus_packet_info(&a.payload) {
            self.jitter.push(
                a.arrival,
                JitterPacket {
                    seq: a.seq,
                    ts: a.timestamp,
                    samples,
                    has_fec,
                    audio_level: a.audio_level,
                    payload: a.payload.clone(),
                },
            );
            self.next_play.get_or_insert(a.arrival);
        }
        if let Some((seq, _)) = self.last {
            if a.seq <= seq {
                return; // late or duplicate: a real receiver's jitter buffer would drop it too
            }
        }
        let dec = self.decoder.get_or_insert_with(|| {
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("an Opus decoder")
        });
        let mut pcm = vec![0f32; FRAME_SAMPLES * 6];
        if let Some((seq, ts)) = self.last {
            let lost = a.seq - seq - 1;
            for _ in 0..lost {
                let n = dec
                    .decode_float(&[], &mut pcm[..FRAME_SAMPLES], false)
                    .expect("PLC decodes");
                self.pcm.extend_from_slice(&pcm[..n]);
                self.concealed += 1;
            }
            // A timestamp gap not explained by lost packets is DTX: silence.
            let gap =
                a.timestamp.wrapping_sub(ts) as i64 - (lost as i64 + 1) * FRAME_SAMPLES as i64;
            if gap > 0 && gap < SAMPLE_RATE as i64 * 10 {
                self.pcm.extend(std::iter::repeat_n(0.0, gap as usize));
            }
        }
        let n = dec
            .decode_float(&a.payload, &mut pcm, false)
            .expect("mixed Opus decodes");
        self.packets.push(MixedPacketInfo {
            arrival: a.arrival,
            start: self.pcm.len(),
            len: n,
            contributors: a.contributors.clone(),
        });
        self.pcm.extend_from_slice(&pcm[..n]);
        self.last = Some((a.seq, a.timestamp));
    }

    /// Play out 20 ms if due.
    fn play(&mut self, now: Instant) {
        let Some(due) = self.next_play else {
            return;
        };
        if now < due {
            return;
        }
        self.next_play = Some(due + FRAME);
        let mut buf = vec![0f32; FRAME_SAMPLES * 6];
        let mut have = 0;
        while have < FRAME_SAMPLES {
            let n = match self.jitter.pop(now) {
                Playout::Packet { payload, .. } => self
                    .play_decoder
                    .decode_float(&payload, &mut buf, false)
                    .expect("mixed Opus decodes"),
                Playout::Fec { payload, samples } => self
                    .play_decoder
                    .decode_float(&payload, &mut buf[..samples as usize], true)
                    .expect("FEC decodes"),
                Playout::Plc { samples } => self
                    .play_decoder
                    .decode_float(&[], &mut buf[..samples as usize], false)
                    .expect("PLC decodes"),
                Playout::Silence { samples } => {
                    buf[..samples as usize].iter_mut().for_each(|s| *s = 0.0);
                    samples as usize
                }
            };
            self.played.extend_from_slice(&buf[..n]);
            have += n.max(1);
        }
    }
}

impl Client {
    /// Everything decoded from `csrc`, from `from` samples on.
    pub fn pcm(&self, csrc: u32) -> &[f32] {
        self.pcm_by_csrc
            .get(&csrc)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn csrcs_since(&self, index: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self.received[index..]
            .iter()
            .filter_map(|r| r.csrc)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

pub struct Sim {
    pub now: Instant,
    pub core: MediaCore,
    pub core_timeout: Instant,
    pub server: SocketAddr,
    pub net: SimNet,
    pub clients: Vec<Client>,
    /// Core events with the virtual time they were emitted.
    pub events: Vec<(Instant, CoreEvent)>,
    pub room: RoomId,
    pub slots: usize,
    pub room_config: RoomConfig,
    /// Keep and decode every received packet (tests); off, clients only count them (benchmarks).
    pub keep_audio: bool,
    /// Packets received by all clients.
    pub received_total: u64,
    /// Real time spent inside the core (input handling and draining its output).
    pub core_busy: Duration,
    /// The part of `core_busy` spent on timeouts, and how many there were.
    pub core_busy_timers: Duration,
    pub core_timeouts: u64,
}

impl Sim {
    /// A room with `slots` slots and one client per (frequency, amplitude).
    pub fn new(seed: u64, link: LinkConfig, slots: usize, voices: &[(f32, f32)]) -> Sim {
        Self::with_room(seed, link, RoomConfig::forward(slots), voices)
    }

    /// A room with the given settings (a mixed room uses one slot) and one client per voice.
    pub fn with_room(
        seed: u64,
        link: LinkConfig,
        room_config: RoomConfig,
        voices: &[(f32, f32)],
    ) -> Sim {
        let slots = room_config.slots;
        let now = epoch();
        let server: SocketAddr = "127.0.0.1:5000".parse().expect("a literal socket address");
        let core = MediaCore::new(now, CoreConfig::new(server, seed));
        let mut sim = Sim {
            now,
            core,
            core_timeout: now,
            server,
            net: SimNet::new(seed, link),
            clients: Vec::new(),
            events: Vec::new(),
            room: RoomId("sim".into()),
            slots,
            room_config,
            keep_audio: true,
            received_total: 0,
            core_busy: Duration::ZERO,
            core_busy_timers: Duration::ZERO,
            core_timeouts: 0,
        };
        for &(freq, amplitude) in voices {
            sim.join(freq, amplitude);
        }
        sim.drain_core();
        sim
    }

    pub fn join(&mut self, freq: f32, amplitude: f32) -> usize {
        self.join_with_red(freq, amplitude, 0)
    }

    /// Join a client that offers RED and sends `red` earlier frames with each frame (0: Opus only).
    pub fn join_with_red(&mut self, freq: f32, amplitude: f32, red: u8) -> usize {
        let index = self.clients.len();
        let addr: SocketAddr = format!("127.0.0.{}:{}", 10 + index % 200, 6000 + index / 200)
            .parse()
            .expect("a valid address");
        let (mut peer, offer) = ClientPeer::new(
            self.now,
            ClientConfig {
                local_addr: addr,
                slots: self.slots,
                publish: true,
                red,
            },
        )
        .expect("a client offer");
        let id = ParticipantId(100 + index as u64);
        let answer = self
            .core
            .add_participant(
                self.now,
                &self.room,
                self.room_config,
                id,
                JoinParams {
                    can_publish: true,
                    can_subscribe: true,
                    muted: false,
                },
                &offer,
            )
            .expect("the core accepts a client offer");
        peer.accept_answer(&answer)
            .expect("the client accepts the core's answer");
        let mic_ssrc = peer.mic_ssrc().expect("a sendrecv microphone has an SSRC");
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("an Opus encoder for 48 kHz mono");
        // Like browsers: in-band FEC on, tuned for some loss.
        encoder
            .set_inband_fec(true)
            .and_then(|()| encoder.set_packet_loss_perc(10))
            .expect("Opus FEC settings");
        self.clients.push(Client {
            id,
            addr,
            peer,
            tone: ToneGenerator::new(f64::from(freq), amplitude, SAMPLE_RATE),
            freq,
            amplitude,
            encoder,
            next_frame: self.now,
            timeout: self.now,
            mic_ssrc,
            received: Vec::new(),
            decoders: HashMap::new(),
            pcm_by_csrc: HashMap::new(),
            mix: MixedStream::default(),
            talked: false,
            silent_frames: 0,
        });
        self.drain_core();
        self.drain_client(index);
        index
    }

    pub fn set_amplitude(&mut self, client: usize, amplitude: f32) {
        self.clients[client].amplitude = amplitude;
        self.clients[client].tone.set_amplitude(amplitude);
    }

    pub fn drain_core(&mut self) {
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) => {
                    self.net
                        .send(self.now, self.server, t.destination, t.contents)
                }
                Output::Event(e) => self.events.push((self.now, e)),
                Output::Timeout(t) => {
                    self.core_timeout = t;
                    return;
                }
            }
        }
    }

    pub fn drain_client(&mut self, i: usize) {
        let keep_audio = self.keep_audio;
        let mixed = self.room_config.mode == media_core::RoomMode::Mix;
        let c = &mut self.clients[i];
        loop {
            match c.peer.poll_output().expect("client peer output") {
                ClientOutput::Timeout(t) => {
                    c.timeout = t;
                    return;
                }
                ClientOutput::Transmit(t) => {
                    self.net.send(self.now, c.addr, t.destination, t.contents)
                }
                ClientOutput::Connected => {}
                ClientOutput::Disconnected => panic!("client {i} lost its connection"),
                ClientOutput::Audio(_) if !keep_audio => self.received_total += 1,
                ClientOutput::Audio(a) if mixed => {
                    self.received_total += 1;
                    c.mix.receive(&a);
                    c.received.push(a);
                }
                ClientOutput::Audio(a) => {
                    self.received_total += 1;
                    if let Some(csrc) = a.csrc {
                        let dec = c.decoders.entry(csrc).or_insert_with(|| {
                            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                                .expect("an Opus decoder")
                        });
                        let mut pcm = vec![0f32; FRAME_SAMPLES * 6];
                        let n = dec
                            .decode_float(&a.payload, &mut pcm, false)
                            .expect("forwarded Opus decodes");
                        c.pcm_by_csrc
                            .entry(csrc)
                            .or_default()
                            .extend_from_slice(&pcm[..n]);
                    }
                    c.received.push(a);
                }
            }
        }
    }

    pub fn send_frame(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.amplitude > 0.0 {
            c.silent_frames = 0;
        }
        // Like libopus DTX: after talking stops, ~200 ms of silence frames, then nothing.
        if c.amplitude > 0.0 || (c.talked && c.silent_frames < DTX_HANGOVER_FRAMES) {
            if c.amplitude == 0.0 {
                c.silent_frames += 1;
            }
            c.talked = true;
            let mut pcm = vec![0f32; FRAME_SAMPLES];
            c.tone.fill(&mut pcm);
            let level = audio::audio_level_from_samples(&pcm);
            let mut out = vec![0u8; 1500];
            let n = c
                .encoder
                .encode_float(&pcm, &mut out)
                .expect("Opus encodes a frame");
            c.peer
                .send_audio(self.now, &out[..n], FRAME_SAMPLES as u32, level)
                .expect("the client sends on its microphone");
        } else {
            c.peer.skip_audio(FRAME_SAMPLES as u32);
        }
        c.next_frame += FRAME;
        self.drain_client(i);
    }

    /// Advance virtual time by `d`, processing everything due in order.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let max_steps = MAX_STEPS_PER_SECOND * (d.as_secs() + 1);
        let mut steps = 0u64;
        while self.now < end {
            steps += 1;
            assert!(
                steps < max_steps,
                "livelock: {steps} steps without reaching {d:?}"
            );
            let mut next = end.min(self.core_timeout);
            if let Some(t) = self.net.next_delivery() {
                next = next.min(t);
            }
            for c in &self.clients {
                next = next.min(c.timeout);
                if let Some(t) = c.mix.next_play {
                    next = next.min(t);
                }
                if c.peer.is_connected() {
                    next = next.min(c.next_frame);
                }
            }
            self.now = self.now.max(next);
            while let Some(d) = self.net.deliver_due(self.now) {
                if d.destination == self.server {
                    let started = wall();
                    self.core.handle_datagram(self.now, d.source, &d.data);
                    self.drain_core();
                    self.core_busy += started.elapsed();
                } else if let Some(i) = self.clients.iter().position(|c| c.addr == d.destination) {
                    self.clients[i]
                        .peer
                        .handle_datagram(self.now, d.source, &d.data)
                        .expect("client accepts datagram");
                    self.drain_client(i);
                }
            }
            if self.core_timeout <= self.now {
                let started = wall();
                self.core.handle_timeout(self.now);
                self.drain_core();
                self.core_busy += started.elapsed();
                self.core_busy_timers += started.elapsed();
                self.core_timeouts += 1;
            }
            for i in 0..self.clients.len() {
                self.clients[i].mix.play(self.now);
                if self.clients[i].timeout <= self.now {
                    self.clients[i]
                        .peer
                        .handle_timeout(self.now)
                        .expect("client timeout");
                    self.drain_client(i);
                }
                if self.clients[i].peer.is_connected() && self.clients[i].next_frame <= self.now {
                    self.send_frame(i);
                }
            }
        }
    }

    pub fn all_connected(&self) -> bool {
        self.clients.iter().all(|c| c.peer.is_connected())
    }

    /// Run until every client is connected: up to 30 s of virtual time (DTLS retransmits back off to
    /// seconds on a lossy link).
    pub fn connect(&mut self) {
        for _ in 0..300 {
            if self.all_connected() {
                // Start every client's audio clock now.
                let now = self.now;
                for c in &mut self.clients {
                    c.next_frame = c.next_frame.max(now);
                }
                return;
            }
            self.run_for(Duration::from_millis(100));
        }
        panic!("clients did not connect within 30 s of virtual time");
    }

    /// Assert client `i` hears every other client's tone (per CSRC, checked on the last `tail` seconds) and
    /// never its own.
    pub fn assert_hears_others(&self, i: usize, tail_secs: f32) {
        let me = &self.clients[i];
        let freqs: Vec<f32> = self.clients.iter().map(|c| c.freq).collect();
        assert!(
            !me.pcm_by_csrc.contains_key(&me.mic_ssrc),
            "client {i} receives itself"
        );
        for (j, other) in self.clients.iter().enumerate() {
            if j == i {
                continue;
            }
            let pcm = me.pcm(other.mic_ssrc);
            let tail = &pcm[pcm
                .len()
                .saturating_sub((tail_secs * SAMPLE_RATE as f32) as usize)..];
            assert!(
                tail.len() > SAMPLE_RATE as usize / 2,
                "client {i} heard too little of {j}: {}",
                pcm.len()
            );
            let a = ToneAnalysis::analyze(tail, SAMPLE_RATE, &freqs);
            assert_eq!(
                a.present_default(),
                vec![other.freq],
                "client {i} hears {j} as {a:?}"
            );
        }
    }
}
