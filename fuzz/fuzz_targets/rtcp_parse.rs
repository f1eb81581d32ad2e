//! str0m's RTCP parser (`Rtcp::try_from`, one packet of a compound) on arbitrary bytes, as a participant's
//! decrypted SRTCP reaches it. The vendored str0m keeps its report lists in a `Vec` (vendor/str0m/PATCHES.md,
//! change 3), whose `push` panics past RTCP's 31 items where the inline array's index did: no input may
//! get there. Checks: no panic; every list (SDES chunks and each chunk's items, report blocks, BYE SSRCs,
//! FIR and NACK entries) holds at most 31 and agrees with itself (`len`, `iter`, `get`, indexing); a parsed
//! packet clones equal and formats.
#![no_main]

use libfuzzer_sys::fuzz_target;
use str0m::rtp::rtcp::{ReportList, Rtcp};

fn check<T: PartialEq + std::fmt::Debug>(list: &ReportList<T>) {
    let len = list.len();
    assert!(len <= 31, "a report list holds at most 31 items, not {len}");
    assert_eq!(list.iter().count(), len);
    assert_eq!(list.is_empty(), len == 0);
    assert!(list.get(len).is_none());
    for (i, item) in list.iter().enumerate() {
        assert_eq!(list.get(i), Some(item));
        assert_eq!(&list[i], item);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(rtcp) = Rtcp::try_from(data) else {
        return;
    };
    match &rtcp {
        Rtcp::SenderReport(sr) => check(&sr.reports),
        Rtcp::ReceiverReport(rr) => check(&rr.reports),
        Rtcp::SourceDescription(d) => {
            check(&d.reports);
            for chunk in d.reports.iter() {
                check(&chunk.values);
            }
        }
        Rtcp::Goodbye(bye) => check(&bye.reports),
        Rtcp::Nack(nack) => check(&nack.reports),
        Rtcp::Fir(fir) => check(&fir.reports),
        _ => {}
    }
    assert_eq!(rtcp.clone(), rtcp, "a parsed packet clones equal");
    let _ = format!("{rtcp:?}");
});
