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
}

impl Outbox {
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
