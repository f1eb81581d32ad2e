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

/// A participant, unique on this server for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA_{:012x}", self.0)
    }
}

/// An RTP synchronisation source identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The index of one of a subscriber's audio slots (0..K).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SlotIndex(pub u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_id_displays_as_sid() {
        assert_eq!(ParticipantId(0xabc).to_string(), "PA_000000000abc");
    }
}
