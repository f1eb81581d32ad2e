//! Stopping a server: the [`Shutdown`] value through which its owner (the binary's signal handlers, or a
//! test or an embedder) asks for a drain, and the drain sequence [`Server::serve`](crate::Server::serve)
//! runs then.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::state::{begin_drain, AppState};
use crate::webhooks::InFlight;

/// After the grace period, how long closed sessions get to say so and leave their rooms.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// At exit, how long the webhooks queued and under way may take to be delivered.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(5);

/// Where a server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No drain asked for through [`Shutdown`] (one may have begun through the admin API).
    Serving,
    /// Asked to drain: calls continue until the server is empty or the grace period is over.
    Draining,
    /// The drain is over: the remaining sessions are being closed and the last webhooks sent.
    Closing,
}

/// How a running server is asked to drain and stop, and how far it is. Clones share the same state: keep
/// one, give one to [`run`](crate::run). To stop without draining, drop the server's future (the `chorus`
/// binary exits the process).
#[derive(Clone, Debug)]
pub struct Shutdown {
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            phase: Arc::new(watch::Sender::new(Phase::Serving)),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the server to drain (what SIGTERM does). Returns whether this call was the first to ask.
    pub fn drain(&self) -> bool {
        self.phase.send_if_modified(|phase| {
            let first = *phase == Phase::Serving;
            if first {
                *phase = Phase::Draining;
            }
            first
        })
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Completes once a drain has been asked for.
    async fn drain_requested(&self) {
        let mut phase = self.phase.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = phase.wait_for(|phase| *phase != Phase::Serving).await;
    }

    fn set_closing(&self) {
        self.phase.send_replace(Phase::Closing);
    }
}

/// Waits for a drain request, then drains: no new joins, every client is told (`draining`), calls
/// continue until the last participant is gone or the grace period ends; then the remaining sessions are
/// closed (1001) and given a moment to leave, and webhook deliveries under way a moment to finish.
pub(crate) async fn drain(state: &AppState, webhooks: &InFlight, shutdown: &Shutdown) {
    shutdown.drain_requested().await;
    let deadline = begin_drain(state);
    let signaling = &state.signaling;
    tokio::select! {
        // An empty server counts as drained even when its grace period is already over.
        biased;
        () = state.sessions.participants_gone(signaling) => {
            info!("drained: no participants left");
        }
        () = tokio::time::sleep_until(deadline.into()) => {
            warn!(
                remaining = signaling.participant_count(),
                "grace period over: closing the calls still in progress"
            );
        }
    }
    shutdown.set_closing();
    // Close every session with 1001 and give them a moment to say so and leave their rooms.
    signaling.close_all_sessions();
    let _all_left =
        tokio::time::timeout(CLOSE_WAIT, state.sessions.participants_gone(signaling)).await;
    // The last rooms' webhooks (participant_left, room_finished) are worth a short wait: the
    // dispatcher delivers every event queued by now, however many, then those deliveries end.
    let _delivered = tokio::time::timeout(WEBHOOK_FLUSH, webhooks.finish()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_drain_request_counts() {
        let shutdown = Shutdown::new();
        let owner = shutdown.clone();
        assert_eq!(owner.phase(), Phase::Serving);
        assert!(shutdown.drain());
        assert!(!owner.drain());
        assert_eq!(owner.phase(), Phase::Draining);
        shutdown.set_closing();
        assert!(!owner.drain());
        assert_eq!(owner.phase(), Phase::Closing);
    }

    #[tokio::test]
    async fn a_drain_request_wakes_the_waiter() {
        let shutdown = Shutdown::new();
        let waiting = shutdown.clone();
        let waiter = tokio::spawn(async move { waiting.drain_requested().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.drain();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the request wakes the waiter")
            .expect("the waiter does not panic");
    }
}
