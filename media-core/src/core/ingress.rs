//! Input from the network: datagrams demultiplexed to their peer, the peers' events processed, and each
//! microphone packet forwarded to its subscribers' slots and its room's mixer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::rtp::RtpPacket;

use super::timers::slot_events;
use super::{prefetch_subscribers, CoreEvent, Link, MediaCore, Participant, MAX_DATAGRAM};
use crate::core::net::{NetPath, Transport};
use crate::core::peer::{PeerError, PeerEvent, StreamStats};
use crate::core::router::{is_rtp, Route, RouteMiss};
use crate::ids::{ParticipantId, SlotIndex, Ssrc};
use crate::prefetch::FAN_OUT_GROUP;
use crate::red;
use crate::sfu::rewrite::SlotRewriter;
use crate::stats::{DropReason, Samples};

impl MediaCore {
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
                self.stats.datagram_in(data);
                self.stats.drop(DropReason::UnknownSource);
            }
        }
    }

    /// Whether `path` is bound to a peer: a STUN request over it was verified by that peer's ICE agent.
    pub fn path_bound(&self, path: &NetPath) -> bool {
        self.router.is_bound(path)
    }

    /// A datagram that arrived over `path` at `arrival` (the kernel's receive time) and was read at `now`.
    /// RTP that waited [`crate::CoreConfig::stale_rtp_after`] or longer is dropped unread
    /// ([`DropReason::Overloaded`]): the listeners' jitter buffers would throw it away as late, and
    /// decrypting, forwarding or mixing a backlog keeps a worker that fell behind behind (under overload its
    /// receive queue grew to seconds, and every listener heard the room seconds late: docs/loadtest.md,
    /// "A room of 2,000 on two cores"). STUN, DTLS and RTCP are always handled. Everything else is
    /// [`MediaCore::handle_datagram_via`] at `arrival`.
    pub fn handle_datagram_read(
        &mut self,
        now: Instant,
        arrival: Instant,
        path: NetPath,
        data: &[u8],
    ) {
        if now.saturating_duration_since(arrival) >= self.config.stale_rtp_after && is_rtp(data) {
            self.stats.datagram_in(data);
            return self.stats.drop(DropReason::Overloaded);
        }
        self.handle_datagram_via(arrival.min(now), path, data);
    }

    /// A datagram arrived over `path`: on one of the core's candidates (`path.local`, as advertised, over
    /// `path.transport`; for TCP one de-framed RFC 4571 frame) from `path.remote`. A datagram on an address
    /// that is not one of the candidates is dropped.
    ///
    /// `now` may be the datagram's arrival (the kernel's receive time) rather than when it was read, so
    /// that jitter buffers measure the network's jitter and not the caller's lateness; a time before the
    /// core's latest input is taken as that input's (the core's clock never goes back).
    ///
    /// Never inlined, like [`handle_timeout`](Self::handle_timeout): with the release profile's whole-program
    /// optimization the benchmarks inlined it, and `scripts/callgrind.py` found no entry point to count.
    #[inline(never)]
    pub fn handle_datagram_via(&mut self, now: Instant, path: NetPath, data: &[u8]) {
        let now = now.max(self.last_now);
        self.last_now = now;
        // Work due by now runs first, as a timeout at `now` would have.
        self.run_due(now);
        self.stats.datagram_in(data);
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
        let Some(p) = self
            .participants
            .get_mut(&id)
            .and_then(Participant::peer_mut)
        else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        if let Route::Stun(_) = route {
            // The path is learned only from a request the peer's ICE agent authenticates, and only if
            // no other live peer is using it (credentials for one's own peer do not prove the source).
            if !p.verifies_stun(now, path, data) {
                return self.stats.drop(DropReason::BadIntegrity);
            }
            if let Err(taken) = self.router.learn(now, path, id) {
                tracing::debug!(participant = %id, owner = %taken.owner, %source,
                    transport = path.transport.as_str(),
                    "verified STUN from another peer's address dropped");
                return self.stats.drop(DropReason::Misrouted);
            }
        }
        match p.handle_datagram(now, path, data) {
            Ok(None) => {}
            Ok(Some(cause)) => self.stats.path_moved(cause),
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

    pub(super) fn process_pending(&mut self, now: Instant) {
        while let Some((id, event)) = self.out.events.pop_front() {
            match event {
                PeerEvent::Connected => self.events.push_back(CoreEvent::Connected(id)),
                PeerEvent::Disconnected(reason) => self.disconnect(id, reason),
                PeerEvent::Rtp(packet) => self.forward(now, id, packet),
                PeerEvent::Stats(s) => {
                    if let Some(d) = s.downstream {
                        self.record_downstream(now, id, d);
                    }
                    if let Some(u) = s.upstream {
                        self.record_upstream(now, id, u);
                    }
                    self.record_stream_stats(s)
                }
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

    /// A peer's microphone packet: RED unwrapped, then delivered like any audio of the room.
    fn forward(&mut self, now: Instant, from: ParticipantId, packet: RtpPacket) {
        self.stats.rtp_in += 1;
        let Some(peer) = self.participants.get(&from).and_then(Participant::peer) else {
            return;
        };
        // A RED packet (RFC 2198) is unwrapped: its primary goes where a plain Opus packet would, its
        // redundancy to RED subscribers and the mixer. Anything malformed is a counted drop.
        let opus_pt = peer.mic_opus_pt().map(|pt| *pt);
        let is_red = peer
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
        let payload: Arc<[u8]> = match &red {
            Some(r) => Arc::from(r.primary),
            None => packet.payload.clone(),
        };
        if crate::mixer::opus_packet_has_fec(&payload) {
            self.stats.rtp_fec_in += 1;
        }
        // Without the audio-level extension (a WHIP encoder's packets, say) the level is measured by a
        // decode, so that the talker can win a slot and be listed as speaking; only for a participant
        // that publishes (the packet goes nowhere otherwise).
        let level = match packet.header.ext_vals.audio_level {
            Some(level) => Some(level),
            None => self
                .participants
                .get_mut(&from)
                .filter(|p| p.publishes())
                .and_then(Participant::peer_mut)
                .and_then(|peer| peer.measure_mic_level(now, &payload))
                .map(|level| {
                    self.stats.rtp_levels_measured += 1;
                    -(level.min(127) as i8)
                }),
        };
        let audio = Audio {
            source: Ssrc(*packet.header.ssrc),
            seq: *packet.seq_no,
            ts: packet.header.timestamp,
            arrival: packet.timestamp,
            payload,
            red,
            level,
            vad: packet.header.ext_vals.voice_activity,
        };
        self.deliver(now, from, audio);
    }

    /// One packet of a participant's audio (a peer's microphone or a server-side source) to its room:
    /// levels and speakers, the mixer, and every (subscriber, slot) it is routed to.
    pub(super) fn deliver(&mut self, now: Instant, from: ParticipantId, audio: Audio<'_>) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        if !p.publishes() {
            return self.stats.drop(DropReason::NotPublishing);
        }
        let Audio {
            source,
            seq,
            ts,
            arrival,
            payload,
            red,
            level,
            vad,
        } = audio;
        let new_source = p.ssrc.replace(source) != Some(source);
        let onset = std::mem::take(&mut p.gate.onset);
        let level_dbov = level.map(|l| l.unsigned_abs().min(127)).unwrap_or(127);
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        // Its first packet, or a new SSRC: its stream gets the room's loss feedback.
        if new_source {
            p.apply_loss_floor(room.loss_feedback.floor);
        }
        // A recorded participant's packet as received (a peer's microphone or a server-side source).
        if self.tapped_participants.contains(&from) {
            self.microphones.push_back(super::MicPacket {
                participant: from,
                room: room.id.clone(),
                timestamp: ts,
                samples: crate::mixer::opus_packet_info(&payload).map(|(n, _)| n),
                payload: payload.clone(),
                level: level.map(|l| l.unsigned_abs().min(127)),
            });
        }
        room.selector.on_audio(now, from, level_dbov, vad);
        room.dominant.on_level(from, now, level_dbov);
        super::trunk::export(
            room,
            from,
            source,
            seq,
            ts,
            level,
            &payload,
            &mut self.trunk_out,
        );
        let mixed = room.mixer().is_some();
        // A mixed room's mixer, or a forwarding room's mount-only one (the packet is forwarded too).
        if let Some(mixer) = room.input_mixer_mut() {
            let pushed = mixer.push(
                now,
                from,
                source,
                seq,
                ts,
                payload.clone(),
                level.map(|l| l.unsigned_abs().min(127)),
                &mut self.stats.mix,
            );
            if pushed.is_err() {
                self.stats.drop(DropReason::Malformed);
            } else if let Some(r) = &red {
                mixer.push_redundant(from, seq, ts, &r.redundant);
            }
            if mixed {
                room.arm_tick(&mut self.tick);
                return;
            }
        }
        // Forwarding: the frames before this one, as the server received them, for RED subscribers that
        // need more redundancy than the speaker carried. No subscriber's depth exceeds the history's, so
        // a packet that carries that many needs none of it. (A mixed room keeps none: its mixer sends
        // its own.)
        let carried: &[red::RedundantFrame<'_>] = red.as_ref().map_or(&[], |r| &r.redundant);
        let history = (carried.len() < red::HISTORY_FRAMES).then(|| p.red_history.clone());
        p.red_history.push(source, seq, ts, &payload);
        // The first packet after the gate opened (key down, unmute) holds no slot yet: select now, so a
        // free slot takes it at once and the onset is heard, not dropped until the next selection tick.
        if onset && room.selector.routes(from).is_empty() {
            // In a spatial room the speaker was no speaker at the last refresh (its gate was closed): make
            // the audible sets current now rather than at the positions' 100 ms pace, so the selection
            // routes the key-down frame to the listeners in range (and tells them where it is).
            if room.audibility.is_spatial() {
                room.audibility.changed(now);
                super::timers::refresh_audibility(now, room, &self.participants, &mut self.events);
            }
            if room.selector.update_in(now, Some(&room.audibility)) {
                slot_events(&mut room.selector, &self.participants, &mut self.events);
            }
        }
        room.arm_tick(&mut self.tick);
        let routes = room.selector.routes(from);
        if routes.is_empty() {
            self.stats.rtp_unrouted += 1;
            return;
        }
        // Plain Opus for subscribers without RED (a RED packet's primary); RED subscribers get RED with
        // their payload types, one encoding per distinct (Opus PT, kept blocks). Their redundancy
        // reaches one frame back, two for a subscriber that states loss (as the mixer sends its mix):
        // what the speaker's RED carries, and where that is less (plain Opus, Chrome's one frame) the
        // speaker's previous frames as the server got them, as far as they run into the packet without
        // a gap (none after a pause).
        let mut red_variants: Vec<(u8, u32, Arc<[u8]>)> = Vec::new();
        let (older, older_count) = history
            .as_ref()
            .map(|h| h.redundancy(source, seq, ts, carried))
            .unwrap_or_default();
        // Oldest first: the server's copies, then what the packet carries (fewer than the history's
        // frames whenever there are copies), on the stack.
        let mut joined = [red::RedundantFrame::default(); 2 * red::HISTORY_FRAMES];
        let redundancy: &[red::RedundantFrame<'_>] = if older_count == 0 {
            carried
        } else {
            let n = older_count + carried.len();
            joined[..older_count].copy_from_slice(&older[..older_count]);
            joined[older_count..n].copy_from_slice(carried);
            &joined[..n]
        };
        // The server's copies are the oldest `older_count` of `redundancy`.
        let added_mask = (1u32 << older_count) - 1;
        let primary: &[u8] = red.as_ref().map_or(&payload, |r| r.primary);
        for (i, &(sub, SlotIndex(slot))) in routes.iter().enumerate() {
            if i % FAN_OUT_GROUP == 0 {
                let group = routes[i..].iter().take(FAN_OUT_GROUP);
                prefetch_subscribers(
                    &self.participants,
                    group.map(|&(sub, SlotIndex(slot))| (sub, slot as usize)),
                );
            }
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            let frames_back = s.red_frames_back;
            let Link::Peer(peer) = &mut s.link else {
                continue;
            };
            if !peer.is_connected() {
                continue;
            }
            let slot = slot as usize;
            let Some(rewriter) = s.rewriters.get_mut(slot) else {
                continue;
            };
            let restarts = (rewriter.switches(), rewriter.retimes());
            let Some((out_seq, out_ts)) = rewriter.rewrite(now, source, seq, ts) else {
                self.stats.drop(DropReason::StaleOrDuplicate);
                continue;
            };
            self.stats.slot_switches += rewriter.switches() - restarts.0;
            self.stats.slot_retimes += rewriter.retimes() - restarts.1;
            // Also with no frame to add (the first after a pause): a RED subscriber is sent RED
            // throughout, as the mixer's packets reach it.
            let red_payload = match peer.slots().get(slot) {
                Some(stream) if stream.red_pt.is_some() => {
                    let (body, kept) = red_variant(
                        &mut red_variants,
                        primary,
                        redundancy,
                        frames_back.max(carried.len()),
                        ts,
                        *stream.pt,
                        rewriter,
                    );
                    if red.is_none() || kept & added_mask != 0 {
                        self.stats.rtp_red_added += 1;
                    }
                    Some(body)
                }
                _ => None,
            };
            let body = red_payload.as_ref().unwrap_or(&payload);
            let is_red = red_payload.is_some();
            // The direct path (header template, the peer's own SRTP sender); str0m's while it is not
            // available for this peer.
            let result = match peer.send_slot(
                slot,
                out_seq,
                out_ts,
                body,
                is_red,
                level,
                vad,
                source,
                &mut self.out,
            ) {
                Ok(true) => Ok(()),
                Ok(false) => peer
                    .write_slot(
                        slot, out_seq, out_ts, arrival, body, is_red, level, vad, source,
                    )
                    .and_then(|()| peer.drive(now, &mut self.out)),
                Err(e) => Err(e),
            };
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

/// One packet of a participant's audio on its way into the room.
pub(super) struct Audio<'a> {
    /// The stream it belongs to (a peer's microphone SSRC; a source's made-up one).
    pub source: Ssrc,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp, 48 kHz.
    pub ts: u32,
    /// When it arrived (the wall clock of the forwarded packet).
    pub arrival: Instant,
    /// Plain Opus (a RED packet's primary).
    pub payload: Arc<[u8]>,
    /// A RED packet's parse, for its redundancy.
    pub red: Option<red::RedPayload<'a>>,
    /// RFC 6464 level (−dBov, negative), if known.
    pub level: Option<i8>,
    pub vad: Option<bool>,
}

/// The RED payload for one subscriber's slot: of the `redundant` frames (oldest first) the `newest` ones
/// that the slot's current source covers (none from before a speaker switch), labelled with the
/// subscriber's Opus payload type, and which frames it kept (bit i: `redundant[i]`). Encoded once per
/// distinct (payload type, kept frames) and shared through `variants`.
fn red_variant(
    variants: &mut Vec<(u8, u32, Arc<[u8]>)>,
    primary: &[u8],
    redundant: &[red::RedundantFrame<'_>],
    newest: usize,
    ts: u32,
    opus_pt: u8,
    rewriter: &SlotRewriter,
) -> (Arc<[u8]>, u32) {
    let older = redundant.len().saturating_sub(newest);
    let mut kept = 0u32;
    for (i, f) in redundant.iter().enumerate().take(32) {
        if i >= older && rewriter.covers(red::frame_ts(ts, f)) {
            kept |= 1 << i;
        }
    }
    if let Some((_, _, p)) = variants
        .iter()
        .find(|(pt, k, _)| *pt == opus_pt && *k == kept)
    {
        return (p.clone(), kept);
    }
    let mut out = Vec::with_capacity(primary.len() + 8 + redundant.len() * 64);
    red::encode(
        opus_pt,
        primary,
        redundant,
        |i, _| i < 32 && kept & (1 << i) != 0,
        &mut out,
    );
    let payload: Arc<[u8]> = Arc::from(out);
    variants.push((opus_pt, kept, payload.clone()));
    (payload, kept)
}
