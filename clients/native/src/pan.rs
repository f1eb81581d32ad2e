//! Stereo output in a forwarding room: each slot's stream (mono from its talker) panned to the side its
//! speaker is on, as the server pans a spatial mixed room's stereo mix.
//!
//! In a spatial forwarding room the server sends `positions`: where each speaker this session hears is.
//! With the game's own position (the newest it set, facing `yaw_deg`), the signaling thread computes each
//! slot's pan with the server's own rule ([`Position::pan_towards`]: the sine of the speaker's azimuth
//! relative to the listener's facing) and writes it into [`crate::client::Shared::slot_pans`] whenever a
//! `slots` or `positions` message or the game's position changes it; the network thread renders it every
//! 20 ms with Chorus' one pan law ([`media_core::spatial::equal_power_gains`]). No distance fade: the
//! room's fade settings are not sent to clients, and the server already chose who is heard.
//!
//! A slot without a pan (a room without `positions`, a free slot, a mixed room whose stereo the server
//! rendered) plays the same on both sides at full level. In a spatial forwarding room a speaker whose
//! position is not known (yet) plays centred by the same law as the others (−3 dB on each side).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use vocab::{Position, MAX_SLOTS};

use crate::client::Shared;
use crate::event::SpeakerPosition;

/// One slot's pan for the network thread: −1 (left) ..= +1 (right), or none (both sides, full level).
/// An `f32`'s bits; NaN is none.
#[derive(Debug)]
pub(crate) struct SlotPan(AtomicU32);

impl Default for SlotPan {
    fn default() -> Self {
        SlotPan(AtomicU32::new(f32::NAN.to_bits()))
    }
}

impl SlotPan {
    pub(crate) fn store(&self, pan: Option<f32>) {
        let bits = pan.map_or(f32::NAN, |p| p.clamp(-1.0, 1.0)).to_bits();
        self.0.store(bits, Ordering::Release);
    }

    pub(crate) fn load(&self) -> Option<f32> {
        let pan = f32::from_bits(self.0.load(Ordering::Acquire));
        (!pan.is_nan()).then_some(pan)
    }
}

/// The left and right gains a slot plays at: `pan` by the equal-power law, or 1 on both sides.
pub(crate) fn pan_gains(pan: Option<f32>) -> [f32; 2] {
    match pan {
        Some(pan) => {
            let (l, r) = media_core::spatial::equal_power_gains(1.0, pan);
            [l, r]
        }
        None => [1.0, 1.0],
    }
}

/// Where the speakers this session hears are, as of the last `positions` (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Panning {
    /// By participant id.
    speakers: HashMap<String, Position>,
    /// A `positions` message arrived in this room: it is a spatial forwarding room.
    spatial: bool,
}

impl Panning {
    /// A new participant on the server (join, rejoin, move): nothing known yet.
    pub(crate) fn reset(&mut self) {
        self.speakers.clear();
        self.spatial = false;
    }

    /// A `positions` message: the speakers heard now, and where.
    pub(crate) fn positions(&mut self, positions: &[SpeakerPosition]) {
        self.spatial = true;
        self.speakers.clear();
        self.speakers
            .extend(positions.iter().map(|p| (p.sid.clone(), p.position)));
    }

    /// Each slot's pan for the network thread, for a listener at `own` hearing `slots` (who is in each
    /// slot); `mixed`: the server renders the room's stereo itself, nothing is panned here.
    pub(crate) fn publish(
        &self,
        own: Option<Position>,
        slots: &[Option<String>],
        mixed: bool,
        shared: &Shared,
    ) {
        for (slot, pan) in shared.slot_pans.iter().enumerate().take(MAX_SLOTS) {
            let occupant = slots.get(slot).and_then(Option::as_ref);
            pan.store(self.pan(own, occupant.map(String::as_str), mixed));
        }
    }

    fn pan(&self, own: Option<Position>, sid: Option<&str>, mixed: bool) -> Option<f32> {
        if mixed || !self.spatial {
            return None;
        }
        let sid = sid?;
        let at = self.speakers.get(sid).zip(own);
        Some(at.map_or(0.0, |(speaker, own)| own.pan_towards(speaker)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, y: f64, yaw_deg: f64) -> Position {
        Position::new(x, y, 0.0, yaw_deg).expect("valid")
    }

    fn speaker(sid: &str, position: Position) -> SpeakerPosition {
        SpeakerPosition {
            sid: sid.to_owned(),
            position,
        }
    }

    #[test]
    fn slots_pan_to_their_speakers_side_relative_to_the_listeners_facing() {
        let shared = Shared::default();
        let mut panning = Panning::default();
        let slots = [Some("PA_r".to_owned()), Some("PA_l".to_owned()), None];
        let own = Some(at(0.0, 0.0, 0.0));
        // No positions yet (or a room without them): nothing is panned.
        panning.publish(own, &slots, false, &shared);
        assert_eq!(shared.slot_pans[0].load(), None);
        // Facing +y: +x is on the right, −x on the left.
        panning.positions(&[
            speaker("PA_r", at(5.0, 0.0, 0.0)),
            speaker("PA_l", at(-5.0, 0.0, 0.0)),
        ]);
        panning.publish(own, &slots, false, &shared);
        assert_eq!(shared.slot_pans[0].load(), Some(1.0));
        assert_eq!(shared.slot_pans[1].load(), Some(-1.0));
        assert_eq!(shared.slot_pans[2].load(), None, "a free slot");
        // Turned around (facing −y): the sides swap.
        panning.publish(Some(at(0.0, 0.0, 180.0)), &slots, false, &shared);
        let right = shared.slot_pans[0].load().expect("panned");
        assert!((right + 1.0).abs() < 1e-6, "{right}");
        // A speaker whose position is not known plays centred; a listener without a position too.
        panning.positions(&[speaker("PA_l", at(-5.0, 0.0, 0.0))]);
        panning.publish(own, &slots, false, &shared);
        assert_eq!(shared.slot_pans[0].load(), Some(0.0));
        panning.publish(None, &slots, false, &shared);
        assert_eq!(shared.slot_pans[1].load(), Some(0.0));
        // A mixed room (the server panned) or a new room: nothing.
        panning.publish(own, &slots, true, &shared);
        assert_eq!(shared.slot_pans[1].load(), None);
        panning.reset();
        panning.publish(own, &slots, false, &shared);
        assert_eq!(shared.slot_pans[1].load(), None);
    }

    #[test]
    fn the_gains_are_the_servers_equal_power_law_or_full_level_on_both_sides() {
        assert_eq!(pan_gains(None), [1.0, 1.0]);
        let [l, r] = pan_gains(Some(0.0));
        assert!((l - r).abs() < 1e-6 && (l * l + r * r - 1.0).abs() < 1e-5);
        let [l, r] = pan_gains(Some(1.0));
        assert!(l.abs() < 1e-6 && (r - 1.0).abs() < 1e-6);
        // Out of range is clamped by the law.
        assert_eq!(pan_gains(Some(-3.0)), pan_gains(Some(-1.0)));
    }
}
