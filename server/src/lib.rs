//! The Chorus voice media server as a library: [`Server::bind`] starts the media workers and binds the HTTP
//! listener, [`Server::serve`] runs until a [`Shutdown`] asks for a drain and the drain is over; [`run`] does
//! both. The `chorus` binary (main.rs) parses its command line, installs the signal handlers and calls these.
//!
//! Layout: `state` (what the HTTP routes and the admin API share), `http` (page, SDK, WebSocket signaling,
//! metrics, health, development tokens), `admin` (the admin REST API), `conn` (the accept loop and its
//! limits), `shutdown` (drain requests and the drain sequence), `worker` + `udp` (media worker threads),
//! `webhooks`, `metrics`, `config`.

mod admin;
mod broadcast;
mod cluster;
pub mod config;
mod conn;
mod hls;
mod http;
mod ingest;
mod metrics;
mod placement;
mod playout;
mod random;
mod recording;
mod shutdown;
mod state;
mod tcp;
mod udp;
mod webhooks;
mod whip;
mod worker;

/// The parsers of network input, for the cargo-fuzz targets in fuzz/: not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::broadcast::ogg::crc as ogg_crc;
    pub use crate::broadcast::ogg_reader::{OggError, OggItem, OggReader, MAX_PACKET_BYTES};
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use signaling::Signaling;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::Config;
pub use shutdown::{Phase, Shutdown};

use metrics::ServerMetrics;
use state::{AppState, Sessions};

/// Runs a server on `config` until `shutdown` asks for a drain and the drain is over (see [`Server::serve`]).
/// Call it inside a multi-threaded tokio runtime.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    Server::bind(config).await?.serve(shutdown).await
}

/// A server whose media workers run and whose HTTP listener is bound, not yet serving HTTP.
pub struct Server {
    config: Config,
    state: Arc<AppState>,
    listener: TcpListener,
    http_addr: SocketAddr,
    media_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    dev_udp_addrs: Vec<SocketAddr>,
    webhooks_in_flight: webhooks::InFlight,
    /// The media workers' busy time, for the cluster's load figure.
    worker_busy: prometheus::CounterVec,
}

impl Server {
    /// Starts the media workers (one UDP socket each), builds signaling and binds the HTTP listener. Runs
    /// no HTTP yet; the media workers stop once the server is dropped.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let registry = prometheus::Registry::new();
        let media_metrics = Arc::new(metrics::MediaMetrics::new(&registry)?);
        let server_metrics = ServerMetrics::new(&registry)?;
        let recordings = recording::Recordings::new(
            config.recording.clone(),
            recording::RecordingMetrics::new(&registry)?,
        )
        .context("cannot start the recording writer thread")?;
        let hls = hls::Hls::new(config.hls.clone(), hls::HlsMetrics::new(&registry)?);
        let broadcasts = broadcast::Broadcasts::new(
            config.broadcast.clone(),
            metrics::BroadcastMetrics::new(&registry)?,
            vec![recordings.recorded(), hls.tapped()],
        );
        let ingest = Arc::new(ingest::Ingest::new(
            config.ingest.clone(),
            ingest::IngestMetrics::new(&registry)?,
        ));
        let whip = Arc::new(whip::Whip::new(
            &config.ingest,
            whip::WhipMetrics::new(&registry)?,
        ));
        let playout = Arc::new(
            playout::Playout::new(
                config.playout.clone(),
                playout::PlayoutMetrics::new(&registry)?,
            )
            .context("cannot open playout.media_dir")?,
        );
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        // Development mode with media on loopback: Firefox pairs with no loopback candidate, so the
        // workers also receive on the first non-loopback interface (never outside development mode).
        let extra_udp = (config.auth.dev_mode_active()
            && config.media.dev_lan_candidate
            && config.media.bind_ip.is_loopback()
            && config.media.public_ip.is_none())
        .then(worker::first_non_loopback_ip)
        .flatten();
        let worker_count = config.media.worker_count();
        let (trunk_peers, trunk_inboxes) =
            worker::trunk::inboxes(worker_count, config.media.trunk_queue_packets);
        let (spans, spans_rx) = tokio::sync::watch::channel(worker::trunk::Spans::default());
        // Rooms spanning nodes: the node's trunk socket is one more peer of every worker's trunk.
        let node_outbox = config
            .cluster
            .spans_nodes()
            .then(|| tokio::sync::mpsc::channel(config.cluster.trunk_queue_packets));
        let mut worker_peers = trunk_peers.clone();
        worker_peers.extend(node_outbox.as_ref().map(|(tx, _)| tx.clone()));
        let mut workers = Vec::new();
        for (index, inbox) in trunk_inboxes.into_iter().enumerate() {
            let bind =
                SocketAddr::new(config.media.bind_ip, config.media.port_start + index as u16);
            let spec = worker::WorkerSpec {
                index,
                bind,
                candidate: config.media.candidate_addr(index),
                connect_timeout: Duration::from_millis(config.media.connect_timeout_ms),
                stale_rtp_after: Duration::from_millis(config.media.stale_rtp_ms),
                loss_feedback_max_percent: config.media.loss_feedback_max_percent,
                speakers_interval: Duration::from_millis(config.media.speakers_interval_ms.into()),
                slice: (config.media.worker_slice_us > 0)
                    .then(|| Duration::from_micros(config.media.worker_slice_us.into())),
                socket_buffer_bytes: config.media.socket_buffer_bytes,
                extra_udp,
                tcp: config.media.tcp_enabled.then(|| worker::TcpSpec {
                    bind: SocketAddr::new(config.media.bind_ip, config.media.tcp_port(index)),
                    advertised_ip: config.media.public_ip.unwrap_or(config.media.bind_ip),
                    max_connections: config.media.tcp_max_connections,
                    stun_timeout: Duration::from_millis(config.media.tcp_stun_timeout_ms),
                }),
                broadcast: worker::BroadcastSpec {
                    taps: broadcasts.taps(),
                    frames: broadcasts.frame_sink(),
                    recorder: recordings.sink(),
                    hls: hls.sink(),
                },
                trunk: worker::trunk::TrunkSpec {
                    inbox,
                    peers: worker_peers.clone(),
                    spans: spans_rx.clone(),
                },
            };
            let handle = worker::spawn(spec, media_metrics.clone()).with_context(|| {
                format!(
                    "cannot bind media socket {bind} (UDP, and TCP port {} for ICE-TCP)",
                    config.media.tcp_port(index)
                )
            })?;
            workers.push(handle);
        }
        let media_addrs = workers.iter().map(|w| w.local_addr).collect();
        let tcp_addrs = workers.iter().filter_map(|w| w.tcp_addr).collect();
        let dev_udp_addrs = workers.iter().filter_map(|w| w.extra_udp_addr).collect();
        let placement = Arc::new(placement::Placement::new(
            workers.into_iter().map(|w| w.commands).collect(),
            config.media.room_shard_participants,
            spans,
        ));

        let signaling_config = signaling::SignalingConfig {
            default_slots: config.room.slots,
            default_mode: config.room.default_mode,
            default_mix: config.room.mix,
            default_spatial: config.room.spatial,
            default_empty_timeout_secs: config.room.empty_timeout_secs,
            default_max_participants: config.room.max_participants,
            join_deadline_ms: config.session.join_deadline_ms,
            offer_deadline_ms: config.session.offer_deadline_ms,
            resume_window_ms: config.session.resume_window_ms,
            max_suspended: config.session.max_suspended,
            kick_ban_secs: config.room.kick_ban_secs,
            turn: config.turn.clone(),
            ..Default::default()
        };
        let keys = signaling::auth::ApiKeys::new(config.auth.effective_keys())?;
        let signaling = Arc::new(Signaling::new(
            signaling_config,
            keys,
            placement.clone(),
            &registry,
        )?);

        let listener = http_listener(config.http.listen, config.http.listen_backlog)
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let cluster = if config.cluster.enabled() {
            let trunk = node_outbox.map(|(_, outbox)| {
                let parts = cluster::trunk_net::TrunkParts {
                    outbox,
                    workers: trunk_peers,
                    spans: spans_rx,
                };
                (placement.clone(), parts)
            });
            let cluster = cluster::Cluster::new(&config.cluster, http_addr, &registry, trunk)?;
            signaling.set_locator(cluster.clone());
            Some(cluster)
        } else {
            None
        };

        let dev_key = config.auth.dev_mode_active().then(|| {
            (
                config::DEV_API_KEY.to_owned(),
                config::DEV_API_SECRET.to_owned(),
            )
        });
        let state = Arc::new(AppState {
            signaling,
            registry,
            dev_key,
            metrics: server_metrics,
            room_defaults: config.room.clone(),
            grace: Duration::from_secs(config.shutdown.grace_period_secs),
            sessions: Sessions::default(),
            broadcasts,
            cluster,
            recordings,
            ingest,
            hls,
            whip,
            playout,
        });
        // The recordings already on disk (a crashed one is marked interrupted), and retention, at start.
        let loading = state.recordings.clone();
        tokio::task::spawn_blocking(move || loading.load()).await?;

        let webhook_key = match &config.webhooks.api_key {
            Some(name) => config
                .auth
                .effective_keys()
                .get(name)
                .map(|secret| (name.clone(), secret.clone())),
            None => config.auth.signing_key(),
        }
        .context("no API key to sign webhooks with")?;
        let key = webhooks::SigningKey::new(&webhook_key.0, webhook_key.1.as_bytes());
        let webhooks_in_flight = webhooks::InFlight::default();
        if let Some(events) = webhooks::start(
            &config.webhooks,
            key,
            state.metrics.clone(),
            webhooks_in_flight.clone(),
        )? {
            state.signaling.set_event_sink(events);
        }

        info!(addr = %http_addr, "signaling and HTTP listening");
        Ok(Server {
            config,
            state,
            listener,
            http_addr,
            media_addrs,
            tcp_addrs,
            dev_udp_addrs,
            webhooks_in_flight,
            worker_busy: media_metrics.worker_busy.clone(),
        })
    }

    /// The HTTP and WebSocket address (the port chosen, if the configuration said 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Each media worker's UDP address.
    pub fn media_addrs(&self) -> &[SocketAddr] {
        &self.media_addrs
    }

    /// Each media worker's ICE-TCP listener address (empty when ICE-TCP is off).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Prints the addresses (and, in development mode, the key) to stdout, as `chorus` does at start.
    pub fn print_banner(&self) -> anyhow::Result<()> {
        let config = &self.config;
        let addr = self.http_addr;
        let first = self.media_addrs.first().map(|a| a.port()).unwrap_or(0);
        let last = self.media_addrs.last().map(|a| a.port()).unwrap_or(0);
        println!("chorus {} ready", env!("CARGO_PKG_VERSION"));
        println!("  demo page   http://{addr}/");
        println!("  signaling   ws://{addr}/ws");
        println!("  metrics     http://{addr}/metrics");
        println!("  admin API   http://{addr}/admin/v1/rooms (docs/openapi.json)");
        println!(
            "  media UDP   {}:{first}-{last} ({} workers, advertised as {})",
            config.media.bind_ip,
            self.media_addrs.len(),
            config.media.public_ip.unwrap_or(config.media.bind_ip)
        );
        if let (Some(first), Some(last)) = (self.tcp_addrs.first(), self.tcp_addrs.last()) {
            println!(
                "  media TCP   {}:{}-{} (ICE-TCP, offered after UDP)",
                first.ip(),
                first.port(),
                last.port()
            );
        }
        if let Some(first) = self.dev_udp_addrs.first() {
            println!(
                "  media UDP   {first}.. also (development mode: a non-loopback candidate for Firefox)"
            );
        }
        if config.auth.dev_mode_active() {
            // Secrets go to a terminal only: stdout captured by a service manager or CI ends up in logs.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!(
                    "  DEVELOPMENT MODE: API key {} secret {}",
                    config::DEV_API_KEY,
                    config::DEV_API_SECRET
                );
                let token = signaling::auth::mint_admin_token(
                    config::DEV_API_KEY,
                    config::DEV_API_SECRET,
                    "developer",
                    24 * 3600,
                )?;
                println!("  admin token (24 h): {token}");
            } else {
                println!(
                    "  DEVELOPMENT MODE: API key {} (secret and admin token shown on a terminal only; \
                     `chorus token create --admin` mints one)",
                    config::DEV_API_KEY
                );
            }
            println!(
                "  (never expose development mode: set auth.dev_mode = false and auth.api_keys)"
            );
        }
        Ok(())
    }

    /// Serves HTTP until `shutdown` asks for a drain, then drains: no new joins, every client told, calls
    /// continue until the server is empty or the grace period ends (counted from the drain's start, which
    /// may have been earlier through the admin API); then the remaining sessions are closed (1001) and the
    /// last webhooks get a moment. Returns when that is done (or at once if the accept loop fails).
    pub async fn serve(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Server {
            config,
            state,
            listener,
            webhooks_in_flight,
            worker_busy,
            media_addrs,
            ..
        } = self;
        if config.auth.dev_mode_active() {
            if !config.http.listen.ip().is_loopback() {
                warn!(
                    listen = %config.http.listen,
                    "development mode on a non-loopback address (--unsafe-dev-mode-on-network): anyone who \
                     reaches it can mint tokens and administer the server"
                );
            }
        } else if config.auth.dev_mode {
            info!("development mode off: API keys are configured");
        }
        // Rooms created through the admin API go once empty for their empty timeout.
        let sweeper = state.signaling.clone();
        let sweeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for room in sweeper.sweep_empty_rooms(Instant::now()) {
                    info!(room, "empty room closed after its empty timeout");
                }
            }
        });
        state.broadcasts.start(state.signaling.clone());
        state.hls.start(state.signaling.clone());
        let heartbeat = state
            .cluster
            .as_ref()
            .map(|c| c.spawn(state.signaling.clone(), worker_busy, media_addrs.len()));
        state.recordings.start_tasks(state.signaling.clone());
        state.playout.start_tasks(state.clone());
        let app = app(state.clone(), config.broadcast.enabled);
        let fd_limit = conn::raise_fd_limit();
        let max_connections = conn::cap_for_fd_limit(config.http.max_connections, fd_limit);
        if max_connections < config.http.max_connections {
            warn!(
                configured = config.http.max_connections,
                max_connections,
                fd_limit,
                "http.max_connections lowered to fit under the file-descriptor limit"
            );
        }
        let limits = conn::Limits {
            max_connections,
            max_connections_per_ip: config.http.max_connections_per_ip.min(max_connections),
            header_timeout: Duration::from_millis(config.http.header_timeout_ms),
        };
        info!(
            max_connections = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            header_timeout_ms = config.http.header_timeout_ms,
            "HTTP connection limits"
        );
        // Open WebSockets would hold a graceful shutdown forever: the drain decides when to stop, then
        // the accept loop is stopped (the binary then drops the runtime, and every connection with it).
        let sources = config
            .ingest
            .icecast
            .then(|| ingest::icecast::Sources(state.clone()));
        let mut server = tokio::spawn(conn::serve(
            listener,
            app,
            limits,
            state.metrics.clone(),
            sources,
            config.broadcast.enabled.then(|| state.clone()),
        ));
        let result = tokio::select! {
            result = &mut server => result.map_err(anyhow::Error::from),
            () = shutdown::drain(&state, &webhooks_in_flight, &shutdown) => Ok(()),
        };
        server.abort();
        sweeping.abort();
        if let (Some(heartbeat), Some(cluster)) = (heartbeat, &state.cluster) {
            heartbeat.abort();
            let leave = cluster.leave(&state.signaling);
            if tokio::time::timeout(Duration::from_secs(2), leave)
                .await
                .is_err()
            {
                warn!("could not leave the cluster in time: the node's record expires on its own");
            }
        }
        // Running recordings end with their last page written and their side file final.
        state.recordings.shutdown().await;
        result
    }
}

/// The HTTP listener, with `backlog` connections completed ahead of `accept` (`http.listen_backlog`; the
/// standard library's and tokio's `bind` use 128, which a rush of a few hundred connects overflows: each
/// dropped SYN costs its client a 1 s retransmission).
fn http_listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Every route: the page, SDK, signaling, metrics and health (http.rs), listener streams (broadcast/, when
/// enabled), HLS (hls/, when enabled), the admin API (admin.rs), and the admin API's JSON errors for unknown paths and methods.
fn app(state: Arc<AppState>, broadcast: bool) -> Router {
    let listeners = if broadcast {
        broadcast::router()
    } else {
        Router::new()
    };
    let hls = if state.hls.config().enabled {
        hls::router()
    } else {
        Router::new()
    };
    http::router()
        .merge(listeners)
        .merge(hls)
        .merge(whip::router())
        .merge(admin::router(state.clone()))
        .method_not_allowed_fallback(admin::method_not_allowed)
        .fallback(admin::not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an embedder (or a test) does: run a server in-process on ports the system picks, use it, and
    /// stop it through [`Shutdown`].
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_runs_in_process_and_stops_when_asked_to_drain() {
        let mut config = Config::default();
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.media.port_start = 0;
        config.media.workers = 1;
        let server = Server::bind(config).await.expect("binds on free ports");
        let addr = server.http_addr();
        assert_ne!(addr.port(), 0, "the system picked a port");
        assert_eq!(server.media_addrs().len(), 1);
        let shutdown = Shutdown::new();
        let serving = tokio::spawn(server.serve(shutdown.clone()));
        let ready = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .expect("the server answers");
        assert_eq!(ready.status(), reqwest::StatusCode::OK);
        assert!(shutdown.drain());
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("an empty server drains at once")
            .expect("the server task does not panic")
            .expect("the server stops without error");
        assert_eq!(shutdown.phase(), Phase::Closing);
    }
}
