//! Typed events, delivered on a broadcast channel ([`Client::events`](crate::Client::events)).
//!
//! # Behaviour
//! - Sending never blocks the client: a receiver that falls behind loses the oldest events and is
//!   told how many with [`tokio::sync::broadcast::error::RecvError::Lagged`].
//! - Events carry addresses and reasons, never credentials.

use std::time::Duration;

/// Something the client did or saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new link is serving commands.
    Connected {
        /// The address it reached (compares equal to a `SocketAddr` for TCP links).
        address: crate::endpoint::Address,
        /// Increases by one with every new link; starts at 1.
        generation: u64,
        /// The server's replication role.
        role: Role,
        /// The server accepted maintenance notifications (`CLIENT MAINT_NOTIFICATIONS ON`).
        is_maintenance_aware: bool,
    },
    /// The link with this generation stopped serving commands.
    Disconnected {
        /// Which link.
        generation: u64,
        /// Why it was dropped.
        reason: DisconnectReason,
    },
    /// A connection attempt failed; the next one starts after `delay`.
    ReconnectScheduled {
        /// 1 for the first failed attempt in a row.
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// What failed, without credentials.
        error: String,
    },
    /// The link looked stalled: commands in flight and nothing read for `stalled_for`.
    HeartbeatMissed {
        /// Which link.
        generation: u64,
        /// How long nothing had been read.
        stalled_for: Duration,
    },
    /// A probe on a fresh connection judged the stalled link.
    ProbeVerdict {
        /// Which link was judged.
        generation: u64,
        /// The verdict.
        verdict: crate::verdict::Verdict,
    },
    /// Errors went on for too long with no success: the link is replaced though it looks alive.
    ForcedReconnect {
        /// Which link.
        generation: u64,
        /// How long errors had gone on.
        errors_for: Duration,
    },
    /// A maintenance notification arrived (every one, including those that need no action).
    Maintenance(MaintenanceNotice),
    /// The link was re-authenticated with fresh credentials (no reconnect).
    Reauthenticated {
        /// Which link.
        generation: u64,
    },
    /// Fresh credentials could not be obtained or were refused; retried with backoff.
    ReauthenticationFailed {
        /// What failed, without credentials.
        error: String,
    },
    /// Timeouts were relaxed (a migration or failover is announced) or restored.
    Relaxed {
        /// Whether they are relaxed now.
        is_relaxed: bool,
    },
    /// The server behind the endpoint is not a primary any more (READONLY), or a new link reached
    /// a server with a different role than the last one.
    RoleChanged {
        /// Which link saw it.
        generation: u64,
        /// The role now seen.
        role: Role,
    },
    /// No node of a cluster shard answered several commands in a row: the shard's commands are
    /// refused at once ([`ErrorKind::NotAttempted`](crate::ErrorKind::NotAttempted)) for
    /// `open_for`, then one command probes it.
    ShardBreakerOpened {
        /// The shard's primary.
        primary: crate::endpoint::NodeAddress,
        /// Failures in a row that opened it (1 after a failed probe).
        failures: u32,
        /// How long commands are refused before the next probe.
        open_for: Duration,
    },
    /// A probe got an answer: the shard's commands are sent again.
    ShardBreakerClosed {
        /// The shard's primary.
        primary: crate::endpoint::NodeAddress,
    },
    /// A cluster client took a new routing table.
    TopologyChanged {
        /// The highest configuration epoch among its primaries.
        epoch: u64,
        /// How many shards serve slots.
        shards: usize,
        /// Slots no shard serves.
        uncovered: usize,
    },
    /// A command was written and its link died (or its deadline ran out) before the reply:
    /// it may or may not have been applied, and it was not sent again. The caller got an error
    /// with [`Error::is_ambiguous`](crate::Error::is_ambiguous).
    OutcomeUnknown {
        /// The command's name (`INCR`, `BLPOP`, `pipeline of 3`); never its arguments.
        command: String,
    },
    /// The caller of a blocking command gave up (dropped it) while it waited on the server.
    BlockingAbandoned {
        /// The command's name.
        command: String,
        /// How its wait on the server ended.
        outcome: Abandoned,
    },
    /// A [`Subscriber`](crate::pubsub::Subscriber) may have missed messages: its link was lost
    /// and its subscriptions were made again on a new one, or its application did not keep
    /// up. The subscriber's stream holds a [`Gap`](crate::pubsub::Gap) at that point.
    SubscriptionGap {
        /// How many subscriptions (channels, patterns, shard channels) it concerns.
        subscriptions: usize,
        /// How long messages may be missing for.
        lasted: Duration,
        /// The application did not keep up (messages dropped), rather than a lost link.
        is_slow_consumer: bool,
    },
    /// A [`Session`](crate::Session)'s link was replaced while a `WATCH` or a `MULTI` was
    /// active: the guard (or the queued commands) died with the old link. The session's next
    /// command of the transaction failed instead of running unguarded.
    WatchLost {
        /// What was active: `WATCH`, `MULTI`, or both.
        state: String,
    },
}

/// How the wait of an abandoned blocking command ended on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Abandoned {
    /// It was unblocked (`CLIENT UNBLOCK`) or ended with nothing taken: nothing was lost.
    Unblocked,
    /// Its reply carried data nobody received (an item popped just before the unblock): that
    /// item is gone from the server and was not delivered. The application should treat it as
    /// "outcome unknown", like a link that died.
    ReplyLost,
    /// No end was seen in time: its dedicated link was closed, which ends the wait on the
    /// server; whether it took something first is unknown.
    LinkClosed,
}

impl Abandoned {
    /// The metric label: `unblocked`, `reply_lost`, `link_closed`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unblocked => "unblocked",
            Self::ReplyLost => "reply_lost",
            Self::LinkClosed => "link_closed",
        }
    }
}

/// A server's replication role, as `ROLE` answers it.
///
/// ```
/// use steadfast::Role;
/// assert_eq!(Role::from_role_reply("master"), Role::Primary);
/// assert_eq!(Role::from_role_reply("slave"), Role::Replica);
/// assert_eq!(Role::Replica.to_string(), "slave", "displayed as ROLE names it");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `master`: takes writes.
    Primary,
    /// `slave` (or `replica`): a read-only copy of a primary.
    Replica,
    /// Anything else the server said (`sentinel` ...).
    Other(String),
    /// The server did not say (`ROLE` refused or failed).
    Unknown,
}

impl Role {
    /// The role named by the first word of a `ROLE` reply.
    pub fn from_role_reply(word: &str) -> Self {
        match word {
            "master" => Self::Primary,
            "slave" | "replica" => Self::Replica,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Role {
    /// As `ROLE` names it: `master`, `slave`, the server's own word, or `unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Primary => f.write_str("master"),
            Self::Replica => f.write_str("slave"),
            Self::Other(word) => f.write_str(word),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Why a link was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The socket closed or failed (reset, EOF, TCP_USER_TIMEOUT ...).
    Closed(String),
    /// The health probe judged it dead.
    Dead(String),
    /// A write came back READONLY: the endpoint's primary moved. No new command went to the
    /// link after that; the commands already on it were left to be answered there (the demoted
    /// server still answers: writes come back refused and are sent again), and it was closed
    /// once they were, or after the probe timeout.
    ReadOnly,
    /// The force-reconnect policy replaced it.
    Forced,
    /// Planned maintenance moved the client to a new link (made before this one was closed).
    Planned,
    /// The endpoint's name moved to another server while this link's server still answered (a
    /// coordinated failover): the new link was made before this one was closed, and commands
    /// in flight on this one were left to finish there.
    NameMoved(String),
    /// The link was set up before a state command the caller sent (`SELECT`, `CLIENT SETNAME`
    /// ...) took effect elsewhere: it is replaced by one that replays it. The commands already
    /// on it were left to be answered there, as with [`DisconnectReason::ReadOnly`].
    Outdated,
    /// The client shut down.
    Shutdown,
}

/// A maintenance notification, from either source.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaintenanceNotice {
    /// A RESP3 push frame on the link of this generation.
    Push {
        /// The link it came on.
        generation: u64,
        /// What it said.
        notification: crate::notices::push::Notification,
    },
    /// A message on Azure's `AzureRedisEvents` channel.
    Azure(crate::notices::azure::AzureEvent),
}

/// Where the client's link stands, from [`Client::state`](crate::Client::state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// No link yet, or the last one was lost: a new one is being dialled.
    Connecting,
    /// A link is serving commands.
    Connected {
        /// Its generation.
        generation: u64,
    },
    /// [`Client::shutdown`](crate::Client::shutdown) ran; nothing will connect again.
    Shutdown,
}
