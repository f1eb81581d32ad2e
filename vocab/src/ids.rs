//! Identifier newtypes. Objects refer to each other by these, never by pointer.

use std::fmt;

/// A room, named by the application (`[A-Za-z0-9_.-]`, at most 128 bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RoomId(pub String);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A participant, unique on this server for the life of the process. Its display form is the
/// participant's `sid` in the protocol: `PA_` and 12 hex digits (ids are 48 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA_{:012x}", self.0)
    }
}

/// A string that is not a participant's `sid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a participant sid (PA_ and 12 hex digits)")]
pub struct BadSid;

impl std::str::FromStr for ParticipantId {
    type Err = BadSid;

    /// The inverse of `Display`: `PA_` and exactly 12 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, BadSid> {
        let hex = s.strip_prefix("PA_").ok_or(BadSid)?;
        if hex.len() != 12 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadSid);
        }
        u64::from_str_radix(hex, 16)
            .map(ParticipantId)
            .map_err(|_| BadSid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_id_displays_as_sid() {
        assert_eq!(ParticipantId(0xabc).to_string(), "PA_000000000abc");
        assert_eq!(RoomId("lobby".into()).to_string(), "lobby");
    }

    #[test]
    fn a_sid_parses_back_to_its_participant_id() {
        let id = ParticipantId(0xabc);
        assert_eq!(id.to_string().parse(), Ok(id));
        for bad in [
            "",
            "PA_",
            "PA_abc",
            "PA_00000000ABC0",
            "pa_000000000abc",
            "PA_0000000000abc",
            "PA_+0000000abc",
        ] {
            assert_eq!(bad.parse::<ParticipantId>(), Err(BadSid), "{bad}");
        }
    }
}
