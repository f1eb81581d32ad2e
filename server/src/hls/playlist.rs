//! The media playlist (RFC 8216bis §4.4) of a room's window of segments.

use std::fmt::Write;
use std::sync::Arc;

use super::segmenter::{Open, Part, Segment};
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
    /// LL-HLS: the part target (`EXT-X-PART-INF`), and the segment being cut with its parts so far;
    /// `None`: no parts.
    pub parts: Option<Parts<'a>>,
}

/// What an LL-HLS playlist adds.
pub struct Parts<'a> {
    pub target_ms: u32,
    pub open: Option<&'a Open>,
}

/// A part's file name: `{msn}.{index}.m4s`.
fn part_uri(out: &mut String, msn: u64, index: usize, query: &str) {
    let _ = write!(out, "{msn}.{index}{SEGMENT_SUFFIX}{query}");
}

impl Playlist<'_> {
    /// The playlist's text. Every segment carries its `EXT-X-PROGRAM-DATE-TIME` (players map wall-clock
    /// time, and each run's start, without counting durations); a new run is an `EXT-X-DISCONTINUITY`.
    pub fn render(&self) -> String {
        let first = self.segments.first().map_or(0, |s| s.msn);
        let mut out = String::with_capacity(512 + 256 * self.segments.len());
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
            self.target_duration_s, self.discontinuity_sequence,
        );
        if let Some(parts) = &self.parts {
            // The hold-back the spec recommends: three part targets.
            let _ = write!(
                out,
                ",PART-HOLD-BACK={}\n#EXT-X-PART-INF:PART-TARGET={}",
                seconds(3 * u64::from(parts.target_ms)),
                seconds(u64::from(parts.target_ms)),
            );
        }
        let _ = writeln!(out, "\n#EXT-X-MAP:URI=\"{INIT_FILE}{}\"", self.query);
        // Parts are listed for the segments within three target durations of the end (RFC 8216bis
        // §4.4.4.9), and the open one.
        let listed_from = self.parts.as_ref().map_or(usize::MAX, |_| {
            let mut within = 0;
            let mut span_ms = 0;
            for s in self.segments.iter().rev() {
                if span_ms >= 3000 * self.target_duration_s {
                    break;
                }
                span_ms += s.duration_ms();
                within += 1;
            }
            self.segments.len() - within
        });
        for (i, s) in self.segments.iter().enumerate() {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(s.start_ms));
            if i >= listed_from {
                self.list_parts(&mut out, s.msn, &s.parts);
            }
            let _ = write!(
                out,
                "#EXTINF:{},\n{}{SEGMENT_SUFFIX}{}\n",
                seconds(s.duration_ms()),
                s.msn,
                self.query,
            );
        }
        if let Some(open) = self.parts.as_ref().and_then(|p| p.open) {
            if !open.parts.is_empty() {
                if open.discontinuity {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(open.start_ms));
                self.list_parts(&mut out, open.msn, &open.parts);
            }
            out.push_str("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"");
            part_uri(&mut out, open.msn, open.parts.len(), self.query);
            out.push_str("\"\n");
        }
        out
    }

    fn list_parts(&self, out: &mut String, msn: u64, parts: &[Part]) {
        for (index, p) in parts.iter().enumerate() {
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"",
                seconds(u64::from(p.frames) * 20)
            );
            part_uri(out, msn, index, self.query);
            // Every Opus packet decodes on its own.
            out.push_str("\",INDEPENDENT=YES\n");
        }
    }
}

/// Milliseconds as decimal seconds with three decimals.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
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
            parts: vec![
                Part {
                    frames: frames - frames / 2,
                    range: 0..1,
                    crc: 0,
                },
                Part {
                    frames: frames / 2,
                    range: 1..2,
                    crc: 0,
                },
            ],
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
            parts: None,
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
    fn an_ll_hls_playlist_lists_the_last_segments_parts_the_open_ones_and_a_preload_hint() {
        // 1 s segments of two 500 ms parts, a 1 s target: parts for the last three segments.
        let segments: Vec<Arc<Segment>> = (0..5)
            .map(|i| segment(100 + i, 50, 1_762_000_000_000 + i * 1000, false))
            .collect();
        let open = Open {
            msn: 105,
            start_ms: 1_762_000_005_000,
            discontinuity: false,
            parts: vec![Part {
                frames: 25,
                range: 0..1,
                crc: 0,
            }],
        };
        let text = Playlist {
            segments: &segments,
            discontinuity_sequence: 0,
            target_duration_s: 1,
            query: "?token=t",
            parts: Some(Parts {
                target_ms: 500,
                open: Some(&open),
            }),
        }
        .render();
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
             #EXT-X-PART-INF:PART-TARGET=0.500\n\
             #EXT-X-MAP:URI=\"init.mp4?token=t\"\n"
        ));
        assert!(text.contains(
            "#EXTINF:1.000,\n101.m4s?token=t\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-01T12:26:42.000Z\n\
             #EXT-X-PART:DURATION=0.500,URI=\"102.0.m4s?token=t\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"102.1.m4s?token=t\",INDEPENDENT=YES\n\
             #EXTINF:1.000,\n102.m4s?token=t\n"
        ));
        assert!(
            !text.contains("\"101.0.m4s"),
            "parts only within three target durations"
        );
        assert!(text.ends_with(
            "#EXTINF:1.000,\n104.m4s?token=t\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-11-01T12:26:45.000Z\n\
             #EXT-X-PART:DURATION=0.500,URI=\"105.0.m4s?token=t\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"105.1.m4s?token=t\"\n"
        ));
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
            parts: None,
        }
        .render();
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4?token=ab.c_d-9%2F%2B%3D\"\n"));
        assert!(text.contains("\n5.m4s?token=ab.c_d-9%2F%2B%3D\n"));
        assert_eq!(token_query(None), "");
    }
}
