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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_id_displays_as_sid() {
        assert_eq!(ParticipantId(0xabc).to_string(), "PA_000000000abc");
        assert_eq!(RoomId("lobby".into()).to_string(), "lobby");
    }
}
