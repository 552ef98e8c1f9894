//! Commands the server refused unexecuted inside a pipeline's reply (`READONLY`, `LOADING`,
//! `BUSY` ...): sending them again is safe whatever they are.

use redis::{Cmd, Pipeline, RedisError, Value};
use tokio::time::Instant;

use super::{Reply, Request};
use crate::error::Error;
use crate::policy::retry;
use crate::shared::Shared;

/// A pipeline whose failed commands were all refused unexecuted (and whose other commands are
/// idempotent) is as good as not sent: it is sent again whole.
pub(super) fn in_reply(reply: &Reply, request: Request<'_>) -> Option<RedisError> {
    let Reply::Pipeline(values) = reply else {
        return None;
    };
    let mut refusal = None;
    for value in values {
        if let Value::ServerError(error) = value {
            let error: RedisError = error.clone().into();
            if !retry::is_not_executed(&error) {
                return None;
            }
            refusal.get_or_insert(error);
        }
    }
    refusal.filter(|_| request.is_idempotent() || values.iter().all(is_server_error))
}

fn is_server_error(value: &Value) -> bool {
    matches!(value, Value::ServerError(_))
}

/// A pipeline's commands refused in part (see [`resend`]) sent again, within the
/// deadline of a pipeline `started` then (and `until`, if it comes first).
pub(super) async fn resend_in_part(
    shared: &Shared,
    request: Request<'_>,
    outcome: &mut Result<Reply, Error>,
    is_ambiguous_allowed: bool,
    started: Option<Instant>,
    until: Option<Instant>,
) {
    if let (Ok(Reply::Pipeline(values)), Request::Pipeline { pipeline, .. }, Some(started)) =
        (outcome, request, started)
        && !pipeline.is_transaction()
        && !shared.is_cluster_node()
    {
        let own = started + shared.timeouts.deadline();
        let deadline = until.map_or(own, |until| until.min(own));
        resend(shared, pipeline, values, is_ambiguous_allowed, deadline).await;
    }
}

/// The commands of a pipeline that the server refused unexecuted while the others ran (a
/// demotion midway: `READONLY` from there on; `LOADING`, `BUSY` ...) are sent again, in order,
/// as a pipeline of their own within `deadline`, and their replies take the refusals' places.
/// Safe whatever they are, since they were not executed; the commands that ran are never sent
/// again. (A pipeline refused whole is sent again by [`super::run`] itself.) Where the deadline runs
/// out first, the refusals stay in the reply.
pub(super) async fn resend(
    shared: &Shared,
    pipeline: &Pipeline,
    values: &mut [Value],
    is_ambiguous_allowed: bool,
    deadline: Instant,
) {
    // Nearly every pipeline: nothing refused, nothing to set up.
    if !values.iter().any(is_server_error) {
        return;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    if commands.len() != values.len() {
        return;
    }
    // Each round sends fewer commands, or stops.
    loop {
        let refused: Vec<usize> = values
            .iter()
            .enumerate()
            .filter(|(_, value)| match value {
                Value::ServerError(error) => retry::is_not_executed(&error.clone().into()),
                _ => false,
            })
            .map(|(at, _)| at)
            .collect();
        if refused.is_empty() || Instant::now() >= deadline {
            return;
        }
        let mut again = redis::pipe();
        for &at in &refused {
            again.add_command(commands[at].clone());
        }
        let request = Request::Pipeline {
            pipeline: &again,
            offset: 0,
            count: refused.len(),
        };
        let Ok(reply) = Box::pin(super::run(
            shared,
            request,
            is_ambiguous_allowed,
            Some(deadline),
        ))
        .await
        else {
            return;
        };
        let replies = reply.into_values();
        let is_progress = replies.iter().any(|v| !matches!(v, Value::ServerError(_)));
        for (at, value) in refused.into_iter().zip(replies) {
            values[at] = value;
        }
        if !is_progress {
            return;
        }
    }
}
