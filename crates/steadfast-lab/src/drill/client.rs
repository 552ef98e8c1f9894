//! The clients under test, each driven the same way: one SET then one GET per operation.
//!
//! # Behaviour
//! - steadfast with its defaults (system resolver, 5 s deadline).
//! - redis-rs `MultiplexedConnection` with its defaults: one connection, never replaced. If it
//!   cannot be created (server down), each operation tries to create it, as a caller would.
//! - redis-rs `ConnectionManager` with its defaults, created the same lazy way.
//! - redis-rs `MultiplexedConnection` with its defaults, through a `steadfast proxy` (the
//!   library's sidecar, started in this process for the scenario) with its defaults.
//! - On a cluster: steadfast's `ClusterClient` with its defaults, beside redis-rs
//!   `cluster_async::ClusterConnection` with its defaults (created the same lazy way), and a
//!   floor: one redis-rs `MultiplexedConnection` straight to each shard's first primary, which
//!   knows nothing of the cluster, so nothing one shard does can reach another's operations
//!   through it. Its latency on the shards a fault does not touch is what the machine itself
//!   (the servers' failover work, the scheduler) does to every client at that moment.

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use serde::Serialize;
use tokio::sync::Mutex;

/// Threads of the proxies the drill starts: `steadfast proxy`'s default.
pub(crate) const PROXY_THREADS: usize = 1;

/// Which client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// steadfast `Client`, default config.
    Steadfast,
    /// redis-rs `MultiplexedConnection`, defaults.
    RedisRsMultiplexed,
    /// redis-rs `ConnectionManager`, defaults.
    RedisRsManager,
    /// redis-rs `cluster_async::ClusterConnection`, defaults.
    RedisRsCluster,
    /// The floor: redis-rs `MultiplexedConnection`s straight to each shard's first primary.
    Direct,
    /// redis-rs `MultiplexedConnection` with its defaults, through a `steadfast proxy` with
    /// its defaults (in this process, on loopback): the application that is not steadfast.
    ThroughProxy,
    /// redis-py with its defaults (`clients/python`), through a `steadfast proxy`.
    PythonThroughProxy,
    /// ioredis with its defaults (`clients/node`), through a `steadfast proxy`.
    NodeThroughProxy,
    /// redis-py with its defaults through HAProxy in the role-check pattern (for comparison).
    PythonThroughHaproxy,
    /// ioredis with its defaults through HAProxy in the role-check pattern (for comparison).
    NodeThroughHaproxy,
}

impl ClientKind {
    /// Every single-endpoint client, in report order.
    pub const ALL: [Self; 4] = [
        Self::Steadfast,
        Self::ThroughProxy,
        Self::RedisRsMultiplexed,
        Self::RedisRsManager,
    ];

    /// The programs in other languages run beside them on single-endpoint scenarios.
    pub const PROGRAMS: [Self; 2] = [Self::PythonThroughProxy, Self::NodeThroughProxy];

    /// The same programs through HAProxy, beside them on single-endpoint scenarios.
    pub const HAPROXIED: [Self; 2] = [Self::PythonThroughHaproxy, Self::NodeThroughHaproxy];

    /// Every cluster client, in report order.
    pub const CLUSTER: [Self; 4] = [
        Self::Steadfast,
        Self::ThroughProxy,
        Self::RedisRsCluster,
        Self::Direct,
    ];

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Steadfast => "steadfast",
            Self::RedisRsMultiplexed => "redis-rs multiplexed",
            Self::RedisRsManager => "redis-rs manager",
            Self::RedisRsCluster => "redis-rs cluster_async",
            Self::Direct => "direct (floor)",
            Self::ThroughProxy => "redis-rs via proxy",
            Self::PythonThroughProxy => "redis-py via proxy",
            Self::NodeThroughProxy => "ioredis via proxy",
            Self::PythonThroughHaproxy => "redis-py via HAProxy",
            Self::NodeThroughHaproxy => "ioredis via HAProxy",
        }
    }

    /// Whether it reaches the servers through a `steadfast proxy`.
    pub fn is_through_proxy(self) -> bool {
        matches!(
            self,
            Self::ThroughProxy | Self::PythonThroughProxy | Self::NodeThroughProxy
        )
    }
}

/// SET then GET through a steadfast client's `query` (`Client` and `ClusterClient` alike);
/// a failure is named by its [`steadfast::ErrorKind`].
macro_rules! steadfast_set_get {
    ($client:expr, $key:expr, $value:expr) => {{
        let kind = |e: steadfast::Error| format!("{:?}", e.kind());
        $client
            .query::<()>(redis::cmd("SET").arg($key).arg($value))
            .await
            .map_err(kind)?;
        $client
            .query::<Option<u64>>(redis::cmd("GET").arg($key))
            .await
            .map(drop)
            .map_err(kind)
    }};
}

/// One client instance under test.
pub(crate) enum UnderTest {
    Steadfast(
        steadfast::Client,
        std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<steadfast::Event>>>,
    ),
    Multiplexed {
        url: String,
        connection: Mutex<Option<MultiplexedConnection>>,
    },
    Manager {
        url: String,
        connection: Mutex<Option<ConnectionManager>>,
    },
    SteadfastCluster(
        steadfast::cluster::ClusterClient,
        std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<steadfast::Event>>>,
    ),
    Cluster {
        url: String,
        connection: Mutex<Option<ClusterConnection>>,
    },
    Direct(Vec<DirectShard>),
    ThroughProxy {
        proxy: steadfast_proxy::OwnThread,
        url: String,
        connection: Mutex<Option<MultiplexedConnection>>,
    },
}

/// What a scenario switches on in steadfast beyond its defaults.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OptIn {
    /// The `AzureRedisEvents` listener (on by default only for Azure host names, which the
    /// lab's name is not).
    pub(crate) is_azure_events: bool,
    /// RESP3, which carries the maintenance push notifications (`MOVING`, `FAILING_OVER` ...);
    /// the default is RESP2, whose replies match redis-rs's default.
    pub(crate) is_resp3: bool,
}

impl UnderTest {
    /// Creates the client; redis-rs clients connect lazily on first use, steadfast's cluster
    /// client reads the topology now. steadfast runs with its defaults, except for what the
    /// scenario opts in to ([`OptIn`]).
    /// On a cluster, `primaries` are each shard's first primary, in shard order.
    pub(crate) async fn new(
        kind: ClientKind,
        url: &str,
        opt_in: OptIn,
        primaries: Option<&[std::net::SocketAddr]>,
    ) -> Result<Self, String> {
        Ok(match kind {
            ClientKind::Steadfast => {
                let mut config = steadfast::Config::from_url(url).map_err(|e| e.to_string())?;
                if opt_in.is_azure_events {
                    config.maintenance.azure_events = steadfast::AzureEvents::On;
                }
                if opt_in.is_resp3 {
                    config.endpoint.protocol = steadfast::Protocol::Resp3;
                }
                if primaries.is_some() {
                    let client = steadfast::cluster::ClusterClient::connect(config)
                        .await
                        .map_err(|e| e.to_string())?;
                    let events = client.events();
                    return Ok(Self::SteadfastCluster(
                        client,
                        std::sync::Mutex::new(Some(events)),
                    ));
                }
                let (client, events) =
                    steadfast::Client::with_events(config).map_err(|e| e.to_string())?;
                Self::Steadfast(client, std::sync::Mutex::new(Some(events)))
            }
            ClientKind::RedisRsCluster => Self::Cluster {
                url: url.to_owned(),
                connection: Mutex::new(None),
            },
            ClientKind::Direct => {
                let primaries = primaries
                    .ok_or("the direct floor needs a cluster")?
                    .to_vec();
                Self::Direct(primaries.into_iter().map(DirectShard::new).collect())
            }
            ClientKind::ThroughProxy => {
                // The proxy's upstream: its defaults, with the scenario's opt-ins (each
                // downstream connection's protocol is the one its client chose: RESP2 here).
                let mut config = steadfast::Config::from_url(url).map_err(|e| e.to_string())?;
                if opt_in.is_azure_events {
                    config.maintenance.azure_events = steadfast::AzureEvents::On;
                }
                let mut proxy_config = steadfast_proxy::ProxyConfig::new(config);
                proxy_config.is_cluster = primaries.is_some();
                proxy_config.listen = vec![steadfast_proxy::Listen::Tcp(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                )];
                // On a thread and runtime of its own, as `steadfast proxy` serves.
                let proxy = steadfast_proxy::OwnThread::start(proxy_config, PROXY_THREADS)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(steadfast_proxy::Listen::Tcp(address)) =
                    proxy.addresses().first().cloned()
                else {
                    return Err("the proxy did not listen on TCP".into());
                };
                Self::ThroughProxy {
                    proxy,
                    url: format!("redis://{address}/"),
                    connection: Mutex::new(None),
                }
            }
            ClientKind::PythonThroughProxy
            | ClientKind::NodeThroughProxy
            | ClientKind::PythonThroughHaproxy
            | ClientKind::NodeThroughHaproxy => {
                return Err(format!(
                    "{} runs as a program (drill::external)",
                    kind.label()
                ));
            }
            ClientKind::RedisRsMultiplexed => Self::Multiplexed {
                url: url.to_owned(),
                connection: Mutex::new(None),
            },
            ClientKind::RedisRsManager => Self::Manager {
                url: url.to_owned(),
                connection: Mutex::new(None),
            },
        })
    }

    /// The steadfast client's events from before it started (once; `None` for redis-rs).
    pub(crate) fn take_events(&self) -> Option<tokio::sync::broadcast::Receiver<steadfast::Event>> {
        match self {
            Self::Steadfast(_, events) | Self::SteadfastCluster(_, events) => {
                events.lock().unwrap_or_else(|e| e.into_inner()).take()
            }
            _ => None,
        }
    }

    /// One operation: SET key value, then GET key. Returns the error kind on failure.
    pub(crate) async fn set_get(&self, key: &str, value: u64) -> Result<(), String> {
        match self {
            Self::Steadfast(client, _) => steadfast_set_get!(client, key, value),
            Self::Multiplexed { url, connection }
            | Self::ThroughProxy {
                url, connection, ..
            } => {
                let mut connection = made_once(connection, async {
                    redis::Client::open(url.as_str())?
                        .get_multiplexed_async_connection()
                        .await
                })
                .await?;
                set_get(&mut connection, key, value).await
            }
            Self::SteadfastCluster(client, _) => steadfast_set_get!(client, key, value),
            Self::Cluster { url, connection } => {
                let mut connection = made_once(connection, async {
                    redis::cluster::ClusterClient::new(vec![url.as_str()])?
                        .get_async_connection()
                        .await
                })
                .await?;
                set_get(&mut connection, key, value).await
            }
            Self::Direct(shards) => {
                let shard = DirectShard::of(shards, key.as_bytes());
                let mut connection = shard.connection().await?;
                match set_get_raw(&mut connection, key, value).await {
                    Err(e) if shard.follows(&e).await => {
                        let mut connection = shard.connection().await?;
                        set_get(&mut connection, key, value).await
                    }
                    outcome => outcome.map_err(|e| kind_of(&e)),
                }
            }
            Self::Manager { url, connection } => {
                let mut connection = made_once(connection, async {
                    ConnectionManager::new(redis::Client::open(url.as_str())?).await
                })
                .await?;
                set_get(&mut connection, key, value).await
            }
        }
    }

    /// One command, its reply or redis-rs's error (steadfast's errors converted, which keeps
    /// whether they may have been applied: [`steadfast::RedisErrorExt`]). A connection that
    /// could not be made is an error that says the command was not sent.
    pub(crate) async fn send(&self, cmd: &redis::Cmd) -> Result<redis::Value, redis::RedisError> {
        let not_sent = |_: String| {
            redis::RedisError::from((redis::ErrorKind::Client, "no connection: not sent"))
        };
        match self {
            Self::Steadfast(client, _) => client.query(cmd).await.map_err(Into::into),
            Self::SteadfastCluster(client, _) => client.query(cmd).await.map_err(Into::into),
            Self::Multiplexed { url, connection }
            | Self::ThroughProxy {
                url, connection, ..
            } => {
                let mut connection = made_once(connection, async {
                    redis::Client::open(url.as_str())?
                        .get_multiplexed_async_connection()
                        .await
                })
                .await
                .map_err(not_sent)?;
                cmd.query_async(&mut connection).await
            }
            Self::Manager { url, connection } => {
                let mut connection = made_once(connection, async {
                    ConnectionManager::new(redis::Client::open(url.as_str())?).await
                })
                .await
                .map_err(not_sent)?;
                cmd.query_async(&mut connection).await
            }
            Self::Cluster { url, connection } => {
                let mut connection = made_once(connection, async {
                    redis::cluster::ClusterClient::new(vec![url.as_str()])?
                        .get_async_connection()
                        .await
                })
                .await
                .map_err(not_sent)?;
                cmd.query_async(&mut connection).await
            }
            Self::Direct(shards) => {
                let keys = steadfast::cluster::command_keys(cmd);
                let shard = DirectShard::of(shards, keys.first().map_or(&[][..], |k| &k[..]));
                let mut connection = shard.connection().await.map_err(not_sent)?;
                match cmd.query_async(&mut connection).await {
                    Err(e) if shard.follows(&e).await => {
                        let mut connection = shard.connection().await.map_err(not_sent)?;
                        cmd.query_async(&mut connection).await
                    }
                    outcome => outcome,
                }
            }
        }
    }

    pub(crate) async fn shutdown(&self) {
        match self {
            Self::Steadfast(client, _) => client.shutdown().await,
            Self::SteadfastCluster(client, _) => client.shutdown().await,
            Self::ThroughProxy { proxy, .. } => proxy.shutdown().await,
            _ => {}
        }
    }
}

/// The connection in `held`, made by `make` on first use (or again after a failed attempt),
/// as a caller of a lazily connecting client would; a failure is named by [`kind_of`].
async fn made_once<C: Clone>(
    held: &Mutex<Option<C>>,
    make: impl std::future::Future<Output = redis::RedisResult<C>>,
) -> Result<C, String> {
    let mut held = held.lock().await;
    if let Some(connection) = held.as_ref() {
        return Ok(connection.clone());
    }
    let made = make.await.map_err(|e| kind_of(&e))?;
    *held = Some(made.clone());
    Ok(made)
}

async fn set_get<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    key: &str,
    value: u64,
) -> Result<(), String> {
    set_get_raw(connection, key, value)
        .await
        .map_err(|e| kind_of(&e))
}

async fn set_get_raw<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    key: &str,
    value: u64,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(connection)
        .await?;
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<u64>>(connection)
        .await
        .map(drop)
}

/// One shard of the direct floor: a connection to the node that owns its slots. A `MOVED`
/// re-points it at the node named, as any cluster client would, so that after a failover the
/// floor carries the same load as the clients it is the floor of (writes to the new primary,
/// replicated), not cheap refusals.
pub(crate) struct DirectShard {
    address: std::sync::Mutex<String>,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl DirectShard {
    fn new(primary: std::net::SocketAddr) -> Self {
        Self {
            address: std::sync::Mutex::new(primary.to_string()),
            connection: Mutex::new(None),
        }
    }

    /// The shard of `shards` that holds `key`'s slot in the lab's layout.
    fn of<'a>(shards: &'a [Self], key: &[u8]) -> &'a Self {
        let slot = steadfast::cluster::key_slot(key);
        (0..shards.len())
            .find(|&s| crate::cluster::shard_slots(s, shards.len()).contains(&slot))
            .map_or(&shards[0], |s| &shards[s])
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let address = self
            .address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        made_once(&self.connection, async {
            redis::Client::open(format!("redis://{address}/"))?
                .get_multiplexed_async_connection()
                .await
        })
        .await
    }

    /// Whether `error` is a `MOVED` to another node, which this shard now points at (its next
    /// connection is made there).
    async fn follows(&self, error: &redis::RedisError) -> bool {
        if error.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::Moved) {
            return false;
        }
        let Some((host, port)) = error.redirect_node() else {
            return false;
        };
        let next = format!("{host}:{port}");
        let mut connection = self.connection.lock().await;
        let mut address = self.address.lock().unwrap_or_else(|e| e.into_inner());
        if *address != next {
            *address = next;
            *connection = None;
        }
        true
    }
}

/// A short name for an error, for the report: the server's code, or what kind of failure.
/// The proxy's own codes are named as the library names the same failure, so that one goal
/// reads both: `UNAVAILABLE` (not sent) and `UNKNOWNOUTCOME` whose deadline ran out are
/// `DeadlineExceeded`, any other `UNKNOWNOUTCOME` `MayHaveBeenApplied`.
fn kind_of(error: &redis::RedisError) -> String {
    let is_deadline = error.detail().is_some_and(|d| d.contains("deadline"));
    match error.code() {
        Some("UNAVAILABLE" | "UNKNOWNOUTCOME") if is_deadline => {
            return "DeadlineExceeded".to_owned();
        }
        Some("UNKNOWNOUTCOME") => return "MayHaveBeenApplied".to_owned(),
        _ => {}
    }
    if let Some(code) = error.code() {
        return code.to_owned();
    }
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    if error.is_connection_refusal() {
        return "refused".to_owned();
    }
    if error.is_connection_dropped() {
        return "connection dropped".to_owned();
    }
    format!("{:?}", error.kind())
}
