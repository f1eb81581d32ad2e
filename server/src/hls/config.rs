//! `[hls]`: a room's mix as HLS (docs/broadcast.md, "HLS").

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Serve `/hls/{room}/index.m3u8` and its segments. Access is the listener mounts' (`broadcast.public`
    /// and the per-room setting of the admin API).
    pub enabled: bool,
    /// Audio per segment, a multiple of 20 ms. 2 s: a player starts about three segments behind live
    /// (≈ 6 s), and each viewer makes one playlist and one segment request per segment (1 request/s);
    /// shorter segments cut the delay and multiply the requests an origin or CDN serves.
    pub segment_ms: u32,
    /// LL-HLS partial segments (`EXT-X-PART`, blocking reloads for parts, preload hints): audio per part,
    /// a multiple of 20 ms dividing `segment_ms`; 0: none. A low-latency player (hls.js) plays about
    /// three parts behind live (`PART-HOLD-BACK`) instead of three segments; each part costs a request
    /// and ≈ 140 bytes of `moof` (at 500 ms, ≈ 2 kb/s over the 48 kb/s mix). Other players ignore the
    /// parts and fetch whole segments.
    pub part_ms: u32,
    /// Segments listed in the playlist (at least three target durations, RFC 8216 §6.2.2); as many more
    /// are kept in memory, and served, after they leave it. Memory: 2 × this × a segment (≈ 12 KB at
    /// 48 kb/s and 2 s) per room being watched.
    pub window_segments: usize,
    /// A room's mix is segmented while its playlist is asked for; this long without a playlist request
    /// (from a player, or a CDN refreshing it for its viewers) the tap stops and the segments go.
    pub idle_timeout_secs: u64,
    /// Rooms segmented at once, at most (beyond: 503).
    pub max_streams: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            enabled: true,
            segment_ms: 2_000,
            part_ms: 500,
            window_segments: 6,
            idle_timeout_secs: 30,
            max_streams: 100,
        }
    }
}

impl HlsConfig {
    /// `EXT-X-TARGETDURATION`: the segment length rounded up to whole seconds.
    pub fn target_duration_s(&self) -> u64 {
        u64::from(self.segment_ms).div_ceil(1000)
    }

    /// Frames of 20 ms per segment.
    pub fn segment_frames(&self) -> u32 {
        self.segment_ms / 20
    }

    /// Frames of 20 ms per part (a segment's without parts).
    pub fn part_frames(&self) -> u32 {
        match self.part_ms {
            0 => self.segment_frames(),
            ms => ms / 20,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(200..=10_000).contains(&self.segment_ms) || !self.segment_ms.is_multiple_of(20) {
            return invalid("hls.segment_ms must be a multiple of 20 in 200..=10000");
        }
        if self.part_ms != 0
            && (!(100..=self.segment_ms / 2).contains(&self.part_ms)
                || !self.part_ms.is_multiple_of(20)
                || !self.segment_ms.is_multiple_of(self.part_ms))
        {
            return invalid(
                "hls.part_ms must be 0 (no parts) or a multiple of 20 in 100..=segment_ms/2 dividing \
                 hls.segment_ms",
            );
        }
        if !(3..=100).contains(&self.window_segments) {
            return invalid("hls.window_segments must be 3..=100");
        }
        if (self.window_segments as u64) * u64::from(self.segment_ms)
            < 3 * 1000 * self.target_duration_s()
        {
            return invalid(
                "hls.window_segments × hls.segment_ms must be at least three target durations \
                 (the segment length rounded up to whole seconds)",
            );
        }
        if !(5..=3_600).contains(&self.idle_timeout_secs) {
            return invalid("hls.idle_timeout_secs must be 5..=3600");
        }
        if !(1..=10_000).contains(&self.max_streams) {
            return invalid("hls.max_streams must be 1..=10000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        HlsConfig::default().validate().expect("defaults are valid");
        assert_eq!(HlsConfig::default().target_duration_s(), 2);
        let bad = |f: fn(&mut HlsConfig)| {
            let mut c = HlsConfig::default();
            f(&mut c);
            c.validate().expect_err("invalid")
        };
        bad(|c| c.segment_ms = 2_010);
        bad(|c| c.segment_ms = 100);
        bad(|c| c.window_segments = 2);
        // 1.5 s segments have a 2 s target: three of them are 4.5 s, less than 6 s.
        bad(|c| {
            c.segment_ms = 1_500;
            c.window_segments = 3;
        });
        bad(|c| c.idle_timeout_secs = 0);
        bad(|c| c.max_streams = 0);
        bad(|c| c.part_ms = 300); // does not divide 2 s
        bad(|c| c.part_ms = 2_000); // a whole segment
        bad(|c| c.part_ms = 50);
        assert_eq!(HlsConfig::default().part_frames(), 25);
        let plain = HlsConfig {
            part_ms: 0,
            ..HlsConfig::default()
        };
        plain.validate().expect("no parts");
        assert_eq!(plain.part_frames(), 100);
        let mut ok = HlsConfig {
            segment_ms: 1_500,
            part_ms: 300,
            window_segments: 4,
            ..HlsConfig::default()
        };
        ok.validate().expect("6 s of 1.5 s segments");
        ok.segment_ms = 500;
        assert_eq!(ok.target_duration_s(), 1);
    }
}
