//! The 20 ms mix tick: rank and decode the talkers, sum them, pick each listener's encode and send.

use std::time::Instant;

use super::duck::apply_ramp;
use super::input::{decode_member, report_recovered_red};
use super::jitter::Playout;
use super::output::{Encoded, OutEncoder, TickPacket};
use super::{
    Feed, MixPacket, MixTap, Mixer, DECODE_HANGOVER_TICKS, DELAY_SAMPLE_TICKS, PAUSE_SILENCE_TICKS,
    PERSONAL_HANGOVER_TICKS, PERSONAL_MAX_HANGOVER_TICKS, QUIET_SWITCH_LEVEL,
    SHARED_SWITCH_MAX_TICKS, SILENT_LEVEL,
};
use crate::audibility::Audibility;
use crate::audio::{duration_samples, FRAME_DURATION, FRAME_SAMPLES};
use crate::ids::ParticipantId;
use crate::speakers::csrc_levels::{Contributors, MAX_CSRCS};
use crate::stats::{MixStats, Samples};

impl Mixer {
    /// The tick of grid point `due`: every input plays and every output is stamped as of that point, however
    /// late it actually runs, so a late worker delays the audio but never leaves a hole in it.
    pub(super) fn tick_at(
        &mut self,
        due: Instant,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
        samples: &mut Samples,
        audibility: Option<&Audibility>,
    ) {
        stats.ticks += 1;
        self.ticks += 1;
        let grid = self.grid_index(due);
        self.last_due = Some(due);

        // 1. Pull playout from every publisher; rank the voiced ones by level without decoding.
        self.talkers.clear();
        self.talker_levels.clear();
        let mut candidates: Vec<(u8, usize)> = Vec::new();
        let mut any_active = false;
        for (i, m) in self.members.iter_mut().enumerate() {
            m.talking = false;
            m.voiced_level = None;
            m.spans.clear();
            if !m.publishes {
                continue;
            }
            let mut have = m.surplus.len();
            // Bounded: every span covers at least one sample; a tick needs at most 960 of them, and spans
            // are at least 2.5 ms (120 samples) long, so 8 spans always suffice.
            for _ in 0..8 {
                if have >= FRAME_SAMPLES {
                    break;
                }
                // The span starts to play after what the member already holds for this tick.
                let span = m
                    .jitter
                    .pop(due, u32::try_from(have).expect("less than a tick is held"));
                have += span.samples() as usize;
                m.spans.push(span);
            }
            let mut audible = false;
            for span in &m.spans {
                let level = match span {
                    Playout::Packet { audio_level, .. } => {
                        audible = true;
                        let l = audio_level.unwrap_or(0);
                        (l < SILENT_LEVEL).then_some(l)
                    }
                    // Concealment continues a talker (at its last level); it does not start one.
                    Playout::Fec { .. } | Playout::Plc { .. } if m.was_talking => {
                        audible = true;
                        Some(m.last_level)
                    }
                    _ => None,
                };
                if let Some(l) = level {
                    m.voiced_level = Some(m.voiced_level.map_or(l, |v| v.min(l)));
                }
                if let Playout::Packet {
                    audio_level: Some(l),
                    ..
                } = span
                {
                    m.last_level = *l;
                }
            }
            if let Some(l) = m.voiced_level {
                m.decode_hangover = DECODE_HANGOVER_TICKS;
                candidates.push((l, i));
            } else if m.was_talking && m.decode_hangover > 0 && audible {
                // The quiet packets right after a talk spurt still carry its end (codec delay): keep
                // decoding them into the mix, ranked after every voiced input.
                m.decode_hangover -= 1;
                candidates.push((SILENT_LEVEL.max(m.last_level), i));
            } else {
                m.decode_hangover = 0;
            }
            any_active |= m.jitter.is_active();
            // The buffer knows a gap was loss (not DTX) only once the packet after it plays.
            let lost = m.jitter.stats().lost;
            stats.packets_lost += lost.saturating_sub(m.lost_reported);
            m.lost_reported = lost;
            report_recovered_red(m, stats);
            if self.ticks.is_multiple_of(DELAY_SAMPLE_TICKS) && m.jitter.is_active() {
                Samples::push(
                    &mut samples.jitter_buffer_delay_seconds,
                    m.jitter.target_delay().as_secs_f64(),
                );
            }
        }
        candidates.sort_unstable();
        candidates.truncate(MAX_CSRCS);

        // 2. Decode the talkers and sum those who talk to the room into the full mix (a whisper or a team
        //    talk is only in its listeners' own mixes, and never in a broadcast mount's).
        //    An announcement's duck lowers every other talker's frame here, before any sum: the full mix,
        //    mix-minus, own and spatial mixes all hear the same ducked voices.
        self.mix.iter_mut().for_each(|s| *s = 0.0);
        let mut list = Vec::with_capacity(candidates.len());
        let (duck_start, duck_end) = self.duck.advance();
        let ducking = duck_start < 1.0 || duck_end < 1.0;
        for &(level, i) in &candidates {
            let m = &mut self.members[i];
            if decode_member(m, &mut self.decode_buf, stats).is_err() {
                continue;
            }
            if ducking && !self.duck.is_exempt(m.id) {
                apply_ramp(&mut m.frame, duck_start, duck_end);
            }
            m.talking = true;
            m.public = audibility.is_none_or(|a| a.is_public(m.id));
            if !m.public {
                self.talkers.push(i);
                self.talker_levels.push((i, level.min(127)));
                continue;
            }
            for (acc, s) in self.mix.iter_mut().zip(&m.frame) {
                *acc += *s;
            }
            if let Some(ssrc) = m.ssrc {
                list.push((ssrc.0, level.min(127)));
            }
            self.talkers.push(i);
            self.talker_levels.push((i, level.min(127)));
        }
        // Built once per tick: the shared mix's listeners all get this one (levels shared, not copied).
        let contributors = Contributors::new(list);
        for m in &mut self.members {
            if !m.talking {
                // Not decoded this tick: the decoder restarts from the last packet played (see `prime`).
                // What the spans covered beyond this tick is still owed to the next one (as silence: the
                // member was silent), or its buffer would see time vanish and add it back every tick.
                let covered =
                    m.surplus.len() + m.spans.iter().map(|s| s.samples() as usize).sum::<usize>();
                m.surplus.clear();
                m.surplus.resize(covered.saturating_sub(FRAME_SAMPLES), 0.0);
                m.prime = match m.spans.last() {
                    Some(Playout::Packet { payload, .. }) => Some(payload.clone()),
                    _ => None,
                };
            }
            m.was_talking = m.talking;
        }

        // After a quiet move of the grid (`move_in_quiet`) this tick comes less than a frame after the
        // last: quiet, it sends the listeners whose silence goes on a fill up to where the next tick's
        // frame starts (`fill_after_quiet_move`); if someone is heard after all, the stream stays
        // continuous and runs ahead by the move.
        let fill = match self.moved_quietly.take() {
            Some(back) if self.is_quiet() => Some(self.fill_after_quiet_move(due, back)),
            Some(back) => {
                self.timeline_lead += back;
                None
            }
            None => None,
        };
        // The listeners' timestamps and the tap's tick numbers run with the wall clock (see `timeline`): a
        // whole tick later is exactly one frame more, an idle spell as long in samples as in time.
        let at = duration_samples(self.timeline(due));
        let frame_ts = at as u32; // RTP timestamps wrap
        let frame_no = (at + FRAME_SAMPLES as u64 / 2) / FRAME_SAMPLES as u64;
        if let Some(audibility) = audibility.filter(|a| a.is_spatial()) {
            // A spatial room: a stereo mix per listener (steps 3 and 4 of its own).
            self.spatial_outputs(frame_ts, fill, audibility, out, stats);
            self.tap_full_mix(grid, frame_no, None, stats);
            self.after_tick(grid, self.talkers.len(), any_active, stats);
            return;
        }
        // 3. Decide each listener's encode. A listener who starts hearing its own mix-minus continues the
        //    shared stream it was hearing: its personal encoder starts as a copy of the shared one, taken
        //    before this tick's shared encode.
        //    A former talker moves back to the shared encode once its hangover is over and the mix is quiet:
        //    its decoder's state (pitch history above all) then no longer matters.
        //    Under a rule (whispers, team talk, volumes: see `crate::audibility`) a listener who does not
        //    hear exactly the full mix gets a mix of its own, through the same personal encoder.
        //    A listener of the shared mix hears its protected encode while it states loss, its clean one
        //    otherwise; it moves between them where a move back from a personal encoder would (the two
        //    encoders' states differ), or at once if it was not hearing the shared mix.
        let policy = audibility.filter(|a| !a.is_open());
        let talker_ids: Vec<ParticipantId> =
            self.talkers.iter().map(|&i| self.members[i].id).collect();
        let public_talkers = self
            .talkers
            .iter()
            .filter(|&&i| self.members[i].public)
            .count();
        let mix_quiet = crate::audio::audio_level_from_samples(&self.mix) >= QUIET_SWITCH_LEVEL;
        // The highest loss stated by a listener of the protected encode, if it has any; whether the clean
        // one has any (a listener whose class changes moves at a quiet tick, as above).
        let mut protected_loss: Option<u8> = None;
        let mut clean_listeners = false;
        for m in &mut self.members {
            let in_mix = m.talking && m.public;
            m.custom =
                m.subscribes && policy.is_some_and(|a| !a.hears_public_mix(m.id, &talker_ids));
            m.heard_talkers = match policy.filter(|_| m.custom) {
                Some(a) => talker_ids
                    .iter()
                    .filter(|&&t| a.heard(m.id, t).is_some())
                    .count(),
                None => public_talkers - usize::from(in_mix),
            };
            if in_mix || m.custom {
                m.since_talked = 0;
            } else if m.personal.is_some() {
                m.since_talked += 1;
                if m.since_talked > PERSONAL_MAX_HANGOVER_TICKS
                    || (m.since_talked > PERSONAL_HANGOVER_TICKS && mix_quiet)
                {
                    m.personal = None;
                }
            }
            if !m.subscribes {
                continue;
            }
            // A talker hears its own mix (never the shared one, which holds its voice), from a copy of
            // the shared encoder if it was hearing that: also in the tick it starts talking as its talkers
            // stop (it hears nobody then), so that its stream ends with the shared stream's last frame
            // (step 4), not without a frame in that tick (nor, with DTX, a DTX packet after).
            let ends_shared = m.feed == Feed::Shared;
            if (m.heard_talkers > 0 || ends_shared) && (in_mix || m.custom) && m.personal.is_none()
            {
                let heard = if m.protected {
                    &self.protected
                } else {
                    &self.clean
                };
                m.personal = match (heard.encoder(), m.feed) {
                    (Some(shared), Feed::Shared) => shared.personal_copy(&self.config).ok(),
                    _ => OutEncoder::new(&self.config, self.config.complexity).ok(),
                };
            }
            let protect = self.config.fec && m.expected_loss > 0;
            if protect == m.protected {
                m.switch_wait = 0;
            } else if m.feed != Feed::Shared
                || mix_quiet
                || m.switch_wait >= SHARED_SWITCH_MAX_TICKS
            {
                if m.feed == Feed::Shared {
                    if protect {
                        self.protected.take_listener_from(&self.clean, grid);
                    } else {
                        self.clean.take_listener_from(&self.protected, grid);
                    }
                }
                m.protected = protect;
                m.switch_wait = 0;
            } else {
                m.switch_wait += 1;
            }
            // A talker (or a listener under a rule) hears a mix of its own, never the shared one: one who
            // hears nobody yet (the room's only talker, sent nothing, so never reporting) must not tune
            // the protected encode with its unreported figure, nor keep an encode alive.
            let shared_listener = m.personal.is_none() && !in_mix && !m.custom;
            if shared_listener && m.protected {
                protected_loss = Some(protected_loss.unwrap_or(0).max(m.expected_loss));
            }
            clean_listeners |= shared_listener && !m.protected;
        }
        // Each encode of the shared mix ends with its last listener (the clean one's may be a broadcast
        // tap, which takes it every tick).
        if !clean_listeners && !self.tap {
            self.clean.end();
        }
        if protected_loss.is_none() {
            self.protected.end();
        }
        let protected_loss = protected_loss.unwrap_or(0);

        // 4. Encode: the full mix for the listeners who do not talk (clean and protected, each at most
        //    once), one mix-minus per talker.
        let mut clean_packet: TickPacket = None;
        let mut protected_packet: TickPacket = None;
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            let in_mix = m.talking && m.public;
            let was_fed = m.feed != Feed::Nothing;
            m.feed = Feed::Nothing;
            if !m.subscribes {
                continue;
            }
            let others = m.heard_talkers;
            // Nothing to hear. The listener is sent one last frame of its (now silent) mix from the
            // encoder it was hearing: that flushes the encoder's lookahead (the last milliseconds of the
            // talk spurt) and ends the spurt on silence. Then the room's silence frame: without DTX
            // always; with DTX for `PAUSE_SILENCE_TICKS` (a pause inside speech is not a gap that a
            // browser conceals and time-compresses after), the last of them the DTX packet, then nothing.
            let last_frame = others == 0 && was_fed;
            if others == 0 && !last_frame {
                // (none in a DTX gap; a fill right after a quiet move)
                if let Some((ts, frame)) = self.pause.packet_for(m, self.config.dtx, frame_ts, fill)
                {
                    m.send(ts, frame, Contributors::default(), 127, out);
                    stats.sent(false);
                }
                continue;
            }
            let mut heard = None;
            if let Some(a) = policy.filter(|_| m.custom) {
                // Its own mix: each talker it hears at its gain (volume included).
                self.scratch.iter_mut().for_each(|s| *s = 0.0);
                let mut list = Vec::new();
                for &(t, level) in &self.talker_levels {
                    let talker = &self.members[t];
                    let Some(h) = a.heard(self.members[i].id, talker.id) else {
                        continue;
                    };
                    for (acc, s) in self.scratch.iter_mut().zip(&talker.frame) {
                        *acc += h.gain * *s;
                    }
                    if let Some(ssrc) = talker.ssrc {
                        list.push((ssrc.0, level));
                    }
                }
                heard = Some(Contributors::new(list));
            } else {
                self.scratch.copy_from_slice(&self.mix);
                if in_mix {
                    let m = &self.members[i];
                    for (acc, s) in self.scratch.iter_mut().zip(&m.frame) {
                        *acc -= *s;
                    }
                }
            }
            let m = &mut self.members[i];
            let packet = if let Some(encoder) = m.personal.as_mut() {
                stats.frames_encoded += 1;
                m.feed = Feed::Personal;
                encoder.set_expected_loss(m.expected_loss);
                encoder.encode(&mut self.scratch, &mut self.encoded)
            } else if in_mix || m.custom {
                continue; // libopus could not create the personal encoder; never send a talker itself
            } else {
                // Each encoded at most once per tick, for the first listener that needs it.
                let (encode, packet, loss) = if m.protected {
                    (&mut self.protected, &mut protected_packet, protected_loss)
                } else {
                    (&mut self.clean, &mut clean_packet, 0)
                };
                if packet.is_none() {
                    self.scratch.copy_from_slice(&self.mix);
                    *packet = encode.encode(
                        grid,
                        loss,
                        &self.config,
                        &mut self.scratch,
                        &mut self.encoded,
                    );
                    if packet.is_none() {
                        continue; // libopus could not create the encoder
                    }
                    stats.frames_encoded += 1;
                }
                m.feed = Feed::Shared;
                packet.clone().flatten()
            };
            let Some(encoded) = packet else {
                continue;
            };
            if last_frame {
                m.feed = Feed::Nothing;
                m.pause_ticks = PAUSE_SILENCE_TICKS;
            }
            let m = &mut self.members[i];
            let heard = match (heard, m.ssrc) {
                (Some(own_mix), _) => own_mix,
                (None, Some(own)) if in_mix => contributors.without(own.0),
                (None, _) => contributors.clone(),
            };
            m.send(frame_ts, encoded.payload, heard, encoded.level, out);
            stats.sent(encoded.fec);
        }
        self.tap_full_mix(grid, frame_no, clean_packet, stats);
        self.after_tick(grid, self.talkers.len(), any_active, stats);
    }

    /// 4b. The broadcast tap: the full mix, from the shared clean encode (made now if no listener needed
    /// it; always in a spatial room, whose listeners each get their own stereo mix).
    fn tap_full_mix(
        &mut self,
        grid: u64,
        frame_no: u64,
        mut clean_packet: TickPacket,
        stats: &mut MixStats,
    ) {
        if !self.tap {
            return;
        }
        if clean_packet.is_none() {
            self.scratch.copy_from_slice(&self.mix);
            clean_packet =
                self.clean
                    .encode(grid, 0, &self.config, &mut self.scratch, &mut self.encoded);
            if clean_packet.is_some() {
                stats.frames_encoded += 1;
            }
        }
        if let Some(Some(Encoded { payload, .. })) = clean_packet {
            let talkers = self.talkers.iter().map(|&i| self.members[i].id).collect();
            self.tapped.push(MixTap {
                tick: frame_no,
                payload,
                talkers,
            });
        }
    }

    /// Step 5: keep ticking while anything is buffered, playing or in hangover, or a mount listens;
    /// otherwise sleep until a packet. A ticking room's grid follows its talkers (`rephase`).
    fn after_tick(&mut self, grid: u64, talkers: usize, any_active: bool, stats: &mut MixStats) {
        let busy = self.tap
            || any_active
            || talkers > 0
            || self.members.iter().any(|m| {
                m.feed != Feed::Nothing
                    || m.personal.is_some()
                    || m.pause_ticks > 0
                    || (!self.config.dtx && m.subscribes)
            });
        self.next_tick = busy.then(|| self.epoch + FRAME_DURATION * (grid + 1) as u32);
        if busy {
            self.move_in_quiet(stats);
            self.rephase(stats);
        } else {
            // the next packet wakes the room and sets its phase
            self.pending_move = None;
            self.clean.end();
            self.protected.end();
        }
    }
}
