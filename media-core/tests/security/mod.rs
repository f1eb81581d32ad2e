//! Attacks on the shared media port (issue 10): whoever holds a token for any room must not be able to take
//! another participant's media.

use std::net::SocketAddr;
use std::time::Duration;

use media_core::audio::SAMPLE_RATE;
use media_core::sim::LinkConfig;
use media_core::{DropReason, RoomId};

use crate::support::Sim;

const STUN_HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// The USERNAME attribute of a STUN message.
fn stun_username(msg: &[u8]) -> Option<String> {
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= msg.len() {
        let kind = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        let value = msg.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            return String::from_utf8(value.to_vec()).ok();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// A binding request with only a USERNAME: what someone who knows a ufrag but not its password can send.
fn unsigned_binding_request(username: &str, transaction: u8) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[transaction; 12]);
    msg.extend_from_slice(&attr);
    msg
}

/// Samples of `talker` that `listener` has decoded so far.
fn heard(sim: &Sim, listener: usize, talker: usize) -> usize {
    sim.clients[listener]
        .pcm(sim.clients[talker].mic_ssrc)
        .len()
}

/// For `secs` seconds, send `datagram` to the server every 100 ms from `from` (a spoofed source).
fn spoof_for(sim: &mut Sim, from: SocketAddr, datagram: &[u8], secs: u64) {
    for _ in 0..secs * 10 {
        let (now, server) = (sim.now, sim.server);
        sim.net.send(now, from, server, datagram.to_vec());
        sim.run_for(Duration::from_millis(100));
    }
}

#[test]
fn stun_from_a_talkers_address_naming_another_peer_does_not_take_its_audio() {
    // A talker and its listener in one room; an attacker alone in another room of the same worker. The
    // attacker learns its own server ufrag (and password) from its answer, and sends STUN naming it from the
    // talker's address. Before issue 10 the router bound the talker's address to the attacker's peer on the
    // USERNAME alone: the talker's audio went to the attacker's peer and was dropped, and no counter moved.
    let mut sim = Sim::new(
        31,
        LinkConfig::with_delay(5.0),
        1,
        &[(440.0, 0.3), (660.0, 0.0)],
    );
    sim.capture_stun = true;
    let attacker = sim.join_in(&RoomId("other".into()), 880.0, 0.0);
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    let victim = sim.clients[0].addr;
    let signed = sim
        .stun_sent
        .iter()
        .rev()
        .find(|(i, m)| *i == attacker && m[..2] == [0x00, 0x01])
        .map(|(_, m)| m.clone())
        .expect("the attacker's client sent binding requests to the server");
    let username = stun_username(&signed).expect("an ICE binding request names its ufrags");
    let one_second = SAMPLE_RATE as usize;

    // 1. Knowing the ufrag only: requests without MESSAGE-INTEGRITY.
    let before = heard(&sim, 1, 0);
    let rejected = sim.core.stats().dropped(DropReason::BadIntegrity);
    spoof_for(&mut sim, victim, &unsigned_binding_request(&username, 9), 2);
    let got = heard(&sim, 1, 0) - before;
    assert!(
        got >= one_second * 19 / 10,
        "the listener heard only {got} samples of the talker in 2 s of unsigned spoofed STUN"
    );
    assert!(
        sim.core.stats().dropped(DropReason::BadIntegrity) >= rejected + 20,
        "unsigned STUN naming a live ufrag is counted as bad_integrity"
    );

    // 2. With the attacker's own valid credentials (a replay of its client's signed request).
    let before = heard(&sim, 1, 0);
    let misrouted = sim.core.stats().dropped(DropReason::Misrouted);
    spoof_for(&mut sim, victim, &signed, 3);
    let got = heard(&sim, 1, 0) - before;
    assert!(
        got >= one_second * 29 / 10,
        "the listener heard only {got} samples of the talker in 3 s of signed spoofed STUN"
    );
    assert!(
        sim.core.stats().dropped(DropReason::Misrouted) >= misrouted + 30,
        "verified STUN from another peer's address is counted as misrouted"
    );
    // Both peers are still connected and the attacker's own address still works for it.
    assert_eq!(sim.core.participant_count(), 3);
}
