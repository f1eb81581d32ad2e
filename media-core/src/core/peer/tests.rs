use super::*;
use crate::core::outbox::Outbox;
use crate::core::router::{is_binding_request, is_stun};
use crate::testkit::client::{ClientConfig, ClientOutput, ClientPeer};

#[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn test_cert() -> DtlsCert {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .expect("the aws-lc-rs provider generates certificates")
}

fn answer_for(
    slots_offered: usize,
    publish: bool,
    room_slots: usize,
) -> Result<(Peer, String), PeerError> {
    let now = epoch();
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal address"),
        slots: slots_offered,
        publish,
        red: 0,
    };
    let (_, offer) = ClientPeer::new(now, client).expect("client offer");
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: room_slots,
        stereo: false,
    };
    Peer::from_offer(now, ParticipantId(1), &params, &offer)
}

#[test]
fn the_answer_keeps_the_audio_level_and_drops_transport_wide_feedback() {
    // A browser offers TWCC and abs-send-time on every m-line; the answer must not take them.
    let now = epoch();
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal address"),
        slots: 2,
        publish: true,
        red: 0,
    };
    let (_, offer) = ClientPeer::new(now, client).expect("client offer");
    let offer = offer.replace(
        "a=mid:",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=mid:",
    );
    assert!(offer.contains("transport-wide-cc"), "{offer}");
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: 2,
        stereo: false,
    };
    let (_, answer) = Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
    assert!(answer.contains("ssrc-audio-level"), "{answer}");
    assert!(!answer.contains("transport-wide-cc"), "{answer}");
    assert!(!answer.contains("abs-send-time"), "{answer}");
}

#[test]
fn the_answer_is_ice_lite_opus_with_fec_and_dtx_and_one_stream_per_slot() {
    let (peer, answer) = answer_for(3, true, 3).expect("answer");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("127.0.0.1 5000 typ host"), "{answer}");
    assert!(
        answer.contains("useinbandfec=1") && answer.contains("usedtx=1"),
        "{answer}"
    );
    assert_eq!(
        answer.matches("a=recvonly").count(),
        1,
        "the microphone is answered recvonly"
    );
    assert_eq!(
        answer.matches("a=sendonly").count(),
        3,
        "each slot is answered sendonly"
    );
    assert!(peer.has_microphone());
    assert_eq!(peer.slots.len(), 3);
    let mut ssrcs: Vec<u32> = peer.slots.iter().map(|s| s.ssrc.0).collect();
    ssrcs.dedup();
    assert_eq!(ssrcs.len(), 3, "every slot has its own SSRC");
}

fn red_answer(red: u8) -> (Peer, String, String) {
    let now = epoch();
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal address"),
        slots: 2,
        publish: true,
        red,
    };
    let (_, offer) = ClientPeer::new(now, client).expect("client offer");
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: 2,
        stereo: false,
    };
    let (peer, answer) = Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
    (peer, offer, answer)
}

#[test]
fn red_is_answered_first_on_every_line_when_offered_and_opus_keeps_fec_and_dtx() {
    let (peer, offer, answer) = red_answer(1);
    assert_eq!(offer.matches("red/48000/2").count(), 3, "{offer}");
    assert_eq!(
        answer.matches("a=rtpmap:63 red/48000/2").count(),
        3,
        "{answer}"
    );
    assert_eq!(answer.matches("a=fmtp:63 111/111").count(), 3, "{answer}");
    assert_eq!(
        answer.matches("m=audio 9 UDP/TLS/RTP/SAVPF 63 111").count(),
        3,
        "RED goes before Opus (libwebrtc sends RED only then): {answer}"
    );
    assert!(
        answer.contains("useinbandfec=1") && answer.contains("usedtx=1"),
        "{answer}"
    );
    assert_eq!(peer.mic_red_pt(), Some(Pt::from(63)));
    assert_eq!(peer.mic_opus_pt(), Some(Pt::from(111)));
    assert!(peer.slots.iter().all(|s| s.red_pt == Some(Pt::from(63))));
}

#[test]
fn without_red_in_the_offer_the_answer_is_opus_only() {
    let (peer, offer, answer) = red_answer(0);
    assert!(!offer.contains("red/"), "{offer}");
    assert!(!answer.contains("red/"), "{answer}");
    assert!(answer.contains("usedtx=1"), "{answer}");
    assert_eq!(peer.mic_red_pt(), None);
    assert!(peer.slots.iter().all(|s| s.red_pt.is_none()));
}

#[test]
fn red_is_recorded_per_line_and_follows_the_offered_payload_type() {
    // Chrome's numbers, but RED only on the microphone line and at another payload type.
    let (_, offer, _) = red_answer(1);
    let mut lines: Vec<String> = Vec::new();
    let mut media_index = 0;
    for line in offer.split("\r\n") {
        if line.starts_with("m=audio") {
            media_index += 1;
        }
        let line = line.replace("63", "98");
        if media_index > 1 && (line.contains(" red/") || line.starts_with("a=fmtp:98")) {
            continue;
        }
        let line = if media_index > 1 && line.starts_with("m=audio") {
            line.replace(" 98 111", " 111")
        } else {
            line
        };
        lines.push(line);
    }
    let offer = lines.join("\r\n");
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: 2,
        stereo: false,
    };
    let (peer, answer) =
        Peer::from_offer(epoch(), ParticipantId(1), &params, &offer).expect("answer");
    assert_eq!(peer.mic_red_pt(), Some(Pt::from(98)), "{answer}");
    assert!(
        peer.slots.iter().all(|s| s.red_pt.is_none()),
        "slots whose line did not offer RED never carry it: {answer}"
    );
}

/// A client and a server peer on a virtual loopback: the client's datagrams reach the server from
/// `nat` (the address its NAT maps it to), the server's reach the client only when sent to `nat`.
struct Rebinding {
    client: ClientPeer,
    peer: Peer,
    out: Outbox,
    server: SocketAddr,
    nat: SocketAddr,
    /// RTP packets the client received on slot 0.
    heard: u64,
    /// Non-STUN datagrams the server sent to an address the client is not at any more.
    lost: u64,
    seq: u64,
    /// The client's latest nominating binding request, as sent.
    nomination: Option<Vec<u8>>,
    /// The client's latest plain binding request (a consent check), as sent, and how many nominating
    /// requests it has sent in all.
    check: Option<Vec<u8>>,
    nominations_sent: u64,
    /// The client sends a microphone frame every 20 ms.
    talks: bool,
    /// Where the client's plain checks arrive from instead of `nat` (a client checking a second pair).
    checks_via: Option<SocketAddr>,
    /// When a datagram of the client last reached the server over `nat`.
    heard_from_client: Option<Instant>,
    /// Why the media moved, each time it did.
    moves: Vec<PathMove>,
    /// Forward with [`Peer::send_slot`] (the direct path) rather than str0m's `write_slot`.
    direct: bool,
    /// What the client received on its slot, in order.
    received: Vec<crate::client::ReceivedAudio>,
}

impl Rebinding {
    /// `firefox`: the client nominates only once (see [`ClientPeer::set_nominate_once`]).
    fn new(now: Instant, firefox: bool) -> Rebinding {
        Rebinding::with_offer(now, firefox, |offer| offer)
    }

    /// As [`Rebinding::new`], the client's offer changed by `edit` on its way to the server.
    fn with_offer(now: Instant, firefox: bool, edit: impl FnOnce(String) -> String) -> Rebinding {
        let client = ClientConfig {
            local_addr: "10.0.0.2:6000".parse().expect("literal address"),
            slots: 1,
            publish: true,
            red: 0,
        };
        let (mut client, offer) = ClientPeer::new(now, client).expect("client offer");
        client.set_nominate_once(firefox);
        let offer = edit(offer);
        let cert = test_cert();
        let server: SocketAddr = "127.0.0.1:5000".parse().expect("literal address");
        let params = PeerParams {
            candidate_addr: server,
            dtls_cert: &cert,
            slots: 1,
            stereo: false,
        };
        let (peer, answer) =
            Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
        client
            .accept_answer(&answer)
            .expect("the client takes the answer");
        Rebinding {
            client,
            peer,
            out: Outbox::default(),
            server,
            nat: "198.51.100.7:40000".parse().expect("literal address"),
            heard: 0,
            lost: 0,
            seq: 0,
            nomination: None,
            check: None,
            nominations_sent: 0,
            talks: false,
            checks_via: None,
            heard_from_client: None,
            moves: Vec::new(),
            direct: false,
            received: Vec::new(),
        }
    }

    /// 10 ms of virtual time: both sides' timers, their datagrams, and (once connected) one forwarded
    /// packet every 20 ms into the client's slot.
    fn step(&mut self, now: Instant) {
        self.client
            .handle_timeout(now)
            .expect("the client handles time");
        while let Some(output) = Some(self.client.poll_output().expect("client output")) {
            match output {
                ClientOutput::Timeout(_) => break,
                ClientOutput::Transmit(t) => {
                    assert_eq!(t.destination, self.server);
                    let mut from = self.nat;
                    if is_nomination(&t.contents) {
                        self.nomination = Some(t.contents.clone());
                        self.nominations_sent += 1;
                    } else if is_binding_request(&t.contents) {
                        self.check = Some(t.contents.clone());
                        from = self.checks_via.unwrap_or(self.nat);
                    }
                    if from == self.nat {
                        self.heard_from_client = Some(now);
                    }
                    let path = NetPath::udp(self.server, from);
                    let moved = self
                        .peer
                        .handle_datagram(now, path, &t.contents)
                        .expect("the server peer takes the client's datagram");
                    self.moves.extend(moved);
                }
                ClientOutput::Audio(a) => {
                    self.heard += u64::from(a.slot == 0);
                    self.received.push(a);
                }
                ClientOutput::Disconnected => panic!("the client lost ICE consent"),
                ClientOutput::Connected => {}
            }
        }
        let frame_due = (now - self.peer.created).as_millis() % 20 < 10;
        if self.talks && self.client.is_connected() && frame_due {
            self.client
                .send_audio(now, &[0xf8, 0xff, 0xfe], 960, 30)
                .expect("the client sends a frame");
        }
        if self.peer.is_connected() && frame_due {
            self.seq += 1;
            let payload: std::sync::Arc<[u8]> = std::sync::Arc::from(&[0xf8, 0xff, 0xfe][..]);
            let ts = (self.seq * 960) as u32;
            let sent = self.direct
                && self
                    .peer
                    .send_slot(
                        0,
                        self.seq,
                        ts,
                        &payload,
                        false,
                        Some(-30),
                        Some(true),
                        Ssrc(7),
                        &mut self.out,
                    )
                    .expect("a slot packet is sealed");
            if !sent {
                self.peer
                    .write_slot(
                        0,
                        self.seq,
                        ts,
                        now,
                        &payload,
                        false,
                        Some(-30),
                        Some(true),
                        Ssrc(7),
                    )
                    .expect("a slot packet is written");
            }
        }
        self.peer
            .handle_timeout(now)
            .expect("the peer handles time");
        self.peer
            .drive(now, &mut self.out)
            .expect("the peer drains");
        while let Some(t) = self.out.transmits.pop_front() {
            if t.destination == self.nat {
                self.client
                    .handle_datagram(now, self.server, &t.contents)
                    .expect("the client takes the server's datagram");
            } else if !is_stun(&t.contents) {
                self.lost += 1;
            }
        }
        self.out.events.clear();
    }
}

#[test]
fn slot_packets_sealed_by_the_peer_itself_decrypt_at_a_str0m_client_across_a_sequence_wrap() {
    let t0 = epoch();
    let mut r = Rebinding::new(t0, false);
    r.direct = true;
    // 150 packets from 65,450 on: the rollover counter (part of the SRTP index) steps during the run.
    r.seq = 65_450;
    let mut now = t0;
    run(&mut r, &mut now, Duration::from_secs(4), |_, _| {});
    assert!(r.peer.srtp.is_some(), "the direct path sealed the packets");
    assert_eq!(r.lost, 0);
    assert!(r.received.len() >= 150, "received {}", r.received.len());
    assert!(
        r.received.last().is_some_and(|a| a.seq > 65_536),
        "the sequence wrapped"
    );
    for a in &r.received {
        assert_eq!(a.slot, 0);
        assert_eq!(a.ssrc, r.peer.slots()[0].ssrc.0);
        assert_eq!(a.csrc, Some(7), "the speaker is the CSRC");
        assert_eq!(a.audio_level, Some(30));
        assert_eq!(a.timestamp, (a.seq * 960) as u32);
        assert_eq!(&a.payload[..], &[0xf8, 0xff, 0xfe]);
    }
    let seqs: Vec<u64> = r.received.iter().map(|a| a.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost"
    );
}

#[test]
fn a_slots_packets_count_as_sent_whichever_path_carried_them() {
    // str0m's path first (before the direct one is ready), the direct path, str0m's again (as while an
    // ICE restart waits for its nomination), then the direct one: every packet was sent, none is a gap
    // of the speaker's that the subscriber's reported loss would lose.
    let t0 = epoch();
    let mut r = Rebinding::new(t0, false);
    let mut now = t0;
    run(&mut r, &mut now, Duration::from_secs(2), |_, _| {});
    assert!(r.heard > 20, "heard {} through str0m's path", r.heard);
    for direct in [true, false, true] {
        r.direct = direct;
        run(&mut r, &mut now, Duration::from_secs(1), |_, _| {});
    }
    assert!(r.peer.srtp.is_some(), "the direct path sealed packets");
    assert_eq!(r.lost, 0);
    let sent = r.peer.slots()[0].sent.expect("packets were sent");
    assert_eq!(
        sent.first(),
        1,
        "counted from the first packet, through str0m"
    );
    assert_eq!(sent.missing_through(r.seq), 0, "every packet was sent");
}

#[test]
fn after_a_nat_rebinding_media_follows_the_clients_next_verified_nomination() {
    let t0 = epoch();
    let mut r = Rebinding::new(t0, false);
    let tick = Duration::from_millis(10);
    let mut now = t0;
    run(&mut r, &mut now, Duration::from_secs(4), |_, _| {});
    assert!(r.peer.is_connected() && r.heard > 100, "heard {}", r.heard);
    assert_eq!(r.lost, 0);
    let first = r.peer.client_path().expect("the client nominated its path");
    assert_eq!(first.remote, r.nat);

    // The NAT maps the client to a new port: the same client candidate, the same ICE priority.
    let old = r.nat;
    r.nat = "198.51.100.7:40001".parse().expect("literal address");
    let moved = now;
    // (time since the move, packets heard by then) when the server first sent to the new port.
    let mut switched: Option<(Duration, u64)> = None;
    while now < moved + Duration::from_secs(6) {
        now += tick;
        r.step(now);
        if switched.is_none() && r.peer.client_path().map(|p| p.remote) == Some(r.nat) {
            switched = Some((now - moved, r.heard));
        }
    }
    let (after, heard_then) =
        switched.expect("the client's check from its new port moved the media");
    // str0m's client checks its nominated pair at least every 3 s (its maximum STUN RTO): the first
    // check from the new port moves the media. (str0m alone keeps sending to the old port for 15 s.)
    assert!(after <= Duration::from_millis(3100), "{after:?}");
    // From then on everything reaches the client (50 packets a second), and nothing is lost.
    let heard_after = r.heard - heard_then;
    let expected = (Duration::from_secs(6) - after).as_millis() as u64 / 20;
    assert!(
        heard_after + 2 >= expected,
        "heard {heard_after} of {expected} in the {:?} after the move",
        Duration::from_secs(6) - after
    );
    let lost_before_the_check = after.as_millis() as u64 / 20 + 2;
    assert!(r.lost <= lost_before_the_check, "lost {}", r.lost);
    assert_ne!(old, r.nat);
    assert_eq!(r.moves, [PathMove::Nomination]);
}

#[test]
fn a_replayed_nomination_from_another_address_does_not_move_the_media() {
    // Someone who sees the client's checks resends them from elsewhere: the integrity verifies (it
    // does not cover the source), but the transaction id was taken already.
    let t0 = epoch();
    let mut r = Rebinding::new(t0, false);
    let tick = Duration::from_millis(10);
    let mut now = t0;
    run(&mut r, &mut now, Duration::from_secs(4), |_, _| {});
    let heard = r.heard;
    let attacker = NetPath::udp(
        r.server,
        "203.0.113.66:5555".parse().expect("literal address"),
    );
    let until = now + Duration::from_secs(4);
    while now < until {
        now += tick;
        r.step(now);
        let replay = r.nomination.clone().expect("the client nominates its path");
        let moved = r
            .peer
            .handle_datagram(now, attacker, &replay)
            .expect("the peer takes a replayed check");
        assert_eq!(moved, None);
        r.peer.drive(now, &mut r.out).expect("the peer drains");
        r.out.transmits.retain(|t| t.destination != attacker.remote);
        assert_eq!(r.peer.client_path().map(|p| p.remote), Some(r.nat));
    }
    assert_eq!(r.lost, 0, "nothing went anywhere but the client");
    assert!(r.heard - heard >= 195, "heard {} in 4 s", r.heard - heard);
}

/// Run `r` for `span` of virtual time from `*now` in 10 ms steps, calling `each` after every step.
fn run(
    r: &mut Rebinding,
    now: &mut Instant,
    span: Duration,
    mut each: impl FnMut(&mut Rebinding, Instant),
) {
    let until = *now + span;
    while *now < until {
        *now += Duration::from_millis(10);
        r.step(*now);
        each(r, *now);
    }
}

/// A client that nominates only once (Firefox), connected and talking for 4 s.
fn connected_firefox(t0: Instant) -> (Rebinding, Instant) {
    let mut r = Rebinding::new(t0, true);
    r.talks = true;
    let mut now = t0;
    run(&mut r, &mut now, Duration::from_secs(4), |_, _| {});
    assert!(r.peer.is_connected() && r.heard > 100, "heard {}", r.heard);
    assert_eq!(r.peer.client_path().map(|p| p.remote), Some(r.nat));
    (r, now)
}

#[test]
fn a_client_that_never_nominates_again_gets_its_media_back_after_a_rebinding() {
    let t0 = epoch();
    let (mut r, mut now) = connected_firefox(t0);
    let nominations = r.nominations_sent;
    assert!(nominations >= 1);

    // The NAT maps the client to a new port; the client keeps talking and checking consent, without
    // USE-CANDIDATE.
    r.nat = "198.51.100.7:40001".parse().expect("literal address");
    let moved = now;
    let mut switched: Option<Duration> = None;
    let mut heard_then = 0;
    run(&mut r, &mut now, Duration::from_secs(30), |r, now| {
        if switched.is_none() && r.peer.client_path().map(|p| p.remote) == Some(r.nat) {
            switched = Some(now - moved);
            heard_then = r.heard;
        }
    });
    assert_eq!(
        r.nominations_sent, nominations,
        "the client nominated again"
    );
    let after = switched.expect("the client's checks from its new port moved the media");
    // Its first check at least PATH_SILENCE after the move does it; str0m's client checks its pair at
    // least every 3 s (its maximum STUN RTO).
    assert!(after >= PATH_SILENCE, "{after:?}");
    assert!(
        after <= PATH_SILENCE + Duration::from_millis(3100),
        "{after:?}"
    );
    assert_eq!(r.moves, [PathMove::Silence]);
    // Past str0m's own 15 s ICE-lite pair timeout the peer is alive and everything reaches the client.
    assert!(r.peer.is_alive());
    let expected = (Duration::from_secs(30) - after).as_millis() as u64 / 20;
    let heard_after = r.heard - heard_then;
    assert!(
        heard_after + 2 >= expected,
        "heard {heard_after} of {expected}"
    );
}

#[test]
fn a_client_whose_path_still_delivers_keeps_its_media_there_while_it_checks_another() {
    // Chromium also checks pairs it does not use; while the current path carries the client's audio,
    // verified checks from another path move nothing.
    let t0 = epoch();
    let (mut r, mut now) = connected_firefox(t0);
    let second: SocketAddr = "192.0.2.44:50000".parse().expect("literal address");
    r.checks_via = Some(second);
    let heard = r.heard;
    let checks_before = r.check.clone();
    run(&mut r, &mut now, Duration::from_secs(20), |r, _| {
        assert_eq!(r.peer.client_path().map(|p| p.remote), Some(r.nat));
    });
    assert_ne!(
        r.check, checks_before,
        "the client checked over the second path"
    );
    assert!(r.moves.is_empty(), "{:?}", r.moves);
    assert_eq!(r.lost, 0);
    assert!(r.heard - heard >= 995, "heard {} in 20 s", r.heard - heard);
}

/// A binding request naming the peer's and the client's ufrags, signed with `password` (none: no
/// MESSAGE-INTEGRITY at all).
fn forged_check(peer: &Peer, client_ufrag: &str, password: Option<&str>) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let username = format!("{}:{client_ufrag}", peer.ufrag());
    let request = StunMessage::binding_request(&username, TransId::new(), true, 7, 1_000, false);
    let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
    let mut buf = vec![0u8; 512];
    let n = request
        .to_bytes(password.map(str::as_bytes), &mut buf, |key, parts| {
            hmac.sha1_hmac(key, parts)
        })
        .expect("a binding request fits 512 bytes");
    buf.truncate(n);
    buf
}

#[test]
fn replayed_unsigned_or_badly_signed_checks_from_a_new_address_move_nothing() {
    let t0 = epoch();
    let (mut r, mut now) = connected_firefox(t0);
    // A listener: only checks and RTCP arrive, so its path is often silent for PATH_SILENCE, which is
    // when a check from elsewhere could move the media.
    r.talks = false;
    let client_ufrag = r
        .check
        .as_deref()
        .and_then(|c| {
            str0m::ice::StunMessage::parse(c)
                .ok()?
                .split_username()
                .map(|(_, c)| c.to_owned())
        })
        .expect("the client checked consent");
    let attacker = NetPath::udp(
        r.server,
        "203.0.113.66:5555".parse().expect("literal address"),
    );
    let heard = r.heard;
    let mut tried_in_silence = 0;
    run(&mut r, &mut now, Duration::from_secs(20), |r, now| {
        let silent = r.heard_from_client.is_some_and(|h| now - h >= PATH_SILENCE);
        tried_in_silence += u64::from(silent);
        let replay = r.check.clone().expect("the client checks consent");
        let unsigned = forged_check(&r.peer, &client_ufrag, None);
        let wrong_key = forged_check(&r.peer, &client_ufrag, Some("not-the-ice-password-at-all"));
        for forged in [&replay, &unsigned, &wrong_key] {
            let moved = r
                .peer
                .handle_datagram(now, attacker, forged)
                .expect("the peer takes a forged check");
            assert_eq!(moved, None);
        }
        r.peer.drive(now, &mut r.out).expect("the peer drains");
        r.out.transmits.retain(|t| t.destination != attacker.remote);
        assert_eq!(r.peer.client_path().map(|p| p.remote), Some(r.nat));
    });
    assert!(
        tried_in_silence > 100,
        "the path was silent in {tried_in_silence} steps"
    );
    assert!(r.moves.is_empty(), "{:?}", r.moves);
    assert_eq!(r.lost, 0, "nothing went anywhere but the client");
    assert!(r.heard - heard >= 995, "heard {} in 20 s", r.heard - heard);
}

#[test]
fn extra_slot_lines_stay_unused_and_listeners_have_no_microphone() {
    let (peer, _) = answer_for(5, false, 2).expect("answer");
    assert_eq!(peer.slots.len(), 2);
    assert!(!peer.has_microphone());
}

#[test]
fn a_receive_only_offer_has_no_microphone_and_its_one_line_is_its_slot() {
    // WHEP: one recvonly audio m-line.
    let now = epoch();
    let local = "127.0.0.1:6000".parse().expect("literal address");
    let (_, offer) = ClientPeer::new_receive_only(now, local).expect("client offer");
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: 3,
        stereo: false,
    };
    let (peer, answer) = Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
    assert!(!peer.has_microphone());
    assert_eq!(peer.slots.len(), 1);
    assert!(answer.contains("a=sendonly"), "{answer}");
    // Without slots (a publisher-only grant) the same offer has nothing to carry.
    let params = PeerParams { slots: 0, ..params };
    let (peer, _) = Peer::from_offer(now, ParticipantId(2), &params, &offer).expect("answer");
    assert!(peer.slots.is_empty() && !peer.has_microphone());
}

#[test]
fn a_panic_while_parsing_an_offer_is_a_typed_error() {
    let panicking = |_: &str| -> Result<SdpOffer, String> { panic!("parser bug") };
    assert!(matches!(
        parse_offer("v=0", panicking),
        Err(PeerError::Panicked)
    ));
    // Through str0m's parser: garbage is a parse error, a real offer parses.
    assert!(matches!(
        parse_offer("not sdp", SdpOffer::from_sdp_string),
        Err(PeerError::BadSdp(_))
    ));
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal address"),
        slots: 1,
        publish: true,
        red: 0,
    };
    let (_, offer) = ClientPeer::new(epoch(), client).expect("client offer");
    assert!(parse_offer(&offer, SdpOffer::from_sdp_string).is_ok());
}

#[test]
fn bad_offers_are_typed_errors() {
    let now = epoch();
    let cert = test_cert();
    let params = PeerParams {
        candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
        dtls_cert: &cert,
        slots: 3,
        stereo: false,
    };
    for garbage in [
        "",
        "v=0",
        "not sdp at all\r\nm=audio",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ] {
        assert!(
            Peer::from_offer(now, ParticipantId(1), &params, garbage).is_err(),
            "{garbage:?}"
        );
    }
    // A valid offer without slot lines cannot subscribe.
    assert!(matches!(
        answer_for(0, true, 3),
        Err(PeerError::MissingMedia(_))
    ));
}

#[test]
fn a_receiver_reports_interval_is_the_difference_of_its_cumulative_figures() {
    use super::{Downstream, RemoteTotals};
    let d = |expected, lost| Some(Downstream { expected, lost });
    let mut last = RemoteTotals::at(1_000, 10);
    assert_eq!(last.interval(1_250, 22, 0), d(250, 12));
    assert_eq!((last.max_seq, last.lost, last.believed), (1_250, 22, 22));
    // No new packet: nothing to say.
    assert_eq!(last.interval(1_250, 22, 0), None);
    // Duplicates made the cumulative loss go down: none lost in the interval.
    assert_eq!(last.interval(1_300, 20, 0), d(50, 0));
    // A negative cumulative loss (0x800000 and up in 24 bits) counts as none.
    assert_eq!(last.interval(1_350, 0xff_fffe, 0), d(50, 0));
    assert_eq!((last.max_seq, last.lost), (1_350, 0));
    // A report that claims more lost than it covered loses its packets, no more.
    assert_eq!(last.interval(1_360, 500, 0), d(10, 10));
    // An older highest sequence number (reordered reports) covers nothing new.
    assert_eq!(last.interval(1_300, 500, 0), None);
    assert_eq!(last.max_seq, 1_360);
    // Totals started from a report (a stream whose first packet is unknown) read its loss the same way.
    assert_eq!(
        RemoteTotals::at(1_000, 0xff_fffe),
        RemoteTotals::at(1_000, 0)
    );
}

#[test]
fn a_small_rise_counts_past_what_may_be_in_flight_or_once_later_reports_keep_it() {
    use super::{Downstream, RemoteTotals};
    let d = |expected, lost| Some(Downstream { expected, lost });
    let mut last = RemoteTotals::at(1_000, 0);
    // A packet still in flight (reordered) counted lost, then taken back: never believed.
    assert_eq!(last.interval(1_050, 1, 0), d(50, 0));
    assert_eq!(last.interval(1_100, 0, 0), d(50, 0));
    // One in flight at each of two reports in a row (the first taken back, another counted): never
    // believed either, once the third takes the second back.
    assert_eq!(last.interval(1_150, 1, 0), d(50, 0));
    assert_eq!(last.interval(1_200, 1, 0), d(50, 0));
    assert_eq!(last.interval(1_250, 0, 0), d(50, 0));
    // A path that always has 2–3 packets in flight (30 ms of jitter: rises of 3 wait): never believed.
    for (seq, lost) in [(1_300, 3), (1_350, 2), (1_400, 3), (1_450, 2)] {
        assert_eq!(last.interval(seq, lost, 30), d(50, 0));
    }
    assert_eq!(last.believed, 0);
    // Packets really lost, one or two at a time, on a path that states no jitter (at most 2 in
    // flight): all but 2 of the cumulative loss count at once, each small rise whole after that.
    assert_eq!(last.interval(1_500, 4, 0), d(50, 2));
    assert_eq!(last.interval(1_550, 5, 0), d(50, 1));
    assert_eq!(last.interval(1_600, 6, 0), d(50, 1));
    assert_eq!(last.interval(1_650, 7, 0), d(50, 1));
    // A rise larger than a reordering's counts at once, and all of it: the two left out too.
    assert_eq!(last.interval(1_700, 17, 0), d(50, 12));
    // A report covering nothing new changes nothing.
    assert_eq!(last.interval(1_700, 18, 0), None);
    // Duplicates take the cumulative loss down: what was believed stays counted, and counting starts
    // again from there.
    assert_eq!(last.interval(1_750, 12, 0), d(50, 0));
    assert_eq!(last.interval(1_800, 20, 0), d(50, 8));
    // On a jittery path (60 ms stated) a rise of up to 6 waits; 7 counts at once.
    assert_eq!(last.interval(1_850, 26, 60), d(50, 0));
    assert_eq!(last.interval(1_900, 20, 60), d(50, 0));
    assert_eq!(last.interval(1_950, 27, 60), d(50, 7));
    // There one packet per report is believed once two later reports keep it, 2 short
    // (`NEVER_BELIEVED_PACKETS`): sooner than all but the 6 that may be in flight would count it.
    for (seq, lost) in [(2_000, 28), (2_050, 29), (2_100, 30), (2_150, 31)] {
        assert_eq!(last.interval(seq, lost, 60), d(50, 0));
    }
    assert_eq!(last.interval(2_200, 32, 60), d(50, 1));
}

#[test]
fn the_microphones_loss_counts_a_packet_once_later_ones_settled_it() {
    use super::{Downstream, MicReception, MIC_SETTLE_PACKETS};
    let d = |expected, lost| Some(Downstream { expected, lost });
    let arrive = |r: &mut Option<MicReception>, seqs: std::ops::Range<u64>, skip: &[u64]| {
        for seq in seqs.filter(|s| !skip.contains(s)) {
            MicReception::on_packet(r, 7, seq);
        }
    };
    let settle = |r: &mut Option<MicReception>| r.as_mut().expect("packets arrived").interval();
    let mut r = None;
    // Nothing settled yet: nothing to say.
    arrive(&mut r, 100..120, &[110]);
    assert_eq!(settle(&mut r), None);
    // 100..150 arrived but for 110, 130 and 145; then 110 late, and twice. 130 and 145 are among the
    // latest 32 (perhaps still in flight): 100..118 settled, none lost.
    arrive(&mut r, 120..150, &[130, 145]);
    arrive(&mut r, 110..111, &[]);
    arrive(&mut r, 110..111, &[]);
    assert_eq!(settle(&mut r), d(150 - 100 - MIC_SETTLE_PACKETS, 0));
    // 32 more: 130 and 145 settled, missing.
    arrive(&mut r, 150..182, &[]);
    assert_eq!(settle(&mut r), d(32, 2));
    // 145 arrives after all: it takes nothing back, and the next loss counts as before.
    arrive(&mut r, 145..146, &[]);
    arrive(&mut r, 182..232, &[190]);
    assert_eq!(settle(&mut r), d(50, 1));
    arrive(&mut r, 232..250, &[]);
    assert_eq!(settle(&mut r), d(18, 0));
    // A jump past the remembered 128 (a gap of 200) counts its packets once settled: 118..450.
    arrive(&mut r, 450..482, &[]);
    assert_eq!(settle(&mut r), d(232, 200));
    // A new SSRC starts a new count.
    MicReception::on_packet(&mut r, 8, 5);
    assert_eq!(r.map(|r| r.arrived), Some(super::SeqRecord::starting_at(5)));
}

#[test]
fn a_slots_unsent_sequence_numbers_are_its_speakers_gaps() {
    use super::SeqRecord;
    let mut s = None;
    for seq in (1_000..1_100).filter(|q| ![1_010, 1_011, 1_050].contains(q)) {
        SeqRecord::record(&mut s, seq);
    }
    let mut s = s.expect("packets were sent");
    assert_eq!(s.first(), 1_000);
    // Before the first and at it: none; through 1_020: the two of 1_010 and 1_011; past the highest:
    // as through the highest.
    assert_eq!(s.missing_through(999), 0);
    assert_eq!(s.missing_through(1_000), 0);
    assert_eq!(s.missing_through(1_020), 2);
    assert_eq!(s.missing_through(1_099), 3);
    assert_eq!(s.missing_through(5_000), 3);
    // 1_050 sent late, and again: no longer unsent, counted once.
    let mut some = Some(s);
    SeqRecord::record(&mut some, 1_050);
    SeqRecord::record(&mut some, 1_050);
    s = some.expect("packets were sent");
    assert_eq!(s.missing_through(1_099), 2);
    // A jump: its gap counts (1_100..1_300), and through a sequence number older than the latest 128
    // as far as the count tells (here exactly: nothing was sent between it and the latest 128).
    let mut some = Some(s);
    SeqRecord::record(&mut some, 1_300);
    s = some.expect("packets were sent");
    assert_eq!(s.missing_through(1_300), 2 + 200);
    assert_eq!(s.missing_through(1_150), 2 + 51);
}

#[test]
fn an_offer_that_fixes_its_dtls_role_connects_in_that_role() {
    // RFC 8842 §5.2 asks an offerer for `actpass`; some clients offer `active` or `passive` outright.
    // The server takes the other role, and the call connects and carries audio either way.
    for setup in ["actpass", "active", "passive"] {
        let t0 = epoch();
        let mut r = Rebinding::with_offer(t0, false, |offer| {
            assert!(offer.contains("a=setup:actpass"), "{offer}");
            offer.replace("a=setup:actpass", &format!("a=setup:{setup}"))
        });
        let mut now = t0;
        run(&mut r, &mut now, Duration::from_secs(3), |_, _| {});
        assert!(r.peer.is_connected(), "offer with setup:{setup}");
        assert!(r.heard > 100, "setup:{setup}: heard {}", r.heard);
        assert_eq!(r.lost, 0, "setup:{setup}");
    }
}
