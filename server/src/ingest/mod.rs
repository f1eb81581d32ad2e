//! Ingest: audio from outside WebRTC entering a room as a **server-side source participant** (docs/broadcast.md,
//! "Publishing into a room"). An Icecast source connection (`icecast.rs`, paced by `pacer.rs`) or a plain
//! RTP/Opus socket (`rtp.rs`) is admitted through signaling like a session's participant
//! ([`signaling::SourceMember`]: presence, limits, mute, kick) and handed to the room's media worker as a
//! queue of Opus packets, which the worker feeds into its core ([`media_core::MediaCore::push_source`]).

mod config;
pub mod icecast;
mod metrics;
pub(crate) mod pacer;
pub mod rtp;
mod rtp_admin;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signaling::media::{MediaError, SourcePacket, SourceRole};
use signaling::registry::AdmitError;
use signaling::{Signaling, SourceEnd, SourceMember, SourceRequest};
use tokio::sync::mpsc;

pub use config::IngestConfig;
pub use metrics::IngestMetrics;
pub use rtp_admin::routes as rtp_routes;

use crate::state::{SessionGuard, Sessions};

/// Packets a source may have queued for its media worker (≈ 1.3 s of 20 ms packets): a paced source waits
/// for room, an RTP source's packet beyond it is a counted drop.
const PACKET_QUEUE: usize = 64;

/// The kinds of ingest, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Icecast,
    Rtp,
    /// Files and playlists played by the server (`crate::playout`).
    Playout,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Icecast, Kind::Rtp, Kind::Playout];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Icecast => "icecast",
            Kind::Rtp => "rtp",
            Kind::Playout => "playout",
        }
    }
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Admit(#[from] AdmitError),
    #[error("too many sources on this server ({0})")]
    TooMany(usize),
    #[error("the room's media worker did not take the source: {0}")]
    Media(#[from] MediaError),
}

impl StartError {
    /// The metric label of a refusal.
    pub fn as_str(&self) -> &'static str {
        match self {
            StartError::Admit(AdmitError::Banned { .. }) => "banned",
            StartError::Admit(AdmitError::RoomClosed) => "room_closed",
            StartError::Admit(_) | StartError::TooMany(_) => "full",
            StartError::Media(_) => "media_unavailable",
        }
    }
}

/// What ingest shares: its settings, its metrics and the count of running sources.
pub struct Ingest {
    pub config: IngestConfig,
    pub metrics: IngestMetrics,
    running: AtomicUsize,
    /// The RTP endpoints the admin API opened.
    pub rtp: rtp::Endpoints,
}

impl Ingest {
    pub fn new(config: IngestConfig, metrics: IngestMetrics) -> Self {
        Ingest {
            config,
            metrics,
            running: AtomicUsize::new(0),
            rtp: rtp::Endpoints::default(),
        }
    }
}

/// A source in its room: the member (leave with [`Source::leave`]), the queue its packets go to, and what
/// keeps it counted (sources now; an open session for the drain).
pub struct Source {
    pub member: SourceMember,
    pub packets: mpsc::Sender<SourcePacket>,
    kind: Kind,
    ingest: Arc<Ingest>,
    _slot: Slot,
    _session: SessionGuard,
}

impl Source {
    /// Admits a source to its room and connects it to the room's media worker.
    pub async fn start(
        ingest: &Arc<Ingest>,
        signaling: &Arc<Signaling>,
        sessions: &Sessions,
        kind: Kind,
        request: SourceRequest,
    ) -> Result<Source, StartError> {
        Self::start_as(
            ingest,
            signaling,
            sessions,
            kind,
            request,
            SourceRole::Plain,
        )
        .await
    }

    /// [`Source::start`] in a [`SourceRole`] (hold music, an announcement).
    pub async fn start_as(
        ingest: &Arc<Ingest>,
        signaling: &Arc<Signaling>,
        sessions: &Sessions,
        kind: Kind,
        request: SourceRequest,
        role: SourceRole,
    ) -> Result<Source, StartError> {
        let max = ingest.config.max_sources;
        let taken = ingest
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(StartError::TooMany(max));
        }
        let slot = Slot::new(ingest, kind);
        let mut member = signaling.admit_source(request)?;
        let (packets, queue) = mpsc::channel(PACKET_QUEUE);
        if let Err(e) = member.connect_as(queue, role).await {
            member.leave(SourceEnd::Failed).await;
            return Err(e.into());
        }
        tracing::info!(
            kind = kind.as_str(),
            room = member.room(),
            sid = member.sid(),
            "source joined"
        );
        Ok(Source {
            member,
            packets,
            kind,
            ingest: Arc::clone(ingest),
            _slot: slot,
            _session: sessions.open(),
        })
    }

    /// Leaves the room, counted by how it ended.
    pub async fn leave(self, end: SourceEnd) {
        let reason = end_label(&end);
        tracing::info!(
            kind = self.kind.as_str(),
            room = self.member.room(),
            sid = self.member.sid(),
            reason,
            "source left"
        );
        self.ingest
            .metrics
            .ended
            .with_label_values(&[self.kind.as_str(), reason])
            .inc();
        let Source {
            member,
            packets,
            _slot,
            _session,
            ..
        } = self;
        drop(packets);
        member.leave(end).await;
    }
}

/// A source's place among `ingest.max_sources` and in the `chorus_ingest_sources` gauge, given back when
/// it drops (however the source ends, or if its start fails).
struct Slot {
    ingest: Arc<Ingest>,
    kind: Kind,
}

impl Slot {
    /// Taken by the caller's `fetch_update`.
    fn new(ingest: &Arc<Ingest>, kind: Kind) -> Self {
        ingest
            .metrics
            .sources
            .with_label_values(&[kind.as_str()])
            .inc();
        Slot {
            ingest: Arc::clone(ingest),
            kind,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ingest.running.fetch_sub(1, Ordering::SeqCst);
        let gauge = self
            .ingest
            .metrics
            .sources
            .with_label_values(&[self.kind.as_str()]);
        gauge.dec();
    }
}

/// The `reason` label of `chorus_ingest_sources_ended_total`.
pub fn end_label(end: &SourceEnd) -> &'static str {
    match end {
        SourceEnd::Finished => "finished",
        SourceEnd::Failed => "failed",
        SourceEnd::Removed(signaling::protocol::LeftReason::Replaced) => "replaced",
        SourceEnd::Removed(_) => "kicked",
        SourceEnd::Moved => "moved",
        SourceEnd::Shutdown => "shutdown",
    }
}
