//! RFC 6465 mixer-to-client audio levels: one level per contributing source, in CSRC order, so a browser
//! can show who is talking in a mixed stream (`RTCRtpReceiver.getContributingSources()` reports them).
//!
//! str0m does not know this extension; it is registered as a user extension (see [`extension`]). It is only
//! written when the client's offer negotiates it: str0m maps extensions by URI to the remote's ids.

use std::sync::Arc;

use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};

/// The extension's URI (RFC 6465).
pub const URI: &str = "urn:ietf:params:rtp-hdrext:csrc-audio-level";

/// The most contributing sources an RTP packet can list.
pub const MAX_CSRCS: usize = 15;

/// The contributors of one mixed packet: SSRCs with their RFC 6464-style levels (0..=127, −dBov).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Contributors {
    len: u8,
    ssrcs: [u32; MAX_CSRCS],
    levels: [u8; MAX_CSRCS],
}

impl Contributors {
    /// Add a contributor; beyond [`MAX_CSRCS`] it is left out (callers add the loudest first).
    pub fn push(&mut self, ssrc: u32, level: u8) {
        let i = self.len as usize;
        if i < MAX_CSRCS {
            self.ssrcs[i] = ssrc;
            self.levels[i] = level.min(127);
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ssrcs(&self) -> &[u32] {
        &self.ssrcs[..self.len as usize]
    }

    pub fn levels(&self) -> &[u8] {
        &self.levels[..self.len as usize]
    }

    /// A copy without `ssrc` (a talker's mix-minus lists everyone but the talker).
    pub fn without(&self, ssrc: Option<u32>) -> Contributors {
        let mut out = Contributors::default();
        for (s, l) in self.ssrcs().iter().zip(self.levels()) {
            if Some(*s) != ssrc {
                out.push(*s, *l);
            }
        }
        out
    }
}

/// The value carried in [`ExtensionValues::user_values`]: levels in CSRC order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrcLevels(pub Vec<u8>);

/// Writes and parses [`CsrcLevels`].
#[derive(Debug)]
pub struct CsrcLevelSerializer;

impl ExtensionSerializer for CsrcLevelSerializer {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        let Some(levels) = ev.user_values.get::<CsrcLevels>() else {
            return 0;
        };
        let n = levels.0.len().min(MAX_CSRCS).min(buf.len());
        for (out, level) in buf.iter_mut().zip(&levels.0[..n]) {
            // The top bit is reserved (0); 7 bits of −dBov.
            *out = level & 0x7f;
        }
        n
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        if buf.is_empty() || buf.len() > MAX_CSRCS {
            return false;
        }
        ev.user_values
            .set(CsrcLevels(buf.iter().map(|b| b & 0x7f).collect()));
        true
    }

    fn is_video(&self) -> bool {
        false
    }

    fn is_audio(&self) -> bool {
        true
    }
}

/// The extension to register in str0m's extension map.
pub fn extension() -> Extension {
    Extension::with_serializer(URI, CsrcLevelSerializer)
}

/// Put `levels` on an outgoing packet's extension values.
pub fn set(ev: &mut ExtensionValues, levels: &[u8]) {
    ev.user_values
        .set_arc(Arc::new(CsrcLevels(levels.to_vec())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_reserved_bit_is_cleared() {
        let mut ev = ExtensionValues::default();
        set(&mut ev, &[10, 127, 0xff]);
        let mut buf = [0u8; 16];
        let n = CsrcLevelSerializer.write_to(&mut buf, &ev);
        assert_eq!(&buf[..n], &[10, 127, 0x7f]);
        let mut parsed = ExtensionValues::default();
        assert!(CsrcLevelSerializer.parse_value(&buf[..n], &mut parsed));
        assert_eq!(
            parsed.user_values.get::<CsrcLevels>(),
            Some(&CsrcLevels(vec![10, 127, 127]))
        );
        assert!(!CsrcLevelSerializer.parse_value(&[], &mut parsed));
        assert!(!CsrcLevelSerializer.parse_value(&[1; 16], &mut parsed));
    }

    #[test]
    fn nothing_is_written_without_levels() {
        let mut buf = [0u8; 16];
        assert_eq!(
            CsrcLevelSerializer.write_to(&mut buf, &ExtensionValues::default()),
            0
        );
    }

    #[test]
    fn contributors_cap_at_fifteen_and_drop_the_listener() {
        let mut c = Contributors::default();
        for i in 0..20 {
            c.push(i, i as u8);
        }
        assert_eq!(c.len(), MAX_CSRCS);
        let minus = c.without(Some(3));
        assert_eq!(minus.len(), 14);
        assert!(!minus.ssrcs().contains(&3));
        assert_eq!(minus.levels()[3], 4);
    }
}
