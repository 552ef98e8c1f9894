//! Recording state commands in the link journal once the server accepted them.
//!
//! # Behaviour
//! - A state command that succeeded ([`super::effect::Effect::Journal`]) is recorded; in a
//!   pipeline, each one whose own reply is not an error.
//! - The link it ran on now matches the journal. If the published link is another one (made
//!   while the command was on its way), it was set up without the change: it is replaced
//!   ([`DisconnectReason::Outdated`]), and its successor replays the journal.

use std::sync::atomic::Ordering;

use redis::Value;

use super::effect::{self, Effect};
use super::{Reply, Request};
use crate::client::Shared;
use crate::connect::Link;
use crate::event::DisconnectReason;

/// Records the state commands of `request`, which succeeded on `link` with `reply`.
pub(super) fn record(shared: &Shared, link: &Link, request: Request<'_>, reply: &Reply) {
    let mut version = None;
    match (request, reply) {
        (Request::Single(cmd), _) => {
            version = Some(shared.journal.record(effect::journal_key(cmd), cmd));
        }
        (
            Request::Pipeline {
                pipeline, offset, ..
            },
            Reply::Pipeline(values),
        ) => {
            // Replies line up with commands from `offset` (a plain pipeline: 0).
            for (cmd, value) in pipeline.cmd_iter().skip(offset).zip(values) {
                if effect::effect(cmd) == Effect::Journal && !matches!(value, Value::ServerError(_))
                {
                    version = Some(shared.journal.record(effect::journal_key(cmd), cmd));
                }
            }
        }
        (Request::Pipeline { .. }, Reply::Single(_)) => {}
    }
    let Some(version) = version else {
        return;
    };
    link.journal_version.fetch_max(version, Ordering::AcqRel);
    let current = shared.slot.borrow().link.clone();
    if let Some(current) = current
        && current.journal_version.load(Ordering::Acquire) < version
    {
        tracing::info!(
            generation = current.generation,
            "link set up before a state command took effect; replacing it"
        );
        current.activity.mark_closed();
        shared
            .reporter
            .link_lost(current.generation, DisconnectReason::Outdated);
    }
}
