//! Shared by the benches. A redis-server for one benchmark run: on a private loopback address (no
//! port race), killed on drop.

#![allow(dead_code)]

use std::process::Child;
use std::time::Duration;

use steadfast_testkit::{Listen, ServerLine};

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
        let ip = ip(octet);
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

/// This process's private loopback address for `octet`.
pub(crate) fn ip(octet: u8) -> String {
    let pid = std::process::id();
    format!("127.{octet}.{}.{}", (pid / 250) % 250, pid % 250 + 2)
}

/// A Redis Cluster of three primaries (no replicas) on `127.<octet>.x.y` for the three
/// `octets`, each serving a third of the slots; waits (at most 20 s) until every node reports
/// the cluster ok. Node files go to a private directory under the system's temp directory.
pub(crate) fn cluster(runtime: &tokio::runtime::Runtime, octets: [u8; 3]) -> Vec<Server> {
    let nodes: Vec<Server> = octets
        .iter()
        .map(|&octet| {
            let ip = ip(octet);
            let dir = std::env::temp_dir().join(format!("steadfast-bench-{ip}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let dir = dir.to_string_lossy().into_owned();
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-announce-ip",
                &ip,
                "--dir",
                &dir,
            ];
            Server::start(runtime, octet, &args)
        })
        .collect();
    runtime.block_on(async {
        let admin = |url: String| async move {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        };
        for (index, node) in nodes.iter().enumerate() {
            let (start, end) = (index * 16_384 / 3, (index + 1) * 16_384 / 3 - 1);
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .query_async(&mut admin(node.url.clone()).await)
                .await
                .unwrap();
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg(&nodes[0].ip)
                .arg(6379)
                .query_async(&mut admin(node.url.clone()).await)
                .await
                .unwrap();
        }
        for node in &nodes {
            let mut con = admin(node.url.clone()).await;
            for attempt in 0.. {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    attempt < 2_000,
                    "the bench cluster did not form within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    nodes
}

fn spawn(ip: &str, extra: &[String]) -> Child {
    let ip = ip.parse().expect("a loopback address");
    ServerLine::new(Listen::Tcp(ip))
        .args(extra)
        .command("redis-server")
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
