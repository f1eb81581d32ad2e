//! [`MediaCore`]: everything one media worker owns — peers, rooms, slot forwarding — as a sans-IO state
//! machine. Feed it one input (a datagram, a timeout, a command), then drain [`MediaCore::poll_output`]
//! until it returns [`Output::Timeout`].

mod answer;
pub(crate) mod codec;
pub mod net;
pub mod offer;
mod outbox;
pub mod peer;
mod rng;
mod room;
pub mod router;

mod ingress;
mod loss_feedback;
mod participants;
mod source;
mod talk;
mod timers;
pub mod trunk;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;

use crate::core::net::{LocalCandidate, NetTransmit};
use crate::core::offer::OfferError;
use crate::core::outbox::Outbox;
use crate::core::peer::{Peer, PeerError};
use crate::core::rng::SeqRng;
use crate::core::room::Room;
use crate::core::router::Router;
use crate::ids::{ParticipantId, RoomId, Ssrc};
use crate::mixer::MixPacket;
use crate::sfu::rewrite::SlotRewriter;
use crate::sfu::slots::SelectorConfig;
use crate::stats::{CoreStats, Samples};
use vocab::{SettingsError, SlotAssignment};

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
    /// RTP read this long or longer after it arrived is dropped unread ([`MediaCore::handle_datagram_read`],
    /// [`crate::DropReason::Overloaded`]): a worker that falls behind sheds its backlog instead of delivering
    /// it seconds late.
    pub stale_rtp_after: Duration,
    /// The most a forwarding room's receiver reports tell its publishers their listeners lose, in
    /// percent, and the most a publisher's own small uplink loss is raised to; 0 turns the feedback off
    /// (`core/loss_feedback.rs`).
    pub loss_feedback_max_percent: u8,
}

/// The default of [`CoreConfig::loss_feedback_max_percent`]: enough for a browser's encoder to protect
/// its audio for a listener losing one packet in ten, and no more than a sender's loss-based bandwidth
/// estimate tolerates before it backs off.
pub const LOSS_FEEDBACK_MAX_PERCENT: u8 = 10;

/// The default of [`CoreConfig::stale_rtp_after`]: as late as the mixer lets itself fall before it skips
/// ticks, and beyond what a listener's jitter buffer waits for.
pub const STALE_RTP_AFTER: Duration = Duration::from_millis(200);

impl CoreConfig {
    /// One UDP host candidate at `candidate_addr`.
    pub fn new(candidate_addr: SocketAddr, seed: u64) -> Self {
        CoreConfig {
            candidates: vec![LocalCandidate::udp(candidate_addr)],
            seed,
            connect_timeout: Duration::from_secs(20),
            selector: SelectorConfig::default(),
            stale_rtp_after: STALE_RTP_AFTER,
            loss_feedback_max_percent: LOSS_FEEDBACK_MAX_PERCENT,
        }
    }
}

/// What a participant may do and how it starts.
#[derive(Clone, Copy, Debug)]
pub struct JoinParams {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub muted: bool,
    /// Hears the room's mix in one stream whatever the room's mode (a WHEP player): in a forwarding room
    /// from the room's own mixer ([`room::Room::forward_mixer`]), one shared encode for all such
    /// listeners, instead of slots.
    pub hears_mix: bool,
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
    /// A talk target that names nobody, or the participant itself.
    #[error("a whisper names 1 to 64 other participants")]
    BadTarget,
    /// A position for a participant whose room has no positional voice.
    #[error("room {0} is not spatial")]
    NotSpatial(RoomId),
    #[error(transparent)]
    BadPosition(#[from] vocab::SpatialError),
    /// A source packet for a participant that is a WebRTC peer.
    #[error("participant {0} is not a server-side source")]
    NotASource(ParticipantId),
    /// A trunk message for a room this core does not host (its shard here ended).
    #[error("room {0} has no shard here")]
    UnknownRoom(RoomId),
    /// A trunk packet whose speaker is a local participant here.
    #[error("participant {0} is local here, not remote")]
    NotRemote(ParticipantId),
    /// A trunk packet of a new speaker for a room that imports the most remote participants it may.
    #[error("room {0} has too many remote participants")]
    RemoteLimit(RoomId),
    /// A source packet whose payload is not an Opus packet.
    #[error("a packet of source {0} is not Opus")]
    NotOpus(ParticipantId),
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
            CoreError::Peer(PeerError::Panicked | PeerError::Srtp(_)) => {
                "the WebRTC stack failed on the offer".to_owned()
            }
            // Our own texts: fixed strings and counts.
            CoreError::Peer(e @ (PeerError::MissingMedia(_) | PeerError::NotIceRestart(_))) => {
                e.to_string()
            }
            CoreError::Offer(e) => e.to_string(),
            e @ (CoreError::AlreadyConnected(_)
            | CoreError::UnknownParticipant(_)
            | CoreError::BadRoomSettings(_)
            | CoreError::RoomSettingsConflict(_)
            | CoreError::NotSpatial(_)
            | CoreError::BadTarget
            | CoreError::NotASource(_)
            | CoreError::UnknownRoom(_)
            | CoreError::NotRemote(_)
            | CoreError::RemoteLimit(_)
            | CoreError::NotOpus(_)
            | CoreError::BadPosition(_)) => e.to_string(),
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
    /// The speaking participants of a room changed, loudest first, as `listeners` may know them: each
    /// itself and the speakers it hears (see [`crate::audibility`]).
    Speakers {
        listeners: Vec<ParticipantId>,
        speakers: Vec<(ParticipantId, f32)>,
    },
    /// In a spatial forwarding room: the speakers `listener` hears (nearest first, at most `max_audible`)
    /// and where they are, so the client can render them; sent when the set or a position in it changed,
    /// at most every 100 ms.
    Positions {
        listener: ParticipantId,
        positions: Vec<(ParticipantId, vocab::Position)>,
    },
    /// The room's dominant speaker changed (Volfin & Cohen; decided every 300 ms, with hysteresis); told to
    /// the `listeners` who hear it (or are it).
    DominantSpeaker {
        listeners: Vec<ParticipantId>,
        participant: ParticipantId,
    },
}

/// One 20 ms Opus frame of a broadcast room's full mix: what a listener who talks to no one hears, encoded
/// once per tick by the room's shared encode.
#[derive(Clone, Debug)]
pub struct BroadcastFrame {
    pub room: RoomId,
    /// The tick's index on the room's 20 ms grid; a gap means ticks were skipped (or the room was re-made).
    pub tick: u64,
    pub payload: std::sync::Arc<[u8]>,
    /// Who talks in this frame, loudest first.
    pub talkers: Vec<ParticipantId>,
}

/// One microphone packet of a tapped participant, as received: the Opus payload (a RED packet's primary),
/// not decoded or re-encoded (see [`MediaCore::set_tapped_participants`]); a server-side source's packets alike.
#[derive(Clone, Debug)]
pub struct MicPacket {
    pub participant: ParticipantId,
    pub room: RoomId,
    /// The packet's RTP timestamp (48 kHz for Opus), as the participant sent it.
    pub timestamp: u32,
    /// Its duration in 48 kHz samples; `None` if the payload is not a valid Opus packet.
    pub samples: Option<u32>,
    pub payload: std::sync::Arc<[u8]>,
    /// Its RFC 6464 level in −dBov (0 loudest, 127 silence), if the participant sends it.
    pub level: Option<u8>,
}

/// What to do next.
#[derive(Debug)]
pub enum Output {
    /// A datagram to send over the path it names (transport, local candidate, remote).
    Transmit(NetTransmit),
    Event(CoreEvent),
    /// One tick of a broadcast room's full mix (see [`MediaCore::set_broadcast_rooms`]).
    Broadcast(BroadcastFrame),
    /// A tapped participant's microphone packet (see [`MediaCore::set_tapped_participants`]).
    Microphone(MicPacket),
    /// For the other shards of a spanned room (see [`MediaCore::set_spanned_rooms`]).
    Trunk(trunk::TrunkMessage),
    /// Nothing more to do until this instant (or the next input).
    Timeout(Instant),
}

/// The core's participant table. FxHash: looked up once per forwarded packet and subscriber, and its keys
/// are ids the server assigns, which no client can choose to collide.
type ParticipantMap = HashMap<ParticipantId, Participant, rustc_hash::FxBuildHasher>;

struct Participant {
    room: u64,
    link: Link,
    params: JoinParams,
    /// The SSRC of the participant's microphone stream, learned from its first packet.
    ssrc: Option<Ssrc>,
    /// One rewriter per slot stream.
    rewriters: Vec<SlotRewriter>,
    /// Push-to-talk and deafen state (set after the participant is added, see [`MediaCore::set_ptt`]).
    gate: Gate,
    /// The loss it last reported on its downlink (`loss_feedback.rs`).
    downstream_loss: Option<loss_feedback::DownstreamLoss>,
    /// The loss of its own microphone stream, as the server counted it (`loss_feedback.rs`).
    upstream_loss: Option<loss_feedback::DownstreamLoss>,
    /// What its microphone stream's receiver reports state for that loss at least, once the count
    /// covers enough packets (`None` before: str0m's own fraction of each report's interval).
    upstream_floor: Option<u8>,
    /// Its microphone's last frames, which the server adds as RED redundancy where it sent plain Opus
    /// (`ingress.rs`, [`crate::red::History`]).
    red_history: crate::red::History,
    /// How many frames back the RED the server builds for it reaches, by the loss its reports state
    /// ([`crate::mixer::red_frames_back`], `loss_feedback.rs`); until they state a figure, as for the
    /// mixer's unreported listener ([`crate::mixer::UNREPORTED_LOSS_PERCENT`]).
    red_frames_back: usize,
}

/// What a participant may say and hear right now, beyond its [`JoinParams`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gate {
    /// Push-to-talk: its audio is forwarded and mixed only while `key_down`.
    ptt: bool,
    key_down: bool,
    /// Its gate has just opened (unmute, key down): its next packet re-runs slot selection at once, so
    /// the onset reaches a free slot instead of waiting for the next selection tick.
    onset: bool,
    /// It is sent no audio (forward: no slot routed to it; mix: nothing sent).
    deafened: bool,
}

/// Where a participant's audio comes from (and, for a peer, where the room's goes). Almost every participant
/// is a peer, so the peer is kept inline (as before sources existed) and the rare source boxed.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// A WebRTC client.
    Peer(Peer),
    /// A server-side source (`source.rs`): packets from the server process, nothing sent back.
    Source(Box<source::SourceInput>),
}

impl Participant {
    /// Prefetch what forwarding a packet on slot `slot` to this participant touches: the participant
    /// itself (its peer is inline), the slot's rewriter, and its peer's slot stream and SRTP key
    /// ([`crate::prefetch`]).
    fn prefetch_slot(&self, slot: usize) {
        crate::prefetch::prefetch(self);
        if let Some(rewriter) = self.rewriters.get(slot) {
            crate::prefetch::prefetch(rewriter);
        }
        if let Link::Peer(peer) = &self.link {
            peer.prefetch_slot(slot);
        }
    }

    fn publishes(&self) -> bool {
        let microphone = match &self.link {
            Link::Peer(peer) => peer.has_microphone(),
            Link::Source(_) => true,
        };
        self.params.can_publish
            && !self.params.muted
            && (!self.gate.ptt || self.gate.key_down)
            && microphone
    }

    fn subscribes(&self) -> bool {
        !self.gate.deafened && !self.slots().is_empty()
    }

    /// Hears a forwarding room through its mixer ([`JoinParams::hears_mix`]) rather than slots.
    fn mix_listener(&self) -> bool {
        self.params.hears_mix && !self.slots().is_empty()
    }

    fn peer(&self) -> Option<&Peer> {
        match &self.link {
            Link::Peer(peer) => Some(peer),
            Link::Source(_) => None,
        }
    }

    fn peer_mut(&mut self) -> Option<&mut Peer> {
        match &mut self.link {
            Link::Peer(peer) => Some(peer),
            Link::Source(_) => None,
        }
    }

    /// The slot streams it receives on (none for a source).
    fn slots(&self) -> &[peer::SlotStream] {
        self.peer().map_or(&[], Peer::slots)
    }
}

/// Both fan-outs (a forwarded packet's routes, a mixer tick's listeners) call this at the start of each
/// group of [`FAN_OUT_GROUP`](crate::prefetch::FAN_OUT_GROUP) subscribers, with the group's
/// `(subscriber, slot)`s: the kernel's sends since the last packet left every subscriber's state cold,
/// and naming a group's state to the CPU first overlaps its cache misses instead of taking them one after
/// another (docs/architecture.md, "The fan-out prefetches").
fn prefetch_subscribers(
    participants: &ParticipantMap,
    group: impl Iterator<Item = (ParticipantId, usize)>,
) {
    for (id, slot) in group {
        if let Some(p) = participants.get(&id) {
            p.prefetch_slot(slot);
        }
    }
}

/// `(id, publishes)` of `members`, for a forwarding room's mixer made now.
fn publishers(
    members: &[ParticipantId],
    participants: &ParticipantMap,
) -> Vec<(ParticipantId, bool)> {
    members
        .iter()
        .filter_map(|id| Some((*id, participants.get(id)?.publishes())))
        .collect()
}

pub struct MediaCore {
    config: CoreConfig,
    dtls_cert: DtlsCert,
    rng: SeqRng,
    participants: ParticipantMap,
    rooms: HashMap<u64, Room>,
    room_keys: HashMap<RoomId, u64>,
    next_room_key: u64,
    router: Router,
    /// What draining peers produced: datagrams, peer events still to act on, and peers' wake-ups.
    out: Outbox,
    events: VecDeque<CoreEvent>,
    /// When the room tick (mixers, slot selection, speaker reports) is next needed.
    tick: timers::RoomTick,
    last_now: Instant,
    stats: CoreStats,
    samples: Samples,
    /// Reused buffer for a mixer tick's packets.
    mix_out: Vec<MixPacket>,
    /// Rooms with a broadcast mount: their mixers are tapped (now, and when they are created here).
    broadcast_rooms: HashSet<RoomId>,
    broadcasts: VecDeque<BroadcastFrame>,
    /// Participants whose microphone packets are handed out as they arrive ([`Output::Microphone`]).
    tapped_participants: HashSet<ParticipantId>,
    microphones: VecDeque<MicPacket>,
    /// Rooms with shards elsewhere: their candidates are exported (now, and when they are created here).
    spanned_rooms: HashSet<RoomId>,
    trunk_out: VecDeque<trunk::TrunkMessage>,
    /// This core's name among the shards of a spanned room (`TrunkMessage::LossFloor`): from the seed,
    /// which differs per worker and per start.
    shard_id: u64,
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
            shard_id: SeqRng::new(config.seed ^ 0x9e37_79b9_7f4a_7c15).next_u64(),
            config,
            dtls_cert,
            participants: ParticipantMap::default(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            next_room_key: 0,
            router: Router::default(),
            out: Outbox::default(),
            events: VecDeque::new(),
            tick: timers::RoomTick::default(),
            last_now: now,
            stats: CoreStats::default(),
            samples: Samples::default(),
            mix_out: Vec::new(),
            broadcast_rooms: HashSet::new(),
            broadcasts: VecDeque::new(),
            tapped_participants: HashSet::new(),
            microphones: VecDeque::new(),
            spanned_rooms: HashSet::new(),
            trunk_out: VecDeque::new(),
        }
    }

    /// The rooms that have a broadcast mount (all of them, replacing the previous set). A room among them
    /// yields its full mix as [`Output::Broadcast`] every tick, from now on and whenever it is created on
    /// this core later; a room that left the set stops. A mixed room taps its mixer's shared encode; a
    /// forwarding room, which has no mix, gets a mixer that only feeds the mount (its publishers in, no
    /// listener out: one decode per talker and one encode per tick while the mount has listeners).
    pub fn set_broadcast_rooms(&mut self, now: Instant, rooms: HashSet<RoomId>) {
        self.last_now = now;
        self.broadcast_rooms = rooms;
        for room in self.rooms.values_mut() {
            let on = self.broadcast_rooms.contains(&room.id);
            let publishers = publishers(&room.members, &self.participants);
            room.set_broadcast(now, on, &publishers);
            room.arm_tick(&mut self.tick);
        }
    }

    /// The participants whose microphone packets are tapped (all of them, replacing the previous set): each
    /// packet such a participant publishes — past its gate (muted, push-to-talk), a RED packet's primary —
    /// is also handed out as [`Output::Microphone`], as received. A participant who is not on this core
    /// is tapped once it is added here.
    pub fn set_tapped_participants(&mut self, participants: HashSet<ParticipantId>) {
        self.tapped_participants = participants;
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

    /// The participants on this core: peers and sources, not the other shards' speakers it imports.
    pub fn participant_count(&self) -> usize {
        let remote: usize = self.rooms.values().map(|r| r.trunk.imported.len()).sum();
        self.participants.len() - remote
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

    /// Give back the buffer of a datagram [`poll_output`](Self::poll_output) returned, once it is sent: the
    /// core seals the next ones into it instead of allocating (forwarding allocates nothing per packet
    /// then). Optional; buffers not given back are simply freed.
    pub fn recycle(&mut self, contents: Vec<u8>) {
        self.out.recycle(contents);
    }

    /// The next output: datagrams first, then events, then the next wake-up.
    #[must_use = "the drive loop drains poll_output until it yields a timeout: an output dropped is a datagram not sent or an event lost"]
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.out.transmits.pop_front() {
            self.stats.datagrams_out += 1;
            self.stats.bytes_out += t.contents.len() as u64;
            return Output::Transmit(t);
        }
        if let Some(m) = self.trunk_out.pop_front() {
            if let trunk::TrunkMessage::Audio(_) = m {
                self.stats.trunk.packets_out += 1;
            }
            return Output::Trunk(m);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if let Some(f) = self.broadcasts.pop_front() {
            return Output::Broadcast(f);
        }
        if let Some(m) = self.microphones.pop_front() {
            return Output::Microphone(m);
        }
        // Peer timers may wait for an input (`timers::LAZY_SLACK`).
        let timer = self.out.next_wake().map(|t| t + timers::LAZY_SLACK);
        let next = match (timer, self.tick.wake()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // Nothing scheduled: an idle core wakes rarely.
            (None, None) => self.last_now + Duration::from_secs(1),
        };
        Output::Timeout(next)
    }
}

#[cfg(test)]
mod tests;
