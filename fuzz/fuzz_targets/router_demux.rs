//! The datagram demux on its own: `media_core::router::Router` with peers added and removed, arbitrary
//! datagrams (STUN naming known or unknown ufrags, broken STUN, DTLS / SRTP-looking bytes) from a small pool
//! of addresses or any path (remote address, transport, local candidate: the router keys by the whole
//! path), and paths learned for arbitrary peers, at increasing times. Checked
//! against a model of the documented rules: a routed datagram goes to the peer the model says, an address
//! heard from a live peer within `ADDRESS_FRESH` is never handed to another one (`AddressTaken` names the
//! owner), each peer holds at most `MAX_ADDRS_PER_PEER` addresses (learning one more forgets its least
//! recently heard), so the map is bounded by the number of peers.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::core::net::{NetPath, Transport};
use media_core::router::{
    AddressTaken, Route, RouteMiss, Router, ADDRESS_FRESH, MAX_ADDRS_PER_PEER,
};
use media_core::ParticipantId;

const PEERS: u64 = 4;

/// A datagram's path: the remote address, and which of two local candidates (UDP, or ICE-TCP) it came in on.
#[derive(Arbitrary, Debug)]
enum Addr {
    /// One of 16 addresses shared by everyone (collisions, rebinding, spoofing), on the first UDP
    /// candidate.
    Pool(u8),
    /// Any remote address, on any of the local paths (the same remote on UDP and TCP are two paths).
    Any([u8; 4], u16, u8),
}

impl Addr {
    fn get(&self) -> NetPath {
        let local = |i: u8| SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(i % 2)));
        match *self {
            Addr::Pool(i) => NetPath::udp(local(0), SocketAddr::from(([10, 0, 0, i % 16], 5_000))),
            Addr::Any(ip, port, path) => NetPath {
                transport: if path & 2 == 0 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                },
                local: local(path),
                remote: SocketAddr::from((ip, port)),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Add {
        ufrag: u8,
        id: u8,
    },
    Remove {
        ufrag: u8,
        id: u8,
    },
    /// A well-formed STUN request naming `ufrag` (as `ufrag:client`), with arbitrary attributes before it.
    Stun {
        after_ms: u16,
        from: Addr,
        ufrag: u8,
        before: Vec<(u16, Vec<u8>)>,
    },
    /// Any bytes; with `stun`, the first 20 are made a STUN header (length field as given).
    Datagram {
        after_ms: u16,
        from: Addr,
        stun: bool,
        data: Vec<u8>,
    },
    Learn {
        after_ms: u16,
        from: Addr,
        id: u8,
    },
}

fn ufrag_name(u: u8) -> String {
    format!("srv{}", u % 6)
}

fn stun_header(kind: u16, body_len: u16) -> Vec<u8> {
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&body_len.to_be_bytes());
    msg.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    msg.extend_from_slice(&[7; 12]);
    msg
}

/// The model: who owns which address and when it was last heard, each peer's addresses, the ufrags.
#[derive(Default)]
struct Model {
    ufrags: HashMap<String, ParticipantId>,
    by_addr: HashMap<NetPath, (ParticipantId, Instant)>,
    addrs: HashMap<ParticipantId, Vec<NetPath>>,
}

impl Model {
    fn learn(
        &mut self,
        now: Instant,
        from: NetPath,
        id: ParticipantId,
    ) -> Result<(), AddressTaken> {
        if let Some((owner, heard)) = self.by_addr.get_mut(&from) {
            if *owner == id {
                *heard = now;
                return Ok(());
            }
            if now.saturating_duration_since(*heard) < ADDRESS_FRESH {
                return Err(AddressTaken { owner: *owner });
            }
            let stale = *owner;
            if let Some(list) = self.addrs.get_mut(&stale) {
                list.retain(|a| *a != from);
            }
        }
        let list = self.addrs.entry(id).or_default();
        if list.len() >= MAX_ADDRS_PER_PEER {
            // Times are strictly increasing per operation, so the least recently heard is unique.
            let (i, _) = list
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| self.by_addr[*a].1)
                .expect("a full list is not empty");
            let evicted = list.swap_remove(i);
            self.by_addr.remove(&evicted);
        }
        list.push(from);
        self.by_addr.insert(from, (id, now));
        Ok(())
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut router = Router::default();
    let mut model = Model::default();
    let mut now = Instant::now();
    for op in ops.iter().take(512) {
        // Every operation takes at least a microsecond: last-heard times are distinct.
        now += Duration::from_micros(1);
        match op {
            Op::Add { ufrag, id } => {
                let (ufrag, id) = (ufrag_name(*ufrag), ParticipantId(u64::from(*id) % PEERS));
                router.add_peer(&ufrag, id);
                model.ufrags.insert(ufrag, id);
            }
            Op::Remove { ufrag, id } => {
                let (ufrag, id) = (ufrag_name(*ufrag), ParticipantId(u64::from(*id) % PEERS));
                router.remove_peer(&ufrag, id);
                model.ufrags.remove(&ufrag);
                for a in model.addrs.remove(&id).unwrap_or_default() {
                    model.by_addr.remove(&a);
                }
            }
            Op::Stun {
                after_ms,
                from,
                ufrag,
                before,
            } => {
                now += Duration::from_millis(u64::from(*after_ms));
                let name = ufrag_name(*ufrag);
                let mut body = Vec::new();
                for (kind, value) in before.iter().take(4) {
                    // Not USERNAME, so the router must skip it (padding to 4 bytes).
                    let kind = if *kind == 0x0006 { 0x8028 } else { *kind };
                    let value = &value[..value.len().min(64)];
                    body.extend_from_slice(&kind.to_be_bytes());
                    body.extend_from_slice(&(value.len() as u16).to_be_bytes());
                    body.extend_from_slice(value);
                    body.resize(body.len().next_multiple_of(4), 0);
                }
                let username = format!("{name}:client");
                body.extend_from_slice(&0x0006u16.to_be_bytes());
                body.extend_from_slice(&(username.len() as u16).to_be_bytes());
                body.extend_from_slice(username.as_bytes());
                body.resize(body.len().next_multiple_of(4), 0);
                let mut msg = stun_header(0x0001, body.len() as u16);
                msg.extend_from_slice(&body);
                let route = router.route(now, from.get(), &msg);
                match model.ufrags.get(&name) {
                    Some(id) => assert_eq!(route, Ok(Route::Stun(*id)), "STUN goes by ufrag"),
                    None => assert_eq!(route, Err(RouteMiss::UnknownUfrag)),
                }
            }
            Op::Datagram {
                after_ms,
                from,
                stun,
                data,
            } => {
                now += Duration::from_millis(u64::from(*after_ms));
                let mut data = data.clone();
                if *stun && data.len() >= 20 {
                    data[0] &= 1;
                    data[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
                }
                let from = from.get();
                let is_stun =
                    data.len() >= 20 && data[0] < 2 && data[4..8] == [0x21, 0x12, 0xa4, 0x42];
                let route = router.route(now, from, &data);
                if is_stun {
                    if let Ok(Route::Stun(id)) = route {
                        assert!(
                            model.ufrags.values().any(|v| *v == id),
                            "STUN routed to a peer no ufrag names"
                        );
                    }
                    assert!(
                        !matches!(route, Ok(Route::Bound(_))),
                        "STUN is never routed by address"
                    );
                } else {
                    match model.by_addr.get_mut(&from) {
                        Some((id, heard)) => {
                            assert_eq!(
                                route,
                                Ok(Route::Bound(*id)),
                                "a bound address routes to its peer"
                            );
                            *heard = now;
                        }
                        None => assert_eq!(route, Err(RouteMiss::UnknownSource)),
                    }
                }
            }
            Op::Learn { after_ms, from, id } => {
                now += Duration::from_millis(u64::from(*after_ms));
                let id = ParticipantId(u64::from(*id) % PEERS);
                let from = from.get();
                let expected = model.learn(now, from, id);
                assert_eq!(
                    router.learn(now, from, id),
                    expected,
                    "learn follows the rules"
                );
            }
        }
        assert_eq!(router.address_count(), model.by_addr.len());
        let peers = model.addrs.values().filter(|l| !l.is_empty()).count();
        assert!(
            router.address_count() <= peers * MAX_ADDRS_PER_PEER,
            "the address map is bounded"
        );
        assert!(model.addrs.values().all(|l| l.len() <= MAX_ADDRS_PER_PEER));
    }
});
