//! `slots`: the full assignment of this subscriber's audio slots.

use serde::{Deserialize, Serialize};

/// One slot and whose audio it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub slot: u8,
    /// The slot's m-line mid in the negotiated SDP.
    pub mid: String,
    /// The participant whose audio the slot carries; `null` when empty.
    pub sid: Option<String>,
    /// That participant's original SSRC (the CSRC of the slot's packets); `null` when empty.
    pub ssrc: Option<u32>,
}

/// Server → client: the slot assignment changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub slots: Vec<Slot>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips_with_explicit_nulls() {
        let msg = ServerMessage::Slots(Slots {
            slots: vec![
                Slot {
                    slot: 0,
                    mid: "1".into(),
                    sid: Some("PA_9a0b1c2d3e4f".into()),
                    ssrc: Some(2_843_119_025),
                },
                Slot {
                    slot: 1,
                    mid: "2".into(),
                    sid: None,
                    ssrc: None,
                },
            ],
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"slots","slots":[{"slot":0,"mid":"1","sid":"PA_9a0b1c2d3e4f","ssrc":2843119025},{"slot":1,"mid":"2","sid":null,"ssrc":null}]}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }
}
