//! Whole calls in virtual time: a [`MediaCore`] and str0m client peers exchange real DTLS-SRTP datagrams over
//! a seeded simulated network (loss, jitter, reordering, duplication). Clients send Opus-encoded tones with
//! their audio level; what each client receives is decoded per CSRC and analysed. Reproducible and much
//! faster than real time; every run is bounded in steps so a livelock fails instead of hanging.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media_core::audio::{self, ToneAnalysis, ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};
use media_core::client::{ClientConfig, ClientOutput, ClientPeer, ReceivedAudio};
use media_core::sim::{LinkConfig, SimNet};
use media_core::{
    CoreConfig, CoreEvent, DropReason, JoinParams, MediaCore, Output, ParticipantId, RoomConfig,
    RoomId,
};

const FRAME: Duration = Duration::from_millis(20);
const MAX_STEPS_PER_SECOND: u64 = 200_000;

/// The one place a test takes the real clock: the origin of virtual time.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

struct Client {
    id: ParticipantId,
    addr: SocketAddr,
    peer: ClientPeer,
    tone: ToneGenerator,
    freq: f32,
    /// 0.0: silent (DTX: nothing is sent, media time still advances).
    amplitude: f32,
    encoder: opus::Encoder,
    next_frame: Instant,
    timeout: Instant,
    mic_ssrc: u32,
    received: Vec<ReceivedAudio>,
    decoders: HashMap<u32, opus::Decoder>,
    pcm_by_csrc: HashMap<u32, Vec<f32>>,
}

impl Client {
    /// Everything decoded from `csrc`, from `from` samples on.
    fn pcm(&self, csrc: u32) -> &[f32] {
        self.pcm_by_csrc
            .get(&csrc)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    fn csrcs_since(&self, index: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self.received[index..]
            .iter()
            .filter_map(|r| r.csrc)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

struct Sim {
    now: Instant,
    core: MediaCore,
    core_timeout: Instant,
    server: SocketAddr,
    net: SimNet,
    clients: Vec<Client>,
    /// Core events with the virtual time they were emitted.
    events: Vec<(Instant, CoreEvent)>,
    room: RoomId,
    slots: usize,
}

impl Sim {
    /// A room with `slots` slots and one client per (frequency, amplitude).
    fn new(seed: u64, link: LinkConfig, slots: usize, voices: &[(f32, f32)]) -> Sim {
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
        };
        for &(freq, amplitude) in voices {
            sim.join(freq, amplitude);
        }
        sim.drain_core();
        sim
    }

    fn join(&mut self, freq: f32, amplitude: f32) -> usize {
        let index = self.clients.len();
        let addr: SocketAddr = format!("127.0.0.{}:6000", 10 + index)
            .parse()
            .expect("a valid address");
        let (mut peer, offer) = ClientPeer::new(
            self.now,
            ClientConfig {
                local_addr: addr,
                slots: self.slots,
                publish: true,
            },
        )
        .expect("a client offer");
        let id = ParticipantId(100 + index as u64);
        let answer = self
            .core
            .add_participant(
                self.now,
                &self.room,
                RoomConfig { slots: self.slots },
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
        let encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("an Opus encoder for 48 kHz mono");
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
        });
        self.drain_core();
        self.drain_client(index);
        index
    }

    fn set_amplitude(&mut self, client: usize, amplitude: f32) {
        self.clients[client].amplitude = amplitude;
        self.clients[client].tone.set_amplitude(amplitude);
    }

    fn drain_core(&mut self) {
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

    fn drain_client(&mut self, i: usize) {
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
                ClientOutput::Audio(a) => {
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

    fn send_frame(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.amplitude > 0.0 {
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
    fn run_for(&mut self, d: Duration) {
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
                if c.peer.is_connected() {
                    next = next.min(c.next_frame);
                }
            }
            self.now = self.now.max(next);
            while let Some(d) = self.net.deliver_due(self.now) {
                if d.destination == self.server {
                    self.core.handle_datagram(self.now, d.source, &d.data);
                    self.drain_core();
                } else if let Some(i) = self.clients.iter().position(|c| c.addr == d.destination) {
                    self.clients[i]
                        .peer
                        .handle_datagram(self.now, d.source, &d.data)
                        .expect("client accepts datagram");
                    self.drain_client(i);
                }
            }
            if self.core_timeout <= self.now {
                self.core.handle_timeout(self.now);
                self.drain_core();
            }
            for i in 0..self.clients.len() {
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

    fn all_connected(&self) -> bool {
        self.clients.iter().all(|c| c.peer.is_connected())
    }

    fn connect(&mut self) {
        for _ in 0..100 {
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
        panic!("clients did not connect within 10 s of virtual time");
    }

    /// Assert client `i` hears every other client's tone (per CSRC, checked on the last `tail` seconds) and
    /// never its own.
    fn assert_hears_others(&self, i: usize, tail_secs: f32) {
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

#[test]
fn everyone_hears_everyone_else_and_never_themselves() {
    let mut sim = Sim::new(
        1,
        LinkConfig::with_delay(10.0),
        3,
        &[(440.0, 0.3), (660.0, 0.3), (880.0, 0.3)],
    );
    sim.connect();
    sim.run_for(Duration::from_secs(3));
    for i in 0..3 {
        sim.assert_hears_others(i, 2.0);
        // CSRC carries the speaker's original SSRC; slot streams have their own SSRCs.
        let c = &sim.clients[i];
        let mine: Vec<u32> = sim.clients.iter().map(|c| c.mic_ssrc).collect();
        assert!(
            c.received.iter().all(|r| !mine.contains(&r.ssrc)),
            "a slot reuses a microphone SSRC"
        );
    }
    let connected = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, CoreEvent::Connected(_)))
        .count();
    assert_eq!(connected, 3);
}

#[test]
fn every_voice_survives_loss_jitter_reordering_and_duplication() {
    for seed in [7, 8, 9] {
        let link = LinkConfig {
            loss: 0.05,
            jitter_ms: 40.0,
            base_delay_ms: 20.0,
            duplicate: 0.02,
            reorder: true,
        };
        let voices = [(440.0, 0.3), (660.0, 0.3), (880.0, 0.3), (1100.0, 0.3)];
        let mut sim = Sim::new(seed, link, 3, &voices);
        sim.connect();
        sim.run_for(Duration::from_secs(4));
        for i in 0..voices.len() {
            sim.assert_hears_others(i, 3.0);
            // Duplicates never reach a slot twice after rewriting; losses stay bounded.
            let c = &sim.clients[i];
            let mut seqs: Vec<(usize, u64)> = c.received.iter().map(|r| (r.slot, r.seq)).collect();
            let n = seqs.len();
            seqs.sort_unstable();
            seqs.dedup();
            assert!(
                n - seqs.len() <= n / 10,
                "seed {seed}: client {i} got {} duplicates of {n}",
                n - seqs.len()
            );
        }
        let stale = sim.core.stats().dropped(DropReason::StaleOrDuplicate);
        assert!(
            stale > 0,
            "seed {seed}: duplicated packets should have been dropped by the rewriters"
        );
    }
}

/// Received packets of one slot in order of arrival on a clean link.
fn slot_packets(c: &Client, slot: usize) -> Vec<&ReceivedAudio> {
    c.received.iter().filter(|r| r.slot == slot).collect()
}

#[test]
fn a_slot_stream_stays_continuous_across_speaker_switches() {
    // One slot, two talkers and a listener: the slot moves from A to B when A stops and B starts.
    let mut sim = Sim::new(
        3,
        LinkConfig::with_delay(5.0),
        1,
        &[(440.0, 0.3), (660.0, 0.0), (880.0, 0.0)],
    );
    sim.connect();
    sim.run_for(Duration::from_secs(2));
    let (a, b) = (sim.clients[0].mic_ssrc, sim.clients[1].mic_ssrc);
    assert_eq!(sim.clients[2].csrcs_since(0), vec![a]);
    let mark = sim.clients[2].received.len();
    sim.set_amplitude(0, 0.0);
    sim.set_amplitude(1, 0.3);
    let onset = sim.now;
    sim.run_for(Duration::from_secs(2));
    // B is reported speaking within 300 ms of starting to talk, and A is no longer reported.
    let b_id = sim.clients[1].id;
    let (at, speakers) = sim
        .events
        .iter()
        .find_map(|(t, e)| match e {
            CoreEvent::Speakers { speakers, .. }
                if *t >= onset && speakers.iter().any(|(p, _)| *p == b_id) =>
            {
                Some((*t, speakers.clone()))
            }
            _ => None,
        })
        .expect("a speakers event names B");
    assert!(
        at.duration_since(onset) <= Duration::from_millis(300),
        "speaking reported after {:?}",
        at - onset
    );
    assert!(speakers
        .iter()
        .all(|(_, level)| (0.0..=1.0).contains(level)));
    let last_speakers = sim.events.iter().rev().find_map(|(_, e)| match e {
        CoreEvent::Speakers { speakers, .. } => Some(speakers.clone()),
        _ => None,
    });
    assert_eq!(
        last_speakers.map(|s| s.iter().map(|(p, _)| *p).collect::<Vec<_>>()),
        Some(vec![b_id])
    );
    let listener = &sim.clients[2];
    assert_eq!(
        listener.csrcs_since(mark + 25),
        vec![b],
        "the slot did not move to B"
    );
    let packets = slot_packets(listener, 0);
    let switch = packets
        .iter()
        .position(|p| p.csrc == Some(b))
        .expect("B reached the slot");
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "slot sequence numbers must be contiguous"
        );
        let dt = w[1].timestamp.wrapping_sub(w[0].timestamp);
        assert!(
            (960..48_000 * 3).contains(&dt),
            "timestamp step {dt} out of range"
        );
    }
    // Across the switch the timestamp advanced by about the silence between A's last and B's first packet.
    let (before, after) = (packets[switch - 1], packets[switch]);
    let wall = after.arrival.duration_since(before.arrival).as_secs_f64();
    let media = f64::from(after.timestamp.wrapping_sub(before.timestamp)) / 48_000.0;
    assert!(
        (media - wall).abs() < 0.06,
        "switch: media time {media:.3}s vs wall {wall:.3}s"
    );
    let a_hears = ToneAnalysis::analyze(
        &listener.pcm(b)[FRAME_SAMPLES * 25..],
        SAMPLE_RATE,
        &[440.0, 660.0],
    );
    assert_eq!(a_hears.present_default(), vec![660.0]);
}

#[test]
fn a_dtx_pause_keeps_sequence_numbers_and_preserves_the_timestamp_gap() {
    let mut sim = Sim::new(
        4,
        LinkConfig::with_delay(5.0),
        3,
        &[(440.0, 0.3), (660.0, 0.0)],
    );
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    sim.set_amplitude(0, 0.0);
    sim.run_for(Duration::from_secs(1));
    sim.set_amplitude(0, 0.3);
    sim.run_for(Duration::from_secs(1));
    let packets = slot_packets(&sim.clients[1], 0);
    let gap = packets
        .windows(2)
        .map(|w| {
            (
                w[1].timestamp.wrapping_sub(w[0].timestamp),
                w[1].seq - w[0].seq,
            )
        })
        .max()
        .expect("packets arrived");
    assert_eq!(gap.1, 1, "sequence numbers stay contiguous over DTX");
    let secs = f64::from(gap.0) / 48_000.0;
    assert!(
        (0.98..1.1).contains(&secs),
        "the DTX gap should be ~1 s of media time, got {secs:.3}s"
    );
}

#[test]
fn with_five_voices_and_three_slots_the_quiet_hear_the_three_loudest() {
    let voices = [
        (400.0, 0.5),
        (500.0, 0.35),
        (600.0, 0.25),
        (800.0, 0.02),
        (900.0, 0.015),
    ];
    let mut sim = Sim::new(5, LinkConfig::with_delay(5.0), 3, &voices);
    sim.connect();
    sim.run_for(Duration::from_secs(3));
    let loud: Vec<u32> = {
        let mut v: Vec<u32> = sim.clients[..3].iter().map(|c| c.mic_ssrc).collect();
        v.sort_unstable();
        v
    };
    for quiet in [3, 4] {
        let mark = sim.clients[quiet].received.len();
        sim.run_for(Duration::from_secs(1));
        assert_eq!(
            sim.clients[quiet].csrcs_since(mark),
            loud,
            "quiet listener {quiet} must hear the 3 loudest"
        );
    }
    // The loudest hears the next three: 2nd, 3rd and 4th.
    let mark = sim.clients[0].received.len();
    sim.run_for(Duration::from_secs(1));
    let mut expect: Vec<u32> = sim.clients[1..4].iter().map(|c| c.mic_ssrc).collect();
    expect.sort_unstable();
    assert_eq!(sim.clients[0].csrcs_since(mark), expect);
}

#[test]
fn muting_stops_forwarding_and_garbage_is_counted_not_fatal() {
    let mut sim = Sim::new(
        6,
        LinkConfig::with_delay(5.0),
        3,
        &[(440.0, 0.3), (660.0, 0.3)],
    );
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    let a = sim.clients[0].id;
    sim.core.set_muted(a, true).expect("a is in the room");
    sim.run_for(Duration::from_millis(200));
    let mark = sim.clients[1].received.len();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.clients[1].received.len(),
        mark,
        "a muted participant is still forwarded"
    );
    assert!(sim.core.stats().dropped(DropReason::NotPublishing) > 0);
    sim.core.set_muted(a, false).expect("a is in the room");

    // Garbage from strangers and from a connected client's address.
    let stranger: SocketAddr = "127.0.0.99:4000".parse().expect("a literal address");
    let mut rng = media_core::sim::Rng::new(99);
    for n in 0..500 {
        let mut junk = vec![0u8; 1 + (n % 400)];
        rng.fill_bytes(&mut junk);
        sim.core.handle_datagram(sim.now, stranger, &junk);
        sim.drain_core();
        let from = sim.clients[0].addr;
        sim.core.handle_datagram(sim.now, from, &junk);
        sim.drain_core();
    }
    let mark = sim.clients[1].received.len();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[1].received.len() > mark + 40,
        "the call did not survive garbage"
    );
    assert!(sim.core.stats().dropped(DropReason::UnknownSource) >= 400);
    sim.assert_hears_others(1, 0.8);
}
