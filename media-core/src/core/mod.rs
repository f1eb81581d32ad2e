//! [`MediaCore`]: everything one media worker owns — peers, rooms, slot forwarding — as a sans-IO state
//! machine. Feed it one input (a datagram, a timeout, a command), then drain [`MediaCore::poll_output`]
//! until it returns [`Output::Timeout`].

mod answer;
pub mod net;
pub mod offer;
mod outbox;
pub mod peer;
mod rng;
mod room;
pub mod router;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::rtp::RtpPacket;

use crate::core::net::{LocalCandidate, NetPath, NetTransmit, Transport};
use crate::core::offer::{check_offer, OfferError};
use crate::core::outbox::Outbox;
use crate::core::peer::{Peer, PeerError, PeerEvent, PeerParams, StreamStats};
use crate::core::rng::SeqRng;
use crate::core::room::{Room, RoomKind};
use crate::core::router::{Route, RouteMiss, Router};
use crate::ids::{ParticipantId, RoomId, SlotIndex, Ssrc};
use crate::mixer::{MixPacket, Mixer};
use crate::red;
use crate::sfu::rewrite::SlotRewriter;
use crate::sfu::slots::{SelectorConfig, SlotSelector};
use crate::speakers::dominant::{DominantConfig, DominantSpeaker};
use crate::stats::{CoreStats, DropReason, Samples};
use vocab::{RoomMode, RoomSettings, SettingsError, SlotAssignment};

/// Largest datagram accepted from the network; anything larger is not WebRTC audio.
pub const MAX_DATAGRAM: usize = 1500;

/// Settings of one worker's core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The host candidates offered to every peer, in offer order (see [`net::offer_order`]): the first UDP
    /// one is the primary, the destination of [`MediaCore::handle_datagram`]'s datagrams. Each address is
    /// as advertised (the public address behind NAT), which is what str0m matches datagrams against.
    pub candidates: Vec<LocalCandidate>,
    /// Seeds the random initial sequence numbers and timestamps of slot streams.
    pub seed: u64,
    /// A peer that has not completed DTLS this long after its offer is dropped.
    pub connect_timeout: Duration,
    /// Slot selection tuning.
    pub selector: SelectorConfig,
}

impl CoreConfig {
    /// One UDP host candidate at `candidate_addr`.
    pub fn new(candidate_addr: SocketAddr, seed: u64) -> Self {
        CoreConfig {
            candidates: vec![LocalCandidate::udp(candidate_addr)],
            seed,
            connect_timeout: Duration::from_secs(20),
            selector: SelectorConfig::default(),
        }
    }
}

/// What a participant may do and how it starts.
#[derive(Clone, Copy, Debug)]
pub struct JoinParams {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub muted: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("participant {0} already has a peer")]
    AlreadyConnected(ParticipantId),
    #[error("no participant {0}")]
    UnknownParticipant(ParticipantId),
    #[error("room setting out of range: {0}")]
    BadRoomSettings(#[from] SettingsError),
    /// The room exists on this core with settings other than the request's: refused, never joined with
    /// settings the caller did not ask for.
    #[error("room {0} exists with other settings")]
    RoomSettingsConflict(RoomId),
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl CoreError {
    /// What a client may be told. str0m's parse errors quote the offer and internal state (heap addresses
    /// such as `PointerOffset(0x7f…)`), so they become a fixed message; log the error itself at debug.
    pub fn client_message(&self) -> String {
        match self {
            CoreError::Peer(PeerError::BadSdp(_)) => "the offer is not valid SDP".to_owned(),
            CoreError::Peer(PeerError::Rtc(_)) => {
                "the offer was refused by the WebRTC stack".to_owned()
            }
            CoreError::Peer(PeerError::Panicked) => {
                "the WebRTC stack failed on the offer".to_owned()
            }
            // Our own texts: fixed strings and counts.
            CoreError::Peer(e @ PeerError::MissingMedia(_)) => e.to_string(),
            CoreError::Offer(e) => e.to_string(),
            e @ (CoreError::AlreadyConnected(_)
            | CoreError::UnknownParticipant(_)
            | CoreError::BadRoomSettings(_)
            | CoreError::RoomSettingsConflict(_)) => e.to_string(),
        }
    }
}

/// Events for the worker to hand to signaling.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// DTLS-SRTP is up for this participant.
    Connected(ParticipantId),
    /// The peer failed or timed out and has been removed.
    Disconnected {
        participant: ParticipantId,
        reason: &'static str,
    },
    /// A subscriber's slot assignment changed (sent before the new occupant's first packet is forwarded).
    Slots {
        subscriber: ParticipantId,
        slots: Vec<SlotAssignment>,
    },
    /// The speaking participants of a room changed, loudest first.
    Speakers {
        room: RoomId,
        speakers: Vec<(ParticipantId, f32)>,
    },
    /// The room's dominant speaker changed (Volfin & Cohen; decided every 300 ms, with hysteresis).
    DominantSpeaker {
        room: RoomId,
        participant: ParticipantId,
    },
}

/// What to do next.
#[derive(Debug)]
pub enum Output {
    /// A datagram to send over the path it names (transport, local candidate, remote).
    Transmit(NetTransmit),
    Event(CoreEvent),
    /// Nothing more to do until this instant (or the next input).
    Timeout(Instant),
}

struct Participant {
    room: u64,
    peer: Peer,
    params: JoinParams,
    /// The SSRC of the participant's microphone stream, learned from its first packet.
    ssrc: Option<Ssrc>,
    /// One rewriter per slot stream.
    rewriters: Vec<SlotRewriter>,
}

impl Participant {
    fn publishes(&self) -> bool {
        self.params.can_publish && !self.params.muted && self.peer.has_microphone()
    }
}

pub struct MediaCore {
    config: CoreConfig,
    dtls_cert: DtlsCert,
    rng: SeqRng,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<u64, Room>,
    room_keys: HashMap<RoomId, u64>,
    next_room_key: u64,
    router: Router,
    /// What draining peers produced: datagrams, peer events still to act on, and peers' wake-ups.
    out: Outbox,
    events: VecDeque<CoreEvent>,
    next_tick: Option<Instant>,
    last_now: Instant,
    stats: CoreStats,
    samples: Samples,
    /// Reused buffer for a mixer tick's packets.
    mix_out: Vec<MixPacket>,
}

impl MediaCore {
    /// A core with a freshly generated DTLS certificate shared by all its peers.
    pub fn new(now: Instant, config: CoreConfig) -> Self {
        let provider = str0m::crypto::from_feature_flags();
        let dtls_cert = provider
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs provider generates certificates (str0m feature aws-lc-rs)");
        Self::with_certificate(now, config, dtls_cert)
    }

    /// A core using a given DTLS certificate.
    pub fn with_certificate(now: Instant, config: CoreConfig, dtls_cert: DtlsCert) -> Self {
        MediaCore {
            rng: SeqRng::new(config.seed),
            config,
            dtls_cert,
            participants: HashMap::new(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            next_room_key: 0,
            router: Router::default(),
            out: Outbox::default(),
            events: VecDeque::new(),
            next_tick: None,
            last_now: now,
            stats: CoreStats::default(),
            samples: Samples::default(),
            mix_out: Vec::new(),
        }
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Take the observations gathered since the last call (RTT, jitter, jitter-buffer delay).
    pub fn take_samples(&mut self) -> Samples {
        std::mem::take(&mut self.samples)
    }

    /// The jitter-buffer target delay of a participant in a mixed room.
    pub fn jitter_target(&self, id: ParticipantId) -> Option<Duration> {
        let p = self.participants.get(&id)?;
        self.rooms.get(&p.room)?.mixer()?.jitter_target(id)
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The participants of a room on this core.
    pub fn room_members(&self, room: &RoomId) -> &[ParticipantId] {
        self.room_keys
            .get(room)
            .and_then(|k| self.rooms.get(k))
            .map(|r| r.members.as_slice())
            .unwrap_or(&[])
    }

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
        settings.validate()?;
        let existing = self.room_keys.get(room).copied();
        // An existing room keeps the settings it was created with: a request for others is refused.
        if let Some(current) = existing.and_then(|k| self.rooms.get(&k)) {
            if current.config.conflicts_with(&settings) {
                return Err(CoreError::RoomSettingsConflict(room.clone()));
            }
        }
        let settings = existing
            .and_then(|k| self.rooms.get(&k))
            .map(|r| r.config)
            .unwrap_or(settings);
        let mixed = settings.mode == RoomMode::Mix;
        let slots = if mixed {
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
        };
        let (peer, answer) = Peer::from_offer_with_candidates(
            now,
            id,
            &peer_params,
            &self.config.candidates,
            offer_sdp,
        )?;

        let key = match existing {
            Some(k) => k,
            None => {
                let k = self.next_room_key;
                self.next_room_key += 1;
                self.room_keys.insert(room.clone(), k);
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
                    },
                );
                k
            }
        };
        let rewriters = (0..peer.slots().len())
            .map(|_| {
                SlotRewriter::new(
                    self.rng.next_u64() as u16 & 0x7fff,
                    self.rng.next_u64() as u32,
                )
            })
            .collect();
        self.router.add_peer(peer.ufrag(), id);
        let participant = Participant {
            room: key,
            peer,
            params,
            ssrc: None,
            rewriters,
        };
        let room = self
            .rooms
            .get_mut(&key)
            .expect("room key was just looked up or inserted");
        let subscribes = !participant.peer.slots().is_empty();
        // In a mixed room the selector only tracks levels and speakers: nobody is assigned slots.
        room.selector
            .add_participant(id, participant.publishes(), subscribes && !mixed);
        if let Some(mixer) = room.mixer_mut() {
            mixer.add_member(
                id,
                participant.publishes(),
                subscribes,
                self.rng.next_u64() as u16 & 0x7fff,
                self.rng.next_u64() as u32,
            );
        }
        room.dominant.add(id);
        room.members.push(id);
        self.participants.insert(id, participant);
        self.schedule(id, now);
        self.arm_tick(key);
        self.emit_slots(id);
        Ok(answer)
    }

    /// Remove a participant and its peer; the room goes with its last participant.
    pub fn remove_participant(&mut self, now: Instant, id: ParticipantId) -> Result<(), CoreError> {
        self.last_now = now;
        let p = self
            .participants
            .remove(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        self.router.remove_peer(p.peer.ufrag(), id);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.selector.remove_participant(id);
            room.dominant.remove(id);
            if let Some(mixer) = room.mixer_mut() {
                mixer.remove_member(id);
            }
            room.members.retain(|m| *m != id);
            if room.members.is_empty() {
                let room = self.rooms.remove(&p.room).expect("room was just found");
                self.room_keys.remove(&room.id);
            } else {
                self.arm_tick(p.room);
            }
        }
        Ok(())
    }

    /// Stop or resume forwarding a participant's audio.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), CoreError> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        p.params.muted = muted;
        let publishes = p.publishes();
        let key = p.room;
        if let Some(room) = self.rooms.get_mut(&key) {
            room.selector.set_publishing(id, publishes);
            if let Some(mixer) = room.mixer_mut() {
                mixer.set_publishing(id, publishes);
            }
        }
        self.arm_tick(key);
        Ok(())
    }

    /// The first UDP candidate: where [`MediaCore::handle_datagram`]'s datagrams arrived.
    fn primary_udp(&self) -> Option<SocketAddr> {
        self.config
            .candidates
            .iter()
            .find(|c| c.transport == Transport::Udp)
            .map(|c| c.addr)
    }

    /// A datagram arrived on the worker's primary UDP socket (the first UDP candidate).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        match self.primary_udp() {
            Some(local) => self.handle_datagram_via(now, NetPath::udp(local, source), data),
            None => {
                self.last_now = now;
                self.stats.datagrams_in += 1;
                self.stats.bytes_in += data.len() as u64;
                self.stats.drop(DropReason::UnknownSource);
            }
        }
    }

    /// Whether `path` is bound to a peer: a STUN request over it was verified by that peer's ICE agent.
    pub fn path_bound(&self, path: &NetPath) -> bool {
        self.router.is_bound(path)
    }

    /// A datagram arrived over `path`: on one of the core's candidates (`path.local`, as advertised, over
    /// `path.transport`; for TCP one de-framed RFC 4571 frame) from `path.remote`. A datagram on an address
    /// that is not one of the candidates is dropped.
    pub fn handle_datagram_via(&mut self, now: Instant, path: NetPath, data: &[u8]) {
        self.last_now = now;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        if data.len() > MAX_DATAGRAM {
            self.stats.drop(DropReason::Oversized);
            return;
        }
        let ours = self
            .config
            .candidates
            .iter()
            .any(|c| c.transport == path.transport && c.addr == path.local);
        if !ours {
            return self.stats.drop(DropReason::UnknownSource);
        }
        let source = path.remote;
        let route = match self.router.route(now, path, data) {
            Ok(route) => route,
            Err(RouteMiss::UnknownSource) => return self.stats.drop(DropReason::UnknownSource),
            Err(RouteMiss::UnknownUfrag) => return self.stats.drop(DropReason::UnknownUfrag),
            Err(RouteMiss::MalformedStun) => return self.stats.drop(DropReason::Malformed),
        };
        let id = match route {
            Route::Stun(id) | Route::Bound(id) => id,
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        if let Route::Stun(_) = route {
            // The path is learned only from a request the peer's ICE agent authenticates, and only if
            // no other live peer is using it (credentials for one's own peer do not prove the source).
            if !p.peer.verifies_stun(now, path, data) {
                return self.stats.drop(DropReason::BadIntegrity);
            }
            if let Err(taken) = self.router.learn(now, path, id) {
                tracing::debug!(participant = %id, owner = %taken.owner, %source,
                    transport = path.transport.as_str(),
                    "verified STUN from another peer's address dropped");
                return self.stats.drop(DropReason::Misrouted);
            }
        }
        match p.peer.handle_datagram(now, path, data) {
            Ok(()) => {}
            Err(PeerError::Panicked) => {
                self.stats.drop(DropReason::Malformed);
                self.disconnect(id, "webrtc stack fault");
                return;
            }
            // str0m rejects a packet it cannot parse or decrypt; the peer carries on.
            Err(_) => self.stats.drop(DropReason::Malformed),
        }
        self.drive(id, now);
        self.process_pending(now);
    }

    /// Time passed: run due peer timers, the room tick, and connection deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        while let Some((at, id)) = self.out.pop_due(now) {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if !p.peer.take_wake(at) {
                continue; // superseded by an earlier entry
            }
            if p.peer.connect_timed_out(now, self.config.connect_timeout) {
                self.disconnect(id, "connect timeout");
                continue;
            }
            if let Err(e) = p.peer.handle_timeout(now) {
                tracing::debug!(participant = %id, error = %e, "peer timeout failed");
                self.disconnect(id, "webrtc error");
                continue;
            }
            self.drive(id, now);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.room_tick(now);
        }
        self.process_pending(now);
    }

    /// The next output: datagrams first, then events, then the next wake-up.
    #[must_use = "the drive loop drains poll_output until it yields a timeout: an output dropped is a datagram not sent or an event lost"]
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.out.transmits.pop_front() {
            self.stats.datagrams_out += 1;
            self.stats.bytes_out += t.contents.len() as u64;
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        let timer = self.out.next_wake();
        let next = match (timer, self.next_tick) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // Nothing scheduled: an idle core wakes rarely.
            (None, None) => self.last_now + Duration::from_secs(1),
        };
        Output::Timeout(next)
    }

    /// Make sure the room tick runs when room `key`'s selector next needs an update.
    fn arm_tick(&mut self, key: u64) {
        if let Some(room) = self.rooms.get(&key) {
            room.arm_tick(&mut self.next_tick);
        }
    }

    /// Run every room's due work: the mixer tick of mixed rooms, slot selection and speaker reports. An idle
    /// room costs nothing.
    fn room_tick(&mut self, now: Instant) {
        self.next_tick = None;
        let mut mixed = std::mem::take(&mut self.mix_out);
        for room in self.rooms.values_mut() {
            if let Some(mixer) = room.mixer_mut() {
                if mixer.next_tick().is_some_and(|t| t <= now) {
                    mixed.clear();
                    mixer.tick(now, &mut mixed, &mut self.stats.mix, &mut self.samples);
                    // Listeners of the shared mix get the same RED payloads: encoded once per tick.
                    let mut red_variants: Vec<MixRedVariant> = Vec::new();
                    for packet in mixed.drain(..) {
                        let Some(p) = self.participants.get_mut(&packet.to) else {
                            continue;
                        };
                        if !p.peer.is_connected() {
                            continue;
                        }
                        let red = match (p.peer.slots().first(), &packet.previous) {
                            (Some(slot), Some(previous)) if slot.red_pt.is_some() => {
                                Some(mix_red_payload(
                                    &mut red_variants,
                                    &packet.payload,
                                    previous,
                                    *slot.pt,
                                ))
                            }
                            _ => None,
                        };
                        let written = p.peer.write_mix(
                            packet.seq,
                            packet.ts,
                            now,
                            red.as_ref().unwrap_or(&packet.payload),
                            red.is_some(),
                            packet.level,
                            &packet.contributors,
                        );
                        let result = written.and_then(|()| p.peer.drive(now, &mut self.out));
                        if result.is_err() {
                            self.out
                                .events
                                .push_back((packet.to, PeerEvent::Disconnected("webrtc error")));
                        }
                    }
                }
            }
            if room.selector.next_update().is_some_and(|t| t <= now) && room.selector.update(now) {
                let changed: Vec<ParticipantId> = room.selector.drain_changes().collect();
                for sub in changed {
                    if let Some(p) = self.participants.get(&sub) {
                        self.events.push_back(CoreEvent::Slots {
                            subscriber: sub,
                            slots: slot_infos(p, room.selector.assignment(sub), &self.participants),
                        });
                    }
                }
                if let Some(speakers) = room.selector.speakers_changed(now) {
                    self.events.push_back(CoreEvent::Speakers {
                        room: room.id.clone(),
                        speakers,
                    });
                }
                if let Some(participant) = room.dominant.update(now) {
                    self.events.push_back(CoreEvent::DominantSpeaker {
                        room: room.id.clone(),
                        participant,
                    });
                }
            }
            room.arm_tick(&mut self.next_tick);
        }
        self.mix_out = mixed;
    }

    fn emit_slots(&mut self, sub: ParticipantId) {
        let Some(p) = self.participants.get(&sub) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let slots = slot_infos(p, room.selector.assignment(sub), &self.participants);
        self.events.push_back(CoreEvent::Slots {
            subscriber: sub,
            slots,
        });
    }

    fn schedule(&mut self, id: ParticipantId, at: Instant) {
        if let Some(p) = self.participants.get_mut(&id) {
            self.out.schedule(&mut p.peer, at);
        }
    }

    /// Drain one peer after a mutation.
    fn drive(&mut self, id: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if let Err(e) = p.peer.drive(now, &mut self.out) {
            tracing::debug!(participant = %id, error = %e, "peer failed");
            self.disconnect(id, "webrtc error");
        }
    }

    fn process_pending(&mut self, now: Instant) {
        while let Some((id, event)) = self.out.events.pop_front() {
            match event {
                PeerEvent::Connected => self.events.push_back(CoreEvent::Connected(id)),
                PeerEvent::Disconnected(reason) => self.disconnect(id, reason),
                PeerEvent::Rtp(packet) => self.forward(now, id, packet),
                PeerEvent::Stats(s) => self.record_stream_stats(s),
            }
        }
    }

    fn record_stream_stats(&mut self, s: StreamStats) {
        self.stats.nacks_received += s.nacks_received;
        self.stats.nacks_sent += s.nacks_sent;
        if let Some(rtt) = s.rtt {
            Samples::push(&mut self.samples.rtt_seconds, rtt.as_secs_f64());
        }
        if let Some(jitter) = s.jitter {
            Samples::push(&mut self.samples.jitter_seconds, jitter.as_secs_f64());
        }
    }

    /// Remove a failed peer and tell signaling.
    fn disconnect(&mut self, id: ParticipantId, reason: &'static str) {
        if self.remove_participant(self.last_now, id).is_ok() {
            self.events.push_back(CoreEvent::Disconnected {
                participant: id,
                reason,
            });
        }
    }

    /// Forward one microphone packet to every (subscriber, slot) it is routed to.
    fn forward(&mut self, now: Instant, from: ParticipantId, packet: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        if !p.publishes() {
            return self.stats.drop(DropReason::NotPublishing);
        }
        // A RED packet (RFC 2198) is unwrapped: its primary goes where a plain Opus packet would, its
        // redundancy to RED subscribers and the mixer. Anything malformed is a counted drop.
        let opus_pt = p.peer.mic_opus_pt().map(|pt| *pt);
        let is_red = p
            .peer
            .mic_red_pt()
            .is_some_and(|pt| pt == packet.header.payload_type);
        if is_red {
            self.stats.rtp_red_in += 1;
        }
        let red = match (is_red, opus_pt) {
            (false, _) => None,
            (true, Some(opus_pt)) => match red::parse(&packet.payload, opus_pt) {
                Ok(r) => Some(r),
                Err(_) => return self.stats.drop(DropReason::Malformed),
            },
            (true, None) => return self.stats.drop(DropReason::Malformed),
        };
        let source = Ssrc(*packet.header.ssrc);
        p.ssrc = Some(source);
        let level = packet.header.ext_vals.audio_level;
        let vad = packet.header.ext_vals.voice_activity;
        let level_dbov = level.map(|l| l.unsigned_abs().min(127)).unwrap_or(127);
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        room.selector.on_audio(now, from, level_dbov, vad);
        room.dominant.on_level(from, now, level_dbov);
        if let Some(mixer) = room.mixer_mut() {
            let primary = match &red {
                Some(r) => Arc::from(r.primary),
                None => packet.payload.clone(),
            };
            let pushed = mixer.push(
                now,
                from,
                source,
                *packet.seq_no,
                packet.header.timestamp,
                primary,
                level.map(|l| l.unsigned_abs().min(127)),
                &mut self.stats.mix,
            );
            if pushed.is_err() {
                self.stats.drop(DropReason::Malformed);
            } else if let Some(r) = &red {
                mixer.push_redundant(from, *packet.seq_no, packet.header.timestamp, &r.redundant);
            }
            room.arm_tick(&mut self.next_tick);
            return;
        }
        room.arm_tick(&mut self.next_tick);
        let routes = room.selector.routes(from);
        if routes.is_empty() {
            self.stats.rtp_unrouted += 1;
            return;
        }
        let seq = *packet.seq_no;
        let ts = packet.header.timestamp;
        // Plain Opus for subscribers without RED (a RED packet's primary); RED subscribers get the RED
        // packet re-encoded with their payload types, one encoding per distinct (Opus PT, kept blocks).
        let payload: Arc<[u8]> = match &red {
            Some(r) => Arc::from(r.primary),
            None => packet.payload.clone(),
        };
        let mut red_variants: Vec<(u8, u32, Arc<[u8]>)> = Vec::new();
        for &(sub, SlotIndex(slot)) in routes {
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            if !s.peer.is_connected() {
                continue;
            }
            let slot = slot as usize;
            let Some(rewriter) = s.rewriters.get_mut(slot) else {
                continue;
            };
            let Some((out_seq, out_ts)) = rewriter.rewrite(now, source, seq, ts) else {
                self.stats.drop(DropReason::StaleOrDuplicate);
                continue;
            };
            let red_payload = match (&red, s.peer.slots().get(slot)) {
                (Some(r), Some(stream)) if stream.red_pt.is_some() => {
                    Some(red_variant(&mut red_variants, r, ts, *stream.pt, rewriter))
                }
                _ => None,
            };
            let written = s.peer.write_slot(
                slot,
                out_seq,
                out_ts,
                packet.timestamp,
                red_payload.as_ref().unwrap_or(&payload),
                red_payload.is_some(),
                level,
                vad,
                source,
            );
            let result = written.and_then(|()| s.peer.drive(now, &mut self.out));
            match result {
                Ok(()) => {
                    self.stats.rtp_forwarded += 1;
                    self.stats.rtp_red_forwarded += u64::from(red_payload.is_some());
                }
                Err(_) => self
                    .out
                    .events
                    .push_back((sub, PeerEvent::Disconnected("webrtc error"))),
            }
        }
    }
}

/// The RED payload for one subscriber's slot: the redundant frames the slot's current source covers (none
/// from before a speaker switch), labelled with the subscriber's Opus payload type. Encoded once per distinct
/// (payload type, kept frames) and shared through `variants`.
fn red_variant(
    variants: &mut Vec<(u8, u32, Arc<[u8]>)>,
    red: &red::RedPayload<'_>,
    ts: u32,
    opus_pt: u8,
    rewriter: &SlotRewriter,
) -> Arc<[u8]> {
    let mut kept = 0u32;
    for (i, f) in red.redundant.iter().enumerate().take(32) {
        if rewriter.covers(red::frame_ts(ts, f)) {
            kept |= 1 << i;
        }
    }
    if let Some((_, _, p)) = variants
        .iter()
        .find(|(pt, k, _)| *pt == opus_pt && *k == kept)
    {
        return p.clone();
    }
    let mut out = Vec::with_capacity(red.primary.len() + 8 + red.redundant.len() * 64);
    red::encode(
        opus_pt,
        red.primary,
        &red.redundant,
        |i, _| i < 32 && kept & (1 << i) != 0,
        &mut out,
    );
    let payload: Arc<[u8]> = Arc::from(out);
    variants.push((opus_pt, kept, payload.clone()));
    payload
}

/// A mixed packet's RED payload for listeners of one Opus payload type: (primary, previous, payload type,
/// RED payload).
type MixRedVariant = (Arc<[u8]>, Arc<[u8]>, u8, Arc<[u8]>);

/// The RED payload of a mixed packet for a listener that negotiated RED: the previous packet it was sent
/// as redundancy (20 ms back), then this one, labelled with the listener's Opus payload type. Encoded once
/// per distinct (packets, payload type) in a tick and shared through `variants`.
fn mix_red_payload(
    variants: &mut Vec<MixRedVariant>,
    primary: &Arc<[u8]>,
    previous: &Arc<[u8]>,
    opus_pt: u8,
) -> Arc<[u8]> {
    if let Some((_, _, _, p)) = variants
        .iter()
        .find(|(a, b, pt, _)| Arc::ptr_eq(a, primary) && Arc::ptr_eq(b, previous) && *pt == opus_pt)
    {
        return p.clone();
    }
    let mut out = Vec::with_capacity(primary.len() + previous.len() + 5);
    let redundant = [red::RedundantFrame {
        ts_offset: crate::audio::FRAME_SAMPLES as u32,
        payload: previous,
    }];
    red::encode(opus_pt, primary, &redundant, |_, _| true, &mut out);
    let payload: Arc<[u8]> = Arc::from(out);
    variants.push((primary.clone(), previous.clone(), opus_pt, payload.clone()));
    payload
}

fn slot_infos(
    p: &Participant,
    assignment: &[Option<ParticipantId>],
    all: &HashMap<ParticipantId, Participant>,
) -> Vec<SlotAssignment> {
    p.peer
        .slots()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let participant = assignment.get(i).copied().flatten();
            SlotAssignment {
                slot: i as u8,
                mid: s.mid.to_string(),
                participant,
                ssrc: participant
                    .and_then(|o| all.get(&o).and_then(|x| x.ssrc))
                    .map(|ssrc| ssrc.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::net::offer_order;
    use crate::testkit::client::{ClientConfig, ClientPeer};

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    /// The `a=candidate` lines of each m-line section of an SDP.
    fn candidates_per_mline(sdp: &str) -> Vec<Vec<String>> {
        sdp.split("\r\nm=")
            .skip(1)
            .map(|section| {
                section
                    .lines()
                    .filter_map(|l| l.strip_prefix("a=candidate:"))
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_bundled_m_line_offers_the_udp_candidates_first_then_passive_tcp() {
        let now = epoch();
        let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
        let lan: SocketAddr = "192.168.1.5:7882".parse().expect("literal");
        let mut candidates = vec![
            LocalCandidate::tcp(lo),
            LocalCandidate::udp(lo),
            LocalCandidate::udp(lan),
        ];
        offer_order(&mut candidates);
        let config = CoreConfig {
            candidates,
            ..CoreConfig::new(lo, 1)
        };
        let mut core = MediaCore::new(now, config);
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal"),
            slots: 2,
            publish: true,
            red: 0,
        };
        let (_, offer) = ClientPeer::new(now, client).expect("client offer");
        let answer = core
            .add_participant(
                now,
                &RoomId("r".into()),
                RoomSettings::forward(2),
                ParticipantId(1),
                JoinParams {
                    can_publish: true,
                    can_subscribe: true,
                    muted: false,
                },
                &offer,
            )
            .expect("answer");
        let per_line = candidates_per_mline(&answer);
        assert_eq!(per_line.len(), 3, "{answer}");
        let lines = &per_line[0];
        assert_eq!(lines.len(), 3, "{answer}");
        assert!(lines[0].contains(" udp ") && lines[0].contains("127.0.0.1 7882 typ host"));
        assert!(lines[1].contains(" udp ") && lines[1].contains("192.168.1.5 7882 typ host"));
        assert!(
            lines[2].contains(" tcp ")
                && lines[2].contains("127.0.0.1 7882 typ host tcptype passive"),
            "{answer}"
        );
        let prio = |l: &str| -> u32 {
            l.split(' ')
                .nth(3)
                .and_then(|p| p.parse().ok())
                .expect("a candidate line has a priority")
        };
        assert!(prio(&lines[0]) > prio(&lines[1]), "{answer}");
        assert!(prio(&lines[1]) > prio(&lines[2]), "{answer}");
        // Every m-line of the BUNDLE group lists all of them, UDP and TCP, in the same order, then
        // end-of-candidates (answer.rs: clients that read another m-line's candidates connect too).
        assert!(answer.contains("a=group:BUNDLE"), "{answer}");
        for other in &per_line[1..] {
            assert_eq!(other, lines, "{answer}");
        }
        assert_eq!(answer.matches("a=end-of-candidates").count(), 3, "{answer}");
    }

    #[test]
    fn a_datagram_on_an_address_that_is_no_candidate_is_dropped() {
        let now = epoch();
        let lo: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
        let mut core = MediaCore::new(now, CoreConfig::new(lo, 1));
        let remote: SocketAddr = "127.0.0.1:6000".parse().expect("literal");
        // TCP on the UDP candidate's address: not a candidate of this core.
        core.handle_datagram_via(now, NetPath::tcp(lo, remote), &[0x80, 0, 0, 1]);
        assert_eq!(core.stats().dropped(DropReason::UnknownSource), 1);
    }
}
