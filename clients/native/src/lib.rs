//! Chorus native client SDK: what a game links to talk in a Chorus room.
//!
//! Built on the typed signaling client ([`signaling::client`]) and media-core's sans-IO client peer
//! ([`media_core::client`], str0m in the client role), with its own Opus encoding at the caller's rate and a
//! playout jitter buffer per slot (media-core's, as the server's mixer uses).
//!
//! # Threads
//!
//! The game's threads never wait on the network. [`Client::connect`] starts the SDK's two threads:
//! `chorus-signal` (a tokio current-thread runtime with the WebSocket session: join, offer/answer, events,
//! mute, leave, keepalive) and, once media is negotiated, `chorus-net` (the UDP socket and the client peer's
//! drive loop, Opus encoding, playout on a 20 ms grid, the mix). The game's capture callback pushes PCM into
//! a [`Microphone`], its playback callback pulls PCM from a [`Speaker`]; both are lock-free SPSC rings
//! (`rtrb`), a full ring is a counted drop ([`Stats`]). Events arrive through [`Client::poll_event`].
//!
//! # C
//!
//! [`ffi`] is the C ABI (`include/chorus.h`), built as a `cdylib` and a `staticlib`.

mod audio;
mod client;
mod config;
mod drift;
mod error;
mod event;
pub mod ffi;
mod net;
mod pan;
mod position;
mod signal;
mod talk;

pub use audio::soft_clip;
pub use client::{Client, Microphone, Speaker, Stats};
pub use config::{Config, MAX_RED_DEPTH, OUTPUT_CHANNELS, SAMPLE_RATES_HZ};
pub use error::Error;
pub use event::{ConnectionState, Event, Participant, SlotInfo, SpeakerPosition};
pub use signaling::protocol::ModerateAction;
pub use vocab::{Position, TalkError, TalkTarget, TeamId, Volume};
