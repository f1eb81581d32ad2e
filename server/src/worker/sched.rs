//! A media worker's scheduler slice (`media.worker_slice_us`).
//!
//! Linux's fair scheduler (EEVDF, 6.6 on) gives each thread a virtual deadline one slice after it becomes
//! eligible, runs the eligible thread with the earliest deadline, and lets a waking thread preempt the
//! running one only if its deadline is earlier. From 6.12 a thread may ask for its own slice
//! (`sched_setattr(2)` with `sched_runtime` for a fair policy; 0.1–100 ms). A worker that sleeps until its
//! socket is readable and then fans a packet out to hundreds of subscribers is the latency-sensitive thread
//! this is for: with a short slice its deadline is earlier than the other threads' on its core, so it runs
//! as soon as a datagram wakes it and is not preempted half-way through a fan-out by whatever its sends
//! woke. Its share of the CPU over time is unchanged (that is the weight, i.e. the nice value, which this
//! keeps). Measured on a 2-core VM with the load tool on the same cores (docs/architecture.md, "Media
//! workers"; docs/loadtest.md, "2026-12-04 (twelfth session)"): forwarding 1 × 50, the worker's
//! preemptions fell by more than 90 % and the end-to-end p50 and p99 by a fifth to a third.

use std::io;
use std::time::Duration;

/// What asking for a slice did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceOutcome {
    /// The thread now has this slice (the kernel clamps to 0.1–100 ms).
    Applied(Duration),
    /// The kernel took the call but kept its own slice (before Linux 6.12 `sched_runtime` means nothing
    /// to a fair thread).
    Ignored,
    /// The thread runs under a real-time or deadline policy the operator chose: left alone.
    NotFair,
}

/// `struct sched_attr` as of Linux 3.14 (`SCHED_ATTR_SIZE_VER0`, 48 bytes); the kernel accepts this size.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

const ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;
const _: () = assert!(ATTR_SIZE == 48, "SCHED_ATTR_SIZE_VER0");

/// The calling thread's scheduling attributes.
#[allow(unsafe_code)]
fn get_attr() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: pid 0 is the calling thread; `attr` is a writable, properly aligned `struct sched_attr` of
    // `ATTR_SIZE` bytes, the size passed, and the kernel writes at most that many.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            ATTR_SIZE,
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Set the calling thread's scheduling attributes.
#[allow(unsafe_code)]
fn set_attr(attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; `attr` is a readable `struct sched_attr` whose `size` field says
    // how many bytes the kernel may read.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask for `slice` for the calling thread, keeping its policy and nice value; then read back what the
/// kernel made of it.
pub fn request_slice(slice: Duration) -> io::Result<SliceOutcome> {
    let mut attr = get_attr()?;
    if attr.sched_policy != libc::SCHED_OTHER as u32
        && attr.sched_policy != libc::SCHED_BATCH as u32
    {
        return Ok(SliceOutcome::NotFair);
    }
    let requested = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX).max(1);
    attr.size = ATTR_SIZE;
    attr.sched_flags = 0;
    attr.sched_runtime = requested;
    attr.sched_deadline = 0;
    attr.sched_period = 0;
    set_attr(&attr)?;
    let now = get_attr()?.sched_runtime;
    Ok(if now == 0 {
        SliceOutcome::Ignored
    } else {
        SliceOutcome::Applied(Duration::from_nanos(now))
    })
}

/// Say once, at the worker's start, what asking for its slice did.
pub fn log_slice(worker: usize, slice: Duration, outcome: io::Result<SliceOutcome>) {
    let asked_us = slice.as_micros() as u64;
    match outcome {
        Ok(SliceOutcome::Applied(got)) => {
            tracing::debug!(worker, slice_us = got.as_micros() as u64, "scheduler slice set");
        }
        Ok(SliceOutcome::Ignored) => tracing::info!(
            worker,
            asked_us,
            "this kernel keeps its own scheduler slice (custom slices need Linux 6.12): the worker runs \
             with the default"
        ),
        Ok(SliceOutcome::NotFair) => tracing::info!(
            worker,
            "the worker runs under a real-time policy: its scheduler slice is left alone"
        ),
        Err(e) => tracing::warn!(
            worker,
            asked_us,
            error = %e,
            "cannot set the worker's scheduler slice: it runs with the default"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `se.slice` of the calling thread as the kernel reports it, if it does (EEVDF kernels).
    fn proc_slice_ns() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        text.lines()
            .find(|l| l.trim_start().starts_with("se.slice"))?
            .split(':')
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    #[test]
    fn a_slice_asked_for_is_the_threads_slice_or_reported_as_ignored() {
        std::thread::spawn(|| {
            let before = proc_slice_ns();
            let nice = get_attr().expect("sched_getattr works").sched_nice;
            let outcome = request_slice(Duration::from_micros(100)).expect("sched_setattr works");
            match outcome {
                SliceOutcome::Applied(got) => {
                    assert_eq!(got, Duration::from_micros(100));
                    if let Some(ns) = proc_slice_ns() {
                        assert_eq!(ns, 100_000, "the scheduler's own view of the thread");
                    }
                }
                SliceOutcome::Ignored => assert_eq!(proc_slice_ns(), before),
                SliceOutcome::NotFair => panic!("a test thread runs under SCHED_OTHER"),
            }
            // The nice value is kept (whatever the test runs under): the slice is not a priority.
            assert_eq!(get_attr().expect("sched_getattr works").sched_nice, nice);
        })
        .join()
        .expect("the test thread does not panic");
    }

    #[test]
    fn the_kernel_clamps_a_slice_below_its_minimum() {
        std::thread::spawn(|| {
            if let SliceOutcome::Applied(got) =
                request_slice(Duration::from_micros(10)).expect("sched_setattr works")
            {
                assert_eq!(
                    got,
                    Duration::from_micros(100),
                    "0.1 ms is the kernel's floor"
                );
            }
        })
        .join()
        .expect("the test thread does not panic");
    }
}
