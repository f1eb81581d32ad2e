//! WHIP (RFC 9725) publishers and WHEP listeners: a WebRTC peer negotiated over one HTTP request instead of
//! the WebSocket protocol (docs/broadcast.md, "WHIP and WHEP").
//!
//! `POST /whip/{room}` (or `/whep/{room}`) with an SDP offer and the room's access token admits a
//! server-side member through signaling ([`signaling::SourceMember`], with the grants of its kind: a
//! publisher that hears nothing, or a listener that says nothing) and creates its peer on the room's media
//! worker from the offer, exactly as a WebSocket session's. The answer (ICE-lite, every candidate in it,
//! `a=end-of-candidates`) comes back as `201 Created` with the session's resource URL. One task per
//! session holds the member until the resource is deleted, its peer's ICE consent is lost (or never
//! established: the worker's connect timeout), or it is removed from the room (kick, replace, move, the
//! server closing). `http.rs` has the routes, `sdp.rs` the offer checks and trickle-ICE fragments.

mod http;
mod metrics;
mod sdp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use signaling::media::{MediaError, MediaEvent};
use signaling::{SourceEnd, SourceMember};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

pub use http::router;
pub use metrics::WhipMetrics;

use crate::state::SessionGuard;

/// Publisher or listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// WHIP: publishes into the room, hears nothing.
    Whip,
    /// WHEP: hears the room, says nothing.
    Whep,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Whip, Kind::Whep];

    /// The metric label, and the first path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }

    /// (may publish, may subscribe) of a member of this kind whose token grants `claims`; `None` when
    /// the token lacks the grant the kind needs.
    fn grants(self, claims: &signaling::Claims) -> Option<(bool, bool)> {
        match self {
            Kind::Whip => claims.can_publish.then_some((true, false)),
            Kind::Whep => claims.can_subscribe.then_some((false, true)),
        }
    }
}

/// A session resource's id: 128 random bits, hex. Unguessable: knowing it is what lets a client delete
/// or patch its session (RFC 9725 leaves the resource's authorization to the server; the id is its
/// capability).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceId(String);

impl ResourceId {
    fn random() -> ResourceId {
        ResourceId(crate::random::hex(16))
    }

    /// A path segment as an id: anything but 32 lowercase hex digits is no id.
    fn parse(s: &str) -> Option<ResourceId> {
        crate::random::is_hex(s, 32).then(|| ResourceId(s.to_owned()))
    }
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the HTTP side asks of a running session.
enum Control {
    /// `DELETE`: leave the room.
    Delete(oneshot::Sender<()>),
    /// `PATCH` with a trickle-ICE fragment.
    Patch {
        patch: sdp::Patch,
        reply: oneshot::Sender<Result<sdp::Patched, sdp::PatchError>>,
    },
}

/// A running session as the table knows it.
struct Handle {
    kind: Kind,
    room: String,
    control: mpsc::Sender<Control>,
}

/// WHIP and WHEP sessions: the table of resources, the capacity, the metrics.
pub struct Whip {
    pub metrics: WhipMetrics,
    enabled: bool,
    max_sessions: usize,
    running: AtomicUsize,
    sessions: Mutex<HashMap<ResourceId, Handle>>,
}

impl Whip {
    pub fn new(config: &crate::ingest::IngestConfig, metrics: WhipMetrics) -> Whip {
        Whip {
            metrics,
            enabled: config.whip,
            max_sessions: config.whip_max_sessions,
            running: AtomicUsize::new(0),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceId, Handle>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts/removes).
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The control queue of session `id` of `kind` in `room`, if it runs.
    fn control(&self, kind: Kind, room: &str, id: &ResourceId) -> Option<mpsc::Sender<Control>> {
        self.table()
            .get(id)
            .filter(|h| h.kind == kind && h.room == room)
            .map(|h| h.control.clone())
    }

    /// Takes a place among `whip_max_sessions`, or `None` when all are taken.
    fn seat(self: &Arc<Self>, kind: Kind) -> Option<Seat> {
        let max = self.max_sessions;
        self.running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics
            .sessions
            .with_label_values(&[kind.as_str()])
            .inc();
        Some(Seat {
            whip: Arc::clone(self),
            kind,
        })
    }
}

/// A session's place in the count and the gauge, given back when it drops.
struct Seat {
    whip: Arc<Whip>,
    kind: Kind,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.whip.running.fetch_sub(1, Ordering::SeqCst);
        self.whip
            .metrics
            .sessions
            .with_label_values(&[self.kind.as_str()])
            .dec();
    }
}

/// A session with its peer answered, before its task runs.
struct Session {
    id: ResourceId,
    kind: Kind,
    member: SourceMember,
    events: mpsc::Receiver<MediaEvent>,
    /// The offer the peer was made from (an ICE restart re-sends it with new credentials).
    offer: String,
    etag: sdp::Etag,
    seat: Seat,
    guard: SessionGuard,
}

impl Session {
    /// Registers the session under its id and runs it until it ends.
    fn spawn(self, whip: &Arc<Whip>) {
        let (control, controls) = mpsc::channel(4);
        whip.table().insert(
            self.id.clone(),
            Handle {
                kind: self.kind,
                room: self.member.room().to_owned(),
                control,
            },
        );
        tokio::spawn(self.run(Arc::clone(whip), controls));
    }

    async fn run(mut self, whip: Arc<Whip>, mut controls: mpsc::Receiver<Control>) {
        let (end, deleted) = loop {
            tokio::select! {
                end = self.member.removed() => break (end, None),
                event = self.events.recv() => match event {
                    Some(MediaEvent::Connected) => {
                        info!(kind = self.kind.as_str(), room = self.member.room(),
                            sid = self.member.sid(), "WHIP/WHEP peer connected");
                    }
                    Some(MediaEvent::Disconnected { reason }) => {
                        info!(kind = self.kind.as_str(), room = self.member.room(),
                            sid = self.member.sid(), %reason, "WHIP/WHEP peer disconnected");
                        break (SourceEnd::Failed, None);
                    }
                    // Speakers, slots and the like are for WebSocket clients.
                    Some(_) => {}
                    None => break (SourceEnd::Failed, None),
                },
                control = controls.recv() => match control {
                    Some(Control::Delete(reply)) => break (SourceEnd::Finished, Some(reply)),
                    Some(Control::Patch { patch, reply }) => {
                        let result = self.patch(patch).await;
                        let _ = reply.send(result);
                    }
                    // The table dropped the handle: only at the end of this task.
                    None => break (SourceEnd::Failed, None),
                },
            }
        };
        whip.table().remove(&self.id);
        let reason = end_label(&end);
        whip.metrics
            .ended
            .with_label_values(&[self.kind.as_str(), reason])
            .inc();
        debug!(kind = self.kind.as_str(), id = %self.id, reason, "WHIP/WHEP session ended");
        let Session {
            member,
            seat,
            guard,
            ..
        } = self;
        member.leave(end).await;
        // The room has been told before the client hears its DELETE succeeded.
        if let Some(reply) = deleted {
            let _ = reply.send(());
        }
        drop((seat, guard));
    }

    /// A trickle-ICE fragment: new candidates (nothing to do: the server is ICE-lite and learns the
    /// client's addresses from its checks) or an ICE restart (new credentials: the peer answers the
    /// first offer again with them).
    async fn patch(&mut self, patch: sdp::Patch) -> Result<sdp::Patched, sdp::PatchError> {
        patch.check_etag(&self.etag)?;
        let Some(offer) = patch.restarted_offer(&self.offer) else {
            return Ok(sdp::Patched::Trickled);
        };
        let answer = self
            .member
            .restart_ice(offer.clone())
            .await
            .map_err(sdp::PatchError::Restart)?;
        self.offer = offer;
        self.etag = sdp::Etag::random();
        Ok(sdp::Patched::Restarted {
            fragment: sdp::answer_fragment(&answer),
            etag: self.etag.clone(),
        })
    }
}

/// The `reason` label of `chorus_whip_sessions_ended_total`.
fn end_label(end: &SourceEnd) -> &'static str {
    match end {
        SourceEnd::Finished => "deleted",
        SourceEnd::Failed => "ice_failed",
        SourceEnd::Removed(signaling::protocol::LeftReason::Replaced) => "replaced",
        SourceEnd::Removed(_) => "kicked",
        SourceEnd::Moved => "moved",
        SourceEnd::Shutdown => "shutdown",
    }
}

/// Why a session could not start, as the HTTP answer says it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Admit(#[from] signaling::registry::AdmitError),
    #[error("too many WHIP/WHEP sessions on this server")]
    Full,
    #[error("{0}")]
    Media(#[from] MediaError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_needs_the_publish_grant_and_a_listener_the_subscribe_grant() {
        let claims = signaling::Claims::valid_for("stage", "obs", 60);
        assert_eq!(Kind::Whip.grants(&claims), Some((true, false)));
        assert_eq!(Kind::Whep.grants(&claims), Some((false, true)));
        let listen_only = signaling::Claims {
            can_publish: false,
            ..claims.clone()
        };
        assert_eq!(Kind::Whip.grants(&listen_only), None);
        let speak_only = signaling::Claims {
            can_subscribe: false,
            ..claims
        };
        assert_eq!(Kind::Whep.grants(&speak_only), None);
    }

    #[test]
    fn resource_ids_are_unguessable_hex_and_paths_are_not_ids() {
        let id = ResourceId::random();
        assert_eq!(ResourceId::parse(&id.0), Some(id));
        assert!(ResourceId::parse("..").is_none());
        assert!(ResourceId::parse("0123456789abcdef").is_none());
    }
}
