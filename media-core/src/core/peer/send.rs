//! Forwarded and mixed packets sent without str0m's per-packet machinery (issue 15): a header template
//! per slot stream (SSRC, MID, extension ids) completed per packet, the payload sealed behind it by the
//! peer's own [`SrtpSender`] straight into the datagram.
//!
//! str0m's path for one written packet (send queue, pacer, a timeout round through the whole `Rtc`, a
//! zero-filled 2 KB buffer, the RTX cache, statistics) cost most of the server's instructions per forwarded
//! packet. Audio slots negotiate no NACK/RTX (Chorus offers Opus without it) and no bandwidth estimation,
//! so none of that is needed: only the header and the encryption. The peer falls back to str0m's path
//! while it cannot (no keys exported yet, no nominated path, an extension id outside the one-byte form);
//! both paths seal with the same key under the slot's rewritten sequence number, which never repeats, so a
//! switch between them reuses no keystream.

use str0m::media::{Mid, Pt};
use str0m::rtp::Extension;

use super::dtls::active_provider;
use super::srtp::{SrtpSender, MAX_TAG};
use super::{Peer, PeerError};
use crate::core::net::NetTransmit;
use crate::core::outbox::Outbox;
use crate::ids::Ssrc;
use crate::speakers::csrc_levels::{self, Contributors, MAX_CSRCS};

/// The longest header written: 12 fixed bytes, 15 CSRCs, the one-byte extension block header and its
/// elements (audio level 2, CSRC levels at most 16, MID at most 17), padded to a word.
const HEADER_MAX: usize = 12 + 4 * MAX_CSRCS + 4 + 36;

/// A slot stream's RTP header as far as every packet shares it: the SSRC, the MID element (always sent:
/// it maps the SSRC to its m-line for receivers that did not take it from the SDP) and the ids of the
/// level extensions the subscriber negotiated.
#[derive(Debug, Clone)]
pub(crate) struct HeaderTemplate {
    ssrc: u32,
    /// The MID element (id and length byte, then the MID), `mid_len` bytes of it.
    mid: [u8; 17],
    mid_len: usize,
    level_id: Option<u8>,
    csrc_levels_id: Option<u8>,
}

impl HeaderTemplate {
    /// The template for a slot stream on `ssrc`, with the extension ids the answer gave its m-line;
    /// `None` when an id does not fit the one-byte form (RFC 8285: 1–14) or the MID is too long for it.
    pub(crate) fn new(ssrc: Ssrc, mid: Mid, extmaps: &[(u8, &Extension)]) -> Option<Self> {
        let id_of = |wanted: &Extension| {
            extmaps
                .iter()
                .find(|(_, e)| *e == wanted)
                .map(|(id, _)| *id)
        };
        let level_id = id_of(&Extension::AudioLevel);
        let mid_id = id_of(&Extension::RtpMid);
        let csrc_levels_id = id_of(&csrc_levels::extension());
        let one_byte = |id: Option<u8>| id.is_none_or(|id| (1..=14).contains(&id));
        let mid_bytes = mid.as_bytes();
        if !one_byte(level_id)
            || !one_byte(mid_id)
            || !one_byte(csrc_levels_id)
            || !(1..=16).contains(&mid_bytes.len())
        {
            return None;
        }
        let mut mid_elem = [0u8; 17];
        let mut mid_len = 0;
        if let Some(id) = mid_id {
            mid_elem[0] = id << 4 | (mid_bytes.len() as u8 - 1);
            mid_elem[1..=mid_bytes.len()].copy_from_slice(mid_bytes);
            mid_len = 1 + mid_bytes.len();
        }
        Some(Self {
            ssrc: ssrc.0,
            mid: mid_elem,
            mid_len,
            level_id,
            csrc_levels_id,
        })
    }

    /// Append this packet's header to `out`: the level elements where negotiated and known, the MID.
    fn write(&self, out: &mut Vec<u8>, fields: &PacketFields<'_>) {
        let csrcs = &fields.csrcs[..fields.csrcs.len().min(MAX_CSRCS)];
        let mut ext = [0u8; 36];
        let mut n = 0;
        if let (Some(id), Some((level, voice))) = (self.level_id, fields.level) {
            ext[0] = id << 4;
            ext[1] = if voice { 0x80 } else { 0 } | (level.unsigned_abs() & 0x7f);
            n = 2;
        }
        let levels = &fields.csrc_levels[..fields.csrc_levels.len().min(MAX_CSRCS)];
        if let (Some(id), false) = (self.csrc_levels_id, levels.is_empty()) {
            ext[n] = id << 4 | (levels.len() as u8 - 1);
            for (to, level) in ext[n + 1..].iter_mut().zip(levels) {
                // The top bit is reserved (0); 7 bits of −dBov.
                *to = level & 0x7f;
            }
            n += 1 + levels.len();
        }
        ext[n..n + self.mid_len].copy_from_slice(&self.mid[..self.mid_len]);
        n += self.mid_len;
        // Zero bytes pad the block to a word (RFC 8285: id 0 is padding).
        let ext_len = n.next_multiple_of(4);
        let x = if ext_len > 0 { 0x10 } else { 0 };
        // Built on the stack and appended once: one capacity check, not one per field.
        let mut header = [0u8; HEADER_MAX];
        header[0] = 0x80 | x | csrcs.len() as u8;
        header[1] = *fields.pt;
        header[2..4].copy_from_slice(&(fields.seq as u16).to_be_bytes());
        header[4..8].copy_from_slice(&fields.ts.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut len = 12;
        for csrc in csrcs {
            header[len..len + 4].copy_from_slice(&csrc.to_be_bytes());
            len += 4;
        }
        if ext_len > 0 {
            header[len..len + 2].copy_from_slice(&[0xBE, 0xDE]);
            header[len + 2..len + 4].copy_from_slice(&((ext_len / 4) as u16).to_be_bytes());
            header[len + 4..len + 4 + ext_len].copy_from_slice(&ext[..ext_len]);
            len += 4 + ext_len;
        }
        out.extend_from_slice(&header[..len]);
    }
}

/// What differs between two packets of a slot stream.
pub(crate) struct PacketFields<'a> {
    pub pt: Pt,
    /// Extended sequence number: the SRTP index.
    pub seq: u64,
    pub ts: u32,
    /// The speakers' SSRCs (the first [`MAX_CSRCS`]).
    pub csrcs: &'a [u32],
    /// RFC 6464 level (−dBov) and voice activity.
    pub level: Option<(i8, bool)>,
    /// RFC 6465 levels of the CSRCs, in their order (empty: none).
    pub csrc_levels: &'a [u8],
}

impl Peer {
    /// Send one forwarded packet on slot `slot` directly, with the speaker's SSRC as CSRC (see
    /// [`Peer::send_direct`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_slot(
        &mut self,
        slot: usize,
        seq: u64,
        ts: u32,
        payload: &[u8],
        red: bool,
        audio_level: Option<i8>,
        voice_activity: Option<bool>,
        csrc: Ssrc,
        out: &mut Outbox,
    ) -> Result<bool, PeerError> {
        let csrcs = [csrc.0];
        let fields = |pt| PacketFields {
            pt,
            seq,
            ts,
            csrcs: &csrcs,
            level: audio_level.map(|l| (l, voice_activity.unwrap_or(l > -127))),
            csrc_levels: &[],
        };
        self.send_direct(slot, red, payload, fields, out)
    }

    /// Send one mixed packet on the first slot directly: `contributors` become the CSRCs and their RFC 6465
    /// levels, `level` the packet's own audio level (see [`Peer::send_direct`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_mix(
        &mut self,
        seq: u64,
        ts: u32,
        payload: &[u8],
        red: bool,
        level: u8,
        contributors: &Contributors,
        out: &mut Outbox,
    ) -> Result<bool, PeerError> {
        let level = level.min(127);
        let fields = |pt| PacketFields {
            pt,
            seq,
            ts,
            csrcs: contributors.ssrcs(),
            level: Some((-(level as i8), level < 127)),
            csrc_levels: contributors.levels(),
        };
        self.send_direct(0, red, payload, fields, out)
    }

    /// Send one packet on slot `slot` directly: header from the slot's template and `fields` (given the
    /// payload type: the slot's RED one when `red`), sealed by the peer's SRTP sender, to the client's
    /// nominated path, into `out`. `Ok(false)` when this path is not available (see the module
    /// documentation); the caller then writes it through str0m.
    fn send_direct<'a>(
        &mut self,
        slot: usize,
        red: bool,
        payload: &[u8],
        fields: impl FnOnce(Pt) -> PacketFields<'a>,
        out: &mut Outbox,
    ) -> Result<bool, PeerError> {
        let (Some(stream), Some(path)) = (self.slots.get_mut(slot), self.client_path) else {
            return Ok(false);
        };
        let Some(template) = &stream.header else {
            return Ok(false);
        };
        let pt = match (red, stream.red_pt) {
            (false, _) => stream.pt,
            (true, Some(red_pt)) => red_pt,
            // A RED payload for a subscriber without RED would not decode: never sent.
            (true, None) => return Ok(true),
        };
        if self.srtp.is_none() {
            let Some(keys) = self.keys.keys() else {
                return Ok(false);
            };
            self.srtp = SrtpSender::new(active_provider(), keys);
        }
        let Some(srtp) = &mut self.srtp else {
            return Ok(false);
        };
        let fields = fields(pt);
        super::SeqRecord::record(&mut stream.sent, fields.seq);
        let mut contents = out.buffer(HEADER_MAX + payload.len() + MAX_TAG);
        template.write(&mut contents, &fields);
        srtp.seal(&mut contents, payload, template.ssrc, fields.seq)?;
        out.transmits.push_back(NetTransmit {
            transport: path.transport,
            source: path.local,
            destination: path.remote,
            contents,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        csrcs: &'a [u32],
        level: Option<(i8, bool)>,
        csrc_levels: &'a [u8],
    ) -> PacketFields<'a> {
        PacketFields {
            pt: Pt::from(111),
            seq: 0x1_0005,
            ts: 960,
            csrcs,
            level,
            csrc_levels,
        }
    }

    #[test]
    fn a_forwarded_header_carries_the_speaker_its_level_and_the_mid() {
        let (audio_level, mid) = (Extension::AudioLevel, Extension::RtpMid);
        let t = HeaderTemplate::new(
            Ssrc(0x0102_0304),
            Mid::from("1"),
            &[(1, &audio_level), (4, &mid)],
        )
        .expect("one-byte ids");
        let mut out = Vec::new();
        t.write(&mut out, &fields(&[9], Some((-30, true)), &[]));
        assert_eq!(&out[..4], &[0x91, 111, 0, 5], "V=2, X, one CSRC; PT; seq");
        assert_eq!(&out[4..12], &[0, 0, 3, 0xC0, 1, 2, 3, 4], "timestamp, SSRC");
        assert_eq!(&out[12..16], &[0, 0, 0, 9], "the speaker as CSRC");
        let level = 0x80 | 30;
        assert_eq!(&out[16..], &[0xBE, 0xDE, 0, 1, 0x10, level, 0x40, b'1']);
        out.clear();
        t.write(&mut out, &fields(&[9], None, &[]));
        assert_eq!(
            &out[16..],
            &[0xBE, 0xDE, 0, 1, 0x40, b'1', 0, 0],
            "no level element"
        );
    }

    #[test]
    fn a_mixed_header_lists_the_contributors_and_their_levels() {
        let (audio_level, levels) = (Extension::AudioLevel, csrc_levels::extension());
        let t = HeaderTemplate::new(Ssrc(5), Mid::from("0"), &[(1, &audio_level), (12, &levels)])
            .expect("one-byte ids");
        let mut out = Vec::new();
        t.write(&mut out, &fields(&[7, 8], Some((-20, true)), &[20, 0xff]));
        assert_eq!(out[0], 0x92, "two CSRCs, extensions");
        assert_eq!(&out[12..20], &[0, 0, 0, 7, 0, 0, 0, 8]);
        assert_eq!(
            &out[20..],
            &[0xBE, 0xDE, 0, 2, 0x10, 0x94, 0xC1, 20, 0x7f, 0, 0, 0]
        );
    }

    #[test]
    fn ids_beyond_the_one_byte_form_keep_str0m_s_path() {
        let audio_level = Extension::AudioLevel;
        assert!(HeaderTemplate::new(Ssrc(1), Mid::from("0"), &[(15, &audio_level)]).is_none());
        let plain = HeaderTemplate::new(Ssrc(1), Mid::from("0"), &[]).expect("no extensions");
        let mut out = Vec::new();
        plain.write(&mut out, &fields(&[2], Some((-10, true)), &[]));
        assert_eq!(out.len(), 16);
        assert_eq!(out[0], 0x81, "no extension flag without extensions");
    }
}
