//! Reproducible DTLS timing for virtual-time simulations.
//!
//! str0m's DTLS (dimpl) jitters its retransmission timer from a random source of its own. Over a lossy
//! simulated link that jitter decides how many handshake datagrams are sent and when the call connects, so two
//! runs of one seed diverge. [`install`] makes every str0m instance in the process use dimpl with a fixed seed
//! for its non-cryptographic randomness (timers); keys and signatures still come from the system's secure
//! random source. For simulations only: the load tester and the server never call it.

use std::sync::OnceLock;

use crate::core::peer::dtls::{SharedConfigs, SharedDtlsProvider};

/// The seed of every simulated DTLS instance's timer jitter.
const DTLS_TIMER_SEED: u64 = 0x5EED_D715;

/// The seeded configurations, shared by every simulated peer and client as the server's peers share theirs
/// (`core::peer::dtls`): building one costs a key exchange and a signature check.
static SEEDED_CONFIGS: SharedConfigs = SharedConfigs::new(Some(DTLS_TIMER_SEED));

/// Installs, once per process, a crypto provider whose DTLS timers are seeded. Call it before any peer or core
/// is created; later calls do nothing.
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        static PROVIDER: SharedDtlsProvider = SharedDtlsProvider(&SEEDED_CONFIGS);
        let mut provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider = &PROVIDER;
        provider.install_process_default();
    });
}
