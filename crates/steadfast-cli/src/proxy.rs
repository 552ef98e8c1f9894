//! `steadfast proxy`: the sidecar, run until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use steadfast_proxy::{Listen, Proxy, ProxyConfig};

/// How the proxy's log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event (for a log pipeline).
    Json,
}

/// Options of `steadfast proxy`.
#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    /// Where to listen (repeatable): HOST:PORT, loopback unless --open-to-network, or
    /// unix:PATH. Default: 127.0.0.1:6379.
    #[arg(long = "listen", value_name = "ADDRESS")]
    listen: Vec<Listen>,
    /// Ask downstream clients for this password (AUTH). Read from the environment variable
    /// STEADFAST_PROXY_PASSWORD when not given here (a command line is visible to every user
    /// of the machine).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// Allow a listen address that is not loopback: whoever reaches it uses the upstream with
    /// the proxy's credentials.
    #[arg(long)]
    open_to_network: bool,
    /// The most downstream connections at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// The most commands held at once over every connection; more are answered UNAVAILABLE.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_queued: usize,
    /// Serve `/health` (200 while an upstream primary is reachable, 503 otherwise) and
    /// `/metrics` (Prometheus) over HTTP at ADDR (`127.0.0.1:9187`).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// The upstream is a Redis Cluster (its configuration endpoint, or any node): the proxy
    /// appears to clients as one node owning every slot and routes each command by slot.
    #[arg(long)]
    cluster: bool,
    /// Threads serving connections. Default: 1 (a sidecar shares its host's cores; on one
    /// thread commands from many connections leave in one write, and no thread wakes
    /// another: BENCHMARKS.md, "The proxy on one thread"). More for loads one core cannot
    /// carry.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: u16,
    /// How log lines (to standard error; RUST_LOG filters them) are written.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// The upstream: a `redis://` / `rediss://` URL or a StackExchange.Redis connection
    /// string. Without it: the environment (`STEADFAST_CONFIG_FILE`, `STEADFAST_URL` or
    /// `STEADFAST_CONNECTION_STRING`, and `STEADFAST_PASSWORD`).
    target: Option<String>,
}

pub(crate) async fn proxy(args: ProxyArgs) -> ExitCode {
    let upstream = match crate::config_for(args.target.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = ProxyConfig::new(upstream);
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.password = args
        .password
        .or_else(|| std::env::var("STEADFAST_PROXY_PASSWORD").ok());
    config.is_open_to_network = args.open_to_network;
    config.max_connections = args.max_connections;
    config.max_queued = args.max_queued;
    config.operations = args.metrics;
    config.is_cluster = args.cluster;
    let proxy = match Proxy::start(config).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(address) = proxy.operations_address() {
        println!("steadfast proxy serving /health and /metrics on http://{address}");
    }
    for listen in proxy.addresses() {
        match listen {
            Listen::Tcp(address) => println!("steadfast proxy listening on {address}"),
            Listen::Unix(path) => println!("steadfast proxy listening on unix:{}", path.display()),
        }
    }
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                eprintln!("error: cannot watch for SIGTERM: {e}");
                return ExitCode::FAILURE;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping: finishing running commands");
    proxy.shutdown().await;
    ExitCode::SUCCESS
}
