//! Counters a worker exports as metrics. Plain integers: the core is single-threaded; the worker copies
//! them out periodically.

/// Why a datagram or packet was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than any WebRTC audio datagram.
    Oversized,
    /// Not STUN, from an address no peer has verified.
    UnknownSource,
    /// STUN naming an ICE ufrag of no peer here.
    UnknownUfrag,
    /// Framing or crypto rejected (bad STUN, DTLS, SRTP or RTP).
    Malformed,
    /// Audio from a muted participant or one not allowed to publish.
    NotPublishing,
    /// A packet from before a slot's speaker switch, or one already forwarded.
    StaleOrDuplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Oversized,
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::Malformed,
        DropReason::NotPublishing,
        DropReason::StaleOrDuplicate,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::Malformed => "malformed",
            DropReason::NotPublishing => "not_publishing",
            DropReason::StaleOrDuplicate => "stale_or_duplicate",
        }
    }
}

/// Monotonic counters of one core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Microphone RTP packets received.
    pub rtp_in: u64,
    /// RTP packets written into subscribers' slots.
    pub rtp_forwarded: u64,
    /// Microphone packets nobody was routed to (e.g. alone in the room).
    pub rtp_unrouted: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl CoreStats {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_index_their_own_counter() {
        let mut s = CoreStats::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            s.drop(*r);
            assert_eq!(s.dropped(*r), 1);
        }
    }
}
