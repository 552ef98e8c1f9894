//! The cluster client: routes every command to the primary of its slot, follows `MOVED` and
//! `ASK`, and keeps the routing table fresh in the background.
//!
//! # Behaviour
//! - Built from one endpoint: its name is resolved and every address is a seed (the ElastiCache
//!   configuration endpoint / MemoryDB cluster endpoint form), or from the address itself.
//! - Every node is reached through a core [`Client`](crate::Client) built from the same config
//!   (deadlines, health, TLS, credentials, maintenance), with any role accepted: reconnects,
//!   health verdicts and retry classification are the core's, not a copy. Cluster refusals come
//!   back to the router instead of being handled on the node's link.
//! - Routing: the slot of the command's keys ([`command_slot`]); a command without keys goes to
//!   any primary. `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and `TOUCH` over several slots
//!   are split per slot and joined in the caller's order (`multikey`; a split `MSET` is not
//!   atomic); any other command whose keys are in different slots is refused before sending
//!   ([`ErrorKind::CrossSlot`]). A pipeline whose keys share a slot goes as
//!   one; otherwise it is split into one pipeline per node (per slot for a node that cannot
//!   be reached or refuses the whole part), sent at the same time, and answered
//!   in the caller's order (if a part fails, the call fails and says how many parts did: the
//!   others were sent). A transaction (`MULTI`/`EXEC`) must stay in one slot. A pipeline the
//!   cluster refused only in part (`ASK` for keys already migrated, `TRYAGAIN`: not executed)
//!   has each refused command sent again on its own, in order; the others' replies stand.
//! - `MOVED`: the slot is re-pointed at once and a refresh is triggered; the command is sent to
//!   the new owner. `ASK`: the command is sent once to the named node after `ASKING`; the table
//!   is not touched. `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`: a refresh is
//!   triggered, the command waits for it (at most 250 ms per round) and is sent again. All
//!   within the command's one deadline, at most `cluster.redirect_limit` redirections (16;
//!   `LOADING` rounds not counted).
//! - Reads from replicas (opt-in: [`ReadFrom::Replica`], `read_from=replica` in the URL): every
//!   node's link sends `READONLY` at handshake; a read-only command (or pipeline of them) goes
//!   to the shard's replicas in turn, skipping one the cluster flags failing, one whose link is
//!   down or stalled, and for 1 s one that answered `LOADING`; with none usable, to the primary.
//! - A slot whose primary is unreachable (its link is down, or this command failed to reach
//!   it): the command asks the shard's replicas (not flagged failing) in turn, every `cluster.takeover_poll`
//!   (25 ms). A
//!   replica that has not taken over answers `MOVED` to the old primary (not executed); one
//!   that has serves the command, and the slot is re-pointed at it at once. Writes resume the
//!   moment the replica promotes itself, without waiting for a refresh.
//! - Topology: a check every `cluster.refresh_interval` (2 s, jittered): `CLUSTER NODES` from one node (each in turn),
//!   compared with the table. A refresh on every trigger, or when a check saw a change:
//!   `CLUSTER NODES` from up to three nodes (nodes whose link is up first; done as soon as two
//!   agree), the majority view ([`choose`]). Both through a trailing-edge gate (`cluster.refresh_min_interval`: at
//!   most 5 a second, no trigger dropped). A view with a lower epoch than the table's is refused. The
//!   table is swapped whole: commands never wait on a refresh unless their slot has no owner.
//!   Every node in the table gets its link at once (`connect` waits for the primaries').
//! - An idempotent command whose node's link stalls (the health monitor's read-stall verdict)
//!   leaves it and goes to the shard's replicas as above; the node is routed around for one
//!   read-stall threshold. Any other command waits for its reply or its deadline.
//!
//! - A node's link lost or its role changed triggers a refresh. A command waits at most 250 ms
//!   for a node's link; then the router refreshes and looks for the slot's owner again, so a
//!   command bound for a primary that died goes to the promoted replica as soon as the cluster
//!   names it, within the command's deadline. A command that may have been applied is sent again
//!   only if it is idempotent (the core's rule).
//! - Per-shard circuit breaker (by the shard's primary): a transport failure or a deadline
//!   missed counts only where the command had nowhere else to go in the shard (a replica, or a
//!   primary without a replica to ask), so a failover in progress never opens it, and a missed
//!   deadline only if the attempt it fell on had lasted 250 ms (a command whose deadline runs
//!   out while it polls a replica says nothing about the replica); every answer,
//!   error replies included, resets it. 3 failures in a row open it: the shard's commands fail
//!   at once with [`ErrorKind::NotAttempted`] (not sent, safe to retry) for 1 s, then one
//!   command probes; a failed probe opens it for twice as long, up to 8 s. Events:
//!   [`Event::ShardBreakerOpened`], [`Event::ShardBreakerClosed`]. While every breaker is
//!   closed with no failure counted, commands do not touch it (one atomic load).
//! - Per-shard queues: every node has its own core client, whose wait queue
//!   (`command.queue_capacity`) and links are its own; a stuck shard holds only its own
//!   commands.
//! - Maintenance per shard (`maintenance`): a `FAILING_OVER` on a node's link, or an
//!   Azure `NodeMaintenanceStarting` naming a node's IP and port, routes that node's commands
//!   around it from the announced start (a `FAILING_OVER`: `maintenance.azure_lead`, 1 s,
//!   before its time) until 2 s after:
//!   they poll its shard's replicas and reach the promoted one the moment it serves, held
//!   instead of failed; other shards are not touched. Relaxed timeouts on `MIGRATING` /
//!   `FAILING_OVER` are the node link's own (core).
//!
//! - A node the table no longer lists (removed from the cluster, or a seed that is not a node)
//!   has its client closed after the refresh that dropped it.
//!
//! - Transactions: one slot; a node that aborts one for a cluster refusal (`EXECABORT` listing
//!   `MOVED`, `ASK` ...: nothing ran) has it handled as that refusal and sent again whole; under
//!   `ASK`, one `ASKING` before `MULTI` covers the block.
//! - Topology from `CLUSTER NODES`, not `CLUSTER SLOTS`: it carries each node's config epoch
//!   (an older view is refused by it) and the `fail` / `fail?` flags (failing replicas are not
//!   asked). A node that is loading answers `LOADING` and is skipped that way.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::maintenance::{NOTICES, maintenance_watch};
use super::redirect::NodeAddress;
use super::refresher::refresher;
use super::router::Router;
use crate::command::Request;
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::event::Event;

/// A Redis Cluster client; see the module documentation. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), steadfast::Error> {
/// // A configuration endpoint: the name resolves to every node.
/// let config = steadfast::Config::from_url("redis://clustercfg.example.internal:6379")?;
/// let client = steadfast::cluster::ClusterClient::connect(config).await?;
/// let _: () = client.query(redis::cmd("SET").arg("{user:1}.name").arg("Ada")).await?;
/// let name: String = client.query(redis::cmd("GET").arg("{user:1}.name")).await?;
/// client.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    router: Arc<Router>,
}

impl ClusterClient {
    /// Resolves the endpoint into seeds, reads the first topology from them, and starts the
    /// background refresh. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a bad config; [`ErrorKind::Connect`] when no seed
    /// answered `CLUSTER NODES` within the command deadline.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let endpoint = &config.endpoint;
        let addresses = endpoint
            .resolver
            .resolve(&endpoint.host, endpoint.port)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Connect,
                    format!("resolving {}:{}: {e}", endpoint.host, endpoint.port),
                )
            })?;
        let seeds: Vec<NodeAddress> = addresses
            .iter()
            .map(|a| NodeAddress {
                host: Some(a.ip().to_string().into()),
                port: a.port(),
            })
            .collect();
        let (notices, notices_received) = mpsc::channel(NOTICES);
        let router = Arc::new(Router::new(config, seeds, notices));
        let deadline = Instant::now() + router.config.command.deadline;
        while router.routing().shards.is_empty() {
            router.refresh_once().await;
            if router.routing().shards.is_empty() {
                if Instant::now() >= deadline {
                    router.stop().await;
                    return Err(Error::new(
                        ErrorKind::Connect,
                        format!(
                            "no seed of {} answered CLUSTER NODES within {:?}",
                            router.config.endpoint_label(),
                            router.config.command.deadline
                        ),
                    ));
                }
                tokio::time::sleep(router.config.cluster.refresh_min_interval).await;
            }
        }
        router
            .nodes
            .dial_every_node(&router.routing(), Some(deadline))
            .await;
        router.tasks.spawn(refresher(
            Arc::downgrade(&router),
            router.config.cluster.clone(),
            router.cancel.clone(),
        ));
        router.tasks.spawn(maintenance_watch(
            Arc::downgrade(&router),
            notices_received,
            router.cancel.clone(),
        ));
        Ok(Self { router })
    }

    /// Sends one command and converts the reply.
    ///
    /// # Errors
    /// As [`Client::query`](crate::Client::query), and [`ErrorKind::CrossSlot`].
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        redis::from_redis_value(self.send(cmd).await?)
            .map_err(|e| Error::from_redis(ErrorKind::Server, "converting the reply", e.into()))
    }

    /// A [`ClusterSubscriber`](super::ClusterSubscriber): Pub/Sub whose subscriptions follow
    /// failovers and slot migrations (shard channels on their slot's primary), with a gap in
    /// its stream wherever messages may have been missed.
    ///
    /// # Errors
    /// None yet; kept for links that cannot be made up front.
    pub fn subscriber(&self) -> Result<super::ClusterSubscriber, Error> {
        Ok(super::ClusterSubscriber::start(Arc::clone(&self.router)))
    }

    /// A [`ClusterSession`](super::ClusterSession) for the slot of `key`: `WATCH` ... `MULTI`
    /// ... `EXEC` on the node that serves it, refused with [`ErrorKind::WatchLost`] instead of
    /// running unguarded when a failover, a resharding or a replaced link took the guard.
    /// Makes nothing up front: the node's session link is lent at the first `WATCH` or `MULTI`.
    pub fn session(&self, key: impl AsRef<[u8]>) -> super::ClusterSession {
        super::ClusterSession::new(Arc::clone(&self.router), super::key_slot(key.as_ref()))
    }

    /// Topology changes and every node's link events.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.router.events.subscribe()
    }

    /// Stops the refresh and every node client, and waits for their tasks.
    pub async fn shutdown(&self) {
        self.router.stop().await;
    }

    async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        if let Some(split) = super::multikey::Split::of(cmd) {
            let replies = self
                .router
                .pipeline(&split.pipeline, 0, split.parts())
                .await?;
            return split.join(replies);
        }
        Ok(self.router.run(Request::Single(cmd)).await?.into_value())
    }
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routing = self.router.routing();
        f.debug_struct("ClusterClient")
            .field("endpoint", &self.router.config.endpoint_label())
            .field("epoch", &routing.epoch)
            .field("shards", &routing.shards.len())
            .finish()
    }
}

impl ConnectionLike for ClusterClient {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.send(cmd).await.map_err(Into::into) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.router
                .pipeline(pipeline, offset, count)
                .await
                .map_err(Into::into)
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
