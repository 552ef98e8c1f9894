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
//! - Maintenance per shard (`maintenance_watch`): a `FAILING_OVER` on a node's link, or an
//!   Azure `NodeMaintenanceStarting` naming a node's IP and port, routes that node's commands
//!   around it from `maintenance.azure_lead` (1 s) before the announced start until 2 s after:
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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, ServerErrorKind, Value};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::breaker::{Admission, Breaker, Change, Outcome};
use super::keys::{Slot, command_slot};
use super::redirect::NodeAddress;
use super::refresh::RefreshGate;
use super::routing::{Replica, Routing};
use super::topology::{View, choose};
use crate::command::{Reply, Request};
use crate::config::{ClusterConfig, Config, ExpectedRole, ReadFrom};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::{Event, MaintenanceNotice};

/// How long a command that asked for a refresh waits for it before going on.
const REFRESH_WAIT: Duration = Duration::from_millis(250);
/// How long a replica that answered `LOADING` gets no reads.
const LOADING_AVOID: Duration = Duration::from_secs(1);
const VIEW_TIMEOUT: Duration = Duration::from_secs(1);
const VIEWS: usize = 3;

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
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    seeds: Vec<NodeAddress>,
    routing: RwLock<Arc<Routing>>,
    nodes: Mutex<HashMap<NodeAddress, crate::Client>>,
    /// Nodes a command left stalled (or announced for maintenance), and until when to route
    /// around them.
    suspects: Arc<Mutex<HashMap<NodeAddress, Instant>>>,
    /// Some node was ever suspected: until then commands skip the lock (marks expire by time).
    has_suspects: Arc<std::sync::atomic::AtomicBool>,
    /// Turns of replica reads, spread over each shard's usable replicas.
    read_turn: std::sync::atomic::AtomicUsize,
    /// One breaker per shard, by the shard's primary.
    breakers: Mutex<HashMap<NodeAddress, Breaker>>,
    /// How many of them are not pristine: while none is, commands skip the lock.
    troubled: std::sync::atomic::AtomicUsize,
    trigger: Arc<Notify>,
    /// Maintenance notices from the nodes' links and listeners, with the node they came from.
    notices: mpsc::Sender<(NodeAddress, MaintenanceNotice)>,
    refreshed: watch::Sender<u64>,
    events: Emitter,
    cancel: CancellationToken,
    tasks: TaskTracker,
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
        let (events, _) = Emitter::new();
        let (notices, notices_received) = mpsc::channel(NOTICES);
        let inner = Arc::new(Inner {
            config,
            seeds,
            routing: RwLock::new(Arc::new(Routing::empty())),
            nodes: Mutex::new(HashMap::new()),
            suspects: Arc::new(Mutex::new(HashMap::new())),
            has_suspects: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            read_turn: std::sync::atomic::AtomicUsize::new(0),
            breakers: Mutex::new(HashMap::new()),
            troubled: std::sync::atomic::AtomicUsize::new(0),
            trigger: Arc::new(Notify::new()),
            notices,
            refreshed: watch::Sender::new(0),
            events,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let deadline = Instant::now() + inner.config.command.deadline;
        while inner.routing().shards.is_empty() {
            inner.refresh_once().await;
            if inner.routing().shards.is_empty() {
                if Instant::now() >= deadline {
                    inner.stop().await;
                    return Err(Error::new(
                        ErrorKind::Connect,
                        format!(
                            "no seed of {} answered CLUSTER NODES within {:?}",
                            inner.config.endpoint_label(),
                            inner.config.command.deadline
                        ),
                    ));
                }
                tokio::time::sleep(inner.config.cluster.refresh_min_interval).await;
            }
        }
        inner.dial_every_node(Some(deadline)).await;
        inner.tasks.spawn(refresher(
            Arc::downgrade(&inner),
            inner.config.cluster.clone(),
            inner.cancel.clone(),
        ));
        inner.tasks.spawn(maintenance_watch(
            Arc::downgrade(&inner),
            notices_received,
            inner.cancel.clone(),
        ));
        Ok(Self { inner })
    }

    /// Sends one command and converts the reply.
    ///
    /// # Errors
    /// As [`Client::query`](crate::Client::query), and [`ErrorKind::CrossSlot`].
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        redis::from_redis_value(self.send(cmd).await?)
            .map_err(|e| Error::from_redis(ErrorKind::Server, "converting the reply", e.into()))
    }

    /// Topology changes and every node's link events.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Stops the refresh and every node client, and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.stop().await;
    }

    async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        if let Some(split) = super::multikey::Split::of(cmd) {
            let replies = self.pipeline(&split.pipeline, 0, split.parts()).await?;
            return split.join(replies);
        }
        match self.run(Request::Single(cmd)).await? {
            Reply::Single(value) => Ok(value),
            Reply::Pipeline(values) => Ok(Value::Array(values)),
        }
    }

    /// A pipeline of which the cluster refused some commands (not executed: `ASK` for keys
    /// already migrated, `TRYAGAIN` ...) while the others were applied: each refused command is
    /// sent again on its own, with its own redirections, in the pipeline's order, within the
    /// deadline. If one fails, the call fails and says which (the others were applied).
    async fn send_again(
        &self,
        job: Request<'_>,
        reply: Reply,
        indexes: &[usize],
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let (Request::Pipeline { pipeline, .. }, Reply::Pipeline(mut values)) = (job, reply) else {
            return Err(Error::new(
                ErrorKind::Server,
                "a cluster refusal inside a reply that is not a pipeline's",
            ));
        };
        let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
        for &index in indexes {
            let (Some(cmd), Some(slot)) = (commands.get(index), values.get_mut(index)) else {
                continue;
            };
            match Box::pin(self.run_until(Request::Single(cmd), deadline)).await {
                Ok(Reply::Single(value)) => *slot = value,
                Ok(Reply::Pipeline(parts)) => *slot = Value::Array(parts),
                Err(error) => {
                    let message = format!(
                        "command {} of a pipeline of {} was refused by the cluster and failed when sent again (the pipeline's other commands were applied): {error}",
                        index + 1,
                        commands.len()
                    );
                    return Err(Error::new(error.kind(), message).with_source(error));
                }
            }
        }
        Ok(Reply::Pipeline(values))
    }

    /// A pipeline whose keys share one slot goes as one pipeline. Otherwise (not a transaction)
    /// it is split into one pipeline per node that owns some of its slots (a keyless command
    /// joins the first keyed one's slot), sent at the same time; the replies come back in the
    /// caller's order. If any part fails, the whole call fails with that part's error, and
    /// says how many parts failed: the other parts were sent and may have been applied.
    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, Error> {
        let job = Request::Pipeline {
            pipeline,
            offset,
            count,
        };
        match job.slot() {
            Ok(_) => return self.run(job).await.map(Reply::into_values),
            Err(error) if error.kind() != ErrorKind::CrossSlot || pipeline.is_transaction() => {
                return Err(error);
            }
            Err(_) => {}
        }
        let deadline = Instant::now() + self.inner.config.command.deadline;
        let mut values = self.split_run(pipeline, true, deadline).await?;
        Ok(values.split_off(values.len().saturating_sub(count)))
    }

    /// Runs a pipeline over several slots as parts sent at the same time: one per node that
    /// owns some of its slots (`by_node`), else one per slot, each with its own redirections;
    /// the replies in the pipeline's order. A node's part that meets an unreachable or stalled
    /// node, a breaker, or a refusal of the whole part is run again split per slot.
    async fn split_run(
        &self,
        pipeline: &Pipeline,
        by_node: bool,
        deadline: Instant,
    ) -> Result<Vec<Value>, Error> {
        let parts = if by_node && self.inner.troubled.load(Ordering::Acquire) == 0 {
            split_by_node(pipeline, &self.inner.routing())?
        } else {
            split_by_slot(pipeline)?
                .into_iter()
                .map(|(indexes, part)| (None, indexes, part))
                .collect()
        };
        let runs = parts.iter().map(|(node, indexes, part)| async move {
            let job = Request::Pipeline {
                pipeline: part,
                offset: 0,
                count: indexes.len(),
            };
            let reply = match node {
                Some(node) => self.run_on_node(node, job, deadline).await,
                None => self.run_until(job, deadline).await,
            };
            reply.map(Reply::into_values)
        });
        let results = futures_util::future::join_all(runs).await;
        let total = pipeline.cmd_iter().count();
        let mut values = vec![Value::Nil; total];
        let (mut first_error, mut failed) = (None, 0);
        for ((_, indexes, _), result) in parts.iter().zip(results) {
            match result {
                Ok(replies) => {
                    for (&index, value) in indexes.iter().zip(replies) {
                        values[index] = value;
                    }
                }
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            let message = format!(
                "{failed} of {} parts of the pipeline failed (the others were sent and may have been applied): {error}",
                parts.len()
            );
            return Err(Error::new(error.kind(), message).with_source(error));
        }
        Ok(values)
    }

    /// Sends one node's part of a pipeline (commands of several slots that node owns) once.
    /// Commands it refuses are sent again on their own; if it cannot be reached, stalls, or
    /// refuses the whole part, the part is split per slot and routed afresh (a part that may
    /// have been applied is sent again only if idempotent).
    async fn run_on_node(
        &self,
        address: &NodeAddress,
        job: Request<'_>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let Request::Pipeline { pipeline, .. } = job else {
            return self.run_until(job, deadline).await;
        };
        let per_slot = || async {
            Box::pin(self.split_run(pipeline, false, deadline))
                .await
                .map(Reply::Pipeline)
        };
        if !self.inner.is_up(address) {
            return per_slot().await;
        }
        let node = self.inner.node(address)?;
        let is_idempotent = job.is_idempotent();
        let stalled = node.stalled();
        let outcome = tokio::select! {
            biased;
            outcome = node.execute_until(job, deadline) => Some(outcome),
            () = stalled, if is_idempotent => None,
        };
        match outcome {
            None => {
                self.inner.suspect(address);
                per_slot().await
            }
            Some(Ok(reply)) => match refusals_in(&reply, job) {
                Refused::Nothing => Ok(reply),
                Refused::Some(indexes) => self.send_again(job, reply, &indexes, deadline).await,
                Refused::Whole(_) => per_slot().await,
            },
            Some(Err(error)) if error.is_ambiguous() && !is_idempotent => Err(error),
            Some(Err(error))
                if is_unreachable(&error)
                    || error.kind() == ErrorKind::Shutdown
                    || error
                        .redis_error()
                        .is_some_and(crate::policy::retry::is_cluster_refusal) =>
            {
                if Instant::now() >= deadline {
                    return Err(error);
                }
                per_slot().await
            }
            Some(Err(error)) => Err(error),
        }
    }

    async fn run(&self, job: Request<'_>) -> Result<Reply, Error> {
        // Refused commands are refused here, before any routing; blocking ones get their block
        // timeout on top of the deadline, as on a single endpoint.
        let plan = job.plan(crate::policy::effect::Destination::Cluster)?;
        let length = match Request::block_allowance(&plan) {
            Some(block) => self.inner.config.command.deadline + block,
            None => crate::command::FOREVER,
        };
        self.run_until(job, Instant::now() + length).await
    }

    async fn run_until(&self, job: Request<'_>, deadline: Instant) -> Result<Reply, Error> {
        let inner = &self.inner;
        let length = inner.config.command.deadline;
        let slot = job.slot()?;
        let is_idempotent = job.is_idempotent();
        // A read a replica may serve (`cluster.read_from`): replicas' links are in READONLY
        // mode, so a replica's answer to it says nothing about who the primary is.
        let reads_replica =
            inner.config.cluster.read_from == ReadFrom::Replica && job.is_read_only();
        let mut ask: Option<NodeAddress> = None;
        let mut last_error: Option<Error> = None;
        let mut redirects = 0;
        // Nodes this command found unreachable: while its slot's primary is one of them, the
        // command asks the shard's replicas, one of which may already have taken over.
        let mut unreachable: Vec<NodeAddress> = Vec::new();
        let mut turn = 0;
        while redirects < inner.config.cluster.redirect_limit && Instant::now() < deadline {
            let asked = ask.take();
            let route = match &asked {
                Some(node) => Some(Route {
                    target: node.clone(),
                    primary: None,
                    has_replica_to_ask: false,
                    is_replica_read: false,
                    client: None,
                }),
                None => inner.route(slot, &mut unreachable, &mut turn, reads_replica),
            };
            let Some(Route {
                target,
                primary,
                has_replica_to_ask,
                is_replica_read,
                client,
            }) = route
            else {
                inner.refresh_and_wait(deadline, REFRESH_WAIT).await;
                continue;
            };
            let is_replica = primary.as_ref().is_some_and(|p| *p != target);
            // The shard's breaker counts a failure only where the command has nowhere else to
            // go in the shard (a replica, or a primary without a usable replica); a replica
            // read had the primary left.
            let is_last_resort = !is_replica_read && (is_replica || !has_replica_to_ask);
            let ticket = match primary {
                Some(primary) => Some(Ticket::admit(inner, primary)?),
                None => None,
            };
            let node = match client {
                Some(client) => client,
                None => inner.node(&target)?,
            };
            // The node client gives up at this command's deadline: the one timer.
            let attempt = async {
                match &asked {
                    Some(_) => job.run_asking(&node, deadline).await,
                    None => node.execute_until(job, deadline).await,
                }
            };
            // An idempotent command may leave a stalled node (sending it again elsewhere is
            // harmless); any other waits for its reply or its deadline.
            let may_leave = asked.is_none() && is_idempotent;
            let stalled = node.stalled();
            let raced = async {
                tokio::select! {
                    biased;
                    outcome = attempt => Some(outcome),
                    () = stalled, if may_leave => None,
                }
            };
            let sent_at = Instant::now();
            let outcome = raced.await;
            if let Some(ticket) = ticket {
                // A deadline that falls on an attempt just begun says nothing about the node.
                let took_long = sent_at.elapsed() >= REFRESH_WAIT;
                let verdict = match &outcome {
                    Some(Ok(_)) => Some(false),
                    Some(Err(error)) if !is_unreachable(error) => Some(false),
                    Some(Err(error)) => {
                        (error.kind() == ErrorKind::Connect || took_long).then_some(true)
                    }
                    None => Some(true),
                };
                match verdict {
                    Some(true) if is_last_resort => ticket.record(Outcome::TransportFailure),
                    Some(_) => ticket.record(Outcome::Answered),
                    None => drop(ticket),
                }
            }
            let error = match outcome {
                Some(Err(error))
                    if error.kind() == ErrorKind::DeadlineExceeded
                        && Instant::now() >= deadline =>
                {
                    return Err(Error::deadline(
                        length,
                        error.is_ambiguous(),
                        last_error.as_ref(),
                        None,
                    ));
                }
                None => {
                    debug!(?target, "node stalled; asking the shard's replicas");
                    inner.suspect(&target);
                    if !unreachable.contains(&target) {
                        unreachable.push(target);
                    }
                    inner.trigger.notify_one();
                    continue;
                }
                Some(Ok(reply)) => match refusals_in(&reply, job) {
                    Refused::Nothing => {
                        if is_replica
                            && !reads_replica
                            && let Slot::One(slot) = slot
                        {
                            // The replica served the slot: it is the primary now.
                            inner.moved(slot, target);
                            inner.trigger.notify_one();
                        }
                        return Ok(reply);
                    }
                    // Every command refused (the slot moved, the cluster is between states):
                    // handled as the refusal of the whole pipeline.
                    Refused::Whole(refusal) => {
                        Error::from_redis(ErrorKind::Server, "pipeline", refusal)
                    }
                    Refused::Some(indexes) => {
                        return self.send_again(job, reply, &indexes, deadline).await;
                    }
                },
                Some(Err(error)) => error,
            };
            if is_unreachable(&error)
                || (error.kind() == ErrorKind::Shutdown && !inner.cancel.is_cancelled())
            {
                // The node is unreachable (its link is down or being replaced). Not executed,
                // or safe to send again: look for the slot's owner again.
                if error.is_ambiguous() && !is_idempotent {
                    return Err(error);
                }
                debug!(%error, ?target, "node unreachable; asking the shard's replicas");
                if unreachable.contains(&target) {
                    // Asked again for want of anyone else: pace it by the refresh.
                    inner.refresh_and_wait(deadline, REFRESH_WAIT).await;
                } else {
                    unreachable.push(target);
                    inner.trigger.notify_one();
                }
                last_error = Some(error);
                continue;
            }
            // A transaction the node aborted because it refused its commands (`MOVED`, `ASK`
            // ...): nothing ran; handled as that refusal, and the transaction sent again whole.
            let error = match transaction_refusal(&error) {
                Some(refusal) => Error::from_redis(ErrorKind::Server, "transaction", refusal),
                None => error,
            };
            let Some(redis_error) = error.redis_error() else {
                return Err(error);
            };
            redirects += 1;
            match redis_error.kind() {
                redis::ErrorKind::Server(ServerErrorKind::Moved) => {
                    let Some(to) = redirect_target(redis_error, &target) else {
                        return Err(error);
                    };
                    if unreachable.contains(&to) {
                        // A replica still names the lost primary: no takeover yet. Not
                        // executed; ask again shortly (the primary itself, if it is back).
                        redirects -= 1;
                        if inner.is_up(&to) {
                            unreachable.retain(|u| *u != to);
                        } else {
                            inner
                                .refresh_and_wait(deadline, inner.config.cluster.takeover_poll)
                                .await;
                        }
                        continue;
                    }
                    if let Slot::One(slot) = slot {
                        inner.moved(slot, to);
                    }
                    inner.trigger.notify_one();
                }
                redis::ErrorKind::Server(ServerErrorKind::Ask) => {
                    let Some(to) = redirect_target(redis_error, &target) else {
                        return Err(error);
                    };
                    ask = Some(to);
                }
                redis::ErrorKind::Server(ServerErrorKind::BusyLoading) if is_replica_read => {
                    // A replica still loading its data: read elsewhere for a second.
                    debug!(?target, "replica loading; reading elsewhere");
                    inner.suspect_for(&target, LOADING_AVOID);
                }
                redis::ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                    // A node loading its data may take longer than 16 rounds: the deadline
                    // bounds it (each round waits for a refresh).
                    redirects -= 1;
                    inner.refresh_and_wait(deadline, REFRESH_WAIT).await;
                }
                redis::ErrorKind::Server(
                    ServerErrorKind::ReadOnly
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown,
                ) => {
                    debug!(%error, "cluster refusal; waiting for a refresh");
                    inner.refresh_and_wait(deadline, REFRESH_WAIT).await;
                }
                _ => return Err(error),
            }
        }
        if let Some(last) = last_error.filter(|_| Instant::now() >= deadline) {
            return Err(Error::deadline(
                length,
                last.is_ambiguous(),
                Some(&last),
                None,
            ));
        }
        Err(Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "no node served the command within {length:?} ({} redirections at most)",
                inner.config.cluster.redirect_limit
            ),
        ))
    }
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routing = self.inner.routing();
        f.debug_struct("ClusterClient")
            .field("endpoint", &self.inner.config.endpoint_label())
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
            self.pipeline(pipeline, offset, count)
                .await
                .map_err(Into::into)
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Marks `address` to be routed around for `how_long` (a later mark never shortens one).
fn mark_suspect(
    suspects: &Mutex<HashMap<NodeAddress, Instant>>,
    has_suspects: &std::sync::atomic::AtomicBool,
    address: &NodeAddress,
    how_long: Duration,
) {
    let until = Instant::now() + how_long;
    let mut suspects = suspects.lock().unwrap_or_else(|e| e.into_inner());
    suspects.retain(|_, at| Instant::now() < *at);
    let at = suspects.entry(address.clone()).or_insert(until);
    *at = (*at).max(until);
    has_suspects.store(true, Ordering::Release);
}

/// What the router needs to know of a request, and `ASKING`.
impl Request<'_> {
    /// Whether a replica may serve it: every command only reads; never a transaction.
    fn is_read_only(&self) -> bool {
        use crate::policy::idempotent::is_read_only;
        match self {
            Request::Single(cmd) => is_read_only(cmd),
            Request::Pipeline { pipeline, .. } => {
                !pipeline.is_transaction() && pipeline.cmd_iter().all(is_read_only)
            }
        }
    }

    /// The one slot of every key, `Slot::Any` without keys.
    fn slot(&self) -> Result<Slot, Error> {
        let slots: &mut dyn Iterator<Item = Slot> = match self {
            Request::Single(cmd) => &mut std::iter::once(command_slot(cmd)),
            Request::Pipeline { pipeline, .. } => &mut pipeline.cmd_iter().map(command_slot),
        };
        let mut one: Option<u16> = None;
        for slot in slots {
            match slot {
                Slot::Any => {}
                Slot::Cross(a, b) => return Err(cross_slot(a, b)),
                Slot::One(s) => match one {
                    Some(first) if first != s => return Err(cross_slot(first, s)),
                    _ => one = Some(s),
                },
            }
        }
        Ok(one.map_or(Slot::Any, Slot::One))
    }

    /// Sends the job after `ASKING`, which covers only the command right after it: a pipeline
    /// gets one `ASKING` before each of its commands, and only their replies are returned.
    async fn run_asking(self, node: &crate::Client, until: Instant) -> Result<Reply, Error> {
        if let Request::Pipeline { pipeline, .. } = self
            && pipeline.is_transaction()
        {
            // `ASKING` before `MULTI` holds for the whole block (the server keeps it until
            // `EXEC`). The caller's framing: `EXEC`'s reply as the one value.
            let mut asking = redis::pipe();
            asking.cmd("ASKING").cmd("MULTI");
            for cmd in pipeline.cmd_iter() {
                asking.add_command(cmd.clone());
            }
            asking.cmd("EXEC");
            let count = pipeline.cmd_iter().count() + 3;
            let reply = send_whole(node, &asking, count, until).await?;
            return Ok(match reply {
                Reply::Pipeline(mut values) => Reply::Pipeline(values.pop().into_iter().collect()),
                single @ Reply::Single(_) => single,
            });
        }
        let mut asking = redis::pipe();
        let commands: Vec<&Cmd> = match self {
            Request::Single(cmd) => vec![cmd],
            Request::Pipeline { pipeline, .. } => pipeline.cmd_iter().collect(),
        };
        for cmd in &commands {
            asking.cmd("ASKING");
            asking.add_command((*cmd).clone());
        }
        let reply = send_whole(node, &asking, commands.len() * 2, until).await?;
        let Reply::Pipeline(values) = reply else {
            return Ok(reply);
        };
        let mut replies: Vec<Value> = values.into_iter().skip(1).step_by(2).collect();
        match self {
            Request::Single(_) => Ok(Reply::Single(replies.pop().unwrap_or(Value::Nil))),
            Request::Pipeline { count, .. } => {
                // The caller wants the last `count` replies (a transaction's EXEC framing).
                let keep = replies.len().saturating_sub(count);
                Ok(Reply::Pipeline(replies.split_off(keep)))
            }
        }
    }
}

/// Sends every command of `pipeline` (`count` of them) on `node` and returns every reply.
async fn send_whole(
    node: &crate::Client,
    pipeline: &Pipeline,
    count: usize,
    until: Instant,
) -> Result<Reply, Error> {
    let request = Request::Pipeline {
        pipeline,
        offset: 0,
        count,
    };
    node.execute_until(request, until).await
}

/// The cluster refusal that made a node abort a transaction (`EXECABORT` listing a `MOVED`,
/// `ASK` ... for its commands), if that is why.
fn transaction_refusal(error: &Error) -> Option<redis::RedisError> {
    let aborted = error
        .redis_error()
        .filter(|e| e.kind() == redis::ErrorKind::Server(ServerErrorKind::ExecAbort))?;
    let refusals = aborted.clone().into_server_errors()?;
    refusals
        .iter()
        .map(|(_, refusal)| redis::RedisError::from(refusal.clone()))
        .find(crate::policy::retry::is_cluster_refusal)
}

/// What the cluster refused in a reply.
enum Refused {
    Nothing,
    /// Every command, or a transaction: this refusal stands for the whole.
    Whole(redis::RedisError),
    /// These commands of a pipeline (the others were executed).
    Some(Vec<usize>),
}

/// The cluster refusals (`MOVED`, `ASK`, `TRYAGAIN`, `LOADING` ...: not executed) among a
/// pipeline's replies.
fn refusals_in(reply: &Reply, job: Request<'_>) -> Refused {
    let Reply::Pipeline(values) = reply else {
        return Refused::Nothing;
    };
    let mut first: Option<redis::RedisError> = None;
    let mut indexes = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if let Value::ServerError(error) = value {
            let error: redis::RedisError = error.clone().into();
            if crate::policy::retry::is_cluster_refusal(&error) {
                first.get_or_insert(error);
                indexes.push(index);
            }
        }
    }
    let Some(first) = first else {
        return Refused::Nothing;
    };
    let is_whole = match job {
        Request::Single(_) => true,
        Request::Pipeline { pipeline, .. } => {
            pipeline.is_transaction()
                || indexes.len() == values.len()
                || values.len() != pipeline.cmd_iter().count()
        }
    };
    if is_whole {
        Refused::Whole(first)
    } else {
        Refused::Some(indexes)
    }
}

/// The node could not be reached (its link is down or being replaced, or the command's
/// deadline passed with no reply), as opposed to an answer.
fn is_unreachable(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Connect | ErrorKind::DeadlineExceeded
    )
}

/// Where one attempt goes, from one look at the routing table.
struct Route {
    target: NodeAddress,
    /// The shard's primary; `None` for an `ASK` target (no shard's breaker applies).
    primary: Option<NodeAddress>,
    /// The shard has a replica this command could still ask.
    has_replica_to_ask: bool,
    /// A read sent to a replica by choice (`ReadFrom::Replica`), not a takeover probe.
    is_replica_read: bool,
    /// The target's node client, when the look found it (saves a second look).
    client: Option<crate::Client>,
}

/// A command admitted by its shard's breaker; reports how it ended (a probe abandoned by a
/// caller who gave up lets the next command probe).
struct Ticket<'a> {
    inner: &'a Inner,
    primary: NodeAddress,
    /// [`Admission::Pass`] or [`Admission::Probe`].
    admission: Admission,
    is_recorded: bool,
}

impl<'a> Ticket<'a> {
    /// Admits a command to the shard whose primary is `primary`, or refuses it.
    fn admit(inner: &'a Inner, primary: NodeAddress) -> Result<Self, Error> {
        let admission = if inner.troubled.load(Ordering::Acquire) == 0 {
            Admission::Pass
        } else {
            inner.with_breaker(&primary, |b| b.admit(Instant::now()))
        };
        match admission {
            Admission::Refuse => {
                // The table may have moved on (a new primary has a closed breaker).
                inner.trigger.notify_one();
                Err(Error::new(
                    ErrorKind::NotAttempted,
                    format!(
                        "no node of the shard of {primary} answered lately (its circuit breaker is open): not sent, safe to retry"
                    ),
                ))
            }
            Admission::Pass | Admission::Probe => Ok(Self {
                inner,
                primary,
                admission,
                is_recorded: false,
            }),
        }
    }

    fn record(mut self, outcome: Outcome) {
        self.is_recorded = true;
        if outcome == Outcome::Answered
            && self.admission != Admission::Probe
            && self.inner.troubled.load(Ordering::Acquire) == 0
        {
            return;
        }
        let (admission, primary) = (self.admission, &self.primary);
        let change = self
            .inner
            .with_breaker(primary, |b| b.record(Instant::now(), outcome, admission));
        let primary = self.primary.to_string();
        let event = match change {
            None => return,
            Some(Change::Opened { failures, open_for }) => {
                tracing::warn!(%primary, failures, ?open_for, "shard breaker opened");
                // The shard may have a new primary the table does not know yet.
                self.inner.trigger.notify_one();
                Event::ShardBreakerOpened {
                    primary,
                    failures,
                    open_for,
                }
            }
            Some(Change::Closed) => {
                tracing::info!(%primary, "shard breaker closed");
                Event::ShardBreakerClosed { primary }
            }
        };
        self.inner.events.emit(event);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.admission == Admission::Probe && !self.is_recorded {
            self.inner
                .with_breaker(&self.primary, Breaker::probe_abandoned);
        }
    }
}

/// One node's part of a pipeline: the node (`None`: no owner known), the commands' indexes in
/// the pipeline, and the commands.
type NodePart = (Option<NodeAddress>, Vec<usize>, Pipeline);

/// The commands of `pipeline` grouped by the node that owns their slot in `routing`, in the
/// pipeline's order: each group's node (`None`: its slot has no owner yet; such a group holds
/// one slot), its indexes in the pipeline, and a pipeline of its commands.
///
/// # Errors
/// [`ErrorKind::CrossSlot`] when one command's own keys span slots.
fn split_by_node(pipeline: &Pipeline, routing: &Routing) -> Result<Vec<NodePart>, Error> {
    let parts = group(pipeline, |slot| {
        routing
            .shard_for(slot)
            .map_or(Err(slot), |s| Ok(&s.primary))
    })?;
    Ok(parts
        .into_iter()
        .map(|(owner, indexes, part)| (owner.ok().cloned(), indexes, part))
        .collect())
}

/// The commands of `pipeline` grouped by slot, in order of first appearance: each group's
/// indexes in the pipeline and a pipeline of its commands.
///
/// # Errors
/// [`ErrorKind::CrossSlot`] when one command's own keys span slots.
fn split_by_slot(pipeline: &Pipeline) -> Result<Vec<(Vec<usize>, Pipeline)>, Error> {
    let parts = group(pipeline, |slot| slot)?;
    Ok(parts
        .into_iter()
        .map(|(_, indexes, part)| (indexes, part))
        .collect())
}

/// The commands of `pipeline` grouped by `key` of their slot, groups in order of first
/// appearance and commands in the pipeline's order: each group's key, its indexes in the
/// pipeline, and a pipeline of its commands. A keyless command joins the first keyed
/// command's slot.
fn group<K: PartialEq>(
    pipeline: &Pipeline,
    key: impl Fn(u16) -> K,
) -> Result<Vec<(K, Vec<usize>, Pipeline)>, Error> {
    let slots: Vec<Slot> = pipeline.cmd_iter().map(command_slot).collect();
    let first = slots.iter().find_map(|slot| match slot {
        Slot::One(slot) => Some(*slot),
        _ => None,
    });
    let mut parts: Vec<(K, Vec<usize>, Pipeline)> = Vec::new();
    for (index, (cmd, slot)) in pipeline.cmd_iter().zip(slots).enumerate() {
        let slot = match slot {
            Slot::One(slot) => slot,
            Slot::Any => first.unwrap_or_default(),
            Slot::Cross(a, b) => return Err(cross_slot(a, b)),
        };
        let this = key(slot);
        let at = match parts.iter().position(|(k, _, _)| *k == this) {
            Some(at) => at,
            None => {
                parts.push((this, Vec::new(), redis::pipe()));
                parts.len() - 1
            }
        };
        parts[at].1.push(index);
        parts[at].2.add_command(cmd.clone());
    }
    Ok(parts)
}

fn cross_slot(a: u16, b: u16) -> Error {
    Error::new(
        ErrorKind::CrossSlot,
        format!(
            "the keys hash to different slots ({a} and {b}); a cluster command or pipeline must use one slot (hash tags: {{tag}})"
        ),
    )
}

/// The node a `MOVED` / `ASK` names, with the answering node's host when it left it out.
fn redirect_target(error: &redis::RedisError, answering: &NodeAddress) -> Option<NodeAddress> {
    // redis-rs gives the node as "host:port" and the slot.
    let (node, _slot) = error.redirect_node()?;
    let parsed = super::redirect::parse_address(node)?;
    Some(NodeAddress {
        host: parsed.host.or_else(|| answering.host.clone()),
        port: parsed.port,
    })
}

impl Inner {
    fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Where to send a command for `slot` now, from one look at the table: the slot's primary,
    /// unless this command found it unreachable or its link is down (then it joins
    /// `unreachable`); then, in turn, a replica of its shard that is not failing and not
    /// unreachable. `None`: no shard serves the slot (wait for a refresh).
    fn route(
        &self,
        slot: Slot,
        unreachable: &mut Vec<NodeAddress>,
        turn: &mut usize,
        reads_replica: bool,
    ) -> Option<Route> {
        let routing = self.routing();
        let shard = match slot {
            Slot::One(slot) => routing.shard_for(slot)?,
            _ => routing.shards.first()?,
        };
        // A replica this command may still ask: not flagged failing, not found unreachable.
        let askable = |r: &&Replica, unreachable: &[NodeAddress]| {
            !r.is_failing && !unreachable.contains(&r.address)
        };
        if reads_replica && !shard.replicas.is_empty() {
            let usable: Vec<&NodeAddress> = shard
                .replicas
                .iter()
                .filter(|r| askable(r, unreachable) && self.is_up(&r.address))
                .map(|r| &r.address)
                .collect();
            if !usable.is_empty() {
                let at = self.read_turn.fetch_add(1, Ordering::Relaxed) % usable.len();
                return Some(Route {
                    target: usable[at].clone(),
                    primary: Some(shard.primary.clone()),
                    has_replica_to_ask: true,
                    is_replica_read: true,
                    client: None,
                });
            }
        }
        let primary = Some(shard.primary.clone());
        if !unreachable.contains(&shard.primary) {
            let (is_up, client) = self.up_client(&shard.primary);
            if is_up {
                let has_replica_to_ask = shard.replicas.iter().any(|r| askable(&r, unreachable));
                return Some(Route {
                    target: shard.primary.clone(),
                    has_replica_to_ask,
                    primary,
                    is_replica_read: false,
                    client,
                });
            }
            unreachable.push(shard.primary.clone());
        }
        let replicas: Vec<&NodeAddress> = shard
            .replicas
            .iter()
            .filter(|r| askable(r, unreachable))
            .map(|r| &r.address)
            .collect();
        let target = if replicas.is_empty() {
            // No replica to ask: the primary, whose link may come back within the deadline.
            shard.primary.clone()
        } else {
            *turn += 1;
            replicas[*turn % replicas.len()].clone()
        };
        Some(Route {
            target,
            primary,
            has_replica_to_ask: !replicas.is_empty(),
            is_replica_read: false,
            client: None,
        })
    }

    /// Runs `f` on the breaker of the shard whose primary is `primary`, keeping the count of
    /// breakers that are not pristine.
    fn with_breaker<T>(&self, primary: &NodeAddress, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = breakers.entry(primary.clone()).or_insert_with(|| {
            let cluster = &self.config.cluster;
            Breaker::new(
                cluster.breaker_threshold,
                cluster.breaker_open_min,
                cluster.breaker_open_max,
            )
        });
        let was_pristine = breaker.is_pristine();
        let result = f(breaker);
        match (was_pristine, breaker.is_pristine()) {
            (true, false) => {
                self.troubled.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.troubled.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        result
    }

    /// Whether the node's link is up (or not made yet: it is made on first use) and no
    /// command left it stalled within the last read-stall threshold.
    fn is_up(&self, address: &NodeAddress) -> bool {
        self.up_client(address).0
    }

    /// [`is_up`](Self::is_up), and the node's client when it has one.
    fn up_client(&self, address: &NodeAddress) -> (bool, Option<crate::Client>) {
        let is_suspect = self.has_suspects.load(Ordering::Acquire) && {
            let suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
            suspects
                .get(address)
                .is_some_and(|until| Instant::now() < *until)
        };
        if is_suspect {
            return (false, None);
        }
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get(address) {
            None => (true, None),
            Some(client) => (
                matches!(client.state(), crate::LinkState::Connected { .. }),
                Some(client.clone()),
            ),
        }
    }

    /// A command left `address` stalled: route around it for one read-stall threshold (its
    /// link may still look connected; the health monitor's probe could not tell).
    fn suspect(&self, address: &NodeAddress) {
        self.suspect_for(address, self.config.health.read_stall);
    }

    /// The node an Azure event names: its IP, and among several nodes there, its port.
    fn node_named(&self, event: &crate::maintenance::azure::AzureEvent) -> Option<NodeAddress> {
        let ip = event.ip_address?.to_string();
        let routing = self.routing();
        let at_ip: Vec<&NodeAddress> = routing
            .nodes()
            .filter(|address| address.host.as_deref() == Some(ip.as_str()))
            .collect();
        match at_ip.as_slice() {
            [one] => Some((*one).clone()),
            several => several
                .iter()
                .find(|a| Some(a.port) == event.non_ssl_port || Some(a.port) == event.ssl_port)
                .map(|a| (*a).clone()),
        }
    }

    /// Routes around `node` from `maintenance.azure_lead` before `start` until
    /// [`AVOID_AFTER_START`] after it (see [`maintenance_watch`]).
    fn avoid(&self, node: NodeAddress, start: Instant) {
        let begin = start
            .checked_sub(self.config.maintenance.azure_lead)
            .unwrap_or(start);
        let window =
            (start + AVOID_AFTER_START).saturating_duration_since(begin.max(Instant::now()));
        let (suspects, has_suspects) = (Arc::clone(&self.suspects), Arc::clone(&self.has_suspects));
        let (trigger, cancel) = (Arc::clone(&self.trigger), self.cancel.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(begin) => {}
            }
            tracing::info!(%node, ?window, "maintenance announced: routing around the node");
            mark_suspect(&suspects, &has_suspects, &node, window);
            trigger.notify_one();
        });
    }

    /// Routes around `address` for `how_long`.
    fn suspect_for(&self, address: &NodeAddress, how_long: Duration) {
        mark_suspect(&self.suspects, &self.has_suspects, address, how_long);
    }

    fn moved(&self, slot: u16, to: NodeAddress) {
        let mut guard = self.routing.write().unwrap_or_else(|e| e.into_inner());
        let mut patched = Routing::clone(&guard);
        patched.moved(slot, to);
        *guard = Arc::new(patched);
    }

    /// The node client for `address`, made on first use.
    fn node(&self, address: &NodeAddress) -> Result<crate::Client, Error> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = nodes.get(address) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        if config.tls.is_enabled && config.tls.server_name.is_none() {
            config.tls.server_name = Some(config.endpoint.host.clone());
        }
        config.endpoint.host = address.host.as_deref().unwrap_or_default().to_owned();
        config.endpoint.port = address.port;
        config.endpoint.role = ExpectedRole::Any;
        let client = crate::Client::cluster_node(config)?;
        let mut events = client.events();
        let (forward, cancel) = (self.events.clone(), self.cancel.clone());
        let (trigger, notices) = (Arc::clone(&self.trigger), self.notices.clone());
        let from = address.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(Event::Maintenance(notice)) => {
                            // The router acts on it, and reports it once (every node's listener
                            // hears each Azure message).
                            let _ = notices.try_send((from.clone(), notice));
                        }
                        Ok(event) => {
                            // A node's link lost or its role changed: the topology may have.
                            if matches!(event, Event::Disconnected { .. } | Event::RoleChanged { .. }) {
                                trigger.notify_one();
                            }
                            forward.forward(event);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        nodes.insert(address.clone(), client.clone());
        Ok(client)
    }

    /// Makes a node client for every node in the table that has none (their links are dialled
    /// in the background, so a replica's link is up before it takes over), and with
    /// `wait_until`, waits until then for every primary's link.
    async fn dial_every_node(&self, wait_until: Option<Instant>) {
        let routing = self.routing();
        let mut primaries = Vec::new();
        for shard in &routing.shards {
            if let Ok(client) = self.node(&shard.primary) {
                primaries.push(client);
            }
            for replica in &shard.replicas {
                let _ = self.node(&replica.address);
            }
        }
        if let Some(until) = wait_until {
            for client in primaries {
                let _ = client
                    .wait_connected(until.saturating_duration_since(Instant::now()))
                    .await;
            }
        }
    }

    /// Shuts down the node clients of nodes the table no longer lists (a node removed from the
    /// cluster, a seed that is not a node). A command still on one gets `Shutdown` from it and
    /// is routed again.
    fn retire_departed(&self) {
        let routing = self.routing();
        let listed: Vec<&NodeAddress> = routing.nodes().collect();
        let departed: Vec<(NodeAddress, crate::Client)> = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<NodeAddress> = nodes
                .keys()
                .filter(|address| !listed.contains(address))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|address| nodes.remove(&address).map(|c| (address, c)))
                .collect()
        };
        for (address, client) in departed {
            debug!(%address, "node left the table; closing its client");
            self.tasks.spawn(async move { client.shutdown().await });
        }
    }

    /// The routing may be stale: asks for a refresh and waits until one completes, at most
    /// `wait` and never past `deadline`.
    async fn refresh_and_wait(&self, deadline: Instant, wait: Duration) {
        let mut refreshed = self.refreshed.subscribe();
        self.trigger.notify_one();
        let _ = timeout_at(deadline.min(Instant::now() + wait), refreshed.changed()).await;
    }

    /// Nodes to ask for the topology: the table's (and with `with_seeds`, the seeds it does
    /// not list), rotated by the round count so that successive rounds ask different nodes,
    /// nodes whose link is up first.
    fn nodes_in_turn(&self, routing: &Routing, with_seeds: bool) -> Vec<NodeAddress> {
        let mut nodes: Vec<NodeAddress> = routing.nodes().cloned().collect();
        if with_seeds {
            for seed in &self.seeds {
                if !nodes.contains(seed) {
                    nodes.push(seed.clone());
                }
            }
        }
        let turn = usize::try_from(*self.refreshed.borrow()).unwrap_or(0);
        if !nodes.is_empty() {
            let by = turn % nodes.len();
            nodes.rotate_left(by);
        }
        nodes.sort_by_key(|address| !self.is_up(address));
        nodes
    }

    /// `address`'s `CLUSTER NODES`, parsed; `None` when it did not answer one within
    /// [`VIEW_TIMEOUT`].
    async fn view_of(&self, address: &NodeAddress) -> Option<View> {
        let node = self.node(address).ok()?;
        let question = redis::cmd("CLUSTER").arg("NODES").clone();
        let text = tokio::time::timeout(VIEW_TIMEOUT, node.query::<String>(&question))
            .await
            .ok()?
            .ok()?;
        View::parse(&text).ok()
    }

    /// The periodic check: `CLUSTER NODES` from one node (each in turn, one whose link is up),
    /// compared with the table; a full refresh ([`refresh_once`](Self::refresh_once)) only when
    /// it differs or no node answered.
    async fn check_once(&self) {
        let routing = self.routing();
        let asked = self
            .nodes_in_turn(&routing, false)
            .into_iter()
            .next()
            .filter(|address| self.is_up(address));
        let unchanged = match asked {
            Some(address) => self
                .view_of(&address)
                .await
                .is_some_and(|view| Routing::from_view(&view, &address).agrees_with(&routing)),
            None => false,
        };
        if unchanged {
            self.refreshed.send_modify(|n| *n = n.wrapping_add(1));
        } else {
            self.refresh_once().await;
        }
    }

    /// One round: `CLUSTER NODES` from up to three nodes (the table's primaries, else the
    /// seeds), the majority view, and the swap.
    async fn refresh_once(&self) {
        let routing = self.routing();
        let candidates = self.nodes_in_turn(&routing, true);
        let mut asks: futures_util::stream::FuturesUnordered<_> = candidates
            .into_iter()
            .take(VIEWS)
            .map(|address| async move { self.view_of(&address).await.map(|view| (view, address)) })
            .collect();
        // Every answer, or as soon as two agree (a majority of the three asked).
        let mut answers: Vec<(View, NodeAddress)> = Vec::new();
        let _ = tokio::time::timeout(VIEW_TIMEOUT, async {
            while let Some(answer) = asks.next().await {
                let Some((view, address)) = answer else {
                    continue;
                };
                let agrees = answers.iter().any(|(v, _)| v.layout() == view.layout());
                answers.push((view, address));
                if agrees {
                    break;
                }
            }
        })
        .await;
        let views: Vec<View> = answers.iter().map(|(v, _)| v.clone()).collect();
        if let Some(chosen) = choose(&views) {
            let answering = answers
                .iter()
                .find(|(v, _)| v == chosen)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            if chosen.epoch >= routing.epoch {
                let next = Routing::from_view(chosen, &answering);
                let is_new = next.layout_differs(&routing);
                let event = Event::TopologyChanged {
                    epoch: next.epoch,
                    shards: next.shards.len(),
                    uncovered: next.uncovered(),
                };
                *self.routing.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
                if is_new {
                    debug!(?event, "topology");
                    self.events.emit(event);
                    self.retire_departed();
                    self.dial_every_node(None).await;
                }
            } else {
                debug!(
                    epoch = chosen.epoch,
                    current = routing.epoch,
                    "refused an older view"
                );
            }
        }
        self.refreshed.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn stop(&self) {
        self.cancel.cancel();
        let nodes: Vec<crate::Client> = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for node in nodes {
            node.shutdown().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The background refresh, through the gate: a check every `cluster.refresh_interval`
/// (jittered), a full refresh on every trigger.
async fn refresher(inner: Weak<Inner>, cluster: ClusterConfig, cancel: CancellationToken) {
    let mut gate = RefreshGate::new(cluster.refresh_min_interval);
    let mut next_periodic = Instant::now() + crate::backoff::spread(cluster.refresh_interval);
    // A trigger came since the last round: the next round is a full refresh.
    let mut is_triggered = false;
    loop {
        let wake = gate
            .wake_at()
            .map_or(next_periodic, |at| at.min(next_periodic));
        // Hold only the trigger while waiting, not the client: dropping every handle ends this.
        let Some(trigger) = inner.upgrade().map(|i| Arc::clone(&i.trigger)) else {
            break;
        };
        let should_start = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_periodic {
                    next_periodic = now + crate::backoff::spread(cluster.refresh_interval);
                    gate.trigger(now)
                } else {
                    gate.poll(now)
                }
            }
            () = trigger.notified() => {
                is_triggered = true;
                gate.trigger(Instant::now())
            }
        };
        drop(trigger);
        if !should_start {
            continue;
        }
        let Some(inner) = inner.upgrade() else {
            break;
        };
        if std::mem::take(&mut is_triggered) {
            inner.refresh_once().await;
        } else {
            inner.check_once().await;
        }
        gate.finished(Instant::now());
    }
}

/// Maintenance notices waiting for the router.
const NOTICES: usize = 64;
/// How long after an announced start the announced node stays avoided, unless the cluster
/// names another primary sooner (its commands then go there).
const AVOID_AFTER_START: Duration = Duration::from_secs(2);

/// Acts on maintenance announced for one node: from `maintenance.azure_lead` before the
/// announced start (a `FAILING_OVER` on the node's link, an Azure `NodeMaintenanceStarting`
/// naming the node's IP and port) until 2 s after it, the node is routed around: its shard's
/// commands ask the shard's replicas every 25 ms (one that has not taken over answers `MOVED`,
/// not executed) and go to the new primary the moment it serves, instead of meeting the node as
/// it goes down. Other shards are not touched. Notices that a change ended (`FAILED_OVER`,
/// `MIGRATED`, `SMIGRATED`, `MOVING`, Azure `FailoverComplete` / `ScaleComplete` / `Ended`)
/// trigger a refresh. Every notice is reported once on `events()`.
async fn maintenance_watch(
    inner: Weak<Inner>,
    mut notices: mpsc::Receiver<(NodeAddress, MaintenanceNotice)>,
    cancel: CancellationToken,
) {
    use crate::maintenance::azure::AzureEventKind;
    use crate::maintenance::push::Notification;
    let mut recent: std::collections::VecDeque<crate::maintenance::azure::AzureEvent> =
        std::collections::VecDeque::new();
    loop {
        let (from, notice) = tokio::select! {
            () = cancel.cancelled() => break,
            received = notices.recv() => match received {
                Some(received) => received,
                None => break,
            },
        };
        let Some(inner) = inner.upgrade() else {
            break;
        };
        if let MaintenanceNotice::Azure(event) = &notice {
            if recent.contains(event) {
                continue;
            }
            if recent.len() == 16 {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // Recorded by the node that heard it.
        inner.events.forward(Event::Maintenance(notice.clone()));
        match notice {
            MaintenanceNotice::Push {
                notification: Notification::FailingOver { time, .. },
                ..
            } => inner.avoid(from, Instant::now() + time),
            MaintenanceNotice::Push {
                notification:
                    Notification::FailedOver { .. }
                    | Notification::Migrated { .. }
                    | Notification::SlotsMigrated { .. }
                    | Notification::Moving { .. },
                ..
            } => inner.trigger.notify_one(),
            MaintenanceNotice::Azure(event) => match event.kind {
                AzureEventKind::Starting => {
                    let start = event.start_time.map_or(Instant::now(), |at| {
                        Instant::now()
                            + at.duration_since(std::time::SystemTime::now())
                                .unwrap_or_default()
                    });
                    match inner.node_named(&event) {
                        Some(node) => inner.avoid(node, start),
                        None => debug!(?event, "maintenance for a node not in the table"),
                    }
                }
                AzureEventKind::FailoverComplete
                | AzureEventKind::ScaleComplete
                | AzureEventKind::Ended => inner.trigger.notify_one(),
                _ => {}
            },
            MaintenanceNotice::Push { .. } => {}
        }
    }
}
