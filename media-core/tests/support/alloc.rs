//! A counting global allocator (installed by `tests/sim.rs`): heap bytes allocated and freed by the current
//! thread, so a test can measure what one call retains and its peak while other tests run in parallel.
//!
//! A global allocator is an `unsafe` trait whose methods are `unsafe`: the workspace's `unsafe_code` denial
//! is lifted here, for the forwarding calls only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // During thread teardown the counters may be gone; those bytes are nobody's measurement.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// What a closure costs on this thread's heap.
#[derive(Clone, Copy, Debug)]
pub struct HeapCost {
    /// Bytes still allocated when it returned (including its result).
    pub retained: isize,
    /// The most bytes allocated at once while it ran, above the starting point.
    pub peak: isize,
}

/// Run `f` and measure its heap cost on this thread.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, HeapCost) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let cost = HeapCost {
        retained: LIVE.with(Cell::get) - start,
        peak: PEAK.with(Cell::get) - start,
    };
    (out, cost)
}
