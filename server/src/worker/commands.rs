//! What crosses between a worker and signaling: commands from sessions into the core, and the core's events
//! out to the sessions' bounded queues (a full queue is a counted drop).

use std::time::Instant;

use futures_util::stream::{SelectAll, StreamExt};
use media_core::{CoreError, CoreEvent, JoinParams, ParticipantId, RoomId, SourcePacket};
use signaling::media::{MediaCommand, MediaError, MediaEvent, SpeakerLevels};
use tokio::sync::mpsc;

use tracing::{debug, info_span};

use super::Worker;

/// One source's packets, tagged with its participant; `None` once its sender is gone.
type SourceStream = futures_util::stream::BoxStream<'static, (ParticipantId, Option<SourcePacket>)>;

/// The packet queues of the worker's server-side sources, polled together.
#[derive(Default)]
pub(super) struct SourceQueues {
    streams: SelectAll<SourceStream>,
}

impl SourceQueues {
    fn add(&mut self, id: ParticipantId, packets: mpsc::Receiver<SourcePacket>) {
        let stream = futures_util::stream::unfold(Some(packets), move |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(packet) => Some(((id, Some(packet)), Some(rx))),
                // The end is reported once, then the stream is over.
                None => Some(((id, None), None)),
            }
        });
        self.streams.push(stream.boxed());
    }

    /// The next packet of any source; never while there is none.
    pub(super) async fn next(&mut self) -> Option<(ParticipantId, Option<SourcePacket>)> {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        self.streams.next().await
    }
}

impl Worker {
    pub(super) fn command(&mut self, cmd: MediaCommand) {
        let now = Instant::now();
        match cmd {
            MediaCommand::Connect {
                room,
                settings,
                participant,
                can_publish,
                can_subscribe,
                muted,
                deafened,
                ptt,
                team,
                shout,
                hears_mix,
                offer_sdp,
                events,
                reply,
            } => {
                let id = participant;
                let span = info_span!("participant", room = %room, participant = %id);
                let _enter = span.enter();
                let result = self
                    .core
                    .add_participant(
                        now,
                        &RoomId(room),
                        settings,
                        id,
                        JoinParams {
                            can_publish,
                            can_subscribe,
                            muted,
                            hears_mix,
                        },
                        &offer_sdp,
                    )
                    .map_err(|e| {
                        debug!(error = %e, "offer refused");
                        match e {
                            CoreError::AlreadyConnected(_) => MediaError::AlreadyConnected,
                            CoreError::BadRoomSettings(why) => MediaError::BadRoomSettings(why),
                            CoreError::RoomSettingsConflict(_) => MediaError::RoomSettingsConflict,
                            other => MediaError::BadSdp(other.client_message()),
                        }
                    });
                if result.is_ok() {
                    self.sessions.insert(id, events);
                    // In the same pass as the peer's creation: no packet of it is handled before.
                    let gated = self
                        .core
                        .set_deafened(id, deafened)
                        .and_then(|()| self.core.set_ptt(id, ptt))
                        .and_then(|()| self.core.set_team(now, id, team))
                        .and_then(|()| self.core.set_shout(now, id, shout));
                    if let Err(e) = gated {
                        debug!(error = %e, "the new participant is gone");
                    }
                }
                // The session may have gone away meanwhile; its Leave follows.
                let _ = reply.send(result);
            }
            MediaCommand::ConnectSource {
                room,
                settings,
                participant: id,
                muted,
                role,
                packets,
                reply,
            } => {
                let _enter = info_span!("source", room = %room, participant = %id).entered();
                let result = self
                    .core
                    .add_source_as(now, &RoomId(room), settings, id, muted, role)
                    .map_err(|e| {
                        debug!(error = %e, "source refused");
                        match e {
                            CoreError::AlreadyConnected(_) => MediaError::AlreadyConnected,
                            CoreError::BadRoomSettings(why) => MediaError::BadRoomSettings(why),
                            CoreError::RoomSettingsConflict(_) => MediaError::RoomSettingsConflict,
                            _ => MediaError::Unavailable,
                        }
                    });
                if result.is_ok() {
                    self.sources.add(id, packets);
                }
                let _ = reply.send(result);
            }
            MediaCommand::RestartIce {
                participant: id,
                offer_sdp,
                reply,
            } => {
                let _enter = info_span!("participant", participant = %id).entered();
                let result = self.core.restart_ice(now, id, &offer_sdp).map_err(|e| {
                    debug!(error = %e, "ICE restart offer refused");
                    match e {
                        CoreError::UnknownParticipant(_) => MediaError::UnknownParticipant,
                        other => MediaError::BadSdp(other.client_message()),
                    }
                });
                if result.is_ok() {
                    debug!("ICE restarted");
                }
                let _ = reply.send(result);
            }
            MediaCommand::Mute {
                participant: id,
                muted,
            } => {
                let _enter = info_span!("participant", participant = %id).entered();
                if let Err(e) = self.core.set_muted(id, muted) {
                    // Not connected yet: the state reaches the worker with the offer.
                    debug!(error = %e, muted, "mute for a participant without media");
                }
            }
            MediaCommand::Position {
                participant: id,
                position,
            } => {
                // Signaling checked the position and the room; a participant whose peer is gone has
                // nowhere to be.
                if let Err(e) = self.core.set_position(now, id, position) {
                    let _enter = info_span!("participant", participant = %id).entered();
                    debug!(error = %e, "position not taken");
                }
            }
            MediaCommand::Deafen {
                participant: id,
                deafened,
            } => {
                let _enter = info_span!("participant", participant = %id).entered();
                if let Err(e) = self.core.set_deafened(id, deafened) {
                    debug!(error = %e, deafened, "deafen for a participant without media");
                }
            }
            MediaCommand::Ptt {
                participant: id,
                enabled,
            } => {
                let _enter = info_span!("participant", participant = %id).entered();
                if let Err(e) = self.core.set_ptt(id, enabled) {
                    debug!(error = %e, enabled, "ptt for a participant without media");
                }
            }
            MediaCommand::PttKey {
                participant: id,
                down,
            } => {
                if let Err(e) = self.core.set_ptt_key(id, down) {
                    debug!(error = %e, down, "ptt key for a participant without media");
                }
            }
            MediaCommand::Talk {
                participant: id,
                target,
            } => {
                if let Err(e) = self.core.set_talk_target(now, id, target) {
                    debug!(participant = %id, error = %e, "talk target not taken");
                }
            }
            MediaCommand::Volume {
                listener,
                speaker,
                volume,
            } => {
                if let Err(e) = self.core.set_volume(now, listener, speaker, volume) {
                    debug!(participant = %listener, error = %e, "volume not taken");
                }
            }
            MediaCommand::Leave { participant: id } => {
                let _enter = info_span!("participant", participant = %id).entered();
                debug!("participant leaves");
                self.sessions.remove(&id);
                let _ = self.core.remove_participant(now, id);
            }
        }
    }

    /// A source's packet, or the end of its queue (its `Leave` follows from its holder).
    pub(super) fn source_packet(
        &mut self,
        now: Instant,
        id: ParticipantId,
        packet: Option<SourcePacket>,
    ) {
        let Some(packet) = packet else {
            return;
        };
        // The core counts a packet that is not Opus; a source that left meanwhile is no one's concern.
        if let Err(e) = self.core.push_source(now, id, packet) {
            debug!(participant = %id, error = %e, "source packet not taken");
        }
    }

    pub(super) fn event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Connected(id) => self.send(id, MediaEvent::Connected),
            CoreEvent::Disconnected {
                participant,
                reason,
            } => {
                self.send(
                    participant,
                    MediaEvent::Disconnected {
                        reason: reason.to_owned(),
                    },
                );
                self.sessions.remove(&participant);
            }
            CoreEvent::Slots { subscriber, slots } => {
                self.send(subscriber, MediaEvent::Slots(slots));
            }
            CoreEvent::Positions {
                listener,
                positions,
            } => {
                self.send(listener, MediaEvent::Positions(positions));
            }
            CoreEvent::Speakers {
                listeners,
                speakers,
            } => {
                // One list for the room, serialized once by the sessions.
                let speakers = SpeakerLevels::new(speakers);
                for listener in listeners {
                    self.send(listener, MediaEvent::Speakers(speakers.clone()));
                }
            }
            CoreEvent::DominantSpeaker {
                listeners,
                participant,
            } => {
                for listener in listeners {
                    self.send(listener, MediaEvent::DominantSpeaker(participant));
                }
            }
        }
    }

    /// Queue an event for a participant's session; a full queue is a counted drop.
    pub(super) fn send(&mut self, id: ParticipantId, event: MediaEvent) {
        if let Some(tx) = self.sessions.get(&id) {
            if tx.try_send(event).is_err() {
                self.metrics.events_dropped.inc();
            }
        }
    }
}
