//! Pipelines over several slots: split by the node that owns each slot (or by slot), sent at
//! the same time, answered in the caller's order; and the commands of a pipeline the cluster
//! refused in part, sent again on their own.

use redis::{Cmd, Pipeline, Value};
use tokio::time::Instant;

use super::attempt::{Ended, Refused, is_unreachable, refusals_in};
use super::keys::{Slot, command_slot};
use super::redirect::NodeAddress;
use super::request::cross_slot;
use super::router::{Attempt, Router};
use super::routing::Routing;
use crate::command::{Reply, Request};
use crate::error::{Error, ErrorKind};

/// How a pipeline over several slots is cut.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    /// One part per node that owns some of its slots (one round trip per node).
    ByNode,
    /// One part per slot, each routed on its own (after a node's part met trouble).
    BySlot,
}

/// One node's part of a pipeline: the node (`None`: no owner known), the commands' indexes in
/// the pipeline, and the commands.
type NodePart = (Option<NodeAddress>, Vec<usize>, Pipeline);

impl Router {
    /// A pipeline whose keys share one slot goes as one pipeline. Otherwise (not a transaction)
    /// it is split into one pipeline per node that owns some of its slots (a keyless command
    /// joins the first keyed one's slot), sent at the same time; the replies come back in the
    /// caller's order. If any part fails, the whole call fails with that part's error, and
    /// says how many parts failed: the other parts were sent and may have been applied.
    pub(super) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, Error> {
        let request = Request::Pipeline {
            pipeline,
            offset,
            count,
        };
        match request.slot() {
            Ok(_) => return self.run(request).await.map(Reply::into_values),
            Err(error) if error.kind() != ErrorKind::CrossSlot || pipeline.is_transaction() => {
                return Err(error);
            }
            Err(_) => {}
        }
        let deadline = Instant::now() + self.config.command.deadline;
        let mut values = self.split_run(pipeline, Cut::ByNode, deadline).await?;
        Ok(values.split_off(values.len().saturating_sub(count)))
    }

    /// Runs a pipeline over several slots as parts sent at the same time, each with its own
    /// redirections; the replies in the pipeline's order. A node's part that meets an
    /// unreachable or stalled node, a breaker, or a refusal of the whole part is run again cut
    /// by slot. While some shard's breaker is troubled, the cut is by slot from the start.
    async fn split_run(
        &self,
        pipeline: &Pipeline,
        cut: Cut,
        deadline: Instant,
    ) -> Result<Vec<Value>, Error> {
        let parts = if cut == Cut::ByNode && !self.breakers.is_troubled() {
            split_by_node(pipeline, &self.routing())?
        } else {
            split_by_slot(pipeline)?
                .into_iter()
                .map(|(indexes, part)| (None, indexes, part))
                .collect()
        };
        let runs = parts.iter().map(|(node, indexes, part)| async move {
            let request = Request::Pipeline {
                pipeline: part,
                offset: 0,
                count: indexes.len(),
            };
            let reply = match node {
                Some(node) => self.run_on_node(node, request, deadline).await,
                None => self.run_until(request, deadline).await,
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
    /// refuses the whole part, the part is cut by slot and routed afresh (a part that may
    /// have been applied is sent again only if idempotent).
    async fn run_on_node(
        &self,
        address: &NodeAddress,
        request: Request<'_>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let Request::Pipeline { pipeline, .. } = request else {
            return self.run_until(request, deadline).await;
        };
        let by_slot = || async {
            Box::pin(self.split_run(pipeline, Cut::BySlot, deadline))
                .await
                .map(Reply::Pipeline)
        };
        if !self.nodes.is_up(address) {
            return by_slot().await;
        }
        let node = self.nodes.client(address)?;
        let is_idempotent = request.is_idempotent();
        let ended = Attempt {
            node: &node,
            request,
            is_asked: false,
            may_leave: is_idempotent,
            deadline,
        }
        .run()
        .await;
        match ended {
            Ended::Stalled => {
                self.nodes.suspect(address);
                by_slot().await
            }
            Ended::Replied(reply) => match refusals_in(&reply, request) {
                Refused::Nothing => Ok(reply),
                Refused::Some(indexes) => self.send_again(request, reply, &indexes, deadline).await,
                Refused::Whole(_) => by_slot().await,
            },
            Ended::Failed(error) if error.is_ambiguous() && !is_idempotent => Err(error),
            Ended::Failed(error)
                if is_unreachable(&error)
                    || error.kind() == ErrorKind::Shutdown
                    || error
                        .redis_error()
                        .is_some_and(crate::policy::retry::is_cluster_refusal) =>
            {
                if Instant::now() >= deadline {
                    return Err(error);
                }
                by_slot().await
            }
            Ended::Failed(error) => Err(error),
        }
    }

    /// A pipeline of which the cluster refused some commands (not executed: `ASK` for keys
    /// already migrated, `TRYAGAIN` ...) while the others were applied: each refused command is
    /// sent again on its own, with its own redirections, in the pipeline's order, within the
    /// deadline. If one fails, the call fails and says which (the others were applied).
    pub(super) async fn send_again(
        &self,
        request: Request<'_>,
        reply: Reply,
        indexes: &[usize],
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let (Request::Pipeline { pipeline, .. }, Reply::Pipeline(mut values)) = (request, reply)
        else {
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
                Ok(reply) => *slot = reply.into_value(),
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
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cluster::key_slot;

    #[test]
    fn a_pipeline_is_grouped_by_slot_in_order_of_first_appearance_with_keyless_commands_joining_the_first_slot()
     {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("GET")
            .arg("{a}1")
            .cmd("PING")
            .cmd("GET")
            .arg("{b}1")
            .cmd("GET")
            .arg("{a}2");
        let parts = split_by_slot(&pipeline).unwrap();
        let indexes: Vec<Vec<usize>> = parts.iter().map(|(i, _)| i.clone()).collect();
        assert_eq!(indexes, vec![vec![0, 1, 3], vec![2]]);
        assert_eq!(parts[0].1.cmd_iter().count(), 3);
        assert_ne!(key_slot(b"a"), key_slot(b"b"));
    }

    #[test]
    fn a_command_whose_own_keys_span_slots_is_refused_before_anything_is_sent() {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("GET")
            .arg("a")
            .cmd("DEL")
            .arg("foo")
            .arg("bar");
        let error = split_by_slot(&pipeline).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::CrossSlot);
    }
}
