//! The listener: accepts downstream connections on loopback (or a Unix socket) and serves each
//! in a task of its own, within a bound on connections.
//!
//! # Behaviour
//! - Listens where told; a TCP address that is not loopback must be asked for
//!   ([`ProxyConfig::is_open_to_network`]), since the proxy hands out the upstream's access.
//! - At most [`ProxyConfig::max_connections`] downstream connections: one more is answered
//!   `-ERR max number of clients reached` (what the server says) and closed.
//! - [`Proxy::shutdown`]: stops accepting, lets every connection finish the command it is
//!   running within the drain deadline, then closes them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection;
use crate::operations::{self, Health, Upstream};
use crate::resp::Limits;

/// Where the proxy listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (loopback unless [`ProxyConfig::is_open_to_network`]).
    Tcp(SocketAddr),
    /// A Unix domain socket path (made afresh: a stale file there is removed).
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("listen: `unix:` needs a path (unix:/run/steadfast.sock)".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("listen: {text:?} is neither host:port (127.0.0.1:6379) nor unix:PATH")
        })
    }
}

/// How the proxy serves.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where to listen. Default: `127.0.0.1:6379`.
    pub listen: Vec<Listen>,
    /// The upstream: anything the library connects to. Every downstream connection gets a
    /// client made from it (with the connection's protocol, database and name).
    pub upstream: steadfast::Config,
    /// A password downstream clients must give (`AUTH` / `HELLO ... AUTH`); `None`: none asked.
    pub password: Option<String>,
    /// Allow a TCP listen address that is not loopback. Default: false.
    pub is_open_to_network: bool,
    /// The most downstream connections at once. Default: 10,000.
    pub max_connections: usize,
    /// The most commands held at once over every connection (sent upstream or waiting for a
    /// server, not yet answered); more are answered `UNAVAILABLE ...` at once, not sent.
    /// One connection sends at most 1,024 commands at a time: the rest of a longer pipeline
    /// waits, unread, until they are answered. Default: 100,000.
    pub max_queued: usize,
    /// What one command may be (the server's own limits by default).
    pub limits: Limits,
    /// How long [`Proxy::shutdown`] lets running commands finish. Default: 5 s.
    pub drain: Duration,
    /// Where to serve `/health` and `/metrics` over HTTP (`--metrics`); `None`: nowhere.
    pub operations: Option<SocketAddr>,
    /// The upstream is a Redis Cluster (`--cluster`): the proxy appears as one node owning
    /// every slot and routes each command to its slot's primary. Default: false (one endpoint).
    pub is_cluster: bool,
}

impl ProxyConfig {
    /// A proxy for `upstream` on `127.0.0.1:6379` with the defaults above.
    pub fn new(upstream: steadfast::Config) -> Self {
        Self {
            listen: vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 6379)))],
            upstream,
            password: None,
            is_open_to_network: false,
            max_connections: 10_000,
            max_queued: 100_000,
            limits: Limits::default(),
            drain: Duration::from_secs(5),
            operations: None,
            is_cluster: false,
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) next_id: AtomicU64,
    pub(crate) open: AtomicUsize,
    /// Commands held now ([`ProxyConfig::max_queued`]).
    pub(crate) queued: AtomicUsize,
    /// Fired by [`Proxy::shutdown`]: connections end after the command they are running.
    pub(crate) closing: CancellationToken,
    /// The shared cluster clients ([`ProxyConfig::is_cluster`]).
    pub(crate) clusters: crate::backend::Clusters,
    /// The single endpoint's shared clients.
    pub(crate) endpoints: crate::backend::Endpoints,
    /// What the upstream last said it is (`HELLO` tells clients), and when it was asked.
    pub(crate) upstream_server:
        std::sync::Mutex<Option<(crate::connection::ServerKind, tokio::time::Instant)>>,
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    addresses: Vec<Listen>,
    upstream: Upstream,
    operations: Option<SocketAddr>,
    stop_accepting: CancellationToken,
    tasks: TaskTracker,
}

/// Why the proxy could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Proxy {
    /// Binds every listen address and starts accepting. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// A listen address that is not loopback without `is_open_to_network`, one that cannot be
    /// bound, or an upstream config the library refuses (named field and value).
    pub async fn start(config: ProxyConfig) -> Result<Self, StartError> {
        config
            .upstream
            .validate()
            .map_err(|e| StartError(format!("upstream: {e}")))?;
        let shared = Arc::new(Shared {
            config,
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            closing: CancellationToken::new(),
            clusters: crate::backend::Clusters::default(),
            endpoints: crate::backend::Endpoints::default(),
            upstream_server: std::sync::Mutex::new(None),
        });
        let (stop_accepting, tasks) = (CancellationToken::new(), TaskTracker::new());
        // The recorder first, so the upstream's first events are counted too.
        let recorder = shared
            .config
            .operations
            .and_then(|_| operations::install_recorder());
        let upstream = if shared.config.is_cluster {
            Upstream::start_cluster(Arc::clone(&shared), &stop_accepting, &tasks)
        } else {
            Upstream::start(shared.config.upstream.clone(), &stop_accepting, &tasks)
                .map_err(|e| StartError(format!("upstream: {e}")))?
        };
        let mut operations = None;
        if let Some(address) = shared.config.operations {
            let watched = upstream.health_source();
            let bound = operations::serve(
                address,
                move || watched.health(),
                recorder,
                stop_accepting.clone(),
                &tasks,
            )
            .await
            .map_err(|e| StartError(format!("metrics: {address}: {e}")))?;
            operations = Some(bound);
        }
        let mut addresses = Vec::new();
        for listen in shared.config.listen.clone() {
            match listen {
                Listen::Tcp(address) => {
                    if !address.ip().is_loopback() && !shared.config.is_open_to_network {
                        return Err(StartError(format!(
                            "listen: {address} is not a loopback address; the proxy hands out the upstream's access, so open it to the network only on purpose (--open-to-network)"
                        )));
                    }
                    let listener = TcpListener::bind(address)
                        .await
                        .map_err(|e| StartError(format!("listen: {address}: {e}")))?;
                    let bound = listener
                        .local_addr()
                        .map_err(|e| StartError(format!("listen: {address}: {e}")))?;
                    addresses.push(Listen::Tcp(bound));
                    tasks.spawn(accept_loop(
                        Listener::Tcp(listener),
                        Arc::clone(&shared),
                        stop_accepting.clone(),
                        tasks.clone(),
                    ));
                }
                Listen::Unix(path) => {
                    let _ = std::fs::remove_file(&path);
                    let listener = UnixListener::bind(&path)
                        .map_err(|e| StartError(format!("listen: unix:{}: {e}", path.display())))?;
                    addresses.push(Listen::Unix(path));
                    tasks.spawn(accept_loop(
                        Listener::Unix(listener),
                        Arc::clone(&shared),
                        stop_accepting.clone(),
                        tasks.clone(),
                    ));
                }
            }
        }
        Ok(Self {
            shared,
            addresses,
            upstream,
            operations,
            stop_accepting,
            tasks,
        })
    }

    /// Where it listens (a TCP port 0 resolved to the port bound).
    pub fn addresses(&self) -> &[Listen] {
        &self.addresses
    }

    /// Where `/health` and `/metrics` are served (a port 0 resolved), if anywhere.
    pub fn operations_address(&self) -> Option<SocketAddr> {
        self.operations
    }

    /// Whether the upstream has a reachable primary now (what `/health` says).
    pub fn health(&self) -> Health {
        self.upstream.health()
    }

    /// Downstream connections open now.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets running commands finish (at most the drain deadline), closes every
    /// connection and waits for their tasks.
    pub async fn shutdown(&self) {
        self.stop_accepting.cancel();
        self.shared.closing.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.shared.config.drain, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still running at the end of the drain deadline were closed"
            );
        }
        for listen in &self.addresses {
            if let Listen::Unix(path) = listen {
                let _ = std::fs::remove_file(path);
            }
        }
        self.shared.clusters.shutdown().await;
        self.shared.endpoints.shutdown().await;
    }
}

/// Serves one accepted connection, or refuses it when the proxy is full.
fn admit<S>(
    mut stream: S,
    peer: String,
    local: Option<SocketAddr>,
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let open = shared.open.fetch_add(1, Ordering::AcqRel) + 1;
    let shared = Arc::clone(shared);
    if open > shared.config.max_connections {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        metrics::counter!("steadfast_proxy_connections_refused_total", "reason" => "max_connections")
            .increment(1);
        tracing::warn!(
            peer,
            max = shared.config.max_connections,
            "connection refused: the proxy is full"
        );
        tasks.spawn(async move {
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
        });
        return;
    }
    metrics::counter!("steadfast_proxy_connections_total").increment(1);
    metrics::gauge!("steadfast_proxy_connections").increment(1.0);
    tasks.spawn(async move {
        connection::serve(stream, peer, local, &shared).await;
        shared.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("steadfast_proxy_connections").decrement(1.0);
    });
}

/// A bound listener of either kind.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Accepts one connection and hands it to [`admit`].
    async fn accept(&self, shared: &Arc<Shared>, tasks: &TaskTracker) -> std::io::Result<()> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                admit(stream, peer.to_string(), local, shared, tasks);
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                admit(stream, "unix".to_owned(), None, shared, tasks);
            }
        }
        Ok(())
    }
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept(&shared, &tasks) => accepted,
        };
        if let Err(e) = accepted {
            // Out of descriptors, most likely: a moment for some to close.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
