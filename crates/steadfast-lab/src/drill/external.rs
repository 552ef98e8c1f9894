//! Applications in other languages in the drill: the redis-py and ioredis programs of
//! `clients/` (their clients' defaults, no steadfast inside), each through a `steadfast proxy`
//! of its own started in the drill's process.
//!
//! # Behaviour
//! - Each runs the programs' `drill` workload (SET then GET, 5-15 ms apart, one at a time:
//!   the sequential workload) from the scenario's start until its standard input is closed at
//!   the end, and reports every operation's start, end and error text, which become the
//!   drill's own records (times relative to the scenario's origin).
//! - Errors are named as the library names the same failure where the proxy told it
//!   (`DeadlineExceeded`, `MayHaveBeenApplied`), else by the server's code or the client's
//!   error class.
//! - A program that is not installed (`clients/setup` not run) is left out of the scenario
//!   with a warning; the drill does not fail for it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::client::ClientKind;
use super::workload::{GRACE, Op};

/// How long a program may take to start and connect to its proxy.
const CONNECTED_WITHIN: Duration = Duration::from_secs(20);

/// Where the programs are: `STEADFAST_CLIENTS_DIR`, else the repository's `clients/`.
fn clients_dir() -> PathBuf {
    std::env::var_os("STEADFAST_CLIENTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients"),
        PathBuf::from,
    )
}

/// The command line of `client`'s program, if it is installed.
fn program(client: ClientKind) -> Result<tokio::process::Command, String> {
    let dir = clients_dir();
    let (interpreter, script, installed) = match client {
        ClientKind::PythonThroughProxy | ClientKind::PythonThroughHaproxy => (
            dir.join("python/.venv/bin/python"),
            dir.join("python/workload.py"),
            dir.join("python/.venv/bin/python"),
        ),
        ClientKind::NodeThroughProxy | ClientKind::NodeThroughHaproxy => (
            PathBuf::from("node"),
            dir.join("node/workload.js"),
            dir.join("node/node_modules/ioredis"),
        ),
        other => return Err(format!("{} is not a program", other.label())),
    };
    if !installed.exists() {
        return Err(format!(
            "{} not installed ({} missing: run clients/setup)",
            client.label(),
            installed.display()
        ));
    }
    let mut command = tokio::process::Command::new(interpreter);
    command.arg(script);
    Ok(command)
}

/// What a program goes through.
enum Via {
    /// A `steadfast proxy` of its own.
    Steadfast(steadfast_proxy::OwnThread),
    /// An address of a proxy that is not the program's to stop (the scenario's HAProxy).
    Other,
}

/// One program running through its proxy.
pub(crate) struct External {
    client: ClientKind,
    via: Via,
    child: tokio::process::Child,
    /// On a cluster: the shard of the program's key.
    shard: Option<usize>,
    /// The scenario's origin as Unix milliseconds.
    origin_unix_ms: f64,
}

fn unix_ms(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

impl External {
    /// Starts a proxy for `upstream` and `client`'s program against it, working on `key`
    /// (with its shard: the proxy is then in cluster mode).
    pub(crate) async fn start(
        client: ClientKind,
        upstream: steadfast::Config,
        (key, shard): (String, Option<usize>),
        origin: Instant,
    ) -> Result<Self, String> {
        program(client)?;
        let mut config = steadfast_proxy::ProxyConfig::new(upstream);
        config.is_cluster = shard.is_some();
        config.listen = vec![steadfast_proxy::Listen::Tcp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        )))];
        // On a thread and runtime of its own, as `steadfast proxy` serves.
        let proxy = steadfast_proxy::OwnThread::start(config, super::client::PROXY_THREADS)
            .await
            .map_err(|e| e.to_string())?;
        let Some(steadfast_proxy::Listen::Tcp(address)) = proxy.addresses().first().cloned() else {
            return Err("the proxy did not listen on TCP".into());
        };
        let program = Self::spawn(client, address, Via::Steadfast(proxy), (key, shard), origin)?;
        program.connected(CONNECTED_WITHIN).await?;
        Ok(program)
    }

    /// Starts `client`'s program against `address` (a proxy that is not steadfast's), working
    /// on `key`.
    pub(crate) fn through(
        client: ClientKind,
        address: std::net::SocketAddr,
        key: String,
        origin: Instant,
    ) -> Result<Self, String> {
        Self::spawn(client, address, Via::Other, (key, None), origin)
    }

    fn spawn(
        client: ClientKind,
        address: std::net::SocketAddr,
        via: Via,
        (key, shard): (String, Option<usize>),
        origin: Instant,
    ) -> Result<Self, String> {
        let mut command = program(client)?;
        command
            .args(["--host", &address.ip().to_string()])
            .args(["--port", &address.port().to_string()])
            .args(["--seconds", "600", "--key", &key, "drill"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", client.label()))?;
        Ok(Self {
            client,
            via,
            child,
            shard,
            origin_unix_ms: unix_ms(SystemTime::now()) - origin.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Waits until the program has connected to its proxy: an interpreter can take a second or
    /// more to start on a loaded machine, and a program that connects after a scenario's
    /// announcement (Azure's NodeMaintenanceStarting) has missed it, as any client would.
    async fn connected(&self, within: Duration) -> Result<(), String> {
        let Via::Steadfast(proxy) = &self.via else {
            return Ok(());
        };
        let deadline = Instant::now() + within;
        while proxy.connections() == 0 {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not connect to its proxy within {within:?}",
                    self.client.label()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Which client it is.
    pub(crate) fn client(&self) -> ClientKind {
        self.client
    }

    /// Ends the program (its operation in flight gets [`GRACE`]) and the proxy; its records.
    pub(crate) async fn stop(mut self) -> Result<Vec<Op>, String> {
        drop(self.child.stdin.take());
        let mut stdout = self.child.stdout.take().ok_or("no standard output")?;
        let mut stderr = self.child.stderr.take().ok_or("no standard error")?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read = async {
            let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            self.child.wait().await
        };
        let waited = tokio::time::timeout(GRACE + Duration::from_secs(5), read).await;
        if let Via::Steadfast(proxy) = &self.via {
            proxy.shutdown().await;
        }
        let label = self.client.label();
        match waited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                return Err(format!(
                    "{label}: {status}: {}",
                    String::from_utf8_lossy(&err)
                ));
            }
            Ok(Err(e)) => return Err(format!("{label}: {e}")),
            Err(_) => return Err(format!("{label}: did not end within the grace period")),
        }
        let report: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| format!("{label}: its report: {e}"))?;
        let records = report["records"]
            .as_array()
            .ok_or_else(|| format!("{label}: no records in its report"))?;
        Ok(records
            .iter()
            .filter_map(|record| {
                let start = record.get(0)?.as_f64()?;
                let end = record.get(1)?.as_f64()?;
                Some(Op {
                    start_ms: start - self.origin_unix_ms,
                    end_ms: end - self.origin_unix_ms,
                    error: record.get(2)?.as_str().map(kind_of),
                    shard: self.shard,
                })
            })
            .collect())
    }
}

/// A short name for an error a program reported (`Class: message`).
fn kind_of(text: &str) -> String {
    let (class, message) = text.split_once(": ").unwrap_or(("Error", text));
    let is_deadline = message.contains("deadline");
    let code = message.split(' ').next().unwrap_or_default();
    match code {
        "UNAVAILABLE" | "UNKNOWNOUTCOME" if is_deadline => "DeadlineExceeded".to_owned(),
        "UNKNOWNOUTCOME" => "MayHaveBeenApplied".to_owned(),
        _ if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) => code.to_owned(),
        _ => class.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_programs_errors_are_named_as_the_library_names_them() {
        assert_eq!(
            kind_of(
                "ResponseError: UNAVAILABLE command deadline of 5s ran out before it was written"
            ),
            "DeadlineExceeded"
        );
        assert_eq!(
            kind_of(
                "ReplyError: UNKNOWNOUTCOME INCR was written to 10.0.0.1:6379 and the link died"
            ),
            "MayHaveBeenApplied"
        );
        assert_eq!(
            kind_of("ReplyError: READONLY You can't write against a read only replica."),
            "READONLY"
        );
        assert_eq!(
            kind_of("ConnectionError: Error 111 connecting to 127.0.0.1:6379."),
            "ConnectionError"
        );
    }
}
