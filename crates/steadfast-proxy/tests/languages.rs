//! Applications in other languages, with their clients' defaults, through the proxy and real
//! faults: redis-py and ioredis running the workload programs in `clients/` (installed by
//! `clients/setup`, which the README's test command runs).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../steadfast/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{ip, proxy_with};
use serde_json::Value;
use steadfast::connect::resolve::StaticResolver;
use steadfast_testkit::TestServer;

fn clients() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients")
}

/// The command that runs `language`'s workload program.
fn program(language: &str) -> tokio::process::Command {
    let dir = clients();
    match language {
        "python" => {
            let venv = dir.join("python/.venv/bin/python");
            let python = if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            };
            let mut command = tokio::process::Command::new(python);
            command.arg(dir.join("python/workload.py"));
            command
        }
        _ => {
            let mut command = tokio::process::Command::new("node");
            command.arg(dir.join("node/workload.js"));
            command
        }
    }
}

/// Runs `workload` in `language` against `address` for `seconds`; its report.
async fn run(
    language: &str,
    workload: &str,
    address: SocketAddr,
    seconds: u32,
    key: &str,
) -> Value {
    run_as(language, "standalone", workload, address, seconds, key).await
}

/// [`run`] with the program connecting in `mode` (`standalone`, `cluster`).
async fn run_as(
    language: &str,
    mode: &str,
    workload: &str,
    address: SocketAddr,
    seconds: u32,
    key: &str,
) -> Value {
    let mut command = program(language);
    command
        .args(["--mode", mode])
        .args(["--host", &address.ip().to_string()])
        .args(["--port", &address.port().to_string()])
        .args(["--seconds", &seconds.to_string(), "--key", key, workload])
        .kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_secs(u64::from(seconds) + 30),
        command.output(),
    )
    .await
    .expect("the workload ends")
    .expect("the workload program runs (clients/setup installs redis-py and ioredis)");
    assert!(
        output.status.success(),
        "{language} {workload}: {}\n(clients/setup installs redis-py and ioredis)",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn failures(report: &Value) -> Vec<String> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn count(report: &Value, name: &str) -> i64 {
    report[name].as_i64().unwrap_or(0)
}

async fn get(server: &TestServer, key: &str) -> i64 {
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<i64>>(&mut direct)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Waits (10 s at most) until every workload of `keys` has begun on `server`: a counter or
/// transaction key written, a pubsub channel subscribed; then half a second more.
async fn until_started(server: &TestServer, keys: &[String]) {
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for key in keys {
        loop {
            let is_started = if key.ends_with("pubsub") {
                let numsub: (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(format!("{key}:channel"))
                    .query_async(&mut direct)
                    .await
                    .unwrap();
                numsub.1 > 0
            } else {
                get(server, key).await > 0
            };
            if is_started {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{key} never began");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_and_ioredis_with_their_defaults_ride_through_a_coordinated_failover_without_a_failed_operation()
 {
    common::init_tracing();
    let a = TestServer::start(ip(31), &[]).await;
    let b = TestServer::start(ip(32), &[]).await;
    let mut on_b = redis::Client::open(b.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(a.address.ip().to_string())
        .arg(a.address.port())
        .query_async(&mut on_b)
        .await
        .unwrap();
    let resolver = StaticResolver::new(vec![a.address]);
    let mut upstream = steadfast::Config::from_url("redis://primary.test:6379").unwrap();
    upstream.endpoint.resolver = Arc::new(resolver.clone());
    let (proxy, address) = proxy_with(upstream, None).await;

    let (mut runs, mut keys) = (Vec::new(), Vec::new());
    for language in ["python", "node"] {
        for workload in ["counter", "transaction"] {
            let key = format!("{language}:{workload}");
            keys.push(key.clone());
            runs.push(tokio::spawn(async move {
                (key.clone(), run(language, workload, address, 6, &key).await)
            }));
        }
    }
    // Once every workload runs, a coordinated failover: A pauses writes until B has caught
    // up, B is promoted, A becomes its replica; the name moves to B.
    until_started(&a, &keys).await;
    let mut on_a = redis::Client::open(a.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FAILOVER").query_async(&mut on_a).await.unwrap();
    resolver.set(vec![b.address]);

    for run in runs {
        let (key, report) = run.await.unwrap();
        eprintln!("{key}: {report}");
        assert_eq!(failures(&report), Vec::<String>::new(), "{key}: {report}");
        let on_server = get(&b, &key).await;
        match report["workload"].as_str() {
            Some("counter") => {
                assert!(count(&report, "incr_ok") > 100, "{key}: {report}");
                assert_eq!(
                    on_server,
                    count(&report, "incr_ok"),
                    "{key}: nothing lost or doubled"
                );
            }
            _ => {
                assert!(count(&report, "committed") > 100, "{key}: {report}");
                assert_eq!(on_server, count(&report, "committed"), "{key}: {report}");
            }
        }
    }
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut on_b).await.unwrap();
    assert_eq!(
        role[0],
        redis::Value::BulkString(b"master".to_vec()),
        "B was promoted"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_and_ioredis_keep_their_connections_through_a_kill_and_hear_of_the_pubsub_gap() {
    let mut server = TestServer::start(ip(33), &[]).await;
    let upstream = steadfast::Config::from_url(&server.url()).unwrap();
    let (proxy, address) = proxy_with(upstream, None).await;
    let (mut runs, mut keys) = (Vec::new(), Vec::new());
    for language in ["python", "node"] {
        for workload in ["counter", "pubsub"] {
            let key = format!("{language}:{workload}");
            keys.push(key.clone());
            runs.push(tokio::spawn(async move {
                (key.clone(), run(language, workload, address, 6, &key).await)
            }));
        }
    }
    until_started(&server, &keys).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;

    for run in runs {
        let (key, report) = run.await.unwrap();
        eprintln!("{key}: {report}");
        // A kill loses what was in flight: at most the one command of each sequential loop,
        // told as UNKNOWNOUTCOME; nothing else fails, and the connection is never lost.
        let failed = failures(&report);
        assert!(failed.len() <= 1, "{key}: {report}");
        assert!(
            failed.iter().all(|e| e.starts_with("UNKNOWNOUTCOME")),
            "{key}: {report}"
        );
        assert!(count(&report, "ok") > 500, "{key}: {report}");
        if report["workload"] == "pubsub" {
            // What the server passed on arrives, unless it was published inside the gap the
            // proxy told (the kill may take what the server had written and not yet sent).
            assert_eq!(
                report["missing_outside_gaps"], 0,
                "every message heard arrived: {report}"
            );
            assert_eq!(count(&report, "duplicates"), 0, "{report}");
            let gaps = report["gaps"].as_array().unwrap();
            assert_eq!(gaps.len(), 1, "{key}: {report}");
            assert_eq!(gaps[0]["channels"][0], format!("{key}:channel"), "{report}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_redis_py_and_ioredis_see_one_node_and_a_shard_failover_costs_them_nothing() {
    common::init_tracing();
    let nodes = support::cluster::six_node_cluster().await;
    let mut config =
        steadfast_proxy::ProxyConfig::new(steadfast::Config::from_url(&nodes[0].url()).unwrap());
    config.is_cluster = true;
    let (proxy, address) = common::start(config).await;
    // Keys on shard 0, whose primary fails over under the programs.
    let (mut runs, mut keys) = (Vec::new(), Vec::new());
    for language in ["python", "node"] {
        let key = (0u64..)
            .map(|i| format!("{{cluster-{language}-{i}}}"))
            .find(|k| {
                support::cluster::owner_index(steadfast::cluster::key_slot(k.as_bytes())) == 0
            })
            .unwrap();
        keys.push(key.clone());
        runs.push(tokio::spawn(async move {
            let report = run_as(language, "cluster", "counter", address, 5, &key).await;
            (key, report)
        }));
    }
    // Once both count on shard 0's primary, its replica takes over (CLUSTER FAILOVER).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut on_primary = nodes[0].admin().await;
    for key in &keys {
        while redis::cmd("GET")
            .arg(key)
            .query_async::<Option<i64>>(&mut on_primary)
            .await
            .unwrap()
            .is_none()
        {
            assert!(tokio::time::Instant::now() < deadline, "{key} never began");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    support::cluster::fail_over_to(&nodes[3]).await;
    for run in runs {
        let (key, report) = run.await.unwrap();
        eprintln!("{key}: {report}");
        assert_eq!(failures(&report), Vec::<String>::new(), "{key}: {report}");
        assert!(count(&report, "incr_ok") > 100, "{key}: {report}");
        let on_new_primary: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut nodes[3].admin().await)
            .await
            .unwrap();
        assert_eq!(
            on_new_primary,
            count(&report, "incr_ok"),
            "{key}: nothing lost or doubled"
        );
    }
    proxy.shutdown().await;
}

/// `redis-cli` (Debian's, beside the server) with `args` against `address`; its output.
async fn redis_cli(address: SocketAddr, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("redis-cli")
            .args(["-h", &address.ip().to_string()])
            .args(["-p", &address.port().to_string()])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("redis-cli ends")
    .expect("redis-cli runs (redis-tools, installed with redis-server)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_works_through_the_proxy_in_resp2_and_resp3() {
    let server = TestServer::start(ip(40), &[]).await;
    let upstream = steadfast::Config::from_url(&server.url()).unwrap();
    let (proxy, address) = proxy_with(upstream, None).await;
    assert_eq!(redis_cli(address, &["SET", "cli:k", "v1"]).await, "OK");
    assert_eq!(redis_cli(address, &["GET", "cli:k"]).await, "v1");
    assert_eq!(
        redis_cli(address, &["-3", "INCRBY", "cli:n", "7"]).await,
        "7"
    );
    let hello = redis_cli(address, &["-3", "HELLO", "3"]).await;
    assert!(hello.contains("proto") && hello.contains('3'), "{hello}");
    assert_eq!(
        redis_cli(address, &["-n", "4", "SET", "cli:db", "four"]).await,
        "OK"
    );
    let mut four = redis::Client::open(format!("{}/4", server.url()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg("cli:db")
        .query_async(&mut four)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("four"));
    proxy.shutdown().await;
}
