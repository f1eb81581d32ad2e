//! SRTP keyed by SDES (RFC 4568, `a=crypto`) for plain RTP ingest: a gateway that cannot do DTLS-SRTP
//! (ffmpeg's `srtp://`, SIP gateways) is given a master key and salt out of band and protects its packets
//! with it. [`SrtpReceiver`] opens them with the session keys of [`crate::core::peer::srtp`] (the same RFC
//! 3711 key derivation and str0m's crypto provider the forward path seals with): the tag is checked before
//! anything is decrypted, and a replay window (RFC 3711 §3.3.2, 64 packets) per SSRC drops replays and
//! packets too old to tell. Nothing a packet says changes any state until it has been authenticated.

use str0m::crypto::dtls::SrtpProfile;

use crate::core::peer::dtls::active_provider;
use crate::core::peer::srtp::{master_lengths, Cipher, OpenError};
use crate::replay::ReplayWindow;

/// The SDES crypto suites a receiver opens (RFC 4568 §6.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdesSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: what ffmpeg's `srtp://` and most SIP gateways send.
    AesCm128HmacSha1_80,
    /// `AEAD_AES_128_GCM`.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM`.
    AeadAes256Gcm,
}

impl SdesSuite {
    pub const ALL: [SdesSuite; 3] = [
        SdesSuite::AesCm128HmacSha1_80,
        SdesSuite::AeadAes128Gcm,
        SdesSuite::AeadAes256Gcm,
    ];

    /// The suite's name in `a=crypto` (and ffmpeg's `-srtp_out_suite`).
    pub fn as_str(self) -> &'static str {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SdesSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SdesSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    pub fn parse(name: &str) -> Option<SdesSuite> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn profile(self) -> SrtpProfile {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => SrtpProfile::AES128_CM_SHA1_80,
            SdesSuite::AeadAes128Gcm => SrtpProfile::AEAD_AES_128_GCM,
            SdesSuite::AeadAes256Gcm => SrtpProfile::AEAD_AES_256_GCM,
        }
    }

    /// (master key, master salt) lengths in bytes.
    fn lengths(self) -> (usize, usize) {
        master_lengths(self.profile()).expect("every SDES suite is a profile the session keys know")
    }

    /// The length of the `inline:` key parameter once decoded: master key then master salt.
    pub fn master_len(self) -> usize {
        let (key, salt) = self.lengths();
        key + salt
    }
}

/// A master key of the wrong length for its suite.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {suite} key is {expected} bytes (master key and salt), not {got}")]
pub struct KeyLengthError {
    pub suite: &'static str,
    pub expected: usize,
    pub got: usize,
}

/// Why a received packet was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    /// Not an RTP header, or too short for its tag.
    #[error("not an SRTP packet")]
    Malformed,
    /// The tag does not match: another key, a forged or a damaged packet.
    #[error("the packet failed SRTP authentication")]
    Auth,
    /// A packet already received, or older than the replay window.
    #[error("a replayed (or too old) SRTP packet")]
    Replay,
    /// An authentic packet of one SSRC more than a receiver tracks.
    #[error("more than {MAX_SSRCS} SSRCs")]
    TooManySsrcs,
}

/// SSRCs a receiver keeps a replay window for: a sender restarting its stream (a SIP re-INVITE) makes a
/// new one; more is not a gateway.
pub const MAX_SSRCS: usize = 4;

/// The length of an RTP packet's header (RFC 3550 §5.1: CSRCs and a header extension included);
/// `None` if `data` is not RTP version 2 or too short for its header.
pub fn rtp_header_len(data: &[u8]) -> Option<usize> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(data[0] & 0x0f);
    if data[0] & 0x10 != 0 {
        let ext = data.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (len <= data.len()).then_some(len)
}

/// The session cipher of `suite` from `master` (the master key then the master salt), for sealing
/// (`encrypt`) or opening.
fn session_cipher(
    suite: SdesSuite,
    master: &[u8],
    encrypt: bool,
) -> Result<Cipher, KeyLengthError> {
    let wrong = || KeyLengthError {
        suite: suite.as_str(),
        expected: suite.master_len(),
        got: master.len(),
    };
    if master.len() != suite.master_len() {
        return Err(wrong());
    }
    let (key, salt) = master.split_at(suite.lengths().0);
    Cipher::new(active_provider(), suite.profile(), key, salt, encrypt).ok_or_else(wrong)
}

/// Opens the SRTP packets of one SDES-keyed session.
pub struct SrtpReceiver {
    cipher: Cipher,
    /// (SSRC, its replay window), at most [`MAX_SSRCS`].
    streams: Vec<(u32, ReplayWindow)>,
}

impl std::fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are secret: never printed.
        f.debug_struct("SrtpReceiver")
            .field("ssrcs", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// A receiver for `master` (the master key then the master salt, as `a=crypto`'s `inline:`).
    pub fn new(suite: SdesSuite, master: &[u8]) -> Result<SrtpReceiver, KeyLengthError> {
        Ok(SrtpReceiver {
            cipher: session_cipher(suite, master, false)?,
            streams: Vec::new(),
        })
    }

    /// Authenticate and decrypt one SRTP packet into `out` (its header, then the clear payload and any
    /// padding). A packet that fails leaves the receiver as it was.
    pub fn open(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header_len = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let stream = self.streams.iter().position(|(s, _)| *s == ssrc);
        let index = match stream {
            Some(i) => {
                let window = &self.streams[i].1;
                let index = estimate_index(window.highest(), seq).ok_or(SrtpError::Replay)?;
                if !window.is_fresh(index) {
                    return Err(SrtpError::Replay);
                }
                index
            }
            // A new stream starts with a roll-over counter of 0 (RFC 4568 §6.4.1).
            None => u64::from(seq),
        };
        self.cipher
            .open(packet, header_len, ssrc, index, out)
            .map_err(|e| match e {
                OpenError::TooShort => SrtpError::Malformed,
                OpenError::Auth => SrtpError::Auth,
            })?;
        match stream {
            Some(i) => self.streams[i].1.accept(index),
            None if self.streams.len() >= MAX_SSRCS => {
                out.clear();
                return Err(SrtpError::TooManySsrcs);
            }
            None => self.streams.push((ssrc, ReplayWindow::starting_at(index))),
        }
        Ok(())
    }
}

/// Seals RTP packets as the sender of an SDES-keyed session does (the cipher the forward path seals
/// with), for tests and the fuzz targets.
#[cfg(any(test, feature = "testkit"))]
pub struct SrtpSealer {
    cipher: Cipher,
}

#[cfg(any(test, feature = "testkit"))]
impl SrtpSealer {
    /// A sealer for `master` (the master key then the master salt).
    pub fn new(suite: SdesSuite, master: &[u8]) -> Result<SrtpSealer, KeyLengthError> {
        Ok(SrtpSealer {
            cipher: session_cipher(suite, master, true)?,
        })
    }

    /// The RTP `header` (whose SSRC is `ssrc` and whose sequence number is `index`'s low 16 bits), then
    /// `payload` sealed at `index` (ROC × 65536 + sequence number).
    pub fn seal(&mut self, header: &[u8], payload: &[u8], ssrc: u32, index: u64) -> Vec<u8> {
        let mut out = header.to_vec();
        self.cipher
            .seal(&mut out, payload, ssrc, index)
            .expect("sealing needs nothing but the key");
        out
    }
}

/// RFC 3711 §3.3.1 (appendix A): the index of sequence number `seq` on a stream whose highest
/// authenticated index is `highest`, guessing the roll-over counter; `None` for a packet from before the
/// stream's first roll-over counter.
fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = (highest >> 16) as i64;
    let s_l = i64::from(highest as u16);
    let s = i64::from(seq);
    let v = if s_l < 32_768 {
        if s - s_l > 32_768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32_768 > s {
        roc + 1
    } else {
        roc
    };
    u64::try_from(v).ok().map(|v| (v << 16) | u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(suite: SdesSuite) -> Vec<u8> {
        (0..suite.master_len() as u8).map(|b| b ^ 0x5a).collect()
    }

    /// A sender with the same keys: the forward path's sealing.
    fn sender(suite: SdesSuite, master: &[u8]) -> SrtpSealer {
        SrtpSealer::new(suite, master).expect("the suite's own key length")
    }

    fn sealed(sealer: &mut SrtpSealer, ssrc: u32, index: u64, payload: &[u8]) -> Vec<u8> {
        let seq = (index as u16).to_be_bytes();
        let s = ssrc.to_be_bytes();
        let header = [
            0x80, 111, seq[0], seq[1], 0, 0, 3, 0xc0, s[0], s[1], s[2], s[3],
        ];
        sealer.seal(&header, payload, ssrc, index)
    }

    #[test]
    fn opens_what_the_forward_path_seals_with_each_suite_and_refuses_another_key() {
        for suite in SdesSuite::ALL {
            let key = master(suite);
            let mut tx = sender(suite, &key);
            let mut rx = SrtpReceiver::new(suite, &key).expect("right length");
            let packet = sealed(&mut tx, 7, 100, &[0xf8, 1, 2, 3]);
            let mut out = Vec::new();
            rx.open(&packet, &mut out).expect("authentic");
            assert_eq!(&out[12..], &[0xf8, 1, 2, 3], "{suite:?}");
            assert_eq!(&out[..12], &packet[..12]);

            let mut other = key.clone();
            other[0] ^= 1;
            let mut wrong = SrtpReceiver::new(suite, &other).expect("right length");
            let next = sealed(&mut tx, 7, 101, &[0xf8, 4]);
            assert_eq!(wrong.open(&next, &mut out), Err(SrtpError::Auth));
            let mut damaged = next.clone();
            damaged[13] ^= 0x40;
            assert_eq!(rx.open(&damaged, &mut out), Err(SrtpError::Auth));
            // The damaged copy changed nothing: the real one still opens.
            rx.open(&next, &mut out).expect("authentic");
            let fresh = sealed(&mut tx, 7, 102, &[0xf8, 5]);
            assert_eq!(
                rx.open(&fresh[..13], &mut out),
                Err(SrtpError::Malformed),
                "{suite:?}: shorter than its tag"
            );
        }
    }

    #[test]
    fn a_replay_or_a_packet_older_than_the_window_is_dropped() {
        let suite = SdesSuite::AesCm128HmacSha1_80;
        let key = master(suite);
        let mut tx = sender(suite, &key);
        let mut rx = SrtpReceiver::new(suite, &key).expect("right length");
        let mut out = Vec::new();
        let first = sealed(&mut tx, 9, 1000, &[0xf8, 1]);
        let late = sealed(&mut tx, 9, 1003, &[0xf8, 2]);
        let ahead = sealed(&mut tx, 9, 1005, &[0xf8, 3]);
        rx.open(&first, &mut out).expect("first");
        rx.open(&ahead, &mut out).expect("ahead");
        rx.open(&late, &mut out)
            .expect("reordered within the window");
        assert_eq!(rx.open(&late, &mut out), Err(SrtpError::Replay));
        assert_eq!(rx.open(&first, &mut out), Err(SrtpError::Replay));
        let far = sealed(&mut tx, 9, 1005 + 100, &[0xf8, 4]);
        rx.open(&far, &mut out).expect("a jump forward");
        let old = sealed(&mut tx, 9, 1004, &[0xf8, 5]);
        assert_eq!(
            rx.open(&old, &mut out),
            Err(SrtpError::Replay),
            "behind the window"
        );
    }

    #[test]
    fn the_roll_over_counter_follows_the_sequence_number_wrapping() {
        let suite = SdesSuite::AesCm128HmacSha1_80;
        let key = master(suite);
        let mut tx = sender(suite, &key);
        let mut rx = SrtpReceiver::new(suite, &key).expect("right length");
        let mut out = Vec::new();
        for index in [65_534u64, 65_535, 65_536 + 1, 65_536] {
            let p = sealed(&mut tx, 3, index, &[0xf8, index as u8]);
            rx.open(&p, &mut out)
                .expect("the ROC is guessed across the wrap");
            assert_eq!(out[13], index as u8);
        }
    }

    #[test]
    fn at_most_four_ssrcs_and_keys_of_the_wrong_length_are_refused() {
        let suite = SdesSuite::AeadAes128Gcm;
        let key = master(suite);
        let mut tx = sender(suite, &key);
        let mut rx = SrtpReceiver::new(suite, &key).expect("right length");
        let mut out = Vec::new();
        for ssrc in 0..MAX_SSRCS as u32 {
            rx.open(&sealed(&mut tx, ssrc, 1, &[0xf8]), &mut out)
                .expect("a stream");
        }
        let fifth = sealed(&mut tx, 99, 1, &[0xf8]);
        assert_eq!(rx.open(&fifth, &mut out), Err(SrtpError::TooManySsrcs));
        assert_eq!(
            SrtpReceiver::new(SdesSuite::AesCm128HmacSha1_80, &[0; 28]).unwrap_err(),
            KeyLengthError {
                suite: "AES_CM_128_HMAC_SHA1_80",
                expected: 30,
                got: 28
            }
        );
        assert_eq!(SdesSuite::parse("AEAD_AES_128_GCM"), Some(suite));
        assert_eq!(SdesSuite::parse("NULL"), None);
    }

    #[test]
    fn header_lengths_count_csrcs_and_extensions() {
        let mut p = vec![0x81 | 0x10, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[1, 1, 1, 1, 0xbe, 0xde, 0, 1, 2, 2, 2, 2, 0xf8]);
        assert_eq!(rtp_header_len(&p), Some(24));
        assert_eq!(rtp_header_len(&p[..20]), None);
        assert_eq!(rtp_header_len(b"not rtp at all"), None);
    }
}
