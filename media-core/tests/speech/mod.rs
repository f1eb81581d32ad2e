//! Speech quality, objectively: real speech (espeak-ng, with pauses) through a room to a listener that plays
//! it through a jitter buffer like a browser, scored by PESQ wide-band (ITU-T P.862.2); and a frame-exact
//! whole-call test (every sent 20 ms frame heard exactly once, in order, nothing in the pauses). Steady tones
//! never exercise the start and end of a talk spurt; speech does (issue 9).
//!
//! Needs `espeak-ng`, `sox` and the `.venv` with PyPI `pesq`: `scripts/test.sh` installs them.

use media_core::sim::LinkConfig;
use media_core::{MixConfig, RoomConfig};

use crate::support::speech_call;

/// The lossy condition on each leg: 5 % random loss, 30 ± 20 ms one-way delay (reordering).
fn lossy_leg() -> LinkConfig {
    LinkConfig::lossy(0.05, 10.0, 40.0)
}

#[test]
fn forwarded_speech_scores_at_least_4_4_on_a_clean_link() {
    let call = speech_call(
        "forward-clean",
        11,
        RoomConfig::forward(3),
        LinkConfig::with_delay(20.0),
        0,
    );
    eprintln!(
        "forward, clean: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms ({} frames \
         sent, {} DTX)",
        call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms, call.frames_sent, call.frames_dtx
    );
    assert!(call.frames_dtx > 20, "the speaker's DTX never engaged");
    assert!(
        call.pesq.mos_lqo >= 4.4,
        "forwarded speech scores PESQ-WB {:.2} < 4.4",
        call.pesq.mos_lqo
    );
}

#[test]
fn mixed_speech_scores_at_least_3_9_on_a_clean_link() {
    let call = speech_call(
        "mix-clean",
        12,
        RoomConfig::mix(MixConfig::default()),
        LinkConfig::with_delay(20.0),
        0,
    );
    eprintln!(
        "mix, clean: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms",
        call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms
    );
    assert!(
        call.pesq.mos_lqo >= 3.9,
        "mixed speech scores PESQ-WB {:.2} < 3.9",
        call.pesq.mos_lqo
    );
}

#[test]
fn mixed_speech_scores_at_least_3_0_with_5_percent_loss_and_jitter_on_each_leg() {
    let call = speech_call(
        "mix-lossy",
        13,
        RoomConfig::mix(MixConfig::default()),
        lossy_leg(),
        5,
    );
    eprintln!(
        "mix, 5 % loss, 30 ± 20 ms: {} vs the sender's decode, {} vs the passage; mouth-to-ear {:.0} ms",
        call.pesq, call.pesq_vs_speech, call.mouth_to_ear_ms
    );
    assert!(
        call.pesq.mos_lqo >= 3.0,
        "mixed speech at 5 % loss scores PESQ-WB {:.2} < 3.0",
        call.pesq.mos_lqo
    );
}
