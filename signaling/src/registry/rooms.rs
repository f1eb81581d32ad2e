//! Rooms as the admin API and the operators act on them: create, delete, kick (with its ban), and the
//! sweep of empty rooms past their timeout.

use std::collections::hash_map::Entry;
use std::time::Instant;

use crate::auth::unix_now;
use crate::protocol::LeftReason;

use super::{snapshot, AdminError, Room, RoomOrigin, RoomRegistry, RoomSnapshot, RoomSpec};

impl RoomRegistry {
    /// Creates an empty room through the admin API.
    pub(crate) fn create(
        &self,
        name: &str,
        spec: RoomSpec,
        now: Instant,
    ) -> Result<RoomSnapshot, AdminError> {
        if !crate::auth::is_valid_room_name(name) {
            return Err(AdminError::InvalidRoomName);
        }
        let mut rooms = self.lock();
        let entry = match rooms.entry(name.to_owned()) {
            Entry::Vacant(entry) => entry,
            Entry::Occupied(room) if room.get().settings.conflicts_with(&spec.settings) => {
                return Err(AdminError::RoomSettingsConflict);
            }
            Entry::Occupied(_) => return Err(AdminError::RoomExists),
        };
        let room = entry.insert(Room {
            settings: spec.settings,
            max_participants: spec.max_participants,
            origin: RoomOrigin::Admin,
            empty_timeout: spec.empty_timeout,
            created_at_unix: unix_now(),
            empty_since: Some(now),
            closing: false,
            members: Vec::new(),
            remote: Vec::new(),
        });
        self.room_created(name, room);
        Ok(snapshot(name, room))
    }

    /// Deletes a room: an empty one at once; otherwise it admits nobody more, every participant is told
    /// to leave (`room_deleted`), and the room goes with the last of them.
    pub(crate) fn delete(&self, name: &str) -> Result<(), AdminError> {
        let mut rooms = self.lock();
        let room = rooms.get_mut(name).ok_or(AdminError::RoomNotFound)?;
        if room.members.is_empty() {
            if let Some(room) = rooms.remove(name) {
                self.room_removed(name, &room);
            }
            return Ok(());
        }
        room.closing = true;
        for member in &room.members {
            member.remove.send_replace(Some(LeftReason::RoomDeleted));
        }
        Ok(())
    }

    /// [`Self::kick_at`] now.
    pub(crate) fn kick(&self, room: &str, sid: &str) -> Result<(), AdminError> {
        self.kick_at(room, sid, Instant::now())
    }

    /// Tells a participant's session to leave (`kicked`) at `now`, and bans its identity from the room
    /// for the kick ban period (a kick is not undone by rejoining with the same token).
    pub(crate) fn kick_at(
        &self,
        room_name: &str,
        sid: &str,
        now: Instant,
    ) -> Result<(), AdminError> {
        let rooms = self.lock();
        let room = rooms.get(room_name).ok_or(AdminError::RoomNotFound)?;
        let member = room
            .members
            .iter()
            .find(|m| m.info.sid == sid)
            .ok_or_else(|| room.missing(sid))?;
        member.remove.send_replace(Some(LeftReason::Kicked));
        if !self.kick_ban.is_zero() {
            let mut bans = self.lock_bans();
            bans.retain(|_, until| *until > now);
            bans.insert(
                (room_name.to_owned(), member.info.identity.clone()),
                now + self.kick_ban,
            );
        }
        Ok(())
    }

    /// Identities banned from rooms now (for tests and the admin view).
    #[cfg(test)]
    pub(super) fn ban_count(&self, now: Instant) -> usize {
        self.lock_bans()
            .values()
            .filter(|until| **until > now)
            .count()
    }

    /// Removes the rooms created through the admin API that have been empty for their empty timeout at
    /// `now`; returns their names.
    pub(crate) fn sweep(&self, now: Instant) -> Vec<String> {
        let mut rooms = self.lock();
        let expired: Vec<String> = rooms
            .iter()
            .filter(|(_, room)| {
                room.members.is_empty()
                    && room.empty_since.is_some_and(|since| {
                        now.saturating_duration_since(since) >= room.empty_timeout
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            if let Some(room) = rooms.remove(name) {
                self.room_removed(name, &room);
            }
        }
        expired
    }
}
