//! Growth: throughput and memory at 1, 10, 100 and 1,000 clients, steadfast against raw redis-rs
//! `MultiplexedConnection`, on one local redis-server.
//!
//! Each measurement runs in a fresh process (this binary, started again), so memory freed by an
//! earlier one cannot be reused by a later one: it opens N connections of one kind (RSS growth per
//! connection), then each connection runs one task of GETs of a 100-byte value for
//! `STEADFAST_GROWTH_SECONDS` (default 2). `STEADFAST_GROWTH_ROUNDS` (default 3) rounds, in
//! rotating order; the table gives medians and ratios to raw.
//!
//! Run: `cargo bench -p steadfast --bench growth` (needs `redis-server` on PATH and an open-file
//! limit above 1,000).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::process::Command;
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::time::Instant;

const COUNTS: [usize; 4] = [1, 10, 100, 1_000];
const KINDS: [&str; 2] = ["redis-rs multiplexed", "steadfast"];

fn main() {
    if let Ok(one) = std::env::var("STEADFAST_GROWTH_ONE") {
        measure_one(&one);
        return;
    }
    let rounds = support::env_number("STEADFAST_GROWTH_ROUNDS", 3) as usize;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = support::Server::start(&runtime, 250, &["--maxclients", "20000"]);
    let exe = std::env::current_exe().unwrap();
    // (count, kind) -> per round (ops/s, bytes per client)
    let mut results = vec![vec![Vec::new(); KINDS.len()]; COUNTS.len()];
    for round in 0..rounds {
        for (c, &count) in COUNTS.iter().enumerate() {
            for k in 0..KINDS.len() {
                let kind = (k + round) % KINDS.len();
                let output = Command::new(&exe)
                    .env(
                        "STEADFAST_GROWTH_ONE",
                        format!("{kind}:{count}:{}", server.url),
                    )
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&output.stdout);
                let line = text
                    .lines()
                    .find_map(|l| l.strip_prefix("RESULT "))
                    .unwrap_or_else(|| panic!("no result from {kind}:{count}: {text}"));
                let mut fields = line.split_whitespace().map(|v| v.parse::<f64>().unwrap());
                let (ops, bytes) = (fields.next().unwrap(), fields.next().unwrap());
                results[c][kind].push((ops, bytes));
            }
        }
    }
    println!(
        "{:>8} {:<22} {:>12} {:>16} {:>8} {:>8}",
        "clients", "client", "ops/s", "memory/client", "x tput", "x mem"
    );
    for (c, &count) in COUNTS.iter().enumerate() {
        let medians: Vec<(f64, f64)> = results[c]
            .iter()
            .map(|rounds| {
                (
                    median(rounds.iter().map(|r| r.0).collect()),
                    median(rounds.iter().map(|r| r.1).collect()),
                )
            })
            .collect();
        let (raw_ops, raw_bytes) = medians[0];
        for (kind, (ops, bytes)) in medians.iter().enumerate() {
            println!(
                "{count:>8} {:<22} {ops:>12.0} {:>12.1} KiB {:>8.3} {:>8.2}",
                KINDS[kind],
                bytes / 1024.0,
                ops / raw_ops,
                bytes / raw_bytes.max(1.0),
            );
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One measurement in this process: `kind:count:url`; prints `RESULT <ops/s> <bytes per client>`.
fn measure_one(spec: &str) {
    let mut parts = spec.splitn(3, ':');
    let kind: usize = parts.next().unwrap().parse().unwrap();
    let count: usize = parts.next().unwrap().parse().unwrap();
    let url = parts.next().unwrap().to_owned();
    let seconds = Duration::from_secs(support::env_number("STEADFAST_GROWTH_SECONDS", 2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm the allocator and runtime with one connection first, so growth is per client.
        let warm = redis::Client::open(url.as_str()).unwrap();
        let mut warm_con = warm.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("bench:growth")
            .arg(vec![b'x'; 100])
            .query_async(&mut warm_con)
            .await
            .unwrap();
        let before = support::rss();
        let (ops, grown) = if kind == 0 {
            let mut all = Vec::with_capacity(count);
            for _ in 0..count {
                all.push(warm.get_multiplexed_async_connection().await.unwrap());
            }
            let after = support::rss();
            let ops = load(all, seconds).await;
            (ops, after.saturating_sub(before))
        } else {
            let config = steadfast::Config::from_url(&url).unwrap();
            let all = support::connected_clients(&config, count).await;
            let after = support::rss();
            let ops = load(all.clone(), seconds).await;
            for client in all {
                client.shutdown().await;
            }
            (ops, after.saturating_sub(before))
        };
        println!("RESULT {ops} {}", grown as f64 / count as f64);
    });
}

/// One task of GETs per connection for `seconds`; operations per second in all.
async fn load<C: ConnectionLike + Send + 'static>(all: Vec<C>, seconds: Duration) -> f64 {
    let until = Instant::now() + seconds;
    let tasks: Vec<_> = all
        .into_iter()
        .map(|mut con| {
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    let _: Option<Vec<u8>> = redis::cmd("GET")
                        .arg("bench:growth")
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / seconds.as_secs_f64()
}
