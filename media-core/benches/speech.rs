//! Speech quality by room mode and network condition, for the closing note of issue 9: the espeak-ng
//! passage from one speaker to one listener (virtual time), PESQ-WB of what the listener plays against the
//! speaker's own decoded packets, and the mouth-to-ear delay; the mixer's added delay is mix minus forward.
//! Senders encode like a browser (32 kb/s, DTX, in-band FEC tuned for the loss). Lossy conditions add
//! 30 ± 20 ms of jitter (reordering) on each leg.
//!
//!     cargo bench -p media-core --bench speech
//!
//! Not a test: it asserts nothing and prints a table. Needs what `scripts/test.sh` installs (espeak-ng, sox,
//! the .venv with PESQ). The `red` column: both clients offer RED (RFC 2198) and the speaker sends each frame
//! again in the next packet (depth 1, as Chrome).

#[path = "../tests/support/mod.rs"]
mod support;

use media_core::sim::LinkConfig;
use media_core::{MixSettings, RoomSettings};
use support::speech_call;

fn main() {
    println!("speech through a room: PESQ-WB (vs the sender's decode; vs the passage) and mouth-to-ear delay");
    println!("loss%  red  fwd_pesq  fwd_vs_src  fwd_m2e_ms  mix_pesq  mix_vs_src  mix_m2e_ms  mix_added_ms");
    for (i, loss_percent) in [0u32, 5, 10, 20].into_iter().enumerate() {
        let link = if loss_percent == 0 {
            LinkConfig::with_delay(20.0)
        } else {
            LinkConfig::lossy(f64::from(loss_percent) / 100.0, 10.0, 40.0)
        };
        let seed = 100 + i as u64;
        let expected = loss_percent as i32;
        for red in [0u8, 1] {
            let fwd = speech_call(
                &format!("bench-forward-{loss_percent}-red{red}"),
                seed,
                RoomSettings::forward(3),
                link,
                expected,
                red,
            );
            let mix = speech_call(
                &format!("bench-mix-{loss_percent}-red{red}"),
                seed,
                RoomSettings::mix(MixSettings::default()),
                link,
                expected,
                red,
            );
            println!(
                "{loss_percent:>5}  {:>3}  {:>8.2}  {:>10.2}  {:>10.0}  {:>8.2}  {:>10.2}  {:>10.0}  {:>12.0}",
                if red > 0 { "on" } else { "off" },
                fwd.pesq.mos_lqo,
                fwd.pesq_vs_speech.mos_lqo,
                fwd.mouth_to_ear_ms,
                mix.pesq.mos_lqo,
                mix.pesq_vs_speech.mos_lqo,
                mix.mouth_to_ear_ms,
                mix.mouth_to_ear_ms - fwd.mouth_to_ear_ms
            );
        }
    }
}
