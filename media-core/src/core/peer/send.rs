//! Forwarded packets sent without str0m's per-packet machinery (issue 15): a header template per slot
//! stream, patched per packet, sealed by the peer's own [`SrtpSender`] straight into the datagram.
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

/// Room for the header template: 12 fixed bytes, one CSRC, the one-byte extension block header and its
/// elements (audio level 2, MID at most 17), padded to a word.
const TEMPLATE_MAX: usize = 12 + 4 + 4 + 2 + 17 + 3;

/// A slot stream's RTP header with the fields every packet shares filled in: version, extension flag,
/// one CSRC, the SSRC, the MID extension (always sent: it maps the SSRC to its m-line for receivers that
/// did not take it from the SDP) and the audio level element's place.
#[derive(Debug, Clone)]
pub(crate) struct HeaderTemplate {
    bytes: [u8; TEMPLATE_MAX],
    len: usize,
    /// Where the audio level element starts (its id byte), when the subscriber negotiated RFC 6464.
    level_at: Option<usize>,
    level_id: u8,
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
        let one_byte = |id: Option<u8>| id.is_none_or(|id| (1..=14).contains(&id));
        let mid_bytes = mid.as_bytes();
        if !one_byte(level_id) || !one_byte(mid_id) || !(1..=16).contains(&mid_bytes.len()) {
            return None;
        }
        let mut bytes = [0u8; TEMPLATE_MAX];
        bytes[0] = 0x80 | 1; // V=2, one CSRC
        bytes[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
        let mut len = 16;
        let mut level_at = None;
        if level_id.is_some() || mid_id.is_some() {
            bytes[0] |= 0x10;
            bytes[16..18].copy_from_slice(&[0xBE, 0xDE]);
            len = 20;
            if let Some(id) = level_id {
                level_at = Some(len);
                bytes[len] = id << 4;
                len += 2;
            }
            if let Some(id) = mid_id {
                bytes[len] = id << 4 | (mid_bytes.len() as u8 - 1);
                bytes[len + 1..len + 1 + mid_bytes.len()].copy_from_slice(mid_bytes);
                len += 1 + mid_bytes.len();
            }
            len = len.next_multiple_of(4);
            let words = ((len - 20) / 4) as u16;
            bytes[18..20].copy_from_slice(&words.to_be_bytes());
        }
        Some(Self {
            bytes,
            len,
            level_at,
            level_id: level_id.unwrap_or(0),
        })
    }

    /// Append this packet's header to `out`. A packet without a level gets padding bytes (id 0) where
    /// the level element would be.
    fn write(&self, out: &mut Vec<u8>, fields: &PacketFields) {
        let start = out.len();
        out.extend_from_slice(&self.bytes[..self.len]);
        let h = &mut out[start..];
        h[1] = *fields.pt;
        h[2..4].copy_from_slice(&(fields.seq as u16).to_be_bytes());
        h[4..8].copy_from_slice(&fields.ts.to_be_bytes());
        h[12..16].copy_from_slice(&fields.csrc.0.to_be_bytes());
        if let Some(at) = self.level_at {
            match fields.level {
                Some((level, voice)) => {
                    h[at] = self.level_id << 4;
                    h[at + 1] = if voice { 0x80 } else { 0 } | (level.unsigned_abs() & 0x7f);
                }
                None => h[at..at + 2].fill(0),
            }
        }
    }
}

/// What differs between two packets of a slot stream.
pub(crate) struct PacketFields {
    pub pt: Pt,
    /// Extended sequence number: the SRTP index.
    pub seq: u64,
    pub ts: u32,
    /// The speaker's SSRC.
    pub csrc: Ssrc,
    /// RFC 6464 level (−dBov) and voice activity.
    pub level: Option<(i8, bool)>,
}

impl Peer {
    /// Send one forwarded packet on slot `slot` directly: header from the slot's template, sealed by the
    /// peer's SRTP sender, to the client's nominated path, into `out`. `Ok(false)` when this path is not
    /// available (see the module documentation); the caller then writes it through str0m.
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
        let (Some(stream), Some(path)) = (self.slots.get(slot), self.client_path) else {
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
        let fields = PacketFields {
            pt,
            seq,
            ts,
            csrc,
            level: audio_level.map(|l| (l, voice_activity.unwrap_or(l > -127))),
        };
        let mut contents = Vec::with_capacity(TEMPLATE_MAX + payload.len() + MAX_TAG);
        template.write(&mut contents, &fields);
        srtp.seal(&mut contents, payload, stream.ssrc.0, seq)?;
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

    #[test]
    fn the_template_carries_level_and_mid_and_pads_a_packet_without_a_level() {
        let audio_level = Extension::AudioLevel;
        let mid = Extension::RtpMid;
        let t = HeaderTemplate::new(Ssrc(0x0102_0304), Mid::from("1"), &[(1, &audio_level), (4, &mid)])
            .expect("one-byte ids");
        let mut fields = PacketFields {
            pt: Pt::from(111),
            seq: 0x1_0005,
            ts: 960,
            csrc: Ssrc(9),
            level: Some((-30, true)),
        };
        let mut out = Vec::new();
        t.write(&mut out, &fields);
        assert_eq!(
            out,
            [
                0x91, 111, 0, 5, 0, 0, 3, 0xC0, 1, 2, 3, 4, 0, 0, 0, 9, 0xBE, 0xDE, 0, 1, 0x10,
                0x80 | 30, 0x40, b'1'
            ]
        );
        fields.level = None;
        out.clear();
        t.write(&mut out, &fields);
        assert_eq!(&out[20..22], &[0, 0], "padding where the level would be");
        assert_eq!(&out[22..24], &[0x40, b'1']);
    }

    #[test]
    fn ids_beyond_the_one_byte_form_keep_str0m_s_path() {
        let audio_level = Extension::AudioLevel;
        assert!(HeaderTemplate::new(Ssrc(1), Mid::from("0"), &[(15, &audio_level)]).is_none());
        let plain = HeaderTemplate::new(Ssrc(1), Mid::from("0"), &[]).expect("no extensions");
        let mut out = Vec::new();
        plain.write(
            &mut out,
            &PacketFields {
                pt: Pt::from(111),
                seq: 1,
                ts: 0,
                csrc: Ssrc(2),
                level: Some((-10, true)),
            },
        );
        assert_eq!(out.len(), 16);
        assert_eq!(out[0], 0x81, "no extension flag without extensions");
    }
}
