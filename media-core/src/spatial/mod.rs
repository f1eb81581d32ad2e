//! Hearing by distance in a spatial room: who is in whose range, at which gain and pan. It is the
//! positional part of the room's [audibility policy](crate::audibility), which adds teams, whispers, the
//! shout role and volumes and is what forward and mix mode use.
//!
//! A [`Space`] holds the room's [`SpatialSettings`] and every placed participant's [`Position`]. Positions
//! change at most ~10 times a second (clients are rate-limited), so each listener's audible set is not
//! recomputed per packet or per tick: [`Space::refresh`] recomputes all of them at most every
//! [`REFRESH_INTERVAL`], and only when a position or the room's membership changed; between refreshes the
//! sets are cached ([`Space::audible`]). A refresh costs O(listeners × speakers) distance computations.
//!
//! Rules:
//! - a participant without a position (it has not sent one yet) hears nobody and nobody hears it;
//! - a listener hears a speaker within `audible_distance` whose fade gain is above zero, at most
//!   `max_audible` of them: the nearest (ties: lower participant id);
//! - nobody hears itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::ids::ParticipantId;
use vocab::{Position, SpatialError, SpatialSettings};

/// Audible sets are recomputed at most this often (positions arrive at most every 100 ms per client).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How one listener hears one speaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hearing {
    pub distance: f64,
    /// Linear gain from the fade model, 0 < gain <= 1.
    pub gain: f32,
    /// −1 (left) ..= +1 (right), relative to the listener's facing.
    pub pan: f32,
}

impl Hearing {
    /// The gain in dB (≤ 0 by distance; a listener's volume may raise it).
    pub fn gain_db(&self) -> f32 {
        20.0 * self.gain.max(1e-6).log10()
    }

    /// Left and right channel gains: the fade gain split by an equal-power (sine/cosine) pan law, so the
    /// voice's total energy does not depend on where it is (`l² + r² = gain²`).
    pub fn stereo_gains(&self) -> (f32, f32) {
        equal_power_gains(self.gain, self.pan)
    }
}

/// The left and right gains of a voice at linear `gain` panned to `pan` (−1 left ..= +1 right) by the
/// equal-power (sine/cosine) law: `l² + r² = gain²`, so the voice's energy does not depend on its side;
/// centred, each channel gets `gain / √2` (−3 dB); fully right, the left gets nothing. The one pan law of
/// Chorus: the server's spatial mix and the native SDK's rendering of forwarded streams both use it.
pub fn equal_power_gains(gain: f32, pan: f32) -> (f32, f32) {
    let angle = (pan.clamp(-1.0, 1.0) + 1.0) * std::f32::consts::FRAC_PI_4;
    (gain * angle.cos(), gain * angle.sin())
}

/// A speaker a listener hears.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heard {
    pub speaker: ParticipantId,
    pub position: Position,
    pub hearing: Hearing,
}

/// One spatial room's positions and the audible sets computed from them. See the [module docs](self).
#[derive(Debug)]
pub struct Space {
    settings: SpatialSettings,
    positions: HashMap<ParticipantId, Position>,
    /// Per listener, what it heard at the last refresh, nearest first.
    audible: HashMap<ParticipantId, Vec<Heard>>,
    /// When a position or the membership first changed since the last refresh.
    dirty_since: Option<Instant>,
    last_refresh: Option<Instant>,
    /// Scratch for `refresh`: one listener's set, and the speakers near it with squared distances.
    scratch: Vec<Heard>,
    near: Vec<(f64, ParticipantId, Position)>,
    /// The listeners and speakers of the last refresh.
    listeners: Vec<ParticipantId>,
    speakers: Vec<ParticipantId>,
}

impl Space {
    pub fn new(settings: SpatialSettings) -> Space {
        Space {
            settings,
            positions: HashMap::new(),
            audible: HashMap::new(),
            dirty_since: None,
            last_refresh: None,
            scratch: Vec::new(),
            near: Vec::new(),
            listeners: Vec::new(),
            speakers: Vec::new(),
        }
    }

    pub fn settings(&self) -> &SpatialSettings {
        &self.settings
    }

    /// Place (or move) a participant at `now`. A position that is not finite or outside the world is
    /// refused and changes nothing.
    pub fn set_position(
        &mut self,
        now: Instant,
        id: ParticipantId,
        position: Position,
    ) -> Result<(), SpatialError> {
        position.validate()?;
        if self.positions.insert(id, position) != Some(position) {
            self.changed(now);
        }
        Ok(())
    }

    /// A participant left: it is heard by nobody from the next refresh on, and hears nobody at once.
    pub fn remove(&mut self, now: Instant, id: ParticipantId) {
        self.positions.remove(&id);
        self.audible.remove(&id);
        self.changed(now);
    }

    /// Who is publishing or subscribing changed (a join, a mute): refresh at the next opportunity.
    pub fn changed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    pub fn position(&self, id: ParticipantId) -> Option<&Position> {
        self.positions.get(&id)
    }

    /// How `listener` hears `speaker` now (from the current positions, not the cached sets), or `None`:
    /// the same participant, either unplaced, out of range, or faded to nothing. `max_audible` is not
    /// applied here (it depends on the other speakers; see [`audible`](Self::audible)).
    pub fn hearing(&self, listener: ParticipantId, speaker: ParticipantId) -> Option<Hearing> {
        if listener == speaker {
            return None;
        }
        let at = self.positions.get(&listener)?;
        let other = self.positions.get(&speaker)?;
        hear(&self.settings, at, other)
    }

    /// The speakers `listener` heard at the last refresh, nearest first (at most `max_audible`).
    pub fn audible(&self, listener: ParticipantId) -> &[Heard] {
        self.audible.get(&listener).map_or(&[], Vec::as_slice)
    }

    /// How `listener` hears `speaker` according to the last refresh (`max_audible` applied).
    pub fn heard(&self, listener: ParticipantId, speaker: ParticipantId) -> Option<&Heard> {
        self.audible(listener).iter().find(|h| h.speaker == speaker)
    }

    /// Make a pending refresh due at once, not at the positions' pace (a talk rule changed: who hears
    /// whom must follow before the next packet).
    pub fn force_due(&mut self) {
        self.last_refresh = None;
    }

    /// When [`refresh`](Self::refresh) has work to do: `None` while nothing changed.
    pub fn next_refresh(&self) -> Option<Instant> {
        let since = self.dirty_since?;
        Some(
            self.last_refresh
                .map_or(since, |t| since.max(t + REFRESH_INTERVAL)),
        )
    }

    /// Recompute every listener's audible set among `speakers` if due at `now` (a position changed, or
    /// the listeners or speakers differ from the last refresh's); push the listeners whose set (speakers,
    /// or their positions) changed onto `changed`. Returns whether it ran.
    pub fn refresh(
        &mut self,
        now: Instant,
        listeners: &[ParticipantId],
        speakers: &[ParticipantId],
        changed: &mut Vec<ParticipantId>,
    ) -> bool {
        if self.listeners != listeners || self.speakers != speakers {
            self.listeners.clear();
            self.listeners.extend_from_slice(listeners);
            self.speakers.clear();
            self.speakers.extend_from_slice(speakers);
            self.changed(now);
        }
        if self.next_refresh().is_none_or(|due| now < due) {
            return false;
        }
        self.dirty_since = None;
        self.last_refresh = Some(now);
        let max = usize::from(self.settings.max_audible);
        let present: HashSet<ParticipantId> = listeners.iter().copied().collect();
        self.audible.retain(|id, _| present.contains(id));
        // The placed speakers by grid cell, one audible distance wide: whoever a listener can hear is in
        // its own cell or a neighbouring one, so a refresh costs O(listeners × speakers nearby), not
        // O(listeners × speakers).
        let cell = self.settings.audible_distance;
        let cell_of = |p: &Position| [p.x, p.y, p.z].map(|v| (v / cell).floor() as i64);
        let mut grid: HashMap<[i64; 3], Vec<(ParticipantId, Position)>> = HashMap::new();
        for &speaker in speakers {
            if let Some(p) = self.positions.get(&speaker) {
                grid.entry(cell_of(p)).or_default().push((speaker, *p));
            }
        }
        // Squared distances pre-select (with a hair of slack: `hear` has the last word at the border).
        let reach = cell * cell * (1.0 + 1e-9);
        let mut near = std::mem::take(&mut self.near);
        for &listener in listeners {
            let mut found = std::mem::take(&mut self.scratch);
            found.clear();
            near.clear();
            if let Some(at) = self.positions.get(&listener) {
                let [x, y, z] = cell_of(at);
                for (dx, dy, dz) in NEIGHBOURS {
                    let Some(cell) = grid.get(&[x + dx, y + dy, z + dz]) else {
                        continue;
                    };
                    for &(speaker, position) in cell {
                        let (ex, ey, ez) =
                            (position.x - at.x, position.y - at.y, position.z - at.z);
                        let squared = ex * ex + ey * ey + ez * ez;
                        if speaker != listener && squared <= reach {
                            near.push((squared, speaker, position));
                        }
                    }
                }
                // Only the nearest `max_audible` need their gain and pan (a fade is monotonic: if one of
                // them fades to nothing, so does everyone farther).
                let by_distance =
                    |a: &(f64, ParticipantId, Position), b: &(f64, ParticipantId, Position)| {
                        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
                    };
                if near.len() > max {
                    near.select_nth_unstable_by(max, by_distance);
                    near.truncate(max);
                }
                for &(_, speaker, position) in &near {
                    if let Some(hearing) = hear(&self.settings, at, &position) {
                        found.push(Heard {
                            speaker,
                            position,
                            hearing,
                        });
                    }
                }
            }
            found.sort_unstable_by(|a, b| {
                a.hearing
                    .distance
                    .total_cmp(&b.hearing.distance)
                    .then(a.speaker.cmp(&b.speaker))
            });
            let entry = self.audible.entry(listener).or_default();
            if *entry != found {
                entry.clone_from(&found);
                changed.push(listener);
            }
            self.scratch = found;
        }
        self.near = near;
        true
    }
}

/// The 27 grid cells around and including a listener's.
const NEIGHBOURS: [(i64, i64, i64); 27] = {
    let mut out = [(0, 0, 0); 27];
    let mut i = 0;
    while i < 27 {
        out[i] = (
            (i / 9) as i64 - 1,
            ((i / 3) % 3) as i64 - 1,
            (i % 3) as i64 - 1,
        );
        i += 1;
    }
    out
};

/// The rule: how a listener at `at` hears a voice at `other` (`None`: not at all). Placement, identity
/// and `max_audible` are the callers' part.
fn hear(settings: &SpatialSettings, at: &Position, other: &Position) -> Option<Hearing> {
    let distance = at.distance(other);
    let gain = settings.gain_at(distance);
    (gain > 0.0).then(|| Hearing {
        distance,
        gain,
        pan: at.pan_towards(other),
    })
}

#[cfg(test)]
mod tests;
