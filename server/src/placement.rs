//! Which worker a participant lives on: a room on one worker (new rooms go to the worker with the fewest
//! rooms) until it outgrows `media.room_shard_participants`, then on several — its shards (docs/
//! architecture.md, "Rooms larger than a worker"). The rooms on more than one worker are published to the
//! workers as [`Spans`] whenever a room's shards change. A room with shards on other nodes (the cluster says
//! which: [`Placement::set_remote_rooms`]) also lists the node's trunk socket, at index `workers`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use media_core::RoomId;
use signaling::media::{MediaCommand, MediaRouter, ParticipantId};
use tokio::sync::{mpsc, watch};

use crate::worker::trunk::Spans;

/// One worker's part of a room.
struct Shard {
    worker: usize,
    participants: usize,
}

/// Where a room's participants are.
#[derive(Default)]
struct RoomPlace {
    /// The first one is the room's primary; in the order they were opened.
    shards: Vec<Shard>,
    /// Each placed participant's worker.
    members: HashMap<ParticipantId, usize>,
}

impl RoomPlace {
    fn shard_mut(&mut self, worker: usize) -> Option<&mut Shard> {
        self.shards.iter_mut().find(|s| s.worker == worker)
    }
}

/// Places rooms and their participants on workers.
pub struct Placement {
    workers: Vec<mpsc::Sender<MediaCommand>>,
    shard_participants: usize,
    rooms: Mutex<HashMap<String, RoomPlace>>,
    /// The rooms with shards on other nodes (locked after `rooms`).
    remote: Mutex<HashSet<String>>,
    spans: watch::Sender<Spans>,
}

impl Placement {
    /// `shard_participants`: a shard takes participants until it holds this many.
    pub fn new(
        workers: Vec<mpsc::Sender<MediaCommand>>,
        shard_participants: usize,
        spans: watch::Sender<Spans>,
    ) -> Self {
        assert!(
            !workers.is_empty(),
            "at least one media worker is configured"
        );
        Placement {
            workers,
            shard_participants: shard_participants.max(1),
            rooms: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashSet::new()),
            spans,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomPlace>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker for a new participant of `room` (created if new): the first shard with room, else a new
    /// shard on the worker with the fewest participants that has none of the room, else the least full
    /// shard. Returns it and whether the room's shards changed.
    fn place(
        &self,
        rooms: &mut HashMap<String, RoomPlace>,
        room: &str,
        id: ParticipantId,
    ) -> (usize, bool) {
        if let Some(&w) = rooms.get(room).and_then(|r| r.members.get(&id)) {
            return (w, false);
        }
        let n = self.workers.len();
        let mut room_count = vec![0usize; n];
        let mut participant_count = vec![0usize; n];
        for place in rooms.values() {
            for s in &place.shards {
                room_count[s.worker] += 1;
                participant_count[s.worker] += s.participants;
            }
        }
        let place = rooms.entry(room.to_owned()).or_default();
        let mut opened = false;
        let worker = if let Some(s) = place
            .shards
            .iter()
            .find(|s| s.participants < self.shard_participants)
        {
            s.worker
        } else {
            let outside = (0..n).filter(|w| place.shards.iter().all(|s| s.worker != *w));
            // A new room goes where the fewest rooms are; another shard where the fewest participants are.
            let new_room = place.shards.is_empty();
            let fresh = outside.min_by_key(|&w| {
                let load = if new_room {
                    room_count[w]
                } else {
                    participant_count[w]
                };
                (load, w)
            });
            match fresh {
                Some(w) => {
                    opened = !new_room;
                    place.shards.push(Shard {
                        worker: w,
                        participants: 0,
                    });
                    w
                }
                None => {
                    place
                        .shards
                        .iter()
                        .min_by_key(|s| (s.participants, s.worker))
                        .expect("a room with every worker in it has shards")
                        .worker
                }
            }
        };
        if let Some(s) = place.shard_mut(worker) {
            s.participants += 1;
        }
        place.members.insert(id, worker);
        (worker, opened)
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rooms with shards on other nodes now (from the cluster); republishes the spans if they changed.
    pub fn set_remote_rooms(&self, remote: HashSet<String>) {
        let rooms = self.lock();
        let changed = {
            let mut current = self.remote();
            let changed = *current != remote;
            *current = remote;
            changed
        };
        if changed {
            self.publish(&rooms);
        }
    }

    /// Publish the rooms on more than one worker, or with shards on other nodes (those list the trunk
    /// socket's index, `workers`, too).
    fn publish(&self, rooms: &HashMap<String, RoomPlace>) {
        let remote = self.remote();
        let trunk = self.workers.len();
        let spans: HashMap<RoomId, Vec<usize>> = rooms
            .iter()
            .filter_map(|(name, p)| {
                let mut workers: Vec<usize> = p.shards.iter().map(|s| s.worker).collect();
                if remote.contains(name) {
                    workers.push(trunk);
                }
                (workers.len() > 1).then(|| (RoomId(name.clone()), workers))
            })
            .collect();
        self.spans.send_replace(Arc::new(spans));
    }

    /// Whether `room` is spanned: on several workers or with shards on other nodes.
    fn spanned(&self, place: &RoomPlace, room: &str) -> bool {
        place.shards.len() > 1 || self.remote().contains(room)
    }
}

impl MediaRouter for Placement {
    fn route(&self, room: &str, participant: ParticipantId) -> mpsc::Sender<MediaCommand> {
        let mut rooms = self.lock();
        let new_room = !rooms.contains_key(room);
        let (worker, opened) = self.place(&mut rooms, room, participant);
        if new_room && self.remote().contains(room) {
            // The room's first participant here, of a room with shards on other nodes.
            self.publish(&rooms);
        } else if opened {
            tracing::info!(
                room,
                worker,
                shards = rooms.get(room).map_or(0, |p| p.shards.len()),
                "room spans another worker"
            );
            self.publish(&rooms);
        }
        self.workers[worker].clone()
    }

    fn left(&self, room: &str, participant: ParticipantId) {
        let mut rooms = self.lock();
        let Some(place) = rooms.get_mut(room) else {
            return;
        };
        let Some(worker) = place.members.remove(&participant) else {
            return;
        };
        let Some(shard) = place.shard_mut(worker) else {
            return;
        };
        shard.participants = shard.participants.saturating_sub(1);
        // An emptied shard closes unless it is the room's last (the room itself closes with the registry's).
        if shard.participants == 0 && place.shards.len() > 1 {
            place.shards.retain(|s| s.worker != worker);
            self.publish(&rooms);
        }
    }

    fn room_closed(&self, room: &str) {
        let mut rooms = self.lock();
        let spanned = rooms.remove(room).is_some_and(|p| self.spanned(&p, room));
        if spanned {
            self.publish(&rooms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(workers: usize, limit: usize) -> (Placement, Vec<mpsc::Sender<MediaCommand>>) {
        let senders: Vec<_> = (0..workers).map(|_| mpsc::channel(1).0).collect();
        let (spans, _) = watch::channel(Spans::default());
        (Placement::new(senders.clone(), limit, spans), senders)
    }

    fn on(p: &Placement, room: &str, id: u64) -> mpsc::Sender<MediaCommand> {
        p.route(room, ParticipantId(id))
    }

    #[test]
    fn rooms_spread_over_workers_and_stick() {
        let (p, _) = placement(2, 100);
        let r1 = on(&p, "one", 1);
        let r2 = on(&p, "two", 2);
        assert!(!r1.same_channel(&r2));
        assert!(on(&p, "one", 3).same_channel(&r1));
        p.left("one", ParticipantId(1));
        p.left("one", ParticipantId(3));
        p.room_closed("one");
        assert!(on(&p, "three", 4).same_channel(&r1));
    }

    #[test]
    fn a_full_shard_opens_another_on_the_least_loaded_worker_and_closes_when_empty() {
        let (p, w) = placement(3, 2);
        let mut spans = p.spans.subscribe();
        // Worker 0 gets "big"; worker 1 a small room with one participant.
        assert!(on(&p, "big", 1).same_channel(&w[0]));
        assert!(on(&p, "small", 50).same_channel(&w[1]));
        assert!(on(&p, "big", 2).same_channel(&w[0]));
        assert!(spans.borrow_and_update().is_empty());
        // The primary is full: the third goes to worker 2 (no participants), and the span is published.
        assert!(on(&p, "big", 3).same_channel(&w[2]));
        assert!(spans.has_changed().expect("placement is alive"));
        assert_eq!(
            spans.borrow_and_update().get(&RoomId("big".into())),
            Some(&vec![0, 2])
        );
        // A participant keeps its worker; commands about it go there.
        assert!(on(&p, "big", 3).same_channel(&w[2]));
        assert!(on(&p, "big", 1).same_channel(&w[0]));
        // A place on the primary frees up: the next one goes there again.
        p.left("big", ParticipantId(2));
        assert!(on(&p, "big", 4).same_channel(&w[0]));
        // The second shard empties: it closes, and the room spans one worker again.
        p.left("big", ParticipantId(3));
        assert!(spans.borrow_and_update().is_empty());
    }

    #[test]
    fn a_room_with_shards_on_other_nodes_lists_the_trunk_socket() {
        let (p, _) = placement(2, 100);
        let mut spans = p.spans.subscribe();
        let big = RoomId("big".into());
        // Another node opened a shard of "big" before its first participant here.
        p.set_remote_rooms(HashSet::from(["big".to_owned()]));
        assert!(spans.borrow_and_update().is_empty());
        on(&p, "big", 1);
        assert_eq!(spans.borrow_and_update().get(&big), Some(&vec![0, 2]));
        on(&p, "small", 2);
        assert_eq!(
            spans.borrow_and_update().len(),
            1,
            "a local room spans nothing"
        );
        // The other node's shard closed.
        p.set_remote_rooms(HashSet::new());
        assert!(spans.borrow_and_update().is_empty());
        p.set_remote_rooms(HashSet::from(["big".to_owned()]));
        assert!(!spans.borrow_and_update().is_empty());
        p.left("big", ParticipantId(1));
        p.room_closed("big");
        assert!(spans.borrow_and_update().is_empty());
    }

    #[test]
    fn with_every_worker_in_the_room_the_least_full_shard_takes_more() {
        let (p, w) = placement(2, 1);
        assert!(on(&p, "r", 1).same_channel(&w[0]));
        assert!(on(&p, "r", 2).same_channel(&w[1]));
        assert!(on(&p, "r", 3).same_channel(&w[0]));
        assert!(on(&p, "r", 4).same_channel(&w[1]));
    }
}
