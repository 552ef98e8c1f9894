//! The one `redis-server` command line that steadfast's tests, benches, example, command-line
//! tests and failover lab start their servers with, so a setting every one of them needs (no
//! persistence, `DEBUG` allowed ...) is written once.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use steadfast_testkit::{Listen, ServerLine};
//!
//! let line = ServerLine::new(Listen::Tcp(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))))
//!     .arg("--maxmemory")
//!     .arg("64mb");
//! let command = line.command("redis-server");
//! let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
//! assert_eq!(&args[..4], ["--bind", "127.0.0.9", "--port", "6379"]);
//! assert!(args.ends_with(&["--maxmemory".to_owned(), "64mb".to_owned()]));
//! ```

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The port every server listens on: each test server gets its own loopback address instead.
pub const PORT: u16 = 6379;

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// TCP on this address, port [`PORT`].
    Tcp(IpAddr),
    /// TLS only, on this address, port [`PORT`] (no plain port); the TLS files come as
    /// [`ServerLine::arg`]s.
    TlsOnly(IpAddr),
    /// A Unix socket at this path, no TCP port.
    Unix(PathBuf),
}

/// A `redis-server` command line: the settings every steadfast test server shares, then the
/// caller's own.
///
/// Shared settings: no RDB snapshots and no append-only file (a test controls persistence
/// itself when it wants it), protected mode off (servers are bound to private loopback or
/// namespace addresses), `DEBUG` allowed (`DEBUG SLEEP` is how a slow server is made), a new
/// replica's full sync at once (the default waits 5 s for others), a replica announcing the
/// address it listens on (a loopback connection's source is 127.0.0.1, which `FAILOVER` would
/// otherwise dial), and output discarded.
#[derive(Clone, Debug)]
pub struct ServerLine {
    listen: Listen,
    dir: Option<PathBuf>,
    extra: Vec<OsString>,
}

impl ServerLine {
    /// The shared settings, listening as `listen`.
    pub fn new(listen: Listen) -> Self {
        Self {
            listen,
            dir: None,
            extra: Vec::new(),
        }
    }

    /// The server's working directory (its dump, AOF and cluster files).
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// One more argument, after the shared ones (a later setting overrides an earlier one).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// More arguments, after the shared ones.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command: `program` (normally `redis-server`) with the line's arguments.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        self.add_to(&mut command);
        command
    }

    /// Adds the line's arguments to `command`, which already names the program (for example
    /// `ip netns exec NAME redis-server`), and discards its output.
    pub fn add_to(&self, command: &mut Command) {
        match &self.listen {
            Listen::Tcp(ip) => {
                command.args(["--bind", &ip.to_string(), "--port", &PORT.to_string()]);
                command.args(["--replica-announce-ip", &ip.to_string()]);
            }
            Listen::TlsOnly(ip) => {
                command.args(["--bind", &ip.to_string(), "--port", "0"]);
                command.args(["--replica-announce-ip", &ip.to_string()]);
                command.args(["--tls-port", &PORT.to_string()]);
            }
            Listen::Unix(path) => {
                command.args(["--port", "0", "--unixsocket"]).arg(path);
            }
        }
        command.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        command.args(["--enable-debug-command", "yes"]);
        command.args(["--repl-diskless-sync-delay", "0"]);
        if let Some(dir) = &self.dir {
            command.arg("--dir").arg(dir);
        }
        command.args(&self.extra);
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
}

/// A redis-server on a private loopback address with the shared settings, for tests of the
/// crates that need just one (the CLI's, the proxy's); killed when dropped.
pub struct TestServer {
    child: Option<std::process::Child>,
    line: ServerLine,
    /// Where it listens.
    pub address: std::net::SocketAddr,
}

impl TestServer {
    /// Starts a server on `ip` (a loopback address of the caller's choice, so that tests
    /// running at once do not meet) with `extra` arguments, and waits (10 s at most) until it
    /// accepts connections.
    ///
    /// # Panics
    /// When redis-server is not installed or never listens: a test cannot go on.
    pub async fn start(ip: IpAddr, extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            line: ServerLine::new(Listen::Tcp(ip)).args(extra),
            address: std::net::SocketAddr::new(ip, PORT),
        };
        server.restart().await;
        server
    }

    /// Starts it again (after [`TestServer::kill`]) and waits until it accepts connections.
    ///
    /// # Panics
    /// As [`TestServer::start`].
    pub async fn restart(&mut self) {
        let child = self
            .line
            .command("redis-server")
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.address).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on {} never listened",
                self.address
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// `kill -9`, and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (`SIGSTOP`): the kernel still accepts connections, nothing answers.
    ///
    /// # Panics
    /// When it is not running, or the signal cannot be sent: the test cannot go on.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server run again (`SIGCONT`).
    ///
    /// # Panics
    /// As [`TestServer::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("the server runs")
            .id()
            .to_string();
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    /// `redis://ADDRESS`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &ServerLine) -> Vec<String> {
        line.command("redis-server")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_unix_socket_server_listens_on_no_tcp_port() {
        let line = ServerLine::new(Listen::Unix("/tmp/x.sock".into()));
        let args = args(&line);
        assert_eq!(&args[..4], ["--port", "0", "--unixsocket", "/tmp/x.sock"]);
    }

    #[test]
    fn the_callers_settings_come_after_the_shared_ones_so_they_win() {
        let ip = IpAddr::from([127, 0, 0, 9]);
        let line = ServerLine::new(Listen::Tcp(ip))
            .dir("/tmp/d")
            .args(["--save", "60 1"]);
        let args = args(&line);
        let shared = args
            .iter()
            .position(|a| a == "--save")
            .unwrap_or(usize::MAX);
        let own = args.iter().rposition(|a| a == "--save").unwrap_or(0);
        assert!(shared < own, "{args:?}");
        assert!(
            args.windows(2).any(|w| w == ["--dir", "/tmp/d"]),
            "{args:?}"
        );
    }

    #[test]
    fn a_tls_only_server_has_no_plain_port() {
        let line = ServerLine::new(Listen::TlsOnly(IpAddr::from([127, 0, 0, 9])));
        let args = args(&line);
        assert!(args.windows(2).any(|w| w == ["--port", "0"]), "{args:?}");
        assert!(
            args.windows(2).any(|w| w == ["--tls-port", "6379"]),
            "{args:?}"
        );
    }
}
