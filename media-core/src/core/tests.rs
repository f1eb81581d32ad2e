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
