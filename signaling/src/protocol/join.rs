//! `join`: the first message of every session.

use serde::{Deserialize, Deserializer, Serialize};

/// The longest display name a client may ask for, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Client → server: enter the room the token admits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The protocol version the client speaks.
    pub protocol: u64,
    /// The access token (a JWT).
    pub token: String,
    /// If present, must equal the token's `room` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Display name, at most [`MAX_NAME_CHARS`] characters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_name"
    )]
    pub name: Option<String>,
    /// The team the participant asks for. A token with a `team` claim decides alone: a different team here
    /// is `forbidden` (a game server assigns teams; a player must not pick the enemy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<vocab::TeamId>,
    /// Join as a listener only: never publish (as the token grant `can_publish: false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listen_only: bool,
}

fn bounded_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let name = Option::<String>::deserialize(deserializer)?;
    match name {
        Some(name) if name.chars().count() > MAX_NAME_CHARS => Err(serde::de::Error::custom(
            format_args!("`name` is longer than {MAX_NAME_CHARS} characters"),
        )),
        Some(name) if !crate::auth::is_safe_text(&name) => Err(serde::de::Error::custom(
            "`name` contains a control or bidi-override character",
        )),
        name => Ok(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_client, ClientMessage, ProtocolError};

    #[test]
    fn round_trips() {
        let join = Join {
            protocol: 1,
            token: "a.b.c".into(),
            room: Some("lobby".into()),
            name: Some("Ada".into()),
            team: None,
            listen_only: false,
        };
        let msg = ClientMessage::Join(join.clone());
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("json"),
            serde_json::json!({"type": "join", "protocol": 1, "token": "a.b.c", "room": "lobby", "name": "Ada"})
        );
        assert_eq!(parse_client(&text), Ok(ClientMessage::Join(join)));
    }

    #[test]
    fn room_and_name_are_optional() {
        let msg = parse_client(r#"{"type":"join","protocol":1,"token":"t"}"#).expect("parses");
        assert_eq!(
            msg,
            ClientMessage::Join(Join {
                protocol: 1,
                token: "t".into(),
                room: None,
                name: None,
                team: None,
                listen_only: false,
            })
        );
    }

    #[test]
    fn name_is_bounded_in_characters() {
        let ok = "é".repeat(MAX_NAME_CHARS);
        let text = serde_json::json!({"type": "join", "protocol": 1, "token": "t", "name": ok})
            .to_string();
        assert!(parse_client(&text).is_ok());
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        let text = serde_json::json!({"type": "join", "protocol": 1, "token": "t", "name": long})
            .to_string();
        assert!(matches!(
            parse_client(&text),
            Err(ProtocolError::BadMessage { .. })
        ));
    }

    #[test]
    fn names_with_control_or_bidi_override_characters_are_refused() {
        // Issue 10: a name shown to every participant must not reorder or break the text around it.
        for bad in [
            "Ada\n",
            "Ada\u{202E}nimda",
            "\u{2067}Ada",
            "Ada\u{0}",
            "Ada\u{9B}",
        ] {
            let text =
                serde_json::json!({"type": "join", "protocol": 1, "token": "t", "name": bad})
                    .to_string();
            assert!(
                matches!(parse_client(&text), Err(ProtocolError::BadMessage { .. })),
                "{bad:?}"
            );
        }
        let fine = "Ada Lovelace 🎙 عائشة";
        let text = serde_json::json!({"type": "join", "protocol": 1, "token": "t", "name": fine})
            .to_string();
        assert!(parse_client(&text).is_ok());
    }

    #[test]
    fn team_and_listen_only_round_trip() {
        let text = r#"{"type":"join","protocol":1,"token":"t","team":"red","listen_only":true}"#;
        let msg = parse_client(text).expect("parses");
        let ClientMessage::Join(join) = &msg else {
            panic!("{msg:?}")
        };
        assert_eq!(join.team.as_ref().map(vocab::TeamId::as_str), Some("red"));
        assert!(join.listen_only);
        assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
        for bad in [
            r#"{"type":"join","protocol":1,"token":"t","team":"red team"}"#,
            r#"{"type":"join","protocol":1,"token":"t","team":""}"#,
            r#"{"type":"join","protocol":1,"token":"t","team":5}"#,
            r#"{"type":"join","protocol":1,"token":"t","listen_only":"yes"}"#,
        ] {
            assert!(
                matches!(parse_client(bad), Err(ProtocolError::BadMessage { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_or_ill_typed_fields_are_bad_message() {
        for text in [
            r#"{"type":"join","protocol":1}"#,
            r#"{"type":"join","token":"t"}"#,
            r#"{"type":"join","protocol":"1","token":"t"}"#,
            r#"{"type":"join","protocol":-1,"token":"t"}"#,
            r#"{"type":"join","protocol":1,"token":7}"#,
            r#"{"type":"join","protocol":1,"token":"t","room":5}"#,
        ] {
            assert!(
                matches!(parse_client(text), Err(ProtocolError::BadMessage { .. })),
                "{text}"
            );
        }
    }
}
