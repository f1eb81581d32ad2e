//! The virtual-time call harness shared by the simulation tests and the forwarding benchmark: a
//! [`MediaCore`] and str0m client peers exchange real DTLS-SRTP datagrams over a seeded [`SimNet`]; clients
//! send Opus-encoded tones (or any PCM, such as speech, encoded like a browser) with their audio level, and
//! what each receives can be decoded per CSRC and played through a receiver jitter buffer.
#![allow(dead_code)] // each user of the harness needs a different part of it

pub mod alloc;
pub mod speech;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audio::{self, ToneAnalysis, ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};
use media_core::client::{ClientConfig, ClientOutput, ClientPeer, ReceivedAudio};
use media_core::jitter::{JitterBuffer, JitterConfig, Playout};
use media_core::sim::{LinkConfig, SimNet};
use media_core::{
    CoreConfig, CoreEvent, JoinParams, MediaCore, Output, ParticipantId, RoomId, RoomSettings,
};

pub const FRAME: Duration = media_core::audio::FRAME_DURATION;
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
    /// Forwarded rooms: each slot's stream decoded and played like [`Client::mix`] (what a browser plays).
    pub forwarded: HashMap<usize, MixedStream>,
    /// Whether the client ever talked, and silence frames sent since it stopped (DTX hangover).
    pub talked: bool,
    pub silent_frames: u32,
    /// Set by [`Sim::play_pcm`]: the client sends these samples instead of its tone.
    pub pcm_source: Option<PcmSource>,
}

/// PCM a client plays into its microphone, encoded like a browser does (see [`Sim::play_pcm`]).
pub struct PcmSource {
    pub samples: Arc<[f32]>,
    /// Samples already encoded (after the end the client sends silence, i.e. DTX).
    pub pos: usize,
    /// When the first sample was encoded: the "mouth" time of sample 0.
    pub started: Option<Instant>,
    /// Frames sent, and frames libopus reduced to a DTX stub (≤ 2 bytes), which are not sent.
    pub frames_sent: u64,
    pub frames_dtx: u64,
    /// What the sender's own packets decode to (a DTX frame as silence), frame for frame: what a listener
    /// hears with no server in between (the "no server" reference of issue 9).
    pub decoded: Vec<f32>,
    pub decoder: opus::Decoder,
    /// Like a browser's encoder: expect the loss the server's receiver reports state (in-band FEC for
    /// it), instead of a fixed figure. The percentage in use.
    pub follow_reported_loss: bool,
    pub loss_percent: i32,
}

/// Bitrate of a client playing PCM, like a browser's default Opus voice bitrate.
pub const BROWSER_BITRATE_BPS: i32 = 32_000;

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
    /// Samples played ahead of real time (a span longer than what the last tick needed): the next tick asks
    /// the buffer for that much less, as the mixer does.
    pub play_surplus: usize,
    /// When `played` began: the "ear" time of `played[0]`.
    pub play_started: Option<Instant>,
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
            play_surplus: 0,
            play_started: None,
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
        if a.push_into(&mut self.jitter) {
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
        self.play_started.get_or_insert(due);
        let mut buf = vec![0f32; FRAME_SAMPLES * 6];
        let mut have = self.play_surplus;
        while have < FRAME_SAMPLES {
            let held = u32::try_from(have).expect("less than a tick is held");
            let n = match self.jitter.pop(now, held) {
                Playout::Packet {
                    payload, samples, ..
                } => self
                    .play_decoder
                    .decode_float(&payload, &mut buf, false)
                    .expect("mixed Opus decodes")
                    .min(samples as usize),
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
        self.play_surplus = have - FRAME_SAMPLES;
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
    pub room_config: RoomSettings,
    /// Keep and decode every received packet (tests); off, clients only count them (benchmarks).
    pub keep_audio: bool,
    /// Forwarded rooms: also play each received slot through a jitter buffer ([`Client::forwarded`]).
    pub play_slots: bool,
    /// Packets received by all clients.
    pub received_total: u64,
    /// Record every STUN message a client sends the server in [`Sim::stun_sent`] (security tests).
    pub capture_stun: bool,
    /// (client index, datagram) of the STUN messages clients sent, while `capture_stun` is on.
    pub stun_sent: Vec<(usize, Vec<u8>)>,
    /// Real time spent inside the core (input handling and draining its output).
    pub core_busy: Duration,
    /// The part of `core_busy` spent on timeouts, and how many there were.
    pub core_busy_timers: Duration,
    pub core_timeouts: u64,
    /// Clients (by index) that join listen-only: without `can_publish`, so the core drops what they send.
    pub listen_only: std::collections::HashSet<usize>,
    /// Tapped participants' microphone packets ([`MediaCore::set_tapped_participants`]).
    pub microphones: Vec<media_core::MicPacket>,
    /// Trunk messages for the room's other shards ([`MediaCore::set_spanned_rooms`]).
    pub trunk: Vec<media_core::TrunkMessage>,
    /// Client `i` joins as participant `id_base + i` (two sims as two shards of one room use two bases).
    pub id_base: u64,
}

impl Sim {
    /// A room with `slots` slots and one client per (frequency, amplitude).
    pub fn new(seed: u64, link: LinkConfig, slots: u8, voices: &[(f32, f32)]) -> Sim {
        Self::with_room(seed, link, RoomSettings::forward(slots), voices)
    }

    /// A room with the given settings (a mixed room uses one slot) and one client per voice.
    pub fn with_room(
        seed: u64,
        link: LinkConfig,
        room_config: RoomSettings,
        voices: &[(f32, f32)],
    ) -> Sim {
        Self::with_listeners(seed, link, room_config, voices, &[])
    }

    /// [`Sim::with_room`] where the clients at `listen_only` (indexes into `voices`) join without
    /// `can_publish`: they send their voice anyway, and the core must drop it.
    pub fn with_listeners(
        seed: u64,
        link: LinkConfig,
        room_config: RoomSettings,
        voices: &[(f32, f32)],
        listen_only: &[usize],
    ) -> Sim {
        let slots = usize::from(room_config.slots);
        let now = epoch();
        let server: SocketAddr = "127.0.0.1:5000".parse().expect("a literal socket address");
        // The network first: it makes the DTLS timers of the peers created after it reproducible.
        let net = SimNet::new(seed, link);
        let core = MediaCore::new(now, CoreConfig::new(server, seed));
        let mut sim = Sim {
            now,
            core,
            core_timeout: now,
            server,
            net,
            clients: Vec::new(),
            events: Vec::new(),
            room: RoomId("sim".into()),
            slots,
            room_config,
            keep_audio: true,
            play_slots: false,
            received_total: 0,
            capture_stun: false,
            stun_sent: Vec::new(),
            core_busy: Duration::ZERO,
            core_busy_timers: Duration::ZERO,
            core_timeouts: 0,
            listen_only: listen_only.iter().copied().collect(),
            microphones: Vec::new(),
            trunk: Vec::new(),
            id_base: 100,
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
        let room = self.room.clone();
        self.join_in(&room, freq, amplitude, red)
    }

    /// A client joining room `room` of the same core (same room settings as the sim's own room), sending
    /// `red` earlier frames with each frame (0: Opus only).
    pub fn join_in(&mut self, room: &RoomId, freq: f32, amplitude: f32, red: u8) -> usize {
        self.join_in_offering(room, freq, amplitude, red, |offer| offer)
    }

    /// A client of the sim's room whose offer has no `ssrc-audio-level` extension, so its packets carry no
    /// RFC 6464 level (as a WHIP encoder's: OBS, GStreamer).
    pub fn join_without_levels(&mut self, freq: f32, amplitude: f32) -> usize {
        let room = self.room.clone();
        self.join_in_offering(&room, freq, amplitude, 0, |offer| {
            without_lines(&offer, &["ssrc-audio-level"])
        })
    }

    /// [`Sim::join_in`] with the client's offer changed by `edit` on its way to the core (the client
    /// then takes the answer to the changed offer).
    pub fn join_in_offering(
        &mut self,
        room: &RoomId,
        freq: f32,
        amplitude: f32,
        red: u8,
        edit: impl FnOnce(String) -> String,
    ) -> usize {
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
        let offer = edit(offer);
        let id = ParticipantId(self.id_base + index as u64);
        let answer = self
            .core
            .add_participant(
                self.now,
                room,
                self.room_config,
                id,
                JoinParams {
                    can_publish: !self.listen_only.contains(&index),
                    can_subscribe: true,
                    muted: false,
                    hears_mix: false,
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
            forwarded: HashMap::new(),
            talked: false,
            silent_frames: 0,
            pcm_source: None,
        });
        self.drain_core();
        self.drain_client(index);
        index
    }

    /// Client `client` plays `samples` (48 kHz mono) from its next frame on, encoded like a browser: 20 ms
    /// frames, VOIP, 32 kb/s, DTX on (a frame libopus reduces to ≤ 2 bytes is not sent, the timestamp still
    /// advances, as in WebRTC; libopus' periodic DTX refresh frames are sent), in-band FEC on, tuned for
    /// `expected_loss_percent` (0 on a clean link, as a browser that measures no loss). The RFC 6464 level of
    /// every frame comes from its samples.
    pub fn play_pcm(&mut self, client: usize, samples: Arc<[f32]>, expected_loss_percent: i32) {
        let c = &mut self.clients[client];
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("an Opus encoder for 48 kHz mono");
        encoder
            .set_bitrate(opus::Bitrate::Bits(BROWSER_BITRATE_BPS))
            .and_then(|()| encoder.set_dtx(true))
            .and_then(|()| encoder.set_inband_fec(true))
            .and_then(|()| encoder.set_packet_loss_perc(expected_loss_percent))
            .expect("valid Opus encoder settings");
        c.encoder = encoder;
        c.pcm_source = Some(PcmSource {
            samples,
            pos: 0,
            started: None,
            frames_sent: 0,
            frames_dtx: 0,
            decoded: Vec::new(),
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                .expect("an Opus decoder"),
            follow_reported_loss: false,
            loss_percent: expected_loss_percent,
        });
    }

    /// [`Sim::play_pcm`] with an encoder that expects the loss the server's receiver reports on the
    /// client's microphone state, as a browser's does (WebRTC's Opus encoder sets libopus' expected packet
    /// loss from the reports' fraction lost), starting from what was reported so far.
    pub fn play_pcm_following_reports(&mut self, client: usize, samples: Arc<[f32]>) {
        let reported = self.clients[client].peer.reported_mic_loss_percent();
        self.play_pcm(client, samples, reported.unwrap_or(0));
        if let Some(src) = self.clients[client].pcm_source.as_mut() {
            src.follow_reported_loss = true;
        }
    }

    /// A speech call's two ends: what client 0 played into its microphone, and what client 1 played out.
    pub fn speech_pair(&self, name: &str) -> (&PcmSource, &MixedStream) {
        let played = self
            .played(1)
            .unwrap_or_else(|| panic!("{name}: the listener received nothing"));
        let src = self.clients[0]
            .pcm_source
            .as_ref()
            .expect("client 0 plays the speech");
        (src, played)
    }

    /// The stream client `client` plays: the mix in a mixed room, else what it receives in slot 0.
    pub fn played(&self, client: usize) -> Option<&MixedStream> {
        let c = &self.clients[client];
        if self.room_config.mode == media_core::RoomMode::Mix {
            Some(&c.mix)
        } else {
            c.forwarded.get(&0)
        }
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
                Output::Broadcast(_) => {}
                Output::Microphone(m) => self.microphones.push(m),
                Output::Trunk(m) => self.trunk.push(m),
                Output::Timeout(t) => {
                    self.core_timeout = t;
                    return;
                }
            }
        }
    }

    pub fn drain_client(&mut self, i: usize) {
        let keep_audio = self.keep_audio;
        let play_slots = self.play_slots;
        let mixed = self.room_config.mode == media_core::RoomMode::Mix;
        let c = &mut self.clients[i];
        loop {
            match c.peer.poll_output().expect("client peer output") {
                ClientOutput::Timeout(t) => {
                    c.timeout = t;
                    return;
                }
                ClientOutput::Transmit(t) => {
                    if self.capture_stun && t.contents.first().is_some_and(|b| *b < 2) {
                        self.stun_sent.push((i, t.contents.clone()));
                    }
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
                    if play_slots {
                        c.forwarded.entry(a.slot).or_default().receive(&a);
                    }
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
        let now = self.now;
        let c = &mut self.clients[i];
        if let Some(src) = c.pcm_source.as_mut() {
            if src.follow_reported_loss {
                let percent = c.peer.reported_mic_loss_percent().unwrap_or(0);
                if percent != src.loss_percent {
                    c.encoder
                        .set_packet_loss_perc(percent)
                        .expect("a loss percentage libopus takes");
                    src.loss_percent = percent;
                }
            }
            let mut pcm = vec![0f32; FRAME_SAMPLES];
            let end = (src.pos + FRAME_SAMPLES).min(src.samples.len());
            if src.pos < end {
                pcm[..end - src.pos].copy_from_slice(&src.samples[src.pos..end]);
            }
            src.started.get_or_insert(now);
            src.pos += FRAME_SAMPLES;
            let level = audio::audio_level_from_samples(&pcm);
            let mut out = vec![0u8; 1500];
            let n = c
                .encoder
                .encode_float(&pcm, &mut out)
                .expect("Opus encodes a frame");
            if n <= 2 {
                src.frames_dtx += 1;
                src.decoded.extend_from_slice(&[0.0; FRAME_SAMPLES]);
                c.peer.skip_audio(FRAME_SAMPLES as u32);
            } else {
                src.frames_sent += 1;
                let mut decoded = [0f32; FRAME_SAMPLES];
                let m = src
                    .decoder
                    .decode_float(&out[..n], &mut decoded, false)
                    .expect("the sender's own packet decodes");
                src.decoded.extend_from_slice(&decoded[..m]);
                c.peer
                    .send_audio(now, &out[..n], FRAME_SAMPLES as u32, level)
                    .expect("the client sends on its microphone");
            }
            c.next_frame += FRAME;
            self.drain_client(i);
            return;
        }
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
                for s in c.forwarded.values() {
                    if let Some(t) = s.next_play {
                        next = next.min(t);
                    }
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
                    self.core_busy += wall() - started;
                } else if let Some(i) = self.clients.iter().position(|c| c.addr == d.destination) {
                    self.clients[i]
                        .peer
                        .handle_datagram(self.now, d.source, &d.data)
                        .expect("client accepts datagram");
                    self.drain_client(i);
                    // The server's datagram is delivered: its buffer goes back, as the worker's does.
                    if d.source == self.server {
                        self.core.recycle(d.data);
                    }
                }
            }
            if self.core_timeout <= self.now {
                let started = wall();
                self.core.handle_timeout(self.now);
                self.drain_core();
                let busy = wall() - started;
                self.core_busy += busy;
                self.core_busy_timers += busy;
                self.core_timeouts += 1;
            }
            for i in 0..self.clients.len() {
                let now = self.now;
                self.clients[i].mix.play(now);
                for s in self.clients[i].forwarded.values_mut() {
                    s.play(now);
                }
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

/// `sdp` without its lines that contain any of `patterns` (an offer as a client we did not write might
/// send it); at least one line must go.
pub fn without_lines(sdp: &str, patterns: &[&str]) -> String {
    let kept: String = sdp
        .split_inclusive("\r\n")
        .filter(|line| !patterns.iter().any(|p| line.contains(p)))
        .collect();
    assert!(kept.len() < sdp.len(), "no line of {patterns:?} in {sdp}");
    kept
}

/// The outcome of [`speech_call`].
pub struct SpeechCall {
    /// Against what the speaker's own packets decode to: what the server and network add (issue 9's
    /// "no server" reference; forwarding is bit-exact, so only loss and the jitter buffers count).
    pub pesq: speech::Pesq,
    /// Against the spoken passage itself: the sender's Opus encode included.
    pub pesq_vs_speech: speech::Pesq,
    /// From a sample entering the speaker's encoder to the listener playing it (network, server, both
    /// jitter buffers, codec delay).
    pub mouth_to_ear_ms: f64,
    /// The listener's receive jitter buffer target at the end.
    pub listener_jitter_target_ms: f64,
    pub frames_sent: u64,
    pub frames_dtx: u64,
    /// The listener's receive jitter buffer: what it recovered (RED, FEC) and concealed.
    pub listener_jitter: media_core::mixer::jitter::JitterStats,
}

/// One speaker plays the espeak-ng passage to one listener in a room of `room_config`; the listener's
/// played stream (through its jitter buffer, with FEC and PLC) is scored by PESQ-WB against the speaker's
/// own decoded packets (and, for information, against the passage itself). The call connects on a
/// clean 10 ms link, then every leg gets `link` (the speaker's encoder expects `expected_loss_percent`).
/// Both clients offer RED and send `red` earlier frames with each frame when `red` > 0 (like Chrome: 1).
pub fn speech_call(
    name: &str,
    seed: u64,
    room_config: RoomSettings,
    link: LinkConfig,
    expected_loss_percent: i32,
    red: u8,
) -> SpeechCall {
    speech_call_per_leg(
        name,
        seed,
        room_config,
        [link, link],
        expected_loss_percent,
        [red, red],
    )
}

/// [`speech_call`] with the speaker's and the listener's legs (both directions) and RED apart: `red[0]`
/// the depth the speaker sends (0: plain Opus, offering none), `red[1]` the listener's (above 0: it
/// offers RED and decodes it).
pub fn speech_call_per_leg(
    name: &str,
    seed: u64,
    room_config: RoomSettings,
    legs: [LinkConfig; 2],
    expected_loss_percent: i32,
    red: [u8; 2],
) -> SpeechCall {
    let speech = speech::passage_48k();
    let mut sim = Sim::with_room(seed, LinkConfig::with_delay(10.0), room_config, &[]);
    for depth in red {
        sim.join_with_red(0.0, 0.0, depth);
    }
    sim.drain_core();
    sim.play_slots = true;
    sim.connect();
    for (i, leg) in legs.into_iter().enumerate() {
        let (server, client) = (sim.server, sim.clients[i].addr);
        sim.net.set_link_both(server, client, leg);
    }
    sim.play_pcm(0, speech.clone(), expected_loss_percent);
    let secs = speech.len() as f64 / f64::from(SAMPLE_RATE) + 1.0;
    sim.run_for(Duration::from_secs_f64(secs));
    let (src, played) = sim.speech_pair(name);
    let pesq = speech::pesq_wb(name, &src.decoded, &played.played);
    let pesq_vs_speech = speech::pesq_wb(&format!("{name}-vs-speech"), &speech, &played.played);
    let mouth = src.started.expect("the speaker encoded frames");
    let ear = played
        .play_started
        .expect("the listener played what it received");
    SpeechCall {
        pesq,
        pesq_vs_speech,
        mouth_to_ear_ms: ear.duration_since(mouth).as_secs_f64() * 1000.0 + pesq_vs_speech.delay_ms,
        listener_jitter_target_ms: played.jitter.target_delay().as_secs_f64() * 1000.0,
        frames_sent: src.frames_sent,
        frames_dtx: src.frames_dtx,
        listener_jitter: played.jitter.stats(),
    }
}

/// Opus frames of a tone, encoded once (like a real client, one encoder per talker).
pub fn talker_frames(freq: f64, frames: usize) -> Vec<(Arc<[u8]>, u8)> {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
        .expect("an Opus encoder");
    enc.set_bitrate(opus::Bitrate::Bits(32_000))
        .expect("bitrate");
    let mut tone = ToneGenerator::new(freq, 0.2, SAMPLE_RATE);
    let mut pcm = vec![0f32; FRAME_SAMPLES];
    let mut out = vec![0u8; 1500];
    (0..frames)
        .map(|_| {
            tone.fill(&mut pcm);
            let n = enc.encode_float(&pcm, &mut out).expect("encode");
            (Arc::from(&out[..n]), audio::audio_level_from_samples(&pcm))
        })
        .collect()
}
