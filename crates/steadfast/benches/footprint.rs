//! Footprint of idle clients: memory per client (RSS growth over `STEADFAST_FOOTPRINT_CLIENTS`
//! clients, default 1,000) and the CPU their heartbeats and health checks use while idle for
//! `STEADFAST_FOOTPRINT_SECONDS` (default 60).
//!
//! Run: `cargo bench -p steadfast --bench footprint` (one socket per client: the open-file limit
//! must exceed the client count; needs `redis-server` on PATH, started by the bench on a private
//! loopback address).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::Duration;

/// CPU time (user + system) this process has used, in clock ticks of 1/100 s.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    let clients = support::env_number("STEADFAST_FOOTPRINT_CLIENTS", 1_000) as usize;
    let idle = Duration::from_secs(support::env_number("STEADFAST_FOOTPRINT_SECONDS", 60));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = support::Server::start(&runtime, 253, &["--maxclients", "20000"]);
    let url = server.url.clone();
    runtime.block_on(async {
        // Warm the allocator and the runtime with one client first, so the growth is per client.
        let mut config = steadfast::Config::from_url(&url).unwrap();
        if let Ok(ms) = std::env::var("STEADFAST_FOOTPRINT_PING_MS") {
            config.health.ping_interval = Duration::from_millis(ms.parse().unwrap());
        }
        let warm = steadfast::Client::new(config.clone()).unwrap();
        warm.wait_connected(Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = support::rss();
        let all = support::connected_clients(&config, clients).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = support::rss();
        let cpu_before = cpu_ticks();
        tokio::time::sleep(idle).await;
        let cpu_used = Duration::from_millis((cpu_ticks() - cpu_before) * 10);
        let per_client = (after.saturating_sub(before)) / clients as u64;
        println!("clients                      {clients}");
        println!(
            "RSS before / after           {} KiB / {} KiB",
            before / 1024,
            after / 1024
        );
        println!(
            "memory per idle client       {:.1} KiB",
            per_client as f64 / 1024.0
        );
        println!(
            "CPU over {:?} idle           {:?} = {:.2} % of one core",
            idle,
            cpu_used,
            cpu_used.as_secs_f64() / idle.as_secs_f64() * 100.0
        );
        for client in &all {
            client.shutdown().await;
        }
        warm.shutdown().await;
    });
}
