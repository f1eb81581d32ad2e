//! Selective forwarding: which speakers a subscriber's slots carry ([`slots`]) and the per-slot rewriting
//! of sequence numbers and timestamps that makes one continuous stream of changing sources ([`rewrite`]).

pub mod rewrite;
pub mod slots;
