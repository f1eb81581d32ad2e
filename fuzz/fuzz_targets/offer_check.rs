//! The offer pre-check, then `Peer::from_offer` for what passes (str0m's SDP parser and negotiation). An
//! error is fine; a panic or an unbounded answer is not.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use media_core::offer::{check_offer, MAX_OFFER_BYTES};
use media_core::peer::{Peer, PeerParams};
use media_core::ParticipantId;
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

fuzz_target!(|input: (u8, &str)| {
    let (slots, sdp) = input;
    if check_offer(sdp).is_err() {
        return;
    }
    assert!(sdp.len() <= MAX_OFFER_BYTES);
    let params = PeerParams {
        candidate_addr: SocketAddr::from(([127, 0, 0, 1], 50_000)),
        dtls_cert: cert(),
        slots: usize::from(slots % 18),
        // The high bit: a stereo answer (a spatial mixed room).
        stereo: slots & 0x80 != 0,
    };
    if let Ok((peer, answer)) = Peer::from_offer(Instant::now(), ParticipantId(1), &params, sdp) {
        assert!(peer.slots().len() <= params.slots);
        // An answer has at most one m-line per offered one; bound it loosely by the offer size.
        assert!(
            answer.len() <= 4096 + 64 * sdp.len(),
            "answer {} B for offer {} B",
            answer.len(),
            sdp.len()
        );
    }
});
