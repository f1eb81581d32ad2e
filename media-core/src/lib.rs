//! Chorus media core: sans-IO.
//!
//! No sockets, no threads, no clock. Time enters as an [`std::time::Instant`] with every input; outputs are
//! datagrams to send, events, and the next timeout. A server worker thread owns one [`MediaCore`] and drives
//! it: one input, then drain [`MediaCore::poll_output`] until it returns a timeout, then wait.
//!
//! Layout: [`core`] is the worker's state machine (peers, timers, datagram demux); [`sfu`] forwards speakers
//! into subscribers' slots; [`mixer`] mixes a room into one stream; [`speakers`] tracks levels and the
//! dominant speaker for both modes; [`audibility`] decides who hears whom in every room. `client` is the client side of a session (feature `client`, for the
//! native SDK). The simulated network and audio analysis are in `testkit`, compiled only for tests and with
//! the `testkit` feature.

pub mod audibility;
pub mod audio;
/// The client side of a Chorus session (a sans-IO str0m peer), for native clients, tests and the load
/// tester; feature `client` (the `testkit` feature includes it).
#[cfg(any(test, feature = "client"))]
pub mod client;
pub mod core;
pub mod ids;
pub mod mixer;
mod prefetch;
pub mod red;
pub mod replay;
pub mod sdes;
pub mod sfu;
pub mod spatial;
pub mod speakers;
pub mod stats;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

// The flat paths other crates (server, tests, loadtest, fuzz) use.
pub use crate::core::{offer, peer, router};
pub use crate::mixer::{encoder, jitter, limiter};
pub use crate::sfu::{rewrite, slots};
pub use crate::speakers::{csrc_levels, dominant, levels};
#[cfg(any(test, feature = "testkit"))]
pub use crate::testkit::sim;

pub use crate::core::trunk::{TrunkMessage, TrunkPacket};
pub use crate::core::{
    BroadcastFrame, CoreConfig, CoreError, CoreEvent, JoinParams, MediaCore, MicPacket, Output,
    LOSS_FEEDBACK_MAX_PERCENT, STALE_RTP_AFTER,
};
pub use ids::{ParticipantId, RoomId, SlotIndex, Ssrc};
pub use stats::{CoreStats, DropReason, MixStats, PathMove, Samples, TrunkStats};
pub use vocab::{
    FadeModel, MixSettings, Position, RoomMode, RoomSettings, SettingsError, SlotAssignment,
    SourcePacket, SourceRole, SpatialError, SpatialSettings, TalkTarget, TeamId, Volume,
};
