//! The `chorus` command line: serving flags (applied over the configuration file and the environment),
//! `chorus token create` and `chorus drain`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use chorus::config::{Config, ENV_VARS};
use clap::{Args, Parser, Subcommand};
use signaling::media::RoomMode;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus: a low-latency voice media server"
)]
#[command(after_help = format!("Environment variables (between the config file and the flags): {ENV_VARS}"))]
pub struct Cli {
    /// A TOML configuration file (overrides the embedded defaults).
    #[arg(long, global = true, env = "CHORUS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// HTTP / WebSocket listen address.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Address the media UDP sockets bind to.
    #[arg(long)]
    media_bind_ip: Option<IpAddr>,
    /// First media UDP port; worker i uses port_start + i.
    #[arg(long)]
    media_port_start: Option<u16>,
    /// ICE-TCP beside UDP (passive TCP candidates, one TCP port per worker): true or false.
    #[arg(long)]
    media_tcp_enabled: Option<bool>,
    /// First ICE-TCP port; worker i uses tcp_port_start + i (default: the UDP port numbers).
    #[arg(long)]
    media_tcp_port_start: Option<u16>,
    /// In development mode with media on loopback, also offer a candidate on the first non-loopback
    /// interface (for Firefox): true (default) or false.
    #[arg(long)]
    media_dev_lan_candidate: Option<bool>,
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
    pub print_config: bool,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct DrainArgs {
    /// The server's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    /// Wait until no participant is left or the grace period is over.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print an access token signed with the configured API secret.
    Create(TokenCreate),
}

#[derive(Args)]
pub struct TokenCreate {
    /// The room the token admits to (access tokens).
    #[arg(long, required_unless_present = "admin")]
    room: Option<String>,
    /// The participant identity (access tokens) or the operator's name (admin tokens).
    #[arg(long, required_unless_present = "admin")]
    identity: Option<String>,
    /// An admin token for the admin API instead of an access token.
    #[arg(long, conflicts_with_all = ["room", "name", "no_publish", "no_subscribe", "moderator", "ptt", "team", "shout"])]
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
    /// May mute, deafen, kick and move the others in the room (`moderate`).
    #[arg(long)]
    moderator: bool,
    /// Push-to-talk forced on: heard only while the key is down.
    #[arg(long)]
    ptt: bool,
    /// The participant's team (1–64 characters of A-Z, a-z, 0-9, '_', '.', '-').
    #[arg(long)]
    team: Option<String>,
    /// The shout role: heard by everyone in the room, whatever the distance, team or max_audible.
    #[arg(long)]
    shout: bool,
}

pub fn apply_flags(c: &mut Config, a: &ServeArgs) {
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
    if let Some(v) = a.media_tcp_enabled {
        c.media.tcp_enabled = v;
    }
    if let Some(v) = a.media_dev_lan_candidate {
        c.media.dev_lan_candidate = v;
    }
    if let Some(v) = a.media_tcp_port_start {
        c.media.tcp_port_start = Some(v);
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

pub fn token_create(config: &Config, t: TokenCreate) -> anyhow::Result<()> {
    let (key, secret) = config.auth.signing_key().context("no API key configured")?;
    let ttl_secs = parse_ttl(&t.ttl)?;
    if t.admin {
        let subject = t.identity.as_deref().unwrap_or("admin");
        println!(
            "{}",
            signaling::auth::mint_admin_token(&key, secret.as_bytes(), subject, ttl_secs)?
        );
        return Ok(());
    }
    let (Some(room), Some(identity)) = (t.room, t.identity) else {
        bail!("--room and --identity are required for an access token");
    };
    let claims = signaling::auth::Claims {
        name: t.name,
        can_publish: !t.no_publish,
        can_subscribe: !t.no_subscribe,
        moderator: t.moderator,
        ptt: t.ptt,
        team: t.team.map(vocab::TeamId::new).transpose()?,
        shout: t.shout,
        ..signaling::auth::Claims::valid_for(&room, &identity, ttl_secs)
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
    Ok(signaling::auth::mint_admin_token(
        &key,
        secret.as_bytes(),
        subject,
        3600,
    )?)
}

pub fn drain(config: &Config, args: DrainArgs) -> anyhow::Result<()> {
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
