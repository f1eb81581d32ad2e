//! A room's audibility policy: the one place that decides who hears whom, at which gain and pan, in every
//! room — spatial or not, forwarding or mixed. Slot selection ranks each subscriber's candidates by it, the
//! mixers render each listener's mix from it, and the speaking events are scoped by it, so the rules never
//! diverge between modes.
//!
//! Rules (docs/protocol.md, "Teams, whisper, shout, listen-only and volumes"), for a listener `L` and a
//! speaker `S` (a publisher that has sent audio) of the room:
//! - nobody hears itself;
//! - `S` talks to its **team**: only its team hears it, at full level, wherever they are;
//! - `S` **whispers**: only the named participants hear it, at full level, wherever they are;
//! - `S` talks to the **room**: in a room without positional voice everyone hears it; in a spatial room the
//!   listeners in range ([`Space`]: fade model, the nearest `max_audible`), its team at full level wherever
//!   they are, and — if it has the **shout** role — everyone at full level;
//! - then `L`'s [`Volume`] for `S` scales the gain; a silent volume means `L` does not hear `S`.
//!
//! "Full level" is gain 1 (the conversational level), panned by the positions where both have one. Team,
//! whisper and shout voices do not take `max_audible` places. Listen-only, muted and key-up participants
//! are no speakers, so nobody hears them (the caller passes only the speakers).
//!
//! Cost: nothing per packet. [`Audibility::refresh`] recomputes every listener's set when a position, the
//! listeners or speakers, a talk target, a team or a volume changed (positions at most every
//! [`REFRESH_INTERVAL`](crate::spatial::REFRESH_INTERVAL); rule changes at once, since a whisper must not wait 100 ms). A room without
//! positional voice and with no rule in effect (every speaker talks to the room, no volume set) keeps no
//! sets at all: it is *open*, and its users take the flat paths (everyone hears everyone). Otherwise a
//! refresh costs O(listeners × heard), where a spatial room's listener hears its range, its team, the
//! shouters and its whisperers, and a flat room's listener every speaker.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::ids::ParticipantId;
use crate::spatial::{Hearing, Space};
use vocab::{Position, SpatialError, SpatialSettings, TalkTarget, TeamId, Volume};

/// A speaker a listener hears, and how.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heard {
    pub speaker: ParticipantId,
    /// Where it is (spatial rooms, once it sent a position).
    pub position: Option<Position>,
    /// Gain (volume included, so it may exceed 1) and pan; distance 0 when unplaced.
    pub hearing: Hearing,
}

/// A participant's voice settings: its team, its shout role, whom it talks to. What another shard of a
/// spanned room needs to apply the same rules to it (it travels with its trunk packets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Voice {
    pub team: Option<TeamId>,
    pub shout: bool,
    pub target: TalkTarget<ParticipantId>,
}

impl Voice {
    /// No team, no shout role, talking to the room: what a participant has until told otherwise.
    pub fn is_default(&self) -> bool {
        self.team.is_none() && !self.shout && self.target == TalkTarget::Room
    }
}

/// One room's audibility. See the [module docs](self).
#[derive(Debug)]
pub struct Audibility {
    space: Option<Space>,
    voices: HashMap<ParticipantId, Voice>,
    /// Listener → speaker → volume (never [`Volume::UNCHANGED`]).
    volumes: HashMap<ParticipantId, HashMap<ParticipantId, Volume>>,
    /// Per listener, what it hears, sorted by speaker id; only while [`listed`](Self::is_open) is false.
    sets: HashMap<ParticipantId, Vec<Heard>>,
    listed: bool,
    /// A rule changed (target, team, shout, volume, membership): refresh at the next opportunity.
    dirty: Option<Instant>,
    last_listeners: Vec<ParticipantId>,
    last_speakers: Vec<ParticipantId>,
    scratch: Vec<Heard>,
}

impl Audibility {
    /// The policy of a room, spatial when it has `spatial` settings.
    pub fn new(spatial: Option<SpatialSettings>) -> Audibility {
        let space = spatial.map(Space::new);
        Audibility {
            listed: space.is_some(),
            space,
            voices: HashMap::new(),
            volumes: HashMap::new(),
            sets: HashMap::new(),
            dirty: None,
            last_listeners: Vec::new(),
            last_speakers: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The room's positional part, if it is spatial.
    pub fn space(&self) -> Option<&Space> {
        self.space.as_ref()
    }

    pub fn is_spatial(&self) -> bool {
        self.space.is_some()
    }

    /// Whether everyone hears every other speaker at unity gain (a room without positional voice and no
    /// rule in effect, as of the last refresh): no per-listener sets are kept.
    pub fn is_open(&self) -> bool {
        !self.listed
    }

    /// Place (or move) a participant (see [`Space::set_position`]); `NotSpatial` is the caller's check.
    pub fn set_position(
        &mut self,
        now: Instant,
        id: ParticipantId,
        position: Position,
    ) -> Option<Result<(), SpatialError>> {
        self.space
            .as_mut()
            .map(|space| space.set_position(now, id, position))
    }

    pub fn set_team(&mut self, now: Instant, id: ParticipantId, team: Option<TeamId>) {
        let voice = self.voices.entry(id).or_default();
        if voice.team != team {
            voice.team = team;
            self.changed(now);
        }
    }

    pub fn set_shout(&mut self, now: Instant, id: ParticipantId, shout: bool) {
        let voice = self.voices.entry(id).or_default();
        if voice.shout != shout {
            voice.shout = shout;
            self.changed(now);
        }
    }

    pub fn set_target(
        &mut self,
        now: Instant,
        id: ParticipantId,
        target: TalkTarget<ParticipantId>,
    ) {
        let voice = self.voices.entry(id).or_default();
        if voice.target != target {
            voice.target = target;
            self.changed(now);
        }
    }

    /// A participant's team, shout role and target ([`Voice::default`] until any was set).
    pub fn voice(&self, id: ParticipantId) -> Option<&Voice> {
        self.voices.get(&id)
    }

    /// Whether `id`'s voice settings are `voice` (no allocation: compared in place).
    pub fn has_voice(&self, id: ParticipantId, voice: &Voice) -> bool {
        self.voices
            .get(&id)
            .map_or_else(|| voice.is_default(), |v| v == voice)
    }

    /// All of a participant's voice settings at once (a remote speaker's, as its own shard has them).
    pub fn set_voice(&mut self, now: Instant, id: ParticipantId, voice: Voice) {
        if !self.has_voice(id, &voice) {
            self.voices.insert(id, voice);
            self.changed(now);
        }
    }

    /// How loud `listener` hears `speaker` from now on.
    pub fn set_volume(
        &mut self,
        now: Instant,
        listener: ParticipantId,
        speaker: ParticipantId,
        volume: Volume,
    ) {
        let of = self.volumes.entry(listener).or_default();
        let before = if volume == Volume::UNCHANGED {
            of.remove(&speaker)
        } else {
            of.insert(speaker, volume)
        };
        if of.is_empty() {
            self.volumes.remove(&listener);
        }
        if before.unwrap_or_default() != volume {
            self.changed(now);
        }
    }

    /// A participant left: forget it as a speaker, a listener and a volume subject.
    pub fn remove(&mut self, now: Instant, id: ParticipantId) {
        self.volumes.remove(&id);
        for of in self.volumes.values_mut() {
            of.remove(&id);
        }
        self.volumes.retain(|_, of| !of.is_empty());
        self.remove_remote(now, id);
    }

    /// A remote speaker left this shard (withdrawn while quiet, or expired): forget it as a speaker, but
    /// keep the volumes listeners here gave it, for when it is imported again (it keeps its id). They go
    /// with their listener.
    pub fn remove_remote(&mut self, now: Instant, id: ParticipantId) {
        if let Some(space) = self.space.as_mut() {
            space.remove(now, id);
        }
        self.voices.remove(&id);
        self.sets.remove(&id);
        self.changed(now);
    }

    /// Who publishes or listens changed, or a rule did: refresh at the next opportunity.
    pub fn changed(&mut self, now: Instant) {
        self.dirty.get_or_insert(now);
    }

    /// When [`refresh`](Self::refresh) has work to do: `None` while nothing changed.
    pub fn next_refresh(&self) -> Option<Instant> {
        let space = self.space.as_ref().and_then(Space::next_refresh);
        match (self.dirty, space) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any rule beyond "everyone hears the room" is in effect.
    fn rules_in_effect(&self) -> bool {
        !self.volumes.is_empty() || self.voices.values().any(|v| v.target != TalkTarget::Room)
    }

    /// Recompute every listener's set if due at `now`; push the listeners whose set changed onto
    /// `changed`. Returns whether it ran. `speakers`: the publishers that have sent audio.
    pub fn refresh(
        &mut self,
        now: Instant,
        listeners: &[ParticipantId],
        speakers: &[ParticipantId],
        changed: &mut Vec<ParticipantId>,
    ) -> bool {
        if self.last_listeners != listeners || self.last_speakers != speakers {
            self.last_listeners.clear();
            self.last_listeners.extend_from_slice(listeners);
            self.last_speakers.clear();
            self.last_speakers.extend_from_slice(speakers);
            self.changed(now);
            if let Some(space) = self.space.as_mut() {
                space.changed(now);
            }
        }
        let rules_due = self.dirty.is_some_and(|t| t <= now);
        // Positions: only the voices for the room are heard by distance.
        let mut ran = false;
        if let Some(space) = self.space.as_mut() {
            let by_distance: Vec<ParticipantId> = speakers
                .iter()
                .copied()
                .filter(|s| {
                    self.voices
                        .get(s)
                        .is_none_or(|v| v.target == TalkTarget::Room)
                })
                .collect();
            if rules_due {
                // Make the space's sets current too (its own 100 ms pace is for positions).
                space.changed(now);
                space.force_due();
            }
            let mut moved = Vec::new();
            ran = space.refresh(now, listeners, &by_distance, &mut moved);
        }
        if !ran && !rules_due {
            return false;
        }
        self.dirty = None;
        let listed = self.space.is_some() || self.rules_in_effect();
        if !listed {
            if self.listed {
                // Back to open: every listener's set is "everyone" again.
                changed.extend(self.sets.keys().copied());
                self.sets.clear();
            }
            self.listed = false;
            return true;
        }
        let was_listed = std::mem::replace(&mut self.listed, true);
        let present: HashSet<ParticipantId> = listeners.iter().copied().collect();
        self.sets.retain(|id, _| present.contains(id));
        let direct = Direct::new(&self.voices, speakers, self.space.is_some());
        for &listener in listeners {
            let mut found = std::mem::take(&mut self.scratch);
            found.clear();
            self.listener_set(listener, speakers, &direct, &mut found);
            let entry = self.sets.entry(listener).or_default();
            if *entry != found || !was_listed {
                entry.clone_from(&found);
                changed.push(listener);
            }
            self.scratch = found;
        }
        true
    }

    /// One listener's set, sorted by speaker id.
    fn listener_set(
        &self,
        listener: ParticipantId,
        speakers: &[ParticipantId],
        direct: &Direct,
        out: &mut Vec<Heard>,
    ) {
        let team = self.voices.get(&listener).and_then(|v| v.team.as_ref());
        let at = self.space.as_ref().and_then(|s| s.position(listener));
        let volumes = self.volumes.get(&listener);
        let mut push = |speaker: ParticipantId, hearing: Hearing| {
            if speaker == listener || out.iter().any(|h| h.speaker == speaker) {
                return;
            }
            let volume = volumes.and_then(|v| v.get(&speaker)).copied();
            let Some(scale) = volume.map_or(Some(1.0), |v| (v != Volume::SILENT).then(|| v.gain()))
            else {
                return;
            };
            out.push(Heard {
                speaker,
                position: self
                    .space
                    .as_ref()
                    .and_then(|s| s.position(speaker))
                    .copied(),
                hearing: Hearing {
                    gain: hearing.gain * scale,
                    ..hearing
                },
            });
        };
        let full = |speaker: ParticipantId| {
            let other = self.space.as_ref().and_then(|s| s.position(speaker));
            match (at, other) {
                (Some(at), Some(other)) => Hearing {
                    distance: at.distance(other),
                    gain: 1.0,
                    pan: at.pan_towards(other),
                },
                _ => Hearing {
                    distance: 0.0,
                    gain: 1.0,
                    pan: 0.0,
                },
            }
        };
        // Full level first, so a team mate in range is heard at full level, not faded.
        for &s in direct.whispers.get(&listener).into_iter().flatten() {
            push(s, full(s));
        }
        if let Some(team) = team {
            for &s in direct.teams.get(team).into_iter().flatten() {
                push(s, full(s));
            }
        }
        for &s in &direct.shouters {
            push(s, full(s));
        }
        match &self.space {
            Some(space) => {
                for h in space.audible(listener) {
                    push(h.speaker, h.hearing);
                }
            }
            None => {
                for &s in speakers {
                    if self
                        .voices
                        .get(&s)
                        .is_none_or(|v| v.target == TalkTarget::Room)
                    {
                        push(s, full(s));
                    }
                }
            }
        }
        out.sort_unstable_by_key(|h| h.speaker);
    }

    /// What `listener` hears as of the last refresh, sorted by speaker id; `None` when the room is
    /// [open](Self::is_open) (it hears every other speaker at unity gain).
    pub fn audible(&self, listener: ParticipantId) -> Option<&[Heard]> {
        self.listed
            .then(|| self.sets.get(&listener).map_or(&[][..], Vec::as_slice))
    }

    /// How `listener` hears `speaker` as of the last refresh (`None`: not at all). In an open room
    /// every other participant at unity gain, centred.
    pub fn heard(&self, listener: ParticipantId, speaker: ParticipantId) -> Option<Hearing> {
        match self.audible(listener) {
            None => (listener != speaker).then_some(Hearing {
                distance: 0.0,
                gain: 1.0,
                pan: 0.0,
            }),
            Some(set) => set
                .binary_search_by_key(&speaker, |h| h.speaker)
                .ok()
                .map(|i| set[i].hearing),
        }
    }

    /// Whether `listener` learns that `speaker` speaks (it hears it, or it is itself).
    pub fn hears(&self, listener: ParticipantId, speaker: ParticipantId) -> bool {
        listener == speaker || self.heard(listener, speaker).is_some()
    }

    /// Whether a mixed room's listeners who hear "the room" at unity get `speaker` in the shared mix: it
    /// talks to the room (teams, whispers and shouts are per listener).
    pub fn is_public(&self, speaker: ParticipantId) -> bool {
        self.voices
            .get(&speaker)
            .is_none_or(|v| v.target == TalkTarget::Room)
    }

    /// Whether `listener` hears exactly the public speakers among `talkers` at unity gain (so it can take
    /// the shared mix; a talker itself is its own business).
    pub fn hears_public_mix(&self, listener: ParticipantId, talkers: &[ParticipantId]) -> bool {
        talkers.iter().all(|&t| {
            t == listener
                || match self.heard(listener, t) {
                    Some(h) => self.is_public(t) && h.gain == 1.0,
                    None => !self.is_public(t),
                }
        })
    }
}

/// The speakers heard at full level wherever the listener is, grouped for a refresh.
struct Direct<'a> {
    whispers: HashMap<ParticipantId, Vec<ParticipantId>>,
    teams: HashMap<&'a TeamId, Vec<ParticipantId>>,
    shouters: Vec<ParticipantId>,
}

impl<'a> Direct<'a> {
    fn new(
        voices: &'a HashMap<ParticipantId, Voice>,
        speakers: &[ParticipantId],
        spatial: bool,
    ) -> Direct<'a> {
        let mut direct = Direct {
            whispers: HashMap::new(),
            teams: HashMap::new(),
            shouters: Vec::new(),
        };
        for &s in speakers {
            let Some(voice) = voices.get(&s) else {
                continue;
            };
            match &voice.target {
                TalkTarget::Whisper(to) => {
                    for &l in to {
                        direct.whispers.entry(l).or_default().push(s);
                    }
                }
                TalkTarget::Team => {
                    if let Some(team) = &voice.team {
                        direct.teams.entry(team).or_default().push(s);
                    }
                }
                // A flat room's everyone hears the room anyway.
                TalkTarget::Room if spatial => {
                    if let Some(team) = &voice.team {
                        direct.teams.entry(team).or_default().push(s);
                    }
                    if voice.shout {
                        direct.shouters.push(s);
                    }
                }
                TalkTarget::Room => {}
            }
        }
        direct
    }
}

#[cfg(test)]
mod tests;
