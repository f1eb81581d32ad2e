//! The vocabulary media-core, signaling and the server share: room modes and settings, slot limits, the
//! audio clock, participant and room ids, and slot assignments. One definition each, no conversions.
//!
//! RTP-free and IO-free: no str0m, no tokio. The serde forms are the wire forms of the protocol, the admin
//! API and the configuration (docs/protocol.md, docs/openapi.json, docs/configuration.md).

pub mod audio;
pub mod ids;
pub mod room;
pub mod slots;
pub mod spatial;
pub mod talk;

pub use audio::{SourcePacket, SourceRole, FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
pub use ids::{ParticipantId, RoomId};
pub use room::{MixSettings, RoomMode, RoomSettings, SettingsError};
pub use slots::{SlotAssignment, MAX_SLOTS};
pub use spatial::{FadeModel, Position, SpatialError, SpatialSettings};
pub use talk::{TalkError, TalkTarget, TeamId, Volume, MAX_WHISPER_TARGETS};
