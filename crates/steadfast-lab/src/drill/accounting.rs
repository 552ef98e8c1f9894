//! The non-idempotent workload and its accounting: what the servers applied against what each
//! client told its caller.
//!
//! # Behaviour
//! - Beside the SET/GET workloads (which every client may retry), [`TASKS`] tasks per client
//!   alternate `INCR` on a counter of their own and `LPUSH` of a unique value on a list of their
//!   own, paced like the others (5-15 ms). On a cluster, task `t`'s keys live on shard `t % n`.
//! - Every outcome is one of: acknowledged; *unknown* (the client said it may have been applied:
//!   steadfast's `is_ambiguous`, and for redis-rs any error that is not a server's reply, as
//!   [`steadfast::RedisErrorExt::may_have_been_applied`] judges it); not applied (a server's
//!   refusal, or never sent). When the scenario ends the tasks send nothing new and wait up to
//!   [`GRACE`] for the commands they have in flight (a client without a response timeout can
//!   hang); one still waiting then is unknown. A command cut off by the end of the run is no
//!   fault's unknown outcome, so it must not be counted as one.
//! - After the scenario every server of the lab is asked for every task's counts (`GET`,
//!   `LLEN`; a cluster replica after `READONLY`), and the most complete copy counts (replicas
//!   only copy, so no copy holds more than was applied); a task no server can answer for (a
//!   shard with no node) is left out and counted.
//! - Exact: acknowledged <= applied <= acknowledged + unknown. *Doubled* (applied above
//!   acknowledged + unknown) is a client's fault; *lost* (applied below acknowledged) is the
//!   servers' (a restart without persistence, writes a demoted primary took that its replica
//!   never got), reported, not held against a client.
//! - steadfast's goals: never doubled, in every scenario; and where the fault is one instant
//!   (a kill, a restart, a failover), at most [`TASKS`] unknown outcomes, one per task: no
//!   more than the commands in flight at the fault. In `moving`, at most [`TASKS`] acknowledged
//!   writes left on the old server: writes move at the notice (a RESP2 client's too, through the
//!   listener beside its link), not when the old server closes its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use steadfast::RedisErrorExt;
use tokio_util::sync::CancellationToken;

use super::client::{ClientKind, UnderTest};
use super::report::Goal;
use super::scenario::Scenario;
use super::workload::{WorkloadKind, task_keys};

/// Tasks of the non-idempotent workload, per client: each has one command in flight at most.
pub const TASKS: usize = 16;

/// The pause after each command: 5-15 ms.
const PACE: Duration = Duration::from_millis(10);

/// How long the tasks' last commands may take to finish once the scenario ends: past
/// steadfast's 5 s command deadline, so its commands always end with their real outcome.
pub const GRACE: Duration = Duration::from_secs(6);

/// How long reading one server's counts may take (a blackholed one never answers).
const READ_LIMIT: Duration = Duration::from_secs(2);

/// One task's keys and what its client told it.
struct Task {
    counter: String,
    list: String,
    /// acked INCR, unknown INCR, acked LPUSH, unknown LPUSH.
    told: [AtomicU64; 4],
}

/// A running non-idempotent workload.
pub(crate) struct Counting {
    tasks: Arc<Vec<Task>>,
    /// No new command once cancelled.
    stop: CancellationToken,
    /// Cancelled [`GRACE`] after `stop`: a command still waiting is abandoned as unknown.
    abandon: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Counting {
    pub(crate) fn start(client: Arc<UnderTest>, tag: &str, shards: Option<usize>) -> Self {
        let tasks: Arc<Vec<Task>> = Arc::new(
            (0..TASKS)
                .map(|t| {
                    // The key of the concurrent workload's task `t` (on shard `t % n`), as a
                    // hash tag, so that the counter and the list share its slot.
                    let (key, _) = task_keys(WorkloadKind::Concurrent, tag, t, shards)
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    Task {
                        counter: format!("{{{key}}}:counter"),
                        list: format!("{{{key}}}:list"),
                        told: Default::default(),
                    }
                })
                .collect(),
        );
        let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
        let handles = (0..TASKS)
            .map(|t| {
                let (tasks, stop, client) = (Arc::clone(&tasks), stop.clone(), Arc::clone(&client));
                let abandon = abandon.clone();
                tokio::spawn(async move {
                    let task = &tasks[t];
                    for n in 0u64.. {
                        if stop.is_cancelled() {
                            break;
                        }
                        let is_push = n % 2 == 1;
                        let cmd = if is_push {
                            redis::cmd("LPUSH")
                                .arg(&task.list)
                                .arg(format!("{t}:{n}"))
                                .clone()
                        } else {
                            redis::cmd("INCR").arg(&task.counter).clone()
                        };
                        let is_unknown = tokio::select! {
                            outcome = client.send(&cmd) => match outcome {
                                Ok(_) => Some(false),
                                // The proxy tells it with its own code.
                                Err(e)
                                    if e.may_have_been_applied()
                                        || e.code() == Some("UNKNOWNOUTCOME") =>
                                {
                                    Some(true)
                                }
                                Err(_) => None,
                            },
                            // Still waiting GRACE after the end: its outcome is unknown.
                            () = abandon.cancelled() => Some(true),
                        };
                        if let Some(is_unknown) = is_unknown {
                            let column = usize::from(is_push) * 2 + usize::from(is_unknown);
                            task.told[column].fetch_add(1, Ordering::Relaxed);
                        }
                        if stop.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(PACE / 2 + PACE.mul_f64(rand::random::<f64>())).await;
                    }
                })
            })
            .collect();
        Self {
            tasks,
            stop,
            abandon,
            handles,
        }
    }

    /// Stops the tasks and reads what the servers applied, from every server of the lab.
    pub(crate) async fn stop(
        self,
        client: ClientKind,
        servers: &[SocketAddr],
        scenario: Scenario,
    ) -> Accounting {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + GRACE;
        for mut handle in self.handles {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                self.abandon.cancel();
                let _ = handle.await;
            }
        }
        let mut held: Vec<Option<(u64, u64)>> = vec![None; self.tasks.len()];
        for &server in servers {
            let Some(counts) = read_server(server, &self.tasks).await else {
                continue;
            };
            for (best, found) in held.iter_mut().zip(counts) {
                if let Some((counter, list)) = found {
                    let (c, l) = best.unwrap_or((0, 0));
                    *best = Some((c.max(counter), l.max(list)));
                }
            }
        }
        let mut accounting = Accounting {
            client,
            incr: Count::default(),
            lpush: Count::default(),
            unreadable_tasks: 0,
            tasks: TASKS,
            goals: Vec::new(),
        };
        for (task, applied) in self.tasks.iter().zip(held) {
            let told: Vec<u64> = task
                .told
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let Some((counter, list)) = applied else {
                accounting.unreadable_tasks += 1;
                continue;
            };
            accounting.incr.add(told[0], told[1], counter);
            accounting.lpush.add(told[2], told[3], list);
        }
        if client == ClientKind::Steadfast {
            accounting.goals = goals(scenario, &accounting);
        } else if client == ClientKind::ThroughProxy {
            accounting.goals = super::report::tracked(goals(scenario, &accounting));
        }
        accounting
    }
}

/// Every task's counts as `server` holds them (`None` for a task whose keys it does not
/// serve: another shard's); `None` when it cannot be reached. A replica's copy counts too: the
/// most complete copy of a task's keys is what was applied (replication only copies, so no
/// copy can hold more than was applied).
async fn read_server(server: SocketAddr, tasks: &[Task]) -> Option<Vec<Option<(u64, u64)>>> {
    let read = async {
        let mut connection = redis::Client::open(format!("redis://{server}/"))
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        // A cluster replica serves reads of its primary's slots after READONLY; anything
        // else refuses it, harmlessly.
        let _: redis::RedisResult<()> = redis::cmd("READONLY").query_async(&mut connection).await;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for task in tasks {
            pipe.cmd("GET")
                .arg(&task.counter)
                .cmd("LLEN")
                .arg(&task.list);
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut connection).await.ok()?;
        let counts = values
            .chunks(2)
            .map(|pair| match pair {
                [counter, list] => {
                    let counter = match counter {
                        redis::Value::Nil => Some(0),
                        other => redis::from_redis_value_ref::<u64>(other).ok(),
                    };
                    let list = redis::from_redis_value_ref::<u64>(list).ok();
                    counter.zip(list)
                }
                _ => None,
            })
            .collect();
        Some(counts)
    };
    tokio::time::timeout(READ_LIMIT, read).await.ok().flatten()
}

/// One command's accounting, summed over the readable tasks.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Count {
    /// Acknowledged to the caller.
    pub acked: u64,
    /// Told "may have been applied".
    pub unknown: u64,
    /// What the servers hold.
    pub applied: u64,
    /// Applied beyond acknowledged + unknown, summed per task: a client applied these twice.
    pub doubled: u64,
    /// Acknowledged but not held, summed per task: the servers lost these.
    pub lost: u64,
}

impl Count {
    fn add(&mut self, acked: u64, unknown: u64, applied: u64) {
        self.acked += acked;
        self.unknown += unknown;
        self.applied += applied;
        self.doubled += applied.saturating_sub(acked + unknown);
        self.lost += acked.saturating_sub(applied);
    }
}

/// One client's accounting in one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Accounting {
    /// Which client.
    pub client: ClientKind,
    /// `INCR` on each task's counter.
    pub incr: Count,
    /// `LPUSH` of unique values on each task's list.
    pub lpush: Count,
    /// Tasks whose keys could not be read afterwards (left out of the counts).
    pub unreadable_tasks: usize,
    /// Tasks: at most this many commands were in flight at any instant.
    pub tasks: usize,
    /// steadfast's goals (empty for the others).
    pub goals: Vec<Goal>,
}

fn goals(scenario: Scenario, a: &Accounting) -> Vec<Goal> {
    let doubled = a.incr.doubled + a.lpush.doubled;
    let mut goals = vec![Goal {
        goal: "non-idempotent INCR/LPUSH never applied twice (applied <= acked + unknown)".into(),
        measured: format!(
            "INCR applied {} acked {} unknown {}; LPUSH applied {} acked {} unknown {}; doubled {doubled}",
            a.incr.applied,
            a.incr.acked,
            a.incr.unknown,
            a.lpush.applied,
            a.lpush.acked,
            a.lpush.unknown
        ),
        is_met: doubled == 0,
        is_held: true,
    }];
    if scenario.is_one_instant() {
        let unknown = a.incr.unknown + a.lpush.unknown;
        goals.push(Goal {
            goal: format!(
                "unknown outcomes <= commands in flight at the fault ({})",
                a.tasks
            ),
            measured: format!("{unknown} unknown"),
            is_met: unknown <= a.tasks as u64,
            is_held: true,
        });
    }
    if scenario == Scenario::Moving {
        // The lab's MOVING target is a server of its own, not a copy of the old one: a write
        // acknowledged by the old server after the notice is missing on the final one.
        let lost = a.incr.lost + a.lpush.lost;
        goals.push(Goal {
            goal: format!(
                "writes move at the notice: acknowledged writes left on the old server <= commands in flight then ({})",
                a.tasks
            ),
            measured: format!("{lost} left on the old server"),
            is_met: lost <= a.tasks as u64,
            is_held: true,
        });
    }
    goals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_tells_doubled_from_lost() {
        let mut count = Count::default();
        count.add(10, 2, 11);
        assert_eq!((count.doubled, count.lost), (0, 0));
        count.add(10, 0, 12);
        assert_eq!(count.doubled, 2);
        count.add(10, 1, 8);
        assert_eq!(count.lost, 2);
        assert_eq!(count.applied, 31);
    }
}
