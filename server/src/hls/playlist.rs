//! The media playlist (RFC 8216bis §4.4) of a room's window of segments.

use std::fmt::Write;
use std::sync::Arc;

use super::segmenter::Segment;
use crate::recording::rfc3339;

/// The playlist file of the init segment and the segments, relative to the playlist's URL.
pub const INIT_FILE: &str = "init.mp4";
pub const SEGMENT_SUFFIX: &str = ".m4s";

/// What a playlist is made of.
pub struct Playlist<'a> {
    pub segments: &'a [Arc<Segment>],
    pub discontinuity_sequence: u64,
    /// `EXT-X-TARGETDURATION`, whole seconds.
    pub target_duration_s: u64,
    /// Appended to every URI (`?token=…` when the playlist was asked for with a token in its query, so
    /// that players which do not carry a query over fetch the init segment and segments with it).
    pub query: &'a str,
}

impl Playlist<'_> {
    /// The playlist's text. Every segment carries its `EXT-X-PROGRAM-DATE-TIME` (players map wall-clock
    /// time, and each run's start, without counting durations); a new run is an `EXT-X-DISCONTINUITY`.
    pub fn render(&self) -> String {
        let first = self.segments.first().map_or(0, |s| s.msn);
        let mut out = String::with_capacity(256 + 96 * self.segments.len());
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n\
             #EXT-X-MAP:URI=\"{INIT_FILE}{}\"\n",
            self.target_duration_s, self.discontinuity_sequence, self.query,
        );
        for s in self.segments {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let ms = s.duration_ms();
            let _ = write!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{}.{:03},\n{}{SEGMENT_SUFFIX}{}\n",
                rfc3339(s.start_ms),
                ms / 1000,
                ms % 1000,
                s.msn,
                self.query,
            );
        }
        out
    }
}

/// `?token=…` for a token given in the query, percent-encoded where it is not URL-safe.
pub fn token_query(token: Option<&str>) -> String {
    let Some(token) = token else {
        return String::new();
    };
    let mut q = String::from("?token=");
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            q.push(b as char);
        } else {
            let _ = write!(q, "%{b:02X}");
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use super::*;

    fn segment(msn: u64, frames: u32, start_ms: u64, discontinuity: bool) -> Arc<Segment> {
        Arc::new(Segment {
            msn,
            bytes: Bytes::new(),
            frames,
            start_ms,
            made_ms: start_ms + u64::from(frames) * 20,
            discontinuity,
            crc: 0,
            hits: AtomicU64::new(0),
        })
    }

    #[test]
    fn a_playlist_lists_the_window_with_dates_durations_and_discontinuities() {
        let segments = [
            segment(881_000_000, 100, 1_762_000_000_000, false),
            segment(881_000_001, 37, 1_762_000_002_000, false),
            segment(881_000_040, 100, 1_762_000_080_000, true),
        ];
        let text = Playlist {
            segments: &segments,
            discontinuity_sequence: 3,
            target_duration_s: 2,
            query: "",
        }
        .render();
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:881000000\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:3\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-01T12:26:40.000Z\n\
             #EXTINF:2.000,\n\
             881000000.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-01T12:26:42.000Z\n\
             #EXTINF:0.740,\n\
             881000001.m4s\n\
             #EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-01T12:28:00.000Z\n\
             #EXTINF:2.000,\n\
             881000040.m4s\n"
        );
    }

    #[test]
    fn a_query_token_is_carried_to_every_uri_and_encoded() {
        let segments = [segment(5, 50, 0, false)];
        let q = token_query(Some("ab.c_d-9/+="));
        assert_eq!(q, "?token=ab.c_d-9%2F%2B%3D");
        let text = Playlist {
            segments: &segments,
            discontinuity_sequence: 0,
            target_duration_s: 1,
            query: &q,
        }
        .render();
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4?token=ab.c_d-9%2F%2B%3D\"\n"));
        assert!(text.contains("\n5.m4s?token=ab.c_d-9%2F%2B%3D\n"));
        assert_eq!(token_query(None), "");
    }
}
