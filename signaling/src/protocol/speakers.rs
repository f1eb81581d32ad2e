//! `speakers`: everyone currently speaking in the room, loudest first.

use serde::{Deserialize, Serialize};

/// One active speaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    pub sid: String,
    /// Smoothed audio level, 0.0 (silence) to 1.0 (full scale).
    pub level: f32,
}

impl Speaker {
    /// A speaker entry with `level` forced into 0.0..=1.0 (a non-finite level becomes 0.0), so the
    /// message always serializes to numbers.
    pub fn new(sid: String, level: f32) -> Self {
        let level = if level.is_finite() {
            level.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self { sid, level }
    }
}

/// Server → client: the room's active speakers, loudest first; empty when nobody speaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speakers {
    pub speakers: Vec<Speaker>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Speakers(Speakers {
            speakers: vec![
                Speaker::new("PA_9a0b1c2d3e4f".into(), 0.62),
                Speaker::new("PA_4f2c9a1b7d3e".into(), 0.18),
            ],
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"speakers","speakers":[{"sid":"PA_9a0b1c2d3e4f","level":0.62},{"sid":"PA_4f2c9a1b7d3e","level":0.18}]}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
        let empty = r#"{"type":"speakers","speakers":[]}"#;
        assert_eq!(
            serde_json::from_str::<ServerMessage>(empty).expect("parses"),
            ServerMessage::Speakers(Speakers { speakers: vec![] })
        );
    }

    #[test]
    fn levels_are_clamped() {
        assert_eq!(Speaker::new("a".into(), 1.5).level, 1.0);
        assert_eq!(Speaker::new("a".into(), -0.5).level, 0.0);
        assert_eq!(Speaker::new("a".into(), f32::NAN).level, 0.0);
        assert_eq!(Speaker::new("a".into(), f32::INFINITY).level, 0.0);
    }
}
