//! Shared by the proxy's benches: numbers from the environment, CPU time from `/proc`, and a
//! tokio runtime of the proxy's own whose threads' CPU time can be read.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time in a `/proc/.../stat` file (10 ms ticks).
pub(crate) fn cpu_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A runtime with one worker thread for the proxy, as a sidecar process would have it, and
/// the `stat` files of its threads.
pub(crate) fn proxy_runtime() -> (tokio::runtime::Runtime, Arc<Mutex<Vec<String>>>) {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`, relative to /proc.
            if let Ok(path) = std::fs::read_link("/proc/thread-self") {
                recorded
                    .lock()
                    .unwrap()
                    .push(format!("/proc/{}/stat", path.display()));
            }
        })
        .build()
        .unwrap();
    (runtime, threads)
}

/// The CPU time of `threads` so far.
pub(crate) fn threads_cpu(threads: &Mutex<Vec<String>>) -> Duration {
    threads
        .lock()
        .unwrap()
        .iter()
        .map(|path| cpu_of(path))
        .sum()
}
