//! The command path: one deadline, a wait for a healthy link, and the retry policy.
//!
//! # Behaviour
//! - Each command has one deadline (`command.deadline`, default 5 s) covering the wait for a
//!   link, every retry and the reply.
//! - While no healthy link exists, the command waits for one in a bounded queue
//!   (`command.queue_capacity`) instead of failing; when the queue is full it fails at once with
//!   [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull), not executed.
//! - Failures are classified by [`retry::decide`]; a command that may have been applied is sent
//!   again only if it is idempotent ([`idempotent`]) or the caller allowed it.
//! - The happy path is one look at the current link, one in-flight count and the redis-rs call.

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, Pipeline, RedisError, Value};
use tokio::time::{Instant, timeout_at};
use tracing::debug;

use crate::backoff::{Backoff, Jitter};
use crate::connect::Link;
use crate::error::{Error, ErrorKind};
use crate::event::{DisconnectReason, LinkState};
use crate::policy::retry::{self, Decision, Handover};
use crate::policy::{effect, idempotent};
use crate::shared::{NodeMode, Shared};
mod blocking;
mod forward;
mod journal;
mod ready;
mod refused;
mod reply;
pub(crate) mod session;
mod unblock;

pub(crate) use forward::execute as execute_encoded;
pub(crate) use reply::Reply;

/// What is being sent.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Single(&'a Cmd),
    Pipeline {
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    },
}

impl Request<'_> {
    /// Whether sending it twice is harmless ([`idempotent`]); a transaction never is.
    pub(crate) fn is_idempotent(&self) -> bool {
        match self {
            Self::Single(cmd) => idempotent::is_idempotent(cmd),
            Self::Pipeline { pipeline, .. } => {
                !pipeline.is_transaction() && pipeline.cmd_iter().all(idempotent::is_idempotent)
            }
        }
    }

    /// What it does to its link, or why it must not be sent ([`effect`]).
    pub(crate) fn plan(&self, destination: effect::Destination) -> Result<effect::Plan, Error> {
        match self {
            Self::Single(cmd) => {
                effect::plan(std::iter::once(*cmd), effect::Shape::Command, destination)
            }
            Self::Pipeline { pipeline, .. } => {
                let shape = if pipeline.is_transaction() {
                    effect::Shape::Transaction
                } else {
                    effect::Shape::Pipeline
                };
                effect::plan(pipeline.cmd_iter(), shape, destination)
            }
        }
    }

    /// How long its commands may block on the server, beyond the command deadline; `None`
    /// when one blocks for as long as it takes (a timeout of 0).
    pub(crate) fn block_allowance(plan: &effect::Plan) -> Option<Duration> {
        match plan.block {
            None => Some(Duration::ZERO),
            Some(block) => block,
        }
    }

    pub(crate) fn label(&self) -> String {
        match self {
            Self::Single(cmd) => match cmd.args_iter().next() {
                Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).to_uppercase(),
                _ => "command".to_owned(),
            },
            Self::Pipeline { pipeline, .. } => format!("pipeline of {}", pipeline.len()),
        }
    }
}

/// Sends `request` on the current link, waiting and retrying as the policy says, until its
/// deadline, or `until` if that comes first (a cluster router's deadline for the whole
/// command: one timer instead of two).
pub(crate) async fn execute(
    shared: &Shared,
    request: Request<'_>,
    is_ambiguous_allowed: bool,
    until: Option<Instant>,
) -> Result<Reply, Error> {
    // Read only for what may need it (a single command reads no clock here).
    let started = matches!(request, Request::Pipeline { .. }).then(Instant::now);
    let mut outcome = run(shared, request, is_ambiguous_allowed, until).await;
    refused::resend_in_part(
        shared,
        request,
        &mut outcome,
        is_ambiguous_allowed,
        started,
        until,
    )
    .await;
    finished(shared, request, outcome)
}

/// Counts a request's outcome, and tells of one whose outcome is unknown.
fn finished(
    shared: &Shared,
    request: Request<'_>,
    outcome: Result<Reply, Error>,
) -> Result<Reply, Error> {
    crate::metrics::command(outcome.is_ok());
    if let Err(error) = &outcome
        && error.is_ambiguous()
    {
        shared.emitter.emit(crate::event::Event::OutcomeUnknown {
            command: request.label(),
        });
    }
    outcome
}

async fn run(
    shared: &Shared,
    request: Request<'_>,
    is_ambiguous_allowed: bool,
    until: Option<Instant>,
) -> Result<Reply, Error> {
    // A cluster node's requests come from the router, which refused what must not be sent
    // before routing, and builds some of its own (ASKING, MULTI ... EXEC) that are fine.
    let plan = if shared.is_cluster_node() {
        request
            .plan(effect::Destination::Cluster)
            .unwrap_or_default()
    } else {
        request.plan(effect::Destination::SharedLink)?
    };
    let sending = Sending::new(shared, plan, is_ambiguous_allowed, until);
    if plan.block.is_some()
        && let Some(dedicated) = &shared.dedicated
    {
        return blocking::run(shared, dedicated, request, sending).await;
    }
    run_here(shared, request, sending, None).await
}

/// Sends `request`, subscription commands the subscriber built (`pubsub`), on `shared`'s own
/// link: no plan to check, and sending one again is harmless.
pub(crate) async fn subscribe(shared: &Shared, request: Request<'_>) -> Result<Reply, Error> {
    let sending = Sending::new(shared, effect::Plan::default(), true, None);
    run_here(shared, request, sending, None).await
}

/// How one request is sent: its plan, who allowed what, and its time.
#[derive(Clone, Copy)]
pub(crate) struct Sending {
    plan: effect::Plan,
    is_ambiguous_allowed: bool,
    started: Instant,
    /// The command deadline, plus what a blocking command may block.
    deadline_length: Duration,
    deadline: Instant,
    /// Only on the link of this generation (a session's `WATCH` or `MULTI` lives there): a
    /// link replaced meanwhile fails the request with [`ErrorKind::WatchLost`], never sends it
    /// on another link.
    pin: Option<u64>,
}

impl Sending {
    fn new(
        shared: &Shared,
        plan: effect::Plan,
        is_ambiguous_allowed: bool,
        until: Option<Instant>,
    ) -> Self {
        let deadline_length = match Request::block_allowance(&plan) {
            Some(block) => shared.timeouts.deadline() + block,
            None => FOREVER,
        };
        let started = Instant::now();
        let own = started + deadline_length;
        Self {
            plan,
            is_ambiguous_allowed,
            started,
            deadline_length,
            deadline: until.map_or(own, |until| until.min(own)),
            pin: None,
        }
    }
}

/// Waits for `reply` until `deadline`. A request's own deadline (not a caller's bound) follows
/// the command deadline in force while it waits: relaxed by an announced migration or
/// failover (`FAILING_OVER` ...), a command already written, a blocked `BLPOP` among them,
/// gets the relaxed deadline too instead of failing "outcome unknown" in the announced stall.
///
/// `reply` is pinned by the caller: a future passed by value would be kept twice in this
/// one's state (as the argument and as the pinned local), and every command's future is
/// allocated whole.
async fn until_deadline<F: std::future::Future>(
    shared: &Shared,
    plan: &effect::Plan,
    started: Instant,
    deadline: Instant,
    mut reply: std::pin::Pin<&mut F>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let own = |now_in_force: Duration| {
        Request::block_allowance(plan).map(|block| started + now_in_force + block)
    };
    let is_own = own(shared.timeouts.deadline()).is_some_and(|d| d == deadline)
        || own(shared.config.command.deadline).is_some_and(|d| d == deadline);
    let mut deadline = deadline;
    loop {
        match timeout_at(deadline, reply.as_mut()).await {
            Ok(output) => return Ok(output),
            Err(elapsed) => match own(shared.timeouts.deadline()) {
                Some(relaxed) if is_own && relaxed > deadline => deadline = relaxed,
                _ => return Err(elapsed),
            },
        }
    }
}

/// The error of a request pinned to a link that is gone.
fn pinned_link_gone(generation: u64) -> Error {
    Error::new(
        ErrorKind::WatchLost,
        format!("the link (generation {generation}) that held this session's state was replaced"),
    )
}

/// Sends `request` on `shared`'s own link, waiting and retrying as the policy says; as
/// `encoded` if the caller holds it so ([`forward`]: never a blocking command, the one kind
/// rewritten for a resend).
async fn run_here(
    shared: &Shared,
    request: Request<'_>,
    sending: Sending,
    encoded: Option<&[u8]>,
) -> Result<Reply, Error> {
    let Sending {
        plan,
        is_ambiguous_allowed,
        started,
        deadline_length,
        deadline,
        pin,
    } = sending;
    let original = request;
    let mut may_be_applied = false;
    let mut last_error: Option<Error> = None;
    // Boxed and made on first use: a rare path, kept out of every command's future.
    let mut busy: Option<Box<Backoff>> = None;
    let mut is_resend = false;
    loop {
        // A blocking command sent again blocks only for what is left of its wait.
        let rewritten;
        let request = match (is_resend, plan.block, original) {
            (true, Some(Some(block)), Request::Single(cmd)) => {
                let left = block.saturating_sub(started.elapsed());
                match effect::with_remaining_block(cmd, left) {
                    Some(cmd) => {
                        rewritten = cmd;
                        Request::Single(&rewritten)
                    }
                    None => original,
                }
            }
            _ => original,
        };
        let link = match (healthy_link(shared), pin) {
            (Some(link), Some(pin)) if link.generation != pin => {
                return Err(pinned_link_gone(pin));
            }
            (None, Some(pin)) => return Err(pinned_link_gone(pin)),
            (Some(link), _) => Ok(link),
            (None, None) => wait_for_link(shared, wait_bound(shared, deadline)).await,
        };
        let link = match link {
            Ok(link) => link,
            Err(WaitError::Deadline(connect_failure)) => {
                let last = last_error.or(connect_failure);
                return Err(Error::deadline(
                    deadline_length,
                    may_be_applied,
                    last.as_ref(),
                    shared.progress.describe(),
                ));
            }
            Err(WaitError::Other(error)) => return Err(error),
        };
        let was_closed_before = link.is_closed();
        let in_flight = link.activity.begin();
        // A blocking command is never batched: its batch's other replies would wait for it.
        // The shared link of a single-endpoint client batches only under heavy load
        // (ENDPOINT_BATCH_FROM, BENCHMARKS.md "Write batching on the shared link").
        let writing = match (plan.block, shared.mode) {
            (None, NodeMode::ClusterNode) => Writing::BatchedAbove(CLUSTER_BATCH_FROM),
            (None, NodeMode::Endpoint) => Writing::BatchedAbove(ENDPOINT_BATCH_FROM),
            (Some(_), _) => Writing::Alone,
        };
        let reply = std::pin::pin!(send(&link, request, writing, encoded));
        let outcome = until_deadline(shared, &plan, started, deadline, reply).await;
        drop(in_flight);
        is_resend = true;
        let error = match outcome {
            Err(_elapsed) => {
                shared.link.record_error(link.generation);
                return Err(Error::deadline(
                    deadline_length,
                    true,
                    last_error.as_ref(),
                    None,
                ));
            }
            Ok(Ok(reply)) => match refused::in_reply(&reply, request) {
                None => {
                    shared.link.record_success();
                    if plan.is_journalled {
                        replace_if_outdated(shared, &link, request, &reply);
                    }
                    return Ok(reply);
                }
                Some(error) => error,
            },
            Ok(Err(error)) => error,
        };
        let decision = if shared.is_cluster_node() && retry::is_cluster_refusal(&error) {
            // Not executed; the cluster router decides where to send it next.
            Decision::Fail
        } else {
            let handover = if was_closed_before {
                Handover::Unsent
            } else {
                Handover::Written
            };
            retry::decide(&error, handover)
        };
        match decision {
            Decision::Fail => {
                shared.link.record_success();
                return Err(Error::from_redis(
                    ErrorKind::Server,
                    &request.label(),
                    error,
                ));
            }
            Decision::WaitAndRetry if retry::is_not_ready(&error) => {
                // Read here, not on every reply: the happy path reads no clock. A readiness
                // seen between the refusal and now costs this command one more poll at most.
                let refused_at = Instant::now();
                crate::metrics::retry("not_ready");
                debug!(generation = link.generation, %error, "server not ready; polling");
                last_error = Some(Error::from_redis(
                    ErrorKind::Server,
                    &request.label(),
                    error,
                ));
                let poll = shared.config.reconnect.refused_retry;
                // Boxed: a rare path, kept out of every command's future.
                Box::pin(ready::wait(&link, refused_at, poll, deadline)).await;
            }
            Decision::WaitAndRetry => {
                crate::metrics::retry("busy");
                let pause = busy
                    .get_or_insert_with(|| Box::new(busy_backoff()))
                    .next()
                    .unwrap_or_default();
                debug!(generation = link.generation, ?pause, %error, "server busy; retrying");
                last_error = Some(Error::from_redis(
                    ErrorKind::Server,
                    &request.label(),
                    error,
                ));
                tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            }
            Decision::ReconnectAndRetry { .. } | Decision::Ambiguous if pin.is_some() => {
                // The state the request relied on dies with this link: never another link.
                link.activity.mark_closed();
                shared
                    .link
                    .reporter
                    .link_lost(link.generation, DisconnectReason::Closed(error.to_string()));
                let is_unsent = matches!(decision, Decision::ReconnectAndRetry { .. });
                if is_unsent || request.is_idempotent() {
                    return Err(pinned_link_gone(link.generation));
                }
                return Err(Error::new(
                    ErrorKind::MayHaveBeenApplied,
                    format!(
                        "{} was written to {} and the link died before the reply: it may have been applied",
                        request.label(),
                        link.address
                    ),
                )
                .with_source(error));
            }
            Decision::ReconnectAndRetry { is_read_only } => {
                crate::metrics::retry("not_executed");
                // No later command may go to this link: it died, or serves a replica now.
                link.activity.mark_closed();
                let reason = if is_read_only {
                    DisconnectReason::ReadOnly
                } else {
                    DisconnectReason::Closed(error.to_string())
                };
                shared.link.reporter.link_lost(link.generation, reason);
                last_error = Some(Error::from_redis(
                    ErrorKind::Connect,
                    &request.label(),
                    error,
                ));
                await_replacement(shared, &link, wait_bound(shared, deadline)).await;
            }
            Decision::Ambiguous => {
                link.activity.mark_closed();
                shared
                    .link
                    .reporter
                    .link_lost(link.generation, DisconnectReason::Closed(error.to_string()));
                shared.link.record_error(link.generation);
                let label = request.label();
                if !(is_ambiguous_allowed
                    || shared.config.command.is_retry_ambiguous_allowed
                    || request.is_idempotent())
                {
                    return Err(Error::new(
                        ErrorKind::MayHaveBeenApplied,
                        format!(
                            "{label} was written to {} and the link died before the reply: it may have been applied",
                            link.address
                        ),
                    )
                    .with_source(error));
                }
                may_be_applied = true;
                crate::metrics::retry("ambiguous");
                last_error = Some(Error::from_redis(ErrorKind::Connect, &label, error));
                await_replacement(shared, &link, wait_bound(shared, deadline)).await;
            }
        }
    }
}

/// Whether a single command may go out in a batch with other callers' commands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// In a batch while more than this many commands are in flight on the link (this one
    /// included); alone otherwise.
    BatchedAbove(usize),
    Alone,
}

/// Writes `request` on `link` (as `encoded`, if given); single commands are batched while
/// others are in flight.
async fn send(
    link: &Link,
    request: Request<'_>,
    writing: Writing,
    encoded: Option<&[u8]>,
) -> Result<Reply, RedisError> {
    if let Some(encoded) = encoded {
        return forward::send(link, request, encoded).await;
    }
    let mut connection = link.connection.clone();
    match request {
        // Batching pays only when another command is in flight on the link: alone, its yield
        // and task would only delay the write.
        Request::Single(cmd) if matches!(writing, Writing::BatchedAbove(from) if link.activity.in_flight() > from) => {
            link.batcher
                .send(&link.connection, cmd)
                .await
                .map(Reply::Single)
        }
        Request::Single(cmd) => match connection.send_packed_command(cmd).await? {
            Value::ServerError(error) => Err(error.into()),
            value => Ok(Reply::Single(value)),
        },
        Request::Pipeline {
            pipeline,
            offset,
            count,
        } => Ok(Reply::Pipeline(
            connection
                .send_packed_commands(pipeline, offset, count)
                .await?,
        )),
    }
}

/// Records the state commands of a request that succeeded on `link`; the published link, if
/// it was set up before they took effect, is replaced by one that replays them.
fn replace_if_outdated(shared: &Shared, link: &Link, request: Request<'_>, reply: &Reply) {
    let Some(version) = journal::record(&shared.journal, link, request, reply) else {
        return;
    };
    let current = shared.link.current();
    if let Some(current) = current.filter(|c| journal::is_outdated(c, version)) {
        tracing::info!(
            generation = current.generation,
            "link set up before a state command took effect; replacing it"
        );
        current.activity.mark_closed();
        shared
            .link
            .reporter
            .link_lost(current.generation, DisconnectReason::Outdated);
    }
}

/// Pauses before sending again to a cluster between states (TRYAGAIN, CLUSTERDOWN): 50 ms,
/// doubling to 1 s; one command waits, so no jitter. A server that is not ready (LOADING ...)
/// is polled instead ([`ready`]).
fn busy_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(1),
        Jitter::None,
        0,
    )
}

enum WaitError {
    /// The deadline ran out; carries the last connection failure, if any.
    Deadline(Option<Error>),
    Other(Error),
}

/// How long a command waits for a link. A cluster node waits briefly: the router may find the
/// slot a new primary meanwhile, and it retries within the command's deadline.
fn wait_bound(shared: &Shared, deadline: Instant) -> Instant {
    if shared.is_cluster_node() {
        deadline.min(Instant::now() + CLUSTER_NODE_WAIT)
    } else {
        deadline
    }
}

/// Commands in flight on a cluster node's link (this one included) above which a single
/// command joins a write batch (`connect::batch`). Measured (cluster throughput bench, 16 in
/// flight over 3 nodes): from 3, a node with 4 callers wrote one by one; from 1, client CPU
/// per command fell to cluster_async's.
const CLUSTER_BATCH_FROM: usize = 1;

/// Commands in flight on a single endpoint's shared link (this one included) above which a
/// single command joins a write batch. Measured (throughput bench, 2026-12-03): from 33, GET
/// and SET ran 1.7x / 1.4x of raw redis-rs at 256 in flight but p99 rose up to 2.4x at 64;
/// from 2, 16-in-flight throughput halved. From 129 batching starts only where one write per
/// command no longer keeps up (BENCHMARKS.md).
const ENDPOINT_BATCH_FROM: usize = 128;

/// See [`wait_bound`].
const CLUSTER_NODE_WAIT: Duration = Duration::from_millis(250);

/// The deadline of a command that blocks for as long as it takes (`BLPOP key 0`): the caller
/// asked to wait forever; a dead link still ends it through the health monitor.
pub(crate) const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The published link, if it is open: the happy path, no waiting.
fn healthy_link(shared: &Shared) -> Option<Arc<Link>> {
    shared.link.current().filter(|link| !link.is_closed())
}

/// Waits for a healthy link, holding a queue place, until the deadline.
async fn wait_for_link(shared: &Shared, deadline: Instant) -> Result<Arc<Link>, WaitError> {
    let Ok(_place) = shared.queue.try_acquire() else {
        return Err(WaitError::Other(Error::new(
            ErrorKind::QueueFull,
            format!(
                "{} commands are already waiting for a link to {}",
                shared.config.command.queue_capacity,
                shared.config.endpoint_label()
            ),
        )));
    };
    let mut slot = shared.link.published.clone();
    loop {
        let last_failure = {
            let current = slot.borrow_and_update();
            if let Some(failure) = &current.last_failure
                && matches!(
                    failure.kind(),
                    ErrorKind::Auth | ErrorKind::Tls | ErrorKind::Protocol
                )
            {
                // Waiting cannot fix rejected credentials or certificates, or a peer that does
                // not speak the protocol; the supervisor keeps retrying with backoff in case
                // they are being rotated or the endpoint is being replaced.
                return Err(WaitError::Other(failure.clone()));
            }
            match (&current.link, current.state) {
                (_, LinkState::Shutdown) => {
                    return Err(WaitError::Other(Error::new(
                        ErrorKind::Shutdown,
                        "the client was shut down",
                    )));
                }
                (Some(link), _) if !link.is_closed() => return Ok(Arc::clone(link)),
                _ => {}
            }
            current.last_failure.clone()
        };
        // A closed link still published means its closing has not reached the supervisor yet;
        // a short poll covers that window without a report per waiter.
        let changed = timeout_at(
            deadline.min(Instant::now() + Duration::from_millis(20)),
            slot.changed(),
        )
        .await;
        match changed {
            Ok(Ok(())) | Err(_) if Instant::now() < deadline => {}
            Ok(Ok(())) | Err(_) => return Err(WaitError::Deadline(last_failure)),
            Ok(Err(_)) => {
                return Err(WaitError::Other(Error::new(
                    ErrorKind::Shutdown,
                    "the client was shut down",
                )));
            }
        }
    }
}

/// Waits until the link of `old` is no longer the published one, or the deadline.
async fn await_replacement(shared: &Shared, old: &Link, deadline: Instant) {
    let mut slot = shared.link.published.clone();
    let _ = timeout_at(
        deadline,
        slot.wait_for(|s| {
            s.link
                .as_ref()
                .is_none_or(|l| l.generation != old.generation)
                || s.state == LinkState::Shutdown
        }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_pause_grows_to_one_second() {
        let pauses: Vec<Duration> = busy_backoff().take(10).collect();
        assert_eq!(pauses[0], Duration::from_millis(50));
        assert_eq!(pauses[1], Duration::from_millis(100));
        assert_eq!(pauses[9], Duration::from_secs(1));
    }

    #[test]
    fn pipeline_of_sets_refused_readonly_is_sent_again() {
        let mut pipe = redis::pipe();
        pipe.set("a", 1).set("b", 2);
        let readonly = || redis::parse_redis_value(b"-READONLY replica\r\n").unwrap();
        let reply = Reply::Pipeline(vec![readonly(), readonly()]);
        let request = Request::Pipeline {
            pipeline: &pipe,
            offset: 0,
            count: 2,
        };
        assert!(refused::in_reply(&reply, request).is_some());
    }
}
