//! TURN relay credentials for `joined` (the TURN REST API convention of draft-uberti-behave-turn-rest,
//! coturn's `use-auth-secret`).
//!
//! The server and the TURN server share one secret. For each admitted session the server hands out a
//! user name `<unix expiry>:<participant sid>` and the password base64(HMAC-SHA1(secret, user name)); the
//! TURN server recomputes the password from the user name and refuses it after the expiry. Nothing is
//! stored and nothing has to be revoked: a leaked credential dies with its expiry.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::protocol::IceServer;

/// The default credential lifetime: one day, what the draft and coturn's documentation suggest. A TURN
/// allocation is refreshed (every few minutes) with the credential it was made with, and coturn refuses a
/// refresh after the expiry, so the lifetime must outlast the longest call; a shorter one only narrows
/// the window of a leaked credential, which can do no more than relay traffic.
pub const DEFAULT_CREDENTIAL_TTL_S: u64 = 86_400;
/// The shortest credential lifetime accepted: a credential must outlive the ICE checks of a join.
const MIN_CREDENTIAL_TTL_S: u64 = 60;
/// The longest credential lifetime accepted (a week): longer ones are surely typos.
const MAX_CREDENTIAL_TTL_S: u64 = 7 * 86_400;
/// The shortest shared secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;

/// The `[turn]` section: the TURN servers clients may relay through. TURN is off when `urls` is empty.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` and `turns:` URIs (RFC 7065): `turn:host[:port][?transport=udp|tcp]`, all served by TURN
    /// servers that share [`TurnConfig::secret`]. Handed to clients unchanged, in this order.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`). Never logged and never in
    /// an error message.
    pub secret: String,
    /// How long a credential is valid after the `joined` that carries it, in seconds.
    pub credential_ttl_s: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: String::new(),
            credential_ttl_s: DEFAULT_CREDENTIAL_TTL_S,
        }
    }
}

/// Debug without the secret (configurations end up in logs).
impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("credential_ttl_s", &self.credential_ttl_s)
            .finish()
    }
}

/// Why a `[turn]` section cannot be used. No variant carries the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TurnConfigError {
    #[error("turn.urls: {0:?} is not a turn: or turns: URI with host[:port] and optional ?transport=udp|tcp")]
    Url(String),
    #[error("turn.secret must have at least {MIN_SECRET_CHARS} characters when turn.urls are set")]
    Secret,
    #[error(
        "turn.credential_ttl_s must be {MIN_CREDENTIAL_TTL_S} to {MAX_CREDENTIAL_TTL_S}, not {0}"
    )]
    Ttl(u64),
}

impl TurnConfig {
    /// Whether clients get TURN servers.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn validate(&self) -> Result<(), TurnConfigError> {
        if let Some(bad) = self.urls.iter().find(|url| !is_turn_uri(url)) {
            return Err(TurnConfigError::Url(bad.clone()));
        }
        if self.enabled() && self.secret.chars().count() < MIN_SECRET_CHARS {
            return Err(TurnConfigError::Secret);
        }
        if !(MIN_CREDENTIAL_TTL_S..=MAX_CREDENTIAL_TTL_S).contains(&self.credential_ttl_s) {
            return Err(TurnConfigError::Ttl(self.credential_ttl_s));
        }
        Ok(())
    }

    /// The ICE servers for the session of participant `sid` at `now_unix_s`: one entry with every URL
    /// and a credential valid for [`TurnConfig::credential_ttl_s`]; none when TURN is off.
    pub fn ice_servers(&self, sid: &str, now_unix_s: u64) -> Vec<IceServer> {
        if !self.enabled() {
            return Vec::new();
        }
        let (username, credential) = credential(
            &self.secret,
            sid,
            now_unix_s.saturating_add(self.credential_ttl_s),
        );
        vec![IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }]
    }
}

/// The TURN REST user name and password of `user` valid until `expiry_unix_s`.
pub fn credential(secret: &str, user: &str, expiry_unix_s: u64) -> (String, String) {
    let username = format!("{expiry_unix_s}:{user}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

/// `turn:`/`turns:` + host (a name, an IPv4 address or a bracketed IPv6 address) + optional `:port` +
/// optional `?transport=udp|tcp` (RFC 7065).
fn is_turn_uri(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
    else {
        return false;
    };
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    if !matches!(query, None | Some("transport=udp") | Some("transport=tcp")) {
        return false;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(urls: &[&str]) -> TurnConfig {
        TurnConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            secret: "north-wind-and-the-sun".into(),
            ..TurnConfig::default()
        }
    }

    #[test]
    fn known_answer() {
        // Computed independently: `echo -n '1700000000:PA_4f2c9a1b7d3e' | openssl dgst -sha1 -hmac
        // 'north-wind-and-the-sun' -binary | base64` (and Python's hmac); coturn accepts credentials made
        // this way (tests/browser/turn.test.js).
        let (username, password) =
            credential("north-wind-and-the-sun", "PA_4f2c9a1b7d3e", 1_700_000_000);
        assert_eq!(username, "1700000000:PA_4f2c9a1b7d3e");
        assert_eq!(password, "1Zi3EqF0R1pA8/IpuIIqqV7Io0U=");
    }

    #[test]
    fn ice_servers_expire_after_the_ttl() {
        let turn = TurnConfig {
            credential_ttl_s: 3_600,
            ..config(&[
                "turn:turn.example.com",
                "turns:turn.example.com:443?transport=tcp",
            ])
        };
        let servers = turn.ice_servers("PA_1", 1_000);
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, turn.urls);
        assert_eq!(servers[0].username, "4600:PA_1");
        assert_eq!(
            servers[0].credential,
            credential(&turn.secret, "PA_1", 4_600).1
        );
        assert_ne!(
            servers[0].credential,
            turn.ice_servers("PA_2", 1_000)[0].credential
        );
        assert!(TurnConfig::default().ice_servers("PA_1", 1_000).is_empty());
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let turn = TurnConfig::default();
        turn.validate().expect("defaults are valid");
        assert!(!turn.enabled());
        assert_eq!(turn.credential_ttl_s, 86_400);
        let empty: TurnConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(empty, turn);
        assert!(serde_json::from_str::<TurnConfig>(r#"{"url": []}"#).is_err());
    }

    #[test]
    fn validation_accepts_turn_uris_only() {
        for good in [
            "turn:turn.example.com",
            "turn:192.0.2.1:3478",
            "turn:192.0.2.1:3478?transport=udp",
            "turn:turn.example.com:3478?transport=tcp",
            "turns:turn.example.com:443?transport=tcp",
            "turn:[2001:db8::1]:3478",
            "turn:[::1]",
        ] {
            assert_eq!(config(&[good]).validate(), Ok(()), "{good}");
        }
        for bad in [
            "",
            "turn:",
            "stun:turn.example.com",
            "https://turn.example.com",
            "turn://turn.example.com",
            "turn:turn.example.com:0",
            "turn:turn.example.com:65536",
            "turn:turn.example.com:x",
            "turn:turn.example.com?transport=tls",
            "turn:turn.example.com?transport=udp&x=1",
            "turn:user@turn.example.com",
            "turn:turn.example.com/path",
            "turn:[2001:db8::1",
            "turn:[not-v6]:3478",
            "turn:2001:db8::1",
        ] {
            assert_eq!(
                config(&["turn:ok.example.com", bad]).validate(),
                Err(TurnConfigError::Url(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_needs_a_secret_and_a_sane_ttl() {
        let mut turn = config(&["turn:turn.example.com"]);
        turn.secret = "short".into();
        assert_eq!(turn.validate(), Err(TurnConfigError::Secret));
        turn.secret = "0123456789abcdef".into();
        assert_eq!(turn.validate(), Ok(()));
        turn.credential_ttl_s = 59;
        assert_eq!(turn.validate(), Err(TurnConfigError::Ttl(59)));
        turn.credential_ttl_s = 7 * 86_400 + 1;
        assert!(turn.validate().is_err());
        // Without URLs the secret is not needed.
        assert_eq!(TurnConfig::default().validate(), Ok(()));
    }

    #[test]
    fn the_secret_is_in_no_debug_output_or_error() {
        let mut turn = config(&["turn:turn.example.com"]);
        assert!(!format!("{turn:?}").contains("north-wind"));
        turn.credential_ttl_s = 0;
        let error = turn.validate().expect_err("ttl 0");
        assert!(!error.to_string().contains("north-wind"));
        turn.secret = "north".into();
        turn.credential_ttl_s = DEFAULT_CREDENTIAL_TTL_S;
        assert!(!turn
            .validate()
            .expect_err("short")
            .to_string()
            .contains("north"));
    }
}
