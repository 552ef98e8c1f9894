//! Starts a local redis-server, runs one SET/GET every 10 ms through a steadfast client and a raw
//! redis-rs `MultiplexedConnection` side by side, kills the server with SIGKILL, restarts it two
//! seconds later, and prints what each client saw.
//!
//! Run: `cargo run --release -p steadfast --example ride_through_restart` (needs `redis-server`).
//! Exits non-zero if steadfast failed an operation or took longer than 100 ms to recover.

#![allow(clippy::print_stdout)]

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use steadfast::Event;
use steadfast_testkit::{Listen, ServerLine};
use tokio::time::Instant;

const ADDRESS: &str = "127.0.0.77";

struct Server(Option<Child>);

impl Server {
    fn start() -> Self {
        let ip = ADDRESS.parse().expect("an IP address");
        let child = ServerLine::new(Listen::Tcp(ip))
            .command("redis-server")
            .spawn()
            .expect("redis-server must be on PATH (apt-get install -y redis-server)");
        Self(Some(child))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_reachable() -> Instant {
    let client = redis::Client::open(format!("redis://{ADDRESS}:6379")).expect("url");
    for _ in 0..2_000 {
        if let Ok(mut con) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .is_ok()
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("redis-server did not come up");
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    longest: Duration,
    last_failure_end: Option<Instant>,
    first_success_after: Option<Instant>,
}

async fn drive<C: ConnectionLike + Send + 'static>(
    mut con: C,
    tally: Arc<Mutex<Tally>>,
    until: Instant,
    restored: Arc<Mutex<Option<Instant>>>,
) {
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let start = Instant::now();
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg("demo")
            .arg(i)
            .query_async(&mut con)
            .await;
        let get: redis::RedisResult<Option<u64>> =
            redis::cmd("GET").arg("demo").query_async(&mut con).await;
        let end = Instant::now();
        record(&tally, &restored, start, end, set.and(get));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn record<T>(
    tally: &Mutex<Tally>,
    restored: &Mutex<Option<Instant>>,
    start: Instant,
    end: Instant,
    outcome: redis::RedisResult<T>,
) {
    {
        let mut t = tally.lock().expect("tally");
        t.longest = t.longest.max(end - start);
        match outcome {
            Ok(_) => {
                t.ok += 1;
                let back = *restored.lock().expect("restored");
                if back.is_some_and(|at| end >= at) && t.first_success_after.is_none() {
                    t.first_success_after = Some(end);
                }
            }
            Err(e) => {
                t.failed += 1;
                t.last_failure_end = Some(end);
                t.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut server = Server::start();
    wait_reachable().await;
    let url = format!("redis://{ADDRESS}:6379");
    let steadfast = steadfast::Client::open(&url).expect("valid url");
    steadfast
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("connected");
    let raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");

    let mut events = steadfast.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::ReconnectScheduled { .. } => {}
                other => println!("  steadfast event: {other:?}"),
            }
        }
    });

    let until = Instant::now() + Duration::from_secs(5);
    let restored = Arc::new(Mutex::new(None));
    let tallies = [
        Arc::new(Mutex::new(Tally::default())),
        Arc::new(Mutex::new(Tally::default())),
    ];
    let runs = [
        tokio::spawn(drive(
            steadfast.clone(),
            tallies[0].clone(),
            until,
            restored.clone(),
        )),
        tokio::spawn(drive(raw, tallies[1].clone(), until, restored.clone())),
    ];

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    println!("t=1.0s  kill -9 redis-server");
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("t=3.0s  restart redis-server");
    let mut server = Server::start();
    let back = wait_reachable().await;
    *restored.lock().expect("restored") = Some(back);
    for run in runs {
        run.await.expect("workload");
    }
    steadfast.shutdown().await;
    server.kill();

    println!();
    println!(
        "{:<32} {:>6} {:>7} {:>12} {:>22}",
        "client", "ok", "failed", "longest op", "recovery after restart"
    );
    let mut is_goal_met = true;
    for (name, tally) in ["steadfast (defaults)", "redis-rs MultiplexedConnection"]
        .iter()
        .zip(&tallies)
    {
        let t = tally.lock().expect("tally");
        let recovery = t
            .first_success_after
            .map(|at| format!("{:?}", at.saturating_duration_since(back)))
            .unwrap_or_else(|| "never".to_owned());
        println!(
            "{name:<32} {:>6} {:>7} {:>12} {:>22}",
            t.ok,
            t.failed,
            format!("{:.0?}", t.longest),
            recovery
        );
        if let Some(e) = &t.first_error {
            println!("{:<32} first error: {e}", "");
        }
        if *name == "steadfast (defaults)" {
            let recovered_fast = t
                .first_success_after
                .is_some_and(|at| at.saturating_duration_since(back) <= Duration::from_millis(100));
            is_goal_met = t.failed == 0 && recovered_fast;
        }
    }
    if is_goal_met {
        println!("\nsteadfast: 0 failed operations, recovered within 100 ms of the restart");
        std::process::ExitCode::SUCCESS
    } else {
        println!("\nsteadfast missed its goal (0 failed, recovery within 100 ms)");
        std::process::ExitCode::FAILURE
    }
}
