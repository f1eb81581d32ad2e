//! One participant's WebRTC peer on the server side: a str0m [`Rtc`] in ICE-lite, RTP mode.
//!
//! The first audio m-line of the client's offer is its microphone; every further audio m-line the client
//! receives on is one of its slots. The peer only wraps str0m: what to forward where is decided by the room.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::Receive;
use str0m::rtp::RtpPacket;
use str0m::{IceCreds, Input, Rtc, RtcError};

use crate::core::answer::finish_answer;
use crate::core::codec::{opus_only, opus_pt, red_mids, red_pt};
use crate::core::net::{LocalCandidate, NetPath};
use crate::core::router::{is_binding_request, is_nomination};
use crate::ids::{ParticipantId, Ssrc};
use crate::sfu::slots::MAX_SLOTS;
use crate::stats::PathMove;

pub(crate) mod dtls;
mod output;
mod send;
pub(crate) mod srtp;
#[cfg(test)]
mod tests;

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
    /// Sealing a forwarded packet failed (the crypto provider refused it).
    #[error("srtp: {0}")]
    Srtp(#[from] str0m::crypto::CryptoError),
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
    /// What the client's receiver reports on an outgoing stream counted since the previous statistics:
    /// packets expected and packets lost; `None` when no report covered a new packet.
    pub downstream: Option<Downstream>,
    /// What the server itself received of the microphone stream since the previous statistics, counted
    /// as a receiver report would ([`MicReception`]); `None` when no new packet came.
    pub upstream: Option<Downstream>,
}

/// Packets a client expected and lost on one of its incoming streams (our outgoing ones) over an
/// interval, from the cumulative figures of its receiver reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downstream {
    pub expected: u64,
    pub lost: u64,
}

/// A rise of a receiver's cumulative loss by more than this many packets between two reports is
/// believed at once (10 % of even one second of a stream is 5 packets). A smaller one may be packets
/// still in flight, not lost: a receiver counts a reordered packet that has not arrived yet as lost, and
/// a later report takes it back (the cumulative loss goes down). On a jittery path more packets can be
/// in flight behind a later one: the limit grows by one packet per [`HELD_PER_JITTER_MS`] of the jitter
/// the report states (in virtual time, reordering over 100, 150 and 300 ms left transients of up to 2, 4
/// and 5 packets, at a stated jitter of 35, 55 and 100 ms).
const HELD_LOSS_PACKETS: u64 = 2;

/// Milliseconds of a report's interarrival jitter per packet that may be in flight behind a later one.
const HELD_PER_JITTER_MS: u64 = 10;

/// A small rise is believed once this many later reports keep it: as much of it as none of them took
/// back. One was not enough on a reordering path: a report often takes back one packet in flight and
/// counts another (150 ms of reordering in virtual time stated 1/255 that way, 300 ms 4/255).
const HELD_REPORTS: usize = 2;

/// Packets of a kept small rise never believed: on a path that reorders all the time a few packets are in
/// flight behind a later one at every report, so the cumulative loss never comes back to the true one
/// (300 ms of reordering in virtual time: 3–7 at every report of a clean stream, which stated 3/255).
/// A constant, not the jitter-dependent limit: a figure that moved with the jitter would count its
/// changes as loss. Not taken off a large rise: taken off the first report of a listener starting to
/// lose 5 %, it stated 4 % instead of 5 %, and Chromium's encoder, which smooths the fractions it is
/// told (`loss_feedback::LEAST_STATED_PERCENT`), may have coded FEC later for it
/// (`loss-feedback.test.js`: 14.0 s on average in 12 runs, against 11.75 s in 12 for the form before,
/// which waited for one later report and left nothing out).
const NEVER_BELIEVED_PACKETS: u64 = 2;

/// What a stream's receiver reports said so far: the highest sequence number and cumulative loss of the
/// latest, how much of the cumulative loss is believed (counted in an interval), and the cumulative loss
/// of the latest few, for the small rises not yet believed ([`HELD_LOSS_PACKETS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RemoteTotals {
    max_seq: u64,
    lost: u64,
    believed: u64,
    /// The cumulative loss of the latest [`HELD_REPORTS`] reports, oldest first (0 before there were as
    /// many).
    recent: [u64; HELD_REPORTS],
    /// How many of `recent` are reports (at most [`HELD_REPORTS`]).
    reports: usize,
}

impl RemoteTotals {
    /// Totals whose next interval starts after `max_seq`, with `lost` (the raw 24-bit cumulative
    /// field, [`cumulative_loss`]) lost before it.
    pub(super) fn at(max_seq: u64, lost: u64) -> Self {
        let lost = cumulative_loss(lost);
        Self {
            max_seq,
            lost,
            believed: lost,
            ..Self::default()
        }
    }

    /// The interval up to a report stating `max_seq`, `lost` (the raw 24-bit cumulative field) and an
    /// interarrival jitter of `jitter_ms`, which the totals then hold: its packets, and the lost packets
    /// believed with it. `None` when no new packet was covered. A large rise is believed at once; of
    /// small ones, all but the packets that may be in flight at once, and the rest once
    /// [`HELD_REPORTS`] later reports keep it.
    pub(super) fn interval(
        &mut self,
        max_seq: u64,
        lost: u64,
        jitter_ms: u64,
    ) -> Option<Downstream> {
        let lost = cumulative_loss(lost);
        let expected = max_seq.saturating_sub(self.max_seq);
        if expected == 0 {
            return None;
        }
        // Late packets and duplicates make the cumulative loss go down (RFC 3550 §6.4.1): what was
        // believed is not taken back, but counting starts again from there.
        self.believed = self.believed.min(lost);
        let before = self.believed;
        let limit = HELD_LOSS_PACKETS.max(jitter_ms.div_ceil(HELD_PER_JITTER_MS));
        if lost.saturating_sub(self.lost) > limit {
            self.believed = lost;
        } else {
            // No more than `limit` packets can be in flight (the premise of believing a larger rise
            // whole): of a cumulative loss that grew by small rises, all but that many are lost. A
            // listener losing 1 % counts one or two packets per report at a browser's pace, and each
            // waited for two later reports (`sim.rs`, `a_listener_losing_one_percent_is_stated_soon`).
            self.believed = self.believed.max(lost.saturating_sub(limit));
        }
        if self.reports == HELD_REPORTS {
            // The oldest recent report's cumulative loss, as far as every report since kept it, less
            // what may be in flight at every report.
            let kept = self.recent.iter().copied().chain([lost]).min().unwrap_or(0);
            let kept = kept.saturating_sub(NEVER_BELIEVED_PACKETS);
            self.believed = self.believed.max(kept);
        }
        self.recent.rotate_left(1);
        self.recent[HELD_REPORTS - 1] = lost;
        self.reports = (self.reports + 1).min(HELD_REPORTS);
        self.max_seq = max_seq;
        self.lost = lost;
        Some(Downstream {
            expected,
            // A report never loses more than its packets.
            lost: (self.believed - before).min(expected),
        })
    }
}

/// A microphone packet still missing once this many later sequence numbers arrived counts as lost:
/// 640 ms of 20-ms packets. Before that it may be in flight behind a later one (a path reordering over
/// 300 ms had 15 in flight); a packet later still is too late for a jitter buffer anyway.
const MIC_SETTLE_PACKETS: u64 = 32;

/// What the server received of a peer's microphone stream, for the loss its receiver reports state
/// (`loss_feedback.rs`): the stream's SSRC, its sequence numbers that arrived, and the loss counted at
/// the previous statistics. A packet counts as lost once [`MIC_SETTLE_PACKETS`] later sequence numbers
/// arrived without it; the fraction str0m's own reports state is that of each report's interval as it
/// stands when the report is written, so a packet overtaken by a later one counted as lost there (a
/// reordering uplink stated up to 2/255 in virtual time, `sim.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MicReception {
    ssrc: u32,
    arrived: SeqRecord,
    /// The settled sequence numbers and their lost packets at the previous statistics.
    counted: (u64, u64),
}

impl MicReception {
    /// One microphone packet arrived: recorded (not a duplicate, nor one counted lost already), or the
    /// start of a new record for a new SSRC.
    pub(super) fn on_packet(reception: &mut Option<MicReception>, ssrc: u32, seq: u64) {
        match reception {
            Some(r) if r.ssrc == ssrc => {
                // Settled and counted lost at the previous statistics: it stays lost (too late for a
                // jitter buffer too), and counting goes on from there.
                if seq >= r.arrived.first + r.counted.0 {
                    r.arrived.insert(seq);
                }
            }
            _ => {
                *reception = Some(MicReception {
                    ssrc,
                    arrived: SeqRecord::starting_at(seq),
                    counted: (0, 0),
                })
            }
        }
    }

    /// The settled packets expected and lost since the previous call; `None` when none settled since.
    pub(super) fn interval(&mut self) -> Option<Downstream> {
        let through = self.arrived.max.checked_sub(MIC_SETTLE_PACKETS)?;
        let settled = (through + 1).saturating_sub(self.arrived.first);
        let lost = self.arrived.missing_through(through);
        let (before, lost_before) = std::mem::replace(&mut self.counted, (settled, lost));
        let expected = settled.checked_sub(before).filter(|&n| n > 0)?;
        // A report never loses more than its packets.
        Some(Downstream {
            expected,
            lost: lost.saturating_sub(lost_before).min(expected),
        })
    }
}

/// Which extended sequence numbers of one stream were recorded (received, or sent): the first, the
/// highest, how many, and which of the latest 128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeqRecord {
    first: u64,
    max: u64,
    count: u64,
    /// Bit `i`: `max - i` was recorded.
    window: u128,
}

impl SeqRecord {
    fn starting_at(seq: u64) -> Self {
        SeqRecord {
            first: seq,
            max: seq,
            count: 1,
            window: 1,
        }
    }

    /// `seq` into `record`, started by it if there is none yet.
    pub(crate) fn record(record: &mut Option<SeqRecord>, seq: u64) {
        match record {
            Some(r) => r.insert(seq),
            None => *record = Some(SeqRecord::starting_at(seq)),
        }
    }

    /// Record `seq` (once: again among the latest 128 changes nothing).
    fn insert(&mut self, seq: u64) {
        if seq > self.max {
            let ahead = seq - self.max;
            self.window = if ahead >= u128::BITS.into() {
                0
            } else {
                self.window << ahead
            };
            self.window |= 1;
            self.max = seq;
        } else {
            let behind = self.max - seq;
            if behind < u128::BITS.into() {
                let bit = 1u128 << behind;
                if self.window & bit != 0 {
                    return;
                }
                self.window |= bit;
            }
            self.first = self.first.min(seq);
        }
        self.count += 1;
    }

    /// The first sequence number recorded.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// How many sequence numbers from the first through `seq` were not recorded (as far as the latest
    /// 128 tell: of older ones, fewer).
    pub(crate) fn missing_through(&self, seq: u64) -> u64 {
        if seq < self.first {
            return 0;
        }
        let seq = seq.min(self.max);
        let behind = self.max - seq;
        let after = if behind >= u64::from(u128::BITS) {
            self.window
        } else {
            self.window & ((1u128 << behind) - 1)
        };
        let recorded_through = self.count.saturating_sub(u64::from(after.count_ones()));
        (seq - self.first + 1).saturating_sub(recorded_through)
    }
}

/// A receiver report's cumulative loss from its raw field: a signed 24-bit figure, of which a negative
/// one (more duplicates than losses) counts as none.
fn cumulative_loss(raw: u64) -> u64 {
    if raw >= 0x80_0000 {
        0
    } else {
        raw
    }
}

/// How often str0m reports stream statistics: among them what a subscriber's latest receiver report said
/// (the loss feedback's input, `loss_feedback.rs`). At 5 s the statistics were half the time from a
/// listener's loss to its speaker's encoder (12 s in virtual time, 7 s at 1 s); the extra statistics
/// cost 0.1–0.3 % more instructions per forwarded packet and 1.4 % per mixed participant-tick
/// (`scripts/callgrind.py`, docs/loadtest.md). Read this often, a report that counts a reordered packet
/// still in flight as lost is seen before a later one takes it back: [`HELD_REPORTS`] is why that
/// does not make a clean call state loss (it did in the sixteenth session, before the hold).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Settings for creating a peer.
pub struct PeerParams<'a> {
    /// The address in the ICE candidate: the socket's bound (or explicitly mapped public) address. The
    /// only candidate of [`Peer::from_offer`]; [`Peer::from_offer_with_candidates`] takes a list instead.
    pub candidate_addr: SocketAddr,
    /// The certificate shared by every peer of the worker.
    pub dtls_cert: &'a DtlsCert,
    /// Slot streams to send (the room's K); extra recvonly m-lines in the offer stay unused.
    pub slots: usize,
    /// Answer Opus with `stereo=1; sprop-stereo=1`: the peer is sent a stereo mix (a spatial mixed room).
    pub stereo: bool,
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
    /// The RTP header forwarded packets are written from ([`Peer::send_slot`]); `None` when the
    /// negotiated extension ids need str0m's path.
    pub(crate) header: Option<send::HeaderTemplate>,
    /// The sequence numbers sent directly: the first is where the subscriber's receiver reports count
    /// from, so that its first report already counts (`RemoteTotals::interval`); those never sent are
    /// not the subscriber's loss. A forwarding slot keeps the gaps of its speaker's stream (so the
    /// subscriber conceals them), which the subscriber's reports count as lost: a speaker whose uplink
    /// lost 10 % made every listener's figure, and so the room's, 10 %, and every other speaker coded FEC
    /// for a loss none of its listeners had (`sim.rs`, `one_speakers_lossy_uplink_is_no_other_speakers_loss`).
    pub(crate) sent: Option<SeqRecord>,
}

pub struct Peer {
    id: ParticipantId,
    /// Boxed: str0m's `Rtc` is about 10 KB, and the core's participant table (a hash map, up to twice
    /// as many slots as entries) would otherwise hold it inline in every slot, used or not (issue 15).
    rtc: Box<Rtc>,
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
    /// The highest sequence number and cumulative loss of each outgoing stream's last receiver report,
    /// to report differences.
    remote_totals: Vec<(Mid, RemoteTotals)>,
    /// What the server received of the microphone stream, for the loss its reports state.
    mic_reception: Option<MicReception>,
    /// Measures the level of the microphone's packets that come without the audio-level extension (made
    /// on the first; a browser's never need it).
    mic_meter: Option<Box<crate::speakers::meter::LevelMeter>>,
    /// Where DTLS, RTP and RTCP go: the path of the client's latest verified nomination (a binding request
    /// with USE-CANDIDATE that our ICE agent authenticated), or the path its verified consent checks come
    /// from once the current one has gone silent (see [`Peer::checked`]). str0m's ICE-lite agent keeps
    /// sending to the highest-priority pair ever nominated until that pair has had no check for 15 s, so
    /// after a NAT rebinding (same client candidate, same priority, new source port) it would send to the
    /// dead address for 15 s; the controlling client's latest nomination is where it wants media
    /// (RFC 8445 §8.1.1). STUN replies still go where str0m sends them: to each request's source.
    client_path: Option<NetPath>,
    /// When anything (verified STUN, DTLS, RTP, RTCP) last arrived over `client_path`.
    client_path_heard: Option<Instant>,
    /// Transaction ids of the latest verified binding requests (nominations and consent checks), newest
    /// last (at most [`CHECKS_KEPT`]). MESSAGE-INTEGRITY does not cover the source address: someone who
    /// sees a client's check can resend it from elsewhere, and str0m takes the copy. A copy carries a
    /// transaction id already seen, so it never moves the media; a new check from the client does.
    checks: std::collections::VecDeque<[u8; 12]>,
    /// The SRTP keys the peer's DTLS connection exports, and the sender built from them at the first
    /// forwarded packet after they arrived ([`Peer::send_slot`]).
    keys: std::sync::Arc<dtls::KeyTap>,
    srtp: Option<srtp::SrtpSender>,
}

/// How many checks' transaction ids a peer remembers to recognise a replayed one: at the two checks a
/// second a browser sends at most once connected (Chromium's pings on its selected and backup pairs), the
/// last half minute (the ICE consent timeout). 768 bytes a peer.
const CHECKS_KEPT: usize = 64;

/// How long nothing at all must have arrived over the client's current path before its verified
/// consent checks from another path take the media there (a client that nominates only once, like
/// Firefox, after a NAT rebinding). A publishing client sends RTP every 20 ms, every 400 ms in Opus DTX,
/// so 2 s of silence is no pause of a live path; a browser checks consent every 2.5–5 s, so the media
/// follows a rebound Firefox at its first check at least 2 s after the rebinding. A client that checks
/// other pairs while its current one is live (Chromium's backup pairs) does not move the media.
pub const PATH_SILENCE: Duration = Duration::from_secs(2);

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
        self.client_path_heard = None;
        self.checks.clear();
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
        let builder = dtls::rtc_builder()
            .set_ice_lite(true)
            .set_dtls_cert(params.dtls_cert.clone())
            .set_local_ice_credentials(creds);
        let config =
            opus_only(builder, true, params.stereo).set_stats_interval(Some(STATS_INTERVAL));
        let (mut rtc, keys) = dtls::build_tapped(config, now);
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
        let lines = audio_mids.len();
        let mut mids = audio_mids.into_iter();
        let (first_mid, mic_dir) = mids
            .next()
            .ok_or(PeerError::MissingMedia("the microphone"))?;
        let mic_mid =
            matches!(mic_dir, Direction::RecvOnly | Direction::SendRecv).then_some(first_mid);
        // A receive-only offer (WHEP: one audio m-line the client only receives on) has no microphone:
        // its one line is its slot. A Chorus client's offer always has a microphone line and slots.
        let receive_only = lines == 1 && mic_dir == Direction::SendOnly && params.slots > 0;
        let slot_lines: Vec<(Mid, Direction)> = receive_only
            .then_some((first_mid, mic_dir))
            .into_iter()
            .chain(mids)
            .collect();
        let mic_pt = mic_mid.and_then(|m| opus_pt(&rtc, m));
        let mic_red_pt = mic_mid
            .filter(|m| red_mids.contains(m))
            .and_then(|m| red_pt(&rtc, m));

        let mut slots = Vec::with_capacity(params.slots);
        for (mid, dir) in slot_lines {
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
            let header = answer
                .media_lines
                .iter()
                .find(|line| line.mid() == mid)
                .and_then(|line| send::HeaderTemplate::new(ssrc, mid, &line.extmaps()));
            slots.push(SlotStream {
                mid,
                ssrc,
                pt,
                red_pt,
                header,
                sent: None,
            });
        }
        if params.slots > 0 && slots.is_empty() {
            return Err(PeerError::MissingMedia(
                "the slots (recvonly audio m-lines with Opus)",
            ));
        }

        let peer = Peer {
            id,
            rtc: Box::new(rtc),
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
            remote_totals: Vec::new(),
            mic_reception: None,
            mic_meter: None,
            client_path: None,
            client_path_heard: None,
            checks: std::collections::VecDeque::with_capacity(CHECKS_KEPT),
            keys,
            srtp: None,
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

    /// Prefetch what sending on slot `slot` directly touches beyond the peer itself: the slot's stream
    /// (its header template) and the SRTP key ([`crate::prefetch`]).
    pub(crate) fn prefetch_slot(&self, slot: usize) {
        if let Some(stream) = self.slots.get(slot) {
            crate::prefetch::prefetch(stream);
        }
        if let Some(srtp) = &self.srtp {
            srtp.prefetch();
        }
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

    /// Make the receiver reports of the microphone stream `ssrc` state at least `fraction` (1/256) lost
    /// (`core/loss_feedback.rs`); the fraction each report's interval lost when it is higher, unless
    /// `floor_only` (the floor then holds the server's own count of the stream's loss).
    pub fn set_mic_loss_floor(&mut self, ssrc: u32, fraction: u8, floor_only: bool) {
        if let Some(stream) = self.rtc.direct_api().stream_rx(&ssrc.into()) {
            stream.set_reported_loss_floor(fraction);
            stream.set_reports_interval_loss(!floor_only);
        }
    }

    /// The least fraction lost (1/256) the receiver reports of the microphone stream `ssrc` state.
    pub fn mic_loss_floor(&mut self, ssrc: u32) -> Option<u8> {
        self.rtc
            .direct_api()
            .stream_rx(&ssrc.into())
            .map(|s| s.reported_loss_floor())
    }

    /// The Opus payload type the microphone sends.
    pub fn mic_opus_pt(&self) -> Option<Pt> {
        self.mic_pt
    }

    /// The RFC 6464 level of a microphone packet that came without one (its Opus `payload`, a RED
    /// packet's primary), measured by decoding it (`speakers::meter`): 0 loudest … 127 silence, `None`
    /// when it does not decode.
    pub(crate) fn measure_mic_level(&mut self, now: Instant, payload: &[u8]) -> Option<u8> {
        self.mic_meter.get_or_insert_default().level(now, payload)
    }

    /// The RED payload type the microphone may send (the client offered RED).
    pub fn mic_red_pt(&self) -> Option<Pt> {
        self.mic_red_pt
    }

    /// Feed a datagram from the network, received over `path`. Returns why the media moved to `path`,
    /// if this datagram moved it (see [`Peer::client_path`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        path: NetPath,
        data: &[u8],
    ) -> Result<Option<PathMove>, PeerError> {
        let Some(input) = net_input(now, path, data) else {
            // Not STUN, DTLS, RTP or RTCP: str0m refuses to classify it.
            return Ok(None);
        };
        let rtc = &mut self.rtc;
        let moved = if is_binding_request(data) && guard(|| rtc.accepts(&input)).unwrap_or(false) {
            self.checked(now, path, data)
        } else {
            None
        };
        if self.client_path == Some(path) {
            self.client_path_heard = Some(now);
        }
        let rtc = &mut self.rtc;
        guard(|| rtc.handle_input(input))??;
        Ok(moved)
    }

    /// The client sent `request` over `path`, a binding request our ICE agent verified. The media moves
    /// there when it is a nomination, or when nothing has arrived over the current path for
    /// [`PATH_SILENCE`] (the client moved without nominating again); never for a copy of a request already
    /// taken (a replay from another address), and never before the client's first nomination.
    fn checked(&mut self, now: Instant, path: NetPath, request: &[u8]) -> Option<PathMove> {
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&request[8..20]);
        if self.checks.contains(&transaction) {
            return None;
        }
        if self.checks.len() == CHECKS_KEPT {
            self.checks.pop_front();
        }
        self.checks.push_back(transaction);
        if self.client_path == Some(path) {
            return None;
        }
        let cause = if is_nomination(request) {
            PathMove::Nomination
        } else {
            let silent = self
                .client_path_heard
                .is_some_and(|heard| now.saturating_duration_since(heard) >= PATH_SILENCE);
            if !silent {
                return None;
            }
            PathMove::Silence
        };
        let old = self.client_path.replace(path);
        self.client_path_heard = Some(now);
        let old = old?;
        tracing::debug!(participant = %self.id, from = %old.remote, to = %path.remote,
            transport = path.transport.as_str(), cause = cause.as_str(),
            "the client's media moved to another path");
        Some(cause)
    }

    /// Where DTLS, RTP and RTCP go: the path of the client's latest verified nomination, or of its
    /// verified checks since the previous path went silent; `None` before the first nomination.
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

    /// Whether str0m still considers the peer alive.
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }
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
