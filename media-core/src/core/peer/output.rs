//! What a peer sends: RTP written into its slot streams, and draining str0m into the outbox.

use std::time::{Duration, Instant};

use str0m::media::Mid;
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Output};

use super::{
    cumulative_loss, guard, Downstream, MicReception, Peer, PeerError, PeerEvent, RemoteTotals,
    StreamStats,
};
use crate::core::net::{NetPath, NetTransmit, Transport};
use crate::core::outbox::Outbox;
use crate::core::router::is_stun;
use crate::ids::Ssrc;

impl Peer {
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
        let Some(stream) = self.slots.get_mut(slot) else {
            return Ok(());
        };
        let pt = match (red, stream.red_pt) {
            (false, _) => stream.pt,
            (true, Some(red_pt)) => red_pt,
            // A RED payload for a subscriber without RED would not decode: never sent.
            (true, None) => return Ok(()),
        };
        // Sent as far as the subscriber's reports go, whichever path carries it (the direct one records
        // its own): a packet written here while the direct path waits (an ICE restart) is not a gap.
        super::SeqRecord::record(&mut stream.sent, seq);
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
                            MicReception::on_packet(
                                &mut self.mic_reception,
                                *p.header.ssrc,
                                *p.seq_no,
                            );
                            events.push_back((id, PeerEvent::Rtp(p)));
                        }
                    }
                    Event::MediaEgressStats(s) => {
                        let nacks_received = self.nack_delta(s.mid, true, s.nacks);
                        let downstream = s.remote.and_then(|r| {
                            // Opus streams: an RTP clock of 48 kHz.
                            let jitter_ms = u64::from(r.jitter / 48);
                            self.downstream_delta(
                                s.mid,
                                *r.maximum_sequence_number,
                                r.packets_lost,
                                jitter_ms,
                            )
                        });
                        let stats = StreamStats {
                            rtt: s.rtt,
                            nacks_received,
                            downstream,
                            ..Default::default()
                        };
                        events.push_back((id, PeerEvent::Stats(stats)));
                    }
                    Event::MediaIngressStats(s) => {
                        let nacks_sent = self.nack_delta(s.mid, false, s.nacks);
                        let upstream = self
                            .mic_reception
                            .as_mut()
                            .filter(|_| Some(s.mid) == self.mic_mid)
                            .and_then(MicReception::interval);
                        let stats = StreamStats {
                            rtt: s.rtt,
                            jitter: (s.packets > 0)
                                .then(|| Duration::from_secs_f64(s.jitter as f64 / 48_000.0)),
                            nacks_sent,
                            upstream,
                            ..Default::default()
                        };
                        events.push_back((id, PeerEvent::Stats(stats)));
                    }
                    _ => {}
                },
            }
        }
    }

    /// What a stream's receiver reports counted since the previous statistics, or for the first, since
    /// the stream's first packet sent directly (`None` when that is unknown, or no new packet was
    /// covered).
    fn downstream_delta(
        &mut self,
        mid: Mid,
        max_seq: u64,
        lost: u64,
        jitter_ms: u64,
    ) -> Option<Downstream> {
        let sent = self
            .slots
            .iter()
            .find(|s| s.mid == mid)
            .and_then(|s| s.sent);
        // What the speaker's uplink lost (never sent) is not this subscriber's loss. The result is a
        // cumulative loss already, which `RemoteTotals` reads as it is (`cumulative_loss` keeps any
        // figure below 0x800000).
        let lost =
            cumulative_loss(lost).saturating_sub(sent.map_or(0, |s| s.missing_through(max_seq)));
        let Some((_, last)) = self.remote_totals.iter_mut().find(|(m, _)| *m == mid) else {
            let first_seq = sent.map(|s| s.first());
            let (last, delta) = match first_seq {
                // Counted from just before the first packet, when the report is about packets since.
                Some(first) if (first..first + (1 << 16)).contains(&max_seq) => {
                    let mut last = RemoteTotals::at(first.saturating_sub(1), 0);
                    let delta = last.interval(max_seq, lost, jitter_ms);
                    (last, delta)
                }
                // Otherwise only where the next interval starts: the loss before it is not this call's.
                _ => (RemoteTotals::at(max_seq, lost), None),
            };
            self.remote_totals.push((mid, last));
            return delta;
        };
        last.interval(max_seq, lost, jitter_ms)
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
}
