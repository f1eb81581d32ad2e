//! `chorus`: the voice media server.
//!
//! With no arguments it runs on the embedded default configuration (loopback, development mode, demo page
//! at http://127.0.0.1:7880/). `chorus token create` prints an access token.

mod admin;
mod config;
mod conn;
mod http;
mod metrics;
mod udp;
mod webhooks;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use config::{Config, ENV_VARS};
use signaling::media::RoomMode;
use signaling::Signaling;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus: a low-latency voice media server"
)]
#[command(after_help = format!("Environment variables (between the config file and the flags): {ENV_VARS}"))]
struct Cli {
    /// A TOML configuration file (overrides the embedded defaults).
    #[arg(long, global = true, env = "CHORUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct ServeArgs {
    /// HTTP / WebSocket listen address.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Address the media UDP sockets bind to.
    #[arg(long)]
    media_bind_ip: Option<IpAddr>,
    /// First media UDP port; worker i uses port_start + i.
    #[arg(long)]
    media_port_start: Option<u16>,
    /// Address advertised in ICE candidates (public IP).
    #[arg(long)]
    public_ip: Option<IpAddr>,
    /// Open HTTP connections (WebSockets included) from one client IP at most; a load generator on one
    /// machine needs more than the default.
    #[arg(long)]
    http_max_connections_per_ip: Option<usize>,
    /// Media worker threads (0: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Default audio slots per subscriber for new rooms (1..=16).
    #[arg(long)]
    room_slots: Option<u8>,
    /// Default participant limit for new rooms.
    #[arg(long)]
    room_max_participants: Option<usize>,
    /// Mode of rooms created by a join: forward or mix.
    #[arg(long)]
    room_mode: Option<RoomMode>,
    /// How long a room created through the admin API stays while empty, by default.
    #[arg(long)]
    room_empty_timeout_secs: Option<u64>,
    /// After SIGTERM, calls continue at most this long.
    #[arg(long)]
    shutdown_grace_period_secs: Option<u64>,
    /// A webhook receiver (repeatable; replaces the configured list).
    #[arg(long = "webhook-url")]
    webhook_urls: Vec<String>,
    /// Development mode (dev API key, token endpoint for the demo page).
    #[arg(long)]
    dev_mode: Option<bool>,
    /// Allow development mode on a non-loopback --http-listen (refused otherwise): anyone who reaches the
    /// server can then mint tokens and administer it with the published development key.
    #[arg(long)]
    unsafe_dev_mode_on_network: bool,
    /// Tracing filter, e.g. `info,str0m=warn`.
    #[arg(long)]
    log: Option<String>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
    /// Print the effective configuration as TOML, secrets redacted, and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Start draining a running server through its admin API (e.g. from a Kubernetes preStop hook), and
    /// optionally wait until it is empty or its grace period is over. Signs an admin token with the
    /// configured API key.
    Drain(DrainArgs),
}

#[derive(Args)]
struct DrainArgs {
    /// The server's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    /// Wait until no participant is left or the grace period is over.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an access token signed with the configured API secret.
    Create(TokenCreate),
}

#[derive(Args)]
struct TokenCreate {
    /// The room the token admits to (access tokens).
    #[arg(long, required_unless_present = "admin")]
    room: Option<String>,
    /// The participant identity (access tokens) or the operator's name (admin tokens).
    #[arg(long, required_unless_present = "admin")]
    identity: Option<String>,
    /// An admin token for the admin API instead of an access token.
    #[arg(long, conflicts_with_all = ["room", "name", "no_publish", "no_subscribe"])]
    admin: bool,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "6h")]
    ttl: String,
    /// Receive only.
    #[arg(long)]
    no_publish: bool,
    /// Send only.
    #[arg(long)]
    no_subscribe: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    apply_flags(&mut config, &cli.serve);
    config.validate()?;

    match cli.command {
        Some(Command::Token {
            command: TokenCommand::Create(t),
        }) => token_create(&config, t),
        Some(Command::Drain(d)) => drain(&config, d),
        None if cli.serve.print_config => {
            print!("{}", toml::to_string_pretty(&config.redacted())?);
            Ok(())
        }
        None => serve(config),
    }
}

fn apply_flags(c: &mut Config, a: &ServeArgs) {
    if let Some(v) = a.http_listen {
        c.http.listen = v;
    }
    if let Some(v) = a.http_max_connections_per_ip {
        c.http.max_connections_per_ip = v;
    }
    if let Some(v) = a.media_bind_ip {
        c.media.bind_ip = v;
    }
    if let Some(v) = a.media_port_start {
        c.media.port_start = v;
    }
    if let Some(v) = a.public_ip {
        c.media.public_ip = Some(v);
    }
    if let Some(v) = a.workers {
        c.media.workers = v;
    }
    if let Some(v) = a.room_slots {
        c.room.slots = v;
    }
    if let Some(v) = a.room_max_participants {
        c.room.max_participants = v;
    }
    if let Some(v) = a.room_mode {
        c.room.default_mode = v;
    }
    if let Some(v) = a.room_empty_timeout_secs {
        c.room.empty_timeout_secs = v;
    }
    if let Some(v) = a.shutdown_grace_period_secs {
        c.shutdown.grace_period_secs = v;
    }
    if !a.webhook_urls.is_empty() {
        c.webhooks.urls = a.webhook_urls.clone();
    }
    if let Some(v) = a.dev_mode {
        c.auth.dev_mode = v;
    }
    if a.unsafe_dev_mode_on_network {
        c.auth.unsafe_dev_mode_on_network = true;
    }
    if let Some(v) = &a.log {
        c.log.filter = v.clone();
    }
    if a.log_json {
        c.log.json = true;
    }
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num.parse().with_context(|| format!("bad --ttl {s:?}"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => bail!("bad --ttl unit in {s:?}: use s, m, h or d"),
    };
    Ok(n * mult)
}

fn token_create(config: &Config, t: TokenCreate) -> anyhow::Result<()> {
    let (key, secret) = config.auth.signing_key().context("no API key configured")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    if t.admin {
        let claims = signaling::auth::AdminClaims {
            iss: key.clone(),
            sub: t.identity.unwrap_or_else(|| "admin".to_owned()),
            exp: now + parse_ttl(&t.ttl)?,
            nbf: None,
            iat: Some(now),
            admin: true,
        };
        println!(
            "{}",
            signaling::auth::create_admin_token(&key, secret.as_bytes(), &claims)?
        );
        return Ok(());
    }
    let (Some(room), Some(identity)) = (t.room, t.identity) else {
        bail!("--room and --identity are required for an access token");
    };
    let claims = signaling::auth::Claims {
        iss: key.clone(),
        sub: identity,
        room,
        exp: now + parse_ttl(&t.ttl)?,
        nbf: None,
        iat: Some(now),
        name: t.name,
        can_publish: !t.no_publish,
        can_subscribe: !t.no_subscribe,
    };
    println!(
        "{}",
        signaling::auth::create_token(&key, secret.as_bytes(), &claims)?
    );
    Ok(())
}

/// A one-hour admin token signed with the configured key.
fn admin_token(config: &Config, subject: &str) -> anyhow::Result<String> {
    let (key, secret) = config.auth.signing_key().context("no API key configured")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = signaling::auth::AdminClaims {
        iss: key.clone(),
        sub: subject.to_owned(),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        admin: true,
    };
    Ok(signaling::auth::create_admin_token(
        &key,
        secret.as_bytes(),
        &claims,
    )?)
}

fn drain(config: &Config, args: DrainArgs) -> anyhow::Result<()> {
    let token = admin_token(config, "chorus-drain")?;
    let base = args.url.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let url = format!("{base}/admin/v1/drain");
        let status = |response: reqwest::Response| async move {
            let code = response.status();
            let body = response.text().await?;
            if !code.is_success() {
                bail!("{url_code}: {body}", url_code = code);
            }
            anyhow::Ok(serde_json::from_str::<serde_json::Value>(&body)?)
        };
        let view = status(client.post(&url).bearer_auth(&token).send().await?).await?;
        println!("draining: {view}");
        if !args.wait {
            return Ok(());
        }
        loop {
            let view = status(client.get(&url).bearer_auth(&token).send().await?).await?;
            let participants = view["participants"].as_u64().unwrap_or(0);
            let remaining = view["remaining_secs"].as_u64().unwrap_or(0);
            if participants == 0 {
                println!("drained: no participants left");
                return Ok(());
            }
            if remaining == 0 {
                println!("grace period over with {participants} participants left");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config);
    let registry = prometheus::Registry::new();
    let media_metrics = Arc::new(metrics::MediaMetrics::new(&registry)?);
    let server_metrics = metrics::ServerMetrics::new(&registry)?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;

    let mut workers = Vec::new();
    for index in 0..config.media.worker_count() {
        let bind = SocketAddr::new(config.media.bind_ip, config.media.port_start + index as u16);
        let spec = worker::WorkerSpec {
            index,
            bind,
            candidate: config.media.candidate_addr(index),
            connect_timeout: Duration::from_millis(config.media.connect_timeout_ms),
            socket_buffer_bytes: config.media.socket_buffer_bytes,
        };
        let handle = worker::spawn(spec, media_metrics.clone())
            .with_context(|| format!("cannot bind media UDP socket {bind}"))?;
        workers.push(handle);
    }
    let placement = Arc::new(worker::Placement::new(
        workers.iter().map(|w| w.commands.clone()).collect(),
    ));

    let signaling_config = signaling::SignalingConfig {
        default_slots: config.room.slots,
        default_mode: config.room.default_mode,
        default_mix: config.room.mix,
        default_empty_timeout_secs: config.room.empty_timeout_secs,
        default_max_participants: config.room.max_participants,
        join_deadline_ms: config.session.join_deadline_ms,
        offer_deadline_ms: config.session.offer_deadline_ms,
        kick_ban_secs: config.room.kick_ban_secs,
        ..Default::default()
    };
    let keys = signaling::auth::ApiKeys::new(config.auth.effective_keys())?;
    let signaling = Arc::new(Signaling::new(
        signaling_config,
        keys,
        placement,
        &registry,
    )?);

    let dev_key = config.auth.dev_mode_active().then(|| {
        (
            config::DEV_API_KEY.to_owned(),
            config::DEV_API_SECRET.to_owned(),
        )
    });
    let server_metrics_http = server_metrics.clone();
    let state = Arc::new(http::AppState {
        signaling: signaling.clone(),
        registry,
        dev_key,
        metrics: server_metrics.clone(),
        room_defaults: config.room.clone(),
        grace: Duration::from_secs(config.shutdown.grace_period_secs),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("chorus-http")
        .build()?;
    runtime.block_on(async move {
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
        if let Some(events) = webhooks::start(&config.webhooks, key, server_metrics)? {
            signaling.set_event_sink(events);
        }
        // Rooms created through the admin API go once empty for their empty timeout.
        let sweeper = signaling.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for room in sweeper.sweep_empty_rooms(Instant::now()) {
                    info!(room, "empty room closed after its empty timeout");
                }
            }
        });

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let addr = listener.local_addr()?;
        let first = workers.first().map(|w| w.local_addr.port()).unwrap_or(0);
        let last = workers.last().map(|w| w.local_addr.port()).unwrap_or(0);
        info!(%addr, "signaling and HTTP listening");
        println!("chorus {} ready", env!("CARGO_PKG_VERSION"));
        println!("  demo page   http://{addr}/");
        println!("  signaling   ws://{addr}/ws");
        println!("  metrics     http://{addr}/metrics");
        println!("  admin API   http://{addr}/admin/v1/rooms (docs/openapi.json)");
        println!(
            "  media UDP   {}:{first}-{last} ({} workers, advertised as {})",
            config.media.bind_ip,
            workers.len(),
            config.media.public_ip.unwrap_or(config.media.bind_ip)
        );
        if config.auth.dev_mode_active() {
            // Secrets go to a terminal only: stdout captured by a service manager or CI ends up in logs.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!(
                    "  DEVELOPMENT MODE: API key {} secret {}",
                    config::DEV_API_KEY,
                    config::DEV_API_SECRET
                );
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let admin = signaling::auth::AdminClaims {
                    iss: config::DEV_API_KEY.to_owned(),
                    sub: "developer".to_owned(),
                    exp: now + 24 * 3600,
                    nbf: None,
                    iat: Some(now),
                    admin: true,
                };
                let token = signaling::auth::create_admin_token(
                    config::DEV_API_KEY,
                    config::DEV_API_SECRET.as_bytes(),
                    &admin,
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
        let app = http::router(state.clone());
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
        // the runtime (and every connection) is dropped.
        let server = tokio::spawn(conn::serve(listener, app, limits, server_metrics_http));
        tokio::select! {
            result = server => result?,
            () = shutdown(state) => {}
        }
        anyhow::Ok(())
    })?;
    info!("stopped");
    Ok(())
}

/// SIGINT exits at once. SIGTERM drains: no new joins, every client is told (`draining`), calls continue
/// until the server is empty or the grace period ends (counted from the drain's start, which may have been
/// earlier through the admin API); then the remaining sessions are closed (1001). A second signal exits at
/// once.
async fn shutdown(state: Arc<http::AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds on Unix");
    let mut int =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler succeeds on Unix");
    tokio::select! {
        _ = int.recv() => {
            info!("SIGINT: exiting");
            std::process::exit(130);
        }
        _ = term.recv() => {}
    }
    info!("SIGTERM: draining");
    let deadline = http::begin_drain(&state);
    let signaling = &state.signaling;
    loop {
        let remaining = signaling.participant_count();
        if remaining == 0 {
            info!("drained: no participants left");
            break;
        }
        if Instant::now() >= deadline {
            warn!(
                remaining,
                "grace period over: closing the calls still in progress"
            );
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = term.recv() => { warn!("second SIGTERM: exiting now"); std::process::exit(143); }
            _ = int.recv() => { warn!("SIGINT while draining: exiting now"); std::process::exit(130); }
        }
    }
    // Close every session with 1001 and give them a moment to say so and leave their rooms.
    signaling.close_all_sessions();
    let closing = Instant::now() + Duration::from_secs(2);
    while signaling.participant_count() > 0 && Instant::now() < closing {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last rooms' webhooks (participant_left, room_finished) are worth a short wait.
    let flushing = Instant::now() + WEBHOOK_FLUSH;
    loop {
        // Let the dispatcher pick up what the last leaves queued.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if state.metrics.webhooks_in_flight.get() == 0 || Instant::now() >= flushing {
            break;
        }
    }
}

/// At exit, how long webhook deliveries under way may take to finish.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("2h").unwrap(), 7200);
        assert_eq!(parse_ttl("1d").unwrap(), 86400);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
