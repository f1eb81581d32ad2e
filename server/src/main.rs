//! `chorus`: the voice media server.
//!
//! With no arguments it runs on the embedded default configuration (loopback, development mode, demo page
//! at http://127.0.0.1:7880/). `chorus token create` prints an access token. The server itself is the
//! `chorus` library (server/src/lib.rs); this parses the command line, loads the configuration, installs
//! the signal handlers and runs it.

mod cli;

use chorus::{Config, Phase, Server, Shutdown};
use clap::Parser;
use cli::{Cli, Command, TokenCommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    cli::apply_flags(&mut config, &cli.serve);
    config.validate()?;

    match cli.command {
        Some(Command::Token {
            command: TokenCommand::Create(t),
        }) => cli::token_create(&config, t),
        Some(Command::Drain(d)) => cli::drain(&config, d),
        None if cli.serve.print_config => {
            print!("{}", toml::to_string_pretty(&config.redacted())?);
            Ok(())
        }
        None => serve(config),
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("chorus-http")
        .build()?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        server.print_banner()?;
        let shutdown = Shutdown::new();
        let mut term =
            signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds on Unix");
        let mut int =
            signal(SignalKind::interrupt()).expect("installing a SIGINT handler succeeds on Unix");
        let handler = shutdown.clone();
        tokio::spawn(async move { on_signals(&mut term, &mut int, &handler).await });
        server.serve(shutdown).await
    })?;
    info!("stopped");
    Ok(())
}

/// SIGINT exits at once. SIGTERM drains (see [`Server::serve`]); a second signal while draining exits at
/// once. Once the drain is over (sessions closing, last webhooks), signals are ignored.
async fn on_signals(term: &mut Signal, int: &mut Signal, shutdown: &Shutdown) {
    loop {
        tokio::select! {
            _ = int.recv() => match shutdown.phase() {
                Phase::Serving => {
                    info!("SIGINT: exiting");
                    std::process::exit(130);
                }
                Phase::Draining => {
                    warn!("SIGINT while draining: exiting now");
                    std::process::exit(130);
                }
                Phase::Closing => {}
            },
            _ = term.recv() => match shutdown.phase() {
                Phase::Serving => {
                    info!("SIGTERM: draining");
                    shutdown.drain();
                }
                Phase::Draining => {
                    warn!("second SIGTERM: exiting now");
                    std::process::exit(143);
                }
                Phase::Closing => {}
            },
        }
    }
}
