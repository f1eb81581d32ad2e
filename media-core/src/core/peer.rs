//! One participant's WebRTC peer on the server side: a str0m [`Rtc`] in ICE-lite, RTP mode.
//!
//! The first audio m-line of the client's offer is its microphone; every further audio m-line the client
//! receives on is one of its slots. The peer only wraps str0m: what to forward where is decided by the room.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, FormatParams, PayloadParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::Receive;
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig, RtcError};

use crate::core::answer::finish_answer;
use crate::core::net::{LocalCandidate, NetPath, NetTransmit, Transport};
use crate::core::outbox::Outbox;
use crate::core::router::{is_nomination, is_stun};
use crate::ids::{ParticipantId, Ssrc};
use crate::sfu::slots::MAX_SLOTS;

/// The mids of the m-lines of an SDP (offer or answer; str0m does not name its media-line type) that
/// offer RED wrapping Opus.
macro_rules! red_mids {
    ($sdp:expr) => {
        $sdp.media_lines
            .iter()
            .filter(|m| {
                m.rtp_params()
                    .iter()
                    .any(|p| p.spec().codec == str0m::format::Codec::Opus && p.red().is_some())
            })
            .map(|m| m.mid())
            .collect::<Vec<str0m::media::Mid>>()
    };
}
#[cfg(any(test, feature = "client"))]
pub(crate) use red_mids;

/// Why a peer could not be created or driven.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    #[error("the offer has no usable audio m-line for {0}")]
    MissingMedia(&'static str),
    /// A second offer that is no ICE restart of the first (see [`Peer::restart_ice`]).
    #[error("{0}")]
    NotIceRestart(&'static str),
    #[error("webrtc: {0}")]
    Rtc(#[from] RtcError),
    #[error("the webrtc stack panicked")]
    Panicked,
}

/// A datagram to send (the test client's output; the core's is [`NetTransmit`], which names its path).
#[derive(Debug)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What a peer reports to its owner while being drained.
///
/// The RTP variant is large; it is kept inline because the events live in a reused queue, where boxing would
/// cost an allocation per packet.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum PeerEvent {
    /// DTLS-SRTP is established.
    Connected,
    /// ICE consent was lost, the DTLS handshake failed, or the peer closed.
    Disconnected(&'static str),
    /// An RTP packet arrived on the microphone m-line.
    Rtp(RtpPacket),
    /// Periodic RTCP-derived statistics of one stream.
    Stats(StreamStats),
}

/// What one RTCP statistics report of a stream says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    pub rtt: Option<Duration>,
    /// Interarrival jitter of an incoming stream.
    pub jitter: Option<Duration>,
    /// NACKs received for an outgoing stream since the last report.
    pub nacks_received: u64,
    /// NACKs sent for an incoming stream since the last report.
    pub nacks_sent: u64,
}

/// How often str0m reports stream statistics.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Settings for creating a peer.
pub struct PeerParams<'a> {
    /// The address in the ICE candidate: the socket's bound (or explicitly mapped public) address. The
    /// only candidate of [`Peer::from_offer`]; [`Peer::from_offer_with_candidates`] takes a list instead.
    pub candidate_addr: SocketAddr,
    /// The certificate shared by every peer of the worker.
    pub dtls_cert: &'a DtlsCert,
    /// Slot streams to send (the room's K); extra recvonly m-lines in the offer stay unused.
    pub slots: usize,
}

/// One of the subscriber's outgoing slot streams.
#[derive(Debug)]
pub struct SlotStream {
    pub mid: Mid,
    pub ssrc: Ssrc,
    /// The Opus payload type negotiated on this m-line.
    pub pt: Pt,
    /// The RED (RFC 2198) payload type, when the subscriber offered RED on this m-line.
    pub red_pt: Option<Pt>,
}

pub struct Peer {
    id: ParticipantId,
    rtc: Rtc,
    ufrag: String,
    /// The client's ICE ufrag and the m-lines of its offer: an ICE restart offer changes the first and
    /// keeps the second.
    remote_ufrag: Option<String>,
    mlines: usize,
    mic_mid: Option<Mid>,
    mic_pt: Option<Pt>,
    /// The RED payload type the microphone may send, when the client offered RED on it.
    mic_red_pt: Option<Pt>,
    slots: Vec<SlotStream>,
    connected: bool,
    /// When the peer next needs a timeout, as scheduled in the core's [`Outbox`]; `None` while no wake-up
    /// is pending. The only record of the peer's timer: the outbox's heap entries are checked against it.
    wake: Option<Instant>,
    created: Instant,
    /// Cumulative NACK counts per (mid, outgoing) from str0m's last stats, to report differences.
    nack_totals: Vec<(Mid, bool, u64)>,
    /// The path of the client's latest verified nomination (a binding request with USE-CANDIDATE that our
    /// ICE agent authenticated): DTLS, RTP and RTCP go there. str0m's ICE-lite agent keeps sending to the
    /// highest-priority pair ever nominated until that pair has had no check for 15 s, so after a NAT
    /// rebinding (same client candidate, same priority, new source port) it would send to the dead
    /// address for 15 s; the controlling client's latest nomination is where it wants media
    /// (RFC 8445 §8.1.1). STUN replies still go where str0m sends them: to each request's source.
    client_path: Option<NetPath>,
    /// Transaction ids of the latest verified nominations, newest last (at most [`NOMINATIONS_KEPT`]).
    /// MESSAGE-INTEGRITY does not cover the source address: someone who sees a client's check can
    /// resend it from elsewhere, and str0m takes the copy. A copy carries a transaction id already seen,
    /// so it never moves the media; a new check from the client does.
    nominations: std::collections::VecDeque<[u8; 12]>,
}

/// How many nominations' transaction ids a peer remembers to recognise a replayed one: at one check
/// every few seconds, the last half minute (the ICE consent timeout).
const NOMINATIONS_KEPT: usize = 16;

impl Peer {
    /// Create a peer from a client's offer, with one UDP host candidate at `params.candidate_addr`.
    /// Returns the peer and the SDP answer.
    pub fn from_offer(
        now: Instant,
        id: ParticipantId,
        params: &PeerParams<'_>,
        offer_sdp: &str,
    ) -> Result<(Peer, String), PeerError> {
        let candidates = [LocalCandidate::udp(params.candidate_addr)];
        Self::from_offer_with_candidates(now, id, params, &candidates, offer_sdp)
    }

    /// Create a peer from a client's offer, offering `candidates` (in this order; see
    /// [`crate::core::net::offer_order`]) instead of `params.candidate_addr`. Returns the peer and the SDP
    /// answer, which lists every candidate.
    pub fn from_offer_with_candidates(
        now: Instant,
        id: ParticipantId,
        params: &PeerParams<'_>,
        candidates: &[LocalCandidate],
        offer_sdp: &str,
    ) -> Result<(Peer, String), PeerError> {
        // The most hostile input a peer takes: parsed under the same guard as every other str0m call.
        let offer = parse_offer(offer_sdp, SdpOffer::from_sdp_string)?;
        let (mut peer, answer) = guard(|| Self::from_parsed(now, id, params, candidates, offer))??;
        peer.remote_ufrag = offer_ufrag(offer_sdp).map(str::to_owned);
        peer.mlines = mline_count(offer_sdp);
        Ok((peer, finish_answer(offer_sdp, &answer)))
    }

    /// Answers the client's ICE restart offer on this peer (RFC 8445 §9): new ICE credentials on both
    /// sides, the same m-lines, slots, SSRCs and DTLS association. str0m flushes the ICE agent's pairs
    /// and answers with fresh local credentials; the caller re-keys its routing from the returned old
    /// ufrag to [`Peer::ufrag`]. An offer that keeps the client's ICE credentials (a renegotiation) or
    /// changes the m-lines is refused with [`PeerError::NotIceRestart`] and leaves the peer as it was.
    pub fn restart_ice(&mut self, offer_sdp: &str) -> Result<(String, String), PeerError> {
        let ufrag = offer_ufrag(offer_sdp)
            .ok_or(PeerError::NotIceRestart("the offer has no a=ice-ufrag"))?;
        if self.remote_ufrag.as_deref() == Some(ufrag) {
            return Err(PeerError::NotIceRestart(
                "a second offer must be an ICE restart (new ICE credentials); renegotiation is not supported",
            ));
        }
        if mline_count(offer_sdp) != self.mlines {
            return Err(PeerError::NotIceRestart(
                "an ICE restart offer must keep the m-lines of the first offer",
            ));
        }
        let offer = parse_offer(offer_sdp, SdpOffer::from_sdp_string)?;
        let rtc = &mut self.rtc;
        let answer = guard(|| rtc.sdp_api().accept_offer(offer))??;
        let local = self.rtc.direct_api().local_ice_credentials().ufrag;
        let old = std::mem::replace(&mut self.ufrag, local);
        self.remote_ufrag = Some(ufrag.to_owned());
        // The ICE state is flushed (RFC 8445 §9): media waits for a nomination under the new credentials,
        // as the router forgets the paths learned under the old ones.
        self.client_path = None;
        self.nominations.clear();
        Ok((old, finish_answer(offer_sdp, &answer.to_sdp_string())))
    }

    /// The peer and str0m's answer as str0m writes it (see [`finish_answer`] for what it lacks).
    pub(super) fn from_parsed(
        now: Instant,
        id: ParticipantId,
        params: &PeerParams<'_>,
        candidates: &[LocalCandidate],
        offer: SdpOffer,
    ) -> Result<(Peer, String), PeerError> {
        let red_mids = red_mids!(offer);
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = opus_only(
            Rtc::builder()
                .set_ice_lite(true)
                .set_dtls_cert(params.dtls_cert.clone())
                .set_local_ice_credentials(creds),
            true,
        )
        .set_stats_interval(Some(STATS_INTERVAL))
        .build(now);
        for local in candidates {
            let candidate = local.ice().map_err(PeerError::BadSdp)?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc.sdp_api().accept_offer(offer)?;

        // The m-lines in offer order; str0m reports MediaAdded only once connected, so read the answer.
        let audio_mids: Vec<(Mid, Direction)> = answer
            .media_lines
            .iter()
            .filter_map(|line| {
                let media = rtc.media(line.mid())?;
                (media.kind() == MediaKind::Audio).then(|| (media.mid(), media.direction()))
            })
            .collect();
        let mut mids = audio_mids.into_iter();
        let (mic_mid, mic_dir) = mids
            .next()
            .ok_or(PeerError::MissingMedia("the microphone"))?;
        let mic_mid =
            matches!(mic_dir, Direction::RecvOnly | Direction::SendRecv).then_some(mic_mid);
        let mic_pt = mic_mid.and_then(|m| opus_pt(&rtc, m));
        let mic_red_pt = mic_mid
            .filter(|m| red_mids.contains(m))
            .and_then(|m| red_pt(&rtc, m));

        let mut slots = Vec::with_capacity(params.slots);
        for (mid, dir) in mids {
            if slots.len() == params.slots.min(MAX_SLOTS) {
                break;
            }
            if !matches!(dir, Direction::SendOnly | Direction::SendRecv) {
                continue;
            }
            let Some(pt) = opus_pt(&rtc, mid) else {
                continue;
            };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            let ssrc = Ssrc(*tx.ssrc());
            let red_pt = red_mids.contains(&mid).then(|| red_pt(&rtc, mid)).flatten();
            slots.push(SlotStream {
                mid,
                ssrc,
                pt,
                red_pt,
            });
        }
        if params.slots > 0 && slots.is_empty() {
            return Err(PeerError::MissingMedia(
                "the slots (recvonly audio m-lines with Opus)",
            ));
        }

        let peer = Peer {
            id,
            rtc,
            ufrag,
            remote_ufrag: None,
            mlines: 0,
            mic_mid,
            mic_pt,
            mic_red_pt,
            slots,
            connected: false,
            wake: None,
            created: now,
            nack_totals: Vec::new(),
            client_path: None,
            nominations: std::collections::VecDeque::with_capacity(NOMINATIONS_KEPT),
        };
        Ok((peer, answer.to_sdp_string()))
    }

    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// The local ICE username fragment: what the router demultiplexes STUN by.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The subscriber's outgoing slot streams, in offer order.
    pub fn slots(&self) -> &[SlotStream] {
        &self.slots
    }

    /// Whether DTLS-SRTP is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the peer is still not connected more than `timeout` after its offer.
    pub fn connect_timed_out(&self, now: Instant, timeout: Duration) -> bool {
        !self.connected && now.saturating_duration_since(self.created) > timeout
    }

    /// Record a wake-up at `at`; `true` if it is earlier than the pending one (or none was pending), so the
    /// outbox must hold an entry for it.
    pub(crate) fn wake_earlier(&mut self, at: Instant) -> bool {
        if self.wake.is_some_and(|w| w <= at) {
            return false;
        }
        self.wake = Some(at);
        true
    }

    /// Whether a timer entry for `at` is this peer's live wake-up; if so it is consumed (none is pending
    /// any more).
    pub(crate) fn take_wake(&mut self, at: Instant) -> bool {
        if self.wake != Some(at) {
            return false;
        }
        self.wake = None;
        true
    }

    /// Whether the microphone m-line lets the client send to us.
    pub fn has_microphone(&self) -> bool {
        self.mic_mid.is_some()
    }

    /// The Opus payload type the microphone sends.
    pub fn mic_opus_pt(&self) -> Option<Pt> {
        self.mic_pt
    }

    /// The RED payload type the microphone may send (the client offered RED).
    pub fn mic_red_pt(&self) -> Option<Pt> {
        self.mic_red_pt
    }

    /// Feed a datagram from the network, received over `path`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        path: NetPath,
        data: &[u8],
    ) -> Result<(), PeerError> {
        let Some(input) = net_input(now, path, data) else {
            // Not STUN, DTLS, RTP or RTCP: str0m refuses to classify it.
            return Ok(());
        };
        let rtc = &mut self.rtc;
        if is_nomination(data) && guard(|| rtc.accepts(&input)).unwrap_or(false) {
            self.nominated(path, data);
        }
        let rtc = &mut self.rtc;
        guard(|| rtc.handle_input(input))??;
        Ok(())
    }

    /// The client nominated `path` in `request`, which our ICE agent verified: media follows it, unless
    /// the request is a copy of one already taken (a replay from another address).
    fn nominated(&mut self, path: NetPath, request: &[u8]) {
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&request[8..20]);
        if self.nominations.contains(&transaction) {
            return;
        }
        if self.nominations.len() == NOMINATIONS_KEPT {
            self.nominations.pop_front();
        }
        self.nominations.push_back(transaction);
        if self.client_path == Some(path) {
            return;
        }
        if let Some(old) = self.client_path {
            tracing::debug!(participant = %self.id, from = %old.remote, to = %path.remote,
                transport = path.transport.as_str(), "the client moved its media to another path");
        }
        self.client_path = Some(path);
    }

    /// Where DTLS, RTP and RTCP go: the path of the client's latest verified nomination, if any.
    pub fn client_path(&self) -> Option<NetPath> {
        self.client_path
    }

    /// Whether this peer's ICE agent takes a STUN message from `source` as its own: a binding request naming
    /// our ufrag and the client's, with MESSAGE-INTEGRITY under our ICE password (str0m's `Rtc::accepts`).
    /// Only then may the router learn `source` for this peer.
    pub fn verifies_stun(&self, now: Instant, path: NetPath, data: &[u8]) -> bool {
        let Some(input) = net_input(now, path, data) else {
            return false;
        };
        let rtc = &self.rtc;
        guard(|| rtc.accepts(&input)).unwrap_or(false)
    }

    /// Advance time.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        let rtc = &mut self.rtc;
        guard(|| rtc.handle_input(Input::Timeout(now)))??;
        Ok(())
    }

    /// Write one forwarded RTP packet into slot `slot`, with the speaker's SSRC as CSRC: a RED payload
    /// (with the slot's RED payload type) when `red` is set, which the caller does only for a slot with a
    /// RED payload type, else plain Opus. The caller drains afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn write_slot(
        &mut self,
        slot: usize,
        seq: u64,
        ts: u32,
        wallclock: Instant,
        payload: &std::sync::Arc<[u8]>,
        red: bool,
        audio_level: Option<i8>,
        voice_activity: Option<bool>,
        csrc: Ssrc,
    ) -> Result<(), PeerError> {
        let mut ext = ExtensionValues::default();
        if let Some(level) = audio_level {
            ext.audio_level = Some(level);
            ext.voice_activity = Some(voice_activity.unwrap_or(level > -127));
        }
        self.write(slot, seq, ts, wallclock, payload, red, ext, &[csrc.0])
    }

    /// Write one mixed packet into the first slot stream: `contributors` become the CSRCs (and their RFC 6465
    /// levels where negotiated), `level` the packet's own audio level. The caller drains afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn write_mix(
        &mut self,
        seq: u64,
        ts: u32,
        wallclock: Instant,
        payload: &std::sync::Arc<[u8]>,
        red: bool,
        level: u8,
        contributors: &crate::speakers::csrc_levels::Contributors,
    ) -> Result<(), PeerError> {
        let mut ext = ExtensionValues {
            audio_level: Some(-(level.min(127) as i8)),
            voice_activity: Some(level < 127),
            ..Default::default()
        };
        contributors.set_levels(&mut ext);
        self.write(
            0,
            seq,
            ts,
            wallclock,
            payload,
            red,
            ext,
            contributors.ssrcs(),
        )
    }

    /// Write one RTP packet into slot stream `slot` (ignored if the subscriber has no such slot).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        slot: usize,
        seq: u64,
        ts: u32,
        wallclock: Instant,
        payload: &std::sync::Arc<[u8]>,
        red: bool,
        ext: ExtensionValues,
        csrcs: &[u32],
    ) -> Result<(), PeerError> {
        let Some(stream) = self.slots.get(slot) else {
            return Ok(());
        };
        let pt = match (red, stream.red_pt) {
            (false, _) => stream.pt,
            (true, Some(red_pt)) => red_pt,
            // A RED payload for a subscriber without RED would not decode: never sent.
            (true, None) => return Ok(()),
        };
        let mid = stream.mid;
        let write = RtpWrite::new(pt, SeqNo::from(seq), ts, wallclock, payload.clone())
            .ext_vals(ext)
            .csrc(csrcs);
        let rtc = &mut self.rtc;
        guard(|| {
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.write_rtp(write);
            }
        })?;
        Ok(())
    }

    /// Drain the peer after a mutation and schedule its next wake-up in `out`.
    ///
    /// str0m's pacer releases written RTP only on the next timeout, which it asks for at once: feed that
    /// timeout right here (bounded) instead of a round trip through the timer heap, so a forwarded packet
    /// leaves in the same pass that received it.
    pub(crate) fn drive(&mut self, now: Instant, out: &mut Outbox) -> Result<(), PeerError> {
        let mut next = self.drain(out)?;
        for _ in 0..4 {
            if next > now {
                break;
            }
            self.handle_timeout(now)?;
            next = self.drain(out)?;
        }
        if !self.is_alive() {
            out.events
                .push_back((self.id, PeerEvent::Disconnected("closed")));
        }
        out.schedule(self, next);
        Ok(())
    }

    /// Drain str0m until it returns its next timeout: datagrams and events go to `out`.
    fn drain(&mut self, out: &mut Outbox) -> Result<Instant, PeerError> {
        let id = self.id;
        let client_path = self.client_path;
        let Outbox {
            transmits, events, ..
        } = out;
        loop {
            let rtc = &mut self.rtc;
            let output = guard(|| rtc.poll_output())??;
            match output {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    // Chorus offers UDP and plain TCP only, so str0m sends on nothing else.
                    if let Some(transport) = Transport::from_protocol(t.proto) {
                        let mut path = NetPath {
                            transport,
                            local: t.source,
                            remote: t.destination,
                        };
                        if let Some(nominated) = client_path.filter(|_| !is_stun(&t.contents)) {
                            path = nominated;
                        }
                        transmits.push_back(NetTransmit {
                            transport: path.transport,
                            source: path.local,
                            destination: path.remote,
                            contents: t.contents.into(),
                        });
                    }
                }
                Output::Event(e) => match e {
                    Event::Connected => {
                        self.connected = true;
                        events.push_back((id, PeerEvent::Connected));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        events.push_back((id, PeerEvent::Disconnected("ice consent lost")));
                    }
                    Event::Closed => events.push_back((id, PeerEvent::Disconnected("closed"))),
                    Event::RtpPacket(p) => {
                        let pt = Some(p.header.payload_type);
                        let on_mic = self.mic_mid.is_some()
                            && (self.mic_pt == pt
                                || (self.mic_red_pt.is_some() && self.mic_red_pt == pt))
                            && self
                                .rtc
                                .direct_api()
                                .stream_rx(&p.header.ssrc)
                                .map(|s| s.mid())
                                == self.mic_mid;
                        if on_mic {
                            events.push_back((id, PeerEvent::Rtp(p)));
                        }
                    }
                    Event::MediaEgressStats(s) => {
                        let nacks_received = self.nack_delta(s.mid, true, s.nacks);
                        let stats = StreamStats {
                            rtt: s.rtt,
                            nacks_received,
                            ..Default::default()
                        };
                        events.push_back((id, PeerEvent::Stats(stats)));
                    }
                    Event::MediaIngressStats(s) => {
                        let nacks_sent = self.nack_delta(s.mid, false, s.nacks);
                        let stats = StreamStats {
                            rtt: s.rtt,
                            jitter: (s.packets > 0)
                                .then(|| Duration::from_secs_f64(s.jitter as f64 / 48_000.0)),
                            nacks_sent,
                            ..Default::default()
                        };
                        events.push_back((id, PeerEvent::Stats(stats)));
                    }
                    _ => {}
                },
            }
        }
    }

    /// The growth of a cumulative NACK count since the last report of the same stream.
    fn nack_delta(&mut self, mid: Mid, outgoing: bool, total: u64) -> u64 {
        match self
            .nack_totals
            .iter_mut()
            .find(|(m, o, _)| *m == mid && *o == outgoing)
        {
            Some((_, _, last)) => {
                let delta = total.saturating_sub(*last);
                *last = total;
                delta
            }
            None => {
                self.nack_totals.push((mid, outgoing, total));
                total
            }
        }
    }

    /// Whether str0m still considers the peer alive.
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }
}

/// Local header-extension ids (the remote's ids win where it offers the same extension).
const AUDIO_LEVEL_EXT_ID: u8 = 1;
const MID_EXT_ID: u8 = 4;
const CSRC_LEVELS_EXT_ID: u8 = 12;

/// The Opus payload type Chorus offers (the value browsers use).
const OPUS_PT: u8 = 111;

/// The RED payload type Chorus offers (the value Chrome uses); str0m takes the remote's when it differs.
const RED_PT: u8 = 63;

/// RTP mode with Opus as the only codec: 48 kHz, `minptime=10`, in-band FEC, and DTX welcome (the fmtp
/// asks the remote sender to stop sending in silence; forwarding passes the timestamp gaps through). With
/// `red`, RFC 2198 redundancy (`red/48000/2`, fmtp `111/111`) is offered, or accepted where the remote
/// offers it; str0m keeps it only when both sides have it, and lists it before Opus in the m-line (libwebrtc
/// sends RED only then).
pub(crate) fn opus_only(config: RtcConfig, red: bool) -> RtcConfig {
    let config = config
        .set_rtp_mode(true)
        .clear_codecs()
        .set_stats_interval(None);
    // Header extensions: only what audio needs. The audio level (RFC 6464) drives slot selection and
    // speaker detection; the MID maps a new SSRC to its m-line; RFC 6465 carries mixed streams' per-talker
    // levels (at a free id; str0m moves it to the remote's id when offered). No transport-wide sequence
    // numbers or absolute send time: Chorus runs no bandwidth estimation for audio, and negotiating TWCC
    // makes every receiver send a feedback packet every 50 ms (≈ 20 datagrams/s each to decrypt).
    let mut exts = ExtensionMap::empty();
    exts.set(AUDIO_LEVEL_EXT_ID, Extension::AudioLevel);
    exts.set(MID_EXT_ID, Extension::RtpMid);
    exts.set(
        CSRC_LEVELS_EXT_ID,
        crate::speakers::csrc_levels::extension(),
    );
    let mut config = config.set_extension_map(exts);
    if red {
        *config.codec_config() = CodecConfig::new_from_payload_params(vec![opus_with_red()]);
        return config;
    }
    config.codec_config().add_config(
        Pt::from(OPUS_PT),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            ..Default::default()
        },
    );
    config
}

/// Opus with the same format parameters as [`opus_only`] and RED linked to it. str0m 0.25 links RED to a
/// codec only through `enable_opus` (whose fmtp lacks `usedtx`) or through SDP, so the parameters are read
/// from a fixed SDP fragment.
fn opus_with_red() -> PayloadParams {
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {RED_PT} {OPUS_PT}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
         a=rtcp-mux\r\na=rtpmap:{RED_PT} red/48000/2\r\na=fmtp:{RED_PT} {OPUS_PT}/{OPUS_PT}\r\n\
         a=rtpmap:{OPUS_PT} opus/48000/2\r\na=rtcp-fb:{OPUS_PT} transport-cc\r\n\
         a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1;usedtx=1\r\n"
    );
    let offer = SdpOffer::from_sdp_string(&sdp).expect("the fixed Opus/RED SDP fragment parses");
    offer
        .media_lines
        .first()
        .and_then(|m| {
            m.rtp_params()
                .into_iter()
                .find(|p| p.spec().codec == Codec::Opus && p.red().is_some())
        })
        .expect("the fixed Opus/RED SDP fragment has Opus with RED")
}

/// The RED payload type negotiated for the Opus of `mid`, if any.
pub(crate) fn red_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let config = rtc.codec_config();
    media.remote_pts().iter().find_map(|pt| {
        config
            .iter()
            .find(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
            .and_then(|p| p.red())
    })
}

/// The Opus payload type negotiated on `mid`, if any.
pub(crate) fn opus_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let config = rtc.codec_config();
    media.remote_pts().iter().copied().find(|pt| {
        config
            .iter()
            .any(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
    })
}

/// A datagram as str0m's input; `None` for one str0m cannot classify (not STUN, DTLS, RTP or RTCP).
fn net_input(now: Instant, path: NetPath, data: &[u8]) -> Option<Input<'_>> {
    let contents = data.try_into().ok()?;
    Some(Input::Receive(
        now,
        Receive {
            proto: path.transport.protocol(),
            source: path.remote,
            destination: path.local,
            contents,
        },
    ))
}

/// The offer's first `a=ice-ufrag` (session or media level: browsers bundle, so every m-line has the same).
fn offer_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

fn mline_count(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=")).count()
}

/// Parse an SDP offer with `parse` (str0m's parser in production) under [`guard`]: a parse error is
/// [`PeerError::BadSdp`], a panic in the parser [`PeerError::Panicked`].
fn parse_offer<E: std::fmt::Display>(
    sdp: &str,
    parse: impl FnOnce(&str) -> Result<SdpOffer, E>,
) -> Result<SdpOffer, PeerError> {
    guard(|| parse(sdp).map_err(|e| PeerError::BadSdp(e.to_string())))?
}

/// Run a call into str0m so that a bug (panic) in it cannot take down the worker: the peer is dropped.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, PeerError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| PeerError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::client::{ClientConfig, ClientOutput, ClientPeer};

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    fn test_cert() -> DtlsCert {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the aws-lc-rs provider generates certificates")
    }

    fn answer_for(
        slots_offered: usize,
        publish: bool,
        room_slots: usize,
    ) -> Result<(Peer, String), PeerError> {
        let now = epoch();
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal address"),
            slots: slots_offered,
            publish,
            red: 0,
        };
        let (_, offer) = ClientPeer::new(now, client).expect("client offer");
        let cert = test_cert();
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: room_slots,
        };
        Peer::from_offer(now, ParticipantId(1), &params, &offer)
    }

    #[test]
    fn the_answer_keeps_the_audio_level_and_drops_transport_wide_feedback() {
        // A browser offers TWCC and abs-send-time on every m-line; the answer must not take them.
        let now = epoch();
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal address"),
            slots: 2,
            publish: true,
            red: 0,
        };
        let (_, offer) = ClientPeer::new(now, client).expect("client offer");
        let offer = offer.replace(
            "a=mid:",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=mid:",
        );
        assert!(offer.contains("transport-wide-cc"), "{offer}");
        let cert = test_cert();
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: 2,
        };
        let (_, answer) = Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
        assert!(answer.contains("ssrc-audio-level"), "{answer}");
        assert!(!answer.contains("transport-wide-cc"), "{answer}");
        assert!(!answer.contains("abs-send-time"), "{answer}");
    }

    #[test]
    fn the_answer_is_ice_lite_opus_with_fec_and_dtx_and_one_stream_per_slot() {
        let (peer, answer) = answer_for(3, true, 3).expect("answer");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 5000 typ host"), "{answer}");
        assert!(
            answer.contains("useinbandfec=1") && answer.contains("usedtx=1"),
            "{answer}"
        );
        assert_eq!(
            answer.matches("a=recvonly").count(),
            1,
            "the microphone is answered recvonly"
        );
        assert_eq!(
            answer.matches("a=sendonly").count(),
            3,
            "each slot is answered sendonly"
        );
        assert!(peer.has_microphone());
        assert_eq!(peer.slots.len(), 3);
        let mut ssrcs: Vec<u32> = peer.slots.iter().map(|s| s.ssrc.0).collect();
        ssrcs.dedup();
        assert_eq!(ssrcs.len(), 3, "every slot has its own SSRC");
    }

    fn red_answer(red: u8) -> (Peer, String, String) {
        let now = epoch();
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal address"),
            slots: 2,
            publish: true,
            red,
        };
        let (_, offer) = ClientPeer::new(now, client).expect("client offer");
        let cert = test_cert();
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: 2,
        };
        let (peer, answer) =
            Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
        (peer, offer, answer)
    }

    #[test]
    fn red_is_answered_first_on_every_line_when_offered_and_opus_keeps_fec_and_dtx() {
        let (peer, offer, answer) = red_answer(1);
        assert_eq!(offer.matches("red/48000/2").count(), 3, "{offer}");
        assert_eq!(
            answer.matches("a=rtpmap:63 red/48000/2").count(),
            3,
            "{answer}"
        );
        assert_eq!(answer.matches("a=fmtp:63 111/111").count(), 3, "{answer}");
        assert_eq!(
            answer.matches("m=audio 9 UDP/TLS/RTP/SAVPF 63 111").count(),
            3,
            "RED goes before Opus (libwebrtc sends RED only then): {answer}"
        );
        assert!(
            answer.contains("useinbandfec=1") && answer.contains("usedtx=1"),
            "{answer}"
        );
        assert_eq!(peer.mic_red_pt(), Some(Pt::from(63)));
        assert_eq!(peer.mic_opus_pt(), Some(Pt::from(111)));
        assert!(peer.slots.iter().all(|s| s.red_pt == Some(Pt::from(63))));
    }

    #[test]
    fn without_red_in_the_offer_the_answer_is_opus_only() {
        let (peer, offer, answer) = red_answer(0);
        assert!(!offer.contains("red/"), "{offer}");
        assert!(!answer.contains("red/"), "{answer}");
        assert!(answer.contains("usedtx=1"), "{answer}");
        assert_eq!(peer.mic_red_pt(), None);
        assert!(peer.slots.iter().all(|s| s.red_pt.is_none()));
    }

    #[test]
    fn red_is_recorded_per_line_and_follows_the_offered_payload_type() {
        // Chrome's numbers, but RED only on the microphone line and at another payload type.
        let (_, offer, _) = red_answer(1);
        let mut lines: Vec<String> = Vec::new();
        let mut media_index = 0;
        for line in offer.split("\r\n") {
            if line.starts_with("m=audio") {
                media_index += 1;
            }
            let line = line.replace("63", "98");
            if media_index > 1 && (line.contains(" red/") || line.starts_with("a=fmtp:98")) {
                continue;
            }
            let line = if media_index > 1 && line.starts_with("m=audio") {
                line.replace(" 98 111", " 111")
            } else {
                line
            };
            lines.push(line);
        }
        let offer = lines.join("\r\n");
        let cert = test_cert();
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: 2,
        };
        let (peer, answer) =
            Peer::from_offer(epoch(), ParticipantId(1), &params, &offer).expect("answer");
        assert_eq!(peer.mic_red_pt(), Some(Pt::from(98)), "{answer}");
        assert!(
            peer.slots.iter().all(|s| s.red_pt.is_none()),
            "slots whose line did not offer RED never carry it: {answer}"
        );
    }

    /// A client and a server peer on a virtual loopback: the client's datagrams reach the server from
    /// `nat` (the address its NAT maps it to), the server's reach the client only when sent to `nat`.
    struct Rebinding {
        client: ClientPeer,
        peer: Peer,
        out: Outbox,
        server: SocketAddr,
        nat: SocketAddr,
        /// RTP packets the client received on slot 0.
        heard: u64,
        /// Non-STUN datagrams the server sent to an address the client is not at any more.
        lost: u64,
        seq: u64,
        /// The client's latest nominating binding request, as sent.
        nomination: Option<Vec<u8>>,
    }

    impl Rebinding {
        fn new(now: Instant) -> Rebinding {
            let client = ClientConfig {
                local_addr: "10.0.0.2:6000".parse().expect("literal address"),
                slots: 1,
                publish: true,
                red: 0,
            };
            let (mut client, offer) = ClientPeer::new(now, client).expect("client offer");
            let cert = test_cert();
            let server: SocketAddr = "127.0.0.1:5000".parse().expect("literal address");
            let params = PeerParams {
                candidate_addr: server,
                dtls_cert: &cert,
                slots: 1,
            };
            let (peer, answer) =
                Peer::from_offer(now, ParticipantId(1), &params, &offer).expect("answer");
            client
                .accept_answer(&answer)
                .expect("the client takes the answer");
            Rebinding {
                client,
                peer,
                out: Outbox::default(),
                server,
                nat: "198.51.100.7:40000".parse().expect("literal address"),
                heard: 0,
                lost: 0,
                seq: 0,
                nomination: None,
            }
        }

        /// 10 ms of virtual time: both sides' timers, their datagrams, and (once connected) one forwarded
        /// packet every 20 ms into the client's slot.
        fn step(&mut self, now: Instant) {
            self.client
                .handle_timeout(now)
                .expect("the client handles time");
            while let Some(output) = Some(self.client.poll_output().expect("client output")) {
                match output {
                    ClientOutput::Timeout(_) => break,
                    ClientOutput::Transmit(t) => {
                        assert_eq!(t.destination, self.server);
                        if is_nomination(&t.contents) {
                            self.nomination = Some(t.contents.clone());
                        }
                        let path = NetPath::udp(self.server, self.nat);
                        self.peer
                            .handle_datagram(now, path, &t.contents)
                            .expect("the server peer takes the client's datagram");
                    }
                    ClientOutput::Audio(a) => self.heard += u64::from(a.slot == 0),
                    ClientOutput::Disconnected => panic!("the client lost ICE consent"),
                    ClientOutput::Connected => {}
                }
            }
            if self.peer.is_connected() && (now - self.peer.created).as_millis() % 20 < 10 {
                self.seq += 1;
                let payload: std::sync::Arc<[u8]> = std::sync::Arc::from(&[0xf8, 0xff, 0xfe][..]);
                let ts = (self.seq * 960) as u32;
                self.peer
                    .write_slot(
                        0,
                        self.seq,
                        ts,
                        now,
                        &payload,
                        false,
                        Some(-30),
                        Some(true),
                        Ssrc(7),
                    )
                    .expect("a slot packet is written");
            }
            self.peer
                .handle_timeout(now)
                .expect("the peer handles time");
            self.peer
                .drive(now, &mut self.out)
                .expect("the peer drains");
            while let Some(t) = self.out.transmits.pop_front() {
                if t.destination == self.nat {
                    self.client
                        .handle_datagram(now, self.server, &t.contents)
                        .expect("the client takes the server's datagram");
                } else if !is_stun(&t.contents) {
                    self.lost += 1;
                }
            }
            self.out.events.clear();
        }
    }

    #[test]
    fn after_a_nat_rebinding_media_follows_the_clients_next_verified_nomination() {
        let t0 = epoch();
        let mut r = Rebinding::new(t0);
        let tick = Duration::from_millis(10);
        let mut now = t0;
        while now < t0 + Duration::from_secs(4) {
            now += tick;
            r.step(now);
        }
        assert!(r.peer.is_connected() && r.heard > 100, "heard {}", r.heard);
        assert_eq!(r.lost, 0);
        let first = r.peer.client_path().expect("the client nominated its path");
        assert_eq!(first.remote, r.nat);

        // The NAT maps the client to a new port: the same client candidate, the same ICE priority.
        let old = r.nat;
        r.nat = "198.51.100.7:40001".parse().expect("literal address");
        let moved = now;
        // (time since the move, packets heard by then) when the server first sent to the new port.
        let mut switched: Option<(Duration, u64)> = None;
        while now < moved + Duration::from_secs(6) {
            now += tick;
            r.step(now);
            if switched.is_none() && r.peer.client_path().map(|p| p.remote) == Some(r.nat) {
                switched = Some((now - moved, r.heard));
            }
        }
        let (after, heard_then) =
            switched.expect("the client's check from its new port moved the media");
        // str0m's client checks its nominated pair at least every 3 s (its maximum STUN RTO): the first
        // check from the new port moves the media. (str0m alone keeps sending to the old port for 15 s.)
        assert!(after <= Duration::from_millis(3100), "{after:?}");
        // From then on everything reaches the client (50 packets a second), and nothing is lost.
        let heard_after = r.heard - heard_then;
        let expected = (Duration::from_secs(6) - after).as_millis() as u64 / 20;
        assert!(
            heard_after + 2 >= expected,
            "heard {heard_after} of {expected} in the {:?} after the move",
            Duration::from_secs(6) - after
        );
        let lost_before_the_check = after.as_millis() as u64 / 20 + 2;
        assert!(r.lost <= lost_before_the_check, "lost {}", r.lost);
        assert_ne!(old, r.nat);
    }

    #[test]
    fn a_replayed_nomination_from_another_address_does_not_move_the_media() {
        // Someone who sees the client's checks resends them from elsewhere: the integrity verifies (it
        // does not cover the source), but the transaction id was taken already.
        let t0 = epoch();
        let mut r = Rebinding::new(t0);
        let tick = Duration::from_millis(10);
        let mut now = t0;
        while now < t0 + Duration::from_secs(4) {
            now += tick;
            r.step(now);
        }
        let heard = r.heard;
        let attacker = NetPath::udp(
            r.server,
            "203.0.113.66:5555".parse().expect("literal address"),
        );
        let until = now + Duration::from_secs(4);
        while now < until {
            now += tick;
            r.step(now);
            let replay = r.nomination.clone().expect("the client nominates its path");
            r.peer
                .handle_datagram(now, attacker, &replay)
                .expect("the peer takes a replayed check");
            r.peer.drive(now, &mut r.out).expect("the peer drains");
            r.out.transmits.retain(|t| t.destination != attacker.remote);
            assert_eq!(r.peer.client_path().map(|p| p.remote), Some(r.nat));
        }
        assert_eq!(r.lost, 0, "nothing went anywhere but the client");
        assert!(r.heard - heard >= 195, "heard {} in 4 s", r.heard - heard);
    }

    #[test]
    fn extra_slot_lines_stay_unused_and_listeners_have_no_microphone() {
        let (peer, _) = answer_for(5, false, 2).expect("answer");
        assert_eq!(peer.slots.len(), 2);
        assert!(!peer.has_microphone());
    }

    #[test]
    fn a_panic_while_parsing_an_offer_is_a_typed_error() {
        let panicking = |_: &str| -> Result<SdpOffer, String> { panic!("parser bug") };
        assert!(matches!(
            parse_offer("v=0", panicking),
            Err(PeerError::Panicked)
        ));
        // Through str0m's parser: garbage is a parse error, a real offer parses.
        assert!(matches!(
            parse_offer("not sdp", SdpOffer::from_sdp_string),
            Err(PeerError::BadSdp(_))
        ));
        let client = ClientConfig {
            local_addr: "127.0.0.1:6000".parse().expect("literal address"),
            slots: 1,
            publish: true,
            red: 0,
        };
        let (_, offer) = ClientPeer::new(epoch(), client).expect("client offer");
        assert!(parse_offer(&offer, SdpOffer::from_sdp_string).is_ok());
    }

    #[test]
    fn bad_offers_are_typed_errors() {
        let now = epoch();
        let cert = test_cert();
        let params = PeerParams {
            candidate_addr: "127.0.0.1:5000".parse().expect("literal address"),
            dtls_cert: &cert,
            slots: 3,
        };
        for garbage in [
            "",
            "v=0",
            "not sdp at all\r\nm=audio",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        ] {
            assert!(
                Peer::from_offer(now, ParticipantId(1), &params, garbage).is_err(),
                "{garbage:?}"
            );
        }
        // A valid offer without slot lines cannot subscribe.
        assert!(matches!(
            answer_for(0, true, 3),
            Err(PeerError::MissingMedia(_))
        ));
    }
}
