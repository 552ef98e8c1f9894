//! HAProxy in the usual role-check pattern, for comparison with `steadfast proxy`: the
//! programs of `clients/` run through it beside the steadfast proxy on single-endpoint
//! scenarios ("redis-py via HAProxy", "ioredis via HAProxy"), measured and reported, held to
//! no goal.
//!
//! # Behaviour
//! - One `haproxy` process (Debian's package) per scenario, in the drill's client namespace,
//!   listening on loopback, with every server of the lab listed and the pattern's health check:
//!   `tcp-check` sends `PING` and `INFO replication` and expects `role:master`, every second
//!   (`inter 1s`, the common tuning; down after 3 failures, up after 2 successes: HAProxy's
//!   defaults), and `on-marked-down shutdown-sessions` (a server marked down has its clients'
//!   connections cut, so they reconnect to the one that is up).
//! - Ready once exactly one server is up (the primary), read from HAProxy's stats socket within
//!   15 s: until a replica's checks have failed three times, HAProxy counts it up too (none
//!   up for 5 s also counts: a scenario whose primary is down at the start).
//! - Not installed (`apt-get install haproxy`): left out with a warning, as a program
//!   `clients/setup` did not install.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How long HAProxy may take to start and mark every replica down.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// When no server up is taken as the lab's state rather than HAProxy's start: three failed
/// checks a second apart, and some.
const NONE_UP_AFTER: Duration = Duration::from_secs(5);

/// A running HAProxy.
pub(crate) struct Haproxy {
    child: tokio::process::Child,
    dir: PathBuf,
    address: SocketAddr,
}

/// The configuration: the role-check pattern over `servers`, listening at `listen`.
fn config(listen: SocketAddr, servers: &[SocketAddr], stats: &std::path::Path) -> String {
    let mut text = format!(
        "global\n\
         \x20   maxconn 4096\n\
         \x20   stats socket {}\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 1h\n\
         \x20   timeout server 1h\n\
         \x20   timeout check 1s\n\
         frontend redis\n\
         \x20   bind {listen}\n\
         \x20   default_backend primary\n\
         backend primary\n\
         \x20   option tcp-check\n\
         \x20   tcp-check connect\n\
         \x20   tcp-check send PING\\r\\n\n\
         \x20   tcp-check expect string +PONG\n\
         \x20   tcp-check send info\\ replication\\r\\n\n\
         \x20   tcp-check expect string role:master\n\
         \x20   tcp-check send QUIT\\r\\n\n\
         \x20   tcp-check expect string +OK\n",
        stats.display()
    );
    for (n, server) in servers.iter().enumerate() {
        text.push_str(&format!(
            "    server s{n} {server} check inter 1s on-marked-down shutdown-sessions\n"
        ));
    }
    text
}

impl Haproxy {
    /// Starts HAProxy in front of `servers` and waits until exactly one is up.
    pub(crate) async fn start(servers: &[SocketAddr]) -> Result<Self, String> {
        let listen = free_loopback_port()?;
        let dir = std::env::temp_dir().join(format!(
            "steadfast-drill-haproxy-{}-{}",
            std::process::id(),
            listen.port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("HAProxy: {}: {e}", dir.display()))?;
        let stats = dir.join("stats.sock");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config(listen, servers, &stats))
            .map_err(|e| format!("HAProxy: {}: {e}", file.display()))?;
        let child = tokio::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("HAProxy not installed (apt-get install haproxy): {e}"))?;
        let haproxy = Self {
            child,
            dir,
            address: listen,
        };
        haproxy.ready(&stats).await?;
        Ok(haproxy)
    }

    /// Where clients connect.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until the stats socket reports exactly one server of the backend up (or, after
    /// [`NONE_UP_AFTER`], none: a scenario whose primary is down at the start).
    async fn ready(&self, stats: &std::path::Path) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + READY_WITHIN;
        loop {
            if let Ok(table) = ask(stats, "show stat\n").await {
                let up = up_servers(&table);
                if up == 1 || (up == 0 && started.elapsed() >= NONE_UP_AFTER) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "HAProxy did not mark exactly one server up within {READY_WITHIN:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops HAProxy and removes its files.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `command` on HAProxy's stats socket; the answer (within 1 s).
async fn ask(stats: &std::path::Path, command: &str) -> Result<String, String> {
    let exchange = async {
        let mut socket = tokio::net::UnixStream::connect(stats)
            .await
            .map_err(|e| e.to_string())?;
        socket
            .write_all(command.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        socket
            .read_to_string(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .map_err(|_| "the stats socket did not answer".to_owned())?
}

/// How many servers of backend `primary` the `show stat` CSV calls up.
fn up_servers(table: &str) -> usize {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return 0;
    };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let find = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(proxy), Some(server), Some(status)) =
        (find("pxname"), find("svname"), find("status"))
    else {
        return 0;
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|row| {
            row.get(proxy) == Some(&"primary")
                && row.get(server).is_some_and(|s| s.starts_with('s'))
                && row.get(status).is_some_and(|s| s.starts_with("UP"))
        })
        .count()
}

/// A loopback address with a port free now.
fn free_loopback_port() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("HAProxy: no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_table_counts_the_backends_servers_that_are_up() {
        let table = "# pxname,svname,qcur,status,weight\n\
                     redis,FRONTEND,,OPEN,\n\
                     primary,s0,0,UP,1\n\
                     primary,s1,0,DOWN,1\n\
                     primary,s2,0,UP 1/2,1\n\
                     primary,BACKEND,0,UP,2\n";
        assert_eq!(up_servers(table), 2);
        assert_eq!(up_servers(""), 0);
    }

    #[test]
    fn the_configuration_lists_every_server_with_the_role_check() {
        let text = config(
            "127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!()),
            &[
                "10.0.0.2:6379".parse().unwrap_or_else(|_| unreachable!()),
                "10.0.0.3:6379".parse().unwrap_or_else(|_| unreachable!()),
            ],
            std::path::Path::new("/tmp/s.sock"),
        );
        assert!(text.contains("tcp-check expect string role:master"));
        assert!(
            text.contains(
                "server s1 10.0.0.3:6379 check inter 1s on-marked-down shutdown-sessions"
            )
        );
    }
}
