//! Event delivery for the C ABI: an SDK thread, `chorus-events`, takes each event of the session, turns it
//! into C events and hands them to the game's callback if one is set, or else queues them for
//! [`super::chorus_client_poll_event`].

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::args::{client, lock, put};
use super::events::{c_events, empty_event};
use super::failure::{failure, guard, Failure};
use super::{ChorusClient, ChorusError, ChorusEvent};
use crate::Event;

/// A game's event callback: `event` is valid only during the call; `user` is the pointer given with it.
pub type ChorusEventCallback = Option<extern "C" fn(event: *const ChorusEvent, user: *mut c_void)>;

/// Where the C events go: the callback while one is set, else the queue.
#[derive(Default)]
pub(super) struct Hub {
    queue: Mutex<VecDeque<ChorusEvent>>,
    /// Held during each call of the callback, so that a change waits for a call in progress.
    callback: Mutex<Option<Callback>>,
}

struct Callback {
    f: extern "C" fn(*const ChorusEvent, *mut c_void),
    user: *mut c_void,
}

// SAFETY: `user` is the game's pointer, only passed back to its callback on the `chorus-events` thread;
// `chorus_client_set_event_callback`'s contract makes the game answer for using it from that thread.
unsafe impl Send for Callback {}

impl Hub {
    fn deliver(&self, event: Event) {
        let events = c_events(event);
        let callback = lock(&self.callback);
        match &*callback {
            Some(cb) => {
                for e in &events {
                    (cb.f)(e, cb.user);
                }
            }
            None => lock(&self.queue).extend(events),
        }
    }

    pub(super) fn pop(&self) -> ChorusEvent {
        lock(&self.queue).pop_front().unwrap_or_else(empty_event)
    }
}

/// The `chorus-events` thread: delivers each event of `events` until the session's senders are gone (the
/// client is freed).
pub(super) fn spawn(events: Receiver<Event>, hub: Arc<Hub>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("chorus-events".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                // A panic converting an event loses that event, not the thread.
                let _ = catch_unwind(AssertUnwindSafe(|| hub.deliver(event)));
            }
        })
}

/// Whether this call comes from inside the client's own event callback.
pub(super) fn on_event_thread(c: &ChorusClient) -> bool {
    c.dispatcher
        .as_ref()
        .is_some_and(|d| d.thread().id() == std::thread::current().id())
}

fn refuse_from_callback(c: &ChorusClient, what: &'static str) -> Result<(), Failure> {
    if on_event_thread(c) {
        return Err(failure(ChorusError::Busy, what));
    }
    Ok(())
}

/// Have every event from now on delivered to `callback(event, user)` instead of the queue that
/// [`chorus_client_poll_event`] reads; null clears it (events are queued again). Events queued before
/// stay in the queue.
///
/// The callback runs on the SDK's `chorus-events` thread, one event at a time, in order. It must return
/// quickly (it must not block: events and their conversion wait for it), `event` is valid only during the
/// call, and it must not free the client nor change the callback (both return [`ChorusError::Busy`] from
/// inside it); the other calls (`set_muted`, `leave`, …) are allowed. Once this returns, the previous
/// callback is not called again (a call in progress is waited for), so its `user` may be released.
///
/// # Safety
/// `client` is null or live; `user` is whatever `callback` expects, usable from the `chorus-events` thread
/// until the callback is replaced, cleared or the client freed.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_set_event_callback(
    client: *mut ChorusClient,
    callback: ChorusEventCallback,
    user: *mut c_void,
) -> ChorusError {
    guard(|| {
        // SAFETY: per the caller.
        let c = unsafe { self::client(client)? };
        refuse_from_callback(c, "the event callback cannot be changed from inside it")?;
        *lock(&c.hub.callback) = callback.map(|f| Callback { f, user });
        Ok(())
    })
}

/// The next queued event into `*out` (kind `NONE` if there is none). Never waits. With an event callback
/// set, events go to the callback and not to this queue.
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
        // SAFETY: non-null, writable per the caller.
        unsafe { put(out, c.hub.pop()) };
        Ok(())
    })
}

/// Close the session (without waiting for the server) and free the client; returns once the SDK's threads
/// have ended (milliseconds, also while it is still connecting). Null is a no-op. The handle must not be
/// used afterwards. From inside the client's own event callback: [`ChorusError::Busy`], nothing freed.
///
/// # Safety
/// `client` is null or a live handle from [`chorus_client_new`](super::chorus_client_new), freed once.
#[no_mangle]
pub unsafe extern "C" fn chorus_client_free(client: *mut ChorusClient) -> ChorusError {
    guard(|| {
        if client.is_null() {
            return Ok(());
        }
        // SAFETY: live, per the caller.
        let c = unsafe { self::client(client)? };
        refuse_from_callback(
            c,
            "the client cannot be freed from inside its event callback",
        )?;
        // SAFETY: a live handle from chorus_client_new (Box::into_raw), freed once, per the caller.
        let ChorusClient {
            client, dispatcher, ..
        } = *unsafe { Box::from_raw(client) };
        // Ends the session and joins its threads: the last event sender goes, so does `chorus-events`.
        drop(client);
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.join();
        }
        Ok(())
    })
}
