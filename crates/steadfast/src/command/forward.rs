//! Requests sent as the caller encoded them, answered with the server's own bytes.
//!
//! # Behaviour
//! - A request the caller also holds encoded (a proxy's client sent it so) is written as those
//!   bytes, and its replies come back as the server's frames, untouched ([`Reply::Frames`]):
//!   nothing packed, decoded or encoded again.
//! - Only a reply with no error in it is kept as bytes: one with an error frame (or an
//!   attribute, which annotates a reply) is decoded, and the command path reads it as any other
//!   reply (a refusal is sent again, a single command's error is its failure ...).
//! - Everything else is the command path's: the plan, the deadline, the waits and the retry
//!   policy. A request rewritten for a resend (a blocking command's remaining timeout) is packed
//!   anew; blocking commands and transactions are never sent from the caller's bytes. A
//!   pipeline refused in part (a demotion midway) has its refused commands sent again, as
//!   [`super::execute`] does.

use redis::{RedisError, Value};

use super::{Reply, Request, Sending, effect};
use crate::connect::{Link, wire};
use crate::error::Error;
use crate::shared::Shared;

/// [`super::execute`] for a request the caller holds encoded as `encoded` (every command of it,
/// in order, as RESP).
pub(crate) async fn execute(
    shared: &Shared,
    request: Request<'_>,
    encoded: &[u8],
    is_ambiguous_allowed: bool,
) -> Result<Reply, Error> {
    let is_transaction =
        matches!(request, Request::Pipeline { pipeline, .. } if pipeline.is_transaction());
    let plan = request.plan(effect::Destination::SharedLink)?;
    if plan.block.is_some() || is_transaction || shared.is_cluster_node() {
        return super::execute(shared, request, is_ambiguous_allowed, None).await;
    }
    let sending = Sending::new(shared, plan, is_ambiguous_allowed, None);
    // As `super::execute`: a pipeline refused in part has its refused commands sent again.
    let started = matches!(request, Request::Pipeline { .. }).then_some(sending.started);
    let mut outcome = super::run_here(shared, request, sending, Some(encoded)).await;
    super::refused::resend_in_part(
        shared,
        request,
        &mut outcome,
        is_ambiguous_allowed,
        started,
        None,
    )
    .await;
    super::finished(shared, request, outcome)
}

/// Writes `encoded` on `link` for `request`: its replies' bytes, or decoded where they hold an
/// error.
pub(super) async fn send(
    link: &Link,
    request: Request<'_>,
    encoded: &[u8],
) -> Result<Reply, RedisError> {
    let (skip, count) = match request {
        Request::Single(_) => (0, 1),
        Request::Pipeline { offset, count, .. } => (offset, count),
    };
    let replies = link
        .connection
        .wire()
        .request(encoded.to_vec(), skip + count, false)
        .await
        .map_err(wire::failed)?;
    if !replies.has_error {
        return Ok(Reply::Frames(replies.bytes));
    }
    let mut values = wire::values(&replies.bytes)?;
    match request {
        Request::Single(_) => match values.pop() {
            Some(Value::ServerError(error)) => Err(error.into()),
            value => Ok(Reply::Single(value.unwrap_or(Value::Nil))),
        },
        Request::Pipeline { .. } => Ok(Reply::Pipeline(values.split_off(skip.min(values.len())))),
    }
}
