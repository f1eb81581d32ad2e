//! Talk groups inside a room (after Tencent GME's team voice, Vivox's and Mumble's whisper): a participant's
//! team, whom its voice is for (its talk target), and the volume a listener gives each other participant
//! (Vivox's −50..=+50). The media core's audibility policy applies them; signaling checks them.

use std::fmt;

/// The longest team id, in characters.
pub const MAX_TEAM_CHARS: usize = 64;

/// The most participants one whisper may name.
pub const MAX_WHISPER_TARGETS: usize = 64;

/// A team inside a room: any 1–64 characters of `[A-Za-z0-9_.-]`, chosen by the application (a game
/// server puts it in the participant's token).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct TeamId(String);

/// Why a team id, talk target or volume cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TalkError {
    #[error("a team is 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    BadTeam,
    #[error("a volume is a whole number from -50 to 50")]
    BadVolume,
    #[error("a whisper names 1 to 64 participants")]
    WhisperTargets,
}

impl TeamId {
    pub fn new(id: impl Into<String>) -> Result<TeamId, TalkError> {
        let id = id.into();
        let ok = (1..=MAX_TEAM_CHARS).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(TeamId(id))
        } else {
            Err(TalkError::BadTeam)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TeamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TeamId, D::Error> {
        let id = String::deserialize(d)?;
        TeamId::new(id).map_err(serde::de::Error::custom)
    }
}

/// Whom a participant's voice is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TalkTarget<P> {
    /// The room: whoever the room's rules let hear it (everyone; in a spatial room, those in range and its
    /// team).
    #[default]
    Room,
    /// Its team only, wherever they are.
    Team,
    /// These participants only, wherever they are (1 to [`MAX_WHISPER_TARGETS`]).
    Whisper(Vec<P>),
}

impl<P> TalkTarget<P> {
    /// Whether the target can be asked for at all: a whisper names 1 to [`MAX_WHISPER_TARGETS`]
    /// participants. (Whether they are in the room, and whether the talker has a team, is the room's to
    /// say.)
    pub fn validate(&self) -> Result<(), TalkError> {
        match self {
            TalkTarget::Whisper(to) if !(1..=MAX_WHISPER_TARGETS).contains(&to.len()) => {
                Err(TalkError::WhisperTargets)
            }
            _ => Ok(()),
        }
    }
}

/// The volume a listener gives one other participant: −50..=+50 like Vivox's `SetLocalVolume`, 0 unchanged.
/// Vivox's scale is logarithmic with 0.5 dB per step (its core SDK: "a level increase of 6 represents a
/// doubling in energy, and a level increase of 20 represents a ten-fold increase in energy"), so +50 is
/// +25 dB and −49 is −24.5 dB; −50 is silent (the participant is not heard at all, in both modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Volume(i8);

impl Volume {
    /// No change.
    pub const UNCHANGED: Volume = Volume(0);
    /// Not heard at all.
    pub const SILENT: Volume = Volume(-50);
    /// dB per step of the scale.
    pub const STEP_DB: f32 = 0.5;

    pub fn new(value: i64) -> Result<Volume, TalkError> {
        if (-50..=50).contains(&value) {
            Ok(Volume(value as i8))
        } else {
            Err(TalkError::BadVolume)
        }
    }

    pub fn value(self) -> i8 {
        self.0
    }

    /// The gain in dB; `None` when silent.
    pub fn gain_db(self) -> Option<f32> {
        (self != Volume::SILENT).then(|| f32::from(self.0) * Volume::STEP_DB)
    }

    /// The linear gain: 0 when silent, 1 unchanged, ≈ 17.8 at +50.
    pub fn gain(self) -> f32 {
        self.gain_db().map_or(0.0, |db| 10f32.powf(db / 20.0))
    }
}

impl<'de> serde::Deserialize<'de> for Volume {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Volume, D::Error> {
        let n = f64::deserialize(d)?;
        if n.fract() != 0.0 {
            return Err(serde::de::Error::custom(TalkError::BadVolume));
        }
        Volume::new(n as i64).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_ids_are_checked() {
        assert!(TeamId::new("red").is_ok());
        assert!(TeamId::new("team_1.a-b").is_ok());
        assert!(TeamId::new("x".repeat(64)).is_ok());
        for bad in ["", "red team", "é", "a/b", &"x".repeat(65)] {
            assert_eq!(TeamId::new(bad), Err(TalkError::BadTeam), "{bad:?}");
        }
        assert!(serde_json::from_str::<TeamId>(r#""a b""#).is_err());
        let t: TeamId = serde_json::from_str(r#""blue""#).expect("a team");
        assert_eq!(serde_json::to_string(&t).expect("json"), r#""blue""#);
    }

    #[test]
    fn whispers_name_1_to_64_participants() {
        assert_eq!(TalkTarget::<u32>::Room.validate(), Ok(()));
        assert_eq!(TalkTarget::<u32>::Team.validate(), Ok(()));
        assert_eq!(TalkTarget::Whisper(vec![1u32]).validate(), Ok(()));
        let most: Vec<u32> = (0..MAX_WHISPER_TARGETS as u32).collect();
        assert_eq!(TalkTarget::Whisper(most).validate(), Ok(()));
        for bad in [Vec::new(), (0..=MAX_WHISPER_TARGETS as u32).collect()] {
            assert_eq!(
                TalkTarget::Whisper(bad).validate(),
                Err(TalkError::WhisperTargets)
            );
        }
    }

    #[test]
    fn volumes_follow_vivox_scale() {
        assert_eq!(Volume::new(0).map(Volume::gain), Ok(1.0));
        assert_eq!(Volume::SILENT.gain(), 0.0);
        assert_eq!(Volume::SILENT.gain_db(), None);
        let plus12 = Volume::new(12).expect("in range");
        assert!((plus12.gain_db().expect("audible") - 6.0).abs() < 1e-6);
        assert!(
            (plus12.gain() - 1.995).abs() < 0.01,
            "+12 doubles the amplitude"
        );
        let minus20 = Volume::new(-20).expect("in range");
        assert!((minus20.gain() - 0.3162).abs() < 1e-3);
        assert_eq!(Volume::new(51), Err(TalkError::BadVolume));
        assert_eq!(Volume::new(-51), Err(TalkError::BadVolume));
        assert!(serde_json::from_str::<Volume>("10.5").is_err());
        assert!(serde_json::from_str::<Volume>("60").is_err());
        assert_eq!(
            serde_json::from_str::<Volume>("-50.0").ok(),
            Some(Volume::SILENT)
        );
    }
}
