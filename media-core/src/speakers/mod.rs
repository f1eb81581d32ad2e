//! Who is speaking, shared by both room modes: audio-level tracking per participant ([`levels`]), the
//! dominant speaker ([`dominant`]), the RFC 6465 per-contributor levels of mixed packets
//! ([`csrc_levels`]), and a level measured by decoding for audio that arrives without one (`meter`).

pub mod csrc_levels;
pub mod dominant;
pub mod levels;
pub(crate) mod meter;
