//! Media settings of a room, fixed when the room is created: forwarding or mixing, the slots per
//! subscriber, and the mixer's encoder and jitter buffer.

use std::ops::RangeInclusive;

use crate::slots::MAX_SLOTS;
use crate::spatial::{SpatialError, SpatialSettings};

/// How a room delivers audio to its subscribers. Serialized as `"forward"` / `"mix"` (configuration, the
/// protocol, the admin API and metric labels).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Selective forwarding: each subscriber receives K audio slots with the K loudest other speakers.
    #[default]
    Forward,
    /// Server-side mixing: each subscriber receives one Opus stream, the mix of everyone but itself, on
    /// its first receive slot.
    Mix,
}

impl RoomMode {
    pub const ALL: [RoomMode; 2] = [RoomMode::Forward, RoomMode::Mix];

    /// The spelling in configuration, the protocol, the admin API and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoomMode::Forward => "forward",
            RoomMode::Mix => "mix",
        }
    }
}

impl std::str::FromStr for RoomMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forward" => Ok(RoomMode::Forward),
            "mix" => Ok(RoomMode::Mix),
            other => Err(format!(
                "room mode must be \"forward\" or \"mix\", not {other:?}"
            )),
        }
    }
}

/// The bitrates a mix may be encoded at, bits per second.
pub const MIX_BITRATE_BPS: RangeInclusive<u32> = 6_000..=128_000;
/// The highest libopus complexity.
pub const MIX_MAX_COMPLEXITY: u8 = 10;
/// The most a jitter-buffer bound may be, milliseconds.
pub const MIX_MAX_JITTER_MS: u32 = 1000;

/// Why room settings cannot be used. The messages name the offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("slots must be 1..={MAX_SLOTS}")]
    Slots(u8),
    #[error("mix bitrate_bps must be 6000..=128000")]
    MixBitrate(u32),
    #[error("mix complexity must be 0..=10")]
    MixComplexity(u8),
    #[error("mix shared_complexity must be 0..=10")]
    MixSharedComplexity(u8),
    #[error("mix jitter_min_ms must be <= jitter_max_ms <= 1000")]
    MixJitter { min_ms: u32, max_ms: u32 },
    #[error(transparent)]
    Spatial(#[from] SpatialError),
}

/// Opus encoder and jitter-buffer settings of a mixed room. Absent fields of the serde form take the
/// defaults; unknown fields are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixSettings {
    /// Target bitrate of each encoded mix, bits per second ([`MIX_BITRATE_BPS`]).
    pub bitrate_bps: u32,
    /// libopus complexity, 0 (cheapest) ..= 10 (best), of the personal mixes: one encode per talker (the
    /// mix without their own voice) and per listener with a mix of their own (volumes, spatial rooms).
    pub complexity: u8,
    /// libopus complexity of the shared mix: the one or two encodes (clean, and protected by in-band FEC)
    /// that every listener who is not talking receives, whatever their number. A mix is a second Opus
    /// generation (the talkers' browsers coded it once); at 8 it scores PESQ-WB 0.17 higher than at 5
    /// (3.79 against 3.62 in virtual time, docs/architecture.md "Encoder settings per room"), for 1.45
    /// times the CPU of an encode at 5, paid once per room. Default 8.
    pub shared_complexity: u8,
    /// Put in-band FEC into the mix (costs bitrate, recovers single losses at the listener), for the loss
    /// each listener's receiver reports state, at most 10 % (10 % until its first reports; none for a
    /// listener that reports none). Any stated loss gets FEC at any bitrate (libopus is told at least
    /// 6 %: told less, at 24 and 32 kb/s it coded none).
    pub fec: bool,
    /// Send nothing while a listener's mix is silent (nobody else talks), after 2 s of silence frames (a
    /// pause inside speech must not reach a browser as a gap it conceals). Off: a silence frame every
    /// 20 ms for as long as the room ticks, for gateways that expect a continuous stream. (libopus' own DTX is never used on mixes: its voice
    /// detector would cut stationary sound, such as music or a held tone, out of a mix.)
    pub dtx: bool,
    /// Smallest jitter-buffer target, milliseconds: the least time a packet on the fastest path waits for
    /// the mixer tick that decodes it (its margin); the buffer adapts between this and the maximum. 10 by
    /// default. The target rises with the measured jitter (its 95th percentile plus headroom) and covers
    /// the delay peaks of the last 20 s (a stall that the percentile does not see); arrivals are the
    /// kernel's receive times (the worker's own lateness is not jitter).
    pub jitter_min_ms: u32,
    /// Largest jitter-buffer delay, milliseconds.
    pub jitter_max_ms: u32,
}

impl Default for MixSettings {
    fn default() -> Self {
        MixSettings {
            bitrate_bps: 48_000,
            complexity: 5,
            shared_complexity: 8,
            fec: true,
            dtx: true,
            jitter_min_ms: 10,
            jitter_max_ms: 200,
        }
    }
}

impl MixSettings {
    /// Checks the ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !MIX_BITRATE_BPS.contains(&self.bitrate_bps) {
            return Err(SettingsError::MixBitrate(self.bitrate_bps));
        }
        if self.complexity > MIX_MAX_COMPLEXITY {
            return Err(SettingsError::MixComplexity(self.complexity));
        }
        if self.shared_complexity > MIX_MAX_COMPLEXITY {
            return Err(SettingsError::MixSharedComplexity(self.shared_complexity));
        }
        if self.jitter_min_ms > self.jitter_max_ms || self.jitter_max_ms > MIX_MAX_JITTER_MS {
            return Err(SettingsError::MixJitter {
                min_ms: self.jitter_min_ms,
                max_ms: self.jitter_max_ms,
            });
        }
        Ok(())
    }
}

/// Media settings of a room, taken from the request that creates it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoomSettings {
    pub mode: RoomMode,
    /// Audio slots per subscriber, 1..=[`MAX_SLOTS`]. A mixed room has one: the mix.
    pub slots: u8,
    /// Encoder settings, used in mix mode.
    pub mix: MixSettings,
    /// Positional voice, in either mode: who hears whom is decided by distance (forward: slots carry only
    /// speakers in range; mix: a stereo mix per listener). `None`: everybody hears everybody.
    pub spatial: Option<SpatialSettings>,
}

impl RoomSettings {
    /// A forwarding room with `slots` slots.
    pub fn forward(slots: u8) -> Self {
        RoomSettings {
            mode: RoomMode::Forward,
            slots,
            mix: MixSettings::default(),
            spatial: None,
        }
    }

    /// A mixed room with the given encoder settings (one receive slot).
    pub fn mix(mix: MixSettings) -> Self {
        RoomSettings {
            mode: RoomMode::Mix,
            slots: 1,
            mix,
            spatial: None,
        }
    }

    /// The same room with positional voice.
    pub fn with_spatial(self, spatial: SpatialSettings) -> Self {
        RoomSettings {
            spatial: Some(spatial),
            ..self
        }
    }

    /// Checks the settings the room's mode uses: the slots, and in mix mode the mix settings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=MAX_SLOTS).contains(&usize::from(self.slots)) {
            return Err(SettingsError::Slots(self.slots));
        }
        if let Some(spatial) = &self.spatial {
            spatial.validate()?;
        }
        match self.mode {
            RoomMode::Forward => Ok(()),
            RoomMode::Mix => self.mix.validate(),
        }
    }

    /// Whether a room with these settings differs from one with `other` in anything its mode uses:
    /// the mode; the slots of a forwarding room; the mix settings of a mixed one; the spatial settings. A
    /// request for a room that exists with conflicting settings is refused, never joined with settings it
    /// did not ask for.
    pub fn conflicts_with(&self, other: &RoomSettings) -> bool {
        if self.spatial != other.spatial {
            return true;
        }
        match (self.mode, other.mode) {
            (RoomMode::Forward, RoomMode::Forward) => self.slots != other.slots,
            (RoomMode::Mix, RoomMode::Mix) => self.mix != other.mix,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(MixSettings::default().validate().is_ok());
        let bad = MixSettings {
            bitrate_bps: 1,
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(SettingsError::MixBitrate(1)));
        assert!(bad.validate().unwrap_err().to_string().contains("bitrate"));
        let bad = MixSettings {
            complexity: 11,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("complexity"));
        let bad = MixSettings {
            shared_complexity: 11,
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(SettingsError::MixSharedComplexity(11)));
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shared_complexity"));
        let bad = MixSettings {
            jitter_min_ms: 300,
            jitter_max_ms: 100,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("jitter"));
        assert_eq!(RoomMode::Mix.as_str(), "mix");
    }

    #[test]
    fn slots_are_one_to_max() {
        assert!(RoomSettings::forward(1).validate().is_ok());
        assert!(RoomSettings::forward(MAX_SLOTS as u8).validate().is_ok());
        assert_eq!(
            RoomSettings::forward(0).validate(),
            Err(SettingsError::Slots(0))
        );
        let too_many = RoomSettings::forward(MAX_SLOTS as u8 + 1);
        assert_eq!(
            too_many.validate().unwrap_err().to_string(),
            "slots must be 1..=16"
        );
        // A forwarding room does not use its mix settings.
        let mut forward = RoomSettings::forward(3);
        forward.mix.bitrate_bps = 0;
        assert!(forward.validate().is_ok());
        let mut mix = RoomSettings::mix(MixSettings::default());
        mix.mix.bitrate_bps = 0;
        assert_eq!(mix.validate(), Err(SettingsError::MixBitrate(0)));
    }

    #[test]
    fn conflicts_are_in_what_the_mode_uses() {
        let forward = RoomSettings::forward(3);
        assert!(!forward.conflicts_with(&forward));
        assert!(forward.conflicts_with(&RoomSettings::forward(2)));
        let mut other_mix = forward;
        other_mix.mix.complexity = 9;
        assert!(!forward.conflicts_with(&other_mix));
        let mix = RoomSettings::mix(MixSettings::default());
        assert!(forward.conflicts_with(&mix));
        assert!(mix.conflicts_with(&forward));
        assert!(!mix.conflicts_with(&mix));
        let louder = RoomSettings::mix(MixSettings {
            bitrate_bps: 64_000,
            ..MixSettings::default()
        });
        assert!(mix.conflicts_with(&louder));
        let spatial = forward.with_spatial(SpatialSettings::default());
        assert!(spatial.conflicts_with(&forward));
        assert!(!spatial.conflicts_with(&spatial));
        let farther = forward.with_spatial(SpatialSettings {
            audible_distance: 64.0,
            ..SpatialSettings::default()
        });
        assert!(spatial.conflicts_with(&farther));
        let mut bad = spatial;
        bad.spatial = Some(SpatialSettings {
            max_audible: 0,
            ..SpatialSettings::default()
        });
        assert!(matches!(bad.validate(), Err(SettingsError::Spatial(_))));
    }

    #[test]
    fn wire_forms() {
        assert_eq!(
            serde_json::to_string(&RoomMode::Forward).expect("serializes"),
            r#""forward""#
        );
        assert_eq!("mix".parse::<RoomMode>(), Ok(RoomMode::Mix));
        assert!("sfu".parse::<RoomMode>().is_err());
        let mix: MixSettings = serde_json::from_str(r#"{"bitrate_bps":24000}"#).expect("parses");
        assert_eq!(
            mix,
            MixSettings {
                bitrate_bps: 24_000,
                ..MixSettings::default()
            }
        );
        assert!(serde_json::from_str::<MixSettings>(r#"{"bitrate":1}"#).is_err());
        assert_eq!(
            serde_json::to_value(MixSettings::default()).expect("serializes"),
            serde_json::json!({"bitrate_bps": 48000, "complexity": 5, "shared_complexity": 8, "fec": true, "dtx": true,
                "jitter_min_ms": 10, "jitter_max_ms": 200})
        );
    }
}
