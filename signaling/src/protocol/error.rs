//! `error`: the stable error codes of protocol version 1 and the message that carries them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// WebSocket close code after a fatal error (policy violation).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code after `frame_too_large` (message too big).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// The machine-readable `code` of an `error` message (the table in protocol.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadMessage,
    BinaryFrame,
    FrameTooLarge,
    UnsupportedProtocol,
    InvalidToken,
    TokenExpired,
    RoomMismatch,
    NotJoined,
    AlreadyJoined,
    Forbidden,
    RoomFull,
    RoomClosed,
    Banned,
    Draining,
    BadSdp,
    BadRoomSettings,
    RoomSettingsConflict,
    BadPosition,
    MediaUnavailable,
    ClusterUnavailable,
    ResumeFailed,
    RateLimited,
    ServerMuted,
    ParticipantNotFound,
    BadTarget,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the protocol table.
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadMessage,
        ErrorCode::BinaryFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::RoomMismatch,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::Forbidden,
        ErrorCode::RoomFull,
        ErrorCode::RoomClosed,
        ErrorCode::Banned,
        ErrorCode::Draining,
        ErrorCode::BadSdp,
        ErrorCode::BadRoomSettings,
        ErrorCode::RoomSettingsConflict,
        ErrorCode::BadPosition,
        ErrorCode::MediaUnavailable,
        ErrorCode::ClusterUnavailable,
        ErrorCode::ResumeFailed,
        ErrorCode::RateLimited,
        ErrorCode::ServerMuted,
        ErrorCode::ParticipantNotFound,
        ErrorCode::BadTarget,
        ErrorCode::Internal,
    ];

    /// The wire spelling of the code (also the `code` label of the error metric).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RoomMismatch => "room_mismatch",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomClosed => "room_closed",
            ErrorCode::Banned => "banned",
            ErrorCode::Draining => "draining",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::BadRoomSettings => "bad_room_settings",
            ErrorCode::RoomSettingsConflict => "room_settings_conflict",
            ErrorCode::BadPosition => "bad_position",
            ErrorCode::MediaUnavailable => "media_unavailable",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerMuted => "server_muted",
            ErrorCode::ParticipantNotFound => "participant_not_found",
            ErrorCode::BadTarget => "bad_target",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the server closes the socket after sending this error.
    pub const fn fatal(self) -> bool {
        match self {
            ErrorCode::BadJson
            | ErrorCode::UnknownType
            | ErrorCode::BadMessage
            | ErrorCode::BinaryFrame
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::Forbidden
            | ErrorCode::BadSdp
            | ErrorCode::BadRoomSettings
            | ErrorCode::RoomSettingsConflict
            | ErrorCode::BadPosition
            | ErrorCode::ResumeFailed
            | ErrorCode::RateLimited
            | ErrorCode::ServerMuted
            | ErrorCode::ParticipantNotFound
            | ErrorCode::BadTarget => false,
            ErrorCode::FrameTooLarge
            | ErrorCode::UnsupportedProtocol
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::RoomMismatch
            | ErrorCode::RoomFull
            | ErrorCode::RoomClosed
            | ErrorCode::Banned
            | ErrorCode::Draining
            | ErrorCode::MediaUnavailable
            | ErrorCode::ClusterUnavailable
            | ErrorCode::Internal => true,
        }
    }

    /// The WebSocket close code that follows a fatal error (1009 for `frame_too_large`, else 1008);
    /// `None` for errors that leave the session open.
    pub const fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::FrameTooLarge => Some(CLOSE_MESSAGE_TOO_BIG),
            code if code.fatal() => Some(CLOSE_POLICY_VIOLATION),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Server → client: a request failed. `message` is for humans and may change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    #[test]
    fn round_trips() {
        let msg = ServerMessage::Error(ErrorMessage {
            code: ErrorCode::InvalidToken,
            message: "access token signature does not verify".into(),
        });
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"error","code":"invalid_token","message":"access token signature does not verify"}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).expect("parses"),
            msg
        );
    }

    #[test]
    fn room_settings_codes_round_trip() {
        for (code, wire) in [
            (ErrorCode::BadRoomSettings, "bad_room_settings"),
            (ErrorCode::RoomSettingsConflict, "room_settings_conflict"),
        ] {
            let msg = ServerMessage::Error(ErrorMessage {
                code,
                message: "the room exists with other settings".into(),
            });
            let text = serde_json::to_string(&msg).expect("serializes");
            assert_eq!(
                text,
                format!(
                    r#"{{"type":"error","code":"{wire}","message":"the room exists with other settings"}}"#
                )
            );
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).expect("parses"),
                msg
            );
            // Like `bad_sdp`: the offer was not answered, the session stays open.
            assert!(!code.fatal());
        }
    }

    #[test]
    fn as_str_is_the_serde_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                code.as_str()
            );
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(ErrorCode::FrameTooLarge.close_code(), Some(1009));
        assert_eq!(ErrorCode::InvalidToken.close_code(), Some(1008));
        assert_eq!(ErrorCode::BadJson.close_code(), None);
        for code in ErrorCode::ALL {
            assert_eq!(code.close_code().is_some(), code.fatal(), "{code}");
        }
    }

    /// The listed variants as an array, and a compile error unless the list names every variant: the
    /// macro also expands to an exhaustive `match` over exactly the listed ones.
    macro_rules! every_variant {
        ($($variant:ident),* $(,)?) => {{
            fn exhaustive(code: ErrorCode) {
                match code {
                    $(ErrorCode::$variant => {})*
                }
            }
            let _ = exhaustive;
            [$(ErrorCode::$variant),*]
        }};
    }

    /// [`ErrorCode::ALL`] is every variant, in order: a new variant does not compile until it is listed
    /// here, and then fails this test until `ALL` (and through it the protocol table and the SDK's lists
    /// below) has it too.
    #[test]
    fn all_lists_every_variant() {
        let every = every_variant!(
            BadJson,
            UnknownType,
            BadMessage,
            BinaryFrame,
            FrameTooLarge,
            UnsupportedProtocol,
            InvalidToken,
            TokenExpired,
            RoomMismatch,
            NotJoined,
            AlreadyJoined,
            Forbidden,
            RoomFull,
            RoomClosed,
            Banned,
            Draining,
            BadSdp,
            BadRoomSettings,
            RoomSettingsConflict,
            BadPosition,
            MediaUnavailable,
            ClusterUnavailable,
            ResumeFailed,
            RateLimited,
            ServerMuted,
            ParticipantNotFound,
            BadTarget,
            Internal,
        );
        assert_eq!(every.as_slice(), ErrorCode::ALL.as_slice());
    }

    /// The browser SDK, read as source: its lists of server error codes sit between marker comments.
    const SDK_SOURCE: &str = include_str!("../../../clients/web/chorus.js");

    /// The single-quoted strings between the lines `// <marker>` and `// </marker>` of the SDK's source.
    fn sdk_list(marker: &str) -> Vec<String> {
        let open = format!("// <{marker}>");
        let close = format!("// </{marker}>");
        let mut lines = SDK_SOURCE.lines().map(str::trim);
        assert!(
            lines.any(|line| line == open),
            "clients/web/chorus.js has no `{open}` line"
        );
        let region: Vec<&str> = lines.by_ref().take_while(|line| *line != close).collect();
        assert!(
            !region.is_empty(),
            "clients/web/chorus.js: nothing between `{open}` and `{close}`"
        );
        let text = region.join("\n");
        let pieces: Vec<&str> = text.split('\'').collect();
        assert!(
            pieces.len() % 2 == 1,
            "clients/web/chorus.js: unbalanced quotes between `{open}` and `{close}`"
        );
        let codes: Vec<String> = pieces
            .iter()
            .skip(1)
            .step_by(2)
            .map(|code| (*code).to_owned())
            .collect();
        for code in &codes {
            assert!(
                !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "clients/web/chorus.js: `{code}` between `{open}` and `{close}` is not an error code"
            );
        }
        codes
    }

    /// The SDK's `ServerErrorCode` type lists every code of the server, in the order of the protocol table.
    #[test]
    fn sdk_error_codes_match_the_server() {
        let server: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            sdk_list("error-codes"),
            server,
            "ServerErrorCode in clients/web/chorus.js (left) against ErrorCode::ALL (right)"
        );
    }

    /// The SDK's `FATAL_CODES` are exactly the codes after which the server closes the socket (the SDK
    /// once lacked `room_closed` and `banned`), in the order of the protocol table.
    #[test]
    fn sdk_fatal_codes_match_the_server() {
        let server: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.fatal())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            sdk_list("fatal-codes"),
            server,
            "FATAL_CODES in clients/web/chorus.js (left) against the fatal ErrorCodes (right)"
        );
    }

    /// The error table of protocol.md is the contract: every row names a code with the same fatality.
    #[test]
    fn matches_the_protocol_table() {
        let doc = include_str!("../../../docs/protocol.md");
        let rows: Vec<(String, bool)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                // | `code` | yes/no | meaning |
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let fatal = match *cells.get(2)? {
                    "yes" => true,
                    "no" => false,
                    _ => return None,
                };
                Some((code.to_owned(), fatal))
            })
            .collect();
        assert_eq!(rows.len(), ErrorCode::ALL.len(), "one table row per code");
        for (code, (name, fatal)) in ErrorCode::ALL.iter().zip(&rows) {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.fatal(), *fatal, "{name}");
        }
    }
}
