//! The `steadfast` command-line tool. Thin: the logic lives in the library and the lab.

// A command-line tool prints its results on standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the C library's allocator: the proxy allocates and frees a few small
/// buffers per command, and spent over a quarter of its time with pipelines in glibc's malloc
/// (BENCHMARKS.md, "The byte-copy floor, and the proxy's allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The config for a command-line target: a URL (`scheme://`), a StackExchange.Redis connection
/// string, or, without a target, the environment.
fn config_for(target: Option<&str>) -> Result<steadfast::Config, steadfast::Error> {
    match target {
        None => steadfast::Config::from_env(),
        Some(url) if url.contains("://") => steadfast::Config::from_url(url),
        Some(text) => steadfast::config::parse_connection_string(text).map(|parsed| {
            for option in &parsed.ignored {
                eprintln!("note: {option} means nothing to steadfast and was ignored");
            }
            parsed.config
        }),
    }
}
mod drill;
mod ping;
mod proxy;
mod watch;

#[derive(Parser)]
#[command(
    name = "steadfast",
    version,
    about = "Redis connections that survive failovers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect once to TARGET, timing each step (resolve, TCP, TLS, handshake, first PING), and
    /// say what the server is. Exit code: 0 ok, 2 bad input, 10 resolve, 11 TCP connect, 12 TLS,
    /// 13 handshake (auth included), 14 PING.
    Ping {
        /// A `redis://` / `rediss://` URL or a StackExchange.Redis connection string
        /// (`host:6380,password=...,ssl=True`). Without it: the environment
        /// (`STEADFAST_CONFIG_FILE`, `STEADFAST_URL` or `STEADFAST_CONNECTION_STRING`, and
        /// `STEADFAST_PASSWORD`).
        target: Option<String>,
    },
    /// Real faults against real servers, steadfast and redis-rs side by side (needs root).
    Drill(DrillArgs),
    /// A steady low-rate workload through steadfast with the live event stream and latency
    /// percentiles each second; a summary on Ctrl-C.
    Watch(watch::WatchArgs),
    /// A local RESP server that gives any Redis client steadfast's failover behaviour: point
    /// the application at it instead of the server.
    Proxy(proxy::ProxyArgs),
}

/// Options of `steadfast drill`.
#[derive(clap::Args, Clone)]
pub(crate) struct DrillArgs {
    /// Shorter fault spells (blackhole 10 s, loss 5 s, cluster node timeout 2 s) and, unless
    /// scenarios are named, only three of the cluster scenarios (cluster-kill,
    /// cluster-failover, cluster-shard-down): for CI.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write one SVG timeline per scenario into DIR.
    #[arg(long, value_name = "DIR", default_value = "drill-report")]
    pub(crate) svg_dir: PathBuf,
    /// Run only these scenarios (repeatable); names as in the table.
    #[arg(long = "scenario", value_name = "NAME")]
    pub(crate) scenarios: Vec<String>,
    /// Remove namespaces and files left by a drill that was killed, then exit.
    #[arg(long)]
    pub(crate) cleanup: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The proxy serves on the runtime its options ask for (one thread by default); every
    // other command on tokio's default, one worker thread per core.
    let runtime = match &cli.command {
        Command::Proxy(args) => steadfast_proxy::runtime(usize::from(args.threads)),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    // RUST_LOG=steadfast=debug (for example) logs the library's decisions to standard error;
    // the proxy logs its own and the upstream's events without being asked.
    let log_format = match &cli.command {
        Command::Proxy(args) => Some(args.log_format),
        _ => std::env::var_os("RUST_LOG").map(|_| proxy::LogFormat::Text),
    };
    if let Some(format) = log_format {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("steadfast_proxy=info,steadfast=warn")
        });
        let logs = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match format {
            proxy::LogFormat::Text => logs.init(),
            proxy::LogFormat::Json => logs.json().init(),
        }
    }
    match cli.command {
        Command::Ping { target } => ping::ping(target.as_deref()).await,
        Command::Drill(args) => drill::drill_command(args).await,
        Command::Watch(args) => watch::watch(args).await,
        Command::Proxy(args) => proxy::proxy(args).await,
    }
}
