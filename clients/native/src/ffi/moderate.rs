//! Moderation through the C ABI: a moderator's action on another participant of its room.

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::ffi::c_char;

use crate::ModerateAction;

use super::args::{client, lock, optional_string, string};
use super::failure::{failure, guard, Failure};
use super::{ChorusClient, ChorusError};

/// What a moderator does to a participant (the protocol's `moderate` actions).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChorusModerateAction {
    /// A server mute: the participant cannot unmute itself until a moderator unmutes it.
    Mute = 0,
    Unmute = 1,
    /// The participant is sent no audio (what it says is still heard).
    Deafen = 2,
    Undeafen = 3,
    /// Removed from the room (reason `kicked`) and banned from it for a while.
    Kick = 4,
    /// Moved to the room `room` (required), where it is a new participant.
    Move = 5,
}

/// The action a C caller's `ChorusModerateAction` value names (it comes as an integer: a value outside the
/// enum must be an error, not undefined behaviour).
fn action(value: u32) -> Result<ModerateAction, Failure> {
    Ok(match value {
        v if v == ChorusModerateAction::Mute as u32 => ModerateAction::Mute,
        v if v == ChorusModerateAction::Unmute as u32 => ModerateAction::Unmute,
        v if v == ChorusModerateAction::Deafen as u32 => ModerateAction::Deafen,
        v if v == ChorusModerateAction::Undeafen as u32 => ModerateAction::Undeafen,
        v if v == ChorusModerateAction::Kick as u32 => ModerateAction::Kick,
        v if v == ChorusModerateAction::Move as u32 => ModerateAction::Move,
        _ => {
            return Err(failure(
                ChorusError::BadAction,
                "action is not a ChorusModerateAction",
            ))
        }
    })
}

/// A moderator's `action` (a [`ChorusModerateAction`] value; another number is
/// [`ChorusError::BadAction`]) on participant `sid` of this room (the token needs the `moderator` grant);
/// `room` (null otherwise) is where `MOVE` sends it. Never waits; no reply on success: the effects arrive
/// as events (`PARTICIPANT_MUTED`, `PARTICIPANT_UPDATED`, `PARTICIPANT_LEFT`). The server's refusals arrive
/// as an `ERROR` event with `code`: `forbidden` (no moderator grant), `participant_not_found` (`sid` is not
/// in the room), `bad_message` (a move without a room, to an invalid room name or to this room).
/// [`ChorusError::NotConnected`] before `chorus_client_connect`.
///
/// # Safety
/// `client` is null or live; `sid` and `room` are null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_moderate(
    client: *mut ChorusClient,
    sid: *const c_char,
    action: u32,
    room: *const c_char,
) -> ChorusError {
    guard(|| {
        let action = self::action(action)?;
        // SAFETY: per the caller.
        let (c, sid, room) = unsafe {
            (
                self::client(client)?,
                string(sid, "sid")?,
                optional_string(room, "room")?,
            )
        };
        lock(&c.client).moderate(sid, action, room)?;
        Ok(())
    })
}
