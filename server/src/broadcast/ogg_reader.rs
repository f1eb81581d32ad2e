//! Reading an Ogg Opus stream (RFC 3533 pages, RFC 7845 Ogg Opus) from bytes as they arrive: pages found by
//! their capture pattern and checked by their CRC (the one in `ogg.rs`), packets joined across pages, the
//! OpusHead and OpusTags headers checked, and each audio packet handed out with the granule position of
//! the page that completed it. Used by the Icecast source ingest, relayed mounts and the playout of Ogg files;
//! every malformation is a typed error. Fuzzed by `fuzz/fuzz_targets/ogg_reader.rs`.

use super::ogg::crc;

/// The largest page: 27-byte header, 255 lacing values, 255 segments of 255 bytes.
const MAX_PAGE: usize = 27 + 255 + 255 * 255;
/// The largest packet kept (OpusTags may carry cover art; an Opus packet is far smaller): beyond it the
/// stream is refused rather than buffered.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

const CONTINUED: u8 = 0x01;
const BEGINNING_OF_STREAM: u8 = 0x02;
const END_OF_STREAM: u8 = 0x04;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OggError {
    #[error("not an Ogg stream (no OggS capture pattern where a page must begin)")]
    NotOgg,
    #[error("Ogg page version {0} (only 0 exists)")]
    Version(u8),
    #[error("Ogg page CRC mismatch (corrupt or truncated page)")]
    Crc,
    #[error("a packet is larger than {MAX_PACKET_BYTES} bytes")]
    PacketTooLarge,
    #[error("the stream is {0}, not Opus: send Ogg/Opus (ffmpeg: -c:a libopus -f ogg)")]
    NotOpus(String),
    #[error("Opus with {0} channels: send mono or stereo (mapping family 0)")]
    Channels(u8),
    #[error("OpusHead version {0} is not supported")]
    OpusVersion(u8),
    #[error("the second header packet is not OpusTags")]
    NoTags,
    #[error("more than one logical stream at once (multiplexed Ogg); send audio only")]
    Multiplexed,
    #[error("an Opus packet is malformed")]
    BadPacket,
    #[error("the stream ended inside a page")]
    Truncated,
}

impl OggError {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            OggError::NotOgg | OggError::Version(_) => "not_ogg",
            OggError::Crc => "crc",
            OggError::PacketTooLarge => "packet_too_large",
            OggError::NotOpus(_) | OggError::Channels(_) | OggError::OpusVersion(_) => "not_opus",
            OggError::NoTags => "no_tags",
            OggError::Multiplexed => "multiplexed",
            OggError::BadPacket => "bad_packet",
            OggError::Truncated => "truncated",
        }
    }
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum OggItem {
    /// A logical stream began and both its headers (OpusHead, OpusTags) are valid Opus (a chained
    /// stream's next link too).
    Headers { channels: u8, pre_skip: u16 },
    /// One Opus audio packet; `granule` is the granule position of the page that completed it and `last`
    /// whether it is the last packet completed on that page (RFC 7845 §4: the granule is the end of that
    /// last packet).
    Audio {
        packet: Vec<u8>,
        granule: Option<u64>,
        last: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a beginning-of-stream page with OpusHead.
    Head,
    /// OpusHead seen (its channels and pre-skip): the next packet must be OpusTags.
    Tags {
        channels: u8,
        pre_skip: u16,
    },
    Audio,
}

/// An incremental Ogg Opus reader: [`OggReader::push`] bytes, then take items with [`OggReader::next_item`].
#[derive(Debug)]
pub struct OggReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    state: State,
    serial: Option<u32>,
    /// A packet continued on the next page.
    partial: Vec<u8>,
    items: std::collections::VecDeque<OggItem>,
    failed: Option<OggError>,
}

impl Default for OggReader {
    fn default() -> Self {
        OggReader {
            buf: Vec::new(),
            pos: 0,
            state: State::Head,
            serial: None,
            partial: Vec::new(),
            items: std::collections::VecDeque::new(),
            failed: None,
        }
    }
}

impl OggReader {
    /// Bytes that arrived. Pages complete in them are parsed at once.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > MAX_PAGE {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        while self.failed.is_none() {
            match self.page() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => self.failed = Some(e),
            }
        }
    }

    /// The next item, or the error that stopped the stream (after the items before it).
    pub fn next_item(&mut self) -> Option<Result<OggItem, OggError>> {
        if let Some(item) = self.items.pop_front() {
            return Some(Ok(item));
        }
        self.failed.clone().map(Err)
    }

    /// The input ended: an error if it ended inside a page or packet.
    pub fn finish(&self) -> Result<(), OggError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.pos < self.buf.len() || !self.partial.is_empty() => {
                Err(OggError::Truncated)
            }
            None => Ok(()),
        }
    }

    /// Parses one page if a whole one is buffered; `Ok(false)` if more bytes are needed.
    fn page(&mut self) -> Result<bool, OggError> {
        let data = &self.buf[self.pos..];
        let Some(len) = page_len(data)? else {
            return Ok(false);
        };
        let flags = data[5];
        let granule =
            u64::from_le_bytes(data[6..14].try_into().expect("8 bytes of a 27-byte header"));
        let serial = u32::from_le_bytes(
            data[14..18]
                .try_into()
                .expect("4 bytes of a 27-byte header"),
        );
        let segments = usize::from(data[26]);
        let page = data[..len].to_vec();
        self.pos += len;
        let lacing = &page[27..27 + segments];
        let body = &page[27 + segments..];
        self.on_page(flags, granule, serial, lacing, body)?;
        Ok(true)
    }

    fn on_page(
        &mut self,
        flags: u8,
        granule: u64,
        serial: u32,
        lacing: &[u8],
        body: &[u8],
    ) -> Result<(), OggError> {
        if flags & BEGINNING_OF_STREAM != 0 {
            // A new logical stream: the first, or the next link of a chain once the last one ended.
            if self.state != State::Head {
                return Err(OggError::Multiplexed);
            }
            self.serial = Some(serial);
            self.partial.clear();
        } else if self.serial != Some(serial) {
            return Err(if self.serial.is_none() {
                OggError::NotOgg
            } else {
                OggError::Multiplexed
            });
        }
        if flags & CONTINUED == 0 {
            // A packet left unfinished by the previous page is lost with it.
            self.partial.clear();
        }
        // Packets completed on this page, in order.
        let mut completed = Vec::new();
        let mut offset = 0;
        for &l in lacing {
            let l = usize::from(l);
            if self.partial.len() + l > MAX_PACKET_BYTES {
                return Err(OggError::PacketTooLarge);
            }
            self.partial.extend_from_slice(&body[offset..offset + l]);
            offset += l;
            if l < 255 {
                completed.push(std::mem::take(&mut self.partial));
            }
        }
        // RFC 3533: −1 means no packet finishes on this page.
        let granule = (granule != u64::MAX).then_some(granule);
        let n = completed.len();
        for (i, packet) in completed.into_iter().enumerate() {
            self.on_packet(packet, granule, i + 1 == n)?;
        }
        if flags & END_OF_STREAM != 0 {
            self.state = State::Head;
            self.partial.clear();
        }
        Ok(())
    }

    fn on_packet(
        &mut self,
        packet: Vec<u8>,
        granule: Option<u64>,
        last: bool,
    ) -> Result<(), OggError> {
        match self.state {
            State::Head => {
                if !packet.starts_with(b"OpusHead") {
                    let codec = codec_name(&packet);
                    return Err(OggError::NotOpus(codec));
                }
                if packet.len() < 19 {
                    return Err(OggError::BadPacket);
                }
                let version = packet[8];
                if version >> 4 != 0 {
                    return Err(OggError::OpusVersion(version));
                }
                let channels = packet[9];
                let mapping = packet[18];
                if !(1..=2).contains(&channels) || mapping != 0 {
                    return Err(OggError::Channels(channels));
                }
                let pre_skip = u16::from_le_bytes([packet[10], packet[11]]);
                self.state = State::Tags { channels, pre_skip };
            }
            State::Tags { channels, pre_skip } => {
                if !packet.starts_with(b"OpusTags") {
                    return Err(OggError::NoTags);
                }
                self.state = State::Audio;
                self.items
                    .push_back(OggItem::Headers { channels, pre_skip });
            }
            State::Audio => {
                if packet.is_empty() {
                    return Err(OggError::BadPacket);
                }
                self.items.push_back(OggItem::Audio {
                    packet,
                    granule,
                    last,
                });
            }
        }
        Ok(())
    }
}

/// A name for the codec of a first packet that is not OpusHead, for the error message.
fn codec_name(packet: &[u8]) -> String {
    if packet.starts_with(b"\x01vorbis") {
        "Vorbis".into()
    } else if packet.starts_with(b"\x7fFLAC") {
        "FLAC".into()
    } else if packet.starts_with(b"Speex   ") {
        "Speex".into()
    } else if packet.starts_with(b"\x80theora") {
        "Theora".into()
    } else {
        "not a known codec".into()
    }
}

/// The length of the whole Ogg page `data` starts with, its capture pattern, version and CRC checked;
/// `Ok(None)` if more bytes are needed.
fn page_len(data: &[u8]) -> Result<Option<usize>, OggError> {
    if data.len() < 27 {
        if !b"OggS".starts_with(&data[..data.len().min(4)]) {
            return Err(OggError::NotOgg);
        }
        return Ok(None);
    }
    if &data[..4] != b"OggS" {
        return Err(OggError::NotOgg);
    }
    if data[4] != 0 {
        return Err(OggError::Version(data[4]));
    }
    let segments = usize::from(data[26]);
    if data.len() < 27 + segments {
        return Ok(None);
    }
    let body: usize = data[27..27 + segments]
        .iter()
        .map(|&l| usize::from(l))
        .sum();
    let len = 27 + segments + body;
    if data.len() < len {
        return Ok(None);
    }
    let mut page = data[..len].to_vec();
    page[22..26].fill(0);
    if crc(&page).to_le_bytes() != data[22..26] {
        return Err(OggError::Crc);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::super::ogg::OggStream;
    use super::*;

    fn stream_bytes() -> Vec<u8> {
        let mut s = OggStream::new(7);
        let mut out = s.header_pages("test").to_vec();
        // Two pages of two 20 ms CELT packets each (TOC 0xfc: CELT fullband 20 ms, one frame).
        out.extend_from_slice(&s.audio_page(960 * 2, &[&[0xfc, 1, 2], &[0xfc, 3]]));
        out.extend_from_slice(&s.audio_page(960 * 4, &[&[0xfc, 4], &[0xfc, 5, 6, 7]]));
        out
    }

    fn items(reader: &mut OggReader) -> Vec<Result<OggItem, OggError>> {
        let mut v = Vec::new();
        while let Some(item) = reader.next_item() {
            let stop = item.is_err();
            v.push(item);
            if stop {
                break;
            }
        }
        v
    }

    #[test]
    fn pages_split_anywhere_give_the_headers_then_every_packet_with_its_page_granule() {
        let bytes = stream_bytes();
        for chunk in [1, 3, 27, 100, bytes.len()] {
            let mut r = OggReader::default();
            for part in bytes.chunks(chunk) {
                r.push(part);
            }
            let got = items(&mut r);
            assert_eq!(got.len(), 5, "chunk {chunk}: {got:?}");
            assert_eq!(
                got[0],
                Ok(OggItem::Headers {
                    channels: 1,
                    pre_skip: 312
                })
            );
            assert_eq!(
                got[2],
                Ok(OggItem::Audio {
                    packet: vec![0xfc, 3],
                    granule: Some(1920),
                    last: true
                })
            );
            assert_eq!(
                got[3],
                Ok(OggItem::Audio {
                    packet: vec![0xfc, 4],
                    granule: Some(3840),
                    last: false
                })
            );
            assert_eq!(r.finish(), Ok(()));
        }
    }

    #[test]
    fn garbage_corruption_truncation_and_other_codecs_are_typed_errors() {
        let mut r = OggReader::default();
        r.push(b"GET / HTTP/1.1\r\n\r\n garbage garbage garbage");
        assert_eq!(items(&mut r), vec![Err(OggError::NotOgg)]);

        let mut bytes = stream_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let mut r = OggReader::default();
        r.push(&bytes);
        assert_eq!(items(&mut r).pop(), Some(Err(OggError::Crc)));

        let bytes = stream_bytes();
        let mut r = OggReader::default();
        r.push(&bytes[..bytes.len() - 3]);
        assert_eq!(items(&mut r).len(), 3, "the complete pages' packets");
        assert_eq!(r.finish(), Err(OggError::Truncated));

        // A Vorbis stream: named in the error.
        let mut s = OggStream::new(1);
        let mut out = Vec::new();
        let page = s.audio_page(0, &[b"\x01vorbis\x00\x00\x00\x00\x01"]);
        let mut page = page.to_vec();
        page[5] = BEGINNING_OF_STREAM;
        page[22..26].fill(0);
        let sum = crc(&page);
        page[22..26].copy_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(&page);
        let mut r = OggReader::default();
        r.push(&out);
        assert_eq!(items(&mut r), vec![Err(OggError::NotOpus("Vorbis".into()))]);
    }
}
