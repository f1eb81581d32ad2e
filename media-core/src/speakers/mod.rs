//! Who is speaking, shared by both room modes: audio-level tracking per participant ([`levels`]), the
//! dominant speaker ([`dominant`]) and the RFC 6465 per-contributor levels of mixed packets
//! ([`csrc_levels`]).

pub mod csrc_levels;
pub mod dominant;
pub mod levels;
