//! The whole media-core receive path: a `MediaCore` with one or two joined participants (real offers from
//! `ClientPeer`, forward or mixed room) fed arbitrary datagrams from arbitrary source addresses (or the
//! clients' own) at increasing times, interleaved with timeouts, mutes and removals. Some datagrams are
//! STUN binding requests carrying the real ICE username (ufrags from the offer and answer) so the router's
//! ufrag path and the peer's integrity check are reached, not just the unknown-source drop.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::client::{ClientConfig, ClientPeer};
use media_core::{
    CoreConfig, JoinParams, MediaCore, MixSettings, Output, ParticipantId, RoomId, RoomSettings,
};
use str0m::config::DtlsCert;

fn cert() -> &'static DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs provider generates certificates (str0m feature aws-lc-rs)")
    })
}

/// Client offers made once per process (ClientPeer setup is the slow part): (local address, offer).
fn offers() -> &'static [(SocketAddr, String); 2] {
    static OFFERS: OnceLock<[(SocketAddr, String); 2]> = OnceLock::new();
    OFFERS.get_or_init(|| {
        let now = Instant::now();
        let make = |port: u16, red: u8| {
            let local_addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = ClientConfig {
                local_addr,
                slots: 2,
                publish: true,
                red,
            };
            (
                local_addr,
                ClientPeer::new(now, config).expect("a client offer").1,
            )
        };
        [make(40_001, 0), make(40_002, 2)]
    })
}

fn ice_ufrag(sdp: &str) -> &str {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .expect("str0m writes an ICE ufrag into every offer and answer")
}

#[derive(Arbitrary, Debug)]
enum Source {
    Client(bool),
    Any([u8; 4], u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Datagram {
        after_us: u32,
        source: Source,
        data: Vec<u8>,
    },
    /// A STUN binding request with the real username of participant `which`, then arbitrary attributes.
    Stun {
        after_us: u32,
        source: Source,
        which: bool,
        txid: [u8; 12],
        tail: Vec<u8>,
    },
    Timeout {
        after_us: u32,
    },
    Mute {
        which: bool,
        muted: bool,
    },
    Remove {
        which: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    mixed: bool,
    slots: u8,
    two: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let start = Instant::now();
    let candidate = SocketAddr::from(([127, 0, 0, 1], 50_000));
    let mut core =
        MediaCore::with_certificate(start, CoreConfig::new(candidate, 7), cert().clone());
    let room = RoomId("fuzz".to_owned());
    let room_config = if input.mixed {
        RoomSettings::mix(MixSettings::default())
    } else {
        RoomSettings::forward(input.slots % 16 + 1)
    };
    let params = JoinParams {
        can_publish: true,
        can_subscribe: true,
        muted: false,
        hears_mix: false,
    };
    let offers = offers();
    let count = if input.two { 2 } else { 1 };
    let mut usernames = Vec::new();
    for (i, (_, offer)) in offers.iter().enumerate().take(count) {
        let id = ParticipantId(i as u64 + 1);
        let answer = core
            .add_participant(start, &room, room_config, id, params, offer)
            .expect("a ClientPeer offer is accepted");
        usernames.push(format!("{}:{}", ice_ufrag(&answer), ice_ufrag(offer)));
    }
    let source_addr = |s: &Source| match *s {
        Source::Client(second) => offers[usize::from(second)].0,
        Source::Any(ip, port) => SocketAddr::from((ip, port)),
    };
    let mut now = start;
    for op in input.ops.iter().take(256) {
        match op {
            Op::Datagram {
                after_us,
                source,
                data,
            } => {
                now += Duration::from_micros(u64::from(*after_us));
                core.handle_datagram(now, source_addr(source), data);
            }
            Op::Stun {
                after_us,
                source,
                which,
                txid,
                tail,
            } => {
                now += Duration::from_micros(u64::from(*after_us));
                let username = usernames[usize::from(*which) % usernames.len()].as_bytes();
                let mut attrs = Vec::new();
                attrs.extend_from_slice(&0x0006u16.to_be_bytes());
                attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
                attrs.extend_from_slice(username);
                attrs.resize(attrs.len().next_multiple_of(4), 0);
                attrs.extend_from_slice(tail);
                let mut msg = Vec::with_capacity(20 + attrs.len());
                msg.extend_from_slice(&0x0001u16.to_be_bytes());
                msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
                msg.extend_from_slice(&0x2112_a442u32.to_be_bytes());
                msg.extend_from_slice(txid);
                msg.extend_from_slice(&attrs);
                core.handle_datagram(now, source_addr(source), &msg);
            }
            Op::Timeout { after_us } => {
                now += Duration::from_micros(u64::from(*after_us));
                core.handle_timeout(now);
            }
            Op::Mute { which, muted } => {
                let _ = core.set_muted(ParticipantId(u64::from(*which) + 1), *muted);
            }
            Op::Remove { which } => {
                let _ = core.remove_participant(now, ParticipantId(u64::from(*which) + 1));
            }
        }
        // Drain like a worker does; the core must come to rest and never ask to be woken in the past
        // relative to its start.
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "poll_output never reached a timeout");
            match core.poll_output() {
                // No room here is broadcast, tapped or spanned: those outputs do not come, and are
                // ignored as a worker without those features would.
                Output::Transmit(_)
                | Output::Event(_)
                | Output::Broadcast(_)
                | Output::Microphone(_)
                | Output::Trunk(_) => {}
                Output::Timeout(at) => {
                    assert!(at >= start, "a timeout before the core's start");
                    break;
                }
            }
        }
    }
    assert!(core.participant_count() <= count);
});
