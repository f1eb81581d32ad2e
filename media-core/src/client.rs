//! A sans-IO Chorus client peer (str0m in the controlling, full-ICE role, RTP mode).
//!
//! It offers what the protocol asks of a client: one microphone m-line, then K recvonly slot m-lines. It
//! sends Opus frames the caller encodes (with the RFC 6464 audio level) and reports every received slot
//! packet with its CSRC. Used by the native client SDK (`clients/native`), simulation tests, the end-to-end
//! tests and the load tester; feature `client` (the testkit re-exports it as `testkit::client`). Its
//! [`Player`] plays one received stream out as a receiver does (jitter buffer, FEC, PLC).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::core::codec::{opus_only, opus_pt, red_mids, red_pt};
use crate::core::peer::{PeerError, Transmit};
use crate::red::{self, RedundantFrame};

mod playout;
pub use playout::Player;

/// How many of its nominating checks' transaction ids a client that nominates once tracks.
const NOMINATIONS_TRACKED: usize = 16;

/// Whether `data` is a STUN binding request with USE-CANDIDATE.
fn is_nominating_request(data: &[u8]) -> bool {
    str0m::ice::StunMessage::parse(data).is_ok_and(|m| m.is_binding_request() && m.use_candidate())
}

/// The transaction id of a STUN message at least 20 bytes long.
fn transaction_id(data: &[u8]) -> [u8; 12] {
    let mut id = [0u8; 12];
    id.copy_from_slice(&data[8..20]);
    id
}

/// How a client peer is set up.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// The client's own socket address (its ICE host candidate).
    pub local_addr: SocketAddr,
    /// The room's slot count K (from `joined`).
    pub slots: usize,
    /// Offer a sending microphone m-line.
    pub publish: bool,
    /// Offer RED (RFC 2198) on every m-line and, when the answer takes it on the microphone, send this many
    /// earlier frames as redundancy with each frame (like Chrome: distances 1..=red). 0: Opus only.
    pub red: u8,
}

/// One RTP packet received in a slot.
#[derive(Clone, Debug)]
pub struct ReceivedAudio {
    pub slot: usize,
    pub ssrc: u32,
    /// The first CSRC: the original SSRC of the speaker in the slot.
    pub csrc: Option<u32>,
    /// Every CSRC (a mixed packet lists all its talkers), with their RFC 6465 levels if sent.
    pub contributors: Vec<(u32, Option<u8>)>,
    pub seq: u64,
    pub timestamp: u32,
    /// RFC 6464 level, 0 (loud) ..= 127 (silence), if the packet carried one.
    pub audio_level: Option<u8>,
    /// The Opus frame (a RED packet's primary).
    pub payload: Arc<[u8]>,
    /// For a RED packet, its redundant frames as (RTP timestamp, Opus frame), oldest first; `None` for plain
    /// Opus.
    pub redundant: Option<Vec<(u32, Arc<[u8]>)>>,
    pub arrival: Instant,
}

impl ReceivedAudio {
    /// Hand the packet to a receiver's jitter buffer, as a browser's would take it: the Opus frame, then a
    /// RED packet's older frames to fill what is missing. `false` if the payload is not Opus.
    pub fn push_into(&self, jitter: &mut crate::mixer::jitter::JitterBuffer) -> bool {
        let Some(packet) = crate::mixer::jitter::JitterPacket::opus(
            self.seq,
            self.timestamp,
            self.payload.clone(),
            self.audio_level,
        ) else {
            return false;
        };
        jitter.push(self.arrival, packet);
        if let Some(redundant) = &self.redundant {
            let frames: Vec<RedundantFrame<'_>> = redundant
                .iter()
                .map(|(ts, payload)| RedundantFrame {
                    ts_offset: self.timestamp.wrapping_sub(*ts),
                    payload,
                })
                .collect();
            for packet in crate::mixer::red_jitter_packets(self.seq, self.timestamp, &frames) {
                jitter.push_redundant(packet);
            }
        }
        true
    }
}

/// One microphone RTP packet as [`ClientPeer::send_rtp_raw`] sends it, field for field.
#[derive(Clone, Copy, Debug)]
pub struct RawRtp<'a> {
    pub pt: u8,
    /// Extended sequence number (the bits above 16 are the SRTP rollover counter).
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    /// RFC 6464 level as str0m carries it (0 loud ..= −127 silent; any value is sent).
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub payload: &'a [u8],
}

/// What the client peer wants done.
#[derive(Debug)]
pub enum ClientOutput {
    Transmit(Transmit),
    Connected,
    Disconnected,
    Audio(ReceivedAudio),
    Timeout(Instant),
}

pub struct ClientPeer {
    rtc: Rtc,
    local_addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    mic_mid: Mid,
    slot_mids: Vec<Mid>,
    mic_pt: Option<Pt>,
    /// The RED payload type negotiated on the microphone, if any.
    mic_red_pt: Option<Pt>,
    /// Redundant frames to send with each frame.
    red_levels: u8,
    /// The latest frames sent (Opus payload, RTP timestamp), newest last, for RED.
    red_history: VecDeque<(Vec<u8>, u32)>,
    /// Reused buffer for RED payloads.
    red_buf: Vec<u8>,
    seq: u64,
    ts: u32,
    connected: bool,
    /// Nominate like Firefox: USE-CANDIDATE only until a nomination succeeded (see
    /// [`ClientPeer::set_nominate_once`]).
    nominate_once: bool,
    /// Whether the server answered a nominating check of ours under the current ICE credentials.
    nominated: bool,
    /// Transaction ids of our latest nominating checks (at most [`NOMINATIONS_TRACKED`]), to recognise
    /// the server's answer to one.
    nominating: VecDeque<[u8; 12]>,
    /// The server's ICE password from its answer: what our binding requests are signed with.
    remote_ice_pwd: Option<String>,
    /// The fraction lost (0.0 to 1.0) the server's latest receiver reports on the microphone stated.
    mic_loss_reported: Option<f32>,
}

/// How often a client made by [`ClientPeer::new`] reads its streams' statistics.
const MIC_STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ClientPeer {
    /// A peer around `rtc` that has sent nothing yet.
    fn with_state(
        rtc: Rtc,
        local_addr: SocketAddr,
        pending: Option<SdpPendingOffer>,
        mic_mid: Mid,
        slot_mids: Vec<Mid>,
        red_levels: u8,
    ) -> ClientPeer {
        ClientPeer {
            rtc,
            local_addr,
            pending,
            mic_mid,
            slot_mids,
            mic_pt: None,
            mic_red_pt: None,
            red_levels,
            red_history: VecDeque::new(),
            red_buf: Vec::new(),
            seq: 0,
            ts: 0,
            connected: false,
            nominate_once: false,
            nominated: false,
            nominating: VecDeque::new(),
            remote_ice_pwd: None,
            mic_loss_reported: None,
        }
    }

    /// Create the peer and its SDP offer.
    pub fn new(now: Instant, config: ClientConfig) -> Result<(ClientPeer, String), PeerError> {
        let mut rtc = opus_only(
            crate::core::peer::dtls::rtc_builder(),
            config.red > 0,
            false,
        )
        // For the loss the server's receiver reports state on the microphone (`reported_mic_loss`).
        .set_stats_interval(Some(MIC_STATS_INTERVAL))
        .build(now);
        let candidate = Candidate::host(config.local_addr, "udp")
            .map_err(|e| PeerError::BadSdp(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let mic_dir = if config.publish {
            Direction::SendOnly
        } else {
            Direction::Inactive
        };
        let mic_mid = change.add_media(MediaKind::Audio, mic_dir, None, None, None);
        let slot_mids = (0..config.slots)
            .map(|_| change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = change
            .apply()
            .ok_or(PeerError::MissingMedia("an offer with media"))?;
        let peer = ClientPeer::with_state(
            rtc,
            config.local_addr,
            Some(pending),
            mic_mid,
            slot_mids,
            config.red,
        );
        Ok((peer, offer.to_sdp_string()))
    }

    /// A peer with a single `sendrecv` audio m-line that is both the microphone and slot 0 (what a mixing
    /// server such as Janus' AudioBridge negotiates), and its SDP offer.
    pub fn new_sendrecv(
        now: Instant,
        local_addr: SocketAddr,
    ) -> Result<(ClientPeer, String), PeerError> {
        Self::single_line(now, local_addr, Direction::SendRecv)
    }

    /// A WHEP-style receive-only peer: one `recvonly` audio m-line (its slot 0) and no microphone, and
    /// its SDP offer.
    pub fn new_receive_only(
        now: Instant,
        local_addr: SocketAddr,
    ) -> Result<(ClientPeer, String), PeerError> {
        Self::single_line(now, local_addr, Direction::RecvOnly)
    }

    /// A peer with one audio m-line in `direction` (the microphone and slot 0 alike), and its offer.
    fn single_line(
        now: Instant,
        local_addr: SocketAddr,
        direction: Direction,
    ) -> Result<(ClientPeer, String), PeerError> {
        let mut rtc = opus_only(crate::core::peer::dtls::rtc_builder(), false, false).build(now);
        let candidate = Candidate::host(local_addr, "udp")
            .map_err(|e| PeerError::BadSdp(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change
            .apply()
            .ok_or(PeerError::MissingMedia("an offer with media"))?;
        let peer = ClientPeer::with_state(rtc, local_addr, Some(pending), mid, vec![mid], 0);
        Ok((peer, offer.to_sdp_string()))
    }

    /// A receive-only peer that answers a server's offer (as a Janus VideoRoom subscriber does): every
    /// audio m-line of the offer becomes a slot, in offer order. Returns the peer and its SDP answer.
    pub fn from_offer(
        now: Instant,
        local_addr: SocketAddr,
        offer_sdp: &str,
    ) -> Result<(ClientPeer, String), PeerError> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let mut rtc = opus_only(crate::core::peer::dtls::rtc_builder(), false, false).build(now);
        let candidate = Candidate::host(local_addr, "udp")
            .map_err(|e| PeerError::BadSdp(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(offer)?;
        let slot_mids: Vec<Mid> = answer
            .media_lines
            .iter()
            .filter_map(|line| {
                let media = rtc.media(line.mid())?;
                (media.kind() == MediaKind::Audio).then(|| media.mid())
            })
            .collect();
        let mic_mid = *slot_mids
            .first()
            .ok_or(PeerError::MissingMedia("an audio m-line in the offer"))?;
        let peer = ClientPeer::with_state(rtc, local_addr, None, mic_mid, slot_mids, 0);
        Ok((peer, answer.to_sdp_string()))
    }

    /// Restart ICE (RFC 8445 §9, what `pc.restartIce()` does): new ICE credentials, the same m-lines,
    /// streams and DTLS association. Returns the offer to send (as signaling's `offer`); apply the
    /// server's answer with [`ClientPeer::accept_answer`]. Connectivity checks under the new
    /// credentials start once the answer is applied.
    pub fn restart_ice(&mut self) -> Result<String, PeerError> {
        let mut change = self.rtc.sdp_api();
        change.ice_restart(true);
        let (offer, pending) = change
            .apply()
            .ok_or(PeerError::MissingMedia("an ICE restart offer"))?;
        self.pending = Some(pending);
        self.nominated = false;
        self.nominating.clear();
        Ok(offer.to_sdp_string())
    }

    /// Apply the server's answer.
    pub fn accept_answer(&mut self, answer_sdp: &str) -> Result<(), PeerError> {
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or(PeerError::BadSdp("an answer was already applied".into()))?;
        let red_mids = red_mids!(answer);
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.remote_ice_pwd = answer_sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"))
            .map(str::to_owned);
        self.mic_pt = opus_pt(&self.rtc, self.mic_mid);
        self.mic_red_pt = red_mids
            .contains(&self.mic_mid)
            .then(|| red_pt(&self.rtc, self.mic_mid))
            .flatten();
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Nominate the way Firefox does: USE-CANDIDATE on the checks until the server answers one, and
    /// never again under the same ICE credentials (an ICE restart nominates afresh), so the later checks (consent freshness, RFC 7675) are plain binding requests, also after the
    /// client's NAT maps it to a new address. str0m (and Chromium) put USE-CANDIDATE on every check of
    /// the nominated pair. Each later request is signed afresh with the server's ICE password (same
    /// transaction id, so our agent takes the reply): its integrity holds, as a real client's would.
    pub fn set_nominate_once(&mut self, on: bool) {
        self.nominate_once = on;
    }

    /// `request` without USE-CANDIDATE, signed again with the server's ICE password; `None` for anything
    /// but a nominating binding request of ours.
    fn without_nomination(&self, request: &[u8]) -> Option<Vec<u8>> {
        use str0m::ice::StunMessage;
        let password = self.remote_ice_pwd.as_deref()?;
        let message = StunMessage::parse(request).ok()?;
        if !message.is_binding_request() || !message.use_candidate() {
            return None;
        }
        let plain = StunMessage::binding_request(
            message.username()?,
            message.trans_id(),
            true,
            message.ice_controlling()?,
            message.prio()?,
            false,
        );
        let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
        let mut buf = vec![0u8; request.len()];
        let n = plain
            .to_bytes(Some(password.as_bytes()), &mut buf, |key, parts| {
                hmac.sha1_hmac(key, parts)
            })
            .ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// The fraction lost (0.0 to 1.0) the server's receiver reports on our microphone stated last (what
    /// a browser's encoder reads to decide how much in-band FEC to add); `None` before any came.
    pub fn reported_mic_loss(&self) -> Option<f32> {
        self.mic_loss_reported
    }

    /// [`ClientPeer::reported_mic_loss`] as the expected packet loss libopus takes (0..=100 %, rounded),
    /// as WebRTC's Opus encoder sets it from the reports' fraction lost; `None` before any report came.
    pub fn reported_mic_loss_percent(&self) -> Option<i32> {
        self.mic_loss_reported
            .map(|l| (l * 100.0).round().clamp(0.0, 100.0) as i32)
    }

    /// The SSRC our microphone packets carry (what a subscriber sees as CSRC).
    pub fn mic_ssrc(&mut self) -> Option<u32> {
        let mid = self.mic_mid;
        self.rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| *s.ssrc())
    }

    /// Whether the microphone sends RED (offered, answered, and redundancy asked for).
    pub fn sends_red(&self) -> bool {
        self.mic_red_pt.is_some() && self.red_levels > 0
    }

    /// The mid of each slot m-line.
    pub fn slot_mids(&self) -> Vec<String> {
        self.slot_mids.iter().map(|m| m.to_string()).collect()
    }

    /// A datagram from the network.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), PeerError> {
        let Ok(contents) = data.try_into() else {
            return Ok(());
        };
        // A success response (0x0101) to one of our nominating checks: the server took the nomination.
        if self.nominate_once
            && data.len() >= 20
            && data[..2] == [0x01, 0x01]
            && self.nominating.contains(&transaction_id(data))
        {
            self.nominated = true;
        }
        self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        ))?;
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// Send one encoded Opus frame lasting `samples` at 48 kHz, with its RFC 6464 level (0..=127).
    pub fn send_audio(
        &mut self,
        now: Instant,
        opus: &[u8],
        samples: u32,
        level_dbov: u8,
    ) -> Result<(), PeerError> {
        let Some(pt) = self.mic_pt else {
            return Err(PeerError::MissingMedia("a negotiated Opus microphone"));
        };
        let mid = self.mic_mid;
        let mut ext = ExtensionValues::default();
        let level = level_dbov.min(127);
        ext.audio_level = Some(-(level as i8));
        ext.voice_activity = Some(level < 127);
        let (pt, payload) = match self.mic_red_pt.filter(|_| self.red_levels > 0) {
            Some(red_pt) => (red_pt, self.wrap_red(*pt, opus)),
            None => (pt, opus.to_vec()),
        };
        let write = RtpWrite::new(pt, SeqNo::from(self.seq), self.ts, now, payload).ext_vals(ext);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Err(PeerError::MissingMedia("a microphone stream"));
        };
        tx.write_rtp(write);
        self.seq += 1;
        self.ts = self.ts.wrapping_add(samples);
        Ok(())
    }

    /// Send `payload` as it is with the RED payload type (robustness tests: malformed RED must be a counted
    /// drop at the server).
    pub fn send_raw_red(&mut self, now: Instant, payload: &[u8]) -> Result<(), PeerError> {
        let Some(pt) = self.mic_red_pt else {
            return Err(PeerError::MissingMedia("a negotiated RED microphone"));
        };
        let mid = self.mic_mid;
        let write = RtpWrite::new(pt, SeqNo::from(self.seq), self.ts, now, payload.to_vec());
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Err(PeerError::MissingMedia("a microphone stream"));
        };
        tx.write_rtp(write);
        self.seq += 1;
        self.ts = self.ts.wrapping_add(960);
        Ok(())
    }

    /// The microphone's negotiated payload types: (Opus, RED). Test-only, with [`send_rtp_raw`](Self::send_rtp_raw).
    pub fn mic_payload_types(&self) -> (Option<u8>, Option<u8>) {
        (self.mic_pt.map(|p| *p), self.mic_red_pt.map(|p| *p))
    }

    /// Send one microphone RTP packet exactly as given: payload type, extended sequence number, timestamp,
    /// marker, RFC 6464 extension values and payload are the caller's, and the client's own sequence and
    /// timestamp counters are left alone. For fuzzing and robustness tests only (a well-behaved client uses
    /// [`send_audio`](Self::send_audio)).
    pub fn send_rtp_raw(&mut self, now: Instant, rtp: RawRtp<'_>) -> Result<(), PeerError> {
        let mid = self.mic_mid;
        let ext = ExtensionValues {
            audio_level: rtp.audio_level,
            voice_activity: rtp.voice_activity,
            ..ExtensionValues::default()
        };
        let write = RtpWrite::new(
            Pt::from(rtp.pt),
            SeqNo::from(rtp.seq),
            rtp.ts,
            now,
            rtp.payload.to_vec(),
        )
        .marker(rtp.marker)
        .ext_vals(ext);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Err(PeerError::MissingMedia("a microphone stream"));
        };
        tx.write_rtp(write);
        Ok(())
    }

    /// A RED payload with `opus` as primary and up to `red_levels` earlier frames (those whose timestamp
    /// offset fits the 14-bit field) as redundancy; remembers `opus`.
    fn wrap_red(&mut self, opus_pt: u8, opus: &[u8]) -> Vec<u8> {
        let ts = self.ts;
        let frames: Vec<RedundantFrame<'_>> = self
            .red_history
            .iter()
            .map(|(payload, frame_ts)| RedundantFrame {
                ts_offset: ts.wrapping_sub(*frame_ts),
                payload,
            })
            .collect();
        self.red_buf.clear();
        red::encode(opus_pt, opus, &frames, |_, _| true, &mut self.red_buf);
        let payload = self.red_buf.clone();
        self.red_history.push_back((opus.to_vec(), ts));
        while self.red_history.len() > usize::from(self.red_levels) {
            self.red_history.pop_front();
        }
        payload
    }

    /// Skip `samples` of media time without sending (as a DTX sender does in silence).
    pub fn skip_audio(&mut self, samples: u32) {
        self.ts = self.ts.wrapping_add(samples);
    }

    /// The next output; call until it returns [`ClientOutput::Timeout`] after every input.
    pub fn poll_output(&mut self) -> Result<ClientOutput, PeerError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(ClientOutput::Timeout(t)),
                Output::Transmit(t) => {
                    let mut contents: Vec<u8> = t.contents.into();
                    if self.nominate_once && is_nominating_request(&contents) {
                        if self.nominated {
                            if let Some(plain) = self.without_nomination(&contents) {
                                contents = plain;
                            }
                        } else {
                            if self.nominating.len() == NOMINATIONS_TRACKED {
                                self.nominating.pop_front();
                            }
                            self.nominating.push_back(transaction_id(&contents));
                        }
                    }
                    return Ok(ClientOutput::Transmit(Transmit {
                        destination: t.destination,
                        contents,
                    }));
                }

                Output::Event(Event::Connected) => {
                    self.connected = true;
                    return Ok(ClientOutput::Connected);
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => return Ok(ClientOutput::Disconnected),
                Output::Event(Event::RtpPacket(p)) => {
                    let mid = self
                        .rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .map(|s| s.mid());
                    let Some(slot) = mid.and_then(|m| self.slot_mids.iter().position(|s| *s == m))
                    else {
                        continue;
                    };
                    let h = &p.header;
                    let red_pt = red_pt(&self.rtc, self.slot_mids[slot]);
                    let opus_pt = opus_pt(&self.rtc, self.slot_mids[slot]);
                    let (payload, redundant) = if red_pt == Some(h.payload_type) {
                        let Some(opus_pt) = opus_pt else {
                            continue;
                        };
                        let Ok(parsed) = red::parse(&p.payload, *opus_pt) else {
                            continue; // a malformed RED packet: a real receiver drops it too
                        };
                        let frames = parsed
                            .redundant
                            .iter()
                            .map(|f| (red::frame_ts(h.timestamp, f), Arc::from(f.payload)))
                            .collect();
                        (Arc::from(parsed.primary), Some(frames))
                    } else {
                        (p.payload.clone(), None)
                    };
                    let levels = h
                        .ext_vals
                        .user_values
                        .get::<crate::speakers::csrc_levels::CsrcLevels>();
                    let contributors = h.csrc[..h.csrc_count.min(15)]
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (*c, levels.and_then(|l| l.0.get(i).copied())))
                        .collect();
                    return Ok(ClientOutput::Audio(ReceivedAudio {
                        slot,
                        ssrc: *h.ssrc,
                        csrc: (h.csrc_count > 0).then_some(h.csrc[0]),
                        contributors,
                        seq: *p.seq_no,
                        timestamp: h.timestamp,
                        audio_level: h.ext_vals.audio_level.map(|l| l.unsigned_abs().min(127)),
                        payload,
                        redundant,
                        arrival: p.timestamp,
                    }));
                }
                Output::Event(Event::MediaEgressStats(s)) if s.mid == self.mic_mid => {
                    if s.loss.is_some() {
                        self.mic_loss_reported = s.loss;
                    }
                }
                Output::Event(_) => continue,
            }
        }
    }
}
