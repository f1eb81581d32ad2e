//! Server configuration: an embedded default, overridden by a TOML file, then environment variables, then
//! command-line flags. Every section has `Default` and `validate()`; units are in the field names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use signaling::media::{MixSettings, RoomMode, RoomSettings};
use vocab::MAX_SLOTS;

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
    pub session: SessionConfig,
    pub shutdown: ShutdownConfig,
    pub webhooks: WebhookConfig,
    /// TURN servers handed to clients in `joined` (signaling's section: see [`signaling::TurnConfig`]).
    pub turn: signaling::TurnConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where HTTP, the WebSocket signaling, metrics and the demo page listen.
    pub listen: SocketAddr,
    /// A request's headers must be complete this long after the connection (or its previous request)
    /// became ready for them, or the connection is closed (slow-header attacks, idle keep-alives).
    pub header_timeout_ms: u64,
    /// Open connections (WebSockets included) at most; more get 503. Lowered at start-up to fit under
    /// the file-descriptor limit.
    pub max_connections: usize,
    /// Open connections from one client IP at most; more get 503.
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880),
            header_timeout_ms: 10_000,
            max_connections: 10_000,
            max_connections_per_ip: 512,
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
    /// Kernel receive and send buffer asked for on each worker's socket (the kernel may grant less; the
    /// granted size is logged). Large, so fan-out bursts do not drop incoming packets.
    pub socket_buffer_bytes: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_start: 7882,
            public_ip: None,
            workers: 0,
            connect_timeout_ms: 20_000,
            socket_buffer_bytes: 8 << 20,
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
    /// Only while no `api_keys` are configured: configuring real keys turns development mode off.
    pub dev_mode: bool,
    /// Allow development mode on a listener that is not loopback (anyone who can reach it can mint
    /// tokens and administer the server with the published key). Refused at start-up otherwise.
    pub unsafe_dev_mode_on_network: bool,
    /// API key → secret. Tokens name their key in `iss`.
    pub api_keys: BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            dev_mode: true,
            unsafe_dev_mode_on_network: false,
            api_keys: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// Whether development mode is in force: asked for, and no real API key configured (the published
    /// development key is never accepted next to real keys).
    pub fn dev_mode_active(&self) -> bool {
        self.dev_mode && self.api_keys.is_empty()
    }

    /// The keys in force: the configured ones, or the development key alone in development mode.
    pub fn effective_keys(&self) -> BTreeMap<String, String> {
        let mut keys = self.api_keys.clone();
        if self.dev_mode_active() {
            keys.insert(DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned());
        }
        keys
    }

    /// The key and secret `chorus token create`, `chorus drain` and webhooks sign with: the first
    /// configured key (by name), else the development key in development mode.
    pub fn signing_key(&self) -> Option<(String, String)> {
        self.api_keys
            .iter()
            .next()
            .map(|(k, s)| (k.clone(), s.clone()))
            .or_else(|| {
                self.dev_mode_active()
                    .then(|| (DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned()))
            })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomDefaults {
    /// Mode of a room created by a join: "forward" (selective forwarding) or "mix" (server-side mix).
    pub default_mode: RoomMode,
    /// Audio slots per subscriber in a new forwarding room (1..=`MAX_SLOTS`, 16).
    pub slots: u8,
    /// Participants admitted to one room.
    pub max_participants: usize,
    /// How long a room created through the admin API stays while empty, unless its request says
    /// otherwise. Rooms created by a join go with their last participant.
    pub empty_timeout_secs: u64,
    /// Encoder and jitter-buffer settings of mixed rooms.
    pub mix: MixSettings,
    /// A participant kicked through the admin API may not rejoin its room with the same identity for
    /// this long (0: no ban).
    pub kick_ban_secs: u64,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        RoomDefaults {
            default_mode: RoomMode::Forward,
            slots: 3,
            max_participants: 100,
            empty_timeout_secs: 300,
            mix: MixSettings::default(),
            kick_ban_secs: 300,
        }
    }
}

/// The most participants a room may be configured for.
pub const MAX_ROOM_PARTICIPANTS: usize = 100_000;
/// The longest empty timeout (one day).
pub const MAX_EMPTY_TIMEOUT_SECS: u64 = 86_400;

/// Webhooks: room and participant events POSTed as signed JSON to each URL (docs/operations.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receivers (http:// or https://); empty: no webhooks.
    pub urls: Vec<String>,
    /// The API key whose secret signs the requests; default: the first configured key.
    pub api_key: Option<String>,
    /// One HTTP attempt may take this long.
    pub timeout_ms: u64,
    /// Attempts per event and receiver, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff_ms: u64,
    /// The longest wait between attempts.
    pub max_backoff_ms: u64,
    /// Events waiting for delivery; beyond this new events are dropped and counted.
    pub queue_capacity: usize,
    /// Deliveries under way at once (across receivers).
    pub max_in_flight: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            api_key: None,
            timeout_ms: 5_000,
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            queue_capacity: 4_096,
            max_in_flight: 64,
        }
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for url in &self.urls {
            let ok = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty());
            if !ok {
                return invalid(format!(
                    "webhooks.urls: {url:?} is not an http:// or https:// URL"
                ));
            }
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return invalid("webhooks.timeout_ms must be 1..=60000".into());
        }
        if !(1..=20).contains(&self.max_attempts) {
            return invalid("webhooks.max_attempts must be 1..=20".into());
        }
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > self.max_backoff_ms {
            return invalid("webhooks: 0 < initial_backoff_ms <= max_backoff_ms".into());
        }
        if self.max_backoff_ms > 3_600_000 {
            return invalid("webhooks.max_backoff_ms must be at most one hour".into());
        }
        if !(1..=1_000_000).contains(&self.queue_capacity)
            || !(1..=10_000).contains(&self.max_in_flight)
        {
            return invalid("webhooks.queue_capacity and max_in_flight must be positive".into());
        }
        Ok(())
    }
}

/// Deadlines of a signaling session that nothing but progress moves (pings do not).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A WebSocket that has not joined this long after opening is closed (`join_timeout`).
    pub join_deadline_ms: u64,
    /// A joined session that has not sent its first offer this long after `joined` is closed
    /// (`offer_timeout`).
    pub offer_deadline_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let signaling = signaling::SignalingConfig::default();
        SessionConfig {
            join_deadline_ms: signaling.join_deadline_ms,
            offer_deadline_ms: signaling.offer_deadline_ms,
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
        if let Some(v) = get("CHORUS_HTTP_MAX_CONNECTIONS_PER_IP") {
            self.http.max_connections_per_ip = parse("CHORUS_HTTP_MAX_CONNECTIONS_PER_IP", &v)?;
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
        if let Some(v) = get("CHORUS_UNSAFE_DEV_MODE_ON_NETWORK") {
            self.auth.unsafe_dev_mode_on_network = parse("CHORUS_UNSAFE_DEV_MODE_ON_NETWORK", &v)?;
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
        if let Some(v) = get("CHORUS_ROOM_MODE") {
            self.room.default_mode = parse("CHORUS_ROOM_MODE", &v)?;
        }
        if let Some(v) = get("CHORUS_ROOM_EMPTY_TIMEOUT_SECS") {
            self.room.empty_timeout_secs = parse("CHORUS_ROOM_EMPTY_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("CHORUS_SHUTDOWN_GRACE_PERIOD_SECS") {
            self.shutdown.grace_period_secs = parse("CHORUS_SHUTDOWN_GRACE_PERIOD_SECS", &v)?;
        }
        if let Some(v) = get("CHORUS_WEBHOOK_URLS") {
            self.webhooks.urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = get("CHORUS_TURN_URLS") {
            self.turn.urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = get("CHORUS_TURN_SECRET") {
            self.turn.secret = v;
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
        if RoomSettings::forward(self.room.slots).validate().is_err() {
            return invalid(&format!("room.slots must be between 1 and {MAX_SLOTS}"));
        }
        if self.room.max_participants == 0 || self.room.max_participants > MAX_ROOM_PARTICIPANTS {
            return invalid("room.max_participants must be 1..=100000");
        }
        if self.room.empty_timeout_secs > MAX_EMPTY_TIMEOUT_SECS {
            return invalid("room.empty_timeout_secs must be at most 86400 (one day)");
        }
        if let Err(why) = self.room.mix.validate() {
            return Err(ConfigError::Invalid(format!("room.{why}")));
        }
        if !(1..=600_000).contains(&self.http.header_timeout_ms) {
            return invalid("http.header_timeout_ms must be 1..=600000");
        }
        if !(1..=1_000_000).contains(&self.http.max_connections)
            || !(1..=self.http.max_connections).contains(&self.http.max_connections_per_ip)
        {
            return invalid(
                "http: 1 <= max_connections_per_ip <= max_connections <= 1000000 is required",
            );
        }
        if self.room.kick_ban_secs > MAX_EMPTY_TIMEOUT_SECS {
            return invalid("room.kick_ban_secs must be at most 86400 (one day)");
        }
        if !(1..=MAX_EMPTY_TIMEOUT_SECS * 1000).contains(&self.session.join_deadline_ms)
            || !(1..=MAX_EMPTY_TIMEOUT_SECS * 1000).contains(&self.session.offer_deadline_ms)
        {
            return invalid("session.join_deadline_ms and offer_deadline_ms must be 1..=86400000");
        }
        if self.shutdown.grace_period_secs > MAX_EMPTY_TIMEOUT_SECS {
            return invalid("shutdown.grace_period_secs must be at most 86400");
        }
        self.webhooks.validate()?;
        self.turn
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(key) = &self.webhooks.api_key {
            if !self.auth.effective_keys().contains_key(key) {
                return invalid("webhooks.api_key names no configured API key");
            }
        }
        if !(65_536..=(1 << 30)).contains(&self.media.socket_buffer_bytes) {
            return invalid("media.socket_buffer_bytes must be 65536..=1073741824");
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
        if self.auth.dev_mode_active()
            && !self.http.listen.ip().is_loopback()
            && !self.auth.unsafe_dev_mode_on_network
        {
            return Err(ConfigError::Invalid(format!(
                "refusing development mode on the non-loopback listener {}: anyone who reaches it can \
                 mint tokens and administer the server with the published development key. Configure \
                 auth.api_keys (or CHORUS_API_KEY + CHORUS_API_SECRET), listen on loopback, or pass \
                 --unsafe-dev-mode-on-network (CHORUS_UNSAFE_DEV_MODE_ON_NETWORK=true) if you really mean it",
                self.http.listen
            )));
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
/// What `--print-config` shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The configuration as `--print-config` prints it: API secrets, and any user name and password in a
    /// webhook URL, replaced by [`REDACTED`] (the output ends up in terminals, tickets and CI logs).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for secret in c.auth.api_keys.values_mut() {
            *secret = REDACTED.to_owned();
        }
        for url in &mut c.webhooks.urls {
            *url = redact_userinfo(url);
        }
        if !c.turn.secret.is_empty() {
            c.turn.secret = REDACTED.to_owned();
        }
        c
    }
}

/// `scheme://user:pass@host/…` → `scheme://<redacted>@host/…`; other URLs unchanged.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{REDACTED}{}",
            &url[..scheme_end],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

pub const ENV_VARS: &str = "CHORUS_CONFIG, CHORUS_HTTP_LISTEN, CHORUS_HTTP_MAX_CONNECTIONS_PER_IP, CHORUS_MEDIA_BIND_IP, CHORUS_MEDIA_PORT_START, \
CHORUS_PUBLIC_IP, CHORUS_WORKERS, CHORUS_DEV_MODE, CHORUS_UNSAFE_DEV_MODE_ON_NETWORK, CHORUS_API_KEY + CHORUS_API_SECRET, CHORUS_ROOM_SLOTS, \
CHORUS_ROOM_MAX_PARTICIPANTS, CHORUS_ROOM_MODE, CHORUS_ROOM_EMPTY_TIMEOUT_SECS, CHORUS_SHUTDOWN_GRACE_PERIOD_SECS, \
CHORUS_WEBHOOK_URLS (comma-separated), CHORUS_TURN_URLS (comma-separated), CHORUS_TURN_SECRET, CHORUS_LOG, CHORUS_LOG_JSON";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_configuration_has_no_secrets() {
        // Issue 10: --print-config printed the API secrets.
        let c = Config::from_toml(
            "[auth]\ndev_mode = false\n\
             api_keys = { prod = \"0123456789abcdef0123456789abcdef\" }\n\
             [webhooks]\nurls = [\"https://hook:s3cr3t@example.com/x?a=b\", \"http://example.com/y@z\"]\n\
             [turn]\nurls = [\"turn:turn.example.com\"]\nsecret = \"turn-secret-turn-secret\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let printed = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(!printed.contains("turn-secret"), "{printed}");
        assert!(printed.contains("secret = \"<redacted>\""), "{printed}");
        assert_eq!(c.turn.secret, "turn-secret-turn-secret");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("prod = \"<redacted>\""), "{printed}");
        assert!(
            printed.contains("https://<redacted>@example.com/x?a=b"),
            "{printed}"
        );
        assert!(printed.contains("http://example.com/y@z"), "{printed}");
        // The configuration itself keeps its secrets.
        assert_eq!(
            c.auth.signing_key().unwrap().1,
            "0123456789abcdef0123456789abcdef"
        );
    }

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
        // A configured key wins over the development key, whatever the names' order.
        c.auth.dev_mode = true;
        assert_eq!(c.auth.signing_key().unwrap().0, "prod");
        // Issue 10: the published development key is never accepted next to real keys.
        assert!(!c.auth.dev_mode_active());
        assert!(!c.auth.effective_keys().contains_key(DEV_API_KEY));
        assert_eq!(c.auth.effective_keys().len(), 1);
    }

    #[test]
    fn connection_limits_are_validated() {
        let mut c = Config::from_toml(
            "[http]\nheader_timeout_ms = 500\nmax_connections = 100\nmax_connections_per_ip = 10\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.http.max_connections_per_ip, 10);
        c.http.max_connections_per_ip = 101;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_connections"));
        c.http.max_connections_per_ip = 0;
        assert!(c.validate().is_err());
        c.http.max_connections_per_ip = 10;
        c.http.header_timeout_ms = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("header_timeout_ms"));
        let c = Config::default();
        assert_eq!(c.http.header_timeout_ms, 10_000);
        assert_eq!(c.session.join_deadline_ms, 10_000);
        assert_eq!(c.room.kick_ban_secs, 300);
    }

    #[test]
    fn dev_mode_on_a_network_listener_needs_the_unsafe_flag() {
        let mut c = Config::default();
        c.http.listen = "0.0.0.0:7880".parse().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("refusing development mode"), "{e}");
        c.http.listen = "127.0.0.2:7880".parse().unwrap();
        c.validate().unwrap();
        c.http.listen = "[::1]:7880".parse().unwrap();
        c.validate().unwrap();
        c.http.listen = "0.0.0.0:7880".parse().unwrap();
        c.apply_env(|k| (k == "CHORUS_UNSAFE_DEV_MODE_ON_NETWORK").then(|| "true".into()))
            .unwrap();
        c.validate().unwrap();
        // Real keys turn development mode off, so a network listener is fine without the flag.
        let mut c = Config::default();
        c.http.listen = "0.0.0.0:7880".parse().unwrap();
        c.auth
            .api_keys
            .insert("prod".into(), "0123456789abcdef0123456789abcdef".into());
        c.validate().unwrap();
        assert!(!c.auth.dev_mode_active());
    }

    #[test]
    fn room_modes_and_mix_settings() {
        let mut c = Config::from_toml(
            "[room]\ndefault_mode = \"mix\"\n[room.mix]\nbitrate_bps = 24000\ndtx = false\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.room.default_mode, RoomMode::Mix);
        assert_eq!(c.room.mix.bitrate_bps, 24_000);
        assert!(!c.room.mix.dtx);
        assert_eq!(c.room.mix.complexity, MixSettings::default().complexity);
        c.apply_env(|k| (k == "CHORUS_ROOM_MODE").then(|| "forward".into()))
            .unwrap();
        assert_eq!(c.room.default_mode, RoomMode::Forward);
        assert!(c
            .apply_env(|k| (k == "CHORUS_ROOM_MODE").then(|| "sfu".into()))
            .is_err());
        // The media core validates the mixer settings.
        c.room.mix.bitrate_bps = 1;
        assert!(c.validate().unwrap_err().to_string().contains("bitrate"));
    }

    #[test]
    fn webhook_settings() {
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == "CHORUS_WEBHOOK_URLS")
                .then(|| "http://127.0.0.1:9/a, https://example.test/b".into())
        })
        .unwrap();
        assert_eq!(c.webhooks.urls.len(), 2);
        c.validate().unwrap();
        c.webhooks.urls.push("ftp://x".into());
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.webhooks.api_key = Some("nobody".into());
        assert!(c.validate().is_err());
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

    #[test]
    fn turn_section_env_and_validation() {
        let mut c = Config::default();
        assert!(!c.turn.enabled());
        c.apply_env(|k| match k {
            "CHORUS_TURN_URLS" => {
                Some("turn:192.0.2.1:3478?transport=udp, turns:turn.example.com:443".into())
            }
            "CHORUS_TURN_SECRET" => Some("a-long-enough-turn-secret".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.turn.urls,
            [
                "turn:192.0.2.1:3478?transport=udp",
                "turns:turn.example.com:443"
            ]
        );
        c.validate().unwrap();
        c.turn.secret = "short-secret".into();
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("turn.secret"), "{error}");
        assert!(!error.contains("short-secret"), "{error}");
        let bad = Config::from_toml(
            "[turn]\nurls = [\"stun:192.0.2.1\"]\nsecret = \"a-long-enough-turn-secret\"\n",
        )
        .unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("turn.urls"));
        assert!(Config::from_toml("[turn]\nttl = 5\n").is_err());
    }
}
