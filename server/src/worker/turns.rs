//! Fair turns between a worker's sockets and everything else it waits on.
//!
//! The worker's `select!` polls its sockets before its timers, the counters' tick, taps, ingest sources and
//! ICE-TCP events, so that a mixer tick runs after the datagrams that arrived before it. A worker given more
//! than its core finds its sockets readable at every wake-up, and that order would starve everything after
//! them: no str0m timeouts, no slot selection or trunk exports, no published counters. So sockets that
//! stayed busy (every read a full batch) for [`SOCKET_TURN`] go last until the rest that was ready had a
//! go: the taps, ingest sources and ICE-TCP events, then the core's timeout, which ends the yield (a core
//! past its capacity can be due again as soon as it ran, and would starve the sockets in turn). A calm
//! worker empties its sockets at each read and never reaches the turn: its order is unchanged.

use std::time::{Duration, Instant};

/// How long sockets that stay readable may hold the worker before the rest gets a turn: well under a 20 ms
/// frame, so an overloaded worker's ticks run a few milliseconds late rather than never.
pub const SOCKET_TURN: Duration = Duration::from_millis(5);

/// Whose turn it is: the sockets', or, once they held the worker for [`SOCKET_TURN`], everything else's.
#[derive(Debug, Default)]
pub struct SocketTurns {
    /// Since when every socket read has filled its batch.
    busy_since: Option<Instant>,
    /// The sockets are yielding now.
    yielding: bool,
    /// Turns the sockets gave up, not yet published.
    yields: u64,
}

impl SocketTurns {
    /// Before a wait at `now`: whether the sockets go after everything else this time.
    pub fn sockets_yield(&mut self, now: Instant) -> bool {
        let y = self
            .busy_since
            .is_some_and(|t| now.saturating_duration_since(t) >= SOCKET_TURN);
        if y && !self.yielding {
            self.yields += 1;
        }
        self.yielding = y;
        y
    }

    /// A socket read at `now`; `full`: it filled its batch, so more is probably queued.
    pub fn read(&mut self, now: Instant, full: bool) {
        self.busy_since = match full {
            true => self.busy_since.or(Some(now)),
            false => None,
        };
    }

    /// The core's timeout or the primary socket ran last while yielding: the sockets' turn starts again.
    pub fn served_last(&mut self) {
        self.busy_since = None;
    }

    /// The turns given up since the last call.
    pub fn take_yields(&mut self) -> u64 {
        std::mem::take(&mut self.yields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_worker_that_empties_its_sockets_never_yields() {
        let mut turns = SocketTurns::default();
        let start = Instant::now();
        for i in 0..1000 {
            let now = start + i * MS;
            assert!(!turns.sockets_yield(now));
            // Full batches now and then, but the next read finds the socket empty.
            turns.read(now, i % 2 == 0);
        }
        assert_eq!(turns.take_yields(), 0);
    }

    #[test]
    fn busy_sockets_yield_after_their_turn_once_until_served_last() {
        let mut turns = SocketTurns::default();
        let start = Instant::now();
        turns.read(start, true);
        assert!(!turns.sockets_yield(start + 4 * MS));
        turns.read(start + 4 * MS, true);
        // The turn is over: the timers, counters and the rest go first, as often as they are ready.
        assert!(turns.sockets_yield(start + SOCKET_TURN));
        assert!(turns.sockets_yield(start + 6 * MS));
        assert_eq!(turns.take_yields(), 1);
        // Nothing else was ready: the primary socket is served last and gets a new turn.
        turns.served_last();
        turns.read(start + 6 * MS, true);
        assert!(!turns.sockets_yield(start + 7 * MS));
        assert!(turns.sockets_yield(start + 11 * MS));
        assert_eq!(turns.take_yields(), 1);
        assert_eq!(turns.take_yields(), 0);
    }

    #[test]
    fn a_read_that_empties_the_socket_ends_the_turn() {
        let mut turns = SocketTurns::default();
        let start = Instant::now();
        turns.read(start, true);
        assert!(turns.sockets_yield(start + 10 * MS));
        // While yielding, the second socket was read and found less than a batch.
        turns.read(start + 10 * MS, false);
        assert!(!turns.sockets_yield(start + 11 * MS));
        assert_eq!(turns.take_yields(), 1);
    }
}
