//! Real `redis-server` processes for integration tests, and a workload that records every
//! operation.
//!
//! Each server gets its own loopback address (127.A.B.C, unique per process and server) and
//! listens on 6379, so tests never race for a free port. Servers are killed on drop.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod cluster;
pub mod replies;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::{Client, Config, Event};
use steadfast_testkit::{Listen, ServerLine};
use tokio::time::Instant;

/// Default config pointed at `server`.
pub fn config_for(server: &RedisServer) -> Config {
    let mut config = Config::default();
    config.endpoint.host = server.address.ip().to_string();
    config.endpoint.port = server.address.port();
    config
}

/// Default config for the name `primary.test`, resolved by `resolver`.
pub fn config_resolving(resolver: &StaticResolver) -> Config {
    let mut config = Config::default();
    config.endpoint.host = "primary.test".into();
    config.endpoint.resolver = Arc::new(resolver.clone());
    config
}

/// A client for `config` that has its first link.
pub async fn connected(config: Config) -> Client {
    let client = Client::new(config).unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    client
}

/// `CLIENT KILL TYPE normal` from `admin` (which is spared); returns how many were killed.
pub async fn kill_clients(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(admin)
        .await
        .unwrap()
}

/// Every event received so far.
pub fn drain(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}

static NEXT_SERVER: AtomicU32 = AtomicU32::new(0);

/// One redis-server process on its own loopback address.
pub struct RedisServer {
    pub address: SocketAddr,
    dir: std::path::PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `--option value` arguments.
    pub async fn start_with(extra: &[&str]) -> Self {
        let mut server = Self::reserve(extra);
        server.spawn_and_wait().await;
        server
    }

    /// Picks an address without starting anything (for "server down at start").
    pub fn reserve(extra: &[&str]) -> Self {
        let n = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ip = Ipv4Addr::new(
            127,
            10 + (pid % 200) as u8,
            (n / 250) as u8,
            (n % 250 + 2) as u8,
        );
        let dir = std::env::temp_dir().join(format!("steadfast-test-{pid}-{n}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            address: SocketAddr::new(IpAddr::V4(ip), 6379),
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Starts a cluster-enabled server that announces its own loopback address (without it,
    /// peers learn 127.0.0.1, the source address of loopback connections).
    pub async fn start_cluster_node(extra: &[&str]) -> Self {
        let mut server = Self::reserve(extra);
        let ip = server.address.ip().to_string();
        server.extra.extend(
            ["--cluster-enabled", "yes", "--cluster-announce-ip", &ip]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        server.spawn_and_wait().await;
        server
    }

    fn spawn(&mut self) {
        let child = ServerLine::new(Listen::Tcp(self.address.ip()))
            .dir(&self.dir)
            .args(&self.extra)
            .command("redis-server")
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
    }

    /// Starts a TLS-only server (`tls-port` 6379, no plain port) with `certs`; with
    /// `is_client_certificate_required`, clients must present a certificate the CA signed.
    pub async fn start_tls(certs: &TlsCerts, is_client_certificate_required: bool) -> Self {
        Self::start_tls_at(certs, certs.ip, is_client_certificate_required).await
    }

    /// [`RedisServer::start_tls`] on another loopback address (same certificate).
    pub async fn start_tls_at(
        certs: &TlsCerts,
        ip: IpAddr,
        is_client_certificate_required: bool,
    ) -> Self {
        let dir = certs.dir.display().to_string();
        let extra = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            "6379".to_owned(),
            "--tls-cert-file".to_owned(),
            format!("{dir}/server.pem"),
            "--tls-key-file".to_owned(),
            format!("{dir}/server.key"),
            "--tls-ca-cert-file".to_owned(),
            format!("{dir}/ca.pem"),
            "--tls-auth-clients".to_owned(),
            if is_client_certificate_required {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ];
        let mut server = Self::reserve(&[]);
        server.extra = extra.to_vec();
        server.address = SocketAddr::new(ip, 6379);
        server.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(server.address)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "TLS server never listened");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server
    }

    /// Starts the process (again) and returns once it answers PING.
    pub async fn spawn_and_wait(&mut self) -> Instant {
        self.spawn();
        self.wait_reachable(Duration::from_secs(10)).await
    }

    /// Polls until the server answers PING; returns when it first did.
    pub async fn wait_reachable(&self, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if self.ping().await {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{} never became reachable",
                self.address
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(self.address).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await.ok()?;
            // +PONG, or -NOAUTH from a server that wants a password: either way it answers.
            (n > 0 && (buf[0] == b'+' || buf[0] == b'-')).then_some(())
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(200), attempt).await,
            Ok(Some(()))
        )
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// A plain redis-rs connection for setting up and observing, outside the client under test.
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// Connections the server has accepted since it started (INFO stats).
    pub async fn connections_received(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.admin().await)
            .await
            .unwrap();
        info_field(&info, "total_connections_received")
    }

    /// Makes this server a replica of `primary` (`REPLICAOF host port`).
    pub async fn replicate(&self, primary: &RedisServer) {
        let _: () = redis::cmd("REPLICAOF")
            .arg(primary.address.ip().to_string())
            .arg(primary.address.port())
            .query_async(&mut self.admin().await)
            .await
            .unwrap();
    }

    /// Makes this server a primary again (`REPLICAOF NO ONE`).
    pub async fn promote(&self) {
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut self.admin().await)
            .await
            .unwrap();
    }

    /// `CLIENT LIST` lines of the connections blocked in `command` (`blpop` ...) now.
    pub async fn blocked_in(
        admin: &mut redis::aio::MultiplexedConnection,
        command: &str,
    ) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        list.lines()
            .filter(|line| line.contains(" flags=b ") && line.contains(&format!(" cmd={command}")))
            .map(str::to_owned)
            .collect()
    }

    /// Client connections named `name` the server has open now, asked on `admin`.
    pub async fn clients_named(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        list.lines()
            .filter(|l| l.split_whitespace().any(|kv| kv == format!("name={name}")))
            .count()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `yyyy-MM-ddTHH:mm:ss` in UTC, `ahead` from now, written by `date -u` (an Azure event's
/// `StartTimeInUTC`: whole seconds).
/// A `StartTimeInUTC` `ahead` from now, rounded down to whole seconds, and the instant it names.
pub fn utc_start_in(ahead: Duration) -> (String, tokio::time::Instant) {
    let (now, wall) = (tokio::time::Instant::now(), std::time::SystemTime::now());
    let secs = (wall + ahead)
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (text, now + start.duration_since(wall).unwrap_or_default())
}

pub fn utc_in(ahead: Duration) -> String {
    let at = std::time::SystemTime::now() + ahead;
    let secs = at
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in INFO"))
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub start: Instant,
    pub end: Instant,
    pub error: Option<String>,
}

/// SET then GET every 10 ms through `client`, recording every operation, until stopped.
pub struct Workload {
    ops: Arc<Mutex<Vec<Op>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    pub fn start(client: steadfast::Client) -> Self {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let ops = Arc::clone(&ops);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i: u64 = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let key = format!("k{}", i % 100);
                    let set = redis::cmd("SET").arg(&key).arg(i).to_owned();
                    record(&ops, client.query::<()>(&set)).await;
                    let get = redis::cmd("GET").arg(&key).to_owned();
                    record(&ops, client.query::<Option<u64>>(&get)).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        Self { ops, stop, task }
    }

    pub async fn stop(self) -> Vec<Op> {
        self.stop.cancel();
        self.task.await.unwrap();
        Arc::try_unwrap(self.ops).unwrap().into_inner().unwrap()
    }
}

async fn record<T>(
    ops: &Mutex<Vec<Op>>,
    op: impl std::future::Future<Output = Result<T, steadfast::Error>>,
) {
    let start = Instant::now();
    let result = op.await;
    let end = Instant::now();
    ops.lock().unwrap().push(Op {
        start,
        end,
        error: result.err().map(|e| e.to_string()),
    });
}

/// What a run of operations says.
#[derive(Debug)]
pub struct Summary {
    pub total: usize,
    pub failed: Vec<Op>,
    /// From `restored` to the end of the first operation that succeeded after it (zero if an
    /// operation had already succeeded by then, counted from `restored`).
    pub recovery: Duration,
    pub longest: Duration,
}

/// Summarises `ops` around a fault that began at `fault` and whose cause was gone at `restored`.
pub fn summarise(ops: &[Op], fault: Instant, restored: Instant) -> Summary {
    let failed: Vec<Op> = ops.iter().filter(|o| o.error.is_some()).cloned().collect();
    let first_success_after = ops
        .iter()
        .filter(|o| o.error.is_none() && o.end >= fault && o.start <= o.end)
        .filter(|o| o.end >= restored || o.start >= restored)
        .map(|o| o.end)
        .min()
        .expect("an operation succeeded after the fault");
    let longest = ops
        .iter()
        .map(|o| o.end - o.start)
        .max()
        .unwrap_or_default();
    Summary {
        total: ops.len(),
        failed,
        recovery: first_success_after.saturating_duration_since(restored),
        longest,
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "steadfast=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A CA, a server certificate for "localhost" and one IP, and a client certificate, as PEM files
/// in a temporary directory.
pub struct TlsCerts {
    pub dir: std::path::PathBuf,
    pub ip: IpAddr,
}

impl TlsCerts {
    /// Generates everything for a server on a fresh loopback address.
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let n = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ip = IpAddr::V4(Ipv4Addr::new(
            127,
            10 + (pid % 200) as u8,
            (n / 250) as u8,
            (n % 250 + 2) as u8,
        ));
        let dir = std::env::temp_dir().join(format!("steadfast-tls-{pid}-{n}"));
        std::fs::create_dir_all(&dir).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "steadfast test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params.subject_alt_names.push(SanType::IpAddress(ip));
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params =
            CertificateParams::new(vec!["steadfast-client".to_owned()]).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "steadfast-client");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        for (name, text) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server_cert.pem()),
            ("server.key", server_key.serialize_pem()),
            ("client.pem", client_cert.pem()),
            ("client.key", client_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Self { dir, ip }
    }
}

impl Drop for TlsCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
