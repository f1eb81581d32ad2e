//! The Icecast source ingest's Ogg Opus reader (`server/src/broadcast/ogg_reader.rs`) on what a source may
//! send: raw bytes, or pages built from fuzzer-chosen fields with a valid CRC (so that inputs get past the
//! checksum to the page, packet and header logic: continued packets, chained and multiplexed streams,
//! OpusHead / OpusTags of any content, granules, end of stream), then optionally one byte flipped.
//!
//! The bytes are pushed at once and, in a second reader, in fuzzer-chosen pieces (a source's TCP reads):
//! both must give the same items, the same error after them, and the same end result; whole, unchanged
//! pages whose last packet ends are never read as truncated; packets stay within `MAX_PACKET_BYTES`, and no
//! more audio comes out than went in.
#![no_main]

use arbitrary::Arbitrary;
use chorus::fuzzing::{ogg_crc, OggError, OggItem, OggReader, MAX_PACKET_BYTES};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Packet {
    /// OpusHead: version, channels, pre-skip, mapping family, then extra bytes.
    Head {
        version: u8,
        channels: u8,
        pre_skip: u16,
        mapping: u8,
        extra: Vec<u8>,
    },
    /// OpusTags followed by anything.
    Tags(Vec<u8>),
    /// Any bytes, repeated `times` (a large packet spans lacing values of 255, and pages).
    Bytes { data: Vec<u8>, times: u8 },
}

impl Packet {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Packet::Head {
                version,
                channels,
                pre_skip,
                mapping,
                extra,
            } => {
                let mut p = b"OpusHead".to_vec();
                p.extend_from_slice(&[*version, *channels]);
                p.extend_from_slice(&pre_skip.to_le_bytes());
                p.extend_from_slice(&48_000u32.to_le_bytes());
                p.extend_from_slice(&[0, 0, *mapping]);
                p.extend_from_slice(extra);
                p
            }
            Packet::Tags(rest) => [b"OpusTags".as_slice(), rest].concat(),
            Packet::Bytes { data, times } => data.repeat(usize::from(*times % 8) + 1),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Page {
    flags: u8,
    granule: u64,
    /// One of two serial numbers, or any.
    serial: Option<bool>,
    any_serial: u32,
    packets: Vec<Packet>,
    /// The last packet does not end on this page (its last lacing value is dropped if it is 255-aligned,
    /// otherwise a 255 is kept open).
    open_end: bool,
}

impl Page {
    /// Appends the page; whether its last packet ends on it (its last lacing value is below 255).
    fn write(&self, out: &mut Vec<u8>) -> bool {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for (i, p) in self.packets.iter().enumerate() {
            let p = p.bytes();
            let mut laces = vec![255u8; p.len() / 255];
            let last = i + 1 == self.packets.len();
            if !(last && self.open_end) {
                laces.push((p.len() % 255) as u8);
            }
            if lacing.len() + laces.len() > 255 {
                break;
            }
            let take = laces.iter().map(|&l| usize::from(l)).sum::<usize>();
            lacing.extend_from_slice(&laces);
            body.extend_from_slice(&p[..take]);
        }
        let serial = match self.serial {
            Some(true) => 1,
            Some(false) => 2,
            None => self.any_serial,
        };
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0);
        out.push(self.flags);
        out.extend_from_slice(&self.granule.to_le_bytes());
        out.extend_from_slice(&serial.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // page sequence (not checked)
        out.extend_from_slice(&[0; 4]); // CRC, below
        out.push(lacing.len() as u8);
        out.extend_from_slice(&lacing);
        out.extend_from_slice(&body);
        let crc = ogg_crc(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        lacing.last().is_some_and(|&l| l < 255)
    }
}

#[derive(Arbitrary, Debug)]
enum Stream<'a> {
    Raw(&'a [u8]),
    Pages {
        pages: Vec<Page>,
        /// XOR one byte (position modulo the length) with a value.
        flip: Option<(u16, u8)>,
        /// Bytes cut off the end.
        cut: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    stream: Stream<'a>,
    /// Piece sizes for the second reader, used in turn (0 counts as 1).
    pieces: Vec<u8>,
}

/// Takes the reader's items until it has none or stops with an error (which it then repeats).
fn drain(reader: &mut OggReader, out: &mut Vec<Result<OggItem, OggError>>) {
    while let Some(item) = reader.next_item() {
        let stop = item.is_err();
        out.push(item);
        if stop {
            break;
        }
    }
}

fuzz_target!(|input: Input| {
    // Whether the bytes are whole pages, unchanged, the last of which ends its last packet.
    let mut whole_pages = false;
    let bytes = match &input.stream {
        Stream::Raw(b) => b.to_vec(),
        Stream::Pages { pages, flip, cut } => {
            let mut b = Vec::new();
            let mut closed = false;
            for p in pages {
                closed = p.write(&mut b);
            }
            let mut changed = *cut > 0 && !b.is_empty();
            if let (Some((at, x)), false) = (flip, b.is_empty()) {
                let at = usize::from(*at) % b.len();
                b[at] ^= x;
                changed |= *x != 0;
            }
            b.truncate(b.len().saturating_sub(usize::from(*cut)));
            whole_pages = closed && !changed;
            b
        }
    };

    let mut whole = OggReader::default();
    whole.push(&bytes);
    let mut at_once = Vec::new();
    drain(&mut whole, &mut at_once);

    let mut pieces = OggReader::default();
    let mut in_pieces = Vec::new();
    let mut rest = bytes.as_slice();
    let mut sizes = input.pieces.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().map_or(rest.len(), |&s| usize::from(s.max(1)));
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        pieces.push(piece);
        rest = tail;
        // Once it has failed, a reader only repeats its error.
        if !matches!(in_pieces.last(), Some(Err(_))) {
            drain(&mut pieces, &mut in_pieces);
        }
    }
    if !matches!(in_pieces.last(), Some(Err(_))) {
        drain(&mut pieces, &mut in_pieces);
    }

    assert_eq!(
        at_once, in_pieces,
        "the pieces a source's bytes arrive in change nothing"
    );
    assert_eq!(whole.finish(), pieces.finish());
    if whole_pages {
        // Every page is complete and the last packet ended: nothing may be left waiting for more bytes.
        assert_ne!(
            whole.finish(),
            Err(OggError::Truncated),
            "a complete stream read as truncated"
        );
    }
    let mut audio = 0;
    for item in at_once.iter().flatten() {
        if let OggItem::Audio { packet, .. } = item {
            assert!(!packet.is_empty() && packet.len() <= MAX_PACKET_BYTES);
            audio += packet.len();
        }
    }
    assert!(audio <= bytes.len(), "no more audio out than bytes in");
});
