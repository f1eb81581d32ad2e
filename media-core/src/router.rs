//! Which peer a datagram on the shared UDP socket belongs to.
//!
//! All peers of a worker share one socket. A STUN binding request names the server's ICE ufrag in its
//! USERNAME attribute (`server_ufrag:client_ufrag`); every routed STUN request teaches the router the
//! client's address, and DTLS, SRTP and SRTCP are then routed by source address.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::ids::ParticipantId;

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

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

#[derive(Default)]
pub struct Router {
    by_ufrag: HashMap<String, ParticipantId>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
}

impl Router {
    pub fn add_peer(&mut self, ufrag: &str, id: ParticipantId) {
        self.by_ufrag.insert(ufrag.to_owned(), id);
    }

    pub fn remove_peer(&mut self, ufrag: &str, id: ParticipantId) {
        self.by_ufrag.remove(ufrag);
        self.by_addr.retain(|_, p| *p != id);
    }

    /// Route a datagram; STUN requests naming a peer also bind their source address to it.
    pub fn route(&mut self, source: SocketAddr, data: &[u8]) -> Result<ParticipantId, RouteMiss> {
        if is_stun(data) {
            let ufrag = stun_local_ufrag(data).ok_or(RouteMiss::MalformedStun)?;
            let id = *self.by_ufrag.get(ufrag).ok_or(RouteMiss::UnknownUfrag)?;
            self.by_addr.insert(source, id);
            return Ok(id);
        }
        self.by_addr
            .get(&source)
            .copied()
            .ok_or(RouteMiss::UnknownSource)
    }
}

/// RFC 7983 demultiplexing: STUN starts with 0 or 1 and carries the magic cookie.
fn is_stun(data: &[u8]) -> bool {
    data.len() >= STUN_HEADER_LEN && data[0] < 2 && data[4..8] == STUN_MAGIC_COOKIE
}

/// The part of the USERNAME attribute before the colon: our own ufrag (RFC 8445 §7.2.2).
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let body_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stun_routes_by_ufrag_then_address() {
        let mut r = Router::default();
        r.add_peer("srvA", ParticipantId(1));
        r.add_peer("srvB", ParticipantId(2));
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(r.route(a, &[0x80, 0, 0, 1]), Err(RouteMiss::UnknownSource));
        assert_eq!(
            r.route(a, &stun_with_username("srvB:cli")),
            Ok(ParticipantId(2))
        );
        assert_eq!(r.route(a, &[0x80, 0, 0, 1]), Ok(ParticipantId(2)));
        assert_eq!(
            r.route(a, &stun_with_username("nope:cli")),
            Err(RouteMiss::UnknownUfrag)
        );
        r.remove_peer("srvB", ParticipantId(2));
        assert_eq!(r.route(a, &[0x80, 0, 0, 1]), Err(RouteMiss::UnknownSource));
    }

    #[test]
    fn truncated_stun_is_malformed_not_a_panic() {
        let mut r = Router::default();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut m = stun_with_username("srvA:cli");
        m[3] = 200; // claims a longer body than present
        assert_eq!(r.route(a, &m), Err(RouteMiss::MalformedStun));
        let mut m = stun_with_username("srvA:cli");
        m.truncate(26); // attribute header claims more than present
        m[2] = 0;
        m[3] = 6;
        assert_eq!(r.route(a, &m), Err(RouteMiss::MalformedStun));
    }
}
