//! What one attempt of a routed command came to, and what the router does next.
//!
//! The cluster's hardest decisions (after `MOVED`, `ASK`, `LOADING`, `READONLY`, `TRYAGAIN`,
//! an unreachable node, a stalled one ...) are made here by pure functions of the attempt's
//! end and what the command has seen so far, so a table of unit tests covers them; the router
//! ([`super::router`]) only carries the steps out.

use redis::{ServerErrorKind, Value};

use super::breaker;
use super::redirect::{NodeAddress, parse_address};
use crate::command::{Reply, Request};
use crate::error::{Error, ErrorKind};
use crate::policy::retry::{self, is_cluster_refusal};

/// How one attempt on one node ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The node's link stalled and the command (idempotent) left it.
    Stalled,
    /// The node replied (error replies inside a pipeline's reply included).
    Replied(Reply),
    /// The attempt failed: the node's error reply, or the node client's own error.
    Failed(Error),
}

/// What the command knew when the attempt ended.
#[derive(Clone, Copy)]
pub(super) struct Seen<'a> {
    pub(super) request: Request<'a>,
    /// The node the attempt went to.
    pub(super) target: &'a NodeAddress,
    pub(super) is_idempotent: bool,
    /// The command's deadline has passed.
    pub(super) is_out_of_time: bool,
    /// The router is shutting down (a node's `Shutdown` then means the command's end).
    pub(super) is_shutting_down: bool,
    /// The target is a replica of the slot's shard, not its primary.
    pub(super) is_replica: bool,
    /// The command is a read replicas may serve (`ReadFrom::Replica`): their links are in
    /// `READONLY` mode, so a replica's answer says nothing about who the primary is.
    pub(super) reads_replica: bool,
    /// The target is a replica read by choice (`ReadFrom::Replica`), not a takeover probe.
    pub(super) is_replica_read: bool,
    /// Nodes this command found unreachable so far.
    pub(super) unreachable: &'a [NodeAddress],
}

/// The router's next step.
#[derive(Debug)]
pub(super) enum Step {
    /// The reply stands.
    Done(Reply),
    /// A replica asked in a takeover served the slot: it is the primary now (re-point the
    /// slot, trigger a refresh), and the reply stands.
    TakenOver(Reply),
    /// The cluster refused these commands of a pipeline (not executed) and applied the
    /// others: send the refused ones again on their own.
    SendAgain { reply: Reply, indexes: Vec<usize> },
    /// The command ends with this error.
    Fail(Error),
    /// The deadline ran out during the attempt.
    OutOfTime { is_ambiguous: bool },
    /// The node stalled: route around it, count it unreachable, trigger a refresh.
    LeaveStalled,
    /// The node could not be reached (not executed, or safe to send again): count it
    /// unreachable and trigger a refresh; when it already was (`again`), wait for a refresh.
    Unreachable { error: Error, again: bool },
    /// `MOVED`: re-point the slot at this node, trigger a refresh, send it there.
    Moved(NodeAddress),
    /// `MOVED` back to a primary this command found unreachable: the replica has not taken
    /// over yet (not executed). Ask again shortly, or the primary itself if it is back.
    NotTakenOver(NodeAddress),
    /// `ASK`: send it once to this node after `ASKING`; the table stays.
    Ask(NodeAddress),
    /// A replica read met `LOADING`: read elsewhere for a while.
    AvoidLoading,
    /// A refusal that passes (`READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`): wait for a
    /// refresh and send it again.
    AwaitRefresh,
    /// The primary is loading its data (`LOADING`): wait for a refresh and send it again. It
    /// may take longer than every redirection: the deadline bounds it.
    AwaitLoading,
}

impl Step {
    /// Whether the step spends one of the command's redirections (`cluster.redirect_limit`).
    /// Waiting out a takeover or a node that loads its data is bounded by the deadline instead.
    pub(super) fn is_redirection(&self) -> bool {
        matches!(
            self,
            Self::Moved(_) | Self::Ask(_) | Self::AvoidLoading | Self::AwaitRefresh
        )
    }
}

/// The next step after an attempt that ended as `ended`.
pub(super) fn decide(ended: Ended, seen: &Seen<'_>) -> Step {
    let error = match ended {
        Ended::Stalled => return Step::LeaveStalled,
        Ended::Failed(error)
            if error.kind() == ErrorKind::DeadlineExceeded && seen.is_out_of_time =>
        {
            let is_ambiguous = error.is_ambiguous();
            return Step::OutOfTime { is_ambiguous };
        }
        Ended::Replied(reply) => match refusals_in(&reply, seen.request) {
            Refused::Nothing if seen.is_replica && !seen.reads_replica => {
                return Step::TakenOver(reply);
            }
            Refused::Nothing => return Step::Done(reply),
            Refused::Some(indexes) => return Step::SendAgain { reply, indexes },
            // Every command refused (the slot moved, the cluster is between states): handled
            // as the refusal of the whole pipeline.
            Refused::Whole(refusal) => Error::from_redis(ErrorKind::Server, "pipeline", refusal),
        },
        Ended::Failed(error) => error,
    };
    if is_unreachable(&error) || (error.kind() == ErrorKind::Shutdown && !seen.is_shutting_down) {
        if error.is_ambiguous() && !seen.is_idempotent {
            return Step::Fail(error);
        }
        let again = seen.unreachable.contains(seen.target);
        return Step::Unreachable { error, again };
    }
    // A transaction the node aborted because it refused its commands (`MOVED`, `ASK` ...):
    // nothing ran; handled as that refusal, and the transaction sent again whole.
    let error = match transaction_refusal(&error) {
        Some(refusal) => Error::from_redis(ErrorKind::Server, "transaction", refusal),
        None => error,
    };
    let Some(redis_error) = error.redis_error() else {
        return Step::Fail(error);
    };
    match redis_error.kind() {
        redis::ErrorKind::Server(ServerErrorKind::Moved) => {
            match redirect_target(redis_error, seen.target) {
                Some(to) if seen.unreachable.contains(&to) => Step::NotTakenOver(to),
                Some(to) => Step::Moved(to),
                None => Step::Fail(error),
            }
        }
        redis::ErrorKind::Server(ServerErrorKind::Ask) => {
            match redirect_target(redis_error, seen.target) {
                Some(to) => Step::Ask(to),
                None => Step::Fail(error),
            }
        }
        redis::ErrorKind::Server(ServerErrorKind::BusyLoading) if seen.is_replica_read => {
            Step::AvoidLoading
        }
        redis::ErrorKind::Server(ServerErrorKind::BusyLoading) => Step::AwaitLoading,
        redis::ErrorKind::Server(
            ServerErrorKind::ReadOnly
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown,
        ) => Step::AwaitRefresh,
        // A blocked command the node released when it became a replica: nothing was done.
        _ if retry::is_released_by_role_change(redis_error) => Step::AwaitRefresh,
        _ => Step::Fail(error),
    }
}

/// What the shard's breaker learns from an attempt: `None` when it says nothing about the
/// shard (a deadline that fell on an attempt just begun). A transport failure or a stall
/// counts only where the command had nowhere else to go in the shard (`is_last_resort`);
/// elsewhere, and for every answer (error replies included), the shard answered.
pub(super) fn breaker_outcome(
    ended: &Ended,
    took_long: bool,
    is_last_resort: bool,
) -> Option<breaker::Outcome> {
    let failed = match ended {
        Ended::Replied(_) => false,
        Ended::Failed(error) if !is_unreachable(error) => false,
        Ended::Failed(error) => {
            if error.kind() != ErrorKind::Connect && !took_long {
                return None;
            }
            true
        }
        Ended::Stalled => true,
    };
    Some(if failed && is_last_resort {
        breaker::Outcome::TransportFailure
    } else {
        breaker::Outcome::Answered
    })
}

/// The node could not be reached (its link is down or being replaced, or the command's
/// deadline passed with no reply), as opposed to an answer.
pub(super) fn is_unreachable(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Connect | ErrorKind::DeadlineExceeded
    )
}

/// What the cluster refused in a reply.
#[derive(Debug)]
pub(super) enum Refused {
    Nothing,
    /// Every command, or a transaction: this refusal stands for the whole.
    Whole(redis::RedisError),
    /// These commands of a pipeline (the others were executed).
    Some(Vec<usize>),
}

/// The cluster refusals (`MOVED`, `ASK`, `TRYAGAIN`, `LOADING` ...: not executed) among a
/// pipeline's replies.
pub(super) fn refusals_in(reply: &Reply, request: Request<'_>) -> Refused {
    let Reply::Pipeline(values) = reply else {
        return Refused::Nothing;
    };
    let mut first: Option<redis::RedisError> = None;
    let mut indexes = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if let Value::ServerError(error) = value {
            let error: redis::RedisError = error.clone().into();
            if is_cluster_refusal(&error) {
                first.get_or_insert(error);
                indexes.push(index);
            }
        }
    }
    let Some(first) = first else {
        return Refused::Nothing;
    };
    let is_whole = match request {
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

/// The cluster refusal that made a node abort a transaction (`EXECABORT` listing a `MOVED`,
/// `ASK` ... for its commands), if that is why.
pub(super) fn transaction_refusal(error: &Error) -> Option<redis::RedisError> {
    let aborted = error
        .redis_error()
        .filter(|e| e.kind() == redis::ErrorKind::Server(ServerErrorKind::ExecAbort))?;
    crate::connect::queued_refusals(aborted)
        .into_iter()
        .find(is_cluster_refusal)
}

/// The node a `MOVED` / `ASK` names, with the answering node's host when it left it out.
pub(super) fn redirect_target(
    error: &redis::RedisError,
    answering: &NodeAddress,
) -> Option<NodeAddress> {
    // redis-rs gives the node as "host:port" and the slot.
    let (node, _slot) = error.redirect_node()?;
    let parsed = parse_address(node)?;
    Some(NodeAddress {
        host: parsed.host.or_else(|| answering.host.clone()),
        port: parsed.port,
    })
}

#[cfg(test)]
mod tests;
