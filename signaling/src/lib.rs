//! Chorus signaling: the WebSocket protocol (docs/protocol.md), access tokens, sessions and room presence.
//! It knows nothing of RTP; it drives media workers through the channel contract in [`media`].
//!
//! A server builds one [`Signaling`] and runs [`run_session`] for every WebSocket, adapted to a
//! `Stream + Sink` of [`WsFrame`]s.

pub mod auth;
mod config;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

pub use auth::{ApiKeys, Claims};
pub use config::{ConfigError, SignalingConfig, MAX_SLOTS};
pub use metrics::SignalingMetrics;
pub use registry::RoomSnapshot;
pub use session::{run_session, WsFrame};

use media::MediaRouter;
use registry::RoomRegistry;

/// The version of this server, as `joined.server_version` reports it.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the sessions of one server share.
pub struct Signaling {
    config: SignalingConfig,
    api_keys: ApiKeys,
    router: Arc<dyn MediaRouter>,
    metrics: SignalingMetrics,
    rooms: RoomRegistry,
    draining: AtomicBool,
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("config", &self.config)
            .field("api_keys", &self.api_keys)
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// Validates `config` and registers the signaling metrics into `registry`.
    pub fn new(
        config: SignalingConfig,
        api_keys: ApiKeys,
        router: Arc<dyn MediaRouter>,
        registry: &prometheus::Registry,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = SignalingMetrics::new(registry)?;
        let rooms = RoomRegistry::new(
            config.room_settings(),
            config.default_max_participants,
            Arc::clone(&router),
            metrics.clone(),
        );
        Ok(Self {
            config,
            api_keys,
            router,
            metrics,
            rooms,
            draining: AtomicBool::new(false),
            closing: watch::Sender::new(false),
        })
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.config
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    pub fn metrics(&self) -> &SignalingMetrics {
        &self.metrics
    }

    pub(crate) fn router(&self) -> &dyn MediaRouter {
        self.router.as_ref()
    }

    pub(crate) fn registry(&self) -> &RoomRegistry {
        &self.rooms
    }

    /// Stops admitting participants: every later `join` fails with `draining`. Sessions already in a room
    /// go on. One-way. When this returns, no join in progress can still succeed.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.rooms.fence();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ends every session, present and future, with close code 1001 (each leaves its room as usual).
    /// Also sets draining. For server shutdown, after the drain period.
    pub fn close_all_sessions(&self) {
        self.set_draining();
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Every room with its settings and participants, sorted by name.
    pub fn rooms(&self) -> Vec<RoomSnapshot> {
        self.rooms.rooms()
    }

    /// One room, if it exists.
    pub fn room(&self, name: &str) -> Option<RoomSnapshot> {
        self.rooms.room(name)
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.rooms.participant_count()
    }
}
