//! The C ABI (`include/chorus.h`): opaque handles, error codes, events as a tagged struct, no panic
//! crossing the boundary.
//!
//! Every function wraps its body in `catch_unwind`; a panic is [`ChorusError::Panic`]. Null pointers and
//! strings that are not UTF-8 are typed errors ([`ChorusError::Null`], [`ChorusError::Utf8`]). After an
//! error, [`chorus_last_error_message`] describes it (per thread). Using a handle after
//! [`chorus_client_free`] is undefined behaviour, as in any C API.
//!
//! Threads: the game thread calls `connect`, `set_muted`, `set_position`, the talk target and volume
//! calls, `leave`, `poll_event`, `stats`, `set_event_callback`; the event callback runs on the SDK's
//! `chorus-events` thread (`callback.rs`); one capture
//! thread may push and one playback thread may pull at the same time. Push and pull never wait: each
//! takes its direction's handle with a try-lock, and a second thread pushing (or pulling) at the same
//! moment gets [`ChorusError::Busy`] instead of waiting.

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::ffi::c_char;
use std::sync::{Arc, Mutex};

use crate::{Client, Config, Microphone, Speaker};

mod args;
mod callback;
mod events;
mod failure;
mod moderate;
mod talk;

pub use callback::{
    chorus_client_free, chorus_client_poll_event, chorus_client_set_event_callback,
    ChorusEventCallback,
};
pub use moderate::{chorus_client_moderate, ChorusModerateAction};
pub use talk::{
    chorus_client_set_volume, chorus_client_talk_to_room, chorus_client_talk_to_team,
    chorus_client_whisper,
};

use args::{client, lock, optional_string, put, slice, slice_mut, string};
use failure::{failure, guard, Failure, LAST_ERROR};

/// What a call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChorusError {
    Ok = 0,
    /// A required pointer was null.
    Null = 1,
    /// A string was not UTF-8.
    Utf8 = 2,
    /// A configuration value is out of range.
    Config = 3,
    AlreadyConnected = 4,
    NotConnected = 5,
    /// No stream for that participant (not in a slot).
    UnknownParticipant = 6,
    /// Not a usable Opus packet.
    BadOpus = 7,
    /// The session has ended.
    Ended = 8,
    Io = 9,
    /// The server refused, timed out or closed.
    Signaling = 10,
    Media = 11,
    /// Another thread is pushing (or pulling) on this client at this moment.
    Busy = 12,
    /// The microphone or speaker handle is not available.
    Taken = 13,
    Opus = 14,
    /// The SDK panicked (a bug); the handle may still be freed.
    Panic = 15,
    /// The output pulled from is turned off in the config.
    OutputOff = 16,
    /// A position with a value that is NaN or infinite, or a coordinate beyond ±1,000,000.
    BadPosition = 17,
    /// A whisper to no one or to more than 64 participants (nothing sent). The room's own refusals
    /// arrive later as an `ERROR` event with `code` `bad_target`.
    BadTarget = 18,
    /// A volume outside −50..=50 (nothing sent).
    BadVolume = 19,
    /// A number that is not one of the enum's values (`chorus_client_moderate`'s action).
    BadAction = 20,
    /// A pull whose `len` is not a whole number of sample frames (`output_channels` 2: an odd `len`);
    /// nothing was pulled.
    BadLength = 21,
}

/// A client's settings; [`chorus_config_default`] fills the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChorusConfig {
    /// 16000, 24000 or 48000: the rate of the PCM pushed (mono).
    pub input_rate_hz: u32,
    /// 16000, 24000 or 48000: the rate of the PCM pulled.
    pub output_rate_hz: u32,
    pub bitrate_bps: i32,
    pub fec: bool,
    pub expected_loss_percent: i32,
    pub dtx: bool,
    /// The length of each audio ring, 40..=2000 ms.
    pub buffer_ms: u32,
    pub mixed_output: bool,
    pub participant_output: bool,
    /// The display name, UTF-8, or null for the token's.
    pub name: *const c_char,
    /// The team to ask for (1–64 of `A-Z a-z 0-9 _ . -`), or null: the token's `team` claim decides (a
    /// different team is refused by the server), so a game server's players leave it null.
    pub team: *const c_char,
    /// Join as a listener only: never publish.
    pub listen_only: bool,
    /// 1 (mono, the default) or 2: the PCM pulled is stereo, interleaved L/R (a spatial mixed room's
    /// stereo mix; a forwarding room's streams panned by the speakers' positions; else the same on both
    /// sides), and every pull's `len` is `frames × 2`.
    pub output_channels: u16,
    /// Once the server's receiver reports arrive, tune the FEC for the loss they state instead of
    /// `expected_loss_percent`.
    pub fec_follows_reports: bool,
    /// RED (RFC 2198) redundancy, 0..=2 earlier frames with each packet (0: plain Opus); 1 by default.
    pub red_depth: u8,
}

/// The kind of a [`ChorusEvent`]; which fields are set depends on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChorusEventKind {
    /// No event was waiting.
    None = 0,
    /// `state`.
    ConnectionState = 1,
    /// `sid` (this session's), `name` (the room), `slot` (the slot count).
    Joined = 2,
    /// `sid`, `identity`, `name`, `muted`, `team`, `shout`.
    ParticipantJoined = 3,
    /// `sid`, `text` (the reason).
    ParticipantLeft = 4,
    /// `sid`, `muted`.
    ParticipantMuted = 5,
    /// Speaker `index` of `count` (loudest first): `sid`, `level` 0..=1. `count` 0: nobody speaks.
    Speaking = 6,
    /// `sid`.
    DominantSpeaker = 7,
    /// Slot `slot` (entry `index` of `count`): `sid`, empty if free.
    Slot = 8,
    Draining = 9,
    /// `text`: the reason, empty if none.
    Left = 10,
    /// `text`: the message; `code`: the protocol's error code when the server refused a request and the
    /// session goes on (`bad_target`, `participant_not_found`, `rate_limited`, …), empty for the SDK's own.
    Error = 11,
    /// Rejoin attempt `index` (from 1) after a lost connection; `text`: why.
    Reconnecting = 12,
    /// `sid`, `server_muted`, `deafened`, `ptt`: a participant's moderation or push-to-talk state.
    ParticipantUpdated = 13,
    /// A moderator moved this session: `sid` (its new id), `name` (the new room), `slot` (its slot count).
    /// Media is renegotiated by the SDK.
    Moved = 14,
    /// In a spatial forwarding room, speaker `index` of `count` this session hears (nearest first): `sid`,
    /// `x`, `y`, `z`, `yaw_deg`. `count` 0: nobody is in range. A new list replaces the previous one.
    Position = 15,
}

/// A session's connection state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChorusConnectionState {
    Connecting = 0,
    Joined = 1,
    Connected = 2,
    Disconnected = 3,
    Closed = 4,
    Reconnecting = 5,
}

/// One event. Strings are NUL-terminated UTF-8 (truncated to fit).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChorusEvent {
    pub kind: ChorusEventKind,
    pub state: ChorusConnectionState,
    pub sid: [c_char; 64],
    pub identity: [c_char; 128],
    pub name: [c_char; 128],
    pub text: [c_char; 256],
    /// `ERROR`: the server's error code, empty if none.
    pub code: [c_char; 32],
    /// `PARTICIPANT_JOINED`: its team (up to 64 characters), empty without.
    pub team: [c_char; 65],
    /// `PARTICIPANT_JOINED`: the shout role (heard by everyone in the room).
    pub shout: bool,
    pub muted: bool,
    pub level: f32,
    pub slot: u32,
    pub index: u32,
    pub count: u32,
    /// Muted by a moderator (it cannot unmute itself).
    pub server_muted: bool,
    /// Sent no audio by the server.
    pub deafened: bool,
    /// Push-to-talk: heard only while its key is down.
    pub ptt: bool,
    /// A speaker's position (`POSITION`), world units.
    pub x: f64,
    pub y: f64,
    pub z: f64,
    /// Its facing, degrees clockwise from +y.
    pub yaw_deg: f64,
}

/// The SDK's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChorusStats {
    pub mic_dropped: u64,
    pub output_dropped: u64,
    pub frames_sent: u64,
    pub packets_received: u64,
    /// The packet loss the encoder's in-band FEC is tuned for now, 0..=100 %.
    pub expected_loss_percent: u32,
}

/// A client (opaque).
pub struct ChorusClient {
    client: Mutex<Client>,
    microphone: Mutex<Option<Microphone>>,
    speaker: Mutex<Option<Speaker>>,
    /// The event callback or queue, fed by `dispatcher`.
    hub: Arc<callback::Hub>,
    /// The `chorus-events` thread (joined by `chorus_client_free`, after the client).
    dispatcher: Option<std::thread::JoinHandle<()>>,
}

/// The message of the last failed call on this thread ("" if none). Valid until the next failing call on
/// this thread.
#[no_mangle]
pub extern "C" fn chorus_last_error_message() -> *const c_char {
    LAST_ERROR.with(|last| {
        let last = last.borrow();
        if last.is_empty() {
            c"".as_ptr()
        } else {
            last.as_ptr().cast()
        }
    })
}

/// Fill `out` with the defaults: 48 kHz mono in and out, 32 kb/s, FEC on, DTX off, 200 ms rings, both
/// outputs, the token's name.
///
/// # Safety
/// `out` is null or valid for writing a `ChorusConfig`.
#[no_mangle]
pub unsafe extern "C" fn chorus_config_default(out: *mut ChorusConfig) -> ChorusError {
    guard(|| {
        if out.is_null() {
            return Err(failure(ChorusError::Null, "out is null"));
        }
        let d = Config::default();
        let config = ChorusConfig {
            input_rate_hz: d.input_rate_hz,
            output_rate_hz: d.output_rate_hz,
            bitrate_bps: d.bitrate_bps,
            fec: d.fec,
            expected_loss_percent: d.expected_loss_percent,
            dtx: d.dtx,
            buffer_ms: d.buffer_ms,
            mixed_output: d.mixed_output,
            participant_output: d.participant_output,
            name: std::ptr::null(),
            team: std::ptr::null(),
            listen_only: d.listen_only,
            output_channels: d.output_channels,
            fec_follows_reports: d.fec_follows_reports,
            red_depth: d.red_depth,
        };
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, config) };
        Ok(())
    })
}

/// A new client with `config` (null: the defaults), not connected; null on failure (see
/// [`chorus_last_error_message`]). Free it with [`chorus_client_free`].
///
/// # Safety
/// `config` is null or points to a `ChorusConfig` whose `name` and `team` are null or NUL-terminated
/// strings.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_new(config: *const ChorusConfig) -> *mut ChorusClient {
    let mut created = None;
    let code = guard(|| {
        // SAFETY: null or a valid ChorusConfig, per the caller.
        let config = match unsafe { config.as_ref() } {
            None => Config::default(),
            Some(c) => Config {
                input_rate_hz: c.input_rate_hz,
                output_rate_hz: c.output_rate_hz,
                bitrate_bps: c.bitrate_bps,
                fec: c.fec,
                expected_loss_percent: c.expected_loss_percent,
                dtx: c.dtx,
                buffer_ms: c.buffer_ms,
                mixed_output: c.mixed_output,
                participant_output: c.participant_output,
                // SAFETY: null or NUL-terminated, per the caller.
                name: unsafe { optional_string(c.name, "config.name") }?.map(str::to_owned),
                // SAFETY: null or NUL-terminated, per the caller.
                team: unsafe { optional_string(c.team, "config.team") }?
                    .map(|team| {
                        vocab::TeamId::new(team)
                            .map_err(|e| crate::Error::Config(format!("team: {e}")))
                    })
                    .transpose()?,
                listen_only: c.listen_only,
                output_channels: c.output_channels,
                fec_follows_reports: c.fec_follows_reports,
                red_depth: c.red_depth,
                ..Config::default()
            },
        };
        let mut client = Client::new(config)?;
        let microphone = client.take_microphone();
        let speaker = client.take_speaker();
        let hub = Arc::new(callback::Hub::default());
        let dispatcher =
            callback::spawn(client.take_events(), hub.clone()).map_err(crate::Error::from)?;
        created = Some(Box::new(ChorusClient {
            client: Mutex::new(client),
            microphone: Mutex::new(microphone),
            speaker: Mutex::new(speaker),
            hub,
            dispatcher: Some(dispatcher),
        }));
        Ok(())
    });
    match created {
        Some(client) if code == ChorusError::Ok => Box::into_raw(client),
        _ => std::ptr::null_mut(),
    }
}

/// Connect to `url` (`ws://host:port/ws`) and join with `token`; `room` (null: the token's) must be the
/// token's. Returns at once; progress arrives as events.
///
/// # Safety
/// `client` is null or live; the strings are null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_connect(
    client: *mut ChorusClient,
    url: *const c_char,
    token: *const c_char,
    room: *const c_char,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, url, token, room) = unsafe {
            (
                self::client(client)?,
                string(url, "url")?,
                string(token, "token")?,
                optional_string(room, "room")?,
            )
        };
        lock(&c.client).connect(url, token, room)?;
        Ok(())
    })
}

/// Push mono PCM (−1..=1) at the input rate from the capture callback; `*taken` (if not null) is how many
/// samples fit, the rest are counted drops. Never waits.
///
/// # Safety
/// `client` is null or live; `pcm` is null or valid for `len` floats; `taken` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_push_pcm_f32(
    client: *mut ChorusClient,
    pcm: *const f32,
    len: usize,
    taken: *mut usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, pcm) = unsafe { (self::client(client)?, slice(pcm, len, "pcm")?) };
        let n = with_microphone(c, |mic| mic.push_f32(pcm))?;
        // SAFETY: per the caller.
        unsafe { put(taken, n) };
        Ok(())
    })
}

/// [`chorus_client_push_pcm_f32`] for 16-bit samples.
///
/// # Safety
/// `client` is null or live; `pcm` is null or valid for `len` samples; `taken` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_push_pcm_i16(
    client: *mut ChorusClient,
    pcm: *const i16,
    len: usize,
    taken: *mut usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, pcm) = unsafe { (self::client(client)?, slice(pcm, len, "pcm")?) };
        let n = with_microphone(c, |mic| mic.push_i16(pcm))?;
        // SAFETY: per the caller.
        unsafe { put(taken, n) };
        Ok(())
    })
}

/// Push one pre-encoded Opus packet (mono). Never waits.
///
/// # Safety
/// `client` is null or live; `packet` is null or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_push_opus(
    client: *mut ChorusClient,
    packet: *const u8,
    len: usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, packet) = unsafe { (self::client(client)?, slice(packet, len, "packet")?) };
        with_microphone(c, |mic| mic.push_opus(packet))??;
        Ok(())
    })
}

/// Fill `out` with `len` samples of the mix at the output rate; `*filled` (if not null) is how many came
/// from the network, the rest is silence. Never waits. With `output_channels` 2 the samples are
/// interleaved L/R and `len` is `frames × 2` (an odd `len`: [`ChorusError::BadLength`], nothing pulled).
///
/// # Safety
/// `client` is null or live; `out` is null or valid for writing `len` floats; `filled` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_pull_mixed_f32(
    client: *mut ChorusClient,
    out: *mut f32,
    len: usize,
    filled: *mut usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, out) = unsafe { (self::client(client)?, slice_mut(out, len, "out")?) };
        let n = with_speaker(c, |speaker| speaker.pull_mixed(out))??;
        // SAFETY: per the caller.
        unsafe { put(filled, n) };
        Ok(())
    })
}

/// Fill `out` with `len` samples of participant `sid` at the output rate; `*filled`, the channels and
/// `len`'s rule as for the mix. [`ChorusError::UnknownParticipant`] if `sid` is in no slot.
///
/// # Safety
/// As [`chorus_client_pull_mixed_f32`]; `sid` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_pull_participant_f32(
    client: *mut ChorusClient,
    sid: *const c_char,
    out: *mut f32,
    len: usize,
    filled: *mut usize,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let (c, sid, out) = unsafe {
            (
                self::client(client)?,
                string(sid, "sid")?,
                slice_mut(out, len, "out")?,
            )
        };
        let n = with_speaker(c, |speaker| speaker.pull_participant(sid, out))??;
        // SAFETY: per the caller.
        unsafe { put(filled, n) };
        Ok(())
    })
}

/// Mute or unmute the microphone (the room is told).
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_muted(
    client: *mut ChorusClient,
    muted: bool,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).set_muted(muted)?;
        Ok(())
    })
}

/// Turn push-to-talk on or off: with it on, the server forwards this client's audio only while its key
/// is down (`chorus_client_set_ptt_key`), and nothing is sent while it is up.
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_ptt(
    client: *mut ChorusClient,
    enabled: bool,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).set_ptt(enabled)?;
        Ok(())
    })
}

/// The push-to-talk key went down (`true`) or up. Call it from the key's handler; repeats are harmless.
/// Key-downs beyond 10 at once and 5 per second are refused by the server (an `ERROR` event,
/// `rate_limited`).
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_ptt_key(
    client: *mut ChorusClient,
    down: bool,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).set_ptt_key(down)?;
        Ok(())
    })
}

/// Where the player is (world units: `x` right, `y` ahead, `z` up) and which way it faces (`yaw_deg`
/// clockwise from +y), in a spatial room. Call it whenever the player moves: the newest position replaces
/// any not sent yet, and at most one is sent every ~120 ms (the server's limit is 100 ms).
/// [`ChorusError::BadPosition`] (nothing sent) for NaN, infinity or a coordinate beyond ±1,000,000. Never
/// waits.
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_position(
    client: *mut ChorusClient,
    x: f64,
    y: f64,
    z: f64,
    yaw_deg: f64,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).set_position(x, y, z, yaw_deg)?;
        Ok(())
    })
}

/// Leave the room; a `LEFT` event and the `CLOSED` state follow.
///
/// # Safety
/// `client` is null or live.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_leave(client: *mut ChorusClient) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        lock(&c.client).leave()?;
        Ok(())
    })
}

/// The SDK's counters into `*out`.
///
/// # Safety
/// `client` is null or live; `out` is null or valid for writing a `ChorusStats`.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_stats(
    client: *mut ChorusClient,
    out: *mut ChorusStats,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        if out.is_null() {
            return Err(failure(ChorusError::Null, "out is null"));
        }
        let s = lock(&c.client).stats();
        let stats = ChorusStats {
            mic_dropped: s.mic_dropped,
            output_dropped: s.output_dropped,
            frames_sent: s.frames_sent,
            packets_received: s.packets_received,
            expected_loss_percent: s.expected_loss_percent,
        };
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, stats) };
        Ok(())
    })
}

fn with_microphone<T>(
    c: &ChorusClient,
    f: impl FnOnce(&mut Microphone) -> T,
) -> Result<T, Failure> {
    let mut guard = c
        .microphone
        .try_lock()
        .map_err(|_| failure(ChorusError::Busy, "another thread is pushing"))?;
    let mic = guard
        .as_mut()
        .ok_or_else(|| failure(ChorusError::Taken, "no microphone"))?;
    Ok(f(mic))
}

fn with_speaker<T>(c: &ChorusClient, f: impl FnOnce(&mut Speaker) -> T) -> Result<T, Failure> {
    let mut guard = c
        .speaker
        .try_lock()
        .map_err(|_| failure(ChorusError::Busy, "another thread is pulling"))?;
    let speaker = guard
        .as_mut()
        .ok_or_else(|| failure(ChorusError::Taken, "no speaker"))?;
    Ok(f(speaker))
}

#[cfg(test)]
mod tests;
