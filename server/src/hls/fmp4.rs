//! Fragmented MP4 (ISO/IEC 14496-12) with Opus, per "Encapsulation of Opus in ISO Base Media File Format"
//! (opus-codec.org, v0.8.1): the init segment (`ftyp`, `moov` with an `Opus` sample entry and its `dOps`,
//! `mvex`) and media fragments (`moof` + `mdat`) of whole 20 ms packets.
//!
//! Written here rather than taken from a crate: the boxes a single Opus track needs are a dozen fixed
//! layouts, each tested byte for byte below, and a fragment is built once per segment as one shared buffer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::broadcast::ogg::{GRANULE_RATE, PRE_SKIP};

/// The track's timescale: Opus runs at 48 kHz whatever the input (the spec's recommendation).
pub const TIMESCALE: u32 = GRANULE_RATE as u32;

/// Samples in one 20 ms packet at [`TIMESCALE`].
pub const FRAME_SAMPLES: u32 = 960;

/// The only track.
const TRACK_ID: u32 = 1;

/// The mix is mono (the broadcast encode's channel count, as in the Ogg mount's OpusHead).
const CHANNELS: u8 = 1;

/// The unity matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// `tfhd` flags: default-sample-duration present, default-base-is-moof.
const TFHD_FLAGS: u32 = 0x00_0008 | 0x02_0000;
/// `trun` flags: data-offset present, sample-size present.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0200;

/// A box: its size and type, then what `body` writes.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0); // size, filled in below
    out.put_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("a box of one segment is far below 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box with a version and 24 bits of flags first.
fn full_box(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    boxed(out, kind, |out| {
        out.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(out);
    });
}

fn matrix(out: &mut BytesMut) {
    for m in MATRIX {
        out.put_u32(m);
    }
}

/// The `dOps` box (the spec's §4.3.2): version 0, mono, the pre-skip and input rate of the Ogg mount's
/// OpusHead, no output gain, channel mapping family 0 (no mapping table).
fn dops(out: &mut BytesMut) {
    boxed(out, b"dOps", |out| {
        out.put_u8(0); // Version
        out.put_u8(CHANNELS); // OutputChannelCount
        out.put_u16(PRE_SKIP);
        out.put_u32(TIMESCALE); // InputSampleRate
        out.put_i16(0); // OutputGain
        out.put_u8(0); // ChannelMappingFamily
    });
}

/// The `Opus` sample entry (the spec's §4.3.1): an AudioSampleEntry with `dOps`.
fn opus_sample_entry(out: &mut BytesMut) {
    boxed(out, b"Opus", |out| {
        out.put_bytes(0, 6); // reserved
        out.put_u16(1); // data_reference_index
        out.put_bytes(0, 8); // reserved
        out.put_u16(u16::from(CHANNELS)); // channelcount: OutputChannelCount
        out.put_u16(16); // samplesize
        out.put_u16(0); // pre_defined
        out.put_u16(0); // reserved
        out.put_u32(TIMESCALE << 16); // samplerate, 16.16
        dops(out);
    });
}

/// The init segment (`EXT-X-MAP`): the same bytes for every stream of this server.
pub fn init_segment() -> Bytes {
    let mut out = BytesMut::with_capacity(640);
    boxed(&mut out, b"ftyp", |out| {
        out.put_slice(b"iso6"); // major brand
        out.put_u32(0); // minor version
        out.put_slice(b"iso6");
        out.put_slice(b"mp41");
    });
    boxed(&mut out, b"moov", |out| {
        full_box(out, b"mvhd", 0, 0, |out| {
            out.put_u32(0); // creation_time
            out.put_u32(0); // modification_time
            out.put_u32(TIMESCALE);
            out.put_u32(0); // duration: unknown (fragmented)
            out.put_u32(0x0001_0000); // rate 1.0
            out.put_u16(0x0100); // volume 1.0
            out.put_bytes(0, 10); // reserved
            matrix(out);
            out.put_bytes(0, 24); // pre_defined
            out.put_u32(TRACK_ID + 1); // next_track_ID
        });
        boxed(out, b"trak", |out| {
            // Flags: track enabled, in movie.
            full_box(out, b"tkhd", 0, 0x3, |out| {
                out.put_u32(0); // creation_time
                out.put_u32(0); // modification_time
                out.put_u32(TRACK_ID);
                out.put_u32(0); // reserved
                out.put_u32(0); // duration
                out.put_bytes(0, 8); // reserved
                out.put_u16(0); // layer
                out.put_u16(0); // alternate_group
                out.put_u16(0x0100); // volume 1.0 (audio)
                out.put_u16(0); // reserved
                matrix(out);
                out.put_u32(0); // width
                out.put_u32(0); // height
            });
            boxed(out, b"mdia", |out| {
                full_box(out, b"mdhd", 0, 0, |out| {
                    out.put_u32(0); // creation_time
                    out.put_u32(0); // modification_time
                    out.put_u32(TIMESCALE);
                    out.put_u32(0); // duration
                    out.put_u16(0x55c4); // language "und", ISO-639-2/T packed
                    out.put_u16(0); // pre_defined
                });
                full_box(out, b"hdlr", 0, 0, |out| {
                    out.put_u32(0); // pre_defined
                    out.put_slice(b"soun");
                    out.put_bytes(0, 12); // reserved
                    out.put_slice(b"SoundHandler\0");
                });
                boxed(out, b"minf", |out| {
                    full_box(out, b"smhd", 0, 0, |out| {
                        out.put_u16(0); // balance
                        out.put_u16(0); // reserved
                    });
                    boxed(out, b"dinf", |out| {
                        full_box(out, b"dref", 0, 0, |out| {
                            out.put_u32(1); // entry_count
                                            // Flag 1: the media is in this file.
                            full_box(out, b"url ", 0, 1, |_| {});
                        });
                    });
                    boxed(out, b"stbl", |out| {
                        full_box(out, b"stsd", 0, 0, |out| {
                            out.put_u32(1); // entry_count
                            opus_sample_entry(out);
                        });
                        // No samples in the movie: they are all in fragments.
                        full_box(out, b"stts", 0, 0, |out| out.put_u32(0));
                        full_box(out, b"stsc", 0, 0, |out| out.put_u32(0));
                        full_box(out, b"stsz", 0, 0, |out| {
                            out.put_u32(0); // sample_size
                            out.put_u32(0); // sample_count
                        });
                        full_box(out, b"stco", 0, 0, |out| out.put_u32(0));
                    });
                });
            });
        });
        boxed(out, b"mvex", |out| {
            full_box(out, b"trex", 0, 0, |out| {
                out.put_u32(TRACK_ID);
                out.put_u32(1); // default_sample_description_index
                out.put_u32(FRAME_SAMPLES); // default_sample_duration
                out.put_u32(0); // default_sample_size
                out.put_u32(0); // default_sample_flags: every Opus packet is a sync sample
            });
        });
    });
    out.freeze()
}

/// One media fragment: `moof` (sequence number `sequence`, decode time `decode_time` in 48 kHz samples,
/// one 20 ms sample per packet) and the `mdat` holding `packets`.
pub fn fragment(sequence: u32, decode_time: u64, packets: &[&[u8]]) -> Bytes {
    let payload: usize = packets.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(100 + 4 * packets.len() + 8 + payload);
    let count = u32::try_from(packets.len()).expect("a segment holds at most 500 packets");
    boxed(&mut out, b"moof", |out| {
        full_box(out, b"mfhd", 0, 0, |out| out.put_u32(sequence));
        boxed(out, b"traf", |out| {
            full_box(out, b"tfhd", 0, TFHD_FLAGS, |out| {
                out.put_u32(TRACK_ID);
                out.put_u32(FRAME_SAMPLES); // default_sample_duration
            });
            // Version 1: a 64-bit decode time (the timeline counts from the Unix epoch, see `segmenter`).
            full_box(out, b"tfdt", 1, 0, |out| out.put_u64(decode_time));
            full_box(out, b"trun", 0, TRUN_FLAGS, |out| {
                out.put_u32(count);
                out.put_u32(0); // data_offset, filled in below
                for p in packets {
                    out.put_u32(p.len() as u32);
                }
            });
        });
    });
    // The first sample's offset from the start of `moof` (default-base-is-moof): past `moof` and the
    // `mdat` header. `trun`'s data_offset is the last 4 bytes before its sample sizes.
    let moof = out.len();
    let data_offset = (moof + 8) as u32;
    let at = moof - 4 * packets.len() - 4;
    out[at..at + 4].copy_from_slice(&data_offset.to_be_bytes());
    let mdat = u32::try_from(8 + payload).expect("a segment's audio is far below 4 GiB");
    out.put_u32(mdat);
    out.put_slice(b"mdat");
    for p in packets {
        out.put_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hex of `s` with spaces and newlines ignored.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|d| {
                u8::from_str_radix(std::str::from_utf8(d).expect("ASCII"), 16).expect("hex digits")
            })
            .collect()
    }

    /// The box of type `kind` at the top level of `data` or inside the boxes on `path`.
    fn find<'a>(mut data: &'a [u8], path: &[&[u8; 4]]) -> &'a [u8] {
        for (depth, kind) in path.iter().enumerate() {
            loop {
                assert!(
                    data.len() >= 8,
                    "{:?} not found",
                    std::str::from_utf8(*kind)
                );
                let size = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
                if &data[4..8] == *kind {
                    let b = &data[..size];
                    // Descend: a container's children start after its header; the sample entry's after
                    // its 28 bytes of fields; stsd's and dref's after version, flags and count.
                    data = match (depth + 1 < path.len(), *kind) {
                        (false, _) => return b,
                        (true, b"Opus") => &b[36..],
                        (true, b"stsd") | (true, b"dref") => &b[16..],
                        (true, _) => &b[8..],
                    };
                    break;
                }
                data = &data[size..];
            }
        }
        unreachable!("a non-empty path returns from its last step")
    }

    #[test]
    fn dops_is_the_specs_layout() {
        let mut out = BytesMut::new();
        dops(&mut out);
        // size 19, "dOps", version 0, 1 channel, pre-skip 312, 48000 Hz, gain 0, family 0.
        assert_eq!(
            &out[..],
            &hex("00000013 644f7073 00 01 0138 0000bb80 0000 00")[..]
        );
    }

    #[test]
    fn the_opus_sample_entry_is_an_audio_sample_entry_with_dops() {
        let mut out = BytesMut::new();
        opus_sample_entry(&mut out);
        let expected = hex("00000037 4f707573
             000000000000 0001
             0000000000000000
             0001 0010 0000 0000 bb800000");
        assert_eq!(&out[..36], &expected[..]);
        assert_eq!(
            &out[36..],
            &hex("00000013 644f7073 00 01 0138 0000bb80 0000 00")[..]
        );
    }

    #[test]
    fn the_init_segment_boxes_are_byte_exact() {
        let init = init_segment();
        assert_eq!(
            find(&init, &[b"ftyp"]),
            &hex("00000018 66747970 69736f36 00000000 69736f36 6d703431")[..]
        );
        let mvhd = find(&init, &[b"moov", b"mvhd"]);
        assert_eq!(mvhd.len(), 108);
        assert_eq!(
            &mvhd[..28],
            &hex("0000006c 6d766864 00000000 00000000 00000000 0000bb80 00000000")[..]
        );
        assert_eq!(&mvhd[28..32], &hex("00010000")[..], "rate 1.0");
        assert_eq!(&mvhd[32..34], &hex("0100")[..], "volume 1.0");
        assert_eq!(&mvhd[104..], &hex("00000002")[..], "next track 2");
        let tkhd = find(&init, &[b"moov", b"trak", b"tkhd"]);
        assert_eq!(tkhd.len(), 92);
        assert_eq!(
            &tkhd[..24],
            &hex("0000005c 746b6864 00000003 00000000 00000000 00000001")[..]
        );
        assert_eq!(
            &tkhd[40..48],
            &hex("0000 0000 0100 0000")[..],
            "layer, group 0, volume 1.0"
        );
        assert_eq!(
            find(&init, &[b"moov", b"trak", b"mdia", b"mdhd"]),
            &hex("00000020 6d646864 00000000 00000000 00000000 0000bb80 00000000 55c40000")[..]
        );
        assert_eq!(
            find(&init, &[b"moov", b"trak", b"mdia", b"hdlr"]),
            &hex(
                "0000002d 68646c72 00000000 00000000 736f756e 000000000000000000000000
                 536f756e6448616e646c657200"
            )[..]
        );
        assert_eq!(
            find(&init, &[b"moov", b"trak", b"mdia", b"minf", b"smhd"]),
            &hex("00000010 736d6864 00000000 00000000")[..]
        );
        assert_eq!(
            find(&init, &[b"moov", b"trak", b"mdia", b"minf", b"dinf"]),
            &hex(
                "00000024 64696e66 0000001c 64726566 00000000 00000001 0000000c 75726c20 00000001"
            )[..]
        );
        let stbl = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];
        let dops = find(
            &init,
            &[
                stbl[0], stbl[1], stbl[2], stbl[3], stbl[4], b"stsd", b"Opus", b"dOps",
            ],
        );
        assert_eq!(
            dops,
            &hex("00000013 644f7073 00 01 0138 0000bb80 0000 00")[..]
        );
        assert_eq!(
            &find(
                &init,
                &[stbl[0], stbl[1], stbl[2], stbl[3], stbl[4], b"stsd"]
            )[..16],
            &hex("00000047 73747364 00000000 00000001")[..]
        );
        for (kind, expected) in [
            (b"stts", "00000010 73747473 00000000 00000000"),
            (b"stsc", "00000010 73747363 00000000 00000000"),
            (b"stsz", "00000014 7374737a 00000000 00000000 00000000"),
            (b"stco", "00000010 7374636f 00000000 00000000"),
        ] {
            let b = find(&init, &[stbl[0], stbl[1], stbl[2], stbl[3], stbl[4], kind]);
            assert_eq!(b, &hex(expected)[..]);
        }
        assert_eq!(
            find(&init, &[b"moov", b"mvex", b"trex"]),
            &hex("00000020 74726578 00000000 00000001 00000001 000003c0 00000000 00000000")[..]
        );
        // ftyp, then moov, nothing else.
        let moov = find(&init, &[b"moov"]);
        assert_eq!(init.len(), 24 + moov.len());
    }

    #[test]
    fn a_fragment_is_moof_then_mdat_with_the_data_offset_at_the_first_sample() {
        let a = [0xf8u8, 0xff, 0xfe];
        let b = [1u8, 2, 3, 4, 5];
        let f = fragment(7, 0x1_0000_0002, &[&a, &b]);
        let expected = hex("00000064 6d6f6f66
               00000010 6d666864 00000000 00000007
               0000004c 74726166
                 00000014 74666864 00020008 00000001 000003c0
                 00000014 74666474 01000000 00000001 00000002
                 0000001c 7472756e 00000201 00000002 0000006c 00000003 00000005
             00000010 6d646174 f8fffe 0102030405");
        assert_eq!(&f[..], &expected[..]);
        // data_offset 0x6c = 108: moof (100) + the mdat header (8), where the first packet starts.
        assert_eq!(&f[108..111], &a);
    }
}
