//! Shared by the benches. A redis-server for one benchmark run: on a private loopback address (no
//! port race), killed on drop.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct Server {
    child: Child,
    ip: String,
    extra: Vec<String>,
    /// `redis://<address>:6379`.
    pub(crate) url: String,
}

impl Server {
    /// Starts redis-server on `127.<octet>.x.y:6379` with `extra` arguments, and waits (at most
    /// 5 s) until it accepts a connection.
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, octet: u8, extra: &[&str]) -> Self {
        let pid = std::process::id();
        let ip = format!("127.{octet}.{}.{}", (pid / 250) % 250, pid % 250 + 2);
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn(&ip, &extra);
        let server = Self {
            child,
            url: format!("redis://{ip}:6379"),
            ip,
            extra,
        };
        server.wait_ready(runtime);
        server
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again on the same address, with the same arguments, and waits
    /// until it accepts a connection.
    pub(crate) fn start_again(&mut self, runtime: &tokio::runtime::Runtime) {
        self.child = spawn(&self.ip, &self.extra);
        self.wait_ready(runtime);
    }

    fn wait_ready(&self, runtime: &tokio::runtime::Runtime) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        runtime.block_on(async {
            for _ in 0..1_000 {
                if client.get_multiplexed_async_connection().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("redis-server at {} did not start within 5 s", self.url);
        });
    }
}

fn spawn(ip: &str, extra: &[String]) -> Child {
    Command::new("redis-server")
        .args([
            "--bind",
            ip,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a number from the environment, or `default`.
pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, bytes.
pub(crate) fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Opens `count` steadfast clients for `config` and waits (at most 30 s each) until every one is
/// connected.
pub(crate) async fn connected_clients(
    config: &steadfast::Config,
    count: usize,
) -> Vec<steadfast::Client> {
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        all.push(steadfast::Client::new(config.clone()).unwrap());
    }
    for client in &all {
        client
            .wait_connected(Duration::from_secs(30))
            .await
            .unwrap();
    }
    all
}
