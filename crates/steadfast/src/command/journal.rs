//! Recording state commands in the link journal once the server accepted them.
//!
//! # Behaviour
//! - A state command that succeeded ([`super::effect::Effect::Journal`]) is recorded; in a
//!   pipeline, each one whose own reply is not an error.
//! - The link it ran on now matches the journal. If the published link is another one (made
//!   while the command was on its way), it was set up without the change: it is replaced
//!   ([`crate::event::DisconnectReason::Outdated`], by the command path), and its successor
//!   replays the journal.

use std::sync::atomic::Ordering;

use redis::Value;

use super::{Reply, Request};
use crate::connect::{Journal, Link};
use crate::policy::effect::{self, Effect};

/// Records the state commands of `request`, which succeeded on `link` with `reply`; returns the
/// journal's new version if anything was recorded. The caller replaces the published link if
/// it was set up before that version.
pub(super) fn record(
    journal: &Journal,
    link: &Link,
    request: Request<'_>,
    reply: &Reply,
) -> Option<u64> {
    let mut version = None;
    match (request, reply) {
        (Request::Single(cmd), _) => {
            version = Some(journal.record(effect::journal_key(cmd), cmd));
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
                    version = Some(journal.record(effect::journal_key(cmd), cmd));
                }
            }
        }
        (Request::Pipeline { pipeline, .. }, Reply::Frames(_)) => {
            // Frames hold no error: every command succeeded (never a transaction).
            for cmd in pipeline.cmd_iter() {
                if effect::effect(cmd) == Effect::Journal {
                    version = Some(journal.record(effect::journal_key(cmd), cmd));
                }
            }
        }
        (Request::Pipeline { .. }, Reply::Single(_)) => {}
    }
    let version = version?;
    link.journal_version.fetch_max(version, Ordering::AcqRel);
    Some(version)
}

/// Whether `link` was set up before the journal reached `version`.
pub(super) fn is_outdated(link: &Link, version: u64) -> bool {
    link.journal_version.load(Ordering::Acquire) < version
}
