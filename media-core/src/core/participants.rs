//! The peer table: participants added (with their peer and room), removed and muted; one peer driven
//! after a mutation, or disconnected when it fails.

use std::net::SocketAddr;
use std::time::Instant;

use super::{CoreError, CoreEvent, JoinParams, Link, MediaCore, Participant};
use crate::audibility::Audibility;
use crate::core::offer::check_offer;
use crate::core::peer::{Peer, PeerParams};
use crate::core::room::{Room, RoomKind};
use crate::ids::{ParticipantId, RoomId};
use crate::mixer::Mixer;
use crate::sfu::rewrite::SlotRewriter;
use crate::sfu::slots::SlotSelector;
use crate::speakers::dominant::{DominantConfig, DominantSpeaker};
use vocab::{RoomMode, RoomSettings};

impl MediaCore {
    /// Create a participant's peer from its SDP offer, creating the room with `settings` if needed.
    /// Returns the answer. A room that exists with other settings (see [`RoomSettings::conflicts_with`])
    /// is refused with [`CoreError::RoomSettingsConflict`]; settings out of range with
    /// [`CoreError::BadRoomSettings`].
    pub fn add_participant(
        &mut self,
        now: Instant,
        room: &RoomId,
        settings: RoomSettings,
        id: ParticipantId,
        params: JoinParams,
        offer_sdp: &str,
    ) -> Result<String, CoreError> {
        self.last_now = now;
        if self.participants.contains_key(&id) {
            return Err(CoreError::AlreadyConnected(id));
        }
        // Before str0m sees it: its cost grows with the offer's m-lines.
        check_offer(offer_sdp)?;
        let (existing, settings) = self.room_settings_for(room, settings)?;
        let mixed = settings.mode == RoomMode::Mix;
        // The mix comes in one stream.
        let slots = if mixed || params.hears_mix {
            1
        } else {
            usize::from(settings.slots)
        };
        let peer_params = PeerParams {
            // Not used: the peer gets the whole list below.
            candidate_addr: self
                .config
                .candidates
                .first()
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.addr),
            dtls_cert: &self.dtls_cert,
            slots: if params.can_subscribe { slots } else { 0 },
            stereo: mixed && settings.spatial.is_some(),
        };
        let (peer, answer) = Peer::from_offer_with_candidates(
            now,
            id,
            &peer_params,
            &self.config.candidates,
            offer_sdp,
        )?;
        self.router.add_peer(peer.ufrag(), id);
        self.join_room(now, room, settings, existing, id, params, Link::Peer(peer));
        self.schedule(id, now);
        Ok(answer)
    }

    /// The settings a participant of `room` gets: the room's own if it exists here (a request for others
    /// is refused), else `settings` once validated. Also returns the existing room's key.
    pub(super) fn room_settings_for(
        &self,
        room: &RoomId,
        settings: RoomSettings,
    ) -> Result<(Option<u64>, RoomSettings), CoreError> {
        settings.validate()?;
        let existing = self.room_keys.get(room).copied();
        // An existing room keeps the settings it was created with: a request for others is refused.
        match existing.and_then(|k| self.rooms.get(&k)) {
            Some(current) if current.config.conflicts_with(&settings) => {
                Err(CoreError::RoomSettingsConflict(room.clone()))
            }
            Some(current) => Ok((existing, current.config)),
            None => Ok((None, settings)),
        }
    }

    /// Put a new participant into its room (created with `settings` unless `existing`): the selector,
    /// the mixer, the dominant speaker, the space; then its slots are announced.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_room(
        &mut self,
        now: Instant,
        room: &RoomId,
        settings: RoomSettings,
        existing: Option<u64>,
        id: ParticipantId,
        params: JoinParams,
        link: Link,
    ) {
        let mixed = settings.mode == RoomMode::Mix;
        let key = match existing {
            Some(k) => k,
            None => {
                let k = self.next_room_key;
                self.next_room_key += 1;
                self.room_keys.insert(room.clone(), k);
                let slots = if mixed {
                    1
                } else {
                    usize::from(settings.slots)
                };
                self.rooms.insert(
                    k,
                    Room {
                        id: room.clone(),
                        config: settings,
                        selector: SlotSelector::new(slots, self.config.selector),
                        members: Vec::new(),
                        kind: if mixed {
                            RoomKind::Mix(Box::new(Mixer::new(now, settings.mix)))
                        } else {
                            RoomKind::Forward
                        },
                        dominant: DominantSpeaker::new(DominantConfig::default()),
                        broadcast: None,
                        audibility: Audibility::new(settings.spatial),
                        speakers_sent: std::collections::HashMap::new(),
                        trunk: super::trunk::RoomTrunk {
                            spanned: self.spanned_rooms.contains(room),
                            ..Default::default()
                        },
                        loss_feedback: Default::default(),
                    },
                );
                if self.broadcast_rooms.contains(room) {
                    if let Some(r) = self.rooms.get_mut(&k) {
                        r.set_broadcast(now, true, &[]);
                    }
                }
                k
            }
        };
        let slot_count = match &link {
            Link::Peer(peer) => peer.slots().len(),
            Link::Source(_) => 0,
        };
        let rewriters = (0..slot_count)
            .map(|_| {
                SlotRewriter::new(
                    self.rng.next_u64() as u16 & 0x7fff,
                    self.rng.next_u64() as u32,
                )
            })
            .collect();
        let ssrc = match &link {
            Link::Peer(_) => None,
            Link::Source(input) => Some(input.ssrc),
        };
        let participant = Participant {
            room: key,
            link,
            params,
            ssrc,
            rewriters,
            gate: super::Gate::default(),
            downstream_loss: None,
            upstream_loss: None,
            upstream_floor: None,
            red_history: crate::red::History::default(),
            red_frames_back: crate::mixer::red_frames_back(crate::mixer::UNREPORTED_LOSS_PERCENT),
        };
        let room = self
            .rooms
            .get_mut(&key)
            .expect("room key was just looked up or inserted");
        let subscribes = !participant.slots().is_empty();
        let mix_listener = !mixed && participant.mix_listener();
        // In a mixed room the selector only tracks levels and speakers: nobody is assigned slots; nor to
        // a forwarding room's member who hears its mix.
        room.selector.add_participant(
            id,
            participant.publishes(),
            subscribes && !mixed && !mix_listener,
        );
        if mix_listener {
            // The room's mixer, made now from its members if it has none (mount, other listeners).
            let publishers = super::publishers(&room.members, &self.participants);
            room.forward_mixer(now, &publishers);
        }
        // A forwarding room's mixer has only its mix listeners as listeners.
        if let Some(mixer) = room.input_mixer_mut() {
            mixer.add_member(
                id,
                participant.publishes(),
                subscribes && (mixed || mix_listener),
                self.rng.next_u64() as u16 & 0x7fff,
                self.rng.next_u64() as u32,
            );
        }
        room.dominant.add(id);
        room.members.push(id);
        room.audibility.changed(now);
        self.participants.insert(id, participant);
        self.arm_tick(key);
        self.emit_slots(id);
    }

    /// Remove a participant and its peer; the room goes with its last participant.
    pub fn remove_participant(&mut self, now: Instant, id: ParticipantId) -> Result<(), CoreError> {
        self.last_now = now;
        let p = self
            .participants
            .remove(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        if let Some(peer) = p.peer() {
            self.router.remove_peer(peer.ufrag(), id);
        }
        // The last local participant of a shard takes its remote ones along.
        let (remote, remote_left) = self.leave_trunk(p.room, id);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.selector.remove_participant(id);
            room.dominant.remove(id);
            if let Some(mixer) = room.input_mixer_mut() {
                mixer.remove_member(id);
            }
            room.release_forward_mixer();
            if remote {
                // The volumes given it stay for its next import (it comes back with the same id).
                room.audibility.remove_remote(now, id);
            } else {
                room.audibility.remove(now, id);
            }
            room.speakers_sent.remove(&id);
            room.members.retain(|m| *m != id);
            if room.members.is_empty() {
                let room = self.rooms.remove(&p.room).expect("room was just found");
                self.room_keys.remove(&room.id);
            } else {
                self.arm_tick(p.room);
                // Its loss no longer counts.
                self.refresh_loss_feedback(now, p.room);
            }
        }
        for remote in remote_left {
            self.remove_participant(now, remote)?;
        }
        Ok(())
    }

    /// Answer a participant's ICE restart offer on its existing peer (see [`Peer::restart_ice`]): the same
    /// participant, room membership, slots and rewriters; only the ICE credentials change. The router
    /// forgets the old ufrag and every path the peer had learned, so the new path binds only through a
    /// STUN request the peer verifies under its new credentials (the anti-hijack rule, unchanged).
    pub fn restart_ice(
        &mut self,
        now: Instant,
        id: ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, CoreError> {
        self.last_now = now;
        check_offer(offer_sdp)?;
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let peer = p.peer_mut().ok_or(CoreError::UnknownParticipant(id))?;
        let (old_ufrag, answer) = peer.restart_ice(offer_sdp)?;
        self.router.remove_peer(&old_ufrag, id);
        self.router.add_peer(peer.ufrag(), id);
        self.drive(id, now);
        Ok(answer)
    }

    /// Stop or resume forwarding a participant's audio.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), CoreError> {
        self.update_gate(id, |p| p.params.muted = muted)
    }

    /// Turn push-to-talk on or off for a participant. With it on, its audio is forwarded and mixed, and it
    /// is a speaker candidate, only while its key is down ([`MediaCore::set_ptt_key`]); turning it on
    /// starts with the key up.
    pub fn set_ptt(&mut self, id: ParticipantId, enabled: bool) -> Result<(), CoreError> {
        self.update_gate(id, |p| {
            p.gate.ptt = enabled;
            p.gate.key_down = false;
        })
    }

    /// A push-to-talk participant's key went down or up. Down: its next packet is forwarded (the onset is
    /// not lost: it re-runs slot selection at once if it holds no slot). Up: nothing more of it is
    /// forwarded or mixed, and it leaves every slot. Without push-to-talk the key state is kept and
    /// changes nothing.
    pub fn set_ptt_key(&mut self, id: ParticipantId, down: bool) -> Result<(), CoreError> {
        self.update_gate(id, |p| p.gate.key_down = down)
    }

    /// Deafen (or undeafen) a participant: it is sent no audio. In a forwarding room its slots are
    /// emptied (a `Slots` event tells it) and nobody is routed to it; in a mixed room nothing is sent to
    /// it. What it says is not affected.
    pub fn set_deafened(&mut self, id: ParticipantId, deafened: bool) -> Result<(), CoreError> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        if p.gate.deafened == deafened {
            return Ok(());
        }
        p.gate.deafened = deafened;
        let subscribes = p.subscribes();
        let key = p.room;
        if let Some(room) = self.rooms.get_mut(&key) {
            if room.mixer().is_none() {
                room.selector.set_subscribing(id, subscribes);
            }
        }
        self.arm_tick(key);
        Ok(())
    }

    /// Applies a change to a participant's mute or push-to-talk state, then tells its room's selector and
    /// mixer whether it publishes now.
    fn update_gate(
        &mut self,
        id: ParticipantId,
        change: impl FnOnce(&mut Participant),
    ) -> Result<(), CoreError> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let before = p.publishes();
        change(p);
        let publishes = p.publishes();
        if publishes == before {
            return Ok(());
        }
        p.gate.onset = publishes;
        let key = p.room;
        if let Some(room) = self.rooms.get_mut(&key) {
            room.selector.set_publishing(id, publishes);
            if let Some(mixer) = room.input_mixer_mut() {
                mixer.set_publishing(id, publishes);
            }
            room.audibility.changed(self.last_now);
        }
        self.arm_tick(key);
        Ok(())
    }

    /// Place or move a participant of a spatial room. A position that is not finite or outside the world
    /// is refused with [`CoreError::BadPosition`] and changes nothing; in a room without positional voice
    /// with [`CoreError::NotSpatial`]. Who hears whom follows at the next refresh (at most 100 ms later).
    pub fn set_position(
        &mut self,
        now: Instant,
        id: ParticipantId,
        position: vocab::Position,
    ) -> Result<(), CoreError> {
        self.last_now = now;
        let p = self
            .participants
            .get(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let key = p.room;
        let room = self
            .rooms
            .get_mut(&key)
            .expect("a participant's room exists while it has members");
        let Some(placed) = room.audibility.set_position(now, id, position) else {
            return Err(CoreError::NotSpatial(room.id.clone()));
        };
        placed?;
        self.arm_tick(key);
        Ok(())
    }

    pub(super) fn schedule(&mut self, id: ParticipantId, at: Instant) {
        if let Some(peer) = self
            .participants
            .get_mut(&id)
            .and_then(Participant::peer_mut)
        {
            self.out.schedule(peer, at);
        }
    }

    /// Drain one peer after a mutation.
    pub(super) fn drive(&mut self, id: ParticipantId, now: Instant) {
        let Some(peer) = self
            .participants
            .get_mut(&id)
            .and_then(Participant::peer_mut)
        else {
            return;
        };
        if let Err(e) = peer.drive(now, &mut self.out) {
            tracing::debug!(participant = %id, error = %e, "peer failed");
            self.disconnect(id, "webrtc error");
        }
    }

    /// Remove a failed peer and tell signaling.
    pub(super) fn disconnect(&mut self, id: ParticipantId, reason: &'static str) {
        if self.remove_participant(self.last_now, id).is_ok() {
            self.events.push_back(CoreEvent::Disconnected {
                participant: id,
                reason,
            });
        }
    }
}
