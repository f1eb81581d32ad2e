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
///
/// The levels are kept as the extension value itself, behind an `Arc`: every listener of the shared mix
/// gets the same one, so writing a packet does not allocate a level list per listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contributors {
    len: u8,
    ssrcs: [u32; MAX_CSRCS],
    /// `None` when there are no contributors.
    levels: Option<Arc<CsrcLevels>>,
}

impl Contributors {
    /// The first [`MAX_CSRCS`] of `list` (callers list the loudest first); levels are capped at 127.
    pub fn new(list: impl IntoIterator<Item = (u32, u8)>) -> Contributors {
        let mut ssrcs = [0u32; MAX_CSRCS];
        let mut levels = Vec::new();
        for (slot, (ssrc, level)) in ssrcs.iter_mut().zip(list) {
            *slot = ssrc;
            levels.push(level.min(127));
        }
        Contributors {
            len: levels.len() as u8,
            ssrcs,
            levels: (!levels.is_empty()).then(|| Arc::new(CsrcLevels(levels))),
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
        self.levels.as_ref().map_or(&[], |l| l.0.as_slice())
    }

    /// A copy without `ssrc` (a talker's mix-minus lists everyone but the talker).
    pub fn without(&self, ssrc: u32) -> Contributors {
        Contributors::new(
            self.ssrcs()
                .iter()
                .copied()
                .zip(self.levels().iter().copied())
                .filter(|(s, _)| *s != ssrc),
        )
    }

    /// Put the levels on an outgoing packet's extension values (nothing when there are no contributors).
    pub fn set_levels(&self, ev: &mut ExtensionValues) {
        if let Some(levels) = &self.levels {
            ev.user_values.set_arc(levels.clone());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_reserved_bit_is_cleared() {
        let mut ev = ExtensionValues::default();
        ev.user_values
            .set_arc(Arc::new(CsrcLevels(vec![10, 127, 0xff])));
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
        let c = Contributors::new((0..20).map(|i| (i, i as u8)));
        assert_eq!(c.len(), MAX_CSRCS);
        let minus = c.without(3);
        assert_eq!(minus.len(), 14);
        assert!(!minus.ssrcs().contains(&3));
        assert_eq!(minus.levels()[3], 4);
        // Levels are set on a packet as the shared value, and nothing is set without contributors.
        let mut ev = ExtensionValues::default();
        c.set_levels(&mut ev);
        assert_eq!(
            ev.user_values.get::<CsrcLevels>().map(|l| l.0.len()),
            Some(15)
        );
        let mut none = ExtensionValues::default();
        Contributors::default().set_levels(&mut none);
        assert!(none.user_values.get::<CsrcLevels>().is_none());
    }
}
