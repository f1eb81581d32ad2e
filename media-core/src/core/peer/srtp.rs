//! The server's own SRTP sender for forwarded packets (issue 15): RFC 3711 key derivation and RTP
//! protection for the three DTLS-SRTP profiles str0m and dimpl negotiate: AES-CM-SHA1-80 on str0m's
//! crypto provider, both AES-GCM profiles on ring (see [`GcmCipher`] for why).
//!
//! str0m's per-packet send path (send queue, pacer, timeout round, RTX cache, stats, a zero-filled
//! 2 KB buffer, a copy per step) cost most of a forwarded packet. A forwarded packet needs only its header
//! and one encryption with the subscriber's SRTP master key, which the peer's DTLS connection exports
//! ([`super::dtls::KeyTap`]). The sender owns only the slot SSRCs, which str0m never writes to, so no
//! (SSRC, index) pair, and thus no keystream, is ever used twice. SRTCP stays str0m's.
//!
//! The same session keys also open received packets ([`Cipher::open`]): the SDES-keyed SRTP of plain RTP
//! ingest ([`crate::sdes`]).

use ring::aead;
use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes256Gcm, Aes128CmSha1_80, Aes128CmSha1_80Cipher, CryptoError,
    CryptoProvider, Sha1HmacProvider, SrtpProvider,
};

/// RFC 3711 §4.3.1 key derivation labels for SRTP (RTCP's are str0m's business).
const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_AUTHENTICATION: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;

/// aws-lc-rs' AES-CTR writes whole blocks: the output needs up to a block less one byte of room.
const CTR_SLACK: usize = 15;

/// The largest authentication tag of the profiles: what a sealed packet adds at most.
pub(crate) const MAX_TAG: usize = 16;

/// The keying material a DTLS-SRTP connection exported (RFC 5764 §4.2: client key, server key, client
/// salt, server salt) and which side this end is.
pub(crate) struct ExportedKeys {
    pub(crate) material: Vec<u8>,
    pub(crate) profile: SrtpProfile,
    /// DTLS client (active): its outgoing keys are the client's (left) half.
    pub(crate) active: bool,
}

impl std::fmt::Debug for ExportedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secret: never printed.
        f.debug_struct("ExportedKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Encrypts and authenticates outgoing RTP with one session's keys.
pub(crate) struct SrtpSender {
    cipher: Cipher,
}

/// One direction's session keys of a profile (RFC 3711 §4.3.1), sealing (sending) or opening (receiving).
pub(crate) enum Cipher {
    CmSha1 {
        enc: Box<dyn Aes128CmSha1_80Cipher>,
        auth: [u8; Aes128CmSha1_80::HMAC_KEY_LEN],
        salt: [u8; Aes128CmSha1_80::SALT_LEN],
        hmac: &'static dyn Sha1HmacProvider,
    },
    /// AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 7714): the same IV, salt and tag lengths and packet
    /// layout; only the key size differs.
    Gcm {
        enc: GcmCipher,
        salt: [u8; AeadAes128Gcm::SALT_LEN],
    },
}

/// The AES-GCM key of either size, as ring keeps it: the expanded AES key and the GHASH table are in the
/// box itself, behind no further pointer. The fan-out prefetches a subscriber's key by address before it
/// seals ([`GcmCipher::prefetch`]); the provider's aws-lc cipher kept its context behind two more pointers
/// (each a cache miss on a key that is cold by the next packet) and copied its GHASH key on every seal
/// (issue 15, docs/architecture.md "Cost per forwarded packet"). Both produce the same bytes (RFC 7714;
/// the unit tests compare them).
pub(crate) struct GcmCipher(Box<aead::LessSafeKey>);

impl GcmCipher {
    /// A cipher for a 16-byte (AES-128) or 32-byte (AES-256) session key.
    fn new(key: &[u8]) -> Option<Self> {
        let algorithm = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return None,
        };
        let key = aead::UnboundKey::new(algorithm, key).ok()?;
        Some(Self(Box::new(aead::LessSafeKey::new(key))))
    }

    /// Ask the CPU to load the key's cache lines ahead of a seal.
    fn prefetch(&self) {
        crate::prefetch::prefetch(&*self.0);
    }

    /// Encrypt `input` into `output` (at least `input.len()` + the tag) and append the tag.
    #[cfg(test)]
    fn encrypt(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        let len = input.len();
        let (body, tag_out) = output.split_at_mut(len);
        body.copy_from_slice(input);
        let tag = self.seal_in_place(iv, aad, body)?;
        tag_out[..TAG_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// Encrypt `body` in place; the tag.
    fn seal_in_place(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(*iv),
                aead::Aad::from(aad),
                body,
            )
            .map_err(|_| CryptoError::Other("AES-GCM seal failed".into()))?;
        let mut out = [0; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Authenticate and decrypt `input` (ciphertext, then the tag) into `output`; the clear length.
    fn decrypt(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let failed = || CryptoError::Other("AES-GCM open failed".into());
        let len = input.len().checked_sub(TAG_LEN).ok_or_else(failed)?;
        let (ciphertext, tag) = input.split_at(len);
        let tag = aead::Tag::try_from(tag).map_err(|_| failed())?;
        let body = &mut output[..len];
        body.copy_from_slice(ciphertext);
        self.0
            .open_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(*iv),
                aead::Aad::from(aad),
                tag,
                body,
                0..,
            )
            .map_err(|_| failed())?;
        Ok(len)
    }
}

/// RFC 7714's tag length, the same for both key sizes.
const TAG_LEN: usize = AeadAes128Gcm::TAG_LEN;

// RFC 7714 uses one salt length, tag length and IV construction for both key sizes: one `Gcm` arm serves both.
const _: () = assert!(AeadAes128Gcm::SALT_LEN == AeadAes256Gcm::SALT_LEN);
const _: () = assert!(AeadAes128Gcm::TAG_LEN == AeadAes256Gcm::TAG_LEN);

/// Why a received packet was not opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Too short for its header and tag.
    #[error("the packet is too short for its profile's tag")]
    TooShort,
    /// The tag does not match: another key, or a forged or damaged packet.
    #[error("the packet failed authentication")]
    Auth,
}

/// The (master key, master salt) lengths of a profile; `None` for a profile this crate does not know.
pub(crate) fn master_lengths(profile: SrtpProfile) -> Option<(usize, usize)> {
    match profile {
        SrtpProfile::AES128_CM_SHA1_80 => Some((16, 14)),
        SrtpProfile::AEAD_AES_128_GCM => Some((16, 12)),
        SrtpProfile::AEAD_AES_256_GCM => Some((32, 12)),
        _ => None,
    }
}

impl SrtpSender {
    /// The sender for this end's outgoing half of `keys`; `None` for a profile it does not know or keying
    /// material of the wrong length (the caller keeps str0m's own send path).
    pub(crate) fn new(provider: &CryptoProvider, keys: &ExportedKeys) -> Option<Self> {
        let (key_len, salt_len) = master_lengths(keys.profile)?;
        let (key, salt) = outgoing_half(&keys.material, keys.active, key_len, salt_len)?;
        let cipher = Cipher::new(provider, keys.profile, key, salt, true)?;
        Some(Self { cipher })
    }

    /// Prefetch the session key ahead of a seal ([`crate::prefetch`]).
    pub(crate) fn prefetch(&self) {
        self.cipher.prefetch();
    }

    /// Seal one packet: `out` holds its RTP header; `payload` is encrypted behind it and the tag appended.
    /// `index` is the packet's extended sequence number (ROC × 65536 + sequence number) on `ssrc`.
    pub(crate) fn seal(
        &mut self,
        out: &mut Vec<u8>,
        payload: &[u8],
        ssrc: u32,
        index: u64,
    ) -> Result<(), CryptoError> {
        self.cipher.seal(out, payload, ssrc, index)
    }
}

impl Cipher {
    /// The session cipher of `profile` derived from one direction's master key and salt, for sealing
    /// (`encrypt`) or opening; `None` for a profile it does not know or lengths that do not fit it.
    pub(crate) fn new(
        provider: &CryptoProvider,
        profile: SrtpProfile,
        key: &[u8],
        salt: &[u8],
        encrypt: bool,
    ) -> Option<Self> {
        let srtp = provider.srtp_provider;
        let cipher = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let master = Master::<16, 14>::new(key, salt)?;
                Cipher::CmSha1 {
                    enc: srtp
                        .aes_128_cm_sha1_80()
                        .create_cipher(master.derive(srtp, LABEL_RTP_ENCRYPTION), encrypt),
                    auth: master.derive(srtp, LABEL_RTP_AUTHENTICATION),
                    salt: master.derive(srtp, LABEL_RTP_SALT),
                    hmac: provider.sha1_hmac_provider,
                }
            }
            SrtpProfile::AEAD_AES_128_GCM => {
                let master = Master::<16, 12>::new(key, salt)?;
                Cipher::Gcm {
                    enc: GcmCipher::new(&master.derive::<16>(srtp, LABEL_RTP_ENCRYPTION))?,
                    salt: master.derive(srtp, LABEL_RTP_SALT),
                }
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let master = Master::<32, 12>::new(key, salt)?;
                Cipher::Gcm {
                    enc: GcmCipher::new(&master.derive::<32>(srtp, LABEL_RTP_ENCRYPTION))?,
                    salt: master.derive(srtp, LABEL_RTP_SALT),
                }
            }
            _ => return None,
        };
        Some(cipher)
    }

    /// Prefetch the session key ahead of a seal or an open ([`crate::prefetch`]).
    fn prefetch(&self) {
        match self {
            Cipher::CmSha1 { enc, .. } => crate::prefetch::prefetch(&**enc),
            Cipher::Gcm { enc, .. } => enc.prefetch(),
        }
    }

    /// Seal one packet: `out` holds its RTP header; `payload` is encrypted behind it and the tag appended.
    /// `index` is the packet's extended sequence number (ROC × 65536 + sequence number) on `ssrc`.
    pub(crate) fn seal(
        &mut self,
        out: &mut Vec<u8>,
        payload: &[u8],
        ssrc: u32,
        index: u64,
    ) -> Result<(), CryptoError> {
        let header_len = out.len();
        let end = header_len + payload.len();
        let roc = (index >> 16) as u32;
        match self {
            Cipher::CmSha1 {
                enc,
                auth,
                salt,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                out.resize(end + CTR_SLACK, 0);
                enc.encrypt(&iv, payload, &mut out[header_len..])?;
                // RFC 3711 §4.2: the tag covers the packet and the ROC.
                let tag = hmac.sha1_hmac(&auth[..], &[&out[..end], &roc.to_be_bytes()]);
                out.truncate(end);
                out.extend_from_slice(&tag[..Aes128CmSha1_80::HMAC_TAG_LEN]);
            }
            Cipher::Gcm { enc, salt } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, index as u16);
                // The payload copied behind the header and sealed there: no zeroing first.
                out.extend_from_slice(payload);
                let (aad, body) = out.split_at_mut(header_len);
                let tag = enc.seal_in_place(&iv, aad, body)?;
                out.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Open one received packet whose RTP header is `packet[..header_len]`: authenticate it (the tag is
    /// checked before anything is decrypted) and write the header and the clear payload to `out`.
    /// `index` is the packet's estimated extended sequence number on `ssrc` (RFC 3711 §3.3.1).
    pub(crate) fn open(
        &mut self,
        packet: &[u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let roc = (index >> 16) as u32;
        let header = packet.get(..header_len).ok_or(OpenError::TooShort)?;
        out.clear();
        out.extend_from_slice(header);
        match self {
            Cipher::CmSha1 {
                enc,
                auth,
                salt,
                hmac,
            } => {
                let tag_at = packet
                    .len()
                    .checked_sub(Aes128CmSha1_80::HMAC_TAG_LEN)
                    .filter(|&at| at >= header_len)
                    .ok_or(OpenError::TooShort)?;
                let (signed, tag) = packet.split_at(tag_at);
                let sha1_hmac = |k: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(k, parts);
                if !Aes128CmSha1_80::rtp_verify(sha1_hmac, &auth[..], signed, index, tag) {
                    return Err(OpenError::Auth);
                }
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                let body = &signed[header_len..];
                out.resize(header_len + body.len() + CTR_SLACK, 0);
                enc.decrypt(&iv, body, &mut out[header_len..])
                    .map_err(|_| OpenError::Auth)?;
                out.truncate(header_len + body.len());
            }
            Cipher::Gcm { enc, salt } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, index as u16);
                let body = gcm_body(packet, header_len, AeadAes128Gcm::TAG_LEN)?;
                out.resize(header_len + body.len() - AeadAes128Gcm::TAG_LEN, 0);
                let n = enc
                    .decrypt(&iv, header, body, &mut out[header_len..])
                    .map_err(|_| OpenError::Auth)?;
                out.truncate(header_len + n);
            }
        }
        Ok(())
    }
}

/// The encrypted payload and tag of an AEAD packet: at least the tag (the provider asserts it).
fn gcm_body(packet: &[u8], header_len: usize, tag_len: usize) -> Result<&[u8], OpenError> {
    packet
        .get(header_len..)
        .filter(|body| body.len() >= tag_len)
        .ok_or(OpenError::TooShort)
}

/// This end's outgoing half of DTLS-exported material (RFC 5764 §4.2: client key, server key, client
/// salt, server salt): the client's (left) half when `active`.
fn outgoing_half(
    material: &[u8],
    active: bool,
    key_len: usize,
    salt_len: usize,
) -> Option<(&[u8], &[u8])> {
    if material.len() != 2 * (key_len + salt_len) {
        return None;
    }
    let (key_at, salt_at) = if active {
        (0, 2 * key_len)
    } else {
        (key_len, 2 * key_len + salt_len)
    };
    Some((
        &material[key_at..key_at + key_len],
        &material[salt_at..salt_at + salt_len],
    ))
}

/// One direction's master key and salt.
struct Master<const KEY: usize, const SALT: usize> {
    key: [u8; KEY],
    salt: [u8; SALT],
}

impl<const KEY: usize, const SALT: usize> Master<KEY, SALT> {
    /// A master key and salt of this profile's lengths.
    fn new(key: &[u8], salt: &[u8]) -> Option<Self> {
        Some(Self {
            key: key.try_into().ok()?,
            salt: salt.try_into().ok()?,
        })
    }

    /// RFC 3711 §4.3.1 (key derivation rate 0, index 0): AES in counter mode keyed with the master key
    /// over (master salt XOR label at byte 7) || block counter.
    fn derive<const N: usize>(&self, srtp: &dyn SrtpProvider, label: u8) -> [u8; N] {
        let mut input = [0u8; 16];
        input[..SALT].copy_from_slice(&self.salt);
        input[7] ^= label;
        let mut out = [0u8; N];
        let mut block = [0u8; 32];
        for (round, chunk) in out.chunks_mut(16).enumerate() {
            input[14..].copy_from_slice(&(round as u16).to_be_bytes());
            match KEY {
                16 => srtp.srtp_aes_128_ecb_round(&self.key, &input, &mut block),
                _ => srtp.srtp_aes_256_ecb_round(&self.key, &input, &mut block),
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vectors are hex"))
            .collect()
    }

    fn provider() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    /// RFC 3711 appendix B.3: the session keys of the example master key and salt.
    #[test]
    fn derives_the_rfc_3711_session_keys() {
        let master = Master::<16, 14> {
            key: hex("E1F97A0D3E018BE0D64FA32C06DE4139")
                .try_into()
                .expect("16 bytes"),
            salt: hex("0EC675AD498AFEEBB6960B3AABE6")
                .try_into()
                .expect("14 bytes"),
        };
        let p = provider();
        let key: [u8; 16] = master.derive(p.srtp_provider, LABEL_RTP_ENCRYPTION);
        let salt: [u8; 14] = master.derive(p.srtp_provider, LABEL_RTP_SALT);
        let auth: [u8; 20] = master.derive(p.srtp_provider, LABEL_RTP_AUTHENTICATION);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn takes_its_own_half_of_the_material_and_refuses_a_wrong_length() {
        let material: Vec<u8> = (0..60).collect();
        let client = outgoing_half(&material, true, 16, 14).expect("60 bytes for CM");
        let server = outgoing_half(&material, false, 16, 14).expect("60 bytes for CM");
        assert_eq!((client.0[0], client.1[0]), (0, 32));
        assert_eq!((server.0[0], server.1[0]), (16, 46));
        assert_eq!(client.1.len(), 14);
        assert!(outgoing_half(&material, true, 16, 12).is_none());
    }

    /// ring's AES-GCM (what the core seals and opens with) gives the bytes str0m's provider gives, so a
    /// client's SRTP (str0m's, a browser's) opens what the core seals, and the other way round.
    #[test]
    fn gcm_seals_and_opens_as_the_provider_does() {
        let srtp = provider().srtp_provider;
        let iv: [u8; 12] = std::array::from_fn(|i| i as u8 * 3);
        let aad = [0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        for len in [0usize, 1, 33, 100, 1_200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            for key_len in [16usize, 32] {
                let key: Vec<u8> = (0..key_len).map(|i| (i * 7 + 1) as u8).collect();
                let ours = GcmCipher::new(&key).expect("a 16- or 32-byte key");
                let mut sealed = vec![0u8; len + TAG_LEN];
                ours.encrypt(&iv, &aad, &payload, &mut sealed)
                    .expect("sealing never fails");
                let mut expected = vec![0u8; len + TAG_LEN];
                let mut opened = vec![0u8; len];
                // The provider's 128- and 256-bit ciphers are different types: the same steps for each.
                macro_rules! provider_seals_and_opens_ours {
                    ($gcm:expr, $n:literal) => {{
                        let key: [u8; $n] = key.clone().try_into().expect("the key's length");
                        let gcm = $gcm;
                        gcm.create_cipher(key, true)
                            .encrypt(&iv, &aad, &payload, &mut expected)
                            .expect("the provider seals");
                        gcm.create_cipher(key, false)
                            .decrypt(&iv, &[&aad], &sealed, &mut opened)
                            .expect("the provider opens ours")
                    }};
                }
                let n = match key_len {
                    16 => provider_seals_and_opens_ours!(srtp.aead_aes_128_gcm(), 16),
                    _ => provider_seals_and_opens_ours!(srtp.aead_aes_256_gcm(), 32),
                };
                assert_eq!(sealed, expected, "AES-{}-GCM, {len} bytes", key_len * 8);
                assert_eq!((n, &opened), (len, &payload));
                let mut back = vec![0u8; len];
                assert_eq!(
                    ours.decrypt(&iv, &aad, &expected, &mut back)
                        .expect("ours opens the provider's"),
                    len
                );
                assert_eq!(back, payload);
                let mut forged = expected.clone();
                forged[len] ^= 1;
                assert!(
                    ours.decrypt(&iv, &aad, &forged, &mut back).is_err(),
                    "a bad tag is refused"
                );
                assert!(ours
                    .decrypt(&iv, &aad, &forged[..TAG_LEN - 1], &mut back)
                    .is_err());
            }
        }
    }

    #[test]
    fn seals_with_each_profile_and_the_tag_depends_on_the_index() {
        let p = provider();
        for (profile, len, tag) in [
            (SrtpProfile::AES128_CM_SHA1_80, 60, 10),
            (SrtpProfile::AEAD_AES_128_GCM, 56, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 88, 16),
        ] {
            let keys = ExportedKeys {
                material: (0..len as u8).collect(),
                profile,
                active: false,
            };
            let mut sender = SrtpSender::new(&p, &keys).expect("a known profile");
            let header = [0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
            let payload = [0xAAu8; 33];
            let seal = |sender: &mut SrtpSender, index| {
                let mut out = header.to_vec();
                sender
                    .seal(&mut out, &payload, 7, index)
                    .expect("sealing never fails for a sane packet");
                out
            };
            let a = seal(&mut sender, 1);
            assert_eq!(a.len(), header.len() + payload.len() + tag, "{profile:?}");
            assert_eq!(&a[..12], &header, "the header stays clear");
            assert_ne!(&a[12..45], &payload[..], "the payload is encrypted");
            let b = seal(&mut sender, 1 + (1 << 16));
            assert_ne!(a, b, "{profile:?}: another ROC, another keystream and tag");
        }
    }
}
