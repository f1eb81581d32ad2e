//! Media settings of a room, fixed when the room is created: forwarding or mixing, and the mixer's encoder.

/// How a room delivers audio to its subscribers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoomMode {
    /// Selective forwarding: each subscriber receives K slots carrying the K loudest other speakers.
    #[default]
    Forward,
    /// Server-side mixing: each subscriber receives one Opus stream, the mix of everyone but itself.
    Mix,
}

impl RoomMode {
    /// The name used in configuration, the protocol and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Forward => "forward",
            RoomMode::Mix => "mix",
        }
    }
}

/// Opus encoder and jitter-buffer settings of a mixed room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixConfig {
    /// Target bitrate of each encoded mix, bits per second (6,000..=128,000).
    pub bitrate_bps: u32,
    /// libopus complexity, 0 (cheapest) ..= 10 (best).
    pub complexity: u8,
    /// Put in-band FEC into the mix (costs bitrate, recovers single losses at the listener).
    pub fec: bool,
    /// Send nothing while a listener's mix is silent (nobody else talks). Off: a silence frame every 20 ms,
    /// for gateways that expect a continuous stream. (libopus' own DTX is never used on mixes: its voice
    /// detector would cut stationary sound, such as music or a held tone, out of a mix.)
    pub dtx: bool,
    /// Smallest jitter-buffer delay, milliseconds; the buffer adapts between this and the maximum.
    pub jitter_min_ms: u32,
    /// Largest jitter-buffer delay, milliseconds.
    pub jitter_max_ms: u32,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            bitrate_bps: 48_000,
            complexity: 5,
            fec: true,
            dtx: true,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
        }
    }
}

impl MixConfig {
    /// Check ranges; the message names the offending field.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(6_000..=128_000).contains(&self.bitrate_bps) {
            return Err("mix bitrate_bps must be 6000..=128000");
        }
        if self.complexity > 10 {
            return Err("mix complexity must be 0..=10");
        }
        if self.jitter_min_ms > self.jitter_max_ms || self.jitter_max_ms > 1000 {
            return Err("mix jitter_min_ms must be <= jitter_max_ms <= 1000");
        }
        Ok(())
    }
}

/// Media settings of a room, taken from the request that creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    pub mode: RoomMode,
    /// Audio slots per subscriber in forward mode, 1..=16. Mixed rooms send on the first slot only.
    pub slots: usize,
    /// Encoder settings, used in mix mode.
    pub mix: MixConfig,
}

impl RoomConfig {
    /// A forwarding room with `slots` slots.
    pub fn forward(slots: usize) -> Self {
        RoomConfig {
            mode: RoomMode::Forward,
            slots,
            mix: MixConfig::default(),
        }
    }

    /// A mixed room with the given encoder settings.
    pub fn mix(mix: MixConfig) -> Self {
        RoomConfig {
            mode: RoomMode::Mix,
            slots: 1,
            mix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(MixConfig::default().validate().is_ok());
        let bad = MixConfig {
            bitrate_bps: 1,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("bitrate"));
        let bad = MixConfig {
            complexity: 11,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("complexity"));
        let bad = MixConfig {
            jitter_min_ms: 300,
            jitter_max_ms: 100,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("jitter"));
        assert_eq!(RoomMode::Mix.as_str(), "mix");
    }
}
