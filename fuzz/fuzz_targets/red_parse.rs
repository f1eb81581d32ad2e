//! `media_core::red::parse` on arbitrary payloads and payload types; what parses must re-encode and parse
//! back to the same frames (the encoder keeps every frame the parser returns: offsets 1..=16383, blocks of
//! at most 1023 bytes, at most 32 of them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_core::red;

fuzz_target!(|input: (u8, &[u8])| {
    let (pt, data) = input;
    let opus_pt = pt & 0x7f;
    let Ok(parsed) = red::parse(data, opus_pt) else {
        return;
    };
    assert!(!parsed.primary.is_empty(), "parse refuses an empty primary");
    for f in &parsed.redundant {
        assert!((1..=red::MAX_TS_OFFSET).contains(&f.ts_offset));
        assert!(!f.payload.is_empty() && f.payload.len() <= red::MAX_BLOCK_LEN);
    }
    let mut out = Vec::new();
    red::encode(
        opus_pt,
        parsed.primary,
        &parsed.redundant,
        |_, _| true,
        &mut out,
    );
    let again = red::parse(&out, opus_pt).expect("an encoded payload parses");
    assert_eq!(again, parsed, "parse(encode(parse(x))) == parse(x)");
});
