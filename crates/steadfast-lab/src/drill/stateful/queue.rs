//! The queue workload: a producer of uniquely numbered items, workers that block to pop them,
//! and the accounting of every item.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use steadfast::RedisErrorExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Doer, GRACE, Own, make, pace, run};

/// Workers popping with `BLPOP`; one more moves with `BLMOVE`.
const POPPERS: usize = 3;

/// Every item's fate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueCount {
    /// Items the producer was told were pushed.
    pub produced: u64,
    /// Pushes told "may have been applied".
    pub produce_unknown: u64,
    /// Distinct items consumed.
    pub consumed: u64,
    /// Items consumed more than once.
    pub twice: u64,
    /// Acknowledged items still queued at the end.
    pub left: u64,
    /// Acknowledged items neither consumed nor queued.
    pub lost: u64,
    /// Pops told "outcome unknown" (an item may have been taken and not delivered).
    pub pop_unknown: u64,
    /// Pops that failed otherwise.
    pub pop_failed: u64,
    /// Workers.
    pub workers: usize,
    /// Workers that completed no pop (an item or its timeout) after the service was back.
    pub stopped_workers: usize,
}

#[derive(Default)]
struct Consumed {
    items: BTreeMap<u64, u32>,
    unknown: u64,
    failed: u64,
    /// Per worker: when it last completed a pop.
    last_pop: Vec<Option<Instant>>,
}

pub(super) struct Running {
    queue: String,
    done: String,
    producer: tokio::task::JoinHandle<(BTreeSet<u64>, u64)>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    consumed: Arc<Mutex<Consumed>>,
    stop_popping: CancellationToken,
}

fn number(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Running {
    pub(super) async fn start(doer: &Doer, tag: &str, stop: &CancellationToken) -> Self {
        let (queue, done) = (format!("{tag}:queue"), format!("{tag}:done"));
        let consumed = Arc::new(Mutex::new(Consumed {
            last_pop: vec![None; POPPERS + 1],
            ..Consumed::default()
        }));
        let stop_popping = CancellationToken::new();
        let workers = (0..=POPPERS)
            .map(|worker| {
                let is_mover = worker == POPPERS;
                let cmd = if is_mover {
                    redis::cmd("BLMOVE")
                        .arg(&queue)
                        .arg(&done)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(1)
                        .clone()
                } else {
                    redis::cmd("BLPOP").arg(&queue).arg(1).clone()
                };
                let (doer, consumed, until) =
                    (doer.clone(), Arc::clone(&consumed), stop_popping.clone());
                tokio::spawn(async move {
                    // redis-rs: a dedicated connection per worker, made again when it fails.
                    let mut own: Option<redis::aio::MultiplexedConnection> = None;
                    let mut own_cluster: Option<redis::cluster_async::ClusterConnection> = None;
                    while !until.is_cancelled() {
                        let popped = match doer.steadfast_query::<redis::Value>(&cmd).await {
                            Some(popped) => popped.map_err(|e| e.is_ambiguous()),
                            None => match &doer {
                                Doer::RedisRs(client) => {
                                    if own.is_none() {
                                        own = client.get_multiplexed_async_connection().await.ok();
                                    }
                                    pop_on(&mut own, &cmd).await
                                }
                                Doer::RedisRsCluster(client, _) => {
                                    if own_cluster.is_none() {
                                        own_cluster = client.get_async_connection().await.ok();
                                    }
                                    pop_on(&mut own_cluster, &cmd).await
                                }
                                Doer::Steadfast(_) | Doer::SteadfastCluster(_) => Err(false),
                            },
                        };
                        record(&consumed, worker, popped);
                        if until.is_cancelled() {
                            break;
                        }
                        if !matches!(&doer, Doer::Steadfast(_) | Doer::SteadfastCluster(_))
                            && own.is_none()
                            && own_cluster.is_none()
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        let producer = {
            let (doer, stop, queue) = (doer.clone(), stop.clone(), queue.clone());
            tokio::spawn(async move {
                let (mut produced, mut unknown) = (BTreeSet::new(), 0);
                let mut own: Option<Own> = None;
                for n in 0u64.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let cmd = redis::cmd("LPUSH").arg(&queue).arg(n).clone();
                    let pushed = run(&doer, &mut own, make(&doer), &cmd).await.map(drop);
                    match pushed {
                        Ok(_) => {
                            produced.insert(n);
                        }
                        Err(true) => unknown += 1,
                        Err(false) => {}
                    }
                    pace().await;
                }
                (produced, unknown)
            })
        };
        Self {
            queue,
            done,
            producer,
            workers,
            consumed,
            stop_popping,
        }
    }

    pub(super) async fn stop(
        self,
        servers: &[std::net::SocketAddr],
        restored: Instant,
    ) -> QueueCount {
        let (produced, produce_unknown) = tokio::time::timeout(GRACE, self.producer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        // Let the workers drain what is queued, then stop them (a pop waits 1 s at most).
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        self.stop_popping.cancel();
        for worker in self.workers {
            let _ = tokio::time::timeout(GRACE, worker).await;
        }
        let consumed =
            std::mem::take(&mut *self.consumed.lock().unwrap_or_else(|e| e.into_inner()));
        let left = left_on(servers, &self.queue).await;
        let moved: BTreeSet<u64> = left_on(servers, &self.done).await;
        let mut count = QueueCount {
            produced: produced.len() as u64,
            produce_unknown,
            pop_unknown: consumed.unknown,
            pop_failed: consumed.failed,
            workers: POPPERS + 1,
            ..QueueCount::default()
        };
        let mut seen = consumed.items.clone();
        for item in &moved {
            seen.entry(*item).or_insert(1);
        }
        count.consumed = seen.len() as u64;
        count.twice = seen.values().filter(|n| **n > 1).count() as u64;
        for item in &produced {
            if left.contains(item) {
                count.left += 1;
            } else if !seen.contains_key(item) {
                count.lost += 1;
            }
        }
        count.stopped_workers = consumed
            .last_pop
            .iter()
            .filter(|at| at.is_none_or(|at| at < restored))
            .count();
        count
    }
}

/// A pop on a redis-rs connection of the worker's own, dropped when it fails (made again next
/// time, as its user would); `Err(true)` when it may have taken an item.
async fn pop_on<C: redis::aio::ConnectionLike>(
    connection: &mut Option<C>,
    cmd: &redis::Cmd,
) -> Result<redis::Value, bool> {
    let Some(held) = connection else {
        return Err(false);
    };
    let popped = cmd.query_async::<redis::Value>(held).await;
    if popped.is_err() {
        *connection = None;
    }
    popped.map_err(|e| e.may_have_been_applied())
}

/// Records what one pop of `worker` gave.
fn record(consumed: &Mutex<Consumed>, worker: usize, popped: Result<redis::Value, bool>) {
    let mut consumed = consumed.lock().unwrap_or_else(|e| e.into_inner());
    match popped {
        Ok(value) => {
            consumed.last_pop[worker] = Some(Instant::now());
            let item = match &value {
                redis::Value::Array(pair) if pair.len() == 2 => match &pair[1] {
                    redis::Value::BulkString(bytes) => number(bytes),
                    _ => None,
                },
                redis::Value::BulkString(bytes) => number(bytes),
                _ => None,
            };
            if let Some(item) = item {
                *consumed.items.entry(item).or_default() += 1;
            }
        }
        Err(true) => consumed.unknown += 1,
        Err(false) => consumed.failed += 1,
    }
}

/// The numbers in `list` on any server of the lab (a copy on a replica or an old primary
/// counts: what the servers lost is not the client's doing).
async fn left_on(servers: &[std::net::SocketAddr], list: &str) -> BTreeSet<u64> {
    let lists = super::on_each_server(servers, |mut connection| async move {
        redis::cmd("LRANGE")
            .arg(list)
            .arg(0)
            .arg(-1)
            .query_async::<Vec<String>>(&mut connection)
            .await
            .ok()
    })
    .await;
    lists
        .iter()
        .flatten()
        .filter_map(|item| item.parse::<u64>().ok())
        .collect()
}
