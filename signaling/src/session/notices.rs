//! A session's rare inputs — an operator's removal, a move to another room, the room's migration to
//! another node, the drain notice, shutdown — watched by one future that lives across the session's
//! wake-ups.
//!
//! Each of them is a `watch` channel, and waiting on a watch registers a waiter in its list under a lock
//! (and removes it again when the wait is dropped). Polled afresh at every wake-up, as the session's
//! `select!` did, the five waits cost ten lock round trips each time a presence event, a media event or a
//! frame woke the session, for channels that almost never change: in a room of 2,000, every member is
//! woken five times a second by the speaker reports alone (issue 15, docs/loadtest.md "the signaling
//! side of a room of 2,000"). Here the waits are registered once and stay registered until one of them
//! fires or what is watched changes (a join, a move, the drain told).

use std::collections::HashMap;
use std::future::{pending, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

use crate::protocol::LeftReason;

/// A rare input, once it happened.
#[derive(Debug)]
pub(super) enum Notice {
    /// An operator removed the participant (admin API).
    Removed(LeftReason),
    /// A moderator or operator moves the participant to this room.
    Moved(String),
    /// The room was handed to the node of the cluster at this signaling URL.
    Migrated(String),
    /// The server drains; the deadline.
    Draining(std::time::Instant),
    /// The server closes every session.
    Shutdown,
}

/// What a joined session watches besides the server-wide channels: clones of its member's receivers.
pub(super) struct MemberWatches {
    /// The participant id the receivers belong to: a move or a rejoin gives new ones under a new id.
    pub sid: String,
    pub room: String,
    pub removed: watch::Receiver<Option<LeftReason>>,
    pub moved: watch::Receiver<Option<String>>,
    pub migrations: watch::Receiver<HashMap<String, String>>,
}

/// The watch of a session's rare inputs, kept across wake-ups.
pub(super) struct Notices {
    /// The participant id watched (none before `join`) and whether the drain notice is still awaited.
    sid: Option<String>,
    drain: bool,
    /// `None` once it resolved: a watch reports once.
    future: Option<Pin<Box<dyn Future<Output = Notice> + Send>>>,
}

impl Notices {
    /// Watch the drain notice (until told), shutdown and, once joined, the member's own channels.
    pub(super) fn new(
        drain: Option<watch::Receiver<Option<std::time::Instant>>>,
        closing: watch::Receiver<bool>,
        member: Option<MemberWatches>,
    ) -> Self {
        Notices {
            sid: member.as_ref().map(|m| m.sid.clone()),
            drain: drain.is_some(),
            future: Some(Box::pin(watch_all(drain, closing, member))),
        }
    }

    /// Whether this watch is still waiting, of participant `sid` (none: not joined) with the drain notice
    /// awaited or not; if not, the session builds a new one.
    pub(super) fn watches(&self, sid: Option<&str>, drain: bool) -> bool {
        self.future.is_some() && self.sid.as_deref() == sid && self.drain == drain
    }
}

impl Future for Notices {
    type Output = Notice;

    /// Pending for ever once it resolved (until the session builds a new watch).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Notice> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let notice = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(notice)
    }
}

async fn watch_all(
    mut drain: Option<watch::Receiver<Option<std::time::Instant>>>,
    mut closing: watch::Receiver<bool>,
    member: Option<MemberWatches>,
) -> Notice {
    tokio::select! {
        notice = member_notice(member) => notice,
        deadline = super::drain_notice(&mut drain) => Notice::Draining(deadline),
        () = super::closing(&mut closing) => Notice::Shutdown,
    }
}

/// The first of a member's removal, move and migration; never resolves before `join`.
async fn member_notice(member: Option<MemberWatches>) -> Notice {
    let Some(MemberWatches {
        room,
        mut removed,
        mut moved,
        mut migrations,
        ..
    }) = member
    else {
        return pending().await;
    };
    let removed = async {
        // Copied out of the watch's guard, which must not be held across an await.
        let reason = match removed.wait_for(Option::is_some).await {
            Ok(reason) => *reason,
            // The registry let go of this participant.
            Err(_) => None,
        };
        match reason {
            Some(reason) => Notice::Removed(reason),
            None => pending().await,
        }
    };
    let moved = async {
        let room = match moved.wait_for(Option::is_some).await {
            Ok(room) => room.clone(),
            Err(_) => None,
        };
        match room {
            Some(room) => Notice::Moved(room),
            None => pending().await,
        }
    };
    let migrated = async {
        let url = match migrations.wait_for(|rooms| rooms.contains_key(&room)).await {
            Ok(rooms) => rooms.get(&room).cloned(),
            // The context is gone: no migration will come.
            Err(_) => None,
        };
        match url {
            Some(url) => Notice::Migrated(url),
            None => pending().await,
        }
    };
    tokio::select! {
        notice = removed => notice,
        notice = moved => notice,
        notice = migrated => notice,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The registry's and the context's ends of a session's channels.
    struct Senders {
        drain: watch::Sender<Option<std::time::Instant>>,
        closing: watch::Sender<bool>,
        removed: watch::Sender<Option<LeftReason>>,
        moved: watch::Sender<Option<String>>,
        migrations: watch::Sender<HashMap<String, String>>,
    }

    /// The watch of a session joined to `lobby` as `PA_1`, the drain not told yet.
    fn joined() -> (Notices, Senders) {
        let (drain_tx, drain) = watch::channel(None);
        let (closing_tx, closing) = watch::channel(false);
        let (removed_tx, removed) = watch::channel(None);
        let (moved_tx, moved) = watch::channel(None);
        let (migrations_tx, migrations) = watch::channel(HashMap::new());
        let watches = MemberWatches {
            sid: "PA_1".into(),
            room: "lobby".into(),
            removed,
            moved,
            migrations,
        };
        let senders = Senders {
            drain: drain_tx,
            closing: closing_tx,
            removed: removed_tx,
            moved: moved_tx,
            migrations: migrations_tx,
        };
        (Notices::new(Some(drain), closing, Some(watches)), senders)
    }

    /// Polls `notices` once: `None` while nothing happened.
    fn poll_once(notices: &mut Notices) -> Option<Notice> {
        let waker = futures_util::task::noop_waker();
        match Pin::new(notices).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(notice) => Some(notice),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn each_notice_fires_after_waiting_across_polls() {
        let (mut notices, senders) = joined();
        assert!(notices.watches(Some("PA_1"), true));
        assert!(!notices.watches(Some("PA_2"), true));
        assert!(!notices.watches(Some("PA_1"), false));
        // Polled many times, as the session is woken by other inputs: nothing, until a removal.
        for _ in 0..3 {
            assert!(poll_once(&mut notices).is_none());
        }
        senders.removed.send_replace(Some(LeftReason::Kicked));
        assert!(matches!(
            poll_once(&mut notices),
            Some(Notice::Removed(LeftReason::Kicked))
        ));
        // Reported once: the session builds a new watch if it goes on.
        assert!(!notices.watches(Some("PA_1"), true));
        assert!(poll_once(&mut notices).is_none());

        let (mut notices, senders) = joined();
        assert!(poll_once(&mut notices).is_none());
        // Another room's migration is not this session's.
        let other = HashMap::from([("other".into(), "wss://b".into())]);
        senders.migrations.send_replace(other);
        assert!(poll_once(&mut notices).is_none());
        senders.moved.send_replace(Some("stage".into()));
        assert!(matches!(poll_once(&mut notices), Some(Notice::Moved(room)) if room == "stage"));

        let (mut notices, senders) = joined();
        assert!(poll_once(&mut notices).is_none());
        let lobby = HashMap::from([("lobby".into(), "wss://b".into())]);
        senders.migrations.send_replace(lobby);
        assert!(matches!(poll_once(&mut notices), Some(Notice::Migrated(url)) if url == "wss://b"));
    }

    #[tokio::test]
    async fn drain_and_shutdown_fire_before_a_join_and_a_told_drain_is_not_watched() {
        let (drain_tx, drain) = watch::channel(None);
        let (closing_tx, closing) = watch::channel(false);
        let mut notices = Notices::new(Some(drain.clone()), closing.clone(), None);
        assert!(notices.watches(None, true));
        assert!(poll_once(&mut notices).is_none());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        drain_tx.send_replace(Some(deadline));
        assert!(matches!(poll_once(&mut notices), Some(Notice::Draining(d)) if d == deadline));

        // Told: the session watches without the drain, and shutdown still ends it.
        let mut notices = Notices::new(None, closing, None);
        assert!(notices.watches(None, false));
        assert!(poll_once(&mut notices).is_none());
        closing_tx.send_replace(true);
        assert!(matches!(poll_once(&mut notices), Some(Notice::Shutdown)));

        // And a joined session's watch hears both.
        let (mut notices, senders) = joined();
        senders.drain.send_replace(Some(deadline));
        assert!(matches!(poll_once(&mut notices), Some(Notice::Draining(d)) if d == deadline));
        let (mut notices, senders) = joined();
        senders.closing.send_replace(true);
        assert!(matches!(poll_once(&mut notices), Some(Notice::Shutdown)));
    }

    #[tokio::test]
    async fn senders_gone_leave_the_watch_pending() {
        let (mut notices, senders) = joined();
        drop(senders);
        assert!(poll_once(&mut notices).is_none());
        assert!(poll_once(&mut notices).is_none());
    }
}
