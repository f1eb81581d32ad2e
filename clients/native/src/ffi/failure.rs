//! Failures of C calls: a code, and a message formatted into a reused per-thread buffer (no allocation once
//! it has grown), and the guard that turns errors and panics into codes.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::ChorusError;
use crate::Error;

thread_local! {
    /// The last failed call's message on this thread, NUL-terminated; empty before the first failure. The
    /// buffer is reused, so a failing call on the audio path (pulling a participant that left, a busy
    /// direction) does not allocate once the buffer has grown to the longest message.
    pub(super) static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a call failed, before it becomes a code. Its message is formatted only into [`LAST_ERROR`].
pub(super) struct Failure {
    code: ChorusError,
    why: Why,
}

/// A failure's message, kept as values (no `String`) so that building one does not allocate.
pub(super) enum Why {
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
            Error::BufferLength { .. } => ChorusError::BadLength,
            Error::BadOpus(_) => ChorusError::BadOpus,
            Error::BadPosition(_) => ChorusError::BadPosition,
            Error::Talk(vocab::TalkError::BadVolume) => ChorusError::BadVolume,
            Error::Talk(vocab::TalkError::WhisperTargets | vocab::TalkError::BadTeam) => {
                ChorusError::BadTarget
            }
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

pub(super) fn failure(code: ChorusError, text: &'static str) -> Failure {
    Failure {
        code,
        why: Why::Text(text),
    }
}

pub(super) fn bad_argument(
    code: ChorusError,
    what: &'static str,
    problem: &'static str,
) -> Failure {
    Failure {
        code,
        why: Why::Argument { what, problem },
    }
}

/// Format `message` into this thread's reused [`LAST_ERROR`] buffer (NUL bytes become spaces).
pub(super) fn set_last_error(message: &dyn std::fmt::Display) {
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
pub(super) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> ChorusError {
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
