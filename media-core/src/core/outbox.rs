//! [`Outbox`]: what draining peers produces — datagrams to send, peer events for the core to act on, and
//! the peers' wake-ups — in one value the core owns and lends to one peer at a time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use crate::core::net::NetTransmit;
use crate::core::peer::{Peer, PeerEvent};
use crate::ids::ParticipantId;

#[derive(Default)]
pub(crate) struct Outbox {
    /// Datagrams to send, in order.
    pub(crate) transmits: VecDeque<NetTransmit>,
    /// Peer events the core has not acted on yet.
    pub(crate) events: VecDeque<(ParticipantId, PeerEvent)>,
    /// Min-heap of (wake-up, participant). The peer owns its wake-up; an entry here is live only while it
    /// equals that wake-up (a superseded entry is skipped when it comes up).
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// Sent datagrams' buffers, given back by the drive loop ([`MediaCore::recycle`]) for the next ones.
    ///
    /// [`MediaCore::recycle`]: crate::core::MediaCore::recycle
    spare: Vec<Vec<u8>>,
}

/// Most spent buffers kept: a few send batches' worth, so a fan-out to hundreds reuses most of its
/// buffers once the first one has been sent.
const SPARE_BUFFERS: usize = 1024;

/// Largest buffer kept as a spare: room for a forwarded or mixed audio packet (a header of at most
/// 112 bytes, an Opus payload of up to 384, the 16-byte tag). The datagrams str0m and its ICE agent
/// write (STUN, DTLS, RTCP) come in MTU-sized buffers; kept, a few seconds of them would fill the
/// spares with 1,500-byte buffers that forwarding never needs: 1.5 MB per worker, which measured as
/// 20 kB more private memory per participant in a room of 50. Only buffers the forwarding path sized
/// itself are kept, so the spares hold no more than its largest burst in flight.
const SPARE_CAPACITY_MAX: usize = 512;

impl Outbox {
    /// An empty buffer for a datagram of up to `capacity` bytes: a spare if there is one.
    pub(crate) fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keep a sent datagram's buffer for [`buffer`](Self::buffer), unless enough are kept or it is larger
    /// than an audio packet needs ([`SPARE_CAPACITY_MAX`]).
    pub(crate) fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() <= SPARE_CAPACITY_MAX {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// Wake `peer` at `at` unless it already wakes earlier.
    pub(crate) fn schedule(&mut self, peer: &mut Peer, at: Instant) {
        if peer.wake_earlier(at) {
            self.timers.push(Reverse((at, peer.id())));
        }
    }

    /// The earliest wake-up entry (possibly superseded).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Take the earliest entry due at `now`: (its instant, whose). The caller checks it is still live with
    /// [`Peer::take_wake`].
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ParticipantId)> {
        let Reverse((at, id)) = *self.timers.peek()?;
        if at > now {
            return None;
        }
        self.timers.pop();
        Some((at, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_comes_back_empty_and_large_ones_are_not_kept() {
        use crate::core::MAX_DATAGRAM;
        let mut out = Outbox::default();
        let mut sent = out.buffer(200);
        assert!(sent.capacity() >= 200);
        sent.extend_from_slice(&[7; 150]);
        let at = sent.as_ptr();
        out.recycle(sent);
        let again = out.buffer(100);
        assert!(again.is_empty(), "a spare comes back cleared");
        assert_eq!(again.as_ptr(), at, "the same allocation is reused");
        let grown = out.buffer(300);
        assert!(
            grown.capacity() >= 300,
            "a fresh buffer when no spare is left"
        );

        out.recycle(Vec::with_capacity(SPARE_CAPACITY_MAX + 1));
        assert!(out.spare.is_empty(), "a large buffer is dropped, not kept");
        out.recycle(Vec::with_capacity(MAX_DATAGRAM));
        assert!(
            out.spare.is_empty(),
            "an MTU-sized buffer (STUN, DTLS, RTCP from str0m) is not kept"
        );
        for _ in 0..SPARE_BUFFERS + 10 {
            out.recycle(Vec::with_capacity(64));
        }
        assert_eq!(
            out.spare.len(),
            SPARE_BUFFERS,
            "at most SPARE_BUFFERS are kept"
        );
    }
}
