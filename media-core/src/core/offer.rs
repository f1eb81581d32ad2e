//! Limits on a client's SDP offer, checked before str0m parses it.
//!
//! str0m's cost grows with the offer: a 59 KB offer with 507 audio m-lines took ~6 MB and ~40 ms of the
//! worker thread and got a 314 KB answer (issue 10). Chorus needs one microphone and at most
//! [`MAX_SLOTS`] receive slots, so anything beyond that is refused by counting lines, which costs nothing.

use crate::sfu::slots::MAX_SLOTS;

/// Audio m-lines accepted: the microphone and one per slot.
pub const MAX_AUDIO_M_LINES: usize = 1 + MAX_SLOTS;
/// m-lines of any kind accepted (a browser may add a data channel or a video line we reject).
pub const MAX_M_LINES: usize = 20;
/// Bytes accepted: the signaling frame limit, so the core bounds its own input too. A browser's offer with
/// [`MAX_AUDIO_M_LINES`] audio lines is about 20 KB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Why an offer is refused before parsing. The message only quotes counts, never the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer is {bytes} bytes; at most {MAX_OFFER_BYTES} are accepted")]
    TooLarge { bytes: usize },
    #[error(
        "the offer has {audio} audio m-lines; at most {MAX_AUDIO_M_LINES} are accepted \
         (a microphone and up to {MAX_SLOTS} slots)"
    )]
    TooManyAudioLines { audio: usize },
    #[error("the offer has {total} m-lines; at most {MAX_M_LINES} are accepted")]
    TooManyMediaLines { total: usize },
}

/// Check an offer's size and m-line counts. Lines are counted generously (leading whitespace, any line
/// ending), so no spelling gets more m-lines past this check than str0m would see.
pub fn check_offer(sdp: &str) -> Result<(), OfferError> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge { bytes: sdp.len() });
    }
    let (mut total, mut audio) = (0, 0);
    for line in sdp.split(['\n', '\r']).map(str::trim_start) {
        if let Some(rest) = line.strip_prefix("m=") {
            total += 1;
            if rest.starts_with("audio") {
                audio += 1;
            }
        }
    }
    if audio > MAX_AUDIO_M_LINES {
        return Err(OfferError::TooManyAudioLines { audio });
    }
    if total > MAX_M_LINES {
        return Err(OfferError::TooManyMediaLines { total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(audio: usize, video: usize) -> String {
        let mut s = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
        for _ in 0..audio {
            s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n");
        }
        for _ in 0..video {
            s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        }
        s
    }

    #[test]
    fn a_microphone_and_sixteen_slots_pass_and_one_more_line_does_not() {
        assert_eq!(check_offer(&offer(MAX_AUDIO_M_LINES, 0)), Ok(()));
        assert_eq!(
            check_offer(&offer(MAX_AUDIO_M_LINES + 1, 0)),
            Err(OfferError::TooManyAudioLines { audio: 18 })
        );
        assert_eq!(check_offer(&offer(17, 3)), Ok(()));
        assert_eq!(
            check_offer(&offer(1, 20)),
            Err(OfferError::TooManyMediaLines { total: 21 })
        );
        assert_eq!(
            check_offer(&offer(507, 0)),
            Err(OfferError::TooManyAudioLines { audio: 507 })
        );
    }

    #[test]
    fn odd_line_endings_and_indentation_are_still_counted() {
        let sneaky = "v=0\nm=audio 9 RTP 0\r m=audio 9 RTP 0\n\tm=audio 9 RTP 0\n".repeat(6);
        assert_eq!(
            check_offer(&sneaky),
            Err(OfferError::TooManyAudioLines { audio: 18 })
        );
    }

    #[test]
    fn oversized_offers_are_refused_and_the_message_quotes_no_content() {
        let big = format!("v=0\r\na=x:{}\r\n", "<script>".repeat(10_000));
        let e = check_offer(&big).expect_err("80 KB is too large");
        assert!(matches!(e, OfferError::TooLarge { .. }));
        assert!(!e.to_string().contains("script"), "{e}");
    }
}
