//! Chorus signaling: the WebSocket protocol (docs/protocol.md), access tokens, sessions and room presence.
//! It knows nothing of RTP; it drives media workers through the channel contract in [`media`].

pub mod media;
