//! Which worker a room lives on.

use std::collections::HashMap;
use std::sync::Mutex;

use signaling::media::{MediaCommand, MediaRouter};
use tokio::sync::mpsc;

/// Places rooms on workers: a room lives on one worker; new rooms go to the worker with fewest rooms.
pub struct Placement {
    workers: Vec<mpsc::Sender<MediaCommand>>,
    rooms: Mutex<HashMap<String, usize>>,
}

impl Placement {
    pub fn new(workers: Vec<mpsc::Sender<MediaCommand>>) -> Self {
        assert!(
            !workers.is_empty(),
            "at least one media worker is configured"
        );
        Placement {
            workers,
            rooms: Mutex::new(HashMap::new()),
        }
    }
}

impl MediaRouter for Placement {
    fn route(&self, room: &str) -> mpsc::Sender<MediaCommand> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&w) = rooms.get(room) {
            return self.workers[w].clone();
        }
        let mut load = vec![0usize; self.workers.len()];
        for &w in rooms.values() {
            load[w] += 1;
        }
        let w = (0..self.workers.len())
            .min_by_key(|&i| (load[i], i))
            .expect("there is at least one worker");
        rooms.insert(room.to_owned(), w);
        self.workers[w].clone()
    }

    fn room_closed(&self, room: &str) {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_over_workers_and_stick() {
        let (a, _ra) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(1);
        let p = Placement::new(vec![a.clone(), b.clone()]);
        let r1 = p.route("one");
        let r2 = p.route("two");
        assert!(!r1.same_channel(&r2));
        assert!(p.route("one").same_channel(&r1));
        p.room_closed("one");
        assert!(p.route("three").same_channel(&r1));
    }
}
