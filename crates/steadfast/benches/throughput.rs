//! Happy-path throughput and latency: steadfast `Client` against raw redis-rs
//! `MultiplexedConnection` and `ConnectionManager`, one local redis-server, one process.
//!
//! For each operation (GET and SET of 100-byte values, and pipelines of 100 GETs) and each
//! concurrency (1, 16, 256 tasks), the clients take turns in short slices of
//! `STEADFAST_BENCH_MILLIS` (default 250 ms; or `STEADFAST_BENCH_SECONDS`), in rotating order,
//! `STEADFAST_BENCH_ROUNDS` times (default 20), so every client sees the machine in the same
//! states. Throughput is the median over the slices; p50 / p99 are taken over every latency of
//! every slice pooled; each is also given as a ratio to raw redis-rs. Before measuring, every
//! client runs each operation in four unmeasured slices (warm-up). `cpu/op`: the CPU time
//! (user + system) this process spent per operation over every slice of the row: the client's
//! own cost, since the servers are other processes.
//!
//! Run: `cargo bench -p steadfast --bench throughput` (needs `redis-server` on PATH; it starts its
//! own on a private loopback address). `STEADFAST_BENCH_CLUSTER=1`: a local Redis Cluster of
//! three primaries instead, steadfast's `ClusterClient` against redis-rs
//! `cluster_async::ClusterConnection` (the reference of the ratios), both with their defaults;
//! the 64 keys spread over the three shards. `STEADFAST_BENCH_JSON=FILE` also writes the rows as
//! JSON;
//! `STEADFAST_BENCH_TASKS=64` runs one concurrency only (any number); `STEADFAST_BENCH_OP=GET` (or `SET`,
//! `pipeline`) one operation only; `STEADFAST_BENCH_CLIENT=steadfast` runs
//! one client only (for profiling; ratios are then meaningless). `STEADFAST_BENCH_BLOCKERS=8`
//! adds a second steadfast client whose clones keep 8 `BLPOP`s blocked on an empty list all
//! along (1 s timeout, sent again): its row, `steadfast + 8 blocked`, against the plain
//! steadfast row, shows whether blocked commands hold up the shared link.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use tokio::time::Instant;

#[derive(Clone)]
enum Under {
    Raw(MultiplexedConnection),
    Manager(ConnectionManager),
    Steadfast(steadfast::Client),
    /// A steadfast client whose clones keep blocking commands waiting meanwhile.
    SteadfastBlocked(steadfast::Client),
    Cluster(redis::cluster_async::ClusterConnection),
    SteadfastCluster(steadfast::cluster::ClusterClient),
}

impl Under {
    fn name(&self) -> &'static str {
        match self {
            Self::Raw(_) => "redis-rs multiplexed",
            Self::Manager(_) => "redis-rs manager",
            Self::Steadfast(_) | Self::SteadfastCluster(_) => "steadfast",
            Self::SteadfastBlocked(_) => "steadfast + 8 blocked",
            Self::Cluster(_) => "redis-rs cluster_async",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
    Pipeline100,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET 100 B",
            Self::Set => "SET 100 B",
            Self::Pipeline100 => "pipeline of 100 GETs",
        }
    }
}

async fn once<C: ConnectionLike>(con: &mut C, op: Op, key: &str, value: &[u8]) {
    match op {
        Op::Get => {
            let _: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
        }
        Op::Set => {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async(con)
                .await
                .unwrap();
        }
        Op::Pipeline100 => {
            let mut pipe = redis::pipe();
            for _ in 0..100 {
                pipe.cmd("GET").arg(key);
            }
            let _: Vec<Option<Vec<u8>>> = pipe.query_async(con).await.unwrap();
        }
    }
}

/// One slice of one client: its rate, every latency it saw, and the CPU time the process
/// (the client under test: the servers are other processes) spent on it.
struct Sample {
    per_second: f64,
    latencies: Vec<Duration>,
    cpu: Duration,
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (10 ms ticks:
/// summed over every slice of a row, the error stays below 1 %).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

async fn run(under: &Under, op: Op, tasks: usize, seconds: Duration) -> Sample {
    let value = Arc::new(vec![b'x'; 100]);
    let cpu_before = process_cpu();
    let until = Instant::now() + seconds;
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (under, value) = (under.clone(), Arc::clone(&value));
            tokio::spawn(async move {
                let key = format!("bench:{}", task % 64);
                let mut latencies = Vec::with_capacity(100_000);
                while Instant::now() < until {
                    let started = Instant::now();
                    match &under {
                        Under::Raw(c) => once(&mut c.clone(), op, &key, &value).await,
                        Under::Manager(c) => once(&mut c.clone(), op, &key, &value).await,
                        Under::Steadfast(c) | Under::SteadfastBlocked(c) => {
                            once(&mut c.clone(), op, &key, &value).await
                        }
                        Under::Cluster(c) => once(&mut c.clone(), op, &key, &value).await,
                        Under::SteadfastCluster(c) => {
                            once(&mut c.clone(), op, &key, &value).await;
                        }
                    }
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    Sample {
        per_second: all.len() as f64 / seconds.as_secs_f64(),
        latencies: all,
        cpu: process_cpu().saturating_sub(cpu_before),
    }
}

/// The `p` quantile of latencies pooled from every slice, in microseconds.
fn quantile_us(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let seconds = match std::env::var("STEADFAST_BENCH_SECONDS") {
        Ok(_) => Duration::from_secs(support::env_number("STEADFAST_BENCH_SECONDS", 2)),
        Err(_) => Duration::from_millis(support::env_number("STEADFAST_BENCH_MILLIS", 250)),
    };
    let rounds = support::env_number("STEADFAST_BENCH_ROUNDS", 20) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let is_cluster = std::env::var_os("STEADFAST_BENCH_CLUSTER").is_some();
    let (_servers, clients) = if is_cluster {
        let nodes = support::cluster(&runtime, [247, 248, 249]);
        let url = nodes[0].url.clone();
        let clients = runtime.block_on(async {
            let reference = redis::cluster::ClusterClient::new(vec![url.as_str()])
                .unwrap()
                .get_async_connection()
                .await
                .unwrap();
            let config = steadfast::Config::from_url(&url).unwrap();
            let steadfast = steadfast::cluster::ClusterClient::connect(config)
                .await
                .unwrap();
            seed(&mut reference.clone()).await;
            vec![
                Under::Cluster(reference),
                Under::SteadfastCluster(steadfast),
            ]
        });
        (nodes, clients)
    } else {
        single_endpoint(&runtime)
    };
    run_all(&runtime, &clients, seconds, rounds);
    for client in &clients {
        match client {
            Under::Steadfast(client) | Under::SteadfastBlocked(client) => {
                runtime.block_on(client.shutdown());
            }
            Under::SteadfastCluster(client) => runtime.block_on(client.shutdown()),
            _ => {}
        }
    }
}

/// Writes the 64 keys every task reads and writes (`bench:0` .. `bench:63`, 100 B each).
async fn seed<C: ConnectionLike>(con: &mut C) {
    for key in 0..64 {
        let _: () = redis::cmd("SET")
            .arg(format!("bench:{key}"))
            .arg(vec![b'x'; 100])
            .query_async(con)
            .await
            .unwrap();
    }
}

/// One redis-server; raw `MultiplexedConnection` (the reference), `ConnectionManager`, steadfast.
fn single_endpoint(runtime: &tokio::runtime::Runtime) -> (Vec<support::Server>, Vec<Under>) {
    let server = support::Server::start(runtime, 252, &[]);
    let url = server.url.clone();
    let clients = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let raw = client.get_multiplexed_async_connection().await.unwrap();
        let manager = ConnectionManager::new(client).await.unwrap();
        let steadfast = steadfast::Client::open(&url).unwrap();
        steadfast
            .wait_connected(Duration::from_secs(5))
            .await
            .unwrap();
        seed(&mut raw.clone()).await;
        let mut clients = vec![
            Under::Raw(raw),
            Under::Manager(manager),
            Under::Steadfast(steadfast),
        ];
        let blockers = support::env_number("STEADFAST_BENCH_BLOCKERS", 0);
        if blockers > 0 {
            let blocked = steadfast::Client::open(&url).unwrap();
            for _ in 0..blockers {
                let worker = blocked.clone();
                tokio::spawn(async move {
                    let pop = redis::cmd("BLPOP").arg("bench:empty").arg(1).clone();
                    while worker.query::<redis::Value>(&pop).await.is_ok() {}
                });
            }
            clients.push(Under::SteadfastBlocked(blocked));
        }
        clients
    });
    (vec![server], clients)
}

/// Every operation and concurrency, the clients taking turns; the first client is the
/// reference of the ratios.
fn run_all(runtime: &tokio::runtime::Runtime, clients: &[Under], seconds: Duration, rounds: usize) {
    // Warm-up, not measured: every client runs each operation for a few slices first, so the
    // first measured row does not absorb the servers' and the clients' start (measured: the
    // first row after start ran at a third of its later rate, for every client).
    for _ in 0..4 {
        for client in clients {
            for op in [Op::Get, Op::Set, Op::Pipeline100] {
                runtime.block_on(run(client, op, 16, seconds));
            }
        }
    }
    println!(
        "{:<22} {:>5} {:<22} {:>11} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>6}",
        "operation",
        "tasks",
        "client",
        "ops/s",
        "p50",
        "p99",
        "x tput",
        "x p50",
        "x p99",
        "cpu/op",
        "x cpu"
    );
    let mut rows = Vec::new();
    let only_op = std::env::var("STEADFAST_BENCH_OP").ok();
    for op in [Op::Get, Op::Set, Op::Pipeline100] {
        if only_op
            .as_deref()
            .is_some_and(|only| !op.name().starts_with(only))
        {
            continue;
        }
        let only = std::env::var("STEADFAST_BENCH_TASKS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        // One concurrency only when asked, any number (the default three otherwise).
        let all: Vec<usize> = only.map_or_else(|| vec![1, 16, 256], |only| vec![only]);
        for tasks in all {
            let mut samples: Vec<Vec<Sample>> = clients.iter().map(|_| Vec::new()).collect();
            let only_client = std::env::var("STEADFAST_BENCH_CLIENT").ok();
            for round in 0..rounds {
                for offset in 0..clients.len() {
                    let index = (round + offset) % clients.len();
                    if only_client
                        .as_deref()
                        .is_some_and(|only| only != clients[index].name())
                    {
                        samples[index].push(Sample {
                            per_second: 1.0,
                            latencies: vec![Duration::from_micros(1)],
                            cpu: Duration::from_micros(1),
                        });
                        continue;
                    }
                    let sample = runtime.block_on(run(&clients[index], op, tasks, seconds));
                    samples[index].push(sample);
                }
            }
            let medians: Vec<(f64, f64, f64, f64)> = samples
                .into_iter()
                .map(|s| {
                    let rate = median(s.iter().map(|x| x.per_second).collect());
                    let cpu: Duration = s.iter().map(|x| x.cpu).sum();
                    let mut pooled: Vec<Duration> =
                        s.into_iter().flat_map(|x| x.latencies).collect();
                    let cpu_per_op = cpu.as_secs_f64() * 1e6 / pooled.len().max(1) as f64;
                    pooled.sort_unstable();
                    let (p50, p99) = (quantile_us(&pooled, 0.50), quantile_us(&pooled, 0.99));
                    (rate, p50, p99, cpu_per_op)
                })
                .collect();
            let raw = medians[0];
            for (under, (tput, p50, p99, cpu)) in clients.iter().zip(&medians) {
                println!(
                    "{:<22} {:>5} {:<22} {:>11.0} {:>7.1}us {:>7.1}us {:>7.3} {:>7.3} {:>7.3} {:>6.2}us {:>6.3}",
                    op.name(),
                    tasks,
                    under.name(),
                    tput,
                    p50,
                    p99,
                    tput / raw.0,
                    p50 / raw.1,
                    p99 / raw.2,
                    cpu,
                    cpu / raw.3
                );
                rows.push(format!(
                    "{{\"operation\":\"{}\",\"tasks\":{tasks},\"client\":\"{}\",\"ops_per_second\":{tput:.0},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"throughput_ratio\":{:.4},\"p50_ratio\":{:.4},\"p99_ratio\":{:.4},\"cpu_us_per_op\":{cpu:.3},\"cpu_ratio\":{:.4}}}",
                    op.name(), under.name(), tput / raw.0, p50 / raw.1, p99 / raw.2, cpu / raw.3
                ));
            }
        }
    }
    if let Ok(path) = std::env::var("STEADFAST_BENCH_JSON") {
        std::fs::write(path, format!("[{}]\n", rows.join(",\n"))).unwrap();
    }
}
