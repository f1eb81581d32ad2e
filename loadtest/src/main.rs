//! The `chorus-loadtest` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chorus_loadtest::floor::FloorConfig;
use chorus_loadtest::report;
use chorus_loadtest::run::{self, Mode, RunConfig, Target};
use chorus_loadtest::talk::TalkModel;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "chorus-loadtest",
    version,
    about = "Load tester for voice media servers (Chorus, Janus)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate participants against a running server and report.
    Run(Box<RunArgs>),
    /// A soak: the load held long, with churn (leave-and-rejoin), forward and mix rooms side by side,
    /// and a time series of server RSS, CPU and /metrics counters (docs/loadtest.md, "Soak").
    Soak(Box<SoakArgs>),
    /// Measure the machine's floor: AES-GCM seal + sendmmsg CPU time per packet.
    Floor {
        #[arg(long, default_value_t = 1000)]
        ports: usize,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 50_000)]
        packets_per_round: usize,
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Listeners of Ogg/Opus HTTP streams (Chorus mounts, Icecast mounts), every target at once, with each
    /// server's CPU and memory over the same window (docs/loadtest.md, "Listeners").
    Listen {
        /// A stream: `label=host:port/path[@server-pid]` (repeatable; the first two are compared).
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// Listeners per target.
        #[arg(long, short = 'n', default_value_t = 1000)]
        listeners: usize,
        /// Connects in flight at once per target.
        #[arg(long, default_value_t = 500)]
        connect_concurrency: usize,
        /// Seconds of the measured window, after the rush and 5 s to settle.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Write the reports as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// `label=pid`: another thread or process whose CPU is reported over the same windows, e.g. the
        /// kernel's NAPI threads of a veth pair (repeatable; scripts/listen-vs-icecast.sh `REMOTE=1`).
        #[arg(long = "also")]
        also: Vec<String>,
    },
    /// Print side-by-side ratios from JSON reports of `run` (any subset).
    Compare {
        #[arg(long)]
        chorus_forward: Option<PathBuf>,
        #[arg(long)]
        janus_forward: Option<PathBuf>,
        #[arg(long)]
        chorus_mix: Option<PathBuf>,
        #[arg(long)]
        janus_mix: Option<PathBuf>,
    },
}

fn load(p: Option<PathBuf>) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(p) = p else { return Ok(None) };
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?,
    ))
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    Chorus,
    Janus,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Forward,
    Mix,
    /// Soak only: even rooms forward, odd rooms mix.
    Both,
}

#[derive(clap::Args)]
struct SoakArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Leave-and-rejoin events per minute, at random times (Poisson, seeded by --seed).
    #[arg(long, default_value_t = 30.0)]
    churn_per_min: f64,
    /// Share of leavers that vanish (WebSocket dropped, no leave, no close frame) instead of leaving cleanly.
    #[arg(long, default_value_t = 0.25)]
    churn_abrupt: f64,
    /// Seconds between samples (server RSS and CPU, /metrics, the tool's counters).
    #[arg(long, default_value_t = 10.0)]
    sample_secs: f64,
    /// The server's /metrics (default: from --url, ws://H:P/... → http://H:P/metrics).
    #[arg(long)]
    metrics_url: Option<String>,
    /// Seconds after the ramp left out of the figures (RSS slope, rates, loss, latency).
    #[arg(long, default_value_t = 60.0)]
    warmup_secs: f64,
    /// Write the text report here too.
    #[arg(long)]
    text: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TalkArg {
    P59,
    Continuous,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "chorus")]
    target: TargetKind,
    /// Server WebSocket URL (Chorus: ws://HOST:PORT/ws; Janus: ws://HOST:PORT). Chorus: repeat it for the
    /// nodes of a cluster; participants are spread over the URLs round-robin (by index), and follow
    /// `redirect`s (a room spanning nodes keeps each one on the node it reached).
    #[arg(long, default_value = "ws://127.0.0.1:7880/ws")]
    url: Vec<String>,
    #[arg(long, value_enum, default_value = "forward")]
    mode: ModeArg,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants in all rooms together.
    #[arg(long, short = 'n', default_value_t = 10)]
    participants: usize,
    /// Publishers per room (they join first); the rest listen.
    #[arg(long, default_value_t = 3)]
    talkers: usize,
    #[arg(long, value_enum, default_value = "p59")]
    talk: TalkArg,
    /// In talk pauses send nothing (Opus DTX) instead of encoded silence every 20 ms (a browser's default).
    #[arg(long)]
    dtx: bool,
    /// Joins started per second.
    #[arg(long, default_value_t = 20.0)]
    ramp_rate: f64,
    /// Seconds of measured steady state after the ramp.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds a join may take (WebSocket open → first remote audio) before it counts as failed.
    #[arg(long, default_value_t = 15.0)]
    join_timeout: f64,
    /// Drop this share of our own outgoing RTP packets (0..1), to check the loss measurement.
    #[arg(long, default_value_t = 0.0)]
    drop_rtp: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// PID of the server process, for CPU and memory figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Do not bind the socket to `lo` (only inside a private network namespace, e.g. for Janus).
    #[arg(long)]
    any_device: bool,
    /// Mix mode: listeners per room that decode the mix and detect chirps.
    #[arg(long, default_value_t = 3)]
    probes: usize,
    /// Measure only the first K participants of each room (talkers and probes always): the others hand
    /// their received RTP to their peer until their first audio, then only count it, undecrypted. The
    /// tool's CPU then grows with K instead of with the room, so a room of hundreds does not saturate the
    /// tool (loss, jitter and latency cover the K; join and first-audio times cover everyone).
    #[arg(long)]
    measure_receivers: Option<usize>,
    /// Mix mode: seconds between chirps.
    #[arg(long, default_value_t = 2.0)]
    chirp_period: f64,
    /// Mix mode: only the first talker of each room chirps (as before 2026-12-03) instead of every talker
    /// in turn. The first talker usually wakes the room and sets the mixer's phase, so this measures the
    /// best-placed talker.
    #[arg(long)]
    chirp_first_talker_only: bool,
    #[arg(long, default_value = "lt")]
    room_prefix: String,
    /// Chorus API key and secret for tokens (defaults: the development key).
    #[arg(long, default_value = "devkey")]
    api_key: String,
    #[arg(
        long,
        env = "CHORUS_LOADTEST_API_SECRET",
        default_value = "chorus-development-secret-do-not-use-in-production"
    )]
    api_secret: String,
    /// Janus AudioBridge prebuffering (packets); Janus' default when absent.
    #[arg(long)]
    janus_prebuffer: Option<u32>,
    /// Slots to offer when the server does not say (Chorus says in `joined`).
    #[arg(long, default_value_t = 3)]
    slots: usize,
    /// Skip the floor measurement at the start.
    #[arg(long)]
    no_floor: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HTML report with plots here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Floor {
            ports,
            payload,
            packets_per_round,
            rounds,
            json,
        } => {
            let f = chorus_loadtest::floor::measure(FloorConfig {
                ports,
                payload,
                packets_per_round,
                rounds,
            })
            .context("measuring the floor")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                print!("{}", report::floor_text(&f));
            }
            Ok(())
        }
        Command::Listen {
            targets,
            listeners,
            connect_concurrency,
            duration,
            json,
            also,
        } => {
            let also = also
                .iter()
                .map(|a| chorus_loadtest::listen::parse_also(a))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let targets = targets
                .iter()
                .map(|t| chorus_loadtest::listen::ListenTarget::parse(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            raise_fd_limit();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let reports = rt.block_on(chorus_loadtest::listen::run(
                chorus_loadtest::listen::ListenConfig {
                    targets,
                    listeners,
                    connect_concurrency: connect_concurrency.max(1),
                    duration: Duration::from_secs_f64(duration),
                    also,
                },
            ))?;
            print!("{}", chorus_loadtest::listen::render(&reports));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Run(a) => run_cmd(*a),
        Command::Soak(a) => soak_cmd(*a),
        Command::Compare {
            chorus_forward,
            janus_forward,
            chorus_mix,
            janus_mix,
        } => {
            let r = chorus_loadtest::compare::Reports {
                chorus_forward: load(chorus_forward)?,
                janus_forward: load(janus_forward)?,
                chorus_mix: load(chorus_mix)?,
                janus_mix: load(janus_mix)?,
            };
            print!("{}", chorus_loadtest::compare::text(&r));
            Ok(())
        }
    }
}

fn soak_cmd(a: SoakArgs) -> anyhow::Result<()> {
    let modes = match a.run.mode {
        ModeArg::Forward => chorus_loadtest::soak::SoakModes::Forward,
        ModeArg::Mix => chorus_loadtest::soak::SoakModes::Mix,
        ModeArg::Both => chorus_loadtest::soak::SoakModes::Both,
    };
    if !(0.0..=1.0).contains(&a.churn_abrupt) {
        anyhow::bail!("--churn-abrupt must be in [0, 1]");
    }
    if a.sample_secs < 1.0 || a.churn_per_min < 0.0 || a.warmup_secs < 0.0 {
        anyhow::bail!("--sample-secs must be ≥ 1, --churn-per-min and --warmup-secs ≥ 0");
    }
    let config = chorus_loadtest::soak::SoakConfig {
        base: run_config(&a.run, Mode::Forward)?,
        modes,
        churn_per_min: a.churn_per_min,
        churn_abrupt: a.churn_abrupt,
        sample_every: Duration::from_secs_f64(a.sample_secs),
        metrics_url: a.metrics_url.clone(),
        warmup: Duration::from_secs_f64(a.warmup_secs),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt
        .block_on(chorus_loadtest::soak::run(config))
        .context("the soak")?;
    let text = chorus_loadtest::soak::text(&report);
    print!("{text}");
    if let Some(p) = &a.text {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.run.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    let mode = match a.mode {
        ModeArg::Forward => Mode::Forward,
        ModeArg::Mix => Mode::Mix,
        ModeArg::Both => anyhow::bail!("--mode both is for `soak` only"),
    };
    let config = run_config(&a, mode)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(run::run(config)).context("the load run")?;
    print!("{}", report::table(&report));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, report::html(&report))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn run_config(a: &RunArgs, mode: Mode) -> anyhow::Result<RunConfig> {
    let target = match a.target {
        TargetKind::Chorus => Target::Chorus {
            ws_urls: a.url.clone(),
            api_key: a.api_key.clone(),
            api_secret: a.api_secret.clone(),
        },
        TargetKind::Janus => Target::Janus {
            ws_url: match a.url.as_slice() {
                [one] => one.clone(),
                _ => anyhow::bail!("--target janus takes one --url"),
            },
            prebuffer: a.janus_prebuffer,
            room_base: 7_000_000 + u64::from(std::process::id() % 10_000) * 100,
        },
    };
    if !(0.0..1.0).contains(&a.drop_rtp) {
        anyhow::bail!("--drop-rtp must be in [0, 1)");
    }
    Ok(RunConfig {
        target,
        mode,
        rooms: a.rooms,
        participants: a.participants,
        talkers: a.talkers,
        talk: match a.talk {
            TalkArg::P59 => TalkModel::P59,
            TalkArg::Continuous => TalkModel::Continuous,
        },
        dtx: a.dtx,
        slots: a.slots,
        ramp_rate: a.ramp_rate,
        duration: Duration::from_secs_f64(a.duration),
        join_timeout: Duration::from_secs_f64(a.join_timeout),
        drop_rtp: a.drop_rtp,
        seed: a.seed,
        server_pid: a.server_pid,
        device: (!a.any_device).then(|| "lo".to_string()),
        probes: a.probes,
        measure_receivers: a.measure_receivers,
        chirp_period: Duration::from_secs_f64(a.chirp_period),
        chirp_first_only: a.chirp_first_talker_only,
        room_prefix: format!("{}-{}-", a.room_prefix, std::process::id()),
        floor: (!a.no_floor).then(FloorConfig::default),
        progress: !a.quiet,
    })
}

/// Raise the soft file-descriptor limit to the hard one (thousands of listeners).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
