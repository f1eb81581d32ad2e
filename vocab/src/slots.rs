//! A subscriber's audio slots: how many there may be, and who occupies one.

use crate::ids::ParticipantId;

/// The most audio slots a subscriber may have (the offer carries one recvonly m-line per slot).
pub const MAX_SLOTS: usize = 16;

/// One subscriber slot's occupant, as media workers report it to signaling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotAssignment {
    pub slot: u8,
    /// The mid of the slot's m-line in the negotiated SDP.
    pub mid: String,
    /// The participant whose audio the slot carries, if any.
    pub participant: Option<ParticipantId>,
    /// That participant's original SSRC (the CSRC of the slot's packets).
    pub ssrc: Option<u32>,
}
