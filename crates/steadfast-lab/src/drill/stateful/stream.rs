//! The stream half of the queue workload: a producer `XADD`s numbered entries, one worker reads
//! them with `XREADGROUP ... BLOCK` and acknowledges each with `XACK`.
//!
//! An entry a read delivered to a link that then died stays in the group's pending list, where
//! `XAUTOCLAIM` finds it: pending is recoverable, never lost. Lost is an acknowledged `XADD`
//! that no server holds.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Doer, GRACE, Own, make, pace, run};

/// The stream workload's accounting.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamCount {
    /// Entries the producer was told were added.
    pub produced: u64,
    /// Entries the worker read and acknowledged.
    pub consumed: u64,
    /// Entries read twice.
    pub twice: u64,
    /// Entries delivered but not acknowledged (the group's pending list): claimable.
    pub pending: u64,
    /// Reads told "outcome unknown".
    pub read_unknown: u64,
    /// Acknowledged entries no server holds.
    pub lost: u64,
    /// The worker completed no read after the service was back.
    pub is_stopped: bool,
}

#[derive(Default)]
struct Read {
    entries: Vec<u64>,
    unknown: u64,
    last: Option<Instant>,
}

pub(super) struct Running {
    stream: String,
    producer: tokio::task::JoinHandle<BTreeSet<u64>>,
    worker: tokio::task::JoinHandle<()>,
    read: Arc<Mutex<Read>>,
    stop_reading: CancellationToken,
}

/// The numbers in the entries of an `XREADGROUP` reply.
fn numbers(reply: &redis::Value) -> Vec<(String, u64)> {
    let Ok(read) = redis::from_redis_value_ref::<redis::streams::StreamReadReply>(reply) else {
        return Vec::new();
    };
    read.keys
        .iter()
        .flat_map(|key| &key.ids)
        .filter_map(|entry| {
            let n: u64 = entry.get("n")?;
            Some((entry.id.clone(), n))
        })
        .collect()
}

impl Running {
    pub(super) async fn start(doer: &Doer, tag: &str, stop: &CancellationToken) -> Self {
        let stream = format!("{tag}:stream");
        let mut setup: Option<Own> = None;
        let create = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("workers")
            .arg("$")
            .arg("MKSTREAM")
            .clone();
        let _ = run(doer, &mut setup, make(doer), &create).await;
        let read = Arc::new(Mutex::new(Read::default()));
        let stop_reading = CancellationToken::new();
        let worker = {
            let (doer, read, until, stream) = (
                doer.clone(),
                Arc::clone(&read),
                stop_reading.clone(),
                stream.clone(),
            );
            tokio::spawn(async move {
                let mut own: Option<Own> = None;
                let cmd = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("workers")
                    .arg("worker-1")
                    .arg("COUNT")
                    .arg(10)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .clone();
                let create = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg("workers")
                    .arg("0")
                    .arg("MKSTREAM")
                    .clone();
                while !until.is_cancelled() {
                    let outcome = run(&doer, &mut own, make(&doer), &cmd).await;
                    if outcome == Err(false) {
                        // NOGROUP after a restart without persistence: as its application
                        // would, make the group again (BUSYGROUP when it exists: harmless).
                        let _ = run(&doer, &mut own, make(&doer), &create).await;
                    }
                    let entries = match &outcome {
                        Ok(reply) => numbers(reply),
                        Err(_) => Vec::new(),
                    };
                    for (id, _) in &entries {
                        let ack = redis::cmd("XACK")
                            .arg(&stream)
                            .arg("workers")
                            .arg(id)
                            .clone();
                        let _ = run(&doer, &mut own, make(&doer), &ack).await;
                    }
                    {
                        let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
                        match outcome {
                            Ok(_) => {
                                read.last = Some(Instant::now());
                                read.entries.extend(entries.iter().map(|(_, n)| *n));
                            }
                            Err(true) => read.unknown += 1,
                            Err(false) => {}
                        }
                    }
                    if own.is_none()
                        && !matches!(doer, Doer::Steadfast(_) | Doer::SteadfastCluster(_))
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            })
        };
        let producer = {
            let (doer, stop, stream) = (doer.clone(), stop.clone(), stream.clone());
            tokio::spawn(async move {
                let mut produced = BTreeSet::new();
                let mut own: Option<Own> = None;
                for n in 0u64.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let cmd = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("n")
                        .arg(n)
                        .clone();
                    if run(&doer, &mut own, make(&doer), &cmd).await.is_ok() {
                        produced.insert(n);
                    }
                    pace().await;
                }
                produced
            })
        };
        Self {
            stream,
            producer,
            worker,
            read,
            stop_reading,
        }
    }

    pub(super) async fn stop(
        self,
        servers: &[std::net::SocketAddr],
        restored: Instant,
    ) -> StreamCount {
        let produced = tokio::time::timeout(GRACE, self.producer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        self.stop_reading.cancel();
        let _ = tokio::time::timeout(GRACE, self.worker).await;
        let read = std::mem::take(&mut *self.read.lock().unwrap_or_else(|e| e.into_inner()));
        let (held, pending) = held_on(servers, &self.stream).await;
        let mut seen = BTreeSet::new();
        let mut twice = 0;
        for n in &read.entries {
            if !seen.insert(*n) {
                twice += 1;
            }
        }
        StreamCount {
            produced: produced.len() as u64,
            consumed: seen.len() as u64,
            twice,
            pending,
            read_unknown: read.unknown,
            lost: produced.iter().filter(|n| !held.contains(n)).count() as u64,
            is_stopped: read.last.is_none_or(|at| at < restored),
        }
    }
}

/// The numbers every server's copy of `stream` holds, and the most entries any server lists as
/// pending in the group.
async fn held_on(servers: &[std::net::SocketAddr], stream: &str) -> (BTreeSet<u64>, u64) {
    let copies = super::on_each_server(servers, |mut connection| async move {
        let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .ok()?;
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg("workers")
            .query_async(&mut connection)
            .await
            .ok()?;
        let pending = match &summary {
            redis::Value::Array(parts) => parts
                .first()
                .and_then(|c| redis::from_redis_value_ref::<u64>(c).ok())
                .unwrap_or(0),
            _ => 0,
        };
        let numbers: Vec<u64> = range.ids.iter().filter_map(|e| e.get("n")).collect();
        Some((numbers, pending))
    })
    .await;
    let held = copies
        .iter()
        .flat_map(|(numbers, _)| numbers.iter().copied())
        .collect();
    let pending = copies
        .iter()
        .map(|(_, pending)| *pending)
        .max()
        .unwrap_or(0);
    (held, pending)
}
