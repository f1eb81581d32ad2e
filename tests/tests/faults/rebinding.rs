//! A client's address changes mid-call (NAT rebinding, Wi-Fi → mobile) and a spoofer tries to take its
//! place: media follows the client's next verified consent check, in both directions; datagrams from
//! another address without a valid check are never taken as that participant.

use std::time::Duration;

use anyhow::Context;
use tokio::net::UdpSocket;

use super::{assert_call_survived, assert_tone, hears_again, join, join_with, Party, TONES};
use crate::proxy::Impairment;
use chorus_tests::Server;

/// str0m's client checks its nominated pair every 3 s (its maximum STUN retransmission timeout): the first
/// check from the new port moves the server's media there, so how long audio is gone depends on where in
/// that period the rebinding falls. Measured 0.3–2.9 s; the bound leaves room for a loaded machine.
const BACK_WITHIN: Duration = Duration::from_millis(4000);
/// Before each rebinding, wait this long: first at an arbitrary point of the client's check period, then
/// right after the check that ended the last outage (the worst case: almost a whole period to the next
/// check), then halfway through the period and near its end.
const REBIND_AFTER: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(100),
    Duration::from_millis(1500),
    Duration::from_millis(2700),
];

/// A client that nominates only once (Firefox): after a rebinding only its plain consent checks come
/// from the new port. The server hears it again at the first of them (str0m checks every 3 s or less);
/// media goes back to it at its first check once the old path has been silent for the server's 2 s
/// (`PATH_SILENCE`), i.e. 2–5 s after the port changes. The bound leaves room for a loaded machine.
const BACK_WITHIN_NOMINATING_ONCE: Duration = Duration::from_millis(6500);

/// The STUN FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message before it, XOR 0x5354554e.
fn fingerprint(message: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in message {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc ^ 0x5354_554e
}

/// `request` (a client's signed binding request ending in FINGERPRINT) with a new transaction id and its
/// fingerprint fixed: MESSAGE-INTEGRITY no longer verifies, as if signed with a wrong password.
fn with_broken_integrity(request: &[u8], n: u8) -> Vec<u8> {
    let mut m = request.to_vec();
    m[8..20].copy_from_slice(&[n ^ 0x5a; 12]);
    let at = m.len() - 8;
    assert_eq!(
        m[at..at + 2],
        [0x80, 0x28],
        "a binding request ends in FINGERPRINT"
    );
    let crc = fingerprint(&m[..at]);
    m[at + 4..].copy_from_slice(&crc.to_be_bytes());
    m
}

/// Packets each party heard of the other so far: (ada of bob, bob of ada).
fn heard(a: &Party, b: &Party) -> (u64, u64) {
    (a.packets_from(b.ssrc), b.packets_from(a.ssrc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_media_follows_a_nat_rebinding_and_a_spoofer_takes_nothing() -> anyhow::Result<()>
{
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let room = "rebinding";
    // Ada talks through a NAT (the proxy); bob directly. A forward room: each hears the other's stream.
    let mut a = join(
        &server,
        room,
        "ada",
        TONES[0],
        Some((Impairment::default(), 61)),
    )
    .await?;
    let mut b = join(&server, room, "bob", TONES[1], None).await?;
    for (listener, talker) in [(&a, &b), (&b, &a)] {
        hears_again(listener, talker.ssrc, 0, Duration::from_secs(5))
            .await
            .context("the call connects")?;
    }
    let nat = a.proxy.as_ref().context("ada talks through the proxy")?;
    let checks = || {
        nat.stats()
            .binding_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (checks_before, since) = (checks(), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = checks() - checks_before;
    println!("ada's client sent {sent} checks in {:?}", since.elapsed());
    assert!(
        sent >= 2,
        "a connected str0m client checks at least every 3 s: {sent} in 6 s"
    );

    // 1. The NAT rebinds, three times: ada's datagrams reach the server from a new port, the old one is
    //    closed (the server's datagrams to it go nowhere).
    for wait in REBIND_AFTER {
        tokio::time::sleep(wait).await;
        let old_port = nat.server_side_addr()?;
        let new_port = nat.rebind().await?;
        let (a_then, b_then) = heard(&a, &b);
        // The limit goes well past the 15 s after which str0m alone would have moved on.
        let limit = Duration::from_secs(20);
        let (bob_hears_ada, ada_hears_bob) = tokio::join!(
            hears_again(&b, a.ssrc, b_then, limit),
            hears_again(&a, b.ssrc, a_then, limit)
        );
        println!(
            "rebinding {old_port} -> {new_port} {wait:?} after the last recovery: bob hears ada again \
             after {bob_hears_ada:?}, ada hears bob after {ada_hears_bob:?}"
        );
        let bob_hears_ada = bob_hears_ada.context("bob never hears ada from her new port")?;
        let ada_hears_bob = ada_hears_bob.context("ada never hears bob at her new port")?;
        assert!(
            bob_hears_ada <= BACK_WITHIN,
            "the server heard ada after {bob_hears_ada:?}"
        );
        assert!(
            ada_hears_bob <= BACK_WITHIN,
            "ada heard the server after {ada_hears_bob:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_tone(
        &a.last_pcm(b.ssrc, 0.8),
        TONES[1],
        "ada hears bob after the rebinding",
    );
    assert_tone(
        &b.last_pcm(a.ssrc, 0.8),
        TONES[0],
        "bob hears ada after the rebinding",
    );

    // 2. A spoofer at yet another address: RTP-looking garbage, ada's check with an integrity that does
    //    not verify, then ada's own signed check replayed (as an on-path observer could), then garbage
    //    from that address again. None of it is taken as ada; media keeps flowing both ways.
    let request = nat
        .binding_request()
        .context("ada's client sent binding requests through the proxy")?;
    let metric = |reason: &str| format!("chorus_packets_dropped_total{{reason=\"{reason}\"}}");
    let unknown_before = server.metric(&metric("unknown_source")).await?;
    let integrity_before = server.metric(&metric("bad_integrity")).await?;
    let malformed_before = server.metric(&metric("malformed")).await?;
    let spoofer = UdpSocket::bind("127.0.0.1:0").await?;
    let (a_then, b_then) = heard(&a, &b);
    let garbage_rtp = |i: u8| -> Vec<u8> {
        let mut p = vec![0x80, 111, 0, i, 0, 0, 0, i, 0x12, 0x34, 0x56, 0x78];
        p.extend((0..100).map(|k: u8| k.wrapping_mul(i)));
        p
    };
    let spoof_for = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let mut i = 0u8;
    while started.elapsed() < spoof_for {
        spoofer.send_to(&garbage_rtp(i), server.media).await?;
        spoofer
            .send_to(&with_broken_integrity(&request, i), server.media)
            .await?;
        i = i.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent_before_replay = u64::from(i);
    for _ in 0..10 {
        spoofer.send_to(&request, server.media).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..50u8 {
        spoofer.send_to(&garbage_rtp(i), server.media).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spoofing = started.elapsed();
    let unknown = server.metric(&metric("unknown_source")).await? - unknown_before;
    let integrity = server.metric(&metric("bad_integrity")).await? - integrity_before;
    let malformed = server.metric(&metric("malformed")).await? - malformed_before;
    let (a_now, b_now) = heard(&a, &b);
    let expected = spoofing.as_secs_f64() * super::FRAMES_PER_SECOND;
    println!(
        "spoofing for {spoofing:?}: ada heard {} and bob {} packets of ~{expected:.0}; dropped \
         unknown_source +{unknown}, bad_integrity +{integrity}, malformed +{malformed}",
        a_now - a_then,
        b_now - b_then
    );
    assert!(
        unknown >= sent_before_replay as f64,
        "garbage from an unbound address: {unknown}"
    );
    assert!(
        integrity >= sent_before_replay as f64,
        "checks that do not verify: {integrity}"
    );
    // The replayed check verifies (MESSAGE-INTEGRITY does not cover the source address), so the router
    // binds the spoofer's address to ada's peer as its rule allows; it moves no media (its transaction id
    // was taken), and what comes from that address then is not SRTP under ada's keys: str0m discards it
    // without a counter (the `malformed` figure printed above), and nobody hears it (below).
    for (what, n) in [
        ("ada hears bob", a_now - a_then),
        ("bob hears ada", b_now - b_then),
    ] {
        assert!(
            n as f64 >= expected * 0.9,
            "{what}: {n} packets of ~{expected:.0} while spoofed"
        );
    }
    assert_eq!(
        a.heard_csrcs(),
        vec![b.ssrc],
        "ada hears bob and nothing injected"
    );
    assert_eq!(
        b.heard_csrcs(),
        vec![a.ssrc],
        "bob hears ada and nothing injected"
    );
    assert_tone(
        &a.last_pcm(b.ssrc, 0.8),
        TONES[1],
        "ada hears bob after the spoofing",
    );
    assert_tone(
        &b.last_pcm(a.ssrc, 0.8),
        TONES[0],
        "bob hears ada after the spoofing",
    );
    assert_call_survived(&server, room, &mut [&mut a, &mut b]).await?;
    a.client.stop().await?;
    b.client.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_rebinding_a_client_that_nominates_only_once_gets_its_media_back(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let room = "rebinding-once";
    // Ada nominates like Firefox, through a NAT; bob directly.
    let mut a = join_with(
        &server,
        room,
        "ada",
        TONES[0],
        Some((Impairment::default(), 62)),
        true,
    )
    .await?;
    let mut b = join(&server, room, "bob", TONES[1], None).await?;
    for (listener, talker) in [(&a, &b), (&b, &a)] {
        hears_again(listener, talker.ssrc, 0, Duration::from_secs(5))
            .await
            .context("the call connects")?;
    }
    let nat = a.proxy.as_ref().context("ada talks through the proxy")?;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let moves = |cause: &'static str| {
        let server = &server;
        async move {
            server
                .metric(&format!(
                    "chorus_media_path_moves_total{{cause=\"{cause}\"}}"
                ))
                .await
        }
    };
    let nominations = count(&nat.stats().nominations);
    let checks = count(&nat.stats().binding_requests);
    assert!(nominations >= 1, "ada nominated her path to connect");

    for (i, wait) in REBIND_AFTER.into_iter().enumerate() {
        tokio::time::sleep(wait).await;
        let old_port = nat.server_side_addr()?;
        let new_port = nat.rebind().await?;
        let (a_then, b_then) = heard(&a, &b);
        let limit = Duration::from_secs(20);
        let (bob_hears_ada, ada_hears_bob) = tokio::join!(
            hears_again(&b, a.ssrc, b_then, limit),
            hears_again(&a, b.ssrc, a_then, limit)
        );
        println!(
            "rebinding {i} {old_port} -> {new_port} {wait:?} after the last recovery: bob hears ada \
             again after {bob_hears_ada:?}, ada hears bob after {ada_hears_bob:?}"
        );
        let bob_hears_ada = bob_hears_ada.context("bob never hears ada from her new port")?;
        let ada_hears_bob = ada_hears_bob.context("ada never hears bob at her new port")?;
        assert!(
            bob_hears_ada <= BACK_WITHIN,
            "the server heard ada after {bob_hears_ada:?}"
        );
        assert!(
            ada_hears_bob <= BACK_WITHIN_NOMINATING_ONCE,
            "ada heard the server after {ada_hears_bob:?}"
        );
    }
    let sent = count(&nat.stats().binding_requests) - checks;
    assert!(sent >= 4, "ada checked consent {sent} times");
    assert_eq!(
        count(&nat.stats().nominations),
        nominations,
        "ada never nominated again: her checks alone moved the media"
    );
    // The counters are published every 0.5 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let silence = moves("silence").await?;
    let nominated = moves("nomination").await?;
    println!("path moves: silence {silence}, nomination {nominated}; ada sent {sent} plain checks");
    assert_eq!(silence, REBIND_AFTER.len() as f64, "one move per rebinding");
    assert_eq!(nominated, 0.0);
    assert_tone(
        &a.last_pcm(b.ssrc, 0.8),
        TONES[1],
        "ada hears bob after the rebindings",
    );
    assert_tone(
        &b.last_pcm(a.ssrc, 0.8),
        TONES[0],
        "bob hears ada after the rebindings",
    );
    assert_eq!(a.duplicates(), 0, "ada heard no packet twice");
    assert_call_survived(&server, room, &mut [&mut a, &mut b]).await?;
    a.client.stop().await?;
    b.client.stop().await?;
    Ok(())
}
