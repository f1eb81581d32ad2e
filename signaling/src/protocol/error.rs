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
    MediaUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the protocol table.
    pub const ALL: [ErrorCode; 19] = [
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
        ErrorCode::MediaUnavailable,
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
            ErrorCode::MediaUnavailable => "media_unavailable",
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
            | ErrorCode::BadSdp => false,
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
