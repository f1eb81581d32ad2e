//! The C arguments: handles, strings and slices checked for null and UTF-8, and out-pointers.

// The C boundary dereferences the caller's pointers; each `unsafe` block states what the caller
// guarantees (see the `# Safety` sections).
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr};
use std::sync::{Mutex, MutexGuard};

use super::failure::{bad_argument, failure, Failure};
use super::{ChorusClient, ChorusError};

/// A lock that a panic elsewhere poisoned still guards consistent data (every write is one assignment).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The client behind `handle`.
///
/// # Safety
/// `handle` is null or came from [`chorus_client_new`] and was not freed.
pub(super) unsafe fn client<'a>(handle: *const ChorusClient) -> Result<&'a ChorusClient, Failure> {
    // SAFETY: the caller passes null or a live handle from chorus_client_new.
    unsafe { handle.as_ref() }.ok_or_else(|| failure(ChorusError::Null, "the client is null"))
}

/// A required string argument.
///
/// # Safety
/// `s` is null or a NUL-terminated string valid for the call.
pub(super) unsafe fn string<'a>(s: *const c_char, what: &'static str) -> Result<&'a str, Failure> {
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
pub(super) unsafe fn optional_string<'a>(
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
pub(super) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &'static str,
) -> Result<&'a [T], Failure> {
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
pub(super) unsafe fn slice_mut<'a, T>(
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
pub(super) unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null, and the caller guarantees it is writable.
        unsafe { out.write(value) };
    }
}
