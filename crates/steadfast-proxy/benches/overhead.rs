//! What the proxy costs on loopback: redis-rs `MultiplexedConnection` with its defaults,
//! straight to a local redis-server ("direct"), through `steadfast proxy` and through
//! twemproxy (Debian's `nutcracker`, when installed), measured side by side in one run.
//!
//! Loads: GET of 100 B at 1 connection with 1 request in flight (the latency a proxy adds),
//! GET at 16 connections, and pipelines of 10 GETs at 16 and 256 connections (each a
//! connection of its own, so each a downstream connection of the proxy). The three paths take
//! turns in slices of `STEADFAST_BENCH_MILLIS` (default 250) in rotating order,
//! `STEADFAST_BENCH_ROUNDS` times (default 10), after two unmeasured rounds; throughput is the
//! median over the slices, p50 / p99 pooled over every latency. `cpu/req`: CPU time (user +
//! system) of the proxy alone per command: its process's. Like twemproxy, the proxy is a process
//! of its own, as a sidecar is: this bench started again with `STEADFAST_BENCH_PROXY_OF` set runs
//! only the proxy, on the runtime `steadfast proxy` has by default (one thread:
//! `steadfast_proxy::runtime(1)`; `STEADFAST_BENCH_PROXY_THREADS=N` for N worker threads).
//! A fourth path, "byte copy (floor)", is the floor of any proxy on that runtime: a process of
//! the same kind that copies bytes between each client connection and one server connection of
//! its own (`tokio::io::copy_bidirectional`), with no parsing, routing or recovery at all.
//! A fifth, "byte mux (floor)", has the shape of the proxy's shared upstream link (a task per
//! client connection, one task owning one server connection, a channel and a oneshot between
//! them) with commands and replies kept as bytes, on the library's own connection
//! (`steadfast::bench_api::Wire`): what the proxy's links could reach carrying bytes.
//!
//! Run: `cargo bench -p steadfast-proxy --bench overhead` (needs `redis-server`; `nutcracker`
//! is optional: `apt-get install nutcracker`). `STEADFAST_BENCH_JSON=FILE` also writes the
//! rows as JSON; `STEADFAST_BENCH_LOADS=get1,get16,pipeline16,pipeline256` (any of them) runs
//! only the loads named.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

/// The allocator the `steadfast` binary serves with (its proxy process is this bench's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use steadfast_proxy::{Listen, Proxy, ProxyConfig};
use steadfast_testkit::TestServer;
use tokio::time::Instant;

/// Where the CPU a path's proxy spends is read.
#[derive(Clone)]
enum Cpu {
    None,
    /// A process's stat file.
    Process(String),
}

impl Cpu {
    fn now(&self) -> Duration {
        match self {
            Self::None => Duration::ZERO,
            Self::Process(path) => support::cpu_of(path),
        }
    }
}

struct Path {
    name: &'static str,
    address: SocketAddr,
    is_twemproxy: bool,
    cpu: Cpu,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Pipeline10,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET 100 B",
            Self::Pipeline10 => "pipeline of 10 GETs",
        }
    }

    fn commands(self) -> u64 {
        match self {
            Self::Get => 1,
            Self::Pipeline10 => 10,
        }
    }
}

async fn connect(path: &Path) -> MultiplexedConnection {
    let mut info =
        redis::IntoConnectionInfo::into_connection_info(format!("redis://{}", path.address))
            .unwrap();
    if path.is_twemproxy {
        // twemproxy closes the connection on CLIENT SETINFO, which redis-rs sends by default.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

struct Sample {
    per_second: f64,
    latencies: Vec<Duration>,
    cpu: Duration,
    commands: u64,
}

async fn run(connections: &[MultiplexedConnection], cpu: &Cpu, op: Op, slice: Duration) -> Sample {
    let cpu_before = cpu.now();
    let until = Instant::now() + slice;
    let workers: Vec<_> = connections
        .iter()
        .enumerate()
        .map(|(n, connection)| {
            let mut connection = connection.clone();
            tokio::spawn(async move {
                let key = format!("bench:{}", n % 64);
                let mut latencies = Vec::with_capacity(10_000);
                while Instant::now() < until {
                    let started = Instant::now();
                    match op {
                        Op::Get => {
                            let _: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(&key)
                                .query_async(&mut connection)
                                .await
                                .unwrap();
                        }
                        Op::Pipeline10 => {
                            let mut pipe = redis::pipe();
                            for _ in 0..10 {
                                pipe.cmd("GET").arg(&key);
                            }
                            let _: Vec<Option<Vec<u8>>> =
                                pipe.query_async(&mut connection).await.unwrap();
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
        per_second: all.len() as f64 / slice.as_secs_f64(),
        commands: all.len() as u64 * op.commands(),
        latencies: all,
        cpu: cpu.now().saturating_sub(cpu_before),
    }
}

fn quantile_us(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A child process killed when dropped (a panicking bench leaves no nutcracker behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// twemproxy in front of `server` on `listen`, if `nutcracker` is installed.
fn twemproxy(server: SocketAddr, listen: SocketAddr) -> Option<(Killed, tempdir::Dir)> {
    let dir = tempdir::Dir::new("steadfast-bench-nutcracker");
    let config = dir.path.join("nutcracker.yml");
    std::fs::write(
        &config,
        format!(
            "bench:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - {server}:1\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("nutcracker")
        .arg("-c")
        .arg(&config)
        .arg("-o")
        .arg(dir.path.join("nutcracker.log"))
        .arg("-p")
        .arg(dir.path.join("nutcracker.pid"))
        // Its stats server on a port of its own (the default, 22222, may be taken).
        .args(["-a", "127.0.0.1", "-s", &(listen.port() + 1).to_string()])
        .spawn()
        .ok()?;
    Some((Killed(child), dir))
}

mod tempdir {
    /// A directory removed on drop.
    pub(super) struct Dir {
        pub(super) path: std::path::PathBuf,
    }

    impl Dir {
        pub(super) fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The variable that makes this bench run only the proxy, in front of the server it names.
const PROXY_OF: &str = "STEADFAST_BENCH_PROXY_OF";
/// Set (to the server's address) in the byte-copy floor's process.
const COPY_OF: &str = "STEADFAST_BENCH_COPY_OF";

/// Serves a floor on the proxy's runtime: prints the address it listens on, then runs `serve`
/// (given the listener and the server's address) until it ends or standard input closes.
fn serve_floor<F, S>(server: &str, serve: S)
where
    S: FnOnce(tokio::net::TcpListener, SocketAddr) -> F,
    F: std::future::Future<Output = ()>,
{
    let server: SocketAddr = server.parse().unwrap();
    let runtime = steadfast_proxy::runtime(1).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((
            IpAddr::from([127, 0, 0, 1]),
            0,
        )))
        .unwrap();
    println!("{}", listener.local_addr().unwrap());
    let stdin_closed = stdin_closed();
    runtime.block_on(async move {
        tokio::select! {
            () = serve(listener, server) => {}
            _ = stdin_closed => {}
        }
    });
}

/// The byte-copy floor's process: on the proxy's runtime, each accepted connection gets a
/// connection to `server` of its own and bytes are copied both ways.
fn serve_copy(server: &str) {
    serve_floor(server, |listener, server| async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(server).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
}

/// Set (to the server's address) in the multiplexed byte floor's process.
const MUX_OF: &str = "STEADFAST_BENCH_MUX_OF";

/// The multiplexed byte floor's process: the shape of the proxy's shared upstream link (each
/// client connection's task hands its complete commands to one connection of the library's
/// own, `steadfast::bench_api::Wire`, whose task writes them and hands each its replies back,
/// in order), with commands and replies kept as bytes: no redis-rs, no parse into values, no
/// re-encoding, no recovery. What the library's links could reach carrying bytes.
fn serve_mux(server: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve_floor(server, |listener, server| async move {
        let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
        upstream.set_nodelay(true).unwrap();
        let (wire, driver) = steadfast::bench_api::Wire::new(upstream, 4096);
        tokio::spawn(driver);
        while let Ok((mut client, _)) = listener.accept().await {
            let wire = wire.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut buf: Vec<u8> = Vec::with_capacity(4096);
                loop {
                    match client.read_buf(&mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                    let mut used = 0;
                    let mut count = 0;
                    while let Ok(Some(length)) =
                        steadfast::fuzz_api::resp_frame_length(&buf[used..])
                    {
                        used += length;
                        count += 1;
                    }
                    if count == 0 {
                        continue;
                    }
                    let Ok(reply) = wire.send(buf[..used].to_vec(), count).await else {
                        return;
                    };
                    buf.drain(..used);
                    if client.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Resolves when this process's standard input closes (the bench ended, even by a panic).
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed.send(());
    });
    stdin_closed
}

/// The proxy's process: it prints the address it listens on, then serves until its standard
/// input closes (the bench ended, even by a panic).
fn serve_proxy(server_url: &str) {
    let threads = std::env::var("STEADFAST_BENCH_PROXY_THREADS").map_or(1, |threads| {
        threads
            .parse()
            .expect("STEADFAST_BENCH_PROXY_THREADS: a number")
    });
    let runtime = steadfast_proxy::runtime(threads).unwrap();
    let proxy = runtime.block_on(async {
        let mut config = ProxyConfig::new(steadfast::Config::from_url(server_url).unwrap());
        config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
        Proxy::start(config).await.unwrap()
    });
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };
    println!("{address}");
    let stdin_closed = stdin_closed();
    runtime.block_on(async {
        let _ = stdin_closed.await;
        proxy.shutdown().await;
    });
}

/// This bench run again with `role` set to `server` (`PROXY_OF`: `steadfast proxy` in front of
/// a server URL, `COPY_OF`: the byte-copy floor in front of an address): a process of its own,
/// and the address it listens on.
fn proxy_process(role: &str, server: &str) -> (Killed, SocketAddr) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(role, server)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the proxy process said {line:?}: {e}"));
    (Killed(child), address)
}

fn main() {
    if let Ok(server_url) = std::env::var(PROXY_OF) {
        return serve_proxy(&server_url);
    }
    if let Ok(server) = std::env::var(COPY_OF) {
        return serve_copy(&server);
    }
    if let Ok(server) = std::env::var(MUX_OF) {
        return serve_mux(&server);
    }
    let slice = Duration::from_millis(support::env_number("STEADFAST_BENCH_MILLIS", 250));
    let rounds = support::env_number("STEADFAST_BENCH_ROUNDS", 10) as usize;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ip = IpAddr::from([127, 216, (std::process::id() % 250) as u8, 1]);
    let server = load.block_on(TestServer::start(ip, &[]));
    let (proxy, proxy_address) = proxy_process(PROXY_OF, &server.url());
    let (copy, copy_address) = proxy_process(COPY_OF, &server.address.to_string());
    let (mux, mux_address) = proxy_process(MUX_OF, &server.address.to_string());
    let twemproxy_address = SocketAddr::from((
        [127, 0, 0, 1],
        22_000 + (std::process::id() % 20_000) as u16,
    ));
    let nutcracker = twemproxy(server.address, twemproxy_address);
    let mut paths = vec![
        Path {
            name: "direct",
            address: server.address,
            is_twemproxy: false,
            cpu: Cpu::None,
        },
        Path {
            name: "steadfast proxy",
            address: proxy_address,
            is_twemproxy: false,
            cpu: Cpu::Process(format!("/proc/{}/stat", proxy.0.id())),
        },
        Path {
            name: "byte copy (floor)",
            address: copy_address,
            is_twemproxy: false,
            cpu: Cpu::Process(format!("/proc/{}/stat", copy.0.id())),
        },
        Path {
            name: "byte mux (floor)",
            address: mux_address,
            is_twemproxy: false,
            cpu: Cpu::Process(format!("/proc/{}/stat", mux.0.id())),
        },
    ];
    if let Some((child, _)) = &nutcracker {
        let is_listening = load.block_on(async {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(twemproxy_address)
                    .await
                    .is_ok()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        if !is_listening {
            println!("twemproxy: nutcracker did not listen within 2 s; its rows are left out");
        }
        if is_listening {
            paths.push(Path {
                name: "twemproxy",
                address: twemproxy_address,
                is_twemproxy: true,
                cpu: Cpu::Process(format!("/proc/{}/stat", child.0.id())),
            });
        }
    } else {
        println!("twemproxy: not installed (apt-get install nutcracker); its rows are left out");
    }
    load.block_on(async {
        let mut seed = connect(&paths[0]).await;
        for key in 0..64 {
            let _: () = redis::cmd("SET")
                .arg(format!("bench:{key}"))
                .arg(vec![b'x'; 100])
                .query_async(&mut seed)
                .await
                .unwrap();
        }
    });

    println!(
        "{:<20} {:>5} {:<18} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8}",
        "operation", "conns", "path", "req/s", "p50", "p99", "x tput", "+p50", "cpu/cmd"
    );
    let mut rows = Vec::new();
    let loads = [
        ("get1", Op::Get, 1),
        ("get16", Op::Get, 16),
        ("pipeline16", Op::Pipeline10, 16),
        ("pipeline256", Op::Pipeline10, 256),
    ];
    let chosen = std::env::var("STEADFAST_BENCH_LOADS").unwrap_or_default();
    let is_chosen = |name: &str| chosen.is_empty() || chosen.split(',').any(|c| c.trim() == name);
    for (_, op, connections) in loads.into_iter().filter(|(name, ..)| is_chosen(name)) {
        let pools: Vec<Vec<MultiplexedConnection>> = load.block_on(async {
            let mut pools = Vec::new();
            for path in &paths {
                let mut pool = Vec::new();
                for _ in 0..connections {
                    pool.push(connect(path).await);
                }
                pools.push(pool);
            }
            pools
        });
        let mut samples: Vec<Vec<Sample>> = paths.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds + 2 {
            for offset in 0..paths.len() {
                let index = (round + offset) % paths.len();
                let sample = load.block_on(run(&pools[index], &paths[index].cpu, op, slice));
                if round >= 2 {
                    samples[index].push(sample);
                }
            }
        }
        let results: Vec<(f64, f64, f64, f64)> = samples
            .into_iter()
            .map(|s| {
                let rate = median(s.iter().map(|x| x.per_second).collect());
                let cpu: Duration = s.iter().map(|x| x.cpu).sum();
                let commands: u64 = s.iter().map(|x| x.commands).sum();
                let mut pooled: Vec<Duration> = s.into_iter().flat_map(|x| x.latencies).collect();
                pooled.sort_unstable();
                let cpu_per_command = cpu.as_secs_f64() * 1e6 / commands.max(1) as f64;
                (
                    rate,
                    quantile_us(&pooled, 0.5),
                    quantile_us(&pooled, 0.99),
                    cpu_per_command,
                )
            })
            .collect();
        let direct = results[0];
        for (path, (rate, p50, p99, cpu)) in paths.iter().zip(&results) {
            let cpu_text = if matches!(path.cpu, Cpu::None) {
                "-".to_owned()
            } else {
                format!("{cpu:.2}us")
            };
            println!(
                "{:<20} {:>5} {:<18} {:>9.0} {:>7.1}us {:>7.1}us {:>7.3} {:>6.1}us {:>8}",
                op.name(),
                connections,
                path.name,
                rate,
                p50,
                p99,
                rate / direct.0,
                p50 - direct.1,
                cpu_text
            );
            rows.push(serde_json::json!({
                "operation": op.name(),
                "connections": connections,
                "path": path.name,
                "requests_per_second": rate.round(),
                "p50_us": p50,
                "p99_us": p99,
                "throughput_ratio": rate / direct.0,
                "p50_added_us": p50 - direct.1,
                "proxy_cpu_us_per_command": (!matches!(path.cpu, Cpu::None)).then_some(*cpu),
            }));
        }
    }
    if let Ok(file) = std::env::var("STEADFAST_BENCH_JSON") {
        // A relative path is the workspace's (cargo runs benches in the crate's directory).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file);
        std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    drop(proxy);
    drop(copy);
    drop(mux);
    drop(nutcracker);
}
