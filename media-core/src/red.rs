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

use std::sync::Arc;

use str0m::rtp::RedDecoder;

use crate::ids::Ssrc;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// How many frames back the server's own redundancy reaches ([`History`]).
pub const HISTORY_FRAMES: usize = 2;

/// A stream's last frames as the server received them, for redundancy the server adds where the sender
/// sent none: a forwarded speaker's plain Opus goes to a subscriber that negotiated RED with its previous
/// frames (as Chrome's RED carries one), so a loss on the subscriber's own leg is bridged too.
///
/// Only frames that run without a gap into the packet's own are redundancy: a DTX frame (an Opus packet
/// of at most [`DTX_FRAME_MAX_BYTES`]), and any frame before a DTX gap, is not. Firefox sends a one-byte
/// DTX frame every 400 ms of a pause; carried as redundancy with the speech after it, frames across
/// the gap made Chromium accelerate its playout by ≈ 0.5 s over three loops and garbled it
/// (firefox.test.js, PESQ-WB 2.85 against 4.00 without the redundancy).
#[derive(Clone, Debug, Default)]
pub struct History {
    source: Option<Ssrc>,
    /// Newest first.
    frames: [Option<KeptFrame>; HISTORY_FRAMES],
}

/// Whether `frames` (oldest first, as carried by a packet with timestamp `ts`) run without a gap into the
/// packet: each a valid Opus packet that is not a DTX frame, ending where the next begins.
fn runs_into(frames: &[RedundantFrame<'_>], ts: u32) -> bool {
    let mut ends = ts;
    frames.iter().rev().all(|f| {
        let starts = frame_ts(ts, f);
        let samples = crate::mixer::opus_packet_info(f.payload).map_or(0, |(n, _)| n);
        let ok = is_speech_frame(samples, f.payload.len()) && starts.wrapping_add(samples) == ends;
        ends = starts;
        ok
    })
}

/// The largest Opus packet taken for a DTX frame (libopus writes a TOC byte alone, some encoders two).
pub const DTX_FRAME_MAX_BYTES: usize = 2;

/// Whether an Opus packet of `samples` (0: not valid Opus) and `len` bytes may be redundancy: valid, and
/// not a DTX frame.
fn is_speech_frame(samples: u32, len: usize) -> bool {
    samples > 0 && len > DTX_FRAME_MAX_BYTES
}

/// A frame in a [`History`].
#[derive(Clone, Debug)]
struct KeptFrame {
    /// Extended sequence number.
    seq: u64,
    /// RTP timestamp of its first sample.
    ts: u32,
    /// Its duration in RTP units (0: not a valid Opus packet, never redundancy).
    samples: u32,
    payload: Arc<[u8]>,
}

impl History {
    /// The stored frames that may travel as redundancy with packet `seq` (timestamp `ts`) of `source`,
    /// oldest first, besides the frames the packet itself `carries` (a RED speaker's redundancy, oldest
    /// first, one frame per packet before it; empty for plain Opus): those of the same source, older
    /// than the oldest carried one, that run without a gap into it (each frame ends where the next
    /// begins, their packets in sequence), none of them a DTX frame. Only where the carried frames run
    /// into the packet the same way: a RED speaker's redundancy from across a pause (libwebrtc's reaches
    /// back over one) gets nothing older added. Returns the frames and how many of them are set.
    pub fn redundancy(
        &self,
        source: Ssrc,
        seq: u64,
        ts: u32,
        carries: &[RedundantFrame<'_>],
    ) -> ([RedundantFrame<'_>; HISTORY_FRAMES], usize) {
        let mut out = [RedundantFrame::default(); HISTORY_FRAMES];
        if self.source != Some(source) || !runs_into(carries, ts) {
            return (out, 0);
        }
        // Where the packet's audio, with what it carries, starts; and the sequence number of the frame
        // that must end there.
        let mut starts = carries.first().map_or(ts, |f| frame_ts(ts, f));
        let Some(mut expect_seq) = seq.checked_sub(carries.len() as u64 + 1) else {
            return (out, 0);
        };
        // Newest first, while the chain back from the packet holds; frames the packet carries (newer
        // than the one expected) are skipped.
        let mut chain = [None; HISTORY_FRAMES];
        let mut n = 0;
        for f in self.frames.iter() {
            let Some(f) = f else { break };
            if f.seq > expect_seq {
                continue;
            }
            // Contiguous frames of at most 120 ms each (`opus_packet_info`) put the oldest kept one at
            // most 240 ms before what the packet carries: within a block header's offset as long as
            // that is (`encode` leaves out a frame that does not fit).
            let contiguous = f.seq == expect_seq
                && is_speech_frame(f.samples, f.payload.len())
                && f.ts.wrapping_add(f.samples) == starts;
            if !contiguous {
                break;
            }
            chain[n] = Some(f);
            n += 1;
            starts = f.ts;
            expect_seq = expect_seq.wrapping_sub(1);
        }
        for (slot, f) in out.iter_mut().zip(chain[..n].iter().rev().flatten()) {
            *slot = RedundantFrame {
                ts_offset: ts.wrapping_sub(f.ts),
                payload: &f.payload[..],
            };
        }
        (out, n)
    }

    /// Keep packet `seq` of `source` as the newest frame: a new source starts afresh; a packet that is not
    /// newer than the newest kept (reordered, duplicated) changes nothing.
    pub fn push(&mut self, source: Ssrc, seq: u64, ts: u32, payload: &Arc<[u8]>) {
        if self.source != Some(source) {
            *self = History {
                source: Some(source),
                ..History::default()
            };
        } else if self.frames[0].as_ref().is_some_and(|f| seq <= f.seq) {
            return;
        }
        let samples = crate::mixer::opus_packet_info(payload).map_or(0, |(n, _)| n);
        self.frames.rotate_right(1);
        self.frames[0] = Some(KeptFrame {
            seq,
            ts,
            samples,
            payload: payload.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms Opus frame (TOC 0x78: hybrid, full band, one frame) marked by `byte`.
    fn frame(byte: u8) -> Arc<[u8]> {
        Arc::from(vec![0x78, byte, byte])
    }

    #[test]
    fn history_gives_the_last_two_frames_of_the_source_oldest_first() {
        let mut h = History::default();
        assert_eq!(h.redundancy(Ssrc(7), 10, 9600, &[]).1, 0);
        h.push(Ssrc(7), 10, 9600, &frame(1));
        h.push(Ssrc(7), 11, 10560, &frame(2));
        let (frames, n) = h.redundancy(Ssrc(7), 12, 11520, &[]);
        assert_eq!(n, 2);
        assert_eq!(
            (frames[0].ts_offset, frames[0].payload),
            (1920, &frame(1)[..])
        );
        assert_eq!(
            (frames[1].ts_offset, frames[1].payload),
            (960, &frame(2)[..])
        );
        // Another source's packet gets nothing of this one's, and starts a history of its own.
        assert_eq!(h.redundancy(Ssrc(8), 12, 11520, &[]).1, 0);
        h.push(Ssrc(8), 500, 0, &frame(9));
        assert_eq!(h.redundancy(Ssrc(7), 12, 11520, &[]).1, 0);
        assert_eq!(h.redundancy(Ssrc(8), 501, 960, &[]).1, 1);
    }

    #[test]
    fn history_gives_only_frames_that_run_into_the_packet_without_a_gap() {
        let mut h = History::default();
        h.push(Ssrc(7), 10, 9600, &frame(1));
        h.push(Ssrc(7), 11, 10560, &frame(2));
        // A lost packet in between: the chain is broken at once.
        assert_eq!(h.redundancy(Ssrc(7), 13, 12480, &[]).1, 0);
        // A DTX gap (the next packet in sequence, 100 ms later): nothing from before it.
        assert_eq!(h.redundancy(Ssrc(7), 12, 10560 + 960 + 4800, &[]).1, 0);
        // A DTX frame is never redundancy, nor anything before it.
        h.push(Ssrc(7), 12, 11520, &Arc::from(vec![0x78]));
        assert_eq!(h.redundancy(Ssrc(7), 13, 12480, &[]).1, 0);
        h.push(Ssrc(7), 13, 12480, &frame(4));
        let (frames, n) = h.redundancy(Ssrc(7), 14, 13440, &[]);
        assert_eq!((n, frames[0].payload), (1, &frame(4)[..]));
        // Not Opus: no duration, no redundancy.
        h.push(Ssrc(7), 14, 13440, &Arc::from(vec![0xff, 0xff, 0xff]));
        assert_eq!(h.redundancy(Ssrc(7), 15, 14400, &[]).1, 0);
    }

    #[test]
    fn history_reaches_back_from_what_a_red_packet_carries() {
        let mut h = History::default();
        h.push(Ssrc(7), 10, 9600, &frame(1));
        h.push(Ssrc(7), 11, 10560, &frame(2));
        h.push(Ssrc(7), 12, 11520, &frame(3));
        // Packet 13 carries frame 12 itself: the history adds 11 and 10 before it, not 12 again.
        let carries = [RedundantFrame {
            ts_offset: 960,
            payload: &frame(3)[..],
        }];
        let (frames, n) = h.redundancy(Ssrc(7), 13, 12480, &carries);
        assert_eq!(n, 1, "two frames kept: 12 (carried) and 11");
        assert_eq!(
            (frames[0].ts_offset, frames[0].payload),
            (1920, &frame(2)[..])
        );
        // Packet 12 lost on the way in: packet 13's own redundancy bridges it, and the history's 11 and
        // 10 run into that.
        let mut h = History::default();
        h.push(Ssrc(7), 10, 9600, &frame(1));
        h.push(Ssrc(7), 11, 10560, &frame(2));
        let (frames, n) = h.redundancy(Ssrc(7), 13, 12480, &carries);
        assert_eq!(n, 2);
        assert_eq!((frames[0].ts_offset, frames[1].ts_offset), (2880, 1920));
        // What the packet carries is from before a pause (the packet 100 ms after it): nothing older.
        let across_pause = [RedundantFrame {
            ts_offset: 960 + 4800,
            payload: &frame(3)[..],
        }];
        assert_eq!(h.redundancy(Ssrc(7), 13, 12480 + 4800, &across_pause).1, 0);
        // What the packet carries starts after a gap: nothing from before it.
        let after_gap = [RedundantFrame {
            ts_offset: 960,
            payload: &frame(3)[..],
        }];
        assert_eq!(h.redundancy(Ssrc(7), 13, 12480 + 4800, &after_gap).1, 0);
        // Two carried frames, 11 and 12 lost on the way in: 10 runs into the older one.
        let two = [
            RedundantFrame {
                ts_offset: 1920,
                payload: &frame(2)[..],
            },
            RedundantFrame {
                ts_offset: 960,
                payload: &frame(3)[..],
            },
        ];
        let mut h = History::default();
        h.push(Ssrc(7), 10, 9600, &frame(1));
        let (frames, n) = h.redundancy(Ssrc(7), 13, 12480, &two);
        assert_eq!((n, frames[0].ts_offset), (1, 2880));
    }

    #[test]
    fn history_ignores_late_packets_and_wraps_with_the_timestamp() {
        let mut h = History::default();
        h.push(Ssrc(7), 10, 9600, &frame(1));
        h.push(Ssrc(7), 11, 10560, &frame(2));
        // A reordered or duplicated packet is not kept, and gets no frame from its future.
        h.push(Ssrc(7), 10, 9600, &frame(3));
        h.push(Ssrc(7), 9, 8640, &frame(4));
        let (frames, n) = h.redundancy(Ssrc(7), 12, 11520, &[]);
        assert_eq!((n, frames[1].payload), (2, &frame(2)[..]));
        assert_eq!(h.redundancy(Ssrc(7), 10, 9600, &[]).1, 0);
        let mut h = History::default();
        h.push(Ssrc(7), 10, u32::MAX - 100, &frame(1));
        let (frames, n) = h.redundancy(Ssrc(7), 11, 859, &[]);
        assert_eq!((n, frames[0].ts_offset), (1, 960));
    }

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
