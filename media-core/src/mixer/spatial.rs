//! The outputs of a spatial mixed room: a **stereo** mix per listener, each talker it hears attenuated by
//! the room's fade model and panned by equal power to the side it is on (both from
//! the room's [`Audibility`], the one place that decides who hears whom).
//!
//! Encoding is shared where the audio is: a listener's mix is described by its *key*, the talkers it hears
//! with their gain quantised to [`GAIN_STEP_DB`] and their pan to [`PAN_STEPS`] steps, and the mix is
//! rendered from the quantised values, so listeners with equal keys get bit-identical audio and share one
//! encode (players standing together, or hearing one talker from the same side at the same distance). A
//! listener who hears nobody is sent one last frame that flushes its encoder, then silence frames: for 2 s
//! with DTX ([`PAUSE_SILENCE_TICKS`]), then nothing; without DTX, always.
//!
//! Each shared encode belongs to one listener's encoder (the group's *leader*); the others' own encoders
//! are dropped. A listener whose group changes continues from an exact copy of the encoder whose packets it
//! was decoding (copied before this tick's encode), so its decoder sees one continuous stream, as in the
//! mono mixer's move between the shared and a personal encoder. Only two listeners that both had their own
//! stream and now share one hear a change of encoder state (rare: it needs equal keys).

use std::collections::HashMap;
use std::sync::Arc;

use super::output::{Encoded, Fill, OutEncoder};
use super::{Feed, MixPacket, Mixer, PAUSE_SILENCE_TICKS};
use crate::audibility::Audibility;
use crate::audio::FRAME_SAMPLES;
use crate::ids::ParticipantId;
use crate::spatial::equal_power_gains;
use crate::speakers::csrc_levels::Contributors;
use crate::stats::MixStats;

/// Gains are quantised to this step (dB) for sharing encodes: below what a listener can tell apart.
pub const GAIN_STEP_DB: f32 = 0.5;

/// Pans (−1..=1) are quantised to this many steps per side (about 1.8° of azimuth near the centre).
pub const PAN_STEPS: f32 = 32.0;

/// One talker in a listener's mix: (talker index in `Mixer::members`, gain in [`GAIN_STEP_DB`] steps, pan
/// in 1/[`PAN_STEPS`] steps).
pub(super) type KeyEntry = (u32, i16, i8);

/// The left and right gains a quantised (gain, pan) renders at.
fn quantised_gains(gain_steps: i16, pan_steps: i8) -> (f32, f32) {
    let gain = 10f32.powf(f32::from(gain_steps) * GAIN_STEP_DB / 20.0);
    equal_power_gains(gain, f32::from(pan_steps) / PAN_STEPS)
}

impl Mixer {
    /// Steps 3–4 of a tick in a spatial room (see the [module docs](self)): group the listeners by what
    /// they hear, render and encode each group's stereo mix once, send it to every member.
    /// `fill`: the tick comes right after a quiet move of the grid and sends only that (see
    /// [`Mixer::move_in_quiet`]).
    pub(super) fn spatial_outputs(
        &mut self,
        frame_ts: u32,
        fill: Option<Fill>,
        audibility: &Audibility,
        out: &mut Vec<MixPacket>,
        stats: &mut MixStats,
    ) {
        // 1. Every listener's key, and the groups of equal keys (in member order).
        let mut groups: HashMap<Vec<KeyEntry>, usize> = HashMap::new();
        let mut members_of: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.members.len() {
            let m = &self.members[i];
            if !m.subscribes {
                continue;
            }
            let mut key = std::mem::take(&mut self.members[i].spatial_key);
            key.clear();
            for &t in &self.talkers {
                if t == i {
                    continue;
                }
                if let Some(h) = audibility.heard(self.members[i].id, self.members[t].id) {
                    let gain = (h.gain_db() / GAIN_STEP_DB).round() as i16;
                    let pan = (h.pan * PAN_STEPS).round() as i8;
                    key.push((t as u32, gain, pan));
                }
            }
            if !key.is_empty() {
                let next = members_of.len();
                let g = *groups.entry(key.clone()).or_insert(next);
                if g == next {
                    members_of.push(Vec::new());
                }
                members_of[g].push(i);
            }
            self.members[i].spatial_key = key;
        }

        // The streams that end this tick for someone (a listener who now hears nobody was fed from them):
        // their encoders as they are before anything moves or encodes (a copy, unless the stream's own
        // listener hears nobody either, whose encoder step 3 uses as it is).
        let mut ending: Vec<(ParticipantId, Option<OutEncoder>)> = Vec::new();
        for m in &self.members {
            if !m.subscribes || !m.spatial_key.is_empty() || m.feed == Feed::Nothing {
                continue;
            }
            let Some(from) = m.heard_from.filter(|f| ending.iter().all(|(g, _)| g != f)) else {
                continue;
            };
            let Some(source) = self.index.get(&from).map(|&f| &self.members[f]) else {
                continue;
            };
            let own = source.spatial_key.is_empty() && source.heard_from == Some(from);
            let copy = if own {
                None
            } else {
                source.stereo.as_ref().and_then(|e| e.try_clone().ok())
            };
            ending.push((from, copy));
        }

        // 2. Each group's leader: the first member still fed by its own encoder, else the first member,
        //    whose encoder then starts as a copy of the one it was hearing (taken before anything encodes).
        let mut leaders = Vec::with_capacity(members_of.len());
        let mut starts: Vec<Option<Option<OutEncoder>>> = Vec::with_capacity(members_of.len());
        for group in &members_of {
            let own = group.iter().copied().find(|&i| {
                let m = &self.members[i];
                m.stereo.is_some() && m.heard_from == Some(m.id)
            });
            let leader = own.unwrap_or(group[0]);
            starts.push(own.is_none().then(|| {
                self.members[leader]
                    .heard_from
                    .and_then(|f| self.index.get(&f))
                    .and_then(|&f| self.members[f].stereo.as_ref())
                    .and_then(|e| e.try_clone().ok())
            }));
            leaders.push(leader);
        }
        for ((group, &leader), start) in members_of.iter().zip(&leaders).zip(starts) {
            if let Some(start) = start {
                self.members[leader].stereo = match start {
                    Some(copy) => Some(copy),
                    None => OutEncoder::stereo(&self.config).ok(),
                };
            }
            for &i in group {
                if i != leader {
                    self.members[i].stereo = None;
                }
            }
        }

        // 3. Listeners who hear nobody: one last frame of silence from the encoder they were hearing
        //    (flushing its lookahead; encoded once per stream, for everyone who shared it) if they were
        //    fed, then the silence frame: for `PAUSE_SILENCE_TICKS` with DTX, then nothing; always
        //    without.
        let mut last_frames: Vec<(ParticipantId, Option<Encoded>)> =
            Vec::with_capacity(ending.len());
        for (from, copy) in ending {
            let encoder = match copy {
                Some(copy) => Some(copy),
                None => self
                    .index
                    .get(&from)
                    .and_then(|&f| self.members[f].stereo.take()),
            };
            let last = encoder.and_then(|mut encoder| {
                self.stereo_buf.iter_mut().for_each(|s| *s = 0.0);
                stats.frames_encoded += 1;
                encoder.encode(&mut self.stereo_buf, &mut self.encoded)
            });
            last_frames.push((from, last));
        }
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if !m.subscribes || !m.spatial_key.is_empty() {
                continue;
            }
            let was_fed = m.feed != Feed::Nothing;
            m.feed = Feed::Nothing;
            let from = m.heard_from.take();
            if was_fed {
                let last = last_frames
                    .iter()
                    .find(|(f, _)| Some(*f) == from)
                    .and_then(|(_, e)| e.as_ref());
                if let Some(e) = last {
                    m.send(
                        frame_ts,
                        e.payload.clone(),
                        Contributors::default(),
                        e.level,
                        out,
                    );
                    stats.sent(e.fec);
                }
                m.stereo = None;
                m.pause_ticks = PAUSE_SILENCE_TICKS;
                continue;
            }
            m.stereo = None;
            if let Some((ts, frame)) = self.pause.packet_for(m, self.config.dtx, frame_ts, fill) {
                m.send(ts, frame, Contributors::default(), 127, out);
                stats.sent(false);
            }
        }

        // 4. Render and encode each group once; send it to all its members.
        for (group, &leader) in members_of.iter().zip(&leaders) {
            let leader_id = self.members[leader].id;
            self.stereo_buf.iter_mut().for_each(|s| *s = 0.0);
            let mut list: Vec<(u32, u8)> = Vec::new();
            for &(t, gain, pan) in &self.members[leader].spatial_key {
                let talker = &self.members[t as usize];
                let (l, r) = quantised_gains(gain, pan);
                for (frame, s) in self.stereo_buf.chunks_exact_mut(2).zip(&talker.frame) {
                    frame[0] += s * l;
                    frame[1] += s * r;
                }
                if let Some(ssrc) = talker.ssrc {
                    let level = self
                        .talker_levels
                        .iter()
                        .find(|(i, _)| *i == t as usize)
                        .map_or(127, |(_, l)| *l);
                    // The level as heard: the talker's, lowered by its fade (RFC 6465: −dBov).
                    let attenuation = (-f32::from(gain) * GAIN_STEP_DB).round().max(0.0) as u32;
                    let heard = (u32::from(level) + attenuation).min(127) as u8;
                    list.push((ssrc.0, heard));
                }
            }
            list.sort_by_key(|&(_, level)| level);
            let contributors = Contributors::new(list);
            let Some(encoder) = self.members[leader].stereo.as_mut() else {
                continue; // libopus could not create the encoder
            };
            stats.frames_encoded += 1;
            let Some(encoded) = encoder.encode(&mut self.stereo_buf, &mut self.encoded) else {
                continue;
            };
            for &i in group {
                let m = &mut self.members[i];
                m.feed = if i == leader {
                    Feed::Personal
                } else {
                    Feed::Shared
                };
                m.heard_from = Some(leader_id);
                m.send(
                    frame_ts,
                    Arc::clone(&encoded.payload),
                    contributors.clone(),
                    encoded.level,
                    out,
                );
                stats.sent(encoded.fec);
            }
        }
        debug_assert_eq!(self.stereo_buf.len(), 2 * FRAME_SAMPLES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_gains_are_equal_power() {
        let (l, r) = quantised_gains(0, 0);
        assert!((l - r).abs() < 1e-6);
        assert!((l * l + r * r - 1.0).abs() < 1e-5);
        let (l, r) = quantised_gains(-12, 32); // −6 dB, fully right
        assert!(l.abs() < 1e-6);
        assert!((20.0 * r.log10() + 6.0).abs() < 1e-4);
        let (l, r) = quantised_gains(0, -16); // half left
        assert!(l > r && (l * l + r * r - 1.0).abs() < 1e-5);
    }
}
