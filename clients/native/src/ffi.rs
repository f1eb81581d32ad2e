//! The C ABI (`include/chorus.h`): opaque handles, error codes, events as a tagged struct, no panic
//! crossing the boundary.
//!
//! Every function wraps its body in `catch_unwind`; a panic is [`ChorusError::Panic`]. Null pointers and
//! strings that are not UTF-8 are typed errors ([`ChorusError::Null`], [`ChorusError::Utf8`]). After an
//! error, [`chorus_last_error_message`] describes it (per thread). Using a handle after
//! [`chorus_client_free`] is undefined behaviour, as in any C API.
//!
//! Threads: the game thread calls `connect`, `set_muted`, `leave`, `poll_event`, `stats`; one capture
//! thread may push and one playback thread may pull at the same time. Push and pull never wait: each
//! takes its direction's handle with a try-lock, and a second thread pushing (or pulling) at the same
//! moment gets [`ChorusError::Busy`] instead of waiting.

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use crate::{Client, Config, ConnectionState, Error, Event, Microphone, Speaker};

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
}

/// A client's settings; [`chorus_config_default`] fills the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChorusConfig {
    /// 16000, 24000 or 48000: the rate of the PCM pushed (mono).
    pub input_rate_hz: u32,
    /// 16000, 24000 or 48000: the rate of the PCM pulled (mono).
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
    /// `sid`, `identity`, `name`, `muted`.
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
    /// `text`: the message.
    Error = 11,
    /// Rejoin attempt `index` (from 1) after a lost connection; `text`: why.
    Reconnecting = 12,
    /// `sid`, `server_muted`, `deafened`, `ptt`: a participant's moderation or push-to-talk state.
    ParticipantUpdated = 13,
    /// A moderator moved this session: `sid` (its new id), `name` (the new room), `slot` (its slot count).
    /// Media is renegotiated by the SDK.
    Moved = 14,
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
}

/// The SDK's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChorusStats {
    pub mic_dropped: u64,
    pub output_dropped: u64,
    pub frames_sent: u64,
    pub packets_received: u64,
}

/// A client (opaque).
pub struct ChorusClient {
    client: Mutex<GameSide>,
    microphone: Mutex<Option<Microphone>>,
    speaker: Mutex<Option<Speaker>>,
}

struct GameSide {
    client: Client,
    /// Events already converted, not yet polled (one Rust event can be several C events).
    events: VecDeque<ChorusEvent>,
}

thread_local! {
    /// The last failed call's message on this thread, NUL-terminated; empty before the first failure. The
    /// buffer is reused, so a failing call on the audio path (pulling a participant that left, a busy
    /// direction) does not allocate once the buffer has grown to the longest message.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a call failed, before it becomes a code. Its message is formatted only into [`LAST_ERROR`].
struct Failure {
    code: ChorusError,
    why: Why,
}

/// A failure's message, kept as values (no `String`) so that building one does not allocate.
enum Why {
    Text(&'static str),
    /// An argument (`what`) and what is wrong with it.
    Argument {
        what: &'static str,
        problem: &'static str,
    },
    Sdk(Error),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Text(text) => f.write_str(text),
            Why::Argument { what, problem } => write!(f, "{what} {problem}"),
            Why::Sdk(e) => e.fmt(f),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Config(_) => ChorusError::Config,
            Error::AlreadyConnected => ChorusError::AlreadyConnected,
            Error::NotConnected => ChorusError::NotConnected,
            Error::Taken(_) => ChorusError::Taken,
            Error::UnknownParticipant => ChorusError::UnknownParticipant,
            Error::OutputOff(_) => ChorusError::OutputOff,
            Error::BadOpus(_) => ChorusError::BadOpus,
            Error::Ended => ChorusError::Ended,
            Error::Signaling(_) => ChorusError::Signaling,
            Error::Media(_) => ChorusError::Media,
            Error::Io(_) => ChorusError::Io,
            Error::Opus(_) => ChorusError::Opus,
        };
        Failure {
            code,
            why: Why::Sdk(e),
        }
    }
}

fn failure(code: ChorusError, text: &'static str) -> Failure {
    Failure {
        code,
        why: Why::Text(text),
    }
}

fn bad_argument(code: ChorusError, what: &'static str, problem: &'static str) -> Failure {
    Failure {
        code,
        why: Why::Argument { what, problem },
    }
}

/// Format `message` into this thread's reused [`LAST_ERROR`] buffer (NUL bytes become spaces).
fn set_last_error(message: &dyn std::fmt::Display) {
    use std::io::Write;
    LAST_ERROR.with(|last| {
        let mut buf = last.borrow_mut();
        buf.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{message}");
        for b in buf.iter_mut().filter(|b| **b == 0) {
            *b = b' ';
        }
        buf.push(0);
    });
}

/// Run `body`, turning its error or panic into a code (and the thread's last error message).
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> ChorusError {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ChorusError::Ok,
        Ok(Err(f)) => {
            set_last_error(&f.why);
            f.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            set_last_error(&format_args!("the SDK panicked: {what}"));
            ChorusError::Panic
        }
    }
}

/// A lock that a panic elsewhere poisoned still guards consistent data (every write is one assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client behind `handle`.
///
/// # Safety
/// `handle` is null or came from [`chorus_client_new`] and was not freed.
unsafe fn client<'a>(handle: *const ChorusClient) -> Result<&'a ChorusClient, Failure> {
    // SAFETY: the caller passes null or a live handle from chorus_client_new.
    unsafe { handle.as_ref() }.ok_or_else(|| failure(ChorusError::Null, "the client is null"))
}

/// A required string argument.
///
/// # Safety
/// `s` is null or a NUL-terminated string valid for the call.
unsafe fn string<'a>(s: *const c_char, what: &'static str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(bad_argument(ChorusError::Null, what, "is null"));
    }
    // SAFETY: non-null, and the caller guarantees NUL termination.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| bad_argument(ChorusError::Utf8, what, "is not UTF-8"))
}

/// An optional string argument (null: `None`).
///
/// # Safety
/// As [`string`].
unsafe fn optional_string<'a>(
    s: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { string(s, what) }.map(Some)
}

/// A slice argument; null is allowed only with `len` 0.
///
/// # Safety
/// `ptr` is null or valid for `len` elements for the call.
unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &'static str) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(bad_argument(ChorusError::Null, what, "is null"));
    }
    // SAFETY: non-null, and the caller guarantees `len` valid elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A mutable slice argument; null is allowed only with `len` 0.
///
/// # Safety
/// `ptr` is null or valid for writing `len` elements for the call, and not aliased.
unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &'static str,
) -> Result<&'a mut [T], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(bad_argument(ChorusError::Null, what, "is null"));
    }
    // SAFETY: non-null, and the caller guarantees `len` writable, unaliased elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Store `value` through an optional out-pointer.
///
/// # Safety
/// `out` is null or valid for writing a `T`.
unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null, and the caller guarantees it is writable.
        unsafe { out.write(value) };
    }
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
/// `config` is null or points to a `ChorusConfig` whose `name` is null or a NUL-terminated string.
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
                ..Config::default()
            },
        };
        let mut client = Client::new(config)?;
        let microphone = client.take_microphone();
        let speaker = client.take_speaker();
        created = Some(Box::new(ChorusClient {
            client: Mutex::new(GameSide {
                client,
                events: VecDeque::new(),
            }),
            microphone: Mutex::new(microphone),
            speaker: Mutex::new(speaker),
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
        lock(&c.client).client.connect(url, token, room)?;
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
/// from the network, the rest is silence. Never waits.
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

/// Fill `out` with `len` samples of participant `sid` at the output rate; `*filled` as for the mix.
/// [`ChorusError::UnknownParticipant`] if `sid` is in no slot.
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
        lock(&c.client).client.set_muted(muted)?;
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
        lock(&c.client).client.set_ptt(enabled)?;
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
        lock(&c.client).client.set_ptt_key(down)?;
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
        lock(&c.client).client.leave()?;
        Ok(())
    })
}

/// The next event into `*out` (kind `NONE` if there is none). Never waits.
///
/// # Safety
/// `client` is null or live; `out` is null or valid for writing a `ChorusEvent`.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_poll_event(
    client: *mut ChorusClient,
    out: *mut ChorusEvent,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        if out.is_null() {
            return Err(failure(ChorusError::Null, "out is null"));
        }
        let mut game = lock(&c.client);
        if game.events.is_empty() {
            if let Some(event) = game.client.poll_event() {
                game.events = c_events(event);
            }
        }
        let event = game.events.pop_front().unwrap_or_else(empty_event);
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, event) };
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
        let s = lock(&c.client).client.stats();
        let stats = ChorusStats {
            mic_dropped: s.mic_dropped,
            output_dropped: s.output_dropped,
            frames_sent: s.frames_sent,
            packets_received: s.packets_received,
        };
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, stats) };
        Ok(())
    })
}

/// Close the session (without waiting for the server) and free the client; returns once the SDK's threads
/// have ended (milliseconds). Null is a no-op. The handle must not be used afterwards.
///
/// # Safety
/// `client` is null or a live handle from [`chorus_client_new`], freed once.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_free(client: *mut ChorusClient) -> ChorusError {
    guard(|| {
        if !client.is_null() {
            // SAFETY: a live handle from chorus_client_new (Box::into_raw), freed once, per the caller.
            drop(unsafe { Box::from_raw(client) });
        }
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

fn empty_event() -> ChorusEvent {
    ChorusEvent {
        kind: ChorusEventKind::None,
        state: ChorusConnectionState::Connecting,
        sid: [0; 64],
        identity: [0; 128],
        name: [0; 128],
        text: [0; 256],
        muted: false,
        level: 0.0,
        slot: 0,
        index: 0,
        count: 0,
        server_muted: false,
        deafened: false,
        ptt: false,
    }
}

/// Copy `s` into a C string field, truncated at a character boundary to fit with its NUL.
fn fill(field: &mut [c_char], s: &str) {
    let mut end = s.len().min(field.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, src) in field.iter_mut().zip(&s.as_bytes()[..end]) {
        *dst = *src as c_char;
    }
    field[end] = 0;
}

/// One Rust event as C events (a list becomes one event per entry).
fn c_events(event: Event) -> VecDeque<ChorusEvent> {
    let mut e = empty_event();
    let mut out = VecDeque::new();
    match event {
        Event::ConnectionState(state) => {
            e.kind = ChorusEventKind::ConnectionState;
            e.state = match state {
                ConnectionState::Connecting => ChorusConnectionState::Connecting,
                ConnectionState::Joined => ChorusConnectionState::Joined,
                ConnectionState::Connected => ChorusConnectionState::Connected,
                ConnectionState::Disconnected => ChorusConnectionState::Disconnected,
                ConnectionState::Closed => ChorusConnectionState::Closed,
                ConnectionState::Reconnecting => ChorusConnectionState::Reconnecting,
            };
        }
        Event::Joined { sid, room, slots } => {
            e.kind = ChorusEventKind::Joined;
            fill(&mut e.sid, &sid);
            fill(&mut e.name, &room);
            e.slot = slots as u32;
        }
        Event::ParticipantJoined(p) => {
            e.kind = ChorusEventKind::ParticipantJoined;
            fill(&mut e.sid, &p.sid);
            fill(&mut e.identity, &p.identity);
            fill(&mut e.name, &p.name);
            e.muted = p.muted;
        }
        Event::ParticipantLeft { sid, reason } => {
            e.kind = ChorusEventKind::ParticipantLeft;
            fill(&mut e.sid, &sid);
            fill(&mut e.text, &reason);
        }
        Event::ParticipantMuted { sid, muted } => {
            e.kind = ChorusEventKind::ParticipantMuted;
            fill(&mut e.sid, &sid);
            e.muted = muted;
        }
        Event::Speaking(speakers) => {
            e.kind = ChorusEventKind::Speaking;
            e.count = speakers.len() as u32;
            for (i, (sid, level)) in speakers.iter().enumerate() {
                let mut s = e;
                s.index = i as u32;
                fill(&mut s.sid, sid);
                s.level = *level;
                out.push_back(s);
            }
            if !speakers.is_empty() {
                return out;
            }
        }
        Event::DominantSpeaker { sid } => {
            e.kind = ChorusEventKind::DominantSpeaker;
            fill(&mut e.sid, &sid);
        }
        Event::Slots(slots) => {
            e.kind = ChorusEventKind::Slot;
            e.count = slots.len() as u32;
            for (i, slot) in slots.iter().enumerate() {
                let mut s = e;
                s.index = i as u32;
                s.slot = u32::from(slot.slot);
                fill(&mut s.sid, slot.sid.as_deref().unwrap_or_default());
                out.push_back(s);
            }
            return out;
        }
        Event::Draining => e.kind = ChorusEventKind::Draining,
        Event::Left { reason } => {
            e.kind = ChorusEventKind::Left;
            fill(&mut e.text, reason.as_deref().unwrap_or_default());
        }
        Event::Reconnecting { attempt, reason } => {
            e.kind = ChorusEventKind::Reconnecting;
            e.index = attempt;
            fill(&mut e.text, &reason);
        }
        Event::Error { message } => {
            e.kind = ChorusEventKind::Error;
            fill(&mut e.text, &message);
        }
        Event::ParticipantUpdated {
            sid,
            server_muted,
            deafened,
            ptt,
        } => {
            e.kind = ChorusEventKind::ParticipantUpdated;
            fill(&mut e.sid, &sid);
            e.server_muted = server_muted;
            e.deafened = deafened;
            e.ptt = ptt;
        }
        Event::Moved { sid, room, slots } => {
            e.kind = ChorusEventKind::Moved;
            fill(&mut e.sid, &sid);
            fill(&mut e.name, &room);
            e.slot = slots as u32;
        }
    }
    out.push_back(e);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::{null, null_mut};

    fn last_error() -> String {
        // SAFETY: chorus_last_error_message returns a NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(chorus_last_error_message()) }
            .to_str()
            .expect("the SDK writes UTF-8 messages")
            .to_owned()
    }

    #[test]
    fn null_handles_and_arguments_are_typed_errors() {
        let mut out = [0.0f32; 4];
        // SAFETY: every pointer is null or valid.
        unsafe {
            assert_eq!(
                chorus_client_connect(null_mut(), null(), null(), null()),
                ChorusError::Null
            );
            assert_eq!(last_error(), "the client is null");
            assert_eq!(
                chorus_client_pull_mixed_f32(null_mut(), out.as_mut_ptr(), 4, null_mut()),
                ChorusError::Null
            );
            assert_eq!(chorus_client_set_muted(null_mut(), true), ChorusError::Null);
            assert_eq!(chorus_client_leave(null_mut()), ChorusError::Null);
            assert_eq!(chorus_config_default(null_mut()), ChorusError::Null);
            assert_eq!(chorus_client_free(null_mut()), ChorusError::Ok);

            let client = chorus_client_new(null());
            assert!(!client.is_null());
            assert_eq!(
                chorus_client_connect(client, null(), c"tok".as_ptr(), null()),
                ChorusError::Null
            );
            assert_eq!(last_error(), "url is null");
            assert_eq!(
                chorus_client_push_pcm_f32(client, null(), 10, null_mut()),
                ChorusError::Null
            );
            // Null with no samples is an empty push.
            let mut taken = 7usize;
            assert_eq!(
                chorus_client_push_pcm_f32(client, null(), 0, &mut taken),
                ChorusError::Ok
            );
            assert_eq!(taken, 0);
            assert_eq!(
                chorus_client_poll_event(client, null_mut()),
                ChorusError::Null
            );
            assert_eq!(
                chorus_client_pull_participant_f32(client, null(), out.as_mut_ptr(), 4, null_mut()),
                ChorusError::Null
            );
            assert_eq!(chorus_client_free(client), ChorusError::Ok);
        }
    }

    #[test]
    fn bad_utf8_bad_config_and_state_errors_are_typed() {
        let bad = [0xffu8 as c_char, 0xfe_u8 as c_char, 0];
        // SAFETY: every pointer is null or valid, the client is freed once.
        unsafe {
            let mut config = std::mem::zeroed::<ChorusConfig>();
            assert_eq!(chorus_config_default(&mut config), ChorusError::Ok);
            assert_eq!(config.output_rate_hz, 48_000);
            config.name = bad.as_ptr();
            assert!(chorus_client_new(&config).is_null());
            assert_eq!(last_error(), "config.name is not UTF-8");
            config.name = c"Ada".as_ptr();
            config.input_rate_hz = 44_100;
            assert!(chorus_client_new(&config).is_null());
            assert!(
                last_error().contains("input_rate_hz 44100"),
                "{}",
                last_error()
            );
            config.input_rate_hz = 16_000;
            let client = chorus_client_new(&config);
            assert!(!client.is_null());

            assert_eq!(
                chorus_client_connect(
                    client,
                    c"ws://127.0.0.1:1/ws".as_ptr(),
                    bad.as_ptr(),
                    null()
                ),
                ChorusError::Utf8
            );
            assert_eq!(last_error(), "token is not UTF-8");
            let mut out = [1.0f32; 8];
            let mut filled = 9usize;
            assert_eq!(
                chorus_client_pull_participant_f32(
                    client,
                    bad.as_ptr(),
                    out.as_mut_ptr(),
                    8,
                    &mut filled
                ),
                ChorusError::Utf8
            );
            assert_eq!(
                chorus_client_pull_participant_f32(
                    client,
                    c"PA_x".as_ptr(),
                    out.as_mut_ptr(),
                    8,
                    &mut filled
                ),
                ChorusError::UnknownParticipant
            );
            assert_eq!(
                chorus_client_pull_mixed_f32(client, out.as_mut_ptr(), 8, &mut filled),
                ChorusError::Ok
            );
            assert_eq!(filled, 0);
            assert_eq!(out, [0.0; 8]);
            assert_eq!(chorus_client_leave(client), ChorusError::NotConnected);
            assert_eq!(
                chorus_client_push_opus(client, [0u8; 2].as_ptr(), 0),
                ChorusError::BadOpus
            );
            let samples = [0i16; 320];
            let mut taken = 0usize;
            assert_eq!(
                chorus_client_push_pcm_i16(client, samples.as_ptr(), samples.len(), &mut taken),
                ChorusError::Ok
            );
            assert_eq!(taken, 320);
            let mut event = empty_event();
            event.kind = ChorusEventKind::Error;
            assert_eq!(
                chorus_client_poll_event(client, &mut event),
                ChorusError::Ok
            );
            assert_eq!(event.kind, ChorusEventKind::None);
            let mut stats = ChorusStats::default();
            assert_eq!(chorus_client_stats(client, &mut stats), ChorusError::Ok);
            assert_eq!(stats.mic_dropped, 0);
            assert_eq!(chorus_client_free(client), ChorusError::Ok);
        }
    }

    /// Counts this thread's allocations, so a test can show that a call does not allocate.
    struct CountingAlloc;

    thread_local! {
        static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator unchanged; the counter is a const-initialised thread local
    // without a destructor, so touching it never allocates.
    unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: per GlobalAlloc's contract, forwarded.
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: per GlobalAlloc's contract, forwarded.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(
            &self,
            ptr: *mut u8,
            layout: std::alloc::Layout,
            new_size: usize,
        ) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: per GlobalAlloc's contract, forwarded.
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOC: CountingAlloc = CountingAlloc;

    #[test]
    fn failing_audio_calls_do_not_allocate() {
        // SAFETY: every pointer is null or valid, the client is freed once.
        unsafe {
            let mut config = std::mem::zeroed::<ChorusConfig>();
            assert_eq!(chorus_config_default(&mut config), ChorusError::Ok);
            let client = chorus_client_new(&config);
            assert!(!client.is_null());
            let mut out = [0.0f32; 480];
            let mut filled = 0usize;
            let mut pull_unknown = || {
                chorus_client_pull_participant_f32(
                    client,
                    c"PA_gone".as_ptr(),
                    out.as_mut_ptr(),
                    out.len(),
                    &mut filled,
                )
            };
            // The first failure on this thread grows the message buffer.
            assert_eq!(pull_unknown(), ChorusError::UnknownParticipant);
            let before = ALLOCATIONS.with(|n| n.get());
            assert!(before > 0, "the counter sees this thread's allocations");
            for _ in 0..100 {
                assert_eq!(pull_unknown(), ChorusError::UnknownParticipant);
                assert_eq!(
                    chorus_client_pull_mixed_f32(client, null_mut(), 4, null_mut()),
                    ChorusError::Null
                );
            }
            assert_eq!(ALLOCATIONS.with(|n| n.get()) - before, 0);
            assert_eq!(last_error(), "out is null");
            assert_eq!(chorus_client_free(client), ChorusError::Ok);
        }
    }

    #[test]
    fn a_panic_is_a_code_not_an_unwind_across_the_boundary() {
        assert_eq!(guard(|| panic!("boom")), ChorusError::Panic);
        assert_eq!(last_error(), "the SDK panicked: boom");
    }

    #[test]
    fn lists_become_one_event_per_entry_and_strings_are_truncated_safely() {
        let events = c_events(Event::Speaking(vec![
            ("PA_a".into(), 0.5),
            ("PA_b".into(), 0.25),
        ]));
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].index, 1);
        assert_eq!(events[1].count, 2);
        assert_eq!(events[1].level, 0.25);
        assert_eq!(c_events(Event::Speaking(vec![]))[0].count, 0);
        let mut field = [1 as c_char; 4];
        fill(&mut field, "aé€");
        // "aé" is 3 bytes: it fits with the NUL; "€" would not.
        assert_eq!(
            field,
            [b'a' as c_char, 0xc3_u8 as c_char, 0xa9_u8 as c_char, 0]
        );
    }
}
