//! DTLS for the server's peers: dimpl, str0m's own DTLS, with one configuration shared by every peer.
//!
//! str0m's aws-lc-rs provider builds a new `dimpl::Config` for every `Rtc`, and building one validates the
//! crypto provider by running a key exchange and verifying a signature: about 11 M of the 13 M instructions
//! adding a participant cost (issue 15, callgrind). A configuration holds nothing of a connection (each
//! DTLS instance has its own state, keys and random numbers), so one per MTU serves every peer.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};
use str0m::{Rtc, RtcConfig};

use super::srtp::ExportedKeys;

/// When a handshake flight with no answer is first sent again (doubling after each retry). dimpl's
/// default, 1 s then 2, 4, 8 s, is RFC 6347's conservative start: a call whose flight was lost waited
/// seconds to connect (`sim.rs`, `clients_connect_within_seconds_over_a_lossy_link`: over 10 % loss, 3.2
/// and 3.5 s for 2 of 12 seeds; with 250 ms at most 1.6 s). A client farther than 250 ms may get a
/// flight twice, which costs a few kilobytes.
const FLIGHT_START_RTO: Duration = Duration::from_millis(250);

/// Retries per flight: with [`FLIGHT_START_RTO`] they span about 32 s (250 ms · (2⁷ − 1)), as dimpl's
/// 4 from 1 s did (31 s), within its 40-s limit for the whole handshake.
const FLIGHT_RETRIES: usize = 7;

/// dimpl configurations, built once per MTU str0m asks for (one in practice) and shared.
#[derive(Debug)]
pub(crate) struct SharedConfigs {
    /// A fixed seed for dimpl's non-cryptographic randomness (retransmission timer jitter): simulations
    /// only (`testkit::dtls`).
    seed: Option<u64>,
    built: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedConfigs {
    pub(crate) const fn new(seed: Option<u64>) -> Self {
        Self {
            seed,
            built: Mutex::new(Vec::new()),
        }
    }

    /// The configuration for `mtu`, built on first use: as str0m's own provider builds it (ICE has
    /// checked return routability, so no server cookie), but for the retransmissions: the first after
    /// [`FLIGHT_START_RTO`], not 1 s.
    pub(crate) fn get(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        // A panic while the lock was held cannot leave the list half-changed (one push), so a poisoned
        // lock's list is still good.
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, config)) = built.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        let mut builder = dimpl::Config::builder()
            .use_server_cookie(false)
            .flight_start_rto(FLIGHT_START_RTO)
            .flight_retries(FLIGHT_RETRIES);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(seed) = self.seed {
            builder = builder.dangerously_set_rng_seed(seed);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))?,
        );
        built.push((mtu, config.clone()));
        Ok(config)
    }

    /// How many configurations were built.
    #[cfg(test)]
    pub(crate) fn built(&self) -> usize {
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A DTLS instance of `version` on the shared configuration for `mtu`.
    pub(crate) fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.get(mtu)?;
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )))
            }
        };
        let tap = PENDING_TAP.with(|pending| pending.borrow_mut().take());
        Ok(Box::new(Dimpl { dtls, tap }))
    }
}

/// Where a peer's DTLS connection leaves the SRTP keying material it exports, for the peer's own SRTP
/// sender ([`super::srtp`]). str0m keeps its SRTP contexts to itself; its DTLS instance is ours
/// ([`Dimpl`]), so the material is read on its way past. Written once (the handshake's export), read by
/// the one peer that owns the connection.
#[derive(Debug, Default)]
pub(crate) struct KeyTap(OnceLock<ExportedKeys>);

impl KeyTap {
    /// The exported keys, once the handshake has derived them.
    pub(crate) fn keys(&self) -> Option<&ExportedKeys> {
        self.0.get()
    }
}

thread_local! {
    /// The tap for the DTLS instance the `Rtc` being built on this thread creates ([`build_tapped`]).
    static PENDING_TAP: RefCell<Option<Arc<KeyTap>>> = const { RefCell::new(None) };
}

/// Build an `Rtc` whose DTLS connection exports its SRTP keys into the returned tap. str0m creates the
/// connection inside `build`, on this thread; any other `Rtc` gets no tap.
pub(crate) fn build_tapped(config: RtcConfig, now: Instant) -> (Rtc, Arc<KeyTap>) {
    let tap = Arc::new(KeyTap::default());
    PENDING_TAP.with(|pending| *pending.borrow_mut() = Some(tap.clone()));
    let rtc = config.build(now);
    // Taken by the DTLS instance; cleared here should a provider other than ours have built it.
    PENDING_TAP.with(|pending| pending.borrow_mut().take());
    (rtc, tap)
}

/// The crypto provider the peers' `Rtc`s use: the process default when one is installed, else ours.
pub(crate) fn active_provider() -> &'static CryptoProvider {
    match CryptoProvider::get_default() {
        Some(installed) => installed,
        None => shared_provider(),
    }
}

/// The configurations of the server's peers.
static SERVER_CONFIGS: SharedConfigs = SharedConfigs::new(None);

/// A DTLS provider on shared configurations: the server's peers use [`SERVER_CONFIGS`], simulations a
/// seeded set (`testkit::dtls`).
#[derive(Debug)]
pub(crate) struct SharedDtlsProvider(pub(crate) &'static SharedConfigs);

impl DtlsProvider for SharedDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate().ok()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        self.0.new_dtls(cert, now, version, mtu)
    }
}

/// The crypto provider a server peer is built with: `None` when the process has installed a default
/// (simulations install seeded DTLS timers, `testkit::dtls`, which share their configuration the same
/// way), which str0m then uses; otherwise str0m's provider from its feature flags with
/// [`SharedDtlsProvider`] for DTLS.
pub(crate) fn crypto_provider() -> Option<Arc<CryptoProvider>> {
    if CryptoProvider::get_default().is_some() {
        return None;
    }
    Some(shared_arc().clone())
}

fn shared_arc() -> &'static Arc<CryptoProvider> {
    static SHARED: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    SHARED.get_or_init(|| {
        static PROVIDER: SharedDtlsProvider = SharedDtlsProvider(&SERVER_CONFIGS);
        let mut provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider = &PROVIDER;
        Arc::new(provider)
    })
}

fn shared_provider() -> &'static CryptoProvider {
    shared_arc()
}

/// `Rtc::builder()` with [`crypto_provider`]: what every peer this crate builds starts from (the
/// server's peers and the test and load-test clients of `crate::client`).
pub(crate) fn rtc_builder() -> RtcConfig {
    let builder = Rtc::builder();
    match crypto_provider() {
        Some(provider) => builder.set_crypto_provider(provider),
        None => builder,
    }
}

/// A dimpl connection as str0m's [`DtlsInstance`], exporting its SRTP keys into `tap` when it has one.
pub(crate) struct Dimpl {
    dtls: dimpl::Dtls,
    tap: Option<Arc<KeyTap>>,
}

impl std::fmt::Debug for Dimpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dimpl").finish_non_exhaustive()
    }
}

impl DtlsInstance for Dimpl {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.dtls.poll_output(buf);
        if let (DtlsOutput::KeyingMaterial(material, profile), Some(tap)) = (&output, &self.tap) {
            // The first export is the session's; a second set would be ignored, as str0m keeps its first
            // contexts too.
            let _ = tap.0.set(ExportedKeys {
                material: material.to_vec(),
                profile: *profile,
                active: self.dtls.is_active(),
            });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    fn cert() -> DtlsCert {
        dimpl::certificate::generate_self_signed_certificate()
            .expect("aws-lc-rs makes certificates")
    }

    /// Hands everything `from` has to send to `to`; keeps the keying material `from` derived.
    fn pump(from: &mut dyn DtlsInstance, to: &mut dyn DtlsInstance, keys: &mut Option<Vec<u8>>) {
        let mut buf = vec![0u8; 2048];
        let mut packets = Vec::new();
        loop {
            match from.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => packets.push(p.to_vec()),
                DtlsOutput::KeyingMaterial(k, _) => *keys = Some(k.to_vec()),
                DtlsOutput::Timeout(_) => break,
                _ => {}
            }
        }
        for p in packets {
            to.handle_packet(&p)
                .expect("a handshake record is accepted");
        }
    }

    /// Runs a DTLS 1.2 handshake between a client and a server instance until both have derived their
    /// SRTP keying material (at most 20 rounds) and returns it.
    fn handshake(configs: &SharedConfigs, now: Instant) -> (Vec<u8>, Vec<u8>) {
        let new = |active| {
            let mut dtls = configs
                .new_dtls(&cert(), now, DtlsVersion::Dtls12, Some(1150))
                .expect("an instance on the shared configuration");
            dtls.set_active(active);
            dtls
        };
        let (mut client, mut server) = (new(true), new(false));
        let (mut client_keys, mut server_keys) = (None, None);
        client.handle_timeout(now).expect("the client starts");
        server.handle_timeout(now).expect("the server starts");
        for _ in 0..20 {
            pump(client.as_mut(), server.as_mut(), &mut client_keys);
            pump(server.as_mut(), client.as_mut(), &mut server_keys);
            if let (Some(c), Some(s)) = (&client_keys, &server_keys) {
                return (c.clone(), s.clone());
            }
        }
        panic!("no handshake in 20 rounds");
    }

    #[test]
    fn connections_share_one_configuration_per_mtu_and_derive_their_own_keys() {
        let configs = SharedConfigs::new(None);
        let now = epoch();
        let (client_a, server_a) = handshake(&configs, now);
        let (client_b, server_b) = handshake(&configs, now);
        assert_eq!(
            client_a, server_a,
            "both ends of a connection derive the same keys"
        );
        assert_eq!(client_b, server_b);
        assert_ne!(client_a, client_b, "two connections never share keys");
        assert_eq!(configs.built(), 1, "four instances, one configuration");
        configs.get(Some(1200)).expect("another MTU");
        configs.get(None).expect("no MTU");
        configs.get(Some(1150)).expect("the first MTU again");
        assert_eq!(configs.built(), 3);
    }
}
