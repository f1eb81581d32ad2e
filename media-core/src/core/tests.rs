use super::*;
use crate::core::net::offer_order;
use crate::core::net::NetPath;
use crate::stats::DropReason;
use crate::testkit::client::{ClientConfig, ClientPeer};
use vocab::RoomSettings;

#[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
fn epoch() -> Instant {
    Instant::now()
}

/// The `a=candidate` lines of each m-line section of an SDP.
fn candidates_per_mline(sdp: &str) -> Vec<Vec<String>> {
    sdp.split("\r\nm=")
        .skip(1)
        .map(|section| {
            section
                .lines()
                .filter_map(|l| l.strip_prefix("a=candidate:"))
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn every_bundled_m_line_offers_the_udp_candidates_first_then_passive_tcp() {
    let now = epoch();
    let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
    let lan: SocketAddr = "192.168.1.5:7882".parse().expect("literal");
    let mut candidates = vec![
        LocalCandidate::tcp(lo),
        LocalCandidate::udp(lo),
        LocalCandidate::udp(lan),
    ];
    offer_order(&mut candidates);
    let config = CoreConfig {
        candidates,
        ..CoreConfig::new(lo, 1)
    };
    let mut core = MediaCore::new(now, config);
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal"),
        slots: 2,
        publish: true,
        red: 0,
    };
    let (_, offer) = ClientPeer::new(now, client).expect("client offer");
    let answer = core
        .add_participant(
            now,
            &RoomId("r".into()),
            RoomSettings::forward(2),
            ParticipantId(1),
            JoinParams {
                can_publish: true,
                can_subscribe: true,
                muted: false,
                hears_mix: false,
            },
            &offer,
        )
        .expect("answer");
    let per_line = candidates_per_mline(&answer);
    assert_eq!(per_line.len(), 3, "{answer}");
    let lines = &per_line[0];
    assert_eq!(lines.len(), 3, "{answer}");
    assert!(lines[0].contains(" udp ") && lines[0].contains("127.0.0.1 7882 typ host"));
    assert!(lines[1].contains(" udp ") && lines[1].contains("192.168.1.5 7882 typ host"));
    assert!(
        lines[2].contains(" tcp ") && lines[2].contains("127.0.0.1 7882 typ host tcptype passive"),
        "{answer}"
    );
    let prio = |l: &str| -> u32 {
        l.split(' ')
            .nth(3)
            .and_then(|p| p.parse().ok())
            .expect("a candidate line has a priority")
    };
    assert!(prio(&lines[0]) > prio(&lines[1]), "{answer}");
    assert!(prio(&lines[1]) > prio(&lines[2]), "{answer}");
    // Every m-line of the BUNDLE group lists all of them, UDP and TCP, in the same order, then
    // end-of-candidates (answer.rs: clients that read another m-line's candidates connect too).
    assert!(answer.contains("a=group:BUNDLE"), "{answer}");
    for other in &per_line[1..] {
        assert_eq!(other, lines, "{answer}");
    }
    assert_eq!(answer.matches("a=end-of-candidates").count(), 3, "{answer}");
}

#[test]
fn a_datagram_on_an_address_that_is_no_candidate_is_dropped() {
    let now = epoch();
    let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
    let mut core = MediaCore::new(now, CoreConfig::new(lo, 1));
    let remote: SocketAddr = "127.0.0.1:6000".parse().expect("literal");
    // TCP on the UDP candidate's address: not a candidate of this core.
    core.handle_datagram_via(now, NetPath::tcp(lo, remote), &[0x80, 0, 0, 1]);
    assert_eq!(core.stats().dropped(DropReason::UnknownSource), 1);
}

/// The offer with other ICE credentials: what a browser's `restartIce()` offer changes.
fn with_new_ice_credentials(offer: &str) -> String {
    offer
        .lines()
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                "a=ice-ufrag:rstA".to_owned()
            } else if l.starts_with("a=ice-pwd:") {
                "a=ice-pwd:restartedpasswordrestartedpw".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// A STUN binding request naming `username` (no MESSAGE-INTEGRITY: it routes, it does not verify).
fn stun_naming(username: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attr);
    msg
}

fn answer_ufrag(answer: &str) -> String {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("an answer has an ice-ufrag")
        .to_owned()
}

#[test]
fn an_ice_restart_offer_is_answered_on_the_same_peer_with_new_credentials() {
    let now = epoch();
    let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
    let mut core = MediaCore::new(now, CoreConfig::new(lo, 1));
    let client = ClientConfig {
        local_addr: "127.0.0.1:6000".parse().expect("literal"),
        slots: 2,
        publish: true,
        red: 0,
    };
    let (_, offer) = ClientPeer::new(now, client).expect("client offer");
    let room = RoomId("r".into());
    let id = ParticipantId(1);
    let params = JoinParams {
        can_publish: true,
        can_subscribe: true,
        muted: false,
        hears_mix: false,
    };
    let first = core
        .add_participant(now, &room, RoomSettings::forward(2), id, params, &offer)
        .expect("answer");
    let old_ufrag = answer_ufrag(&first);

    // The same offer again is a renegotiation, not a restart: refused, nothing changes.
    assert!(matches!(
        core.restart_ice(now, id, &offer),
        Err(CoreError::Peer(PeerError::NotIceRestart(_)))
    ));
    // A restart offer must keep the m-lines.
    let fewer = with_new_ice_credentials(&offer);
    let cut = fewer.rfind("m=audio").expect("audio m-lines");
    assert!(matches!(
        core.restart_ice(now, id, &fewer[..cut]),
        Err(CoreError::Peer(PeerError::NotIceRestart(_)))
    ));
    assert!(matches!(
        core.restart_ice(now, ParticipantId(2), &with_new_ice_credentials(&offer)),
        Err(CoreError::UnknownParticipant(_))
    ));

    let restarted = core
        .restart_ice(now, id, &with_new_ice_credentials(&offer))
        .expect("the restart offer is answered");
    let new_ufrag = answer_ufrag(&restarted);
    assert_ne!(new_ufrag, old_ufrag, "new server credentials");
    assert_eq!(
        candidates_per_mline(&restarted.replace(&new_ufrag, "U")),
        candidates_per_mline(&first.replace(&old_ufrag, "U")),
        "the same m-lines and candidates"
    );
    let mids = |sdp: &str| -> Vec<String> {
        sdp.lines()
            .filter(|l| l.starts_with("a=mid:") || l.starts_with("a=ssrc:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        mids(&restarted),
        mids(&first),
        "the same mids and slot SSRCs"
    );
    // Still the same participant in the same room.
    assert_eq!(core.participant_count(), 1);

    // STUN naming the old ufrag no longer reaches the peer; the new one does (and is then checked).
    let source: SocketAddr = "127.0.0.1:6000".parse().expect("literal");
    core.handle_datagram(now, source, &stun_naming(&format!("{old_ufrag}:rstA")));
    assert_eq!(core.stats().dropped(DropReason::UnknownUfrag), 1);
    core.handle_datagram(now, source, &stun_naming(&format!("{new_ufrag}:rstA")));
    assert_eq!(core.stats().dropped(DropReason::UnknownUfrag), 1);
}

/// A spatial mixed room answers Opus with `stereo=1; sprop-stereo=1` (it sends each listener a stereo
/// mix); other rooms answer as before; a room of the same name with other spatial settings is refused.
#[test]
fn spatial_mixed_rooms_answer_stereo() {
    use vocab::{MixSettings, SpatialSettings};
    let now = epoch();
    let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
    let mut core = MediaCore::new(now, CoreConfig::new(lo, 1));
    let params = JoinParams {
        can_publish: true,
        can_subscribe: true,
        muted: false,
        hears_mix: false,
    };
    let mix = RoomSettings::mix(MixSettings::default());
    let cases = [
        ("stereo", mix.with_spatial(SpatialSettings::default()), true),
        ("mono", mix, false),
        (
            "forward",
            RoomSettings::forward(2).with_spatial(SpatialSettings::default()),
            false,
        ),
    ];
    for (i, (room, settings, stereo)) in cases.into_iter().enumerate() {
        for red in [0, 1] {
            let client = ClientConfig {
                local_addr: format!("127.0.0.1:{}", 6000 + i * 2 + red)
                    .parse()
                    .expect("literal"),
                slots: 1,
                publish: true,
                red: red as u8,
            };
            let (_, offer) = ClientPeer::new(now, client).expect("client offer");
            let id = ParticipantId(1 + (i * 2 + red) as u64);
            let answer = core
                .add_participant(now, &RoomId(room.into()), settings, id, params, &offer)
                .expect("answer");
            assert_eq!(
                answer.contains("stereo=1"),
                stereo,
                "{room}, RED {red}: {answer}"
            );
            assert_eq!(
                answer.contains("sprop-stereo=1"),
                stereo,
                "{room}: {answer}"
            );
        }
    }
    let (_, offer) = ClientPeer::new(
        now,
        ClientConfig {
            local_addr: "127.0.0.1:6100".parse().expect("literal"),
            slots: 1,
            publish: true,
            red: 0,
        },
    )
    .expect("client offer");
    let farther = mix.with_spatial(SpatialSettings {
        audible_distance: 99.0,
        ..SpatialSettings::default()
    });
    assert!(matches!(
        core.add_participant(
            now,
            &RoomId("stereo".into()),
            farther,
            ParticipantId(99),
            params,
            &offer
        ),
        Err(CoreError::RoomSettingsConflict(_))
    ));
}

#[test]
fn rtp_read_long_after_it_arrived_is_shed_and_stun_and_rtcp_never_are() {
    let arrived = epoch();
    let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
    let mut core = MediaCore::new(arrived, CoreConfig::new(lo, 1));
    let path = NetPath::udp(lo, "127.0.0.1:6000".parse().expect("literal"));
    let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA];
    // A receiver report (packet type 201), and a binding request (magic cookie) naming no peer.
    let rtcp = [0x80, 201, 0, 1, 0, 0, 0, 1];
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let late = arrived + STALE_RTP_AFTER;
    let overloaded = |core: &MediaCore| core.stats().dropped(DropReason::Overloaded);

    // Waited exactly the limit: shed, counted, nothing else looked at.
    core.handle_datagram_read(late, arrived, path, &rtp);
    assert_eq!(overloaded(&core), 1);
    assert_eq!(core.stats().dropped(DropReason::UnknownSource), 0);
    assert_eq!(core.stats().datagrams_in, 1);
    // A millisecond less: handled as any datagram (here: from no known peer).
    core.handle_datagram_read(late, arrived + Duration::from_millis(1), path, &rtp);
    assert_eq!(overloaded(&core), 1);
    assert_eq!(core.stats().dropped(DropReason::UnknownSource), 1);
    // RTCP and STUN however long they waited: consent, handshakes and reports go on under overload.
    let much_later = late + Duration::from_secs(5);
    core.handle_datagram_read(much_later, arrived, path, &rtcp);
    assert_eq!(core.stats().dropped(DropReason::UnknownSource), 2);
    core.handle_datagram_read(much_later, arrived, path, &stun);
    assert_eq!(overloaded(&core), 1);
    assert_eq!(core.stats().datagrams_in, 4);
}
