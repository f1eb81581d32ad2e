//! The game's position on its way to the server: the newest value wins, sent at most as often as the server
//! takes them ([`MIN_POSITION_INTERVAL`], plus a margin for network jitter), never a queue of stale ones.
//!
//! The game thread writes into a `watch` channel ([`crate::Client::set_position`]); the signaling thread
//! asks a [`PositionPacer`] what to send, when (sans-IO: time is an argument).

use std::time::{Duration, Instant};

use signaling::protocol::{PositionUpdate, MIN_POSITION_INTERVAL};
use vocab::Position;

/// Added to the server's interval: the server measures the interval at arrival, so two positions sent
/// exactly 100 ms apart can arrive closer together after network jitter and the second would be dropped.
const JITTER_MARGIN: Duration = Duration::from_millis(20);

/// The pacer's spacing between two positions sent.
pub(crate) const SEND_INTERVAL: Duration = MIN_POSITION_INTERVAL.saturating_add(JITTER_MARGIN);

/// After the player stops moving, the last position is sent once more this long after it was: if jitter
/// still made the server drop the last one, the server does not keep a stale place for the player.
const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// What to send and when, for one participant on the server (a rejoin or a move is a new one:
/// [`PositionPacer::reset`]).
#[derive(Debug, Default)]
pub(crate) struct PositionPacer {
    /// The last position sent, and when.
    sent: Option<(Position, Instant)>,
    /// Whether the last position sent still gets its one settling repeat.
    settle: bool,
}

impl PositionPacer {
    /// A new participant on the server: it has no position yet, the game's newest goes out at once.
    pub(crate) fn reset(&mut self) {
        *self = PositionPacer::default();
    }

    /// What to send at `now`, given the game's newest position (`None`: it never set one).
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        latest: Option<Position>,
    ) -> Option<PositionUpdate> {
        let latest = latest?;
        let send = match self.sent {
            None => true,
            Some((sent, at)) if sent != latest => {
                now.saturating_duration_since(at) >= SEND_INTERVAL
            }
            Some((_, at)) => self.settle && now.saturating_duration_since(at) >= SETTLE_AFTER,
        };
        if !send {
            return None;
        }
        // A repeat is the settle itself; a new position gets its own.
        self.settle = self.sent.is_none_or(|(sent, _)| sent != latest);
        self.sent = Some((latest, now));
        Some(PositionUpdate {
            x: latest.x,
            y: latest.y,
            z: latest.z,
            yaw_deg: latest.yaw_deg,
        })
    }

    /// When to poll again for `latest` (`None`: only when the game sets a new position).
    pub(crate) fn wake(&self, latest: Option<Position>) -> Option<Instant> {
        let latest = latest?;
        match self.sent {
            None => None,
            Some((sent, at)) if sent != latest => Some(at + SEND_INTERVAL),
            Some((_, at)) => self.settle.then_some(at + SETTLE_AFTER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64) -> Option<Position> {
        Some(Position::new(x, 0.0, 0.0, 0.0).expect("valid"))
    }

    #[test]
    fn the_newest_position_goes_out_no_more_often_than_the_server_takes_them() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pacer = PositionPacer::default();
        assert_eq!(pacer.poll(t0, None), None, "no position yet");
        assert_eq!(pacer.wake(None), None);
        // The first goes out at once.
        assert_eq!(pacer.poll(t0, at(1.0)).map(|u| u.x), Some(1.0));
        // A game moving every frame (60 Hz): nothing until the interval has passed, then the newest only.
        let mut sent = Vec::new();
        for frame in 1..=60u64 {
            let now = ms(frame * 1000 / 60);
            let latest = at(1.0 + frame as f64);
            if let Some(u) = pacer.poll(now, latest) {
                sent.push((now.duration_since(t0), u.x));
            }
            // The pacer wakes the signaling thread for what it holds back (or for the settling repeat of
            // what it just sent).
            let wake = pacer.wake(latest).expect("something is due later");
            assert!(wake > now && wake <= now + SETTLE_AFTER, "{wake:?}");
        }
        assert!(
            sent.windows(2).all(|w| w[1].0 - w[0].0 >= SEND_INTERVAL),
            "{sent:?}"
        );
        assert!(
            sent.first().is_some_and(|s| s.0 >= SEND_INTERVAL),
            "{sent:?}"
        );
        assert!((7..=9).contains(&sent.len()), "{sent:?}");
        // The game stops at x = 61: it goes out at the next interval, then once more a second later, then
        // nothing (the settle is one repeat).
        let last = sent.last().expect("some were sent").0;
        let due = pacer.wake(at(61.0)).expect("the newest is due");
        assert_eq!(due, t0 + last + SEND_INTERVAL);
        assert_eq!(pacer.poll(due, at(61.0)).map(|u| u.x), Some(61.0));
        let settle = pacer.wake(at(61.0)).expect("a settling repeat");
        assert_eq!(settle, due + SETTLE_AFTER);
        assert_eq!(
            pacer.poll(settle - Duration::from_millis(1), at(61.0)),
            None
        );
        assert_eq!(pacer.poll(settle, at(61.0)).map(|u| u.x), Some(61.0));
        assert_eq!(pacer.wake(at(61.0)), None);
        assert_eq!(pacer.poll(settle + Duration::from_secs(10), at(61.0)), None);
        // A new participant on the server (a rejoin): the position goes out at once.
        pacer.reset();
        let now = settle + Duration::from_secs(11);
        assert_eq!(pacer.poll(now, at(61.0)).map(|u| u.x), Some(61.0));
    }
}
