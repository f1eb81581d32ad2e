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
    /// STUN naming a peer's ufrag that the peer's ICE agent rejects: MESSAGE-INTEGRITY missing or not made
    /// with the peer's ICE password, or a client ufrag other than the offer's. Its source is not learned.
    BadIntegrity,
    /// Verified STUN for one peer from an address another live peer is using (a spoofed source): dropped,
    /// so the address stays with the peer that was heard from it.
    Misrouted,
    /// RTP that waited in the worker's receive queue longer than [`crate::CoreConfig::stale_rtp_after`]
    /// (the worker fell behind): dropped unread rather than decrypted, forwarded or mixed seconds late.
    Overloaded,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Oversized,
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::Malformed,
        DropReason::NotPublishing,
        DropReason::StaleOrDuplicate,
        DropReason::BadIntegrity,
        DropReason::Misrouted,
        DropReason::Overloaded,
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
            DropReason::BadIntegrity => "bad_integrity",
            DropReason::Misrouted => "misrouted",
            DropReason::Overloaded => "overloaded",
        }
    }
}

/// Why the media of a peer moved to another of the client's paths (see [`crate::core::peer::Peer::client_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMove {
    /// The client nominated the new path (a verified binding request with USE-CANDIDATE).
    Nomination,
    /// The old path went silent and the client's verified consent checks came from the new one: a client
    /// that nominates only once (Firefox) after its NAT rebound it.
    Silence,
}

impl PathMove {
    pub const ALL: [PathMove; 2] = [PathMove::Nomination, PathMove::Silence];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PathMove::Nomination => "nomination",
            PathMove::Silence => "silence",
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
    /// Microphone RTP packets received as RED (RFC 2198), included in `rtp_in`.
    pub rtp_red_in: u64,
    /// Microphone RTP packets whose Opus (a RED packet's primary) carries in-band FEC for the packet
    /// before it, included in `rtp_in`.
    pub rtp_fec_in: u64,
    /// Microphone RTP packets that came without the RFC 6464 audio-level extension and got a level the
    /// core measured by decoding (`speakers::meter`: theirs, or within 10 ms the last one's), included in
    /// `rtp_in`.
    pub rtp_levels_measured: u64,
    /// Packets written into slots as RED, included in `rtp_forwarded`.
    pub rtp_red_forwarded: u64,
    /// Of `rtp_red_forwarded`: packets with redundancy from the server's copies of the speaker's previous
    /// frames (`red::History`): every plain Opus packet sent as RED (none added after a pause), and RED
    /// packets that carried fewer frames than the subscriber's depth and were given older ones.
    pub rtp_red_added: u64,
    /// Microphone packets nobody was routed to (e.g. alone in the room).
    pub rtp_unrouted: u64,
    /// Subscribers' slot streams that took another speaker (or the same speaker's restarted stream) and
    /// continued with it (`sfu::rewrite`, "At a switch"): one per subscriber's slot.
    pub slot_switches: u64,
    /// Subscribers' slot streams that re-timed their speaker because its timestamps fell a second or more
    /// behind the wall clock between two packets in sequence (`sfu::rewrite`): a sender whose clock
    /// stopped (Firefox after a late microphone start) or an upstream stall of over a second.
    pub slot_retimes: u64,
    pub drops: [u64; DropReason::ALL.len()],
    /// RTCP NACKs received from subscribers (retransmission requests for our outgoing streams).
    pub nacks_received: u64,
    /// RTCP NACKs str0m sent to publishers.
    pub nacks_sent: u64,
    /// Peers whose media moved to another path of their client, by [`PathMove`].
    pub path_moves: [u64; PathMove::ALL.len()],
    /// Mixed rooms' counters.
    pub mix: MixStats,
    /// Spanned rooms' trunk counters.
    pub trunk: TrunkStats,
}

/// Counters of spanned rooms' trunks (`core/trunk.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrunkStats {
    /// Candidates' packets exported to the room's other shards.
    pub packets_out: u64,
    /// Packets imported from other shards.
    pub packets_in: u64,
    /// Withdrawals received.
    pub withdrawn_in: u64,
    /// Messages for a room this core does not host.
    pub no_room: u64,
    /// Packets refused: their speaker is a local participant, or the room has too many remote ones.
    pub refused: u64,
    /// Remote participants removed after silence (a lost withdrawal or a dead shard).
    pub expired: u64,
    /// Imported packets whose speaker's voice (team, shout role, talk target) differed from the one its
    /// remote participant had: applied to the room's audibility (the first packet of a speaker with one).
    pub voice_changes: u64,
}

/// Counters of mixed rooms and their jitter buffers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixStats {
    /// 20 ms mixer ticks run (one per mixed room per tick).
    pub ticks: u64,
    /// Ticks that ran more than one tick period after their deadline (the worker fell behind; the mixer
    /// caught up, so their audio was delayed, not lost).
    pub ticks_late: u64,
    /// Ticks given up because the worker was more than [`crate::mixer::MAX_CATCH_UP_TICKS`] behind.
    pub ticks_skipped: u64,
    /// Times a ticking room's grid moved earlier to its talkers' phase (`Mixer::rephase`).
    pub grid_moves: u64,
    /// Opus frames decoded from participants.
    pub frames_decoded: u64,
    /// Opus frames encoded (one per shared mix plus one per talker per tick).
    pub frames_encoded: u64,
    /// Missing frames recovered from the next packet's in-band FEC.
    pub concealed_fec: u64,
    /// Missing frames recovered from RED (RFC 2198) redundancy into a gap of a jitter buffer (they play
    /// instead of FEC or PLC).
    pub recovered_red: u64,
    /// Missing frames concealed by Opus packet-loss concealment.
    pub concealed_plc: u64,
    /// Packets that arrived after their playout time.
    pub packets_late: u64,
    /// Packets received twice.
    pub packets_duplicate: u64,
    /// Delay peaks (stalls the 95th percentile does not cover) that mixed inputs' jitter buffers began
    /// covering.
    pub jitter_delay_peaks: u64,
    /// Frames never received by their playout time (before concealment).
    pub packets_lost: u64,
    /// Mixed packets sent to listeners.
    pub packets_sent: u64,
    /// Of those, the packets that carried in-band FEC (listeners that state loss hear an encode tuned
    /// for it; the others do not pay for it).
    pub fec_packets_sent: u64,
}

impl MixStats {
    /// One mixed packet sent to a listener, `fec` if it carries in-band FEC.
    pub(crate) fn sent(&mut self, fec: bool) {
        self.packets_sent += 1;
        self.fec_packets_sent += u64::from(fec);
    }
}

/// Observations for histograms, drained by the worker with [`crate::MediaCore::take_samples`]. Each list
/// is capped (oldest kept) so an undrained core stays bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// Round-trip times from RTCP reports, seconds.
    pub rtt_seconds: Vec<f64>,
    /// Interarrival jitter of publishers' streams (RFC 3550), seconds.
    pub jitter_seconds: Vec<f64>,
    /// Jitter-buffer target delay of mixed inputs, seconds, sampled once per second per input.
    pub jitter_buffer_delay_seconds: Vec<f64>,
}

impl Samples {
    /// Most observations of one kind kept between drains.
    pub const CAP: usize = 4096;

    pub(crate) fn push(list: &mut Vec<f64>, value: f64) {
        if list.len() < Self::CAP {
            list.push(value);
        }
    }
}

impl CoreStats {
    /// One datagram of `data.len()` bytes came in from the network.
    pub fn datagram_in(&mut self, data: &[u8]) {
        self.datagrams_in += 1;
        self.bytes_in += data.len() as u64;
    }

    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn path_moved(&mut self, cause: PathMove) {
        self.path_moves[cause as usize] += 1;
    }

    pub fn path_moves(&self, cause: PathMove) -> u64 {
        self.path_moves[cause as usize]
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
        for (i, m) in PathMove::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            s.path_moved(*m);
            assert_eq!(s.path_moves(*m), 1);
        }
    }
}
