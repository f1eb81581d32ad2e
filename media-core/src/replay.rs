//! A sliding replay window: the highest sequence number accepted and which of the [`REPLAY_WINDOW`]
//! before it were, as RFC 3711 §3.3.2 (SRTP) and RFC 4303 §3.4.3 (ESP) keep one. Used by SDES-keyed SRTP
//! ingest ([`crate::sdes`]) and by the server's trunk datagrams between nodes.

/// How far behind the highest accepted number a number may arrive (RFC 3711 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 64;

/// One sender's window. Check a number with [`ReplayWindow::is_fresh`] *before* it is authenticated and
/// record it with [`ReplayWindow::accept`] only after: a forged packet must not move the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i`: number `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// A window whose first accepted number is `first`.
    pub fn starting_at(first: u64) -> ReplayWindow {
        ReplayWindow {
            highest: first,
            seen: 1,
        }
    }

    /// The highest number accepted.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `n` is neither accepted already nor too old for the window.
    pub fn is_fresh(&self, n: u64) -> bool {
        if n > self.highest {
            return true;
        }
        let behind = self.highest - n;
        behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
    }

    /// Records `n` as accepted (the caller checked it with [`Self::is_fresh`]).
    pub fn accept(&mut self, n: u64) {
        if n > self.highest {
            let ahead = n - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = n;
        } else {
            let behind = self.highest - n;
            if behind < REPLAY_WINDOW {
                self.seen |= 1 << behind;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_accepted_once_within_the_window_and_never_below_it() {
        let mut w = ReplayWindow::starting_at(100);
        assert!(!w.is_fresh(100), "the first number is taken");
        assert!(
            w.is_fresh(101) && w.is_fresh(99),
            "ahead, and behind inside the window"
        );
        w.accept(99);
        assert!(!w.is_fresh(99));
        w.accept(200);
        assert_eq!(w.highest(), 200);
        assert!(w.is_fresh(150), "reordered, inside the window, not seen");
        assert!(
            !w.is_fresh(200 - REPLAY_WINDOW),
            "at the window's edge: too old"
        );
        assert!(!w.is_fresh(101), "far behind");
        w.accept(150);
        assert!(!w.is_fresh(150));
        w.accept(200 + REPLAY_WINDOW + 5);
        assert!(
            !w.is_fresh(150),
            "a jump forgets everything behind the new window"
        );
        assert!(w.is_fresh(200 + REPLAY_WINDOW + 4));
    }
}
