//! Prefetch hints for the fan-out (issue 15).
//!
//! A forwarded packet goes to every subscriber of its slot, and by the time the next packet comes, the
//! kernel's work in between has evicted what the fan-out touched: each subscriber's participant entry,
//! slot rewriter, header template and SRTP key are cache misses, and one subscriber's misses come one
//! after another (docs/architecture.md, "Cost per forwarded packet"). The fan-out names a group of
//! subscribers' state to the CPU before it works on them, so their misses overlap.

/// Subscribers whose state a fan-out prefetches at a time: their cache lines (≈ 20 each: the participant
/// 424 bytes, the AES-GCM key 544, the rewriter and the slot stream; 20 KB for a group) stay within the
/// first-level cache until they are used.
pub(crate) const FAN_OUT_GROUP: usize = 16;

/// Ask the CPU to bring the cache lines of `value` into its caches. A hint: it never faults, never
/// changes memory, and does nothing on targets without a stable prefetch instruction.
#[inline]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let len = std::mem::size_of_val(value);
    // The lines `value` spans: from the one holding its first byte to the one holding its last.
    let offset = start as usize % LINE;
    let first = start.wrapping_sub(offset);
    for line in 0..(offset + len.max(1)).div_ceil(LINE) {
        hint(first.wrapping_add(line * LINE));
    }
}

/// The cache line size assumed (x86-64 and most ARM cores).
const LINE: usize = 64;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn hint(address: *const u8) {
    // SAFETY: PREFETCHT0 is a hint, not an access: it does not fault on any address and has no effect on
    // memory or on the program's semantics. `address` lies within (or on the line of) a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn hint(_address: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_any_value_changes_nothing() {
        let v = vec![7u8; 1000];
        prefetch(&v[..]);
        prefetch(&v[3..5]);
        prefetch(&0u64);
        prefetch(&());
        prefetch(&v[..0]);
        assert!(v.iter().all(|&b| b == 7));
    }
}
