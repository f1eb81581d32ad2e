//! `media_core::sdes::SrtpReceiver`, the plain RTP ingest's SRTP (SDES) receiver, on what a gateway or an
//! attacker may send to its port: packets sealed with the session's key (any SSRC of six, indices moving
//! forward, back and across roll-overs, CSRCs, header extensions, any payload), copies of earlier packets
//! (replays), copies with one byte changed or cut short, and raw bytes. Each suite in turn.
//!
//! Checks: only a sealed, unchanged packet opens, and it opens to its header and payload; no (SSRC, index)
//! opens twice; a packet one to a thousand ahead of its stream's highest opens; a packet 64 or more behind
//! never does; at most `MAX_SSRCS` streams; nothing that fails changes what opens next.
#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use media_core::sdes::{SdesSuite, SrtpError, SrtpReceiver, SrtpSealer, MAX_SSRCS};

#[derive(Arbitrary, Debug)]
enum Op<'a> {
    Sealed {
        /// One of six SSRCs.
        ssrc: u8,
        /// Index relative to the highest this SSRC was sealed at (the first packet of an SSRC: from 0).
        step: i16,
        /// Added to the index once, times 4096: jumps and roll-overs.
        jump: u8,
        csrcs: u8,
        /// Header extension words (profile 0xBEDE).
        extension: Option<Vec<u32>>,
        pt: u8,
        payload: &'a [u8],
    },
    /// An earlier sealed packet again, changed at one byte (XOR, if not 0) and cut to a length.
    Again {
        which: u8,
        flip: Option<(u16, u8)>,
        cut: Option<u16>,
    },
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    suite: u8,
    key: [u8; 46],
    ops: Vec<Op<'a>>,
}

const SSRCS: [u32; 6] = [1, 2, 0xdead_beef, 0x8000_0000, 7, u32::MAX];

fuzz_target!(|input: Input| {
    let suite = SdesSuite::ALL[usize::from(input.suite) % SdesSuite::ALL.len()];
    let master = &input.key[..suite.master_len()];
    let mut sealer = SrtpSealer::new(suite, master).expect("the suite's own length");
    let mut receiver = SrtpReceiver::new(suite, master).expect("the suite's own length");
    // Per SSRC: the highest index sealed, and the highest opened.
    let mut sent: HashMap<u32, u64> = HashMap::new();
    let mut opened_highest: HashMap<u32, u64> = HashMap::new();
    let mut opened: HashSet<(u32, u64)> = HashSet::new();
    // Sealed packets: (bytes, ssrc, index, header length, payload).
    let mut made: Vec<(Vec<u8>, u32, u64, usize, Vec<u8>)> = Vec::new();
    let mut out = Vec::new();

    for op in input.ops.iter().take(256) {
        let (packet, genuine) = match op {
            Op::Sealed {
                ssrc,
                step,
                jump,
                csrcs,
                extension,
                pt,
                payload,
            } => {
                let ssrc = SSRCS[usize::from(*ssrc) % SSRCS.len()];
                let base = sent.get(&ssrc).copied().unwrap_or(0);
                let index =
                    (base as i64 + i64::from(*step)).max(0) as u64 + u64::from(*jump) * 4096;
                let index = index.min((1 << 47) - 1);
                let csrcs = usize::from(*csrcs % 16);
                let mut header = vec![
                    0x80 | csrcs as u8 | if extension.is_some() { 0x10 } else { 0 },
                    *pt & 0x7f,
                ];
                header.extend_from_slice(&(index as u16).to_be_bytes());
                header.extend_from_slice(&[0, 0, 3, 0xc0]);
                header.extend_from_slice(&ssrc.to_be_bytes());
                for c in 0..csrcs as u32 {
                    header.extend_from_slice(&(c + 100).to_be_bytes());
                }
                if let Some(words) = extension {
                    let words = &words[..words.len().min(64)];
                    header.extend_from_slice(&[0xbe, 0xde]);
                    header.extend_from_slice(&(words.len() as u16).to_be_bytes());
                    for w in words {
                        header.extend_from_slice(&w.to_be_bytes());
                    }
                }
                let packet = sealer.seal(&header, payload, ssrc, index);
                let s = sent.entry(ssrc).or_insert(index);
                *s = (*s).max(index);
                made.push((packet.clone(), ssrc, index, header.len(), payload.to_vec()));
                (packet, made.len() - 1)
            }
            Op::Again { which, flip, cut } => {
                if made.is_empty() {
                    continue;
                }
                let i = usize::from(*which) % made.len();
                let mut packet = made[i].0.clone();
                let mut changed = false;
                if let Some((at, x)) = flip {
                    if *x != 0 {
                        let at = usize::from(*at) % packet.len();
                        packet[at] ^= x;
                        changed = true;
                    }
                }
                if let Some(len) = cut {
                    let len = usize::from(*len);
                    if len < packet.len() {
                        packet.truncate(len);
                        changed = true;
                    }
                }
                (packet, if changed { usize::MAX } else { i })
            }
            Op::Raw(bytes) => (bytes.to_vec(), usize::MAX),
        };

        let result = receiver.open(&packet, &mut out);
        let Some((_, ssrc, index, header_len, payload)) = made.get(genuine) else {
            // A changed packet or raw bytes: a forgery, as far as the key can tell.
            assert!(
                matches!(
                    result,
                    Err(SrtpError::Auth | SrtpError::Malformed | SrtpError::Replay)
                ),
                "a changed or unsealed packet opened: {result:?}"
            );
            continue;
        };
        let (ssrc, index) = (*ssrc, *index);
        let highest = opened_highest.get(&ssrc).copied();
        match result {
            Ok(()) => {
                assert!(
                    opened.insert((ssrc, index)),
                    "({ssrc}, {index}) opened twice"
                );
                assert_eq!(
                    &out[..*header_len],
                    &packet[..*header_len],
                    "the header as sent"
                );
                assert_eq!(
                    &out[*header_len..],
                    payload.as_slice(),
                    "the payload as sealed"
                );
                if let Some(h) = highest {
                    assert!(
                        index + 64 > h,
                        "({ssrc}, {index}) opened 64 or more behind {h}"
                    );
                }
                let h = opened_highest.entry(ssrc).or_insert(index);
                *h = (*h).max(index);
                assert!(opened_highest.len() <= MAX_SSRCS);
            }
            Err(e) => {
                if let Some(h) = highest {
                    assert!(
                        !(h < index && index <= h + 1000),
                        "({ssrc}, {index}) refused ({e:?}) one to a thousand ahead of {h}"
                    );
                } else if index < 1 << 16 {
                    // A new stream (roll-over counter 0) is refused only past MAX_SSRCS.
                    assert!(
                        e == SrtpError::TooManySsrcs && opened_highest.len() == MAX_SSRCS,
                        "a new stream's first packet ({ssrc}, {index}) refused: {e:?}"
                    );
                }
            }
        }
    }
});
