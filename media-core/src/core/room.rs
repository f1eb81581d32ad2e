//! [`Room`]: one room on a worker — its members, level tracking and speakers (both modes), and what its
//! mode adds: slot forwarding ([`RoomKind::Forward`]) or a mixer ([`RoomKind::Mix`]).

use std::time::Instant;

use super::timers::RoomTick;
use crate::audibility::Audibility;
use crate::ids::{ParticipantId, RoomId};
use crate::mixer::Mixer;
use crate::sfu::slots::SlotSelector;
use crate::speakers::dominant::DominantSpeaker;
use vocab::RoomSettings;

/// What a room's mode adds to it.
pub(crate) enum RoomKind {
    /// Each subscriber gets the loudest speakers in its slots; the selector assigns them.
    Forward,
    /// Everyone gets one mix; the selector only tracks levels and speakers.
    Mix(Box<Mixer>),
}

pub(crate) struct Room {
    pub(crate) id: RoomId,
    pub(crate) config: RoomSettings,
    /// Levels and speaking reports in both modes; slot assignment in forwarding rooms.
    pub(crate) selector: SlotSelector,
    pub(crate) members: Vec<ParticipantId>,
    /// Dominant speaker detection (both modes).
    pub(crate) dominant: DominantSpeaker,
    pub(crate) kind: RoomKind,
    /// A forwarding room's mixer, while it has a listener mount ([`crate::MediaCore::set_broadcast_rooms`])
    /// or members who hear its mix ([`crate::JoinParams::hears_mix`], WHEP players): every publisher in,
    /// those members out (one shared encode). A mixed room's mount taps its own mixer.
    pub(crate) broadcast: Option<Box<Mixer>>,
    /// Who hears whom: positions (a spatial room), teams, talk targets, volumes.
    pub(crate) audibility: Audibility,
    /// The `speakers` list each member was last sent (scoped to what it hears).
    pub(crate) speakers_sent: std::collections::HashMap<ParticipantId, Vec<(ParticipantId, f32)>>,
    /// Its exports to, and the participants imported from, its other shards (`core/trunk.rs`).
    pub(crate) trunk: super::trunk::RoomTrunk,
    /// What its receiver reports tell its publishers their listeners lose (forward rooms).
    pub(crate) loss_feedback: super::loss_feedback::RoomLossFeedback,
}

impl Room {
    /// The mixer of a mixed room.
    pub(crate) fn mixer(&self) -> Option<&Mixer> {
        match &self.kind {
            RoomKind::Forward => None,
            RoomKind::Mix(m) => Some(m),
        }
    }

    /// Start (or stop) feeding the room's listener mount: a mixed room taps its mixer; a forwarding room
    /// taps its mixer, made now with `publishers` (its members, and whether each publishes) if it has none.
    pub(crate) fn set_broadcast(
        &mut self,
        now: Instant,
        on: bool,
        publishers: &[(ParticipantId, bool)],
    ) {
        match &mut self.kind {
            RoomKind::Mix(mixer) => {
                if mixer.is_tapped() != on {
                    mixer.set_tap(now, on);
                }
            }
            RoomKind::Forward if !on => {
                if let Some(mixer) = &mut self.broadcast {
                    mixer.set_tap(now, false);
                }
                self.release_forward_mixer();
            }
            RoomKind::Forward => {
                let mixer = self.forward_mixer(now, publishers);
                if !mixer.is_tapped() {
                    mixer.set_tap(now, true);
                }
            }
        }
    }

    /// A forwarding room's mixer, made now with `publishers` (its members, and whether each publishes) if
    /// it has none: nobody listens to a mixer made now (a member who hears the mix keeps it alive).
    pub(crate) fn forward_mixer(
        &mut self,
        now: Instant,
        publishers: &[(ParticipantId, bool)],
    ) -> &mut Mixer {
        let config = self.config.mix;
        self.broadcast.get_or_insert_with(|| {
            let mut mixer = Mixer::new(now, config);
            for &(id, publishes) in publishers {
                mixer.add_member(id, publishes, false, 0, 0);
            }
            Box::new(mixer)
        })
    }

    /// Drops a forwarding room's mixer nobody needs any more (no mount, no listener).
    pub(crate) fn release_forward_mixer(&mut self) {
        if self
            .broadcast
            .as_ref()
            .is_some_and(|m| !m.is_tapped() && !m.has_listeners())
        {
            self.broadcast = None;
        }
    }

    /// The mixer the room's microphones feed: a mixed room's, or a forwarding room's mount-only mixer.
    pub(crate) fn input_mixer_mut(&mut self) -> Option<&mut Mixer> {
        match &mut self.kind {
            RoomKind::Forward => self.broadcast.as_deref_mut(),
            RoomKind::Mix(m) => Some(m),
        }
    }

    /// Make sure `tick` runs when this room next needs work: its mixers' ticks exactly, its bookkeeping
    /// (selector update, audible sets, expiry of remote speakers) lazily.
    pub(crate) fn arm_tick(&self, tick: &mut RoomTick) {
        let mixer = self.mixer().and_then(|m| m.next_tick());
        let broadcast = self.broadcast.as_ref().and_then(|m| m.next_tick());
        for t in [mixer, broadcast].into_iter().flatten() {
            tick.exact(t);
        }
        let space = self.audibility.next_refresh();
        let remote = self.trunk.next_expiry();
        for t in [self.selector.next_update(), space, remote]
            .into_iter()
            .flatten()
        {
            tick.lazy(t);
        }
    }
}
