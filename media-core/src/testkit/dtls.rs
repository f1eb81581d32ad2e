//! Reproducible DTLS timing for virtual-time simulations.
//!
//! str0m's DTLS (dimpl) jitters its retransmission timer from a random source of its own. Over a lossy
//! simulated link that jitter decides how many handshake datagrams are sent and when the call connects, so two
//! runs of one seed diverge. [`install`] makes every str0m instance in the process use dimpl with a fixed seed
//! for its non-cryptographic randomness (timers); keys and signatures still come from the system's secure
//! random source. For simulations only: the load tester and the server never call it.

use std::sync::OnceLock;
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsProvider, DtlsVersion};
use str0m::crypto::CryptoError;

use crate::core::peer::dtls::SharedConfigs;

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
        static PROVIDER: SeededDtlsProvider = SeededDtlsProvider;
        let mut provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider = &PROVIDER;
        provider.install_process_default();
    });
}

/// dimpl with the default provider's certificates and a seeded configuration.
#[derive(Debug)]
struct SeededDtlsProvider;

impl DtlsProvider for SeededDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate().ok()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        SEEDED_CONFIGS.new_dtls(cert, now, dtls_version, mtu)
    }
}
