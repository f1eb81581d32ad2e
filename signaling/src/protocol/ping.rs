//! `ping`: client keepalive, answered by `pong`.

use serde::{Deserialize, Serialize};

/// Client → server: keepalive. `id` is any JSON number and comes back unchanged in `pong`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub id: serde_json::Number,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let msg = ClientMessage::Ping(Ping { id: 7.into() });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"ping","id":7}"#);
        assert_eq!(parse_client(&text), Ok(msg));
    }

    #[test]
    fn round_trips_any_number() {
        for text in [
            r#"{"type":"ping","id":7}"#,
            r#"{"type":"ping","id":-3}"#,
            r#"{"type":"ping","id":1.5}"#,
            r#"{"type":"ping","id":18446744073709551615}"#,
        ] {
            let msg = parse_client(text).expect("parses");
            assert!(matches!(msg, ClientMessage::Ping(_)));
            assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
        }
    }

    /// Found by the `signaling_message` fuzz target: serde_json's default float parser can land one ulp off
    /// for long mantissas, so this id came back in `pong` as 4.000000000000001e24 (`float_roundtrip` fixes it).
    #[test]
    fn a_float_id_comes_back_unchanged() {
        for text in [
            r#"{"type":"ping","id":4.0000000000000005e+24}"#,
            r#"{"type":"ping","id":1.7976931348623157e+308}"#,
            r#"{"type":"ping","id":5e-324}"#,
        ] {
            let msg = parse_client(text).expect("parses");
            assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
        }
    }

    #[test]
    fn id_must_be_a_number() {
        for text in [
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","id":"7"}"#,
            r#"{"type":"ping","id":null}"#,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
