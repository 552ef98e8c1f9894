//! The `WATCH` workload: tasks incrementing one counter with optimistic transactions.
//!
//! Each transaction also appends one entry to a log list, in the same `MULTI` ... `EXEC`: on
//! any server, the log holds one entry per transaction it applied, so a counter below the
//! log's length is an update lost to an unguarded `EXEC` (two transactions that read the same
//! value), whatever the servers themselves lost in a failover (which drops counter and log
//! together, and is counted apart: committed transactions no server kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use steadfast::{ErrorKind, RedisErrorExt};
use tokio_util::sync::CancellationToken;

use super::{Doer, GRACE, most_complete, pace};

/// Tasks incrementing the counter.
const TASKS: usize = 4;

/// The counter against the transactions that committed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchCount {
    /// The counter's value at the end (on the server whose log is longest).
    pub counter: u64,
    /// Transactions that server applied (its log's length).
    pub applied: u64,
    /// Applied transactions whose increment was overwritten: `applied - counter`.
    pub lost_updates: u64,
    /// Committed transactions no server kept (the servers' loss, as in a failover's
    /// split-brain window; not a client's fault).
    pub dropped_by_servers: u64,
    /// Transactions whose `EXEC` committed.
    pub committed: u64,
    /// Transactions aborted because another task changed the counter (`EXEC` answered nil).
    pub aborted: u64,
    /// Transactions refused because the link holding their `WATCH` was replaced.
    pub lost_guards: u64,
    /// Transactions whose `EXEC` outcome is unknown (the link died after it was written).
    pub unknown: u64,
    /// Attempts that failed otherwise.
    pub failed: u64,
}

#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    aborted: AtomicU64,
    lost_guards: AtomicU64,
    unknown: AtomicU64,
    failed: AtomicU64,
}

pub(super) struct Running {
    counter: String,
    log: String,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How one attempt ended.
enum Attempt {
    Committed,
    Aborted,
    GuardLost,
    Unknown,
    Failed,
}

/// One optimistic increment on `connection`.
async fn attempt<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    counter: &str,
    log: &str,
    entry: &str,
) -> Attempt {
    let judge = |e: &redis::RedisError| {
        if e.steadfast_error().map(steadfast::Error::kind) == Some(ErrorKind::WatchLost) {
            Attempt::GuardLost
        } else if e.may_have_been_applied() {
            Attempt::Unknown
        } else {
            Attempt::Failed
        }
    };
    let watched: redis::RedisResult<()> = redis::cmd("WATCH")
        .arg(counter)
        .query_async(connection)
        .await;
    if let Err(e) = watched {
        return match judge(&e) {
            Attempt::Unknown => Attempt::Failed,
            other => other,
        };
    }
    let value: redis::RedisResult<Option<u64>> =
        redis::cmd("GET").arg(counter).query_async(connection).await;
    let value = match value {
        Ok(value) => value.unwrap_or(0),
        Err(e) => {
            return match judge(&e) {
                Attempt::Unknown => Attempt::Failed,
                other => other,
            };
        }
    };
    let committed: redis::RedisResult<Option<(u64,)>> = redis::pipe()
        .atomic()
        .set(counter, value + 1)
        .ignore()
        .rpush(log, entry)
        .query_async(connection)
        .await;
    match committed {
        Ok(Some(_)) => Attempt::Committed,
        Ok(None) => Attempt::Aborted,
        Err(e) => judge(&e),
    }
}

impl Running {
    pub(super) async fn start(doer: &Doer, tag: &str, stop: &CancellationToken) -> Self {
        // On a cluster `tag` is a hash tag already (the key of the shard that fails over).
        let (counter, log) = if doer.is_cluster() {
            (
                format!("{tag}:watched:counter"),
                format!("{tag}:watched:log"),
            )
        } else {
            (
                format!("{{{tag}:watched}}:counter"),
                format!("{{{tag}:watched}}:log"),
            )
        };
        let tally = Arc::new(Tally::default());
        let tasks = (0..TASKS)
            .map(|task| {
                let (doer, stop, tally) = (doer.clone(), stop.clone(), Arc::clone(&tally));
                let (counter, log) = (counter.clone(), log.clone());
                tokio::spawn(async move {
                    let mut session = None;
                    let mut cluster_session = None;
                    let mut manager = None;
                    let mut cluster_connection = None;
                    for n in 0u64.. {
                        if stop.is_cancelled() {
                            break;
                        }
                        let entry = format!("{task}:{n}");
                        let outcome = match &doer {
                            Doer::Steadfast(client) => {
                                if session.is_none() {
                                    session = client.session().await.ok();
                                }
                                match &mut session {
                                    Some(session) => attempt(session, &counter, &log, &entry).await,
                                    None => Attempt::Failed,
                                }
                            }
                            // As a redis-rs user would: a reconnecting connection per task.
                            Doer::RedisRs(client) => {
                                if manager.is_none() {
                                    manager = redis::aio::ConnectionManager::new(client.clone())
                                        .await
                                        .ok();
                                }
                                match &mut manager {
                                    Some(manager) => attempt(manager, &counter, &log, &entry).await,
                                    None => Attempt::Failed,
                                }
                            }
                            Doer::SteadfastCluster(client) => {
                                let session =
                                    cluster_session.get_or_insert_with(|| client.session(&counter));
                                attempt(session, &counter, &log, &entry).await
                            }
                            // As a redis-rs user would: a cluster connection per task, which
                            // sends WATCH to the slot's node on its link to it.
                            Doer::RedisRsCluster(client, _) => {
                                if cluster_connection.is_none() {
                                    cluster_connection = client.get_async_connection().await.ok();
                                }
                                match &mut cluster_connection {
                                    Some(connection) => {
                                        attempt(connection, &counter, &log, &entry).await
                                    }
                                    None => Attempt::Failed,
                                }
                            }
                        };
                        let column = match outcome {
                            Attempt::Committed => &tally.committed,
                            Attempt::Aborted => &tally.aborted,
                            Attempt::GuardLost => &tally.lost_guards,
                            Attempt::Unknown => &tally.unknown,
                            Attempt::Failed => &tally.failed,
                        };
                        column.fetch_add(1, Ordering::Relaxed);
                        pace().await;
                    }
                })
            })
            .collect();
        Self {
            counter,
            log,
            tally,
            tasks,
        }
    }

    pub(super) async fn stop(self, servers: &[std::net::SocketAddr]) -> WatchCount {
        for task in self.tasks {
            let _ = tokio::time::timeout(GRACE, task).await;
        }
        let (counter, log) = (self.counter.clone(), self.log.clone());
        // (log length, counter) on the server whose log is longest.
        let (applied, value) = most_complete(servers, |mut connection| {
            let (counter, log) = (counter.clone(), log.clone());
            async move {
                let (length, value): (u64, Option<u64>) = redis::pipe()
                    .cmd("LLEN")
                    .arg(&log)
                    .cmd("GET")
                    .arg(&counter)
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                Some((length, value.unwrap_or_default()))
            }
        })
        .await
        .unwrap_or_default();
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let committed = read(&self.tally.committed);
        WatchCount {
            counter: value,
            applied,
            lost_updates: applied.saturating_sub(value),
            dropped_by_servers: committed.saturating_sub(applied),
            committed,
            aborted: read(&self.tally.aborted),
            lost_guards: read(&self.tally.lost_guards),
            unknown: read(&self.tally.unknown),
            failed: read(&self.tally.failed),
        }
    }
}
