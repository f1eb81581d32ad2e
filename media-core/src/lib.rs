//! Chorus media core: sans-IO.
//!
//! No sockets, no threads, no clock. Time enters as an [`std::time::Instant`] with every input; outputs are
//! datagrams to send, events, and the next timeout. A server worker thread owns one [`MediaCore`] and drives
//! it: one input, then drain [`MediaCore::poll_output`] until it returns a timeout, then wait.

pub mod audio;
pub mod client;
pub mod core;
pub mod csrc_levels;
pub mod dominant;
pub mod encoder;
pub mod ids;
pub mod jitter;
pub mod levels;
pub mod limiter;
pub mod mixer;
pub mod offer;
pub mod peer;
pub mod red;
pub mod rewrite;
pub mod room_config;
pub mod router;
pub mod sim;
pub mod slots;
pub mod stats;

pub use crate::core::{CoreConfig, CoreError, CoreEvent, JoinParams, MediaCore, Output, SlotInfo};
pub use ids::{ParticipantId, RoomId, SlotIndex, Ssrc};
pub use room_config::{MixConfig, RoomConfig, RoomMode};
pub use stats::{CoreStats, DropReason, MixStats, Samples};
