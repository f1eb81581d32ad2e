//! Server configuration: an embedded default, overridden by a TOML file, then environment variables, then
//! command-line flags. Every section has `Default` and `validate()`; units are in the field names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The development API key used when no keys are configured and development mode is on.
pub const DEV_API_KEY: &str = "devkey";
/// The development API secret. Public knowledge: never use it on a reachable server.
pub const DEV_API_SECRET: &str = "chorus-development-secret-do-not-use-in-production";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}: {source}")]
    Toml {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for {name}: {message}")]
    Env { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub auth: AuthConfig,
    pub room: RoomDefaults,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where HTTP, the WebSocket signaling, metrics and the demo page listen.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The address media UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Worker i listens on `port_start + i`.
    pub port_start: u16,
    /// The address advertised in ICE candidates (the public IP behind NAT); defaults to `bind_ip`.
    pub public_ip: Option<IpAddr>,
    /// Media worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// A peer that has not connected this long after its offer is dropped.
    pub connect_timeout_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_start: 7882,
            public_ip: None,
            workers: 0,
            connect_timeout_ms: 20_000,
        }
    }
}

impl MediaConfig {
    /// The number of workers to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The address advertised for worker `index`.
    pub fn candidate_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::new(
            self.public_ip.unwrap_or(self.bind_ip),
            self.port_start + index as u16,
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Development mode: the built-in development key is accepted and the demo page can mint tokens.
    pub dev_mode: bool,
    /// API key → secret. Tokens name their key in `iss`.
    pub api_keys: BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            dev_mode: true,
            api_keys: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// The keys in force: the configured ones, plus the development key in development mode.
    pub fn effective_keys(&self) -> BTreeMap<String, String> {
        let mut keys = self.api_keys.clone();
        if self.dev_mode {
            keys.entry(DEV_API_KEY.to_owned())
                .or_insert_with(|| DEV_API_SECRET.to_owned());
        }
        keys
    }

    /// The key and secret `chorus token create` signs with: the first configured key, else the dev key.
    pub fn signing_key(&self) -> Option<(String, String)> {
        self.effective_keys().into_iter().next()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomDefaults {
    /// Audio slots per subscriber in a new room (1..=16).
    pub slots: u8,
    /// Participants admitted to one room.
    pub max_participants: usize,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        RoomDefaults {
            slots: 3,
            max_participants: 100,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, calls in progress continue at most this long.
    pub grace_period_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `chorus=debug,str0m=warn`.
    pub filter: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info,str0m=error".into(),
            json: false,
        }
    }
}

impl Config {
    /// Read a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { source, .. } => ConfigError::Toml {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Toml {
            path: "<string>".into(),
            source: Box::new(source),
        })
    }

    /// Apply `CHORUS_*` environment variables (see [`ENV_VARS`]) through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.into(),
                message: e.to_string(),
            })
        }
        if let Some(v) = get("CHORUS_HTTP_LISTEN") {
            self.http.listen = parse("CHORUS_HTTP_LISTEN", &v)?;
        }
        if let Some(v) = get("CHORUS_MEDIA_BIND_IP") {
            self.media.bind_ip = parse("CHORUS_MEDIA_BIND_IP", &v)?;
        }
        if let Some(v) = get("CHORUS_MEDIA_PORT_START") {
            self.media.port_start = parse("CHORUS_MEDIA_PORT_START", &v)?;
        }
        if let Some(v) = get("CHORUS_PUBLIC_IP") {
            self.media.public_ip = Some(parse("CHORUS_PUBLIC_IP", &v)?);
        }
        if let Some(v) = get("CHORUS_WORKERS") {
            self.media.workers = parse("CHORUS_WORKERS", &v)?;
        }
        if let Some(v) = get("CHORUS_DEV_MODE") {
            self.auth.dev_mode = parse("CHORUS_DEV_MODE", &v)?;
        }
        match (get("CHORUS_API_KEY"), get("CHORUS_API_SECRET")) {
            (Some(k), Some(s)) => {
                self.auth.api_keys.insert(k, s);
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Env {
                    name: "CHORUS_API_KEY".into(),
                    message: "CHORUS_API_KEY and CHORUS_API_SECRET go together".into(),
                })
            }
        }
        if let Some(v) = get("CHORUS_ROOM_SLOTS") {
            self.room.slots = parse("CHORUS_ROOM_SLOTS", &v)?;
        }
        if let Some(v) = get("CHORUS_ROOM_MAX_PARTICIPANTS") {
            self.room.max_participants = parse("CHORUS_ROOM_MAX_PARTICIPANTS", &v)?;
        }
        if let Some(v) = get("CHORUS_LOG") {
            self.log.filter = v;
        }
        if let Some(v) = get("CHORUS_LOG_JSON") {
            self.log.json = parse("CHORUS_LOG_JSON", &v)?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(1..=16).contains(&self.room.slots) {
            return invalid("room.slots must be between 1 and 16");
        }
        if self.room.max_participants == 0 {
            return invalid("room.max_participants must be at least 1");
        }
        if self.media.port_start == 0 {
            return invalid("media.port_start must be a fixed port (clients are told it in SDP)");
        }
        let workers = self.media.worker_count();
        if workers > 256 || self.media.port_start as usize + workers - 1 > u16::MAX as usize {
            return invalid("media.workers ports do not fit above media.port_start");
        }
        if self.media.public_ip.is_none() && self.media.bind_ip.is_unspecified() {
            return invalid("media.public_ip is required when media.bind_ip is a wildcard address");
        }
        if self.auth.effective_keys().is_empty() {
            return invalid(
                "no API keys: set auth.api_keys (or enable auth.dev_mode for development)",
            );
        }
        for (key, secret) in &self.auth.api_keys {
            if key.is_empty() || secret.len() < 32 {
                return invalid(
                    "every API key needs a name and a secret of at least 32 characters",
                );
            }
        }
        Ok(())
    }
}

/// The environment variables [`Config::apply_env`] reads, for `--help`.
pub const ENV_VARS: &str = "CHORUS_CONFIG, CHORUS_HTTP_LISTEN, CHORUS_MEDIA_BIND_IP, CHORUS_MEDIA_PORT_START, \
CHORUS_PUBLIC_IP, CHORUS_WORKERS, CHORUS_DEV_MODE, CHORUS_API_KEY + CHORUS_API_SECRET, CHORUS_ROOM_SLOTS, \
CHORUS_ROOM_MAX_PARTICIPANTS, CHORUS_LOG, CHORUS_LOG_JSON";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_loopback_dev_mode() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:7880");
        assert!(c.auth.dev_mode);
        assert_eq!(c.auth.signing_key().unwrap().0, DEV_API_KEY);
    }

    #[test]
    fn file_then_env_override() {
        let mut c = Config::from_toml(
            "[media]\nport_start = 9000\nworkers = 2\n[room]\nslots = 5\n[auth]\ndev_mode = false\n\
             api_keys = { prod = \"0123456789abcdef0123456789abcdef\" }\n",
        )
        .unwrap();
        assert_eq!(c.media.port_start, 9000);
        assert_eq!(c.room.slots, 5);
        c.validate().unwrap();
        let env = |k: &str| match k {
            "CHORUS_ROOM_SLOTS" => Some("4".to_owned()),
            "CHORUS_PUBLIC_IP" => Some("203.0.113.7".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.room.slots, 4);
        assert_eq!(c.media.candidate_addr(1).to_string(), "203.0.113.7:9001");
        assert_eq!(c.auth.signing_key().unwrap().0, "prod");
    }

    #[test]
    fn invalid_settings_are_refused_with_reasons() {
        let mut c = Config::default();
        c.room.slots = 17;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.auth.dev_mode = false;
        assert!(c.validate().unwrap_err().to_string().contains("API keys"));
        assert!(Config::from_toml("[media]\nbogus = 1\n").is_err());
        let mut c = Config::default();
        assert!(c
            .apply_env(|k| (k == "CHORUS_WORKERS").then(|| "many".into()))
            .is_err());
    }
}
