//! Workloads that record every operation: start, end, outcome and error kind.
//!
//! # Behaviour
//! - Sequential: one operation (SET then GET) every 10 ms.
//! - Concurrent: 64 tasks, each doing an operation every 10 ms, so up to 64 are in flight.
//! - Both stop when told and return their records; times are relative to the scenario's origin.

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
}

impl Op {
    /// How long it took.
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

const PACE: Duration = Duration::from_millis(10);

/// A running workload.
pub(crate) struct Running {
    ops: Arc<Mutex<Vec<Op>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(
        kind: WorkloadKind,
        client: Arc<UnderTest>,
        origin: Instant,
        tag: &str,
    ) -> Self {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..kind.tasks())
            .map(|task| {
                let (ops, stop, client) = (Arc::clone(&ops), stop.clone(), Arc::clone(&client));
                let key = format!("{tag}:{task}");
                tokio::spawn(async move {
                    let mut value = 0u64;
                    while !stop.is_cancelled() {
                        value += 1;
                        let start = Instant::now();
                        let outcome = tokio::select! {
                            outcome = client.set_get(&key, value) => outcome,
                            () = stop.cancelled() => break,
                        };
                        let end = Instant::now();
                        let op = Op {
                            start_ms: millis(start, origin),
                            end_ms: millis(end, origin),
                            error: outcome.err(),
                        };
                        ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        Self { ops, stop, tasks }
    }

    /// Stops and returns the records, sorted by start.
    pub(crate) async fn stop(self) -> Vec<Op> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let mut ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()));
        ops.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        ops
    }
}

pub(crate) fn millis(at: Instant, origin: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64() * 1e3
    } else {
        -((origin - at).as_secs_f64() * 1e3)
    }
}
