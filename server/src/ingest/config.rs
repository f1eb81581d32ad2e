//! The `[ingest]` section: sources publishing into rooms (docs/broadcast.md, "Publishing into a room").

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Accept Icecast sources (`PUT` or `SOURCE /live/{room}.opus`).
    pub icecast: bool,
    /// How long a paced source's packets are held back after their first arrival: absorbs the jitter
    /// of pages arriving over TCP (a larger value, more latency; a page later than it is re-timed).
    pub source_delay_ms: u64,
    /// A source that sends nothing this long is ended (Icecast's `source-timeout`).
    pub source_timeout_ms: u64,
    /// Sources at most, Icecast and RTP together.
    pub max_sources: usize,
    /// The kernel receive buffer of an Icecast source's connection: a source sending faster than real
    /// time waits on its own socket instead of filling the server's memory or the kernel's.
    pub source_receive_buffer_bytes: usize,
    /// Where RTP endpoints bind (each on a port the system picks).
    pub rtp_bind_ip: IpAddr,
    /// The address RTP endpoints are announced with (the admin API's `address`), when it differs from
    /// `rtp_bind_ip` (NAT, or a wildcard bind).
    pub rtp_public_ip: Option<IpAddr>,
    /// Accept WHIP publishers (`POST /whip/{room}`) and WHEP listeners (`POST /whep/{room}`).
    pub whip: bool,
    /// WHIP and WHEP sessions at most, together.
    pub whip_max_sessions: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            icecast: true,
            source_delay_ms: 100,
            source_timeout_ms: 10_000,
            max_sources: 100,
            source_receive_buffer_bytes: 16_384,
            rtp_bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_public_ip: None,
            whip: true,
            whip_max_sessions: 1_000,
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.source_delay_ms > 2_000 {
            return invalid("ingest.source_delay_ms must be 0..=2000");
        }
        if !(1_000..=600_000).contains(&self.source_timeout_ms) {
            return invalid("ingest.source_timeout_ms must be 1000..=600000");
        }
        if !(1..=10_000).contains(&self.max_sources) {
            return invalid("ingest.max_sources must be 1..=10000");
        }
        if !(1..=100_000).contains(&self.whip_max_sessions) {
            return invalid("ingest.whip_max_sessions must be 1..=100000");
        }
        if !(4096..=(4 << 20)).contains(&self.source_receive_buffer_bytes) {
            return invalid("ingest.source_receive_buffer_bytes must be 4096..=4194304");
        }
        Ok(())
    }
}
