//! Server configuration: an embedded default, overridden by a TOML file, then environment variables, then
//! command-line flags. Every section has `Default` and `validate()`; units are in the field names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use signaling::media::{MixSettings, RoomMode, RoomSettings, SpatialSettings};
use vocab::MAX_SLOTS;

pub use crate::cluster::ClusterConfig;
mod recording;
pub use recording::RecordingConfig;

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
    pub broadcast: BroadcastConfig,
    /// Several nodes sharing rooms through Redis (absent: this node alone).
    pub cluster: ClusterConfig,
    pub recording: RecordingConfig,
    /// Sources publishing into rooms: Icecast, RTP (docs/broadcast.md).
    pub ingest: crate::ingest::IngestConfig,
    /// A room's mix as HLS (docs/broadcast.md, "HLS").
    pub hls: crate::hls::HlsConfig,
    /// Files and playlists played into rooms, hold music, announcements (docs/broadcast.md, "Playout").
    pub playout: crate::playout::PlayoutConfig,
}

/// Listener streams (docs/broadcast.md): a room's mix as Ogg/Opus over HTTP at `/live/{room}.opus`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BroadcastConfig {
    /// Serve listener streams.
    pub enabled: bool,
    /// Mounts anyone may listen to without a token (the admin API can set it per room).
    pub public: bool,
    /// Opus audio per Ogg page (a multiple of 20 ms): a new listener's first audio comes at once, and a
    /// listener hears at most one page behind the mix.
    pub page_ms: u32,
    /// Pages a listener may fall behind before it is dropped (its bounded queue): a listener that does not
    /// read for `page_ms × listener_queue_pages` (after its socket buffers fill) is closed and counted.
    pub listener_queue_pages: usize,
    /// How often a listener's socket is written: every `max(1, listener_write_ms / page_ms)` pages, the
    /// pages published since in one `writev` (listeners are spread over the pages, so each page is written
    /// to a share of them). One write per page costs the sender a send per listener per page (on loopback
    /// ≈ 5 µs each, the receiver's path included); writing every fourth page a quarter of that, for up to
    /// that much more delay (at most `listener_write_ms` plus a page behind the mix: 0.5 s by default). A
    /// new listener gets that many pages at once, so its player never waits.
    pub listener_write_ms: u32,
    /// Audio bytes between two ICY metadata blocks, for clients that send `Icy-MetaData: 1`.
    pub icy_metaint_bytes: usize,
    /// Listeners at most, over all mounts (also bounded by `http.max_connections`).
    pub max_listeners: usize,
    /// The kernel send buffer of a listener's connection (Linux doubles it): what a listener does not
    /// read waits in its queue, where it is seen, not in the kernel (whose autotuning on loopback grows
    /// past a megabyte, minutes of audio), and a slow reader hears less delay.
    pub listener_send_buffer_bytes: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig {
            enabled: true,
            public: false,
            page_ms: 100,
            listener_queue_pages: 30,
            listener_write_ms: 400,
            icy_metaint_bytes: 16_000,
            max_listeners: 10_000,
            listener_send_buffer_bytes: 16_384,
        }
    }
}

impl BroadcastConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(20..=1000).contains(&self.page_ms) || !self.page_ms.is_multiple_of(20) {
            return invalid("broadcast.page_ms must be a multiple of 20 in 20..=1000");
        }
        if !(2..=1000).contains(&self.listener_queue_pages) {
            return invalid("broadcast.listener_queue_pages must be 2..=1000");
        }
        if !(20..=2000).contains(&self.listener_write_ms) {
            return invalid("broadcast.listener_write_ms must be 20..=2000");
        }
        if self.pages_per_write() >= self.listener_queue_pages as u64 {
            return invalid(
                "broadcast.listener_write_ms / page_ms must be below listener_queue_pages",
            );
        }
        if !(256..=1_000_000).contains(&self.icy_metaint_bytes) {
            return invalid("broadcast.icy_metaint_bytes must be 256..=1000000");
        }
        if !(1..=1_000_000).contains(&self.max_listeners) {
            return invalid("broadcast.max_listeners must be 1..=1000000");
        }
        if !(4096..=(4 << 20)).contains(&self.listener_send_buffer_bytes) {
            return invalid("broadcast.listener_send_buffer_bytes must be 4096..=4194304");
        }
        Ok(())
    }

    /// Pages that go out to a listener in one write (`listener_write_ms`), at least one.
    pub fn pages_per_write(&self) -> u64 {
        u64::from((self.listener_write_ms / self.page_ms.max(1)).max(1))
    }
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
    /// Connections the kernel completes before the server accepts them (`listen(2)`'s backlog; Linux caps
    /// it at `net.core.somaxconn`). A rush of connects (thousands of listeners at a show's start) beyond it
    /// has SYNs dropped, and each such client waits a 1 s retransmission.
    pub listen_backlog: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880),
            header_timeout_ms: 10_000,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            listen_backlog: 4096,
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
    /// ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) for clients whose network drops UDP: each
    /// worker also listens on a TCP port, offered after the UDP candidate (clients prefer UDP).
    pub tcp_enabled: bool,
    /// Worker i listens for ICE-TCP on `tcp_port_start + i`; unset: the same port numbers as UDP
    /// (`port_start + i`), TCP beside UDP.
    pub tcp_port_start: Option<u16>,
    /// Open ICE-TCP connections per worker at most; more are closed at once.
    pub tcp_max_connections: usize,
    /// An ICE-TCP connection with no STUN request verified by a peer within this long (idle, half-open,
    /// or not ICE) is closed.
    pub tcp_stun_timeout_ms: u64,
    /// In development mode with media on loopback and no `public_ip`: also receive on the machine's first
    /// non-loopback interface address and offer it as a second host candidate, so that browsers that never
    /// pair with a loopback candidate (Firefox) work on the default start. Off: loopback only.
    pub dev_lan_candidate: bool,
    /// A room's participants go to its first worker until it holds this many, then to the room's next
    /// shard on another worker (docs/architecture.md, "Rooms larger than a worker"). High enough that
    /// ordinary rooms never split; set it above a spatial room's size (its positions do not cross shards).
    pub room_shard_participants: usize,
    /// Trunk messages waiting for a worker from the other shards of its rooms; beyond this they are dropped
    /// (and counted).
    pub trunk_queue_packets: usize,
    /// RTP that waited this long or longer in a worker's receive queue (from the kernel's receive time to
    /// the worker reading it) is dropped unread, counted as drop reason `overloaded`: an overloaded worker
    /// sheds its backlog instead of delivering it seconds late.
    pub stale_rtp_ms: u64,
    /// The scheduler slice each media worker thread asks Linux for (`sched_setattr`, honoured from
    /// Linux 6.12): a short slice gives the worker an earlier deadline than the other threads on its core,
    /// so a datagram's arrival wakes it at once and those threads do not preempt it in a fan-out; its share
    /// of the CPU does not change (docs/architecture.md, "Media workers"). 100..=100000; 0 keeps the
    /// kernel's default.
    pub worker_slice_us: u32,
    /// The most a forwarding room's receiver reports tell its publishers their listeners lose, in percent:
    /// a browser's encoder adds in-band FEC for the loss its reports state, and on a clean uplink it would
    /// add none for a listener on a bad link (docs/architecture.md, "Loss feedback"). It also bounds the
    /// raise of a publisher's own small uplink loss to 2 % (any room). 0..=20; 0 turns both off (the
    /// reports state the fraction each of their intervals lost on the uplink, as str0m counts it).
    pub loss_feedback_max_percent: u8,
    /// The least time between two `speakers` events of a room whose set of speakers did not change (only
    /// their levels or order): a new or silent speaker is reported at once whatever this is. Every event
    /// is a WebSocket message to each listener of the room, so a large room's level updates cost the
    /// signaling threads in proportion (docs/loadtest.md, "What the speaker reports cost"). 100..=10000.
    pub speakers_interval_ms: u32,
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
            tcp_enabled: true,
            tcp_port_start: None,
            tcp_max_connections: 1_024,
            tcp_stun_timeout_ms: 5_000,
            dev_lan_candidate: true,
            room_shard_participants: 400,
            trunk_queue_packets: 4_096,
            stale_rtp_ms: media_core::STALE_RTP_AFTER.as_millis() as u64,
            worker_slice_us: 100,
            loss_feedback_max_percent: media_core::LOSS_FEEDBACK_MAX_PERCENT,
            speakers_interval_ms: media_core::slots::SPEAKERS_INTERVAL.as_millis() as u32,
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

    /// The ICE-TCP port of worker `index` (when `tcp_enabled`).
    pub fn tcp_port(&self, index: usize) -> u16 {
        self.tcp_port_start.unwrap_or(self.port_start) + index as u16
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
    /// Positional voice in rooms created by a join (`[room.spatial]`; absent: none). Rooms created through
    /// the admin API say for themselves.
    pub spatial: Option<SpatialSettings>,
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
            spatial: None,
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
    /// A session whose WebSocket drops without `leave` is kept this long for a `resume` (0: not kept).
    pub resume_window_ms: u64,
    /// Suspended sessions kept at most on this server.
    pub max_suspended: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let signaling = signaling::SignalingConfig::default();
        SessionConfig {
            join_deadline_ms: signaling.join_deadline_ms,
            offer_deadline_ms: signaling.offer_deadline_ms,
            resume_window_ms: signaling.resume_window_ms,
            max_suspended: signaling.max_suspended,
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
        if let Some(v) = get("CHORUS_HTTP_LISTEN_BACKLOG") {
            self.http.listen_backlog = parse("CHORUS_HTTP_LISTEN_BACKLOG", &v)?;
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
        if let Some(v) = get("CHORUS_MEDIA_TCP_ENABLED") {
            self.media.tcp_enabled = parse("CHORUS_MEDIA_TCP_ENABLED", &v)?;
        }
        if let Some(v) = get("CHORUS_MEDIA_DEV_LAN_CANDIDATE") {
            self.media.dev_lan_candidate = parse("CHORUS_MEDIA_DEV_LAN_CANDIDATE", &v)?;
        }
        if let Some(v) = get("CHORUS_MEDIA_TCP_PORT_START") {
            self.media.tcp_port_start = Some(parse("CHORUS_MEDIA_TCP_PORT_START", &v)?);
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
        if let Some(v) = get("CHORUS_CLUSTER_REDIS_URL") {
            self.cluster.redis_url = Some(v);
        }
        if let Some(v) = get("CHORUS_CLUSTER_NODE_ID") {
            self.cluster.node_id = Some(v);
        }
        if let Some(v) = get("CHORUS_CLUSTER_PUBLIC_URL") {
            self.cluster.public_url = Some(v);
        }
        if let Some(v) = get("CHORUS_CLUSTER_ADMIN_URL") {
            self.cluster.admin_url = Some(v);
        }
        if let Some(v) = get("CHORUS_CLUSTER_REGION") {
            self.cluster.region = v;
        }
        if let Some(v) = get("CHORUS_CLUSTER_TRUNK_LISTEN") {
            self.cluster.trunk_listen = Some(parse("CHORUS_CLUSTER_TRUNK_LISTEN", &v)?);
        }
        if let Some(v) = get("CHORUS_CLUSTER_TRUNK_PUBLIC_ADDR") {
            self.cluster.trunk_public_addr = Some(parse("CHORUS_CLUSTER_TRUNK_PUBLIC_ADDR", &v)?);
        }
        if let Some(v) = get("CHORUS_CLUSTER_TRUNK_SECRET") {
            self.cluster.trunk_secret = Some(v);
        }
        if let Some(v) = get("CHORUS_CLUSTER_ROOM_NODE_PARTICIPANTS") {
            self.cluster.room_node_participants =
                parse("CHORUS_CLUSTER_ROOM_NODE_PARTICIPANTS", &v)?;
        }
        if let Some(v) = get("CHORUS_CLUSTER_HEARTBEAT_MS") {
            self.cluster.heartbeat_ms = parse("CHORUS_CLUSTER_HEARTBEAT_MS", &v)?;
        }
        if let Some(v) = get("CHORUS_CLUSTER_NODE_TTL_MS") {
            self.cluster.node_ttl_ms = parse("CHORUS_CLUSTER_NODE_TTL_MS", &v)?;
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
        if let Some(Err(why)) = self.room.spatial.as_ref().map(SpatialSettings::validate) {
            return Err(ConfigError::Invalid(format!("room.{why}")));
        }
        if !(1..=600_000).contains(&self.http.header_timeout_ms) {
            return invalid("http.header_timeout_ms must be 1..=600000");
        }
        if !(1..=65_535).contains(&self.http.listen_backlog) {
            return invalid("http.listen_backlog must be 1..=65535");
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
        if self.session.resume_window_ms > MAX_EMPTY_TIMEOUT_SECS * 1000
            || self.session.max_suspended > 1_000_000
        {
            return invalid(
                "session.resume_window_ms must be 0..=86400000 and max_suspended 0..=1000000",
            );
        }
        if self.shutdown.grace_period_secs > MAX_EMPTY_TIMEOUT_SECS {
            return invalid("shutdown.grace_period_secs must be at most 86400");
        }
        self.webhooks.validate()?;
        self.broadcast.validate()?;
        self.cluster.validate()?;
        if self.cluster.enabled()
            && self.cluster.public_url.is_none()
            && (self.http.listen.ip().is_unspecified() || self.http.listen.port() == 0)
        {
            return invalid(
                "cluster.public_url is required when http.listen is a wildcard address or port 0 \
                 (other nodes redirect clients to it)",
            );
        }
        self.recording.validate()?;
        self.ingest.validate()?;
        self.hls.validate()?;
        self.playout.validate()?;
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
        if let Some(tcp) = self.media.tcp_port_start {
            if tcp == 0 || tcp as usize + workers - 1 > u16::MAX as usize {
                return invalid(
                    "media.tcp_port_start: a fixed port, with room for every worker above",
                );
            }
        }
        if !(20..=10_000).contains(&self.media.stale_rtp_ms) {
            return invalid("media.stale_rtp_ms must be 20..=10000");
        }
        if self.media.loss_feedback_max_percent > 20 {
            return invalid("media.loss_feedback_max_percent must be 0..=20");
        }
        if !(100..=10_000).contains(&self.media.speakers_interval_ms) {
            return invalid("media.speakers_interval_ms must be 100..=10000");
        }
        if self.media.worker_slice_us != 0 && !(100..=100_000).contains(&self.media.worker_slice_us)
        {
            return invalid(
                "media.worker_slice_us must be 0 (the kernel's default) or 100..=100000",
            );
        }
        if self.media.room_shard_participants == 0 {
            return invalid("media.room_shard_participants must be at least 1");
        }
        if !(16..=1_000_000).contains(&self.media.trunk_queue_packets) {
            return invalid("media.trunk_queue_packets must be 16..=1000000");
        }
        if !(1..=1_000_000).contains(&self.media.tcp_max_connections) {
            return invalid("media.tcp_max_connections must be 1..=1000000");
        }
        if !(100..=600_000).contains(&self.media.tcp_stun_timeout_ms) {
            return invalid("media.tcp_stun_timeout_ms must be 100..=600000");
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
        if let Some(url) = &mut c.cluster.redis_url {
            *url = redact_userinfo(url);
        }
        if let Some(secret) = &mut c.cluster.trunk_secret {
            *secret = REDACTED.to_owned();
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
CHORUS_MEDIA_TCP_ENABLED, CHORUS_MEDIA_TCP_PORT_START, CHORUS_MEDIA_DEV_LAN_CANDIDATE, CHORUS_PUBLIC_IP, CHORUS_WORKERS, CHORUS_DEV_MODE, CHORUS_UNSAFE_DEV_MODE_ON_NETWORK, CHORUS_API_KEY + CHORUS_API_SECRET, CHORUS_ROOM_SLOTS, \
CHORUS_ROOM_MAX_PARTICIPANTS, CHORUS_ROOM_MODE, CHORUS_ROOM_EMPTY_TIMEOUT_SECS, CHORUS_SHUTDOWN_GRACE_PERIOD_SECS, \
CHORUS_WEBHOOK_URLS (comma-separated), CHORUS_TURN_URLS (comma-separated), CHORUS_TURN_SECRET, CHORUS_LOG, CHORUS_LOG_JSON, \
CHORUS_CLUSTER_REDIS_URL, CHORUS_CLUSTER_NODE_ID, CHORUS_CLUSTER_PUBLIC_URL, CHORUS_CLUSTER_ADMIN_URL, CHORUS_CLUSTER_REGION, \
CHORUS_CLUSTER_TRUNK_LISTEN, CHORUS_CLUSTER_TRUNK_PUBLIC_ADDR, CHORUS_CLUSTER_TRUNK_SECRET, CHORUS_CLUSTER_ROOM_NODE_PARTICIPANTS, \
CHORUS_CLUSTER_HEARTBEAT_MS, CHORUS_CLUSTER_NODE_TTL_MS";

#[cfg(test)]
mod tests;
