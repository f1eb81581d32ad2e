//! Positional voice: the settings of a spatial room (how far a voice carries and how it fades, after
//! Vivox's positional channels and Tencent GME's range voice) and a participant's position in its world.
//!
//! Coordinates are in the application's world units (the same units as the distances), `x` to the right
//! (east), `y` ahead (north), `z` up. `yaw_deg` is where the participant faces, in degrees clockwise from
//! `+y` seen from above: 0 faces `+y`, 90 faces `+x`. A listener facing `+y` hears a voice at `+x` on its
//! right.

use std::ops::RangeInclusive;

/// The largest coordinate (absolute value) a position may have, in world units. Larger values are refused:
/// they are garbage from a client, and squared distances of them would lose all precision.
pub const MAX_COORDINATE: f64 = 1.0e6;

/// The largest `audible_distance` a room may have, in world units.
pub const MAX_AUDIBLE_DISTANCE: f64 = 1.0e5;

/// The range of `fade_intensity` (Vivox's `audioFadeIntensityByDistance`, OpenAL's rolloff factor).
pub const FADE_INTENSITY: RangeInclusive<f64> = 0.0..=10.0;

/// The most speakers one listener can hear at once (`max_audible`).
pub const MAX_AUDIBLE: u16 = 1000;

/// How a voice fades between `conversational_distance` and `audible_distance` (Vivox's `audioFadeModel`;
/// the formulas are OpenAL's clamped distance models, which Vivox's are). Closer than the conversational
/// distance every model plays at full level; beyond the audible distance nothing is heard.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FadeModel {
    /// Full level up to the audible distance.
    None,
    /// `c / (c + f·(d − c))`: like the real world (−6 dB per doubling at intensity 1).
    #[default]
    Inverse,
    /// `1 − f·(d − c)/(a − c)`, clamped at 0: silent at the audible distance with intensity 1.
    Linear,
    /// `(d / c)^(−f)`.
    Exponential,
}

/// Why spatial settings or a position cannot be used. The messages name the offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpatialError {
    #[error("spatial conversational_distance must be finite and > 0, and audible_distance >= it and <= 100000")]
    Distances,
    #[error("spatial fade_intensity must be 0 to 10")]
    FadeIntensity,
    #[error("spatial max_audible must be 1 to 1000")]
    MaxAudible(u16),
    #[error("a position's x, y, z and yaw_deg must be finite numbers")]
    NotFinite,
    #[error("a position's coordinates must be within ±1000000")]
    OutOfWorld,
}

/// The positional-voice settings of a room. Absent fields of the serde form take the defaults (Vivox's:
/// audible at 32, conversational at 1, inverse fade at intensity 1; GME's nearest 20); unknown fields are
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpatialSettings {
    /// Beyond this distance (world units) a voice is not heard at all.
    pub audible_distance: f64,
    /// Up to this distance a voice is heard at full level; the fade starts here.
    pub conversational_distance: f64,
    /// How fast the voice fades ([`FadeModel`]; 1 is the model's natural rate).
    pub fade_intensity: f64,
    pub fade_model: FadeModel,
    /// Each listener hears at most this many speakers: the nearest ones (ties: the lower participant id).
    #[serde(deserialize_with = "whole_u16")]
    pub max_audible: u16,
}

/// A `u16` that JSON may write as an integer-valued number such as `20.0` (an OpenAPI `integer` allows it;
/// the admin API's schema test sends them).
fn whole_u16<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    use serde::de::Error;
    let n = <f64 as serde::Deserialize>::deserialize(d)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&n) {
        Ok(n as u16)
    } else {
        Err(D::Error::custom(format!(
            "expected an integer from 0 to {}, found {n}",
            u16::MAX
        )))
    }
}

impl Default for SpatialSettings {
    fn default() -> Self {
        SpatialSettings {
            audible_distance: 32.0,
            conversational_distance: 1.0,
            fade_intensity: 1.0,
            fade_model: FadeModel::Inverse,
            max_audible: 20,
        }
    }
}

impl SpatialSettings {
    /// Checks the ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), SpatialError> {
        let (c, a) = (self.conversational_distance, self.audible_distance);
        if !(c.is_finite() && a.is_finite() && c > 0.0 && a >= c && a <= MAX_AUDIBLE_DISTANCE) {
            return Err(SpatialError::Distances);
        }
        if !FADE_INTENSITY.contains(&self.fade_intensity) {
            return Err(SpatialError::FadeIntensity);
        }
        if !(1..=MAX_AUDIBLE).contains(&self.max_audible) {
            return Err(SpatialError::MaxAudible(self.max_audible));
        }
        Ok(())
    }

    /// The linear gain (0..=1) of a voice `distance` away: 0 beyond the audible distance, 1 within the
    /// conversational distance, the fade model between.
    pub fn gain_at(&self, distance: f64) -> f32 {
        if distance.is_nan() || distance > self.audible_distance {
            return 0.0;
        }
        let c = self.conversational_distance;
        if distance <= c {
            return 1.0;
        }
        let f = self.fade_intensity;
        let g = match self.fade_model {
            FadeModel::None => 1.0,
            FadeModel::Inverse => c / (c + f * (distance - c)),
            FadeModel::Linear => {
                let span = self.audible_distance - c;
                if span > 0.0 {
                    1.0 - f * (distance - c) / span
                } else {
                    1.0
                }
            }
            FadeModel::Exponential => (distance / c).powf(-f),
        };
        g.clamp(0.0, 1.0) as f32
    }
}

/// Where a participant is and which way it faces ([module docs](self) for the axes).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    /// Facing, degrees clockwise from `+y` (any finite value; taken modulo 360).
    pub yaw_deg: f64,
}

impl Position {
    /// A checked position: every field finite, coordinates within [`MAX_COORDINATE`].
    pub fn new(x: f64, y: f64, z: f64, yaw_deg: f64) -> Result<Position, SpatialError> {
        let p = Position { x, y, z, yaw_deg };
        p.validate()?;
        Ok(p)
    }

    /// Checks a position built field by field (deserialized, say).
    pub fn validate(&self) -> Result<(), SpatialError> {
        if ![self.x, self.y, self.z, self.yaw_deg]
            .iter()
            .all(|v| v.is_finite())
        {
            return Err(SpatialError::NotFinite);
        }
        if [self.x, self.y, self.z]
            .iter()
            .any(|v| v.abs() > MAX_COORDINATE)
        {
            return Err(SpatialError::OutOfWorld);
        }
        Ok(())
    }

    /// Straight-line distance to `other`.
    pub fn distance(&self, other: &Position) -> f64 {
        let (dx, dy, dz) = (other.x - self.x, other.y - self.y, other.z - self.z);
        (dx * dx + dy * dy + dz * dz).sqrt()
    }

    /// Where `other` is as this participant hears it: −1 fully left, +1 fully right, 0 ahead, behind,
    /// above or below (the sine of its azimuth relative to the facing; height does not pan).
    pub fn pan_towards(&self, other: &Position) -> f32 {
        let (dx, dy) = (other.x - self.x, other.y - self.y);
        let horizontal = (dx * dx + dy * dy).sqrt();
        if horizontal <= f64::EPSILON * (1.0 + self.x.abs().max(self.y.abs())) {
            return 0.0;
        }
        // Azimuth of `other`, clockwise from +y, minus the facing.
        let azimuth = dx.atan2(dy) - self.yaw_deg.to_radians();
        azimuth.sin().clamp(-1.0, 1.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(model: FadeModel) -> SpatialSettings {
        SpatialSettings {
            audible_distance: 40.0,
            conversational_distance: 2.0,
            fade_intensity: 1.0,
            fade_model: model,
            max_audible: 20,
        }
    }

    #[test]
    fn the_four_fade_models() {
        let near = |m| settings(m).gain_at(1.0);
        for m in [
            FadeModel::None,
            FadeModel::Inverse,
            FadeModel::Linear,
            FadeModel::Exponential,
        ] {
            assert_eq!(near(m), 1.0, "{m:?} within the conversational distance");
            assert_eq!(settings(m).gain_at(2.0), 1.0, "{m:?} at it");
            assert_eq!(
                settings(m).gain_at(40.5),
                0.0,
                "{m:?} beyond the audible distance"
            );
            assert_eq!(settings(m).gain_at(f64::NAN), 0.0, "{m:?} NaN");
        }
        assert_eq!(settings(FadeModel::None).gain_at(39.0), 1.0);
        // Inverse: c / (c + f(d − c)) = 2 / (2 + 8) at 10.
        assert!((settings(FadeModel::Inverse).gain_at(10.0) - 0.2).abs() < 1e-6);
        // Linear: 1 − (d − c)/(a − c) = 1 − 19/38 at 21.
        assert!((settings(FadeModel::Linear).gain_at(21.0) - 0.5).abs() < 1e-6);
        assert!(settings(FadeModel::Linear).gain_at(40.0) < 1e-6);
        // Exponential: (d/c)^−f = 1/4 at 8.
        assert!((settings(FadeModel::Exponential).gain_at(8.0) - 0.25).abs() < 1e-6);
        // Intensity 2 fades faster; 0 does not fade.
        let mut steep = settings(FadeModel::Exponential);
        steep.fade_intensity = 2.0;
        assert!((steep.gain_at(8.0) - 1.0 / 16.0).abs() < 1e-6);
        steep.fade_intensity = 0.0;
        assert_eq!(steep.gain_at(8.0), 1.0);
        let mut steep = settings(FadeModel::Linear);
        steep.fade_intensity = 4.0;
        assert_eq!(steep.gain_at(30.0), 0.0, "clamped at zero");
    }

    #[test]
    fn pan_is_the_side_relative_to_the_facing() {
        let me = Position::new(0.0, 0.0, 0.0, 0.0).expect("valid");
        let east = Position::new(5.0, 0.0, 0.0, 0.0).expect("valid");
        let west = Position::new(-5.0, 0.0, 0.0, 0.0).expect("valid");
        let north = Position::new(0.0, 5.0, 3.0, 0.0).expect("valid");
        assert!((me.pan_towards(&east) - 1.0).abs() < 1e-6);
        assert!((me.pan_towards(&west) + 1.0).abs() < 1e-6);
        assert!(me.pan_towards(&north).abs() < 1e-6);
        assert_eq!(me.pan_towards(&me), 0.0);
        // Turned to face east, east is ahead and north is on the left.
        let facing_east = Position {
            yaw_deg: 90.0,
            ..me
        };
        assert!(facing_east.pan_towards(&east).abs() < 1e-6);
        assert!((facing_east.pan_towards(&north) + 1.0).abs() < 1e-6);
        let diagonal = Position::new(5.0, 5.0, 0.0, 0.0).expect("valid");
        assert!((me.pan_towards(&diagonal) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(
            (me.distance(&Position::new(3.0, 4.0, 12.0, 7.0).expect("valid")) - 13.0).abs() < 1e-12
        );
    }

    #[test]
    fn bad_positions_and_settings_are_named() {
        assert_eq!(
            Position::new(f64::NAN, 0.0, 0.0, 0.0),
            Err(SpatialError::NotFinite)
        );
        assert_eq!(
            Position::new(0.0, 0.0, 0.0, f64::INFINITY),
            Err(SpatialError::NotFinite)
        );
        assert_eq!(
            Position::new(0.0, -2.0e6, 0.0, 0.0),
            Err(SpatialError::OutOfWorld)
        );
        assert!(SpatialSettings::default().validate().is_ok());
        for bad in [
            SpatialSettings {
                conversational_distance: 0.0,
                ..Default::default()
            },
            SpatialSettings {
                audible_distance: 0.5,
                ..Default::default()
            },
            SpatialSettings {
                audible_distance: f64::INFINITY,
                ..Default::default()
            },
        ] {
            assert!(bad
                .validate()
                .unwrap_err()
                .to_string()
                .contains("audible_distance"));
        }
        let bad = SpatialSettings {
            fade_intensity: -1.0,
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(SpatialError::FadeIntensity));
        let bad = SpatialSettings {
            max_audible: 0,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_audible"));
    }

    #[test]
    fn wire_forms() {
        let s: SpatialSettings =
            serde_json::from_str(r#"{"audible_distance":50,"fade_model":"linear"}"#)
                .expect("parses");
        assert_eq!(s.audible_distance, 50.0);
        assert_eq!(s.fade_model, FadeModel::Linear);
        assert_eq!(s.max_audible, 20);
        assert!(serde_json::from_str::<SpatialSettings>(r#"{"range":1}"#).is_err());
        // An integer may come as an integer-valued number (schemathesis sends them); a fraction may not.
        let s: SpatialSettings =
            serde_json::from_str(r#"{"max_audible":223.0}"#).expect("223.0 is an integer");
        assert_eq!(s.max_audible, 223);
        for bad in [
            r#"{"max_audible":2.5}"#,
            r#"{"max_audible":-1}"#,
            r#"{"max_audible":70000}"#,
        ] {
            assert!(
                serde_json::from_str::<SpatialSettings>(bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            serde_json::to_value(SpatialSettings::default()).expect("serializes"),
            serde_json::json!({"audible_distance": 32.0, "conversational_distance": 1.0,
                "fade_intensity": 1.0, "fade_model": "inverse", "max_audible": 20})
        );
    }
}
