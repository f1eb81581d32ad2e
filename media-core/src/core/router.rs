//! Which peer a datagram on the worker's shared sockets belongs to.
//!
//! All peers of a worker share its sockets (UDP, and the TCP listener's connections). A STUN binding request names the server's ICE ufrag in its
//! USERNAME attribute (`server_ufrag:client_ufrag`): [`Router::route`] finds the peer it names, the core has
//! that peer's ICE agent check the request (MESSAGE-INTEGRITY under the peer's ICE password), and only then
//! [`Router::learn`]s the client's path. DTLS, SRTP and SRTCP are routed by [`NetPath`]: the transport, the
//! local candidate it arrived on and the remote address, so the same remote address over TCP and over UDP
//! (or on two local candidates) are two paths, each learned on its own.
//!
//! Holding valid credentials is not proof of owning an address: any client can sign requests for its own
//! peer and spoof another client's source address. So a path that belongs to one live peer and was
//! heard from within [`ADDRESS_FRESH`] is never handed to another peer ([`AddressTaken`]), and each peer
//! holds at most [`MAX_ADDRS_PER_PEER`] paths, so the map is bounded by the number of peers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::net::NetPath;
use crate::ids::ParticipantId;

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];

/// Most addresses one peer may be reached from (host, reflexive, IPv4/IPv6 candidates and NAT rebinding);
/// learning one more forgets the peer's least recently heard address.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// How long an address stays its peer's after the last datagram from it: the ICE consent timeout
/// (RFC 7675 §5.1). A client with a live connection sends consent checks at least every few seconds.
pub const ADDRESS_FRESH: Duration = Duration::from_secs(30);

/// Why a datagram could not be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMiss {
    /// A STUN message without a USERNAME naming one of our peers.
    UnknownUfrag,
    /// A STUN message whose framing is broken.
    MalformedStun,
    /// Not STUN, from an address no peer has verified.
    UnknownSource,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A STUN message naming this peer's ufrag: not yet authenticated. The peer must check it before its
    /// source is [`Router::learn`]ed.
    Stun(ParticipantId),
    /// From an address this peer has verified.
    Bound(ParticipantId),
}

/// A verified STUN request came from an address another live peer was recently heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressTaken {
    pub owner: ParticipantId,
}

struct Binding {
    id: ParticipantId,
    last_heard: Instant,
}

#[derive(Default)]
pub struct Router {
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<NetPath, Binding>,
    /// Each peer's paths (at most [`MAX_ADDRS_PER_PEER`]).
    addrs: HashMap<ParticipantId, Vec<NetPath>>,
}

impl Router {
    pub fn add_peer(&mut self, ufrag: &str, id: ParticipantId) {
        self.by_ufrag.insert(ufrag.to_owned(), id);
    }

    pub fn remove_peer(&mut self, ufrag: &str, id: ParticipantId) {
        self.by_ufrag.remove(ufrag);
        for addr in self.addrs.remove(&id).unwrap_or_default() {
            self.by_addr.remove(&addr);
        }
    }

    /// Route a datagram. STUN is routed by the ufrag it names and binds nothing (see [`Router::learn`]);
    /// anything else by its path, which counts as hearing from that path.
    pub fn route(
        &mut self,
        now: Instant,
        source: NetPath,
        data: &[u8],
    ) -> Result<Route, RouteMiss> {
        if is_stun(data) {
            let ufrag = stun_local_ufrag(data).ok_or(RouteMiss::MalformedStun)?;
            let id = *self.by_ufrag.get(ufrag).ok_or(RouteMiss::UnknownUfrag)?;
            return Ok(Route::Stun(id));
        }
        let binding = self
            .by_addr
            .get_mut(&source)
            .ok_or(RouteMiss::UnknownSource)?;
        binding.last_heard = now;
        Ok(Route::Bound(binding.id))
    }

    /// Peer `id` verified a STUN request from `source`: bind the path to it, unless another peer was
    /// heard from that path within [`ADDRESS_FRESH`].
    pub fn learn(
        &mut self,
        now: Instant,
        source: NetPath,
        id: ParticipantId,
    ) -> Result<(), AddressTaken> {
        if let Some(binding) = self.by_addr.get_mut(&source) {
            if binding.id == id {
                binding.last_heard = now;
                return Ok(());
            }
            if now.saturating_duration_since(binding.last_heard) < ADDRESS_FRESH {
                return Err(AddressTaken { owner: binding.id });
            }
            // The other peer has not been heard from here for a consent timeout: the address moved on.
            let stale = binding.id;
            if let Some(list) = self.addrs.get_mut(&stale) {
                list.retain(|a| *a != source);
            }
        }
        let list = self.addrs.entry(id).or_default();
        if list.len() >= MAX_ADDRS_PER_PEER {
            let by_addr = &self.by_addr;
            let oldest = list
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| by_addr.get(a).map(|b| b.last_heard))
                .map(|(i, _)| i)
                .expect("a full address list is not empty");
            let evicted = list.swap_remove(oldest);
            self.by_addr.remove(&evicted);
        }
        list.push(source);
        self.by_addr.insert(
            source,
            Binding {
                id,
                last_heard: now,
            },
        );
        Ok(())
    }

    /// Whether `path` is bound to a peer (learned from a verified STUN request, not forgotten since).
    pub fn is_bound(&self, path: &NetPath) -> bool {
        self.by_addr.contains_key(path)
    }

    /// Paths bound to any peer.
    pub fn address_count(&self) -> usize {
        self.by_addr.len()
    }
}

/// RFC 7983 demultiplexing: STUN starts with 0 or 1 and carries the magic cookie.
pub(crate) fn is_stun(data: &[u8]) -> bool {
    data.len() >= STUN_HEADER_LEN && data[0] < 2 && data[4..8] == STUN_MAGIC_COOKIE
}

/// RFC 7983 demultiplexing: RTP (not RTCP, DTLS or STUN). 128..=191 is RTP or RTCP; RTCP packet types
/// 192..=223 sit in the second byte (RFC 5761: with the marker bit, 64..=95 after masking).
pub fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

/// Whether `data` is a binding request (a connectivity or consent check). Says nothing about its integrity.
pub(crate) fn is_binding_request(data: &[u8]) -> bool {
    is_stun(data) && data[..2] == BINDING_REQUEST
}

/// Whether `data` is a binding request carrying USE-CANDIDATE: the controlling client nominates the path
/// it arrived on (RFC 8445 §7.2.5.1, §8.1.1). Says nothing about its integrity: the peer checks that.
pub(crate) fn is_nomination(data: &[u8]) -> bool {
    is_binding_request(data) && stun_attribute(data, ATTR_USE_CANDIDATE).is_some()
}

/// The part of the USERNAME attribute before the colon: our own ufrag (RFC 8445 §7.2.2).
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let username = std::str::from_utf8(stun_attribute(data, ATTR_USERNAME)?).ok()?;
    username.split(':').next()
}

/// The value of the first attribute of type `kind` of a STUN message (`None` also for broken framing).
fn stun_attribute(data: &[u8], kind: u16) -> Option<&[u8]> {
    let body_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let attr = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if attr == kind {
            return Some(value);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const SERVER: ([u8; 4], u16) = ([127, 0, 0, 1], 7882);

    fn udp(remote: SocketAddr) -> NetPath {
        NetPath::udp(SocketAddr::from(SERVER), remote)
    }

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

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

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    fn addr(i: u32) -> NetPath {
        udp(SocketAddr::from((
            [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            5000,
        )))
    }

    #[test]
    fn stun_routes_by_ufrag_and_binds_only_when_learned() {
        let now = epoch();
        let mut r = Router::default();
        r.add_peer("srvA", ParticipantId(1));
        r.add_peer("srvB", ParticipantId(2));
        let a = udp("127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            r.route(now, a, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert_eq!(
            r.route(now, a, &stun_with_username("srvB:cli")),
            Ok(Route::Stun(ParticipantId(2)))
        );
        // Routing STUN binds nothing: the peer has not checked its integrity yet.
        assert_eq!(
            r.route(now, a, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert_eq!(r.learn(now, a, ParticipantId(2)), Ok(()));
        assert_eq!(
            r.route(now, a, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(2)))
        );
        assert_eq!(
            r.route(now, a, &stun_with_username("nope:cli")),
            Err(RouteMiss::UnknownUfrag)
        );
        r.remove_peer("srvB", ParticipantId(2));
        assert_eq!(
            r.route(now, a, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert_eq!(r.address_count(), 0);
    }

    #[test]
    fn a_fresh_address_of_one_peer_is_not_handed_to_another() {
        let t0 = epoch();
        let mut r = Router::default();
        r.add_peer("victim", ParticipantId(1));
        r.add_peer("attacker", ParticipantId(2));
        let v = addr(1);
        r.learn(t0, v, ParticipantId(1)).unwrap();
        // The victim keeps talking from its address; a verified request for another peer from it is refused.
        let t1 = t0 + Duration::from_secs(25);
        assert_eq!(
            r.route(t1, v, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(1)))
        );
        let t2 = t1 + ADDRESS_FRESH - Duration::from_millis(1);
        assert_eq!(
            r.learn(t2, v, ParticipantId(2)),
            Err(AddressTaken {
                owner: ParticipantId(1)
            })
        );
        assert_eq!(
            r.route(t2, v, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(1)))
        );
        // Silent there for a whole consent timeout, the address may move on (a NAT reused the port).
        let t3 = t2 + ADDRESS_FRESH;
        assert_eq!(r.learn(t3, v, ParticipantId(2)), Ok(()));
        assert_eq!(
            r.route(t3, v, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(2)))
        );
        // The previous owner's list no longer holds it: removing it leaves the new binding alone.
        r.remove_peer("victim", ParticipantId(1));
        assert_eq!(
            r.route(t3, v, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(2)))
        );
    }

    #[test]
    fn tcp_and_udp_from_the_same_remote_are_separate_paths() {
        let now = epoch();
        let mut r = Router::default();
        r.add_peer("one", ParticipantId(1));
        r.add_peer("two", ParticipantId(2));
        let remote: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let server = SocketAddr::from(SERVER);
        let over_udp = NetPath::udp(server, remote);
        let over_tcp = NetPath::tcp(server, remote);
        // A second local candidate (development mode's LAN address) is another path too.
        let other_local = NetPath::udp("192.168.1.5:7882".parse().unwrap(), remote);
        r.learn(now, over_udp, ParticipantId(1)).unwrap();
        assert_eq!(
            r.route(now, over_udp, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(1)))
        );
        // Learning the UDP path binds neither the TCP connection from the same address nor another local.
        assert_eq!(
            r.route(now, over_tcp, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert_eq!(
            r.route(now, other_local, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        r.learn(now, over_tcp, ParticipantId(2)).unwrap();
        assert_eq!(
            r.route(now, over_tcp, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(2)))
        );
        // The anti-hijack rule holds per path: peer 2's fresh TCP path is not handed to peer 1, nor peer 1's
        // fresh UDP path to peer 2.
        assert_eq!(
            r.learn(now, over_tcp, ParticipantId(1)),
            Err(AddressTaken {
                owner: ParticipantId(2)
            })
        );
        assert_eq!(
            r.learn(now, over_udp, ParticipantId(2)),
            Err(AddressTaken {
                owner: ParticipantId(1)
            })
        );
        r.remove_peer("two", ParticipantId(2));
        assert_eq!(
            r.route(now, over_tcp, &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert_eq!(
            r.route(now, over_udp, &[0x80, 0, 0, 1]),
            Ok(Route::Bound(ParticipantId(1)))
        );
    }

    #[test]
    fn addresses_per_peer_are_capped_and_the_least_recently_heard_goes() {
        let t0 = epoch();
        let mut r = Router::default();
        r.add_peer("p", ParticipantId(1));
        for i in 0..MAX_ADDRS_PER_PEER as u32 {
            r.learn(
                t0 + Duration::from_millis(i as u64),
                addr(i),
                ParticipantId(1),
            )
            .unwrap();
        }
        // Address 0 is heard again, so address 1 is now the least recently heard.
        let later = t0 + Duration::from_secs(1);
        r.route(later, addr(0), &[0x80, 0, 0, 1]).unwrap();
        r.learn(later, addr(100), ParticipantId(1)).unwrap();
        assert_eq!(r.address_count(), MAX_ADDRS_PER_PEER);
        assert_eq!(
            r.route(later, addr(1), &[0x80, 0, 0, 1]),
            Err(RouteMiss::UnknownSource)
        );
        assert!(r.route(later, addr(0), &[0x80, 0, 0, 1]).is_ok());
        assert!(r.route(later, addr(100), &[0x80, 0, 0, 1]).is_ok());
    }

    #[test]
    fn two_hundred_thousand_sources_leave_the_map_bounded() {
        // Issue 10: 200,000 spoofed sources grew the map by 10.6 MB. Even with valid credentials, one peer
        // holds at most MAX_ADDRS_PER_PEER addresses.
        let t0 = epoch();
        let mut r = Router::default();
        r.add_peer("p", ParticipantId(1));
        for i in 0..200_000u32 {
            let _ = r.learn(
                t0 + Duration::from_micros(i as u64),
                addr(i),
                ParticipantId(1),
            );
        }
        assert_eq!(r.address_count(), MAX_ADDRS_PER_PEER);
        r.remove_peer("p", ParticipantId(1));
        assert_eq!(r.address_count(), 0);
    }

    #[test]
    fn a_nomination_is_a_binding_request_with_use_candidate() {
        let plain = stun_with_username("srvA:cli");
        assert!(!is_nomination(&plain));
        let mut nominating = plain.clone();
        nominating.extend_from_slice(&ATTR_USE_CANDIDATE.to_be_bytes());
        nominating.extend_from_slice(&[0, 0]);
        let body_len = (nominating.len() - STUN_HEADER_LEN) as u16;
        nominating[2..4].copy_from_slice(&body_len.to_be_bytes());
        assert!(is_nomination(&nominating));
        // The attribute after USERNAME is found, and USERNAME still routes.
        assert_eq!(stun_local_ufrag(&nominating), Some("srvA"));
        // A success response with the same attributes nominates nothing.
        let mut response = nominating.clone();
        response[0..2].copy_from_slice(&[0x01, 0x01]);
        assert!(!is_nomination(&response));
        // RTP, and STUN whose framing is broken, are not nominations.
        assert!(!is_nomination(&[0x80; 40]));
        let mut broken = nominating;
        broken[3] = 200;
        assert!(!is_nomination(&broken));
    }

    #[test]
    fn truncated_stun_is_malformed_not_a_panic() {
        let now = epoch();
        let mut r = Router::default();
        let a = udp("127.0.0.1:5000".parse().unwrap());
        let mut m = stun_with_username("srvA:cli");
        m[3] = 200; // claims a longer body than present
        assert_eq!(r.route(now, a, &m), Err(RouteMiss::MalformedStun));
        let mut m = stun_with_username("srvA:cli");
        m.truncate(26); // attribute header claims more than present
        m[2] = 0;
        m[3] = 6;
        assert_eq!(r.route(now, a, &m), Err(RouteMiss::MalformedStun));
    }
}
