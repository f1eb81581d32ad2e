//! What the HTTP routes (http.rs) and the admin API (admin.rs) share: the application state, the drain's
//! start, and the count of open signaling sessions that tells a drain when the last participant is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::Signaling;
use tokio::sync::watch;
use tracing::info;

use crate::config::RoomDefaults;
use crate::metrics::ServerMetrics;

pub struct AppState {
    pub signaling: Arc<Signaling>,
    pub registry: prometheus::Registry,
    /// Development mode: `/api/dev-token` mints tokens with this key and secret.
    pub dev_key: Option<(String, String)>,
    pub metrics: ServerMetrics,
    /// Settings of rooms the admin API creates when its request leaves them out.
    pub room_defaults: RoomDefaults,
    /// How long calls continue once a drain begins.
    pub grace: Duration,
    /// The WebSocket sessions open now.
    pub sessions: Sessions,
    /// Listener streams: mounts, their listeners, the tap set the media workers follow.
    pub broadcasts: Arc<crate::broadcast::Broadcasts>,
    /// This node's part in a cluster (`None`: a node alone).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Recordings: the index, the writer thread, retention.
    pub recordings: Arc<crate::recording::Recordings>,
    /// Sources publishing into rooms (Icecast, RTP).
    pub ingest: Arc<crate::ingest::Ingest>,
    /// HLS of rooms' mixes: streams, their segments, the rooms tapped for them.
    pub hls: Arc<crate::hls::Hls>,
    /// WHIP publishers and WHEP listeners.
    pub whip: Arc<crate::whip::Whip>,
    /// Playbacks, hold music and announcements.
    pub playout: Arc<crate::playout::Playout>,
}

/// Begins draining (SIGTERM or the admin API): `/readyz` turns 503, joins are refused, every client is
/// told `draining`. Returns the deadline (the first one if a drain is under way).
pub fn begin_drain(state: &AppState) -> Instant {
    let already = state.signaling.is_draining();
    let deadline = state.signaling.start_drain(state.grace);
    state.metrics.draining.set(1);
    if !already {
        info!(
            grace_secs = state.grace.as_secs(),
            participants = state.signaling.participant_count(),
            "draining: no new joins; calls continue until they end or the grace period is over"
        );
    }
    deadline
}

/// The signaling sessions open now, as a count others can wait on.
///
/// Every participant belongs to one session, and a session returns only once its participant has left its
/// room, so a participant leaving is always followed by a session's [`SessionGuard`] dropping: waiting for
/// drops and checking the participant count then sees the server empty without polling it.
#[derive(Clone)]
pub struct Sessions {
    open: Arc<watch::Sender<usize>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            open: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Sessions {
    /// Counts a session open until the guard drops.
    pub fn open(&self) -> SessionGuard {
        self.open.send_modify(|open| *open += 1);
        SessionGuard {
            open: Arc::clone(&self.open),
        }
    }

    /// Completes once `signaling` has no participant left (at once if it has none now).
    pub async fn participants_gone(&self, signaling: &Signaling) {
        // Subscribe before looking, so a session that ends in between still wakes the loop.
        let mut ended = self.open.subscribe();
        while signaling.participant_count() > 0 {
            if ended.changed().await.is_err() {
                // Unreachable while `self` holds the sender; nothing can change the count then anyway.
                return std::future::pending().await;
            }
        }
    }
}

/// One open session; dropping it (however the session ends) wakes whoever waits on [`Sessions`].
pub struct SessionGuard {
    open: Arc<watch::Sender<usize>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.open.send_modify(|open| *open -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_open_sessions_until_they_drop() {
        let sessions = Sessions::default();
        let a = sessions.open();
        let b = sessions.open();
        assert_eq!(*sessions.open.borrow(), 2);
        drop(a);
        assert_eq!(*sessions.open.borrow(), 1);
        drop(b);
        assert_eq!(*sessions.open.borrow(), 0);
    }

    #[tokio::test]
    async fn a_dropped_guard_wakes_a_waiter() {
        let sessions = Sessions::default();
        let guard = sessions.open();
        let mut ended = sessions.open.subscribe();
        let waiter = tokio::spawn(async move { ended.changed().await.is_ok() });
        tokio::task::yield_now().await;
        drop(guard);
        assert!(waiter.await.expect("the waiter does not panic"));
        assert_eq!(*sessions.open.borrow(), 0);
    }
}
