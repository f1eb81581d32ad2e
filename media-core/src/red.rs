//! RFC 2198 redundant audio ("RED", `red/48000/2` wrapping Opus, as Chrome sends it when offered).
//!
//! A RED payload is N redundant block headers (4 bytes each, F = 1: 7-bit payload type, 14-bit timestamp
//! offset, 10-bit length), one primary header (1 byte, F = 0: the payload type), then the block payloads in
//! the same order, the primary last and taking the rest. Parsing uses str0m's strict decoder
//! ([`str0m::rtp::RedDecoder`]: header chaining and lengths are bounds-checked, at most 32 redundant blocks,
//! never a panic); this module adds what Chorus needs on top: the primary must be the stream's Opus payload
//! type, redundant blocks of another codec or with a zero offset are ignored, and a packet can be
//! re-encoded for a subscriber with its own payload types and with redundancy from before a cut-off
//! stripped.

use str0m::rtp::RedDecoder;

/// Largest timestamp offset a redundant block header can carry (14 bits).
pub const MAX_TS_OFFSET: u32 = 0x3fff;

/// Largest redundant block a header can describe (10 bits).
pub const MAX_BLOCK_LEN: usize = 0x3ff;

/// Most redundant blocks written (str0m's decoder refuses more than 32).
const MAX_REDUNDANT: usize = 32;

/// Why a RED payload was refused. Every case is a counted drop for the caller, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    /// Truncated headers, a block longer than the payload, or too many blocks.
    #[error("malformed RED payload")]
    Malformed,
    /// The primary block is not the negotiated Opus payload type.
    #[error("RED primary payload type {found} is not the negotiated Opus payload type {expected}")]
    PrimaryPayloadType { found: u8, expected: u8 },
    /// The primary block is empty.
    #[error("RED payload without primary data")]
    EmptyPrimary,
}

/// One redundant (older) Opus frame in a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedundantFrame<'a> {
    /// How many RTP timestamp units before the primary this frame starts (1..=16383).
    pub ts_offset: u32,
    pub payload: &'a [u8],
}

/// A parsed RED payload: the primary Opus frame and the usable redundant frames, oldest first (wire order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedPayload<'a> {
    pub primary: &'a [u8],
    pub redundant: Vec<RedundantFrame<'a>>,
}

/// Parse a RED payload whose primary must be `opus_pt`. Redundant blocks of another payload type, empty ones
/// and ones with a zero offset (they would duplicate the primary) are left out.
pub fn parse(data: &[u8], opus_pt: u8) -> Result<RedPayload<'_>, RedError> {
    let blocks = RedDecoder::decode(data).map_err(|_| RedError::Malformed)?;
    let mut primary = None;
    let mut redundant = Vec::with_capacity(blocks.len().saturating_sub(1));
    for b in blocks {
        if b.is_primary {
            if b.pt != opus_pt {
                return Err(RedError::PrimaryPayloadType {
                    found: b.pt,
                    expected: opus_pt,
                });
            }
            primary = Some(b.payload);
        } else if b.pt == opus_pt && b.timestamp_offset > 0 && !b.payload.is_empty() {
            redundant.push(RedundantFrame {
                ts_offset: b.timestamp_offset,
                payload: b.payload,
            });
        }
    }
    // The decoder always ends with the primary block; `None` cannot happen but is handled as malformed.
    let primary = primary.ok_or(RedError::Malformed)?;
    if primary.is_empty() {
        return Err(RedError::EmptyPrimary);
    }
    Ok(RedPayload { primary, redundant })
}

/// Encode a RED payload: the redundant frames (oldest first) that `keep` (given each frame's index) accepts and that fit the header
/// fields, all labelled `opus_pt`, then the primary. Appends to `out`. At most 32 redundant frames are
/// written (what [`parse`] accepts); later ones are left out.
pub fn encode(
    opus_pt: u8,
    primary: &[u8],
    redundant: &[RedundantFrame<'_>],
    mut keep: impl FnMut(usize, &RedundantFrame<'_>) -> bool,
    out: &mut Vec<u8>,
) {
    let pt = opus_pt & 0x7f;
    // Bit i: frame i is written.
    let mut kept: u32 = 0;
    for (i, f) in redundant.iter().enumerate().take(MAX_REDUNDANT) {
        if f.ts_offset == 0
            || f.ts_offset > MAX_TS_OFFSET
            || f.payload.len() > MAX_BLOCK_LEN
            || !keep(i, f)
        {
            continue;
        }
        kept |= 1 << i;
        let len = f.payload.len() as u32;
        out.push(0x80 | pt);
        out.push((f.ts_offset >> 6) as u8);
        out.push((((f.ts_offset & 0x3f) << 2) | (len >> 8)) as u8);
        out.push((len & 0xff) as u8);
    }
    out.push(pt);
    for (i, f) in redundant.iter().enumerate().take(MAX_REDUNDANT) {
        if kept & (1 << i) != 0 {
            out.extend_from_slice(f.payload);
        }
    }
    out.extend_from_slice(primary);
}

/// RTP timestamp of a redundant frame carried in a packet with timestamp `primary_ts`.
pub fn frame_ts(primary_ts: u32, frame: &RedundantFrame<'_>) -> u32 {
    primary_ts.wrapping_sub(frame.ts_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<RedundantFrame<'static>> {
        vec![
            RedundantFrame {
                ts_offset: 1920,
                payload: &[1, 1, 1],
            },
            RedundantFrame {
                ts_offset: 960,
                payload: &[2, 2],
            },
        ]
    }

    #[test]
    fn encode_round_trips_through_str0m_and_our_parser() {
        let mut out = Vec::new();
        encode(111, &[9, 9, 9, 9], &frames(), |_, _| true, &mut out);
        let blocks = RedDecoder::decode(&out).expect("str0m parses our encoding");
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].timestamp_offset, 1920);
        assert_eq!(blocks[0].payload, &[1, 1, 1]);
        assert_eq!(blocks[1].payload, &[2, 2]);
        assert!(blocks[2].is_primary && blocks[2].pt == 111);
        let parsed = parse(&out, 111).expect("parses");
        assert_eq!(parsed.primary, &[9, 9, 9, 9]);
        assert_eq!(parsed.redundant, frames());
    }

    #[test]
    fn encode_relabels_payload_types_and_strips_what_keep_refuses() {
        let mut out = Vec::new();
        encode(109, &[9], &frames(), |_, f| f.ts_offset < 1000, &mut out);
        let parsed = parse(&out, 109).expect("parses with the new payload type");
        assert_eq!(parsed.redundant.len(), 1);
        assert_eq!(parsed.redundant[0].payload, &[2, 2]);
        // Keeping nothing leaves a one-byte header and the primary.
        out.clear();
        encode(109, &[9, 8], &frames(), |_, _| false, &mut out);
        assert_eq!(out, vec![109, 9, 8]);
    }

    #[test]
    fn encode_skips_blocks_that_do_not_fit_the_header_fields() {
        let big = vec![7u8; MAX_BLOCK_LEN + 1];
        let frames = [
            RedundantFrame {
                ts_offset: MAX_TS_OFFSET + 1,
                payload: &[1],
            },
            RedundantFrame {
                ts_offset: 960,
                payload: &big,
            },
            RedundantFrame {
                ts_offset: 480,
                payload: &[3],
            },
        ];
        let mut out = Vec::new();
        encode(111, &[9], &frames, |_, _| true, &mut out);
        let parsed = parse(&out, 111).expect("parses");
        assert_eq!(
            parsed.redundant,
            vec![RedundantFrame {
                ts_offset: 480,
                payload: &[3]
            }]
        );
    }

    #[test]
    fn a_primary_of_another_codec_or_empty_is_refused() {
        let mut out = Vec::new();
        encode(0, &[9], &[], |_, _| true, &mut out);
        assert_eq!(
            parse(&out, 111),
            Err(RedError::PrimaryPayloadType {
                found: 0,
                expected: 111
            })
        );
        assert_eq!(parse(&[111], 111), Err(RedError::EmptyPrimary));
    }

    #[test]
    fn redundant_blocks_of_another_codec_or_zero_offset_are_ignored() {
        // Block 1: PT 0 (PCMU), offset 960, len 1; block 2: PT 111, offset 0, len 1; primary PT 111.
        let data = [0x80, 15, 0, 1, 0x80 | 111, 0, 0, 1, 111, 5, 6, 7];
        let parsed = parse(&data, 111).expect("parses");
        assert!(parsed.redundant.is_empty());
        assert_eq!(parsed.primary, &[7]);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let cases: [&[u8]; 6] = [
            &[],
            &[0x80 | 111],
            &[0x80 | 111, 15, 0],
            // A block claiming 3 bytes with only 1 after the headers.
            &[0x80 | 111, 15, 0, 3, 111, 1],
            // Only redundant headers, no primary header.
            &[0x80 | 111, 15, 0, 0, 0x80 | 111, 15, 0, 0],
            &[0xff; 200],
        ];
        for data in cases {
            assert!(parse(data, 111).is_err(), "{data:?}");
        }
        // Every prefix and a deterministic spray of byte patterns: errors or values, never a panic.
        let mut good = Vec::new();
        encode(111, &[9, 9, 9], &frames(), |_, _| true, &mut good);
        for n in 0..good.len() {
            let _ = parse(&good[..n], 111);
        }
        let mut rng = crate::testkit::sim::Rng::new(7);
        for _ in 0..5000 {
            let len = (rng.next_u64() % 40) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Ok(p) = parse(&data, 111) {
                assert!(!p.primary.is_empty());
                assert!(p.redundant.iter().all(|f| f.ts_offset > 0));
            }
        }
    }

    #[test]
    fn frame_timestamps_wrap() {
        let f = RedundantFrame {
            ts_offset: 960,
            payload: &[1],
        };
        assert_eq!(frame_ts(100, &f), 100u32.wrapping_sub(960));
    }
}
