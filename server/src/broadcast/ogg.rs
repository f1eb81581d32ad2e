//! Ogg paging of an Opus stream (RFC 3533 pages, RFC 7845 Ogg Opus): the two header pages (OpusHead,
//! OpusTags) and audio pages of whole 20 ms packets. Written here rather than taken from a crate: a page is
//! a 27-byte header, a segment table and a CRC, and the mount builds each page once as one shared buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Samples per second of every Ogg Opus granule position (RFC 7845 §4).
pub const GRANULE_RATE: u64 = 48_000;

/// The encoder's look-ahead a decoder drops at the start (RFC 7845 §4.2); libopus at 48 kHz uses 312.
pub const PRE_SKIP: u16 = 312;

/// Header type flags (RFC 3533 §6).
const BEGINNING_OF_STREAM: u8 = 0x02;

/// The CRC-32 of Ogg pages: polynomial 0x04c11db7, no reflection, zero initial value and final XOR.
fn crc_table() -> &'static [u32; 256] {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04c1_1db7
                } else {
                    r << 1
                };
            }
            *entry = r;
        }
        table
    })
}

/// The Ogg page checksum (RFC 3533: CRC-32, polynomial 0x04c11db7, no reflection, initial value 0), of a
/// page whose checksum field is zero.
pub fn crc(data: &[u8]) -> u32 {
    let table = crc_table();
    data.iter().fold(0u32, |c, &b| {
        (c << 8) ^ table[((c >> 24) as u8 ^ b) as usize]
    })
}

/// One logical Ogg stream: its serial number and page counter.
#[derive(Debug)]
pub struct OggStream {
    serial: u32,
    sequence: u32,
}

impl OggStream {
    pub fn new(serial: u32) -> Self {
        OggStream {
            serial,
            sequence: 0,
        }
    }

    /// The two header pages (OpusHead, then OpusTags naming `vendor`), as one buffer: what every listener
    /// receives first. Pages 0 and 1 of the stream.
    pub fn header_pages(&mut self, vendor: &str) -> Bytes {
        self.header_pages_with(vendor, &[])
    }

    /// The two header pages, with `comments` (`NAME=value`, RFC 7845 §5.2) in OpusTags.
    pub fn header_pages_with(&mut self, vendor: &str, comments: &[String]) -> Bytes {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels: mono
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&(GRANULE_RATE as u32).to_le_bytes()); // input sample rate
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0
        let mut tags = Vec::with_capacity(16 + vendor.len());
        // A packet larger than a page's 255 segments could not be paged whole: comments past it are cut.
        debug_assert!(
            comments.iter().map(|c| c.len() + 4).sum::<usize>() < 60_000,
            "the recorder's comments are bounded (room name, sids, timestamps)"
        );
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
        for c in comments {
            tags.extend_from_slice(&(c.len() as u32).to_le_bytes());
            tags.extend_from_slice(c.as_bytes());
        }
        let mut out = BytesMut::new();
        self.write_page(&mut out, BEGINNING_OF_STREAM, 0, &[&head]);
        self.write_page(&mut out, 0, 0, &[&tags]);
        out.freeze()
    }

    /// An audio page holding `packets` whole, ending at granule position `granule`.
    pub fn audio_page(&mut self, granule: u64, packets: &[&[u8]]) -> Bytes {
        let mut out = BytesMut::new();
        self.write_page(&mut out, 0, granule, packets);
        out.freeze()
    }

    fn write_page(&mut self, out: &mut BytesMut, flags: u8, granule: u64, packets: &[&[u8]]) {
        let mut lacing = Vec::with_capacity(packets.len() * 2);
        for p in packets {
            // A packet of n bytes is n / 255 segments of 255 and one of n % 255 (0 if n is a multiple).
            lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
            lacing.push((p.len() % 255) as u8);
        }
        debug_assert!(
            lacing.len() <= 255,
            "a page holds at most 255 segments: the mount pages at most 50 packets of at most 1,500 bytes"
        );
        let start = out.len();
        out.put_slice(b"OggS");
        out.put_u8(0); // version
        out.put_u8(flags);
        out.put_u64_le(granule);
        out.put_u32_le(self.serial);
        out.put_u32_le(self.sequence);
        out.put_u32_le(0); // CRC, filled in below
        out.put_u8(lacing.len() as u8);
        out.put_slice(&lacing);
        for p in packets {
            out.put_slice(p);
        }
        let sum = crc(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&sum.to_le_bytes());
        self.sequence = self.sequence.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC of the Ogg specification's own check value ("123456789" gives 0x89a1897f for this variant,
    /// CRC-32/MPEG-2 without its initial value and final XOR).
    #[test]
    fn the_page_crc_is_the_ogg_one() {
        assert_eq!(crc(b"123456789"), 0x89a1_897f);
        assert_eq!(crc(b""), 0);
    }

    #[test]
    fn pages_have_segment_tables_sequence_numbers_and_valid_crcs() {
        let mut s = OggStream::new(0xdead_beef);
        let headers = s.header_pages("chorus");
        assert_eq!(&headers[..4], b"OggS");
        assert_eq!(headers[5], BEGINNING_OF_STREAM);
        let long = vec![7u8; 510];
        let page = s.audio_page(960 * 2, &[&[1, 2, 3], &long]);
        assert_eq!(
            u64::from_le_bytes(page[6..14].try_into().expect("8 bytes")),
            1920
        );
        assert_eq!(
            u32::from_le_bytes(page[18..22].try_into().expect("4 bytes")),
            2,
            "third page"
        );
        // 3 bytes: one segment; 510 bytes: 255, 255, 0.
        assert_eq!(page[26], 4);
        assert_eq!(&page[27..31], &[3, 255, 255, 0]);
        assert_eq!(page.len(), 27 + 4 + 3 + 510);
        let mut zeroed = page.to_vec();
        zeroed[22..26].fill(0);
        assert_eq!(
            crc(&zeroed).to_le_bytes(),
            page[22..26],
            "the CRC covers the page with its CRC field zeroed"
        );
    }
}
