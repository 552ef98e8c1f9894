//! What idle downstream connections cost the proxy: 1,000 connections (`STEADFAST_BENCH_IDLE`)
//! that each sent one `PING` (so each has its upstream client and link), then sit idle.
//!
//! Reports the proxy process's resident memory per connection (`VmRSS` after, less before,
//! divided by the connections; the client side's sockets are plain `TcpStream`s, a few hundred
//! bytes each) and the CPU time of the proxy's runtime threads over 10 s of idleness
//! (`STEADFAST_BENCH_SECONDS`), as a share of one core.
//!
//! Run: `cargo bench -p steadfast-proxy --bench footprint` (needs `redis-server`).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

/// The allocator the `steadfast` binary serves with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use steadfast_proxy::{Listen, Proxy, ProxyConfig};
use steadfast_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let connections = support::env_number("STEADFAST_BENCH_IDLE", 1_000) as usize;
    let seconds = support::env_number("STEADFAST_BENCH_SECONDS", 10);
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (proxy_runtime, threads) = support::proxy_runtime();
    let ip = IpAddr::from([127, 217, (std::process::id() % 250) as u8, 1]);
    let server = load.block_on(TestServer::start(ip, &["--maxclients", "20000"]));
    let proxy = proxy_runtime.block_on(async {
        let mut config = ProxyConfig::new(steadfast::Config::from_url(&server.url()).unwrap());
        config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
        Proxy::start(config).await.unwrap()
    });
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };
    let before = rss_kib();
    let streams = load.block_on(async {
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(b"PING\r\n").await.unwrap();
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"+PONG\r\n");
            streams.push(stream);
        }
        // Let every link finish its start (handshakes, first heartbeats).
        tokio::time::sleep(Duration::from_secs(2)).await;
        streams
    });
    let after = rss_kib();
    let cpu = || support::threads_cpu(&threads);
    let cpu_before = cpu();
    load.block_on(async { tokio::time::sleep(Duration::from_secs(seconds)).await });
    let idle_cpu = cpu().saturating_sub(cpu_before);
    println!(
        "{connections} idle connections: {:.1} KiB each ({} KiB resident before, {} KiB after); \
         {:.2} % of one core over {seconds} s idle",
        (after.saturating_sub(before)) as f64 / connections as f64,
        before,
        after,
        idle_cpu.as_secs_f64() / seconds as f64 * 100.0
    );
    load.block_on(async move { drop(streams) });
    proxy_runtime.block_on(proxy.shutdown());
}
