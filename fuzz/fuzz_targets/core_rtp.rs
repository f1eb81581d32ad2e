//! The media-core receive path past SRTP: a `MediaCore` with two participants in a forward room and two in
//! a mixed room, each a real `ClientPeer` connected over ICE + DTLS in virtual time (datagrams handed over
//! in-process, no loss). Each input then makes the clients send fuzzer-chosen RTP through their real SRTP
//! sessions — sequence and timestamp jumps, marker, the Opus, RED or any payload type, any RFC 6464 level
//! and voice-activity values, arbitrary payloads (malformed Opus, RED built from arbitrary blocks, raw
//! bytes) — interleaved with time steps (single jumps of up to an hour, or many ticks), mutes and
//! unmutes. Checks: the core and the clients always drain to a timeout; every packet a client receives
//! is well-formed for its room (mixed: valid Opus, at most 15 talkers, never the listener itself; forward:
//! the CSRC is the other member's microphone); and, unless the input jumped time past the ICE timeout
//! without running the timers (`SANE_JUMP`), every listener still hears its room's talker afterwards (the
//! talkers go on from their highest sequence number, as a real sender does).
//!
//! The connected set-up (four ICE + DTLS handshakes, ~130 ms under ASan) is built once per process and
//! kept across inputs while it stays healthy (each input ends with the liveness check); an input that
//! jumped past the consent timeout gets a fresh one for the next input. So an input may behave slightly
//! differently alone than in a run: reproduce a crash with its run's corpus if it does not reproduce alone.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::client::{ClientConfig, ClientOutput, ClientPeer, RawRtp};
use media_core::encoder::{EncoderSettings, MixEncoder};
use media_core::red::{self, RedundantFrame};
use media_core::{
    CoreConfig, JoinParams, MediaCore, MixSettings, Output, ParticipantId, RoomId, RoomSettings,
};
use str0m::config::DtlsCert;

const CANDIDATE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    50_000,
);
/// Clients 0 and 1 are in the forward room, 2 and 3 in the mixed room; 0 and 2 offer RED.
const CLIENTS: usize = 4;
/// Most steps one drain or one time advance may take before the target calls it a livelock.
const DRAIN_CAP: usize = 100_000;

fn cert() -> &'static DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs provider generates certificates (str0m feature aws-lc-rs)")
    })
}

/// Fifty 20 ms Opus frames of a 440 Hz tone (libopus, 32 kb/s, FEC): the well-formed packets.
fn tone() -> &'static [Vec<u8>] {
    static TONE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    TONE.get_or_init(|| {
        let mut encoder = MixEncoder::new(EncoderSettings {
            bitrate_bps: 32_000,
            complexity: 5,
            fec: true,
            channels: 1,
        })
        .expect("libopus creates a mono 48 kHz encoder");
        let mut phase = 0.0;
        let mut pcm = vec![0.0f32; 960];
        let mut out = [0u8; 1500];
        (0..50)
            .map(|_| {
                media_core::audio::sine(440.0, 0.5, 48_000, &mut phase, &mut pcm);
                let n = encoder
                    .encode(&pcm, &mut out)
                    .expect("libopus encodes a 20 ms frame");
                out[..n].to_vec()
            })
            .collect()
    })
}

struct Client {
    addr: SocketAddr,
    peer: ClientPeer,
    timeout: Instant,
    /// The next extended sequence number and timestamp this client sends.
    seq: u64,
    /// One past the highest sequence number sent.
    seq_end: u64,
    ts: u32,
    /// Microphone SSRC (what the others see as CSRC).
    ssrc: u32,
    opus_pt: u8,
    red_pt: Option<u8>,
    /// Packets received since the last [`World::take_received`].
    received: usize,
}

struct World {
    core: MediaCore,
    core_timeout: Instant,
    clients: Vec<Client>,
    now: Instant,
}

impl World {
    fn new(start: Instant) -> World {
        let mut core =
            MediaCore::with_certificate(start, CoreConfig::new(CANDIDATE, 7), cert().clone());
        let forward = RoomId("forward".to_owned());
        let mixed = RoomId("mixed".to_owned());
        let params = JoinParams {
            can_publish: true,
            can_subscribe: true,
            muted: false,
            hears_mix: false,
        };
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], 40_001 + i as u16));
            let config = ClientConfig {
                local_addr: addr,
                slots: 2,
                publish: true,
                red: if i % 2 == 0 { 2 } else { 0 },
            };
            let (mut peer, offer) = ClientPeer::new(start, config).expect("a client offer");
            let (room, room_config) = if i < 2 {
                (&forward, RoomSettings::forward(2))
            } else {
                (&mixed, RoomSettings::mix(MixSettings::default()))
            };
            let answer = core
                .add_participant(
                    start,
                    room,
                    room_config,
                    ParticipantId(i as u64 + 1),
                    params,
                    &offer,
                )
                .expect("a ClientPeer offer is accepted");
            peer.accept_answer(&answer)
                .expect("the core's answer is accepted");
            clients.push(Client {
                addr,
                peer,
                timeout: start,
                seq: 0,
                seq_end: 0,
                ts: 0,
                ssrc: 0,
                opus_pt: 0,
                red_pt: None,
                received: 0,
            });
        }
        let mut world = World {
            core,
            core_timeout: start,
            clients,
            now: start,
        };
        world.pump();
        for _ in 0..10_000 {
            if world.clients.iter().all(|c| c.peer.is_connected()) {
                break;
            }
            world.step(Duration::from_millis(100));
        }
        for c in &mut world.clients {
            assert!(c.peer.is_connected(), "a client connects without loss");
            c.ssrc = c
                .peer
                .mic_ssrc()
                .expect("a publishing client has a microphone");
            let (opus, red) = c.peer.mic_payload_types();
            c.opus_pt = opus.expect("the microphone negotiated Opus");
            c.red_pt = red;
        }
        world
    }

    /// Hand every pending datagram over until nobody has anything to send.
    fn pump(&mut self) {
        let now = self.now;
        let mut steps = 0;
        loop {
            let mut moved = false;
            loop {
                steps += 1;
                assert!(steps < DRAIN_CAP, "the core never came to rest");
                match self.core.poll_output() {
                    Output::Transmit(t) => {
                        moved = true;
                        if let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination) {
                            let _ = c.peer.handle_datagram(now, CANDIDATE, &t.contents);
                        }
                    }
                    // No room here is broadcast, tapped or spanned.
                    Output::Event(_)
                    | Output::Broadcast(_)
                    | Output::Microphone(_)
                    | Output::Trunk(_) => {}
                    Output::Timeout(at) => {
                        self.core_timeout = at;
                        break;
                    }
                }
            }
            for i in 0..self.clients.len() {
                loop {
                    steps += 1;
                    assert!(steps < DRAIN_CAP, "a client never came to rest");
                    let out = match self.clients[i].peer.poll_output() {
                        Ok(out) => out,
                        Err(_) => break,
                    };
                    match out {
                        ClientOutput::Transmit(t) => {
                            moved = true;
                            let from = self.clients[i].addr;
                            self.core.handle_datagram(now, from, &t.contents);
                        }
                        ClientOutput::Audio(a) => {
                            self.check_received(i, &a);
                            self.clients[i].received += 1;
                        }
                        ClientOutput::Connected | ClientOutput::Disconnected => {}
                        ClientOutput::Timeout(at) => {
                            self.clients[i].timeout = at;
                            break;
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn check_received(&self, listener: usize, a: &media_core::client::ReceivedAudio) {
        let own = self.clients[listener].ssrc;
        if listener < 2 {
            let other = self.clients[1 - listener].ssrc;
            assert_eq!(
                a.csrc,
                Some(other),
                "a forward slot carries the other member"
            );
        } else {
            assert!(
                media_core::mixer::opus_packet_info(&a.payload).is_some(),
                "the mixer sends valid Opus"
            );
            assert!(a.contributors.len() <= 15, "at most 15 CSRCs");
            assert!(
                a.contributors.iter().all(|(c, _)| *c != own),
                "a mix-minus never contains the listener"
            );
        }
    }

    /// Fire every timeout due at `now` (core and clients), then pump.
    fn fire(&mut self) {
        let now = self.now;
        if self.core_timeout <= now {
            self.core.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.timeout <= now {
                let _ = c.peer.handle_timeout(now);
            }
        }
        self.pump();
    }

    fn next_timeout(&self) -> Instant {
        self.clients
            .iter()
            .map(|c| c.timeout)
            .fold(self.core_timeout, Instant::min)
    }

    /// Advance by `d`, running every timeout on the way (at most `DRAIN_CAP` of them).
    fn step(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..DRAIN_CAP {
            let next = self.next_timeout().max(self.now);
            if next > end {
                self.now = end;
                self.fire();
                return;
            }
            self.now = next;
            self.fire();
        }
        panic!("timeouts never moved past {d:?} ahead");
    }

    /// Jump straight to `now + d` (a stalled worker, a suspended laptop): one timeout call each.
    fn jump(&mut self, d: Duration) {
        self.now += d;
        self.core_timeout = self.core_timeout.min(self.now);
        for c in &mut self.clients {
            c.timeout = c.timeout.min(self.now);
        }
        self.fire();
    }

    fn send(&mut self, i: usize, rtp: RawRtp<'_>) {
        let now = self.now;
        let _ = self.clients[i].peer.send_rtp_raw(now, rtp);
        self.fire_client(i);
    }

    /// Let client `i` put what it queued on the wire (str0m sends on timeout) and pump.
    fn fire_client(&mut self, i: usize) {
        let now = self.now;
        let _ = self.clients[i].peer.handle_timeout(now);
        self.pump();
    }

    /// A well-formed frame from client `i` with the next sequence number and timestamp.
    fn send_good(&mut self, i: usize, frame: usize) {
        let c = &mut self.clients[i];
        let (pt, seq, ts) = (c.opus_pt, c.seq, c.ts);
        c.seq += 1;
        c.seq_end = c.seq_end.max(c.seq);
        c.ts = c.ts.wrapping_add(960);
        let payload = &tone()[frame % tone().len()];
        self.send(
            i,
            RawRtp {
                pt,
                seq,
                ts,
                marker: false,
                audio_level: Some(-20),
                voice_activity: Some(true),
                payload,
            },
        );
    }
}

#[derive(Arbitrary, Debug)]
enum PayloadType {
    Opus,
    Red,
    Any(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    /// A valid frame of the tone.
    Tone(u8),
    Raw(Vec<u8>),
    /// A RED payload from arbitrary blocks (each `(ts offset, bytes)`; an empty block: a tone frame) and a
    /// primary.
    Red {
        blocks: Vec<(u16, Vec<u8>)>,
        primary: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Rtp {
        client: u8,
        pt: PayloadType,
        seq_delta: i16,
        ts_delta: u32,
        marker: bool,
        audio_level: Option<i8>,
        voice_activity: Option<bool>,
        payload: Payload,
    },
    /// A run of well-formed 20 ms frames from one client, each followed by 20 ms of time.
    Talk {
        client: u8,
        frames: u8,
    },
    /// Advance through every timeout for this long (at most 2 s; 4 s per input in all).
    Step {
        ms: u16,
    },
    /// Jump without the timeouts in between (up to 65 s; past `SANE_JUMP` the ICE session may end).
    Jump {
        ms: u16,
    },
    /// A stalled worker or a suspended laptop: jump minutes to an hour.
    Stall {
        minutes: u8,
    },
    Mute {
        client: u8,
        muted: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

thread_local! {
    /// The connected world, kept across inputs while it is healthy.
    static WORLD: std::cell::RefCell<Option<World>> = const { std::cell::RefCell::new(None) };
}

/// Most virtual time `Step` and `Talk` may run per input (each second costs ~150 ms under ASan).
const STEP_BUDGET: Duration = Duration::from_secs(4);
/// Jumps longer than this (without running timers) may end the ICE session, and then there is no liveness
/// check: the server side (str0m's ICE-lite agent, `is` crate `RECENT_BINDING_REQUEST`) drops a pair that
/// sent no binding request for 15 s, and a client's last one may be a few seconds old when the jump starts
/// (a fuzz finding: a 14.9 s jump right after talking disconnects, 14 s does not).
const SANE_JUMP: Duration = Duration::from_secs(10);

fuzz_target!(|input: Input| {
    let mut world = WORLD
        .with(|w| w.borrow_mut().take())
        .unwrap_or_else(|| World::new(Instant::now()));
    let mut sane = true;
    let mut muted = [false; CLIENTS];
    let mut stepped = Duration::ZERO;
    for op in input.ops.iter().take(256) {
        match op {
            Op::Rtp {
                client,
                pt,
                seq_delta,
                ts_delta,
                marker,
                audio_level,
                voice_activity,
                payload,
            } => {
                let i = usize::from(*client) % CLIENTS;
                let c = &mut world.clients[i];
                let seq = c.seq.saturating_add_signed(i64::from(*seq_delta));
                c.seq = seq + 1;
                c.seq_end = c.seq_end.max(c.seq);
                let ts = c.ts.wrapping_add(*ts_delta);
                c.ts = ts.wrapping_add(960);
                let pt = match pt {
                    PayloadType::Opus => c.opus_pt,
                    PayloadType::Red => c.red_pt.unwrap_or(c.opus_pt),
                    PayloadType::Any(pt) => pt & 0x7f,
                };
                let opus_pt = c.opus_pt;
                let bytes: Vec<u8> = match payload {
                    Payload::Tone(n) => tone()[usize::from(*n) % tone().len()].clone(),
                    Payload::Raw(bytes) => bytes.clone(),
                    Payload::Red { blocks, primary } => {
                        let frames: Vec<RedundantFrame<'_>> = blocks
                            .iter()
                            .take(8)
                            .map(|(ts_offset, bytes)| RedundantFrame {
                                ts_offset: u32::from(*ts_offset),
                                payload: if bytes.is_empty() { &tone()[0] } else { bytes },
                            })
                            .collect();
                        let mut out = Vec::new();
                        red::encode(opus_pt, primary, &frames, |_, _| true, &mut out);
                        out
                    }
                };
                world.send(
                    i,
                    RawRtp {
                        pt,
                        seq,
                        ts,
                        marker: *marker,
                        audio_level: *audio_level,
                        voice_activity: *voice_activity,
                        payload: &bytes,
                    },
                );
            }
            Op::Talk { client, frames } => {
                let i = usize::from(*client) % CLIENTS;
                for f in 0..usize::from(*frames % 50) {
                    if stepped >= STEP_BUDGET {
                        break;
                    }
                    world.send_good(i, f);
                    world.step(Duration::from_millis(20));
                    stepped += Duration::from_millis(20);
                }
            }
            Op::Step { ms } => {
                // `Talk` may have gone up to one frame past the budget.
                let d = Duration::from_millis(u64::from(*ms % 2_000))
                    .min(STEP_BUDGET.saturating_sub(stepped));
                world.step(d);
                stepped += d;
            }
            Op::Jump { ms } => {
                let d = Duration::from_millis(u64::from(*ms));
                sane &= d <= SANE_JUMP;
                world.jump(d);
            }
            Op::Stall { minutes } => {
                sane = false;
                world.jump(Duration::from_secs(60 * (u64::from(*minutes) % 60 + 1)));
            }
            Op::Mute { client, muted: m } => {
                let i = usize::from(*client) % CLIENTS;
                muted[i] = *m;
                let _ = world.core.set_muted(ParticipantId(i as u64 + 1), *m);
            }
        }
    }
    if !sane {
        // The consent may have ended: the next input starts from a fresh world.
        return;
    }
    // Liveness: unmute, then clients 0 and 2 talk for 300 ms, going on from their highest sequence number
    // and well past any timestamp the input used (a new talk spurt).
    for (i, m) in muted.iter().enumerate() {
        if *m {
            world
                .core
                .set_muted(ParticipantId(i as u64 + 1), false)
                .expect("every client is still a participant");
        }
    }
    for c in &mut world.clients {
        c.received = 0;
        c.seq = c.seq_end;
        c.ts = c.ts.wrapping_add(48_000);
    }
    for f in 0..15 {
        world.send_good(0, f);
        world.send_good(2, f);
        world.step(Duration::from_millis(20));
    }
    world.step(Duration::from_millis(200));
    for listener in [1, 3] {
        assert!(
            world.clients[listener].received > 0,
            "client {listener} hears nothing after the input"
        );
    }
    WORLD.with(|w| *w.borrow_mut() = Some(world));
});
