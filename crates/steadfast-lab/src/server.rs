//! One redis-server on its own address, port 6379: in its own namespace in the lab, or on a
//! private loopback address when the drill runs without root.
//!
//! # Behaviour
//! - Started with no persistence; killed (SIGKILL) on drop, with its namespace.
//! - Administered with `redis-cli` run *inside* its namespace, so a fault between the client and
//!   the server never stops the lab from promoting or demoting it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use steadfast_testkit::{Listen, ServerLine};
use tokio::time::Instant;

use crate::LabError;
use crate::net::Namespace;

/// A redis-server process in its own network namespace (or on loopback).
#[derive(Debug)]
pub struct Server {
    /// Short name for reports: `A`, `B`, ...
    pub label: String,
    /// Its address; it listens on 6379.
    pub ip: Ipv4Addr,
    namespace: Option<Namespace>,
    dir: PathBuf,
    child: Option<Child>,
    /// More `--option value` arguments for every start (cluster mode, ...).
    extra: Vec<String>,
}

impl Server {
    pub(crate) fn new(
        label: &str,
        namespace: Option<Namespace>,
        ip: Ipv4Addr,
    ) -> Result<Self, LabError> {
        // Memory, not disk, where the machine has it: a cluster node saves its config with
        // fsync on every epoch change, and on a disk that stall would land on the clients.
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!(
            "{}-{}",
            crate::net::run_prefix(),
            namespace
                .as_ref()
                .map_or(ip.to_string(), |n| n.name().to_owned())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::new(format!("{dir:?}: {e}")))?;
        Ok(Self {
            label: label.to_owned(),
            ip,
            namespace,
            dir,
            child: None,
            extra: Vec::new(),
        })
    }

    /// Adds `--option value` arguments for every later start.
    pub(crate) fn add_args(&mut self, args: &[&str]) {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
    }

    /// `ip:6379`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), 6379)
    }

    /// The namespace the server lives in; `None` on loopback.
    pub fn namespace(&self) -> Option<&Namespace> {
        self.namespace.as_ref()
    }

    fn command(&self, program: &str) -> std::process::Command {
        match &self.namespace {
            Some(namespace) => namespace.command(program),
            None => std::process::Command::new(program),
        }
    }

    /// Starts the process (it must not be running).
    ///
    /// # Errors
    /// When redis-server cannot be spawned.
    pub fn start(&mut self) -> Result<(), LabError> {
        let mut command = self.command("redis-server");
        ServerLine::new(Listen::Tcp(self.ip.into()))
            .dir(&self.dir)
            .args(&self.extra)
            .add_to(&mut command);
        let child = command
            .spawn()
            .map_err(|e| LabError::new(format!("redis-server {}: {e}", self.label)))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) -> Result<(), LabError> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| LabError::new(format!("server {} is not running", self.label)))?;
        crate::net::run("kill", &[signal, &child.id().to_string()]).map(drop)
    }

    /// SIGSTOP: the kernel still accepts and acknowledges, nothing answers.
    ///
    /// # Errors
    /// When the server is not running.
    pub fn pause(&self) -> Result<(), LabError> {
        self.signal("-STOP")
    }

    /// SIGCONT.
    ///
    /// # Errors
    /// When the server is not running.
    pub fn resume(&self) -> Result<(), LabError> {
        self.signal("-CONT")
    }

    /// Runs `redis-cli ARGS` against this server from inside its namespace.
    ///
    /// # Errors
    /// When redis-cli fails or the server answers with an error.
    pub async fn cli(&self, args: &[&str]) -> Result<String, LabError> {
        let ip = self.ip.to_string();
        let mut all = vec!["-h", ip.as_str(), "-p", "6379"];
        all.extend_from_slice(args);
        let output = match &self.namespace {
            Some(namespace) => namespace.exec_async("redis-cli", &all).await?,
            None => tokio::process::Command::new("redis-cli")
                .args(&all)
                .output()
                .await
                .map_err(|e| LabError::new(format!("redis-cli: {e}")))?,
        };
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if text.starts_with("ERR") || text.starts_with("(error)") {
            return Err(LabError::new(format!("server {}: {text}", self.label)));
        }
        Ok(text)
    }

    /// Polls until this replica's link to its primary is up (its first sync is done).
    ///
    /// # Errors
    /// When it is not within `limit`.
    pub async fn wait_in_sync(&self, limit: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.cli(&["INFO", "replication"]).await?;
            if info.contains("master_link_status:up") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::new(format!(
                    "server {}: replication not in sync within {limit:?}",
                    self.label
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `REPLICAOF NO ONE`.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn promote(&self) -> Result<(), LabError> {
        self.cli(&["REPLICAOF", "NO", "ONE"]).await.map(drop)
    }

    /// Polls `ROLE` until its first line is `role` (`master`, `slave`).
    ///
    /// # Errors
    /// When it is not within `limit`.
    pub async fn wait_role(&self, role: &str, limit: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(text) = self.cli(&["ROLE"]).await
                && text.lines().next() == Some(role)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(LabError::new(format!(
            "server {} did not become {role} within {limit:?}",
            self.label
        )))
    }

    /// `REPLICAOF <primary> 6379`.
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn replicate(&self, primary: &Server) -> Result<(), LabError> {
        let ip = primary.ip.to_string();
        self.cli(&["REPLICAOF", &ip, "6379"]).await.map(drop)
    }

    /// Polls from the caller's namespace until the server answers PING (or `-NOAUTH`).
    ///
    /// # Errors
    /// When it did not within `limit`.
    pub async fn wait_reachable(&self, limit: Duration) -> Result<Instant, LabError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ping(self.address()).await {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(LabError::new(format!(
            "server {} at {} not reachable within {limit:?}",
            self.label,
            self.address()
        )))
    }
}

impl Server {
    /// Polls from the caller's namespace until the server answers PING with PONG: listening
    /// and done loading its dataset (a loading server answers `-LOADING`).
    ///
    /// # Errors
    /// When it did not within `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Result<Instant, LabError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if reply_to_ping(self.address())
                .await
                .is_some_and(|r| r.starts_with(b"+PONG"))
            {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(LabError::new(format!(
            "server {} at {} not ready within {limit:?}",
            self.label,
            self.address()
        )))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One PING on a fresh TCP connection, bounded to 200 ms: whether any reply came (`+PONG`, or
/// an error such as `-NOAUTH` or `-LOADING`: the server is there).
pub async fn ping(address: SocketAddr) -> bool {
    reply_to_ping(address)
        .await
        .is_some_and(|r| r.starts_with(b"+") || r.starts_with(b"-"))
}

/// The first bytes of the reply to one PING on a fresh TCP connection, bounded to 200 ms.
async fn reply_to_ping(address: SocketAddr) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        (n > 0).then(|| buf[..n].to_vec())
    };
    tokio::time::timeout(Duration::from_millis(200), attempt)
        .await
        .ok()
        .flatten()
}
