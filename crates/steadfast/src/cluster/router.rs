//! The router: the parts of a cluster client, and the loop that takes one command from slot
//! to reply by carrying out the steps [`attempt::decide`] chooses.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::attempt::{self, Ended, Seen, Step};
use super::breakers::{Breakers, Ticket};
use super::keys::Slot;
use super::nodes::Nodes;
use super::redirect::NodeAddress;
use super::route::{Route, Search};
use super::routing::Routing;
use crate::command::{Reply, Request};
use crate::config::{Config, ReadFrom};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::MaintenanceNotice;

/// How long a command that asked for a refresh waits for it before going on; also how long
/// an attempt must have lasted for its missed deadline to count against the shard.
pub(super) const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a replica that answered `LOADING` gets no reads.
const LOADING_AVOID: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything a cluster client is made of; shared by its handles and its background tasks.
pub(super) struct Router {
    pub(super) config: Config,
    /// The endpoint's addresses, asked for the topology when the table's nodes do not answer.
    pub(super) seeds: Vec<NodeAddress>,
    /// The routing table, swapped whole by a refresh and patched by `MOVED`.
    pub(super) routing: RwLock<Arc<Routing>>,
    /// Every node's client, and the nodes to route around for a while.
    pub(super) nodes: Nodes,
    /// One circuit breaker per shard.
    pub(super) breakers: Breakers,
    /// Turns of replica reads, spread over each shard's usable replicas.
    pub(super) read_turn: AtomicUsize,
    /// Asks the refresher for a refresh.
    pub(super) trigger: Arc<Notify>,
    /// Counts finished refresh rounds.
    pub(super) refreshed: watch::Sender<u64>,
    pub(super) events: Emitter,
    pub(super) cancel: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Router {
    /// The router's parts, with an empty table. Maintenance notices from the nodes go to
    /// `notices` (the [`maintenance_watch`](super::maintenance::maintenance_watch)).
    pub(super) fn new(
        config: Config,
        seeds: Vec<NodeAddress>,
        notices: mpsc::Sender<(NodeAddress, MaintenanceNotice)>,
    ) -> Self {
        let (events, _) = Emitter::new();
        let trigger = Arc::new(Notify::new());
        let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
        let nodes = Nodes::new(
            config.clone(),
            events.clone(),
            Arc::clone(&trigger),
            notices,
            cancel.clone(),
            tasks.clone(),
        );
        let breakers = Breakers::new(&config.cluster, events.clone(), Arc::clone(&trigger));
        Self {
            config,
            seeds,
            routing: RwLock::new(Arc::new(Routing::empty())),
            nodes,
            breakers,
            read_turn: AtomicUsize::new(0),
            trigger,
            refreshed: watch::Sender::new(0),
            events,
            cancel,
            tasks,
        }
    }

    pub(super) fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-points `slot` at `to` in the table at once (`MOVED`, a takeover seen).
    pub(super) fn moved(&self, slot: u16, to: NodeAddress) {
        let mut guard = self.routing.write().unwrap_or_else(|e| e.into_inner());
        let mut patched = Routing::clone(&guard);
        patched.moved(slot, to);
        *guard = Arc::new(patched);
    }

    /// Runs one request with the command's deadline (plus a blocking command's block).
    pub(super) async fn run(&self, request: Request<'_>) -> Result<Reply, Error> {
        // Refused commands are refused here, before any routing; blocking ones get their block
        // timeout on top of the deadline, as on a single endpoint.
        let plan = request.plan(crate::policy::effect::Destination::Cluster)?;
        let length = match Request::block_allowance(&plan) {
            Some(block) => self.config.command.deadline + block,
            None => crate::command::FOREVER,
        };
        self.run_until(request, Instant::now() + length).await
    }

    /// Takes `request` to its slot's owner, attempt after attempt, until it is answered, fails,
    /// runs out of redirections (`cluster.redirect_limit`) or reaches `deadline`.
    pub(super) async fn run_until(
        &self,
        request: Request<'_>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let length = self.config.command.deadline;
        let slot = request.slot()?;
        let is_idempotent = request.is_idempotent();
        // Replicas' links are in READONLY mode: a replica's answer to a read says nothing about
        // who the primary is.
        let mut search = Search {
            reads_replica: self.config.cluster.read_from == ReadFrom::Replica
                && request.is_read_only(),
            unreachable: Vec::new(),
            turn: 0,
        };
        let mut ask: Option<NodeAddress> = None;
        let mut last_error: Option<Error> = None;
        let mut redirects = 0;
        let started = Instant::now();
        let mut is_resend = false;
        while redirects < self.config.cluster.redirect_limit && Instant::now() < deadline {
            // A blocking command sent again blocks only for what is left of its wait.
            let rewritten;
            let request = match request {
                Request::Single(cmd) if is_resend => match remaining_block(cmd, started) {
                    Some(cmd) => {
                        rewritten = cmd;
                        Request::Single(&rewritten)
                    }
                    None => request,
                },
                _ => request,
            };
            let asked = ask.take();
            let route = match &asked {
                Some(node) => Some(Route {
                    target: node.clone(),
                    primary: None,
                    has_replica_to_ask: false,
                    is_replica_read: false,
                    client: None,
                }),
                None => self.route(slot, &mut search),
            };
            let Some(route) = route else {
                self.refresh_and_wait(deadline, REFRESH_WAIT).await;
                continue;
            };
            let is_replica = route.primary.as_ref().is_some_and(|p| *p != route.target);
            // The shard's breaker counts a failure only where the command has nowhere else to
            // go in the shard (a replica, or a primary without a usable replica); a replica
            // read had the primary left.
            let is_last_resort =
                !route.is_replica_read && (is_replica || !route.has_replica_to_ask);
            let ticket = match route.primary {
                Some(primary) => Some(Ticket::admit(&self.breakers, primary)?),
                None => None,
            };
            let node = match route.client {
                Some(client) => client,
                None => self.nodes.client(&route.target)?,
            };
            // An idempotent command may leave a stalled node (sending it again elsewhere is
            // harmless); any other waits for its reply or its deadline.
            let may_leave = asked.is_none() && is_idempotent;
            let sent_at = Instant::now();
            is_resend = true;
            let ended = Attempt {
                node: &node,
                request,
                is_asked: asked.is_some(),
                may_leave,
                deadline,
            }
            .run()
            .await;
            if let Some(ticket) = ticket {
                let took_long = sent_at.elapsed() >= REFRESH_WAIT;
                match attempt::breaker_outcome(&ended, took_long, is_last_resort) {
                    Some(outcome) => ticket.record(outcome),
                    None => drop(ticket),
                }
            }
            let target = route.target;
            let seen = Seen {
                request,
                target: &target,
                is_idempotent,
                is_out_of_time: Instant::now() >= deadline,
                is_shutting_down: self.cancel.is_cancelled(),
                is_replica,
                reads_replica: search.reads_replica,
                is_replica_read: route.is_replica_read,
                unreachable: &search.unreachable,
            };
            let step = attempt::decide(ended, &seen);
            if step.is_redirection() {
                redirects += 1;
            }
            match step {
                Step::Done(reply) => return Ok(reply),
                Step::TakenOver(reply) => {
                    if let Slot::One(slot) = slot {
                        self.moved(slot, target);
                        self.trigger.notify_one();
                    }
                    return Ok(reply);
                }
                Step::SendAgain { reply, indexes } => {
                    return self.send_again(request, reply, &indexes, deadline).await;
                }
                Step::Fail(error) => return Err(error),
                Step::OutOfTime { is_ambiguous } => {
                    return Err(Error::deadline(
                        length,
                        is_ambiguous,
                        last_error.as_ref(),
                        None,
                    ));
                }
                Step::LeaveStalled => {
                    debug!(?target, "node stalled; asking the shard's replicas");
                    self.nodes.suspect(&target);
                    search.mark_unreachable(target);
                    self.trigger.notify_one();
                }
                Step::Unreachable { error, again } => {
                    debug!(%error, ?target, "node unreachable; asking the shard's replicas");
                    if again {
                        // Asked again for want of anyone else: pace it by the refresh.
                        self.refresh_and_wait(deadline, REFRESH_WAIT).await;
                    } else {
                        search.mark_unreachable(target);
                        self.trigger.notify_one();
                    }
                    last_error = Some(error);
                }
                Step::Moved(to) => {
                    if let Slot::One(slot) = slot {
                        self.moved(slot, to);
                    }
                    self.trigger.notify_one();
                }
                Step::NotTakenOver(primary) => {
                    if self.nodes.is_up(&primary) {
                        search.unreachable.retain(|u| *u != primary);
                    } else {
                        let poll = self.config.cluster.takeover_poll;
                        self.refresh_and_wait(deadline, poll).await;
                    }
                }
                Step::Ask(to) => ask = Some(to),
                Step::AvoidLoading => {
                    debug!(?target, "replica loading; reading elsewhere");
                    self.nodes.suspect_for(&target, LOADING_AVOID);
                }
                Step::AwaitRefresh | Step::AwaitLoading => {
                    debug!(?target, ?step, "cluster refusal; waiting for a refresh");
                    self.refresh_and_wait(deadline, REFRESH_WAIT).await;
                }
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
                "command deadline of {length:?} ran out before any node served the command ({} redirections at most)",
                self.config.cluster.redirect_limit
            ),
        ))
    }

    /// Stops the background tasks and every node client, and waits for them.
    pub(super) async fn stop(&self) {
        self.cancel.cancel();
        self.nodes.shut_every_client().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// One attempt of a request on one node.
pub(super) struct Attempt<'a> {
    pub(super) node: &'a crate::Client,
    pub(super) request: Request<'a>,
    /// Sent after `ASKING` (an `ASK` redirection).
    pub(super) is_asked: bool,
    /// Left as [`Ended::Stalled`] when the node's link stalls.
    pub(super) may_leave: bool,
    /// The node client gives up then: the one timer.
    pub(super) deadline: Instant,
}

impl Attempt<'_> {
    pub(super) async fn run(self) -> Ended {
        let Self {
            node,
            request,
            is_asked,
            may_leave,
            deadline,
        } = self;
        let attempt = async {
            if is_asked {
                request.run_asking(node, deadline).await
            } else {
                node.execute_until(request, deadline).await
            }
        };
        let stalled = node.stalled();
        tokio::select! {
            biased;
            outcome = attempt => match outcome {
                Ok(reply) => Ended::Replied(reply),
                Err(error) => Ended::Failed(error),
            },
            () = stalled, if may_leave => Ended::Stalled,
        }
    }
}

/// `cmd`, if it blocks with a timeout, rewritten to block only for what is left of it since
/// `started`.
fn remaining_block(cmd: &redis::Cmd, started: Instant) -> Option<redis::Cmd> {
    use crate::policy::effect::{self, Effect};
    let Effect::Blocking(Some(block)) = effect::effect(cmd) else {
        return None;
    };
    effect::with_remaining_block(cmd, block.saturating_sub(started.elapsed()))
}
