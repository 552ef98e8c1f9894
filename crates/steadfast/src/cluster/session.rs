//! Sessions on a cluster: `WATCH` ... `MULTI` ... `EXEC` on the node that serves one slot.
//!
//! # Behaviour
//! - [`ClusterClient::session`](super::ClusterClient::session) makes a session for the slot of
//!   one key. Every key it is sent must be in that slot (a transaction on a cluster must be
//!   anyway): any other is refused before anything is sent ([`ErrorKind::CrossSlot`]).
//! - Outside a transaction, its commands are routed like the cluster client's own (`MOVED`,
//!   `ASK`, a failover's takeover, blocking commands on dedicated links).
//! - A `WATCH` or a `MULTI` (an atomic pipeline included) goes to a [`Session`] lent by the
//!   node that serves the slot now, and the rest of the transaction goes only there. The
//!   guard is lost, and the transaction refused with [`ErrorKind::WatchLost`] (an event and a
//!   metric too, never an `EXEC` that runs unguarded), when that node's link is replaced (the
//!   single-endpoint session's rule), when the routing table names another owner for the slot
//!   (a failover, a resharding), or when the node refuses one of its commands because the
//!   slot moved (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, an `EXEC` aborted for them: nothing
//!   ran). The next `WATCH` starts over on the new owner.
//! - A `WATCH` or `MULTI` that the node refuses before any guard exists (the table was behind)
//!   is sent again to the new owner, like any routed command, within the command deadline and
//!   `cluster.redirect_limit`; one whose owner's link is down waits (refreshing the table)
//!   until the slot has an owner whose link is up, or the deadline.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use tokio::time::Instant;

use super::attempt::{redirect_target, transaction_refusal};
use super::keys::Slot;
use super::redirect::NodeAddress;
use super::router::{REFRESH_WAIT, Router};
use crate::Session;
use crate::command::{Reply, Request};
use crate::error::{Error, ErrorKind};
use crate::policy::retry::is_cluster_refusal;

/// A session on a cluster, for one slot: `WATCH` / `MULTI` / `EXEC` on the node that serves it,
/// refused with [`ErrorKind::WatchLost`] when the guard cannot hold (see the module's
/// behaviour). Implements [`redis::aio::ConnectionLike`].
///
/// ```no_run
/// use steadfast::{ErrorKind, RedisErrorExt};
///
/// # async fn demo(client: steadfast::cluster::ClusterClient) -> Result<(), Box<dyn std::error::Error>> {
/// let mut session = client.session("{account:7}");
/// loop {
///     redis::cmd("WATCH").arg("{account:7}.balance").query_async::<()>(&mut session).await?;
///     let balance: i64 = redis::cmd("GET")
///         .arg("{account:7}.balance")
///         .query_async::<Option<i64>>(&mut session)
///         .await?
///         .unwrap_or(0);
///     let committed: Option<(i64,)> = redis::pipe()
///         .atomic()
///         .set("{account:7}.balance", balance + 10)
///         .ignore()
///         .incr("{account:7}.deposits", 1)
///         .query_async(&mut session)
///         .await
///         .or_else(|e| match e.steadfast_error().map(|e| e.kind()) {
///             // A failover or a resharding took the guard: nothing ran; start over.
///             Some(ErrorKind::WatchLost) => Ok(None),
///             _ => Err(e),
///         })?;
///     if committed.is_some() {
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ClusterSession {
    router: Arc<Router>,
    slot: u16,
    pinned: Option<Pinned>,
}

/// The node session that holds (or last held) the transaction.
struct Pinned {
    node: NodeAddress,
    session: Session,
}

impl ClusterSession {
    pub(super) fn new(router: Arc<Router>, slot: u16) -> Self {
        Self {
            router,
            slot,
            pinned: None,
        }
    }

    /// The slot this session serves.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// Sends one command and converts the reply.
    ///
    /// # Errors
    /// As [`ClusterClient::query`](super::ClusterClient::query), [`ErrorKind::CrossSlot`] for a
    /// key outside the session's slot, and [`ErrorKind::WatchLost`].
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, Error> {
        let value = self.send(Request::Single(cmd)).await?.into_value();
        redis::from_redis_value(value)
            .map_err(|e| Error::from_redis(ErrorKind::Server, "converting the reply", e.into()))
    }

    async fn send(&mut self, request: Request<'_>) -> Result<Reply, Error> {
        if let Slot::One(slot) = request.slot()?
            && slot != self.slot
        {
            return Err(Error::new(
                ErrorKind::CrossSlot,
                format!(
                    "{} was not sent: its keys are in slot {slot}, and this session serves slot \
                     {} (make a session for each slot; hash tags {{tag}} keep keys together)",
                    request.label(),
                    self.slot
                ),
            ));
        }
        let is_guarding = self
            .pinned
            .as_ref()
            .is_some_and(|p| p.session.is_guarding());
        if !is_guarding && !Session::starts_guard(request) {
            return self.router.run(request).await;
        }
        let deadline = Instant::now() + self.router.config.command.deadline;
        let mut redirections = 0;
        loop {
            let owner = self.owner(deadline, is_guarding).await?;
            self.pin(&owner).await?;
            let pinned = self
                .pinned
                .as_mut()
                .ok_or_else(|| Error::new(ErrorKind::Shutdown, "the session was closed"))?;
            let was_guarding = pinned.session.is_guarding();
            let error = match pinned.session.send(request).await {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            let aborted = transaction_refusal(&error);
            let Some(refusal) = aborted
                .as_ref()
                .or(error.redis_error())
                .filter(|e| is_cluster_refusal(e))
            else {
                return Err(error);
            };
            // The node did not run it: the slot is elsewhere, or between owners.
            match redirect_target(refusal, &pinned.node) {
                Some(to)
                    if refusal.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) =>
                {
                    self.router.moved(self.slot, to);
                }
                _ => {}
            }
            self.router.trigger.notify_one();
            if was_guarding || aborted.is_some() {
                let ends = aborted.is_some();
                return Err(pinned.session.refuse_moved(request, ends).await);
            }
            redirections += 1;
            if redirections > self.router.config.cluster.redirect_limit
                || Instant::now() >= deadline
            {
                return Err(error);
            }
            if refusal.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::Moved) {
                let pause = REFRESH_WAIT.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// The node serving the slot now. A transaction starting waits (refreshing the table)
    /// for an owner whose link is up, until `deadline`; one under way takes the table's word
    /// (its own node's session tells if its link went).
    async fn owner(&self, deadline: Instant, is_guarding: bool) -> Result<NodeAddress, Error> {
        loop {
            let owner = self
                .router
                .routing()
                .shard_for(self.slot)
                .map(|shard| shard.primary.clone());
            if let Some(owner) = owner
                && (is_guarding || self.router.nodes.is_up(&owner))
            {
                return Ok(owner);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "slot {} had no primary with a link up within the command deadline ({:?}); nothing was sent",
                        self.slot, self.router.config.command.deadline
                    ),
                ));
            }
            self.router.trigger.notify_one();
            tokio::time::sleep_until((Instant::now() + REFRESH_WAIT).min(deadline)).await;
        }
    }

    /// Makes sure the transaction goes to `owner`: a session lent there, carrying over a lost
    /// guard (and losing an active one: the old node's guard means nothing on the new one).
    async fn pin(&mut self, owner: &NodeAddress) -> Result<(), Error> {
        if self.pinned.as_ref().is_some_and(|p| p.node == *owner) {
            return Ok(());
        }
        let mut session = self.router.nodes.client(owner)?.session().await?;
        if let Some(old) = self.pinned.take() {
            tracing::info!(slot = self.slot, from = ?old.node, to = ?owner, "a cluster session follows its slot");
            session.inherit_loss(&old.session);
        }
        self.pinned = Some(Pinned {
            node: owner.clone(),
            session,
        });
        Ok(())
    }
}

impl std::fmt::Debug for ClusterSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSession")
            .field("slot", &self.slot)
            .field("node", &self.pinned.as_ref().map(|p| &p.node))
            .finish_non_exhaustive()
    }
}

impl ConnectionLike for ClusterSession {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { Ok(self.send(Request::Single(cmd)).await?.into_value()) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let request = Request::Pipeline {
                pipeline,
                offset,
                count,
            };
            Ok(self.send(request).await?.into_values())
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
