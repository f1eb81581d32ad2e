//! The SDP a WHIP/WHEP resource reads and writes besides the offer and answer themselves: the offer's
//! audio m-lines, trickle-ICE fragments (RFC 8840, `application/trickle-ice-sdpfrag`) in `PATCH`, and the
//! entity tag of the session's ICE credentials (RFC 9725 §4.3).

use signaling::media::MediaError;

/// The audio m-lines of an offer (lines counted as the media core's offer check counts them).
pub fn audio_lines(sdp: &str) -> usize {
    sdp.split(['\n', '\r'])
        .map(str::trim_start)
        .filter(|l| l.starts_with("m=audio"))
        .count()
}

/// The entity tag of a session's ICE credentials: new at every ICE restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Etag(String);

impl Etag {
    pub fn random() -> Etag {
        Etag(format!("\"{}\"", crate::random::hex(8)))
    }

    /// The header value, quotes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `PATCH` request's fragment and precondition.
#[derive(Debug)]
pub struct Patch {
    ufrag: Option<String>,
    pwd: Option<String>,
    if_match: Option<String>,
}

/// What a `PATCH` did.
#[derive(Debug)]
pub enum Patched {
    /// Candidates (or an end-of-candidates) only: nothing to do for an ICE-lite server. `204`.
    Trickled,
    /// New ICE credentials: the server's new credentials and candidates. `200` with the fragment.
    Restarted { fragment: String, etag: Etag },
}

/// Why a `PATCH` was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("a PATCH needs If-Match: the session's ETag, or * for an ICE restart")]
    PreconditionRequired,
    #[error("If-Match does not match the session's ICE credentials (ETag)")]
    PreconditionFailed,
    #[error("the fragment has a=ice-ufrag without a=ice-pwd (or the other way round)")]
    BadFragment,
    #[error("the ICE restart failed: {0}")]
    Restart(MediaError),
}

/// The value of the first `a=<name>:` line of `sdp`, trimmed.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()).map(str::trim))
}

impl Patch {
    pub fn new(fragment: &str, if_match: Option<&str>) -> Result<Patch, PatchError> {
        let ufrag = attribute(fragment, "ice-ufrag").map(str::to_owned);
        let pwd = attribute(fragment, "ice-pwd").map(str::to_owned);
        if ufrag.is_some() != pwd.is_some() {
            return Err(PatchError::BadFragment);
        }
        Ok(Patch {
            ufrag,
            pwd,
            if_match: if_match.map(|v| v.trim().to_owned()),
        })
    }

    /// RFC 9725 §4.3: a `PATCH` names the session's current ETag, or `*` (an ICE restart).
    pub fn check_etag(&self, etag: &Etag) -> Result<(), PatchError> {
        match self.if_match.as_deref() {
            None => Err(PatchError::PreconditionRequired),
            Some("*") => Ok(()),
            Some(tag) if tag == etag.as_str() => Ok(()),
            Some(_) => Err(PatchError::PreconditionFailed),
        }
    }

    /// The ICE restart offer: `offer` with the fragment's new credentials; `None` when the fragment keeps
    /// the offer's credentials (or names none): plain trickle.
    pub fn restarted_offer(&self, offer: &str) -> Option<String> {
        let (ufrag, pwd) = (self.ufrag.as_deref()?, self.pwd.as_deref()?);
        if attribute(offer, "ice-ufrag") == Some(ufrag) {
            return None;
        }
        let mut out = String::with_capacity(offer.len());
        for line in offer.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with("a=ice-ufrag:") {
                out.push_str("a=ice-ufrag:");
                out.push_str(ufrag);
            } else if line.starts_with("a=ice-pwd:") {
                out.push_str("a=ice-pwd:");
                out.push_str(pwd);
            } else {
                out.push_str(line);
            }
            out.push_str("\r\n");
        }
        Some(out)
    }
}

/// The trickle-ICE fragment of an ICE restart's answer: ICE-lite, the new credentials, and the first
/// m-line with its mid, candidates and end-of-candidates (the session is bundled on it).
pub fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    let mut push = |l: &str| {
        out.push_str(l);
        out.push_str("\r\n");
    };
    if answer.lines().any(|l| l.trim_end() == "a=ice-lite") {
        push("a=ice-lite");
    }
    for name in ["ice-ufrag", "ice-pwd"] {
        if let Some(v) = attribute(answer, name) {
            push(&format!("a={name}:{v}"));
        }
    }
    let mut sections = answer.split("\nm=").skip(1);
    if let Some(first) = sections.next() {
        let mut lines = first.lines().map(|l| l.trim_end_matches('\r'));
        if let Some(m) = lines.next() {
            push(&format!("m={m}"));
        }
        for line in lines {
            if line.starts_with("a=mid:")
                || line.starts_with("a=candidate:")
                || line == "a=end-of-candidates"
            {
                push(line);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:old1\r\n\
        a=ice-pwd:oldpasswordoldpassword\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";

    #[test]
    fn audio_lines_are_counted_and_video_is_not() {
        assert_eq!(audio_lines(OFFER), 1);
        assert_eq!(audio_lines("v=0\r\nm=video 9 RTP 96\r\n"), 0);
    }

    #[test]
    fn a_fragment_with_new_credentials_is_an_ice_restart_of_the_offer() {
        let frag = "a=ice-ufrag:new2\r\na=ice-pwd:newpasswordnewpassword\r\nm=audio 9 RTP 0\r\n";
        let patch = Patch::new(frag, Some("*")).expect("a valid fragment");
        let offer = patch.restarted_offer(OFFER).expect("new credentials");
        assert!(offer.contains("a=ice-ufrag:new2\r\n") && !offer.contains("old1"));
        assert!(offer.contains("a=ice-pwd:newpasswordnewpassword\r\n"));
        assert_eq!(audio_lines(&offer), 1);
        // The same credentials, or none: trickle.
        let same = Patch::new("a=ice-ufrag:old1\r\na=ice-pwd:x\r\n", None).expect("valid");
        assert!(same.restarted_offer(OFFER).is_none());
        let candidates = Patch::new("a=candidate:1 1 udp 1 10.0.0.1 5 typ host\r\n", None);
        assert!(candidates.expect("valid").restarted_offer(OFFER).is_none());
        assert!(matches!(
            Patch::new("a=ice-ufrag:x\r\n", None),
            Err(PatchError::BadFragment)
        ));
    }

    #[test]
    fn if_match_must_name_the_current_etag_or_any() {
        let etag = Etag::random();
        let check = |v: Option<&str>| Patch::new("", v).expect("valid").check_etag(&etag);
        assert!(check(Some(etag.as_str())).is_ok());
        assert!(check(Some("*")).is_ok());
        assert!(matches!(
            check(Some("\"0\"")),
            Err(PatchError::PreconditionFailed)
        ));
        assert!(matches!(check(None), Err(PatchError::PreconditionRequired)));
    }

    #[test]
    fn the_answer_fragment_has_the_credentials_and_the_first_lines_candidates() {
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\na=rtpmap:111 opus/48000/2\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let frag = answer_fragment(answer);
        assert_eq!(
            frag,
            "a=ice-lite\r\na=ice-ufrag:srv\r\na=ice-pwd:srvpwd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
