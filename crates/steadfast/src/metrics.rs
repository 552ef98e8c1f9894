//! Every metric steadfast records, through the `metrics` facade: install any recorder
//! (Prometheus, StatsD, ...) to collect them; without one they cost an atomic load.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `steadfast_commands_total` | counter | `outcome`: `ok`, `error` | commands finished |
//! | `steadfast_command_retries_total` | counter | `reason`: `busy`, `not_executed`, `ambiguous` | commands sent again |
//! | `steadfast_links_total` | counter | | links made (the first one included) |
//! | `steadfast_disconnects_total` | counter | `reason` | links dropped |
//! | `steadfast_reconnect_failures_total` | counter | | connection attempts that failed |
//! | `steadfast_heartbeats_missed_total` | counter | | stalls noticed by the watchdog |
//! | `steadfast_maintenance_notifications_total` | counter | `source`: `push`, `azure` | maintenance notices |
//! | `steadfast_maintenance_listeners_total` | counter | `outcome`: `listening`, `refused` | a RESP2 link's listener beside it: opted in, or refused (the server is then not asked again for ten minutes) |
//! | `steadfast_outcomes_unknown_total` | counter | | commands that failed after they were written: may have been applied |
//! | `steadfast_blocking_abandoned_total` | counter | `outcome`: `unblocked`, `reply_lost`, `link_closed` | blocking commands whose caller gave up while they waited |
//! | `steadfast_watches_lost_total` | counter | | sessions whose `WATCH` / `MULTI` died with a replaced link |
//! | `steadfast_subscription_gaps_total` | counter | `cause`: `link_lost`, `slow_consumer` | gaps in a subscriber's stream |
//! | `steadfast_link_up` | gauge | | 1 while a link serves commands |
//! | `steadfast_relaxed` | gauge | | 1 while timeouts are relaxed for maintenance |

use crate::event::{DisconnectReason, Event, MaintenanceNotice};

/// Commands finished.
pub const COMMANDS: &str = "steadfast_commands_total";
/// Commands sent again, by `reason`: `not_ready` (LOADING, MASTERDOWN, BUSY), `busy` (TRYAGAIN,
/// CLUSTERDOWN), `not_executed` (the link was lost or READONLY before the command ran),
/// `ambiguous` (sent again though it may have been applied: idempotent, or allowed).
pub const COMMAND_RETRIES: &str = "steadfast_command_retries_total";
/// Links made.
pub const LINKS: &str = "steadfast_links_total";
/// Links dropped.
pub const DISCONNECTS: &str = "steadfast_disconnects_total";
/// Connection attempts that failed.
pub const RECONNECT_FAILURES: &str = "steadfast_reconnect_failures_total";
/// Stalls noticed by the watchdog.
pub const HEARTBEATS_MISSED: &str = "steadfast_heartbeats_missed_total";
/// Maintenance notices.
pub const MAINTENANCE_NOTIFICATIONS: &str = "steadfast_maintenance_notifications_total";
/// A RESP2 link's maintenance listener, by `outcome`: `listening` (opted in), `refused`.
pub const MAINTENANCE_LISTENERS: &str = "steadfast_maintenance_listeners_total";
/// Commands that failed after they were written (may have been applied).
pub const OUTCOMES_UNKNOWN: &str = "steadfast_outcomes_unknown_total";
/// Blocking commands whose caller gave up, by how their wait ended.
pub const BLOCKING_ABANDONED: &str = "steadfast_blocking_abandoned_total";
/// Sessions whose `WATCH` or `MULTI` died with a replaced link.
pub const WATCHES_LOST: &str = "steadfast_watches_lost_total";
/// Gaps in a subscriber's stream, by `cause`.
pub const SUBSCRIPTION_GAPS: &str = "steadfast_subscription_gaps_total";
/// 1 while a link serves commands.
pub const LINK_UP: &str = "steadfast_link_up";
/// 1 while timeouts are relaxed.
pub const RELAXED: &str = "steadfast_relaxed";

/// Records what `event` says.
pub(crate) fn record(event: &Event) {
    match event {
        Event::Connected { .. } => {
            metrics::counter!(LINKS).increment(1);
            metrics::gauge!(LINK_UP).set(1.0);
        }
        Event::Disconnected { reason, .. } => {
            let reason = match reason {
                DisconnectReason::Closed(_) => "closed",
                DisconnectReason::Dead(_) => "dead",
                DisconnectReason::ReadOnly => "readonly",
                DisconnectReason::Forced => "forced",
                DisconnectReason::Planned => "planned",
                DisconnectReason::NameMoved(_) => "name_moved",
                DisconnectReason::Outdated => "outdated",
                DisconnectReason::Shutdown => "shutdown",
            };
            metrics::counter!(DISCONNECTS, "reason" => reason).increment(1);
            metrics::gauge!(LINK_UP).set(0.0);
        }
        Event::ReconnectScheduled { .. } => metrics::counter!(RECONNECT_FAILURES).increment(1),
        Event::HeartbeatMissed { .. } => metrics::counter!(HEARTBEATS_MISSED).increment(1),
        Event::OutcomeUnknown { .. } => metrics::counter!(OUTCOMES_UNKNOWN).increment(1),
        Event::BlockingAbandoned { outcome, .. } => {
            metrics::counter!(BLOCKING_ABANDONED, "outcome" => outcome.label()).increment(1);
        }
        Event::WatchLost { .. } => metrics::counter!(WATCHES_LOST).increment(1),
        Event::SubscriptionGap {
            is_slow_consumer, ..
        } => {
            let cause = if *is_slow_consumer {
                "slow_consumer"
            } else {
                "link_lost"
            };
            metrics::counter!(SUBSCRIPTION_GAPS, "cause" => cause).increment(1);
        }
        Event::Maintenance(notice) => {
            let source = match notice {
                MaintenanceNotice::Push { .. } => "push",
                MaintenanceNotice::Azure(_) => "azure",
            };
            metrics::counter!(MAINTENANCE_NOTIFICATIONS, "source" => source).increment(1);
        }
        Event::Relaxed { is_relaxed } => {
            metrics::gauge!(RELAXED).set(if *is_relaxed { 1.0 } else { 0.0 });
        }
        _ => {}
    }
}

/// A command finished.
pub(crate) fn command(is_ok: bool) {
    // Literal labels: the key is built at compile time, not per command.
    if is_ok {
        metrics::counter!(COMMANDS, "outcome" => "ok").increment(1);
    } else {
        metrics::counter!(COMMANDS, "outcome" => "error").increment(1);
    }
}

/// A command is sent again.
pub(crate) fn retry(reason: &'static str) {
    metrics::counter!(COMMAND_RETRIES, "reason" => reason).increment(1);
}
