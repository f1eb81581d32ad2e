//! One participant's media in the engine: a publisher's frames sent, a subscriber's packets counted per
//! stream (loss, jitter, latency stamps), decoded audio searched for chirps, and the snapshots and final
//! stream figures.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use media_core::audio::FRAME_SAMPLES;
use media_core::client::{ClientOutput, ReceivedAudio};

use crate::net::Outgoing;
use crate::stamp::{self, Stamp};
use crate::stats::StreamStats;

use super::{is_rtp, Loop, Snapshot, StreamReport, Timer, FRAME};

impl Loop {
    /// A publisher's 20 ms frame is due (scheduled at `due`, now is `now`).
    pub(super) fn frame(&mut self, now: Instant, due: Instant, index: usize) {
        let frames = self.config.frames.clone();
        let epoch = self.config.epoch;
        let chirp_period = self.config.chirp_period;
        let Some(Some(p)) = self.parts.get_mut(index) else {
            return;
        };
        // Next frame on the 20 ms grid; if we fell behind by more than a frame, skip rather than burst.
        let mut next = due + FRAME;
        if next <= now {
            next = now + FRAME;
        }
        p.next_frame = Some(next);
        self.timers.push(Reverse((next, Timer::Frame, index)));
        // Mix mode: a chirp replaces the voice for a few frames, one per period and room, from the room's
        // chirpers in turn. A turn overdue by a whole period (its talker not sending: not joined yet, or
        // gone) passes to whoever is sending.
        if let (Some(me), Some(period), None) = (p.spec.chirper, chirp_period, p.chirp_pos) {
            let room = self
                .chirp_turns
                .entry(p.spec.room)
                .or_insert((now, me.turn));
            if me.take(room, now, period) {
                p.chirp_pos = Some(0);
            }
        }
        let (frame, talking) = if let Some(pos) = p.chirp_pos {
            if pos == frames.chirp_onset_frame {
                self.chirps.insert(p.spec.room, now);
            }
            p.chirp_pos = (pos + 1 < frames.chirp.len()).then_some(pos + 1);
            (&frames.chirp[pos], true)
        } else {
            let voice = &frames.voices[p.spec.voice % frames.voices.len()];
            let f = &voice[p.frame_no % voice.len()];
            p.frame_no += 1;
            let talking = p.talker.as_mut().is_some_and(|t| t.next_frame());
            (f, talking)
        };
        let frame = if talking {
            frame
        } else if self.config.dtx {
            // A DTX sender in silence: media time passes, nothing is sent.
            p.peer.skip_audio(FRAME_SAMPLES as u32);
            return;
        } else {
            &frames.silence
        };
        self.snap
            .send_late_ms
            .push(now.saturating_duration_since(due).as_secs_f64() * 1e3);
        let sent_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        stamp::stamp_into(
            &frame.opus,
            Stamp {
                sender: index as u32,
                sent_ns,
            },
            &mut self.stamped,
        );
        if p.peer
            .send_audio(now, &self.stamped, FRAME_SAMPLES as u32, frame.level)
            .is_err()
        {
            self.snap.peer_errors += 1;
            p.alive = false;
            return;
        }
        self.snap.tx_rtp += 1;
    }

    pub(super) fn drain(&mut self, now: Instant, index: usize) {
        loop {
            let Some(Some(p)) = self.parts.get_mut(index) else {
                return;
            };
            let out = match p.peer.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    p.alive = false;
                    self.snap.peer_errors += 1;
                    return;
                }
            };
            match out {
                ClientOutput::Timeout(t) => {
                    if p.timeout != Some(t) {
                        p.timeout = Some(t);
                        self.timers.push(Reverse((t, Timer::Peer, index)));
                    }
                    return;
                }
                ClientOutput::Transmit(t) => {
                    let rtp = is_rtp(&t.contents);
                    if !rtp {
                        self.snap.tx_other += 1;
                    }
                    if self.config.drop_rtp > 0.0
                        && rtp
                        && self.drop_rng.unit() < self.config.drop_rtp
                    {
                        self.snap.injected_drops += 1;
                        continue;
                    }
                    self.out.push(Outgoing {
                        source: p.ip,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    });
                }
                ClientOutput::Connected => {
                    self.snap.connected += 1;
                    if let Some(tx) = p.connected.take() {
                        let _ = tx.send(now);
                    }
                    if p.talker.is_some() {
                        // Spread publishers over the 20 ms grid.
                        let phase = Duration::from_micros(self.rng.next_u64() % 20_000);
                        let t = now + phase;
                        p.next_frame = Some(t);
                        self.timers.push(Reverse((t, Timer::Frame, index)));
                    }
                }
                ClientOutput::Disconnected => {
                    p.alive = false;
                    self.snap.disconnects += 1;
                    return;
                }
                ClientOutput::Audio(a) => self.audio(index, a),
            }
        }
    }

    pub(super) fn audio(&mut self, index: usize, a: ReceivedAudio) {
        let epoch = self.config.epoch;
        let Some(Some(p)) = self.parts.get_mut(index) else {
            return;
        };
        self.snap.rx_packets += 1;
        // str0m's arrival is when we handed it the datagram; the kernel's is when it reached the socket.
        let arrival = self.arrival.unwrap_or(a.arrival);
        if let Some(tx) = p.first_audio.take() {
            let _ = tx.send(arrival);
        }
        p.last_audio = Some(arrival);
        p.streams
            .entry(a.ssrc)
            .or_insert_with(|| StreamStats::new(a.seq, epoch))
            .packet(a.seq, a.timestamp, arrival);
        if let Some(st) = stamp::read(&a.payload) {
            let sent = epoch + Duration::from_nanos(st.sent_ns);
            let ms = arrival.saturating_duration_since(sent).as_secs_f64() * 1e3;
            self.snap.latency_ms.push(ms);
        }
        if let Some(dec) = p.decoder.as_mut() {
            if a.slot == 0 {
                if let Ok(n) = dec.decode_float(&a.payload, &mut self.pcm, false) {
                    if let Some(off) = p.detector.feed(&self.pcm[..n]) {
                        if let Some(sent) = self.chirps.get(&p.spec.room) {
                            let delay = self.config.frames.chirp_codec_delay as f64 / 48.0;
                            let at = arrival.saturating_duration_since(*sent).as_secs_f64() * 1e3
                                + off as f64 / 48.0
                                - delay;
                            // Attribute a detection to the latest chirp only within half a chirp period:
                            // later "onsets" are not that chirp (a false trigger, e.g. on a concealment
                            // artefact) and would read as seconds of latency.
                            let window_ms = self
                                .config
                                .chirp_period
                                .map_or(1_000.0, |p| p.as_secs_f64() * 500.0);
                            if (0.0..window_ms).contains(&at) {
                                self.snap.chirp_ms.push(at);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn snapshot(&mut self, now: Instant) -> Snapshot {
        let mut by_room = self.retired.clone();
        self.snap.live.clear();
        for p in self.parts.iter().flatten() {
            let e = by_room.entry(p.spec.room).or_default();
            for s in p.streams.values() {
                e.0 += s.expected();
                e.1 += s.received;
            }
            if p.alive {
                self.snap.live.push((p.spec.index, p.last_audio));
            }
        }
        let expected = by_room.values().map(|v| v.0).sum();
        let received = by_room.values().map(|v| v.1).sum();
        self.snap.by_room = by_room;
        self.snap.expected = expected;
        self.snap.received = received;
        self.snap.at = Some(now);
        self.snap.engine_cpu_s = crate::floor::thread_cpu().total.as_secs_f64();
        self.snap.tool_socket_drops = u64::from(self.socket.dropped());
        let out = self.snap.clone();
        self.snap.latency_ms.clear();
        self.snap.chirp_ms.clear();
        self.snap.send_late_ms.clear();
        out
    }

    pub(super) fn streams(&self) -> Vec<StreamReport> {
        let mut v = Vec::new();
        for p in self.parts.iter().flatten() {
            for (ssrc, s) in &p.streams {
                v.push(StreamReport {
                    participant: p.spec.index,
                    ssrc: *ssrc,
                    expected: s.expected(),
                    received: s.received,
                    lost: s.lost(),
                    jitter_ms: s.jitter_ms(),
                });
            }
        }
        v.sort_by_key(|s| (s.participant, s.ssrc));
        v
    }
}
