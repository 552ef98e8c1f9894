//! What the router needs to know of a request (its one slot, whether a replica may serve it)
//! and how it is sent after `ASKING`.

use redis::{Cmd, Pipeline, Value};
use tokio::time::Instant;

use super::keys::{Slot, command_slot};
use crate::command::{Reply, Request};
use crate::error::{Error, ErrorKind};

impl Request<'_> {
    /// Whether a replica may serve it: every command only reads; never a transaction.
    pub(super) fn is_read_only(&self) -> bool {
        use crate::policy::idempotent::is_read_only;
        match self {
            Request::Single(cmd) => is_read_only(cmd),
            Request::Pipeline { pipeline, .. } => {
                !pipeline.is_transaction() && pipeline.cmd_iter().all(is_read_only)
            }
        }
    }

    /// The one slot of every key, `Slot::Any` without keys.
    ///
    /// # Errors
    /// [`ErrorKind::CrossSlot`] when keys hash to different slots.
    pub(super) fn slot(&self) -> Result<Slot, Error> {
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

    /// Sends the request after `ASKING`, which covers only the command right after it: a
    /// pipeline gets one `ASKING` before each of its commands, and only their replies are
    /// returned.
    pub(super) async fn run_asking(
        self,
        node: &crate::Client,
        until: Instant,
    ) -> Result<Reply, Error> {
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
                other => other,
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

/// The refusal of keys in different slots, naming both.
pub(super) fn cross_slot(a: u16, b: u16) -> Error {
    Error::new(
        ErrorKind::CrossSlot,
        format!(
            "the keys hash to different slots ({a} and {b}); a cluster command or pipeline must use one slot (hash tags: {{tag}})"
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_request_has_the_one_slot_of_its_keys_and_none_without_keys() {
        let get = redis::cmd("GET").arg("{user}.a").clone();
        let ping = redis::cmd("PING").clone();
        let one = Request::Single(&get).slot().unwrap();
        assert!(matches!(one, Slot::One(_)));
        assert!(matches!(Request::Single(&ping).slot().unwrap(), Slot::Any));
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("GET")
            .arg("{user}.a")
            .cmd("GET")
            .arg("{user}.b");
        let request = Request::Pipeline {
            pipeline: &pipeline,
            offset: 0,
            count: 2,
        };
        assert_eq!(format!("{:?}", request.slot().unwrap()), format!("{one:?}"));
        pipeline.cmd("GET").arg("other");
        let request = Request::Pipeline {
            pipeline: &pipeline,
            offset: 0,
            count: 3,
        };
        assert_eq!(request.slot().err().unwrap().kind(), ErrorKind::CrossSlot);
    }

    #[test]
    fn only_reads_outside_a_transaction_may_go_to_a_replica() {
        let get = redis::cmd("GET").arg("k").clone();
        let set = redis::cmd("SET").arg("k").arg(1).clone();
        assert!(Request::Single(&get).is_read_only());
        assert!(!Request::Single(&set).is_read_only());
        let mut transaction = redis::pipe();
        transaction.atomic().cmd("GET").arg("k");
        let request = Request::Pipeline {
            pipeline: &transaction,
            offset: 0,
            count: 1,
        };
        assert!(!request.is_read_only());
    }
}
