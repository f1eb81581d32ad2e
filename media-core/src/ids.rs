//! Identifier newtypes. Objects refer to each other by these, never by pointer.

use std::fmt;

/// Room and participant ids are shared with signaling (the vocabulary crate); the RTP ones are here.
pub use vocab::{ParticipantId, RoomId};

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
