//! The talk target and volumes through the C ABI: one function per target kind (room, team, whisper), so
//! that a C caller never builds a tagged union, and one for a participant's volume.

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::ffi::c_char;

use vocab::TalkTarget;

use super::args::{client, lock, slice, string};
use super::failure::guard;
use super::{ChorusClient, ChorusError};

/// Talk to the room (the default): whoever the room's rules let hear this client. Never waits.
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_talk_to_room(client: *mut ChorusClient) -> ChorusError {
    // SAFETY: per the caller.
    unsafe { talk_to(client, TalkTarget::Room) }
}

/// Talk to this client's team only, wherever its members are (the team comes from the token's `team`
/// claim). Without a team the server refuses: an `ERROR` event with `code` `bad_target`, the previous
/// target stays. Never waits.
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_talk_to_team(client: *mut ChorusClient) -> ChorusError {
    // SAFETY: per the caller.
    unsafe { talk_to(client, TalkTarget::Team) }
}

/// Whisper to the `n` participants `sids` (1 to 64 participant ids of this room, as in the `sid` of
/// `PARTICIPANT_JOINED`): only they hear this client. `n` 0 or above 64: [`ChorusError::BadTarget`],
/// nothing sent. A sid not in the room, or this client's own: an `ERROR` event with `code` `bad_target`,
/// the previous target stays. Sent again after a rejoin; a move resets the target to the room. Never
/// waits.
///
/// # Safety
/// `client` is null or live; `sids` is null or valid for `n` pointers, each null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_whisper(
    client: *mut ChorusClient,
    sids: *const *const c_char,
    n: usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, sids) = unsafe { (self::client(client)?, slice(sids, n, "sids")?) };
        let to = sids
            .iter()
            // SAFETY: each is null or NUL-terminated, per the caller.
            .map(|sid| unsafe { string(*sid, "a sid") }.map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        lock(&c.client).talk_to(TalkTarget::Whisper(to))?;
        Ok(())
    })
}

/// How loud this client hears participant `sid`: −50 (silent) to +50, 0 unchanged, 0.5 dB per step
/// (Vivox's scale). Out of range: [`ChorusError::BadVolume`], nothing sent. In a forwarding room the SDK
/// scales that participant's audio (louder too, soft-clipped); in a mixed room the server does it in this
/// client's mix. A sid not in the room: an `ERROR` event with `code` `participant_not_found`. Talk and
/// volume calls together are limited by the server to 20 at once and 10 per second (`rate_limited`):
/// send a slider's final value. Never waits.
///
/// # Safety
/// `client` is null or live; `sid` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_volume(
    client: *mut ChorusClient,
    sid: *const c_char,
    volume: i32,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, sid) = unsafe { (self::client(client)?, string(sid, "sid")?) };
        lock(&c.client).set_volume(sid, volume)?;
        Ok(())
    })
}

/// # Safety
/// `client` is null or live.
unsafe fn talk_to(client: *mut ChorusClient, target: TalkTarget<String>) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).talk_to(target)?;
        Ok(())
    })
}
