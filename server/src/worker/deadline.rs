//! The worker's wake-up for the core's next timeout, to the microsecond: a timerfd on the worker's own
//! reactor.
//!
//! tokio's timer wheel has a resolution of one millisecond and rounds every deadline up to the next one,
//! so a mixer tick ran up to a millisecond after its grid point (half of one on average) and every mixed
//! packet carried that as latency; str0m's timeouts (retransmissions, consent checks) ran late alike. A
//! timerfd fires at its deadline plus the kernel's timer slack (50 µs for an ordinary thread). Registering a
//! descriptor with tokio's reactor takes one `unsafe` call (tokio 1.54: the descriptor must stay open while
//! registered, which an owned timerfd does).

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A one-shot monotonic timer the worker's select waits on.
pub(super) struct Deadline {
    fd: AsyncFd<OwnedFd>,
    /// What the timer is armed for; `None` once it fired (or before it was first armed).
    armed: Cell<Option<Instant>>,
}

impl Deadline {
    /// A disarmed timer, registered with the current tokio runtime.
    pub(super) fn new() -> io::Result<Deadline> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `fd` is the open timerfd just created, and the `AsyncFd` takes it by value: an `OwnedFd`
        // stays open, refers to the same timer and returns the same descriptor until the `AsyncFd` (and
        // with it the `OwnedFd`) is dropped. Nothing else has the descriptor.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Deadline {
            fd,
            armed: Cell::new(None),
        })
    }

    /// Fire at `at` (at once if it has passed). One system call when `at` changed, none otherwise.
    pub(super) fn set(&self, at: Instant) -> io::Result<()> {
        if self.armed.get() == Some(at) {
            return Ok(());
        }
        // A zero value would disarm the timer: a deadline that has passed fires after a nanosecond.
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let value = Timespec::try_from(wait).map_err(|_| io::ErrorKind::InvalidInput)?;
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        self.armed.set(Some(at));
        Ok(())
    }

    /// Wait until the timer fires. Cancel safe: dropped before it fires, the timer stays armed.
    pub(super) async fn fired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = [0u8; 8];
                rustix::io::read(fd.get_ref(), &mut expirations)
                    .map(drop)
                    .map_err(io::Error::from)
            });
            match read {
                Ok(result) => {
                    self.armed.set(None);
                    return result;
                }
                // Readiness was stale (the timer was re-armed before it was read): wait for the next.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_fires_after_its_deadline_and_a_rearm_replaces_it() {
        let timer = Deadline::new().expect("a timerfd");
        for wait_us in [0u64, 300, 1_700] {
            let start = Instant::now();
            let at = start + Duration::from_micros(wait_us);
            timer.set(at).expect("armed");
            timer.fired().await.expect("fired");
            assert!(Instant::now() >= at, "fired before {wait_us} µs");
        }
        // Re-armed to a later deadline before the first one fired: only the later one fires.
        let at = Instant::now() + Duration::from_millis(5);
        timer
            .set(Instant::now() + Duration::from_micros(100))
            .expect("armed");
        timer.set(at).expect("re-armed");
        timer.fired().await.expect("fired");
        assert!(Instant::now() >= at, "the first deadline fired");
    }
}
