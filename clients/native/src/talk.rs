//! Whom the game's voice is for (its talk target) and how loud it hears each other participant (volumes),
//! as the signaling thread keeps them: what the server was told, sent again to each new participant on the
//! server (a rejoin), dropped on a move (the server resets them: they named the old room's people).
//!
//! A refused `talk` (`bad_target`, `rate_limited`) leaves the server's target as it was, and the server
//! does not confirm the accepted ones, so each `talk` goes out between two fence pings: an error between
//! their pongs is that `talk`'s refusal (the server answers in order, and nothing else is sent between
//! them). The SDK's accepted target is then the server's, which a rejoin restores.
//!
//! In a forwarding room the SDK applies the volumes itself, to the decoded audio of the slot that carries
//! each participant: the signaling thread writes each slot's volume into [`Shared::slot_volumes`] whenever
//! a `slots` message or a volume changes it, and the network thread reads it every 20 ms. In a mixed room
//! the server applies them in this listener's mix, so the slots play unchanged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use signaling::client::Client;
use signaling::media::RoomMode;
use signaling::session::MAX_VOLUMES;
use vocab::{TalkTarget, Volume, MAX_SLOTS};

use crate::client::Shared;
use crate::Error;

/// Fence pings' ids start here (the keepalive counts from 1 and never gets near).
const FENCE_BASE: u64 = 1 << 40;

/// A `talk` on its way: the fences around it, and whether an error arrived between them.
#[derive(Debug)]
struct InFlight {
    before: u64,
    after: u64,
    target: TalkTarget<String>,
    /// The pong of `before` arrived: errors from now on are this talk's.
    open: bool,
    refused: bool,
}

/// The session's talk target and volumes, and who is in each slot (to place the volumes).
#[derive(Debug, Default)]
pub(crate) struct TalkState {
    /// The target the server took last (as far as the fences tell).
    accepted: TalkTarget<String>,
    /// `talk`s sent, oldest first, until their second fence's pong.
    in_flight: VecDeque<InFlight>,
    /// The next fence id, from [`FENCE_BASE`].
    fences: u64,
    /// By participant id; a volume set back to 0 is removed (as on the server).
    volumes: HashMap<String, Volume>,
    /// Who is in each slot, from the `slots` messages.
    slots: [Option<String>; MAX_SLOTS],
    /// The room mixes on the server (which applies the volumes itself).
    mixed: bool,
}

impl TalkState {
    /// The latest target asked for (in flight, else the accepted one).
    pub(crate) fn wanted(&self) -> &TalkTarget<String> {
        self.in_flight
            .back()
            .map_or(&self.accepted, |talk| &talk.target)
    }

    /// Send `target` to the server between two fence pings. Always sent, even if equal to the current
    /// one: the server dedupes, and the SDK's idea of it may lag a refusal.
    pub(crate) async fn send(
        &mut self,
        client: &mut Client,
        target: TalkTarget<String>,
    ) -> Result<(), Error> {
        let before = FENCE_BASE + self.fences;
        let after = before + 1;
        self.fences += 2;
        client.ping(before).await?;
        client.talk(target.clone()).await?;
        client.ping(after).await?;
        self.in_flight.push_back(InFlight {
            before,
            after,
            target,
            open: false,
            refused: false,
        });
        Ok(())
    }

    /// While the session is not connected (between rejoin attempts): the target the rejoin sends.
    pub(crate) fn want(&mut self, target: TalkTarget<String>) {
        self.in_flight.clear();
        self.accepted = target;
    }

    /// A `pong`: a fence of the oldest talk in flight passed.
    pub(crate) fn pong(&mut self, id: u64) {
        let Some(front) = self.in_flight.front_mut() else {
            return;
        };
        if id == front.before {
            front.open = true;
        } else if id == front.after {
            let talk = self
                .in_flight
                .pop_front()
                .expect("front_mut just returned it");
            if !talk.refused {
                self.accepted = talk.target;
            }
        }
    }

    /// An error from the server: if it came between the fences of the oldest talk, that talk was refused.
    pub(crate) fn error(&mut self) {
        if let Some(front) = self.in_flight.front_mut().filter(|f| f.open) {
            front.refused = true;
        }
    }

    /// The game set a volume; whether it changed. Beyond the server's [`MAX_VOLUMES`] a new participant's
    /// volume is still sent (the server refuses it with `rate_limited`) but not kept, so memory stays bounded.
    pub(crate) fn set_volume(&mut self, sid: &str, volume: Volume, shared: &Shared) -> bool {
        let before = self.volumes.get(sid).copied().unwrap_or_default();
        if before == volume {
            return false;
        }
        if volume == Volume::UNCHANGED {
            self.volumes.remove(sid);
        } else if self.volumes.contains_key(sid) || self.volumes.len() < MAX_VOLUMES {
            self.volumes.insert(sid.to_owned(), volume);
        }
        self.publish(shared);
        true
    }

    /// A new participant on the server (join, rejoin): the room's mode, nobody in the slots yet.
    pub(crate) fn joined(&mut self, mode: RoomMode, shared: &Shared) {
        self.mixed = mode == RoomMode::Mix;
        self.slots = Default::default();
        self.publish(shared);
    }

    /// Moved to another room: the server talks to the room again and forgot the volumes.
    pub(crate) fn moved(&mut self, mode: RoomMode, shared: &Shared) {
        self.accepted = TalkTarget::Room;
        self.in_flight.clear();
        self.volumes.clear();
        self.joined(mode, shared);
    }

    /// A `slots` message: `slot` now carries `sid` (`None`: nobody).
    pub(crate) fn slot(&mut self, slot: u8, sid: Option<&str>, shared: &Shared) {
        if let Some(occupant) = self.slots.get_mut(usize::from(slot)) {
            *occupant = sid.map(str::to_owned);
            self.publish(shared);
        }
    }

    /// Tell a new participant on the server (a rejoin) the latest target and the volumes of those still
    /// in the room (`present`: the participants of its `joined`).
    pub(crate) async fn restore(
        &mut self,
        client: &mut Client,
        present: &[String],
    ) -> Result<(), Error> {
        let wanted = self.wanted().clone();
        self.accepted = TalkTarget::Room;
        self.in_flight.clear();
        if wanted != TalkTarget::Room {
            self.send(client, wanted).await?;
        }
        for (sid, volume) in &self.volumes {
            if present.contains(sid) {
                client.volume(sid, *volume).await?;
            }
        }
        Ok(())
    }

    /// Who is in each slot (from the `slots` messages).
    pub(crate) fn slots(&self) -> &[Option<String>] {
        &self.slots
    }

    /// Whether the room mixes on the server.
    pub(crate) fn mixed(&self) -> bool {
        self.mixed
    }

    /// Each slot's volume for the network thread: its participant's, or unchanged (free slots, mixed rooms).
    fn publish(&self, shared: &Shared) {
        for (slot, occupant) in self.slots.iter().enumerate() {
            let volume = occupant
                .as_ref()
                .filter(|_| !self.mixed)
                .and_then(|sid| self.volumes.get(sid))
                .copied()
                .unwrap_or_default();
            shared.slot_volumes[slot].store(volume.value(), Ordering::Release);
        }
    }
}

/// The volume the network thread plays `slot` at.
pub(crate) fn slot_volume(shared: &Shared, slot: usize) -> Volume {
    shared
        .slot_volumes
        .get(slot)
        .map(|v| v.load(Ordering::Acquire))
        .and_then(|v| Volume::new(i64::from(v)).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(v: i64) -> Volume {
        Volume::new(v).expect("in range")
    }

    #[test]
    fn volumes_follow_their_participant_from_slot_to_slot_in_forwarding_rooms_only() {
        let shared = Shared::default();
        let mut talk = TalkState::default();
        talk.joined(RoomMode::Forward, &shared);
        assert!(talk.set_volume("PA_a", volume(-20), &shared));
        assert!(!talk.set_volume("PA_a", volume(-20), &shared), "unchanged");
        assert!(talk.set_volume("PA_b", volume(12), &shared));
        assert_eq!(
            slot_volume(&shared, 0),
            Volume::UNCHANGED,
            "nobody in slots"
        );
        talk.slot(0, Some("PA_b"), &shared);
        talk.slot(1, Some("PA_a"), &shared);
        talk.slot(2, Some("PA_c"), &shared);
        assert_eq!(slot_volume(&shared, 0), volume(12));
        assert_eq!(slot_volume(&shared, 1), volume(-20));
        assert_eq!(slot_volume(&shared, 2), Volume::UNCHANGED);
        // PA_a moves to slot 0, slot 1 is freed.
        talk.slot(0, Some("PA_a"), &shared);
        talk.slot(1, None, &shared);
        assert_eq!(slot_volume(&shared, 0), volume(-20));
        assert_eq!(slot_volume(&shared, 1), Volume::UNCHANGED);
        // Back to 0: forgotten.
        assert!(talk.set_volume("PA_a", Volume::UNCHANGED, &shared));
        assert_eq!(slot_volume(&shared, 0), Volume::UNCHANGED);
        assert!(!talk.volumes.contains_key("PA_a"));
        // A slot index beyond the SDK's slots is ignored.
        talk.slot(200, Some("PA_b"), &shared);
        assert_eq!(slot_volume(&shared, 200), Volume::UNCHANGED);

        // A mixed room: the server applies the volumes, the slot plays as it comes.
        talk.joined(RoomMode::Mix, &shared);
        talk.slot(0, Some("PA_b"), &shared);
        assert_eq!(slot_volume(&shared, 0), Volume::UNCHANGED);
        assert_eq!(talk.volumes.get("PA_b"), Some(&volume(12)), "kept");

        // A move forgets the target and the volumes.
        talk.accepted = TalkTarget::Team;
        talk.moved(RoomMode::Forward, &shared);
        assert_eq!(*talk.wanted(), TalkTarget::Room);
        assert!(talk.volumes.is_empty());
    }

    fn in_flight(talk: &mut TalkState, target: TalkTarget<String>) -> (u64, u64) {
        let before = FENCE_BASE + talk.fences;
        talk.fences += 2;
        talk.in_flight.push_back(InFlight {
            before,
            after: before + 1,
            target,
            open: false,
            refused: false,
        });
        (before, before + 1)
    }

    #[test]
    fn a_talk_refused_between_its_fences_leaves_the_accepted_target() {
        let mut talk = TalkState::default();
        let whisper = |sid: &str| TalkTarget::Whisper(vec![sid.to_owned()]);
        // Team, then a whisper to someone unknown, then one to carl; an unrelated error (a position's
        // rate limit) arrives before the first fence.
        let (team_before, team_after) = in_flight(&mut talk, TalkTarget::Team);
        let (bad_before, bad_after) = in_flight(&mut talk, whisper("PA_nobody"));
        let (carl_before, carl_after) = in_flight(&mut talk, whisper("PA_carl"));
        assert_eq!(*talk.wanted(), whisper("PA_carl"));
        talk.error();
        talk.pong(team_before);
        talk.pong(team_after);
        assert_eq!(
            talk.accepted,
            TalkTarget::Team,
            "the earlier error was not its"
        );
        talk.pong(bad_before);
        talk.error();
        talk.pong(bad_after);
        assert_eq!(talk.accepted, TalkTarget::Team, "refused: the team stays");
        // A keepalive pong changes nothing.
        talk.pong(3);
        talk.pong(carl_before);
        talk.pong(carl_after);
        assert_eq!(talk.accepted, whisper("PA_carl"));
        assert!(talk.in_flight.is_empty());
        assert_eq!(*talk.wanted(), whisper("PA_carl"));
    }

    #[test]
    fn volumes_beyond_the_servers_limit_are_not_kept() {
        let shared = Shared::default();
        let mut talk = TalkState::default();
        for i in 0..MAX_VOLUMES + 5 {
            talk.set_volume(&format!("PA_{i}"), volume(5), &shared);
        }
        assert_eq!(talk.volumes.len(), MAX_VOLUMES);
        // A kept one still changes.
        assert!(talk.set_volume("PA_0", volume(6), &shared));
        assert_eq!(talk.volumes.get("PA_0"), Some(&volume(6)));
    }
}
