//! Participant ids: 48-bit, unique in this process, scrambled so consecutive sids look unrelated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::media::ParticipantId;

/// Participant ids are 48 bits, so that every sid has exactly 12 hex digits.
pub(super) const ID_MASK: u64 = (1 << 48) - 1;

/// A new participant id, unique in this process (for 2^48 ids), never 0.
///
/// Ids are a counter from a clock-derived start, passed through a bijection of the 48-bit space, so
/// consecutive sids look unrelated. Not a security measure: sids are not secrets.
pub(crate) fn next_participant_id() -> ParticipantId {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = scramble48(start.wrapping_add(n));
        if id != 0 {
            return ParticipantId(id);
        }
    }
}

/// A bijection of `0..2^48` (xor-shifts and multiplications by odd constants modulo 2^48).
pub(super) fn scramble48(x: u64) -> u64 {
    let mut x = x & ID_MASK;
    x ^= x >> 23;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & ID_MASK;
    x ^= x >> 25;
    x = x.wrapping_mul(0xC2B2_AE3D_27D5) & ID_MASK;
    x ^= x >> 24;
    x
}
