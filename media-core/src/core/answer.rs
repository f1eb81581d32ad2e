//! The last touch on str0m's SDP answer, so that clients other than browsers can use it.
//!
//! str0m 0.25 writes its answer for a trickling full-ICE agent, and has no setting to do otherwise: it puts
//! the local candidates in the first m-line only, never writes `a=end-of-candidates`, always says
//! `a=ice-options:trickle`, and echoes every header extension without the direction the offer gave it. A
//! client that reads the candidates of another m-line of the BUNDLE group (aiortc reads the last one) finds
//! none and never connects. [`finish_answer`] rewrites the answer text:
//!
//! - the answer's host candidates and `a=end-of-candidates` in every m-line of the BUNDLE group (the server
//!   is ICE-lite and never trickles: its candidates are complete when it answers);
//! - no `trickle` in `a=ice-options` (the line goes when nothing else is left in it);
//! - every `a=extmap` the offer gave a direction gets the compatible one (RFC 8285 section 6: an offered
//!   `recvonly` is answered `sendonly`, `sendonly` is answered `recvonly`, `inactive` stays `inactive`);
//! - no `maxplaybackrate=0` in an `a=fmtp` (a zero rate means nothing can be played).
//!
//! Plain text handling: any line ending (CRLF or LF) is read, CRLF is written, odd input is passed through.

/// The str0m answer `answer_sdp` to `offer_sdp`, rewritten as described in the module documentation.
pub fn finish_answer(offer_sdp: &str, answer_sdp: &str) -> String {
    let offer = Sdp::parse(offer_sdp);
    let mut answer = Sdp::parse(answer_sdp);
    let bundle = answer.bundle_mids();
    let candidates: Vec<String> = answer
        .sections()
        .flat_map(|s| s.iter())
        .filter(|l| l.starts_with("a=candidate:"))
        .cloned()
        .collect();

    answer.session.retain_mut(strip_session_line);
    for (index, media) in answer.media.iter_mut().enumerate() {
        let mid = section_mid(media).map(str::to_owned);
        let offered = mid
            .as_deref()
            .and_then(|mid| offer.media.iter().find(|m| section_mid(m) == Some(mid)))
            .or_else(|| offer.media.get(index));
        let bundled = match (&bundle, &mid) {
            (Some(group), Some(mid)) => group.iter().any(|m| m == mid),
            // Without a BUNDLE group every m-line that is not rejected (port 0) carries its candidates.
            (None, _) => !media.first().is_some_and(|m| is_rejected(m)),
            (Some(_), None) => false,
        };
        let mut lines = Vec::with_capacity(media.len() + candidates.len() + 1);
        for line in media.drain(..) {
            if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
                continue;
            }
            let Some(line) = rewrite_media_line(line, &offer.session, offered) else {
                continue;
            };
            lines.push(line);
        }
        if bundled {
            lines.extend(candidates.iter().cloned());
            lines.push("a=end-of-candidates".to_owned());
        }
        *media = lines;
    }
    answer.to_text()
}

/// An SDP as lines: the session part, then one list per m-line starting with its `m=` line.
struct Sdp {
    session: Vec<String>,
    media: Vec<Vec<String>>,
}

impl Sdp {
    fn parse(text: &str) -> Sdp {
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line.starts_with("m=") {
                sdp.media.push(vec![line.to_owned()]);
            } else if let Some(media) = sdp.media.last_mut() {
                media.push(line.to_owned());
            } else {
                sdp.session.push(line.to_owned());
            }
        }
        sdp
    }

    fn sections(&self) -> impl Iterator<Item = &Vec<String>> {
        std::iter::once(&self.session).chain(self.media.iter())
    }

    /// The mids of the (first) BUNDLE group, if there is one.
    fn bundle_mids(&self) -> Option<Vec<String>> {
        self.session.iter().find_map(|l| {
            let mids = l.strip_prefix("a=group:BUNDLE")?;
            Some(mids.split_whitespace().map(str::to_owned).collect())
        })
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        for line in self.sections().flatten() {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out
    }
}

fn section_mid(section: &[String]) -> Option<&str> {
    section
        .iter()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(str::trim)
}

/// Whether an `m=` line has port 0 (RFC 3264: a rejected or disabled stream).
fn is_rejected(m_line: &str) -> bool {
    m_line.split_whitespace().nth(1) == Some("0")
}

/// A session-level line, rewritten in place; `false` drops it.
fn strip_session_line(line: &mut String) -> bool {
    if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
        return false;
    }
    match without_trickle(line) {
        Some(kept) => {
            *line = kept;
            true
        }
        None => false,
    }
}

/// A line of an answer's m-section, rewritten; `None` drops it.
fn rewrite_media_line(
    line: String,
    offer_session: &[String],
    offered: Option<&Vec<String>>,
) -> Option<String> {
    if line.starts_with("a=ice-options:") {
        return without_trickle(&line);
    }
    if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
        return without_zero_playback_rate(fmtp);
    }
    if let Some(extmap) = line.strip_prefix("a=extmap:") {
        let offered_lines = offered.map(|m| m.as_slice()).unwrap_or(&[]);
        return Some(extmap_answered(extmap, offer_session, offered_lines).unwrap_or(line));
    }
    Some(line)
}

/// An `a=ice-options` line without `trickle`; `None` when nothing is left. Other lines are kept as they are.
fn without_trickle(line: &str) -> Option<String> {
    let Some(options) = line.strip_prefix("a=ice-options:") else {
        return Some(line.to_owned());
    };
    if !options.split_whitespace().any(|o| o == "trickle") {
        return Some(line.to_owned());
    }
    let kept: Vec<&str> = options
        .split_whitespace()
        .filter(|o| *o != "trickle")
        .collect();
    (!kept.is_empty()).then(|| format!("a=ice-options:{}", kept.join(" ")))
}

/// An `a=fmtp:<pt> <params>` line (given without `a=fmtp:`) without `maxplaybackrate=0`; `None` when no
/// parameter is left.
fn without_zero_playback_rate(fmtp: &str) -> Option<String> {
    let zero_rate = |p: &str| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("maxplaybackrate") && v.trim().parse::<u64>() == Ok(0)
        })
    };
    let (pt, params) = fmtp.split_once(' ').unwrap_or((fmtp, ""));
    if !params.split(';').any(zero_rate) {
        return Some(format!("a=fmtp:{fmtp}"));
    }
    let kept: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !zero_rate(p))
        .collect();
    (!kept.is_empty()).then(|| format!("a=fmtp:{pt} {}", kept.join(";")))
}

/// The parts of `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (given without `a=extmap:`): id, RFC 8285
/// direction, URI, attributes.
fn extmap_parts(extmap: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let (head, rest) = extmap.split_once(' ')?;
    let (id, direction) = match head.split_once('/') {
        Some((id, direction)) => (id, Some(direction)),
        None => (head, None),
    };
    let (uri, attributes) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((id, direction, uri, attributes))
}

/// The answer's `a=extmap` line with the direction compatible with the offer's for the same URI (the
/// m-section's own extmap first, then a session-level one); `None` leaves the line as it is.
fn extmap_answered(extmap: &str, offer_session: &[String], offered: &[String]) -> Option<String> {
    let (id, _, uri, attributes) = extmap_parts(extmap)?;
    let offered_direction = offered
        .iter()
        .chain(offer_session)
        .filter_map(|l| extmap_parts(l.strip_prefix("a=extmap:")?))
        .find(|(_, _, offered_uri, _)| *offered_uri == uri)
        .and_then(|(_, direction, _, _)| direction)?;
    let answered = match offered_direction {
        "recvonly" => "sendonly",
        "sendonly" => "recvonly",
        "inactive" => "inactive",
        // sendrecv (or anything unknown): the answer may use the extension both ways, as it says already.
        _ => return None,
    };
    let mut line = format!("a=extmap:{id}/{answered} {uri}");
    if !attributes.is_empty() {
        line.push(' ');
        line.push_str(attributes);
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peer::{Peer, PeerParams};
    use crate::ids::ParticipantId;
    use crate::testkit::client::{ClientConfig, ClientPeer};
    use str0m::change::SdpOffer;

    /// What aiortc 1.16 offers for the protocol's m-lines (a `sendrecv` microphone, two `recvonly` slots),
    /// as its `createOffer` wrote it, with a Chrome-style `recvonly` csrc-audio-level and an Opus fmtp added.
    /// Stored with LF line endings; [`aiortc_offer`] gives it with CRLF, as aiortc sends it.
    const AIORTC_OFFER_LF: &str = include_str!("answer_test_offer.sdp");

    fn aiortc_offer() -> String {
        AIORTC_OFFER_LF.replace('\n', "\r\n")
    }

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// str0m's answer to `offer` as the server's peer writes it before [`finish_answer`].
    fn str0m_answer(offer: &str) -> String {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs provider generates certificates");
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: 2,
            stereo: false,
        };
        let (_, answer) = Peer::from_parsed(
            epoch(),
            ParticipantId(1),
            &params,
            &[crate::core::net::LocalCandidate::udp(params.candidate_addr)],
            SdpOffer::from_sdp_string(offer).expect("the test offer parses"),
        )
        .expect("answer");
        answer
    }

    fn media_sections(sdp: &str) -> Vec<String> {
        sdp.split("\r\nm=").skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn str0m_alone_writes_what_aiortc_cannot_use() {
        // The reason for this module: if str0m ever fixes these, finish_answer may go.
        let answer = str0m_answer(&aiortc_offer());
        let sections = media_sections(&answer);
        assert_eq!(sections.len(), 3, "{answer}");
        assert!(sections[0].contains("a=candidate:"), "{answer}");
        assert!(!sections[2].contains("a=candidate:"), "{answer}");
        assert!(!answer.contains("a=end-of-candidates"), "{answer}");
        assert!(answer.contains("a=ice-options:trickle"), "{answer}");
        assert!(
            answer.contains("a=extmap:5 urn:ietf:params:rtp-hdrext:csrc-audio-level"),
            "{answer}"
        );
    }

    #[test]
    fn every_bundled_line_has_the_host_candidate_and_the_end_of_candidates() {
        let answer = finish_answer(&aiortc_offer(), &str0m_answer(&aiortc_offer()));
        assert!(answer.contains("a=group:BUNDLE 0 1 2"), "{answer}");
        let sections = media_sections(&answer);
        assert_eq!(sections.len(), 3, "{answer}");
        for section in &sections {
            let candidates: Vec<&str> = section
                .split("\r\n")
                .filter(|l| l.starts_with("a=candidate:"))
                .collect();
            assert_eq!(candidates.len(), 1, "{section}");
            assert!(candidates[0].contains(" udp "), "{section}");
            assert!(
                candidates[0].contains(" 127.0.0.1 5000 typ host"),
                "{section}"
            );
            assert_eq!(
                section
                    .split("\r\n")
                    .filter(|l| *l == "a=end-of-candidates")
                    .count(),
                1,
                "{section}"
            );
        }
        assert!(!answer.contains("trickle"), "{answer}");
        assert!(answer.ends_with("\r\n") && !answer.contains("\r\n\r\n"));
        // str0m reads it back (the Rust test client applies the answer this way).
        str0m::change::SdpAnswer::from_sdp_string(&answer).expect("the answer parses");
    }

    #[test]
    fn an_offered_extension_direction_is_answered_with_the_compatible_one() {
        let answer = finish_answer(&aiortc_offer(), &str0m_answer(&aiortc_offer()));
        assert_eq!(
            answer
                .matches("a=extmap:5/sendonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r\n")
                .count(),
            3,
            "{answer}"
        );
        // Extensions offered without a direction stay as str0m wrote them.
        assert_eq!(
            answer
                .matches("a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n")
                .count(),
            3,
            "{answer}"
        );
        let offer = aiortc_offer().replace("5/recvonly", "5/sendonly");
        let answer = finish_answer(&offer, &str0m_answer(&offer));
        assert_eq!(
            answer.matches("a=extmap:5/recvonly ").count(),
            3,
            "{answer}"
        );
    }

    #[test]
    fn the_rust_test_clients_answer_is_rewritten_the_same_way() {
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal address"),
            slots: 2,
            publish: true,
            red: 1,
        };
        let (_, offer) = ClientPeer::new(epoch(), client).expect("client offer");
        let raw = str0m_answer(&offer);
        let answer = finish_answer(&offer, &raw);
        assert_eq!(answer.matches("a=end-of-candidates").count(), 3, "{answer}");
        assert_eq!(answer.matches(" typ host").count(), 3, "{answer}");
        // Nothing else changes: the lines other than candidates and ice-options are str0m's, in order.
        let other = |sdp: &str| -> Vec<String> {
            sdp.split("\r\n")
                .filter(|l| {
                    !l.starts_with("a=candidate:")
                        && !l.starts_with("a=ice-options:")
                        && *l != "a=end-of-candidates"
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(other(&answer), other(&raw));
    }

    #[test]
    fn a_zero_max_playback_rate_is_dropped_and_other_parameters_kept() {
        assert_eq!(
            without_zero_playback_rate("111 minptime=10;maxplaybackrate=0;useinbandfec=1"),
            Some("a=fmtp:111 minptime=10;useinbandfec=1".to_owned())
        );
        assert_eq!(without_zero_playback_rate("111 maxplaybackrate=0"), None);
        assert_eq!(
            without_zero_playback_rate("111 maxplaybackrate=48000"),
            Some("a=fmtp:111 maxplaybackrate=48000".to_owned())
        );
        assert_eq!(
            without_zero_playback_rate("63 111/111"),
            Some("a=fmtp:63 111/111".to_owned())
        );
        let answer =
            str0m_answer(&aiortc_offer()).replace("usedtx=1", "usedtx=1;maxplaybackrate=0");
        let answer = finish_answer(&aiortc_offer(), &answer);
        assert!(!answer.contains("maxplaybackrate"), "{answer}");
        assert_eq!(answer.matches("usedtx=1\r\n").count(), 3, "{answer}");
    }

    #[test]
    fn other_ice_options_stay() {
        assert_eq!(
            without_trickle("a=ice-options:trickle ice2"),
            Some("a=ice-options:ice2".to_owned())
        );
        assert_eq!(without_trickle("a=ice-options:trickle"), None);
    }

    #[test]
    fn lf_line_endings_and_odd_input_neither_panic_nor_lose_lines() {
        let raw = str0m_answer(&aiortc_offer());
        let lf = finish_answer(AIORTC_OFFER_LF, &raw.replace("\r\n", "\n"));
        assert_eq!(lf, finish_answer(&aiortc_offer(), &raw));
        for (offer, answer) in [
            ("", ""),
            ("garbage", "garbage\r\n"),
            (
                "m=",
                "m=\na=extmap:\na=extmap:1\na=fmtp:\na=fmtp:1 ;;\na=mid:",
            ),
            (
                "a=extmap:1/recvonly",
                "a=group:BUNDLE\r\nm=audio 0\r\na=mid:x",
            ),
            (
                "m=audio\r\na=extmap:1/recvonly u",
                "m=audio 9\r\na=extmap:1 u x",
            ),
        ] {
            let out = finish_answer(offer, answer);
            assert!(out.is_empty() || out.ends_with("\r\n"), "{out:?}");
        }
        assert_eq!(
            finish_answer(
                "m=audio\r\na=extmap:1/recvonly u",
                "m=audio 9\r\na=extmap:1 u x"
            ),
            "m=audio 9\r\na=extmap:1/sendonly u x\r\na=end-of-candidates\r\n"
        );
    }
}
