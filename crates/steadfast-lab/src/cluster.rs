//! Forming a Redis Cluster from the lab's servers: slots, introductions, replicas, and the wait
//! until every node agrees.
//!
//! # Behaviour
//! - The first `shards` servers get equal slot ranges (`CLUSTER ADDSLOTSRANGE`); every server is
//!   introduced to the first (`CLUSTER MEET`); server `shards + k` replicates primary
//!   `k % shards` (`CLUSTER REPLICATE`). Every node announces its own lab address.
//! - `form` returns when every node reports `cluster_state:ok`, knows every other node, and
//!   lists every replica with its primary, and every replica has synced; it gives up after 30 s.
//! - Administered with `redis-cli` inside each server's namespace, like the rest of the lab.

use std::time::Duration;

use steadfast::cluster::View;
use tokio::time::Instant;

use crate::LabError;
use crate::server::Server;

const FORM_LIMIT: Duration = Duration::from_secs(30);

/// A Redis Cluster in the lab: the first `shards` servers are primaries, each serving an equal
/// range of slots; the others are replicas, server `shards + k` of primary `k % shards`.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many primaries.
    pub shards: usize,
    /// `cluster-node-timeout`: how long before the cluster fails a silent node over (server
    /// default 15 s; quick runs lower it).
    pub node_timeout: Duration,
    /// `cluster-require-full-coverage`: with `true` (the server's default) every node refuses
    /// every command (`CLUSTERDOWN`) while any slot has no live owner, so one shard's outage
    /// stops them all; with `false` only the uncovered slots are refused.
    pub requires_full_coverage: bool,
}

/// Makes `servers` one cluster as `spec` says; see the module documentation.
///
/// # Errors
/// When a node refuses a step or the cluster does not settle within 30 s.
pub(crate) async fn form(servers: &[Server], spec: &ClusterSpec) -> Result<(), LabError> {
    let shards = spec.shards.max(1);
    if servers.len() < shards {
        return Err(LabError::new(format!(
            "a cluster of {shards} shards needs at least {shards} servers, the lab has {}",
            servers.len()
        )));
    }
    let slots = usize::from(steadfast::cluster::SLOTS);
    for (index, primary) in servers[..shards].iter().enumerate() {
        let range = shard_slots(index, shards);
        primary
            .cli(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &range.start().to_string(),
                &range.end().to_string(),
            ])
            .await?;
    }
    let first = servers[0].ip.to_string();
    for server in &servers[1..] {
        server.cli(&["CLUSTER", "MEET", &first, "6379"]).await?;
    }
    let deadline = Instant::now() + FORM_LIMIT;
    for server in servers {
        wait_until(server, deadline, "know every node", |info, _| {
            info.contains(&format!("cluster_known_nodes:{}", servers.len()))
        })
        .await?;
    }
    let mut ids = Vec::new();
    for primary in &servers[..shards] {
        ids.push(primary.cli(&["CLUSTER", "MYID"]).await?);
    }
    for (k, replica) in servers[shards..].iter().enumerate() {
        replica
            .cli(&["CLUSTER", "REPLICATE", &ids[k % shards]])
            .await?;
    }
    let replicas = servers.len() - shards;
    for server in servers {
        wait_until(
            server,
            deadline,
            "report the cluster ok with every replica",
            |info, view| {
                info.contains("cluster_state:ok")
                    && view
                        .nodes
                        .iter()
                        .filter(|n| !n.is_primary && n.primary_id.is_some())
                        .count()
                        == replicas
                    && view.covered_slots() == slots
            },
        )
        .await?;
    }
    // A replica that never synced has no data age the cluster trusts: it would not fail over.
    for replica in &servers[shards..] {
        loop {
            let info = replica.cli(&["INFO", "replication"]).await?;
            if info.contains("master_link_status:up") {
                break;
            }
            if Instant::now() >= deadline {
                return Err(LabError::new(format!(
                    "replica {} did not sync with its primary within {FORM_LIMIT:?}",
                    replica.label
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The node's `CLUSTER NODES` as a view.
///
/// # Errors
/// When the node does not answer or the answer cannot be read.
pub async fn view(server: &Server) -> Result<View, LabError> {
    let text = server.cli(&["CLUSTER", "NODES"]).await?;
    View::parse(&text).map_err(|e| LabError::new(format!("server {}: {e}", server.label)))
}

async fn wait_until(
    server: &Server,
    deadline: Instant,
    what: &str,
    is_done: impl Fn(&str, &View) -> bool,
) -> Result<(), LabError> {
    loop {
        let info = server.cli(&["CLUSTER", "INFO"]).await?;
        let nodes = view(server).await?;
        if is_done(&info, &nodes) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::new(format!(
                "server {} did not {what} within {FORM_LIMIT:?}: {}",
                server.label,
                info.lines().next().unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The slots that shard `index` of `shards` served when the lab formed the cluster.
pub fn shard_slots(index: usize, shards: usize) -> std::ops::RangeInclusive<u16> {
    let (shards, slots) = (shards.max(1), usize::from(steadfast::cluster::SLOTS));
    let start = index * slots / shards;
    let end = ((index + 1) * slots / shards).max(start + 1) - 1;
    u16::try_from(start).unwrap_or(u16::MAX)..=u16::try_from(end).unwrap_or(u16::MAX)
}

/// How long one node may take to answer the watcher.
const WATCH_ANSWER: Duration = Duration::from_millis(150);
/// How often the watcher asks.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// Direct connections to every node from the caller's namespace (the drill's client namespace),
/// to see what the cluster itself reports while clients run. A node that does not answer
/// within 150 ms counts as not reporting.
pub struct Watch {
    nodes: Vec<(
        std::net::SocketAddr,
        Option<redis::aio::MultiplexedConnection>,
    )>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Watch {
    /// Watches `servers`; connects on first use.
    pub fn new(servers: &[Server]) -> Self {
        Self {
            nodes: servers.iter().map(|s| (s.address(), None)).collect(),
        }
    }

    /// Every node's `CLUSTER NODES`, `None` for a node that did not answer in time.
    pub async fn views(&mut self) -> Vec<Option<View>> {
        let asks = self
            .nodes
            .iter_mut()
            .map(|(address, connection)| async move {
                let answer = tokio::time::timeout(WATCH_ANSWER, async {
                    if connection.is_none() {
                        let client = redis::Client::open(format!("redis://{address}/")).ok()?;
                        *connection = client.get_multiplexed_async_connection().await.ok();
                    }
                    let link = connection.as_mut()?;
                    let text: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(link)
                        .await
                        .ok()?;
                    View::parse(&text).ok()
                })
                .await
                .ok()
                .flatten();
                if answer.is_none() {
                    *connection = None;
                }
                answer
            });
        futures_util::future::join_all(asks).await
    }

    /// Waits until more than half of all the nodes report `slot` owned by a node other than
    /// `old`, and returns when the round that saw it began (never later than the truth).
    ///
    /// # Errors
    /// When that did not happen within `limit`.
    pub async fn new_owner(
        &mut self,
        slot: u16,
        old: std::net::Ipv4Addr,
        limit: Duration,
    ) -> Result<Instant, LabError> {
        let old = old.to_string();
        let deadline = Instant::now() + limit;
        let mut owners = Vec::new();
        while Instant::now() < deadline {
            let round = Instant::now();
            owners = self
                .views()
                .await
                .iter()
                .map(|view| {
                    view.as_ref()
                        .and_then(|v| v.owner(slot))
                        .and_then(|owner| owner.address.host.clone())
                })
                .collect();
            let moved = owners
                .iter()
                .flatten()
                .filter(|owner| ***owner != *old)
                .count();
            if moved * 2 > self.nodes.len() {
                return Ok(round);
            }
            tokio::time::sleep_until(round + WATCH_EVERY).await;
        }
        Err(LabError::new(format!(
            "no majority of the {} nodes reported a new owner of slot {slot} (was {old}) within {limit:?}; last seen: {owners:?}",
            self.nodes.len()
        )))
    }
}

/// Moves `slots` from `from` to `to` the way `redis-cli --cluster reshard` does, one slot at a
/// time: `IMPORTING` on the target, `MIGRATING` on the source, `MIGRATE` every key in batches,
/// then `SETSLOT NODE` on both. Clients meanwhile see `ASK` for keys already moved and `MOVED`
/// once a slot is done. Talks to the nodes directly from the caller's namespace.
///
/// # Errors
/// When a node refuses a step.
pub async fn migrate_slots(
    from: &Server,
    to: &Server,
    slots: std::ops::RangeInclusive<u16>,
) -> Result<(), LabError> {
    let connect = |server: &Server| {
        let address = server.address();
        let label = server.label.clone();
        async move {
            let client = redis::Client::open(format!("redis://{address}/"))
                .map_err(|e| LabError::new(format!("server {label}: {e}")))?;
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| LabError::new(format!("server {label}: {e}")))
        }
    };
    let (mut source, mut target) = (connect(from).await?, connect(to).await?);
    let id = |link: &mut redis::aio::MultiplexedConnection| {
        let mut link = link.clone();
        async move {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async::<String>(&mut link)
                .await
        }
    };
    let failed = |what: &str, e: redis::RedisError| LabError::new(format!("{what}: {e}"));
    let source_id = id(&mut source).await.map_err(|e| failed("MYID", e))?;
    let target_id = id(&mut target).await.map_err(|e| failed("MYID", e))?;
    let to_ip = to.ip.to_string();
    for slot in slots {
        redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot.to_string(), "IMPORTING", &source_id])
            .query_async::<()>(&mut target)
            .await
            .map_err(|e| failed("SETSLOT IMPORTING", e))?;
        redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot.to_string(), "MIGRATING", &target_id])
            .query_async::<()>(&mut source)
            .await
            .map_err(|e| failed("SETSLOT MIGRATING", e))?;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg(&["GETKEYSINSLOT", &slot.to_string(), "100"])
                .query_async(&mut source)
                .await
                .map_err(|e| failed("GETKEYSINSLOT", e))?;
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg(&[to_ip.as_str(), "6379", "", "0", "5000", "REPLACE", "KEYS"])
                .arg(keys)
                .query_async::<()>(&mut source)
                .await
                .map_err(|e| failed("MIGRATE", e))?;
        }
        for link in [&mut target, &mut source] {
            redis::cmd("CLUSTER")
                .arg(&["SETSLOT", &slot.to_string(), "NODE", &target_id])
                .query_async::<()>(link)
                .await
                .map_err(|e| failed("SETSLOT NODE", e))?;
        }
    }
    Ok(())
}
