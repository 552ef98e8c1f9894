//! Workloads that record every operation: start, end, outcome and error kind.
//!
//! # Behaviour
//! - Sequential: one operation (SET then GET), then a pause of 5-15 ms (10 ms on average,
//!   drawn anew each time so that tasks do not fall into step and send in bursts).
//! - Concurrent: 64 tasks, each doing the same, so up to 64 are in flight.
//! - Both stop when told and return their records; times are relative to the scenario's origin.
//!   At the stop no operation starts, and those in flight get up to [`GRACE`] to end with their
//!   real outcome (steadfast's deadline is 5 s per command, an operation is two commands): the
//!   end of the run must not turn a slow operation into a failure. One still waiting then is
//!   recorded as failed ("Unfinished") if it had waited 1 s or more (a client that hangs, as one
//!   without a response timeout does), and dropped otherwise.
//! - On a cluster of `n` shards every operation is tagged with the shard its key belonged to
//!   when the lab formed the cluster. The sequential task goes round one key per shard;
//!   concurrent task `t` keeps one key on shard `t % n`. Keys of the sequential task and of
//!   every other concurrent task lie in the first half of their shard's slots (the half the
//!   resharding scenario moves), the rest in the second half.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::UnderTest;

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// One operation every 10 ms.
    Sequential,
    /// 64 operations in flight.
    Concurrent,
}

impl WorkloadKind {
    /// Both, in report order.
    pub const ALL: [Self; 2] = [Self::Sequential, Self::Concurrent];

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sequential => "sequential",
            Self::Concurrent => "concurrent-64",
        }
    }

    fn tasks(self) -> usize {
        match self {
            Self::Sequential => 1,
            Self::Concurrent => 64,
        }
    }
}

/// One recorded operation.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    /// Start, milliseconds since the scenario's origin.
    pub start_ms: f64,
    /// End, milliseconds since the scenario's origin.
    pub end_ms: f64,
    /// `None` on success; otherwise the error kind.
    pub error: Option<String>,
    /// On a cluster: the shard the key belonged to when the lab formed it.
    pub shard: Option<usize>,
}

/// An operation on no shard, for tests of the report.
#[cfg(test)]
pub(crate) fn op(start_ms: f64, end_ms: f64, error: Option<&str>) -> Op {
    Op {
        start_ms,
        end_ms,
        error: error.map(str::to_owned),
        shard: None,
    }
}

impl Op {
    /// How long it took.
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

/// An operation still waiting this long when it is abandoned is recorded as failed.
const HUNG: Duration = Duration::from_secs(1);
/// How long operations in flight at the stop may still take: past two steadfast deadlines.
pub const GRACE: Duration = Duration::from_secs(11);
/// Its error kind.
pub const UNFINISHED: &str = "Unfinished";

/// The pause after each operation: `PACE` give or take half of it.
const PACE: Duration = Duration::from_millis(10);

/// A running workload.
pub(crate) struct Running {
    ops: Arc<Mutex<Vec<Op>>>,
    /// No new operation once cancelled.
    stop: CancellationToken,
    /// Cancelled [`GRACE`] after `stop`: operations still waiting are abandoned.
    abandon: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(
        kind: WorkloadKind,
        client: Arc<UnderTest>,
        origin: Instant,
        tag: &str,
        shards: Option<usize>,
    ) -> Self {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
        let tasks = (0..kind.tasks())
            .map(|task| {
                let (ops, stop, client) = (Arc::clone(&ops), stop.clone(), Arc::clone(&client));
                let abandon = abandon.clone();
                let keys = task_keys(kind, tag, task, shards);
                tokio::spawn(async move {
                    let mut value = 0u64;
                    for (key, shard) in keys.iter().cycle() {
                        if stop.is_cancelled() {
                            break;
                        }
                        value += 1;
                        let start = Instant::now();
                        let outcome = tokio::select! {
                            outcome = client.set_get(key, value) => outcome,
                            () = abandon.cancelled() => {
                                // An operation still waiting GRACE after the scenario ended
                                // counts as failed if it had waited long: a client that hangs
                                // must not look like one that did nothing wrong.
                                if start.elapsed() >= HUNG {
                                    Err(UNFINISHED.to_owned())
                                } else {
                                    break;
                                }
                            }
                        };
                        let end = Instant::now();
                        let op = Op {
                            start_ms: millis(start, origin),
                            end_ms: millis(end, origin),
                            error: outcome.err(),
                            shard: *shard,
                        };
                        ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                        if stop.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(PACE / 2 + PACE.mul_f64(rand::random::<f64>())).await;
                    }
                })
            })
            .collect();
        Self {
            ops,
            stop,
            abandon,
            tasks,
        }
    }

    /// Starts no new operation from now on. Every workload of a scenario is halted first and
    /// then waited for, so that none keeps running through another's grace period.
    pub(crate) fn halt(&self) {
        self.stop.cancel();
    }

    /// Stops and returns the records, sorted by start.
    pub(crate) async fn stop(self) -> Vec<Op> {
        self.stop.cancel();
        let deadline = Instant::now() + GRACE;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                self.abandon.cancel();
                let _ = task.await;
            }
        }
        let mut ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()));
        ops.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        ops
    }
}

/// The keys task `task` goes round, each with its shard on a cluster of `shards`.
pub(crate) fn task_keys(
    kind: WorkloadKind,
    tag: &str,
    task: usize,
    shards: Option<usize>,
) -> Vec<(String, Option<usize>)> {
    let Some(shards) = shards else {
        return vec![(format!("{tag}:{task}"), None)];
    };
    let wanted: Vec<(usize, usize)> = match kind {
        WorkloadKind::Sequential => (0..shards).map(|shard| (shard, 0)).collect(),
        WorkloadKind::Concurrent => vec![(task % shards, task / shards % 2)],
    };
    wanted
        .into_iter()
        .map(|(shard, half)| {
            let first = first_half(shard, shards);
            let slots = if half == 0 {
                first
            } else {
                first.end() + 1..=*crate::cluster::shard_slots(shard, shards).end()
            };
            let key = (0u64..)
                .map(|n| format!("{tag}:{task}:{shard}:{n}"))
                .find(|key| slots.contains(&steadfast::cluster::key_slot(key.as_bytes())))
                .unwrap_or_default();
            (key, Some(shard))
        })
        .collect()
}

/// The first half of shard `shard`'s slots, where the workload puts half of its keys.
pub(crate) fn first_half(shard: usize, shards: usize) -> std::ops::RangeInclusive<u16> {
    let range = crate::cluster::shard_slots(shard, shards);
    *range.start()..=range.start() + (range.end() - range.start()) / 2
}

pub(crate) fn millis(at: Instant, origin: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64() * 1e3
    } else {
        -((origin - at).as_secs_f64() * 1e3)
    }
}
