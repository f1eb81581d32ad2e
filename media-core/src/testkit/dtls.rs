//! Reproducible DTLS timing for virtual-time simulations.
//!
//! str0m's DTLS (dimpl) jitters its retransmission timer from a random source of its own. Over a lossy
//! simulated link that jitter decides how many handshake datagrams are sent and when the call connects, so two
//! runs of one seed diverge. [`install`] makes every str0m instance in the process use dimpl with a fixed seed
//! for its non-cryptographic randomness (timers); keys and signatures still come from the system's secure
//! random source. For simulations only: the load tester and the server never call it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::CryptoError;

/// The seed of every simulated DTLS instance's timer jitter.
const DTLS_TIMER_SEED: u64 = 0x5EED_D715;

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
        // As str0m's own provider: ICE has checked return routability, so no server cookie.
        let mut builder = dimpl::Config::builder()
            .use_server_cookie(false)
            .dangerously_set_rng_seed(DTLS_TIMER_SEED);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))?,
        );
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )))
            }
        };
        Ok(Box::new(SeededDtls(dtls)))
    }
}

struct SeededDtls(dimpl::Dtls);

impl std::fmt::Debug for SeededDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededDtls").finish_non_exhaustive()
    }
}

impl DtlsInstance for SeededDtls {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
