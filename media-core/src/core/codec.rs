//! The codec set Chorus negotiates: Opus only (with RED where offered), the audio header extensions, and
//! the payload types a negotiated session ended up with.

use str0m::change::SdpOffer;
use str0m::format::{Codec, CodecConfig, FormatParams, PayloadParams};
use str0m::media::{Frequency, Mid, Pt};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Rtc, RtcConfig};

/// The mids of the m-lines of an SDP (offer or answer; str0m does not name its media-line type) that
/// offer RED wrapping Opus.
macro_rules! red_mids {
    ($sdp:expr) => {
        $sdp.media_lines
            .iter()
            .filter(|m| {
                m.rtp_params()
                    .iter()
                    .any(|p| p.spec().codec == str0m::format::Codec::Opus && p.red().is_some())
            })
            .map(|m| m.mid())
            .collect::<Vec<str0m::media::Mid>>()
    };
}
pub(crate) use red_mids;

/// Local header-extension ids (the remote's ids win where it offers the same extension).
const AUDIO_LEVEL_EXT_ID: u8 = 1;
const MID_EXT_ID: u8 = 4;
const CSRC_LEVELS_EXT_ID: u8 = 12;

/// The Opus payload type Chorus offers (the value browsers use).
const OPUS_PT: u8 = 111;

/// The RED payload type Chorus offers (the value Chrome uses); str0m takes the remote's when it differs.
const RED_PT: u8 = 63;

/// RTP mode with Opus as the only codec: 48 kHz, `minptime=10`, in-band FEC, and DTX welcome (the fmtp
/// asks the remote sender to stop sending in silence; forwarding passes the timestamp gaps through). With
/// `red`, RFC 2198 redundancy (`red/48000/2`, fmtp `111/111`) is offered, or accepted where the remote
/// offers it; str0m keeps it only when both sides have it, and lists it before Opus in the m-line (libwebrtc
/// sends RED only then).
pub(crate) fn opus_only(config: RtcConfig, red: bool, stereo: bool) -> RtcConfig {
    let config = config
        .set_rtp_mode(true)
        .clear_codecs()
        .set_stats_interval(None);
    // Header extensions: only what audio needs. The audio level (RFC 6464) drives slot selection and
    // speaker detection; the MID maps a new SSRC to its m-line; RFC 6465 carries mixed streams' per-talker
    // levels (at a free id; str0m moves it to the remote's id when offered). No transport-wide sequence
    // numbers or absolute send time: Chorus runs no bandwidth estimation for audio, and negotiating TWCC
    // makes every receiver send a feedback packet every 50 ms (≈ 20 datagrams/s each to decrypt).
    let mut exts = ExtensionMap::empty();
    exts.set(AUDIO_LEVEL_EXT_ID, Extension::AudioLevel);
    exts.set(MID_EXT_ID, Extension::RtpMid);
    exts.set(
        CSRC_LEVELS_EXT_ID,
        crate::speakers::csrc_levels::extension(),
    );
    let mut config = config.set_extension_map(exts);
    if red {
        *config.codec_config() = CodecConfig::new_from_payload_params(vec![opus_with_red(stereo)]);
        return config;
    }
    config.codec_config().add_config(
        Pt::from(OPUS_PT),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            stereo: stereo.then_some(true),
            sprop_stereo: stereo.then_some(true),
            ..Default::default()
        },
    );
    config
}

/// Opus with the same format parameters as [`opus_only`] and RED linked to it. str0m 0.25 links RED to a
/// codec only through `enable_opus` (whose fmtp lacks `usedtx`) or through SDP, so the parameters are read
/// from a fixed SDP fragment.
fn opus_with_red(stereo: bool) -> PayloadParams {
    let stereo = if stereo {
        ";stereo=1;sprop-stereo=1"
    } else {
        ""
    };
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {RED_PT} {OPUS_PT}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
         a=rtcp-mux\r\na=rtpmap:{RED_PT} red/48000/2\r\na=fmtp:{RED_PT} {OPUS_PT}/{OPUS_PT}\r\n\
         a=rtpmap:{OPUS_PT} opus/48000/2\r\na=rtcp-fb:{OPUS_PT} transport-cc\r\n\
         a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1;usedtx=1{stereo}\r\n"
    );
    let offer = SdpOffer::from_sdp_string(&sdp).expect("the fixed Opus/RED SDP fragment parses");
    offer
        .media_lines
        .first()
        .and_then(|m| {
            m.rtp_params()
                .into_iter()
                .find(|p| p.spec().codec == Codec::Opus && p.red().is_some())
        })
        .expect("the fixed Opus/RED SDP fragment has Opus with RED")
}

/// The RED payload type negotiated for the Opus of `mid`, if any.
pub(crate) fn red_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let config = rtc.codec_config();
    media.remote_pts().iter().find_map(|pt| {
        config
            .iter()
            .find(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
            .and_then(|p| p.red())
    })
}

/// The Opus payload type negotiated on `mid`, if any.
pub(crate) fn opus_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let config = rtc.codec_config();
    media.remote_pts().iter().copied().find(|pt| {
        config
            .iter()
            .any(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
    })
}
