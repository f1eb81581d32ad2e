//! The RFC 6465 CSRC audio-level extension (`media_core::csrc_levels`): `parse_value` on arbitrary bytes
//! (accepted: 1..=15 levels, reserved bit cleared), and what `write_to` writes — from parsed values and from
//! `Contributors` built of arbitrary (SSRC, level) lists, with and without a listener taken out, into
//! buffers of any size — parses back to the same levels.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::csrc_levels::{Contributors, CsrcLevelSerializer, CsrcLevels, MAX_CSRCS};
use str0m::rtp::{ExtensionSerializer, ExtensionValues};

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    buf_len: u8,
    contributors: Vec<(u32, u8)>,
    without: u32,
}

/// Write `ev` into a buffer of `buf_len` bytes and parse it back: the levels written are the first ones,
/// reserved bit cleared.
fn round_trip(ev: &ExtensionValues, buf_len: usize) {
    let mut buf = vec![0xaa; buf_len];
    let n = CsrcLevelSerializer.write_to(&mut buf, ev);
    let Some(levels) = ev.user_values.get::<CsrcLevels>() else {
        assert_eq!(n, 0, "nothing is written without levels");
        return;
    };
    assert!(n <= buf_len && n <= MAX_CSRCS && n <= levels.0.len());
    assert_eq!(n, levels.0.len().min(MAX_CSRCS).min(buf_len));
    let mut parsed = ExtensionValues::default();
    let accepted = CsrcLevelSerializer.parse_value(&buf[..n], &mut parsed);
    assert_eq!(
        accepted,
        n > 0,
        "what is written parses (and an empty value does not)"
    );
    if accepted {
        let expected: Vec<u8> = levels.0[..n].iter().map(|l| l & 0x7f).collect();
        assert_eq!(
            parsed.user_values.get::<CsrcLevels>(),
            Some(&CsrcLevels(expected)),
            "write then parse gives the levels back"
        );
    }
}

fuzz_target!(|input: Input| {
    let buf_len = usize::from(input.buf_len % 32);

    let mut ev = ExtensionValues::default();
    if CsrcLevelSerializer.parse_value(&input.raw, &mut ev) {
        let levels = ev
            .user_values
            .get::<CsrcLevels>()
            .expect("an accepted value sets the levels");
        assert!((1..=MAX_CSRCS).contains(&input.raw.len()));
        assert_eq!(levels.0.len(), input.raw.len());
        assert!(
            levels.0.iter().all(|l| *l <= 127),
            "the reserved bit is cleared"
        );
        round_trip(&ev, buf_len);
    } else {
        assert!(input.raw.is_empty() || input.raw.len() > MAX_CSRCS);
        assert!(ev.user_values.get::<CsrcLevels>().is_none());
    }

    let c = Contributors::new(input.contributors.iter().copied());
    assert_eq!(c.len(), input.contributors.len().min(MAX_CSRCS));
    assert_eq!(c.levels().len(), c.len());
    assert!(c.levels().iter().all(|l| *l <= 127));
    let minus = c.without(input.without);
    assert!(!minus.ssrcs().contains(&input.without));
    assert_eq!(minus.levels().len(), minus.len());
    for c in [&c, &minus] {
        let mut ev = ExtensionValues::default();
        c.set_levels(&mut ev);
        assert_eq!(ev.user_values.get::<CsrcLevels>().is_some(), !c.is_empty());
        round_trip(&ev, buf_len);
        round_trip(&ev, MAX_CSRCS);
    }
});
