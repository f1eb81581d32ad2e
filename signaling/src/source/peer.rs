//! A server member with a WebRTC peer the server holds for an HTTP client: a WHIP publisher or a WHEP
//! listener (server/src/whip). Admitted like a source ([`Signaling::admit_server_member`]); its peer is
//! created from the client's SDP offer on the room's media worker, like a session's.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::SourceMember;
use crate::media::{MediaCommand, MediaError, MediaEvent};

#[cfg(doc)]
use crate::Signaling;

impl SourceMember {
    /// Creates the member's WebRTC peer from `offer_sdp` on the room's media worker and returns the SDP
    /// answer; the worker's events about the peer (connected, disconnected: ICE consent lost or never
    /// established) arrive on the returned queue. Waits at most the media timeout.
    pub async fn connect_peer(
        &mut self,
        offer_sdp: String,
    ) -> Result<(String, mpsc::Receiver<MediaEvent>), MediaError> {
        let ctx = Arc::clone(&self.membership.ctx);
        let room = self.membership.room.clone();
        let state = ctx
            .registry()
            .attach_media(&room, self.membership.id)
            .ok_or(MediaError::UnknownParticipant)?;
        let worker = ctx.router().route(&room, self.membership.id);
        let (events, events_rx) = mpsc::channel(ctx.config().media_event_queue);
        let (reply, answer) = oneshot::channel();
        let (can_publish, can_subscribe) = self.grants;
        let command = MediaCommand::Connect {
            room,
            settings: self.settings,
            participant: self.membership.id,
            can_publish,
            can_subscribe,
            muted: state.muted,
            deafened: state.deafened,
            ptt: state.ptt,
            team: None,
            shout: false,
            // A WHEP player (the one kind of server member that subscribes) plays one stream: the mix.
            hears_mix: can_subscribe,
            offer_sdp,
            events,
            reply,
        };
        let limit = ctx.config().media_timeout();
        match timeout(limit, worker.send(command)).await {
            Ok(Ok(())) => {}
            _ => return Err(MediaError::Unavailable),
        }
        // From here on the worker may hold the peer: `Leave` must reach it, whatever the reply.
        self.membership.worker = Some(worker);
        match timeout(limit, answer).await {
            Ok(Ok(result)) => result.map(|sdp| (sdp, events_rx)),
            _ => Err(MediaError::Unavailable),
        }
    }

    /// Answers an ICE restart offer on the member's peer (same m-lines, new ICE credentials).
    pub async fn restart_ice(&self, offer_sdp: String) -> Result<String, MediaError> {
        let ctx = &self.membership.ctx;
        let (reply, answer) = oneshot::channel();
        let command = MediaCommand::RestartIce {
            participant: self.membership.id,
            offer_sdp,
            reply,
        };
        let room = &self.membership.room;
        ctx.tell_worker(room, command).await?;
        match timeout(ctx.config().media_timeout(), answer).await {
            Ok(Ok(result)) => result,
            _ => Err(MediaError::Unavailable),
        }
    }
}
