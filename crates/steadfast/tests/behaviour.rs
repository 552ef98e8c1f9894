//! Behaviour against real redis-server processes: slow is not dead, bad credentials fail
//! clearly, nothing leaks, nothing is applied twice, and redis-rs code works unchanged.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use steadfast::{Client, Config, ErrorKind, Event, Password, RedisErrorExt};
use support::{RedisServer, Workload, config_for, connected, drain, init_tracing, kill_clients};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_is_not_mistaken_for_a_dead_link() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reply: String = client
        .query(redis::cmd("DEBUG").arg("SLEEP").arg(3))
        .await
        .unwrap();
    assert_eq!(reply, "OK");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = workload.stop().await;

    let seen = drain(&mut events);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::HeartbeatMissed { .. })),
        "the 3 s stall was noticed: {seen:?}"
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "a busy server is not dead: {seen:?}"
    );
    let failed: Vec<_> = ops.iter().filter(|o| o.error.is_some()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_is_judged_alive_and_keeps_its_link() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.deadline = Duration::from_secs(12);
    let client = connected(config).await;
    let mut events = client.events();

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .query::<Option<(String, String)>>(redis::cmd("BLPOP").arg("jobs").arg(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(7)).await;
    let _: u64 = server.admin().await.lpush("jobs", "job-1").await.unwrap();
    let popped = waiter.await.unwrap().unwrap();
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));

    let seen = drain(&mut events);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::ProbeVerdict {
                verdict: steadfast::health::Verdict::Alive(_),
                ..
            }
        )),
        "the probe saw the connection blocked: {seen:?}"
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "{seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_clearly_and_retries_with_backoff_not_a_hot_loop() {
    init_tracing();
    let server = RedisServer::start_with(&["--requirepass", "right-horse"]).await;
    let mut config = config_for(&server);
    config.endpoint.password = Some(Password::new("wrong-SECRET-staple"));
    let client = Client::new(config).unwrap();
    let mut events = client.events();

    let started = Instant::now();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fails fast: {:?}",
        started.elapsed()
    );
    let text = format!("{err} {err:?}");
    assert!(
        // RESP3's HELLO carries the server's WRONGPASS text; RESP2's AUTH, redis-rs's own.
        text.contains("WRONGPASS")
            || text.contains("invalid")
            || text.contains("authentication failed"),
        "{text}"
    );
    assert!(!text.contains("wrong-SECRET-staple"), "{text}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts: Vec<Duration> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::ReconnectScheduled { delay, error, .. } => {
                assert!(!error.contains("wrong-SECRET-staple"));
                Some(delay)
            }
            _ => None,
        })
        .collect();
    assert!(
        (2..=12).contains(&attempts.len()),
        "3 s of exponential backoff from 100 ms allows a handful of attempts: {attempts:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_leave_one_socket_and_shutdown_leaves_none_and_no_task() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut config = config_for(&server);
    config.endpoint.client_name = Some("leakcheck".into());
    let client = connected(config).await;

    for round in 0..5 {
        let _ = kill_clients(&mut admin).await;
        let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, "PONG", "round {round}");
    }
    assert_eq!(
        RedisServer::clients_named(&mut admin, "leakcheck").await,
        1,
        "old links were closed"
    );

    client.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while RedisServer::clients_named(&mut admin, "leakcheck").await > 0 {
        assert!(Instant::now() < deadline, "a socket outlived shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A finished task's cell is released a moment after its future is dropped: poll, bounded.
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive() > tasks_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(alive(), tasks_before, "a task outlived shutdown");
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_link() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.endpoint.client_name = Some("dropcheck".into());
    let client = connected(config).await;
    let mut admin = server.admin().await;
    assert_eq!(RedisServer::clients_named(&mut admin, "dropcheck").await, 1);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(2);
    while RedisServer::clients_named(&mut admin, "dropcheck").await > 0 {
        assert!(Instant::now() < deadline, "the link outlived the client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Tasks of the non-idempotent workload below: each has at most one command in flight, so no
/// kill can leave more than this many outcomes unknown.
const WRITERS: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_lpush_under_killed_connections_are_never_applied_twice_nor_reported_unknown_beyond_those_in_flight()
 {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    // Per kill window: [acked INCR, ambiguous INCR, acked LPUSH, ambiguous LPUSH].
    const KILLS: usize = 10;
    let counts: Arc<Vec<[AtomicU64; 4]>> = Arc::new(
        (0..=KILLS)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect(),
    );
    let window = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for task in 0..WRITERS {
        let (client, counts, window, stop) =
            (client.clone(), counts.clone(), window.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let is_push = n.is_multiple_of(2);
                // LPUSH goes the redis-rs way (AsyncCommands, a redis::RedisError), INCR the
                // steadfast way: both must tell an unknown outcome.
                let outcome: Result<i64, (bool, String)> = if is_push {
                    let mut handle = client.clone();
                    handle
                        .lpush("list", format!("{task}:{n}"))
                        .await
                        .map_err(|e| (e.may_have_been_applied(), e.to_string()))
                } else {
                    client
                        .query::<i64>(redis::cmd("INCR").arg("counter"))
                        .await
                        .map_err(|e| (e.is_ambiguous(), e.to_string()))
                };
                let slot = &counts[window.load(Ordering::Acquire)];
                let column = usize::from(is_push) * 2;
                match outcome {
                    Ok(_) => slot[column].fetch_add(1, Ordering::Relaxed),
                    Err((true, _)) => slot[column + 1].fetch_add(1, Ordering::Relaxed),
                    Err((false, e)) => panic!("only unknown outcomes are expected: {e}"),
                };
            }
        }));
    }
    let mut admin = server.admin().await;
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        window.store(kill, Ordering::Release);
        let _ = kill_clients(&mut admin).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let column = |c: usize| -> u64 { counts.iter().map(|w| w[c].load(Ordering::Relaxed)).sum() };
    let counter: u64 = admin.get("counter").await.unwrap();
    let list: u64 = admin.llen("list").await.unwrap();
    let (incr_acked, incr_unknown, push_acked, push_unknown) =
        (column(0), column(1), column(2), column(3));
    println!(
        "INCR: server {counter}, acknowledged {incr_acked}, may have been applied {incr_unknown}; \
         LPUSH: server {list}, acknowledged {push_acked}, may have been applied {push_unknown}"
    );
    assert!(incr_acked > 0 && push_acked > 0);
    assert!(
        counter >= incr_acked && counter <= incr_acked + incr_unknown,
        "INCR: server {counter} must lie in [acked {incr_acked}, acked + unknown {}]",
        incr_acked + incr_unknown
    );
    assert!(
        list >= push_acked && list <= push_acked + push_unknown,
        "LPUSH: server {list} must lie in [acked {push_acked}, acked + unknown {}]",
        push_acked + push_unknown
    );
    for (kill, w) in counts.iter().enumerate().skip(1) {
        let unknown = w[1].load(Ordering::Relaxed) + w[3].load(Ordering::Relaxed);
        assert!(
            unknown <= WRITERS,
            "kill {kill}: {unknown} outcomes unknown, but at most {WRITERS} commands were in flight"
        );
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_commands_failing_together_cause_one_dial() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut admin = server.admin().await;
    let count = |info: String| support::info_field(&info, "total_connections_received");
    let before = count(
        redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut admin)
            .await
            .unwrap(),
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..100 {
        let (client, stop) = (client.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _: Option<String> = client.query(redis::cmd("GET").arg("k")).await.unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = kill_clients(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let after = count(
        redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut admin)
            .await
            .unwrap(),
    );
    assert_eq!(after - before, 1, "one dial replaced the killed link");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_commands_and_pipelines_work_unchanged() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut client = Client::open(&server.url()).unwrap();

    let _: () = client.set("name", "steadfast").await.unwrap();
    let name: String = client.get("name").await.unwrap();
    assert_eq!(name, "steadfast");
    let n: i64 = client.incr("hits", 5).await.unwrap();
    assert_eq!(n, 5);

    let (a, b): (i64, String) = redis::pipe()
        .incr("hits", 1)
        .get("name")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((a, b.as_str()), (6, "steadfast"));

    let (x,): (i64,) = redis::pipe()
        .atomic()
        .incr("hits", 1)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(x, 7);

    let err = client.lpush::<_, _, i64>("name", "x").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some("WRONGTYPE"),
        "final errors pass through as redis-rs errors"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn passwords_never_appear_in_errors_events_debug_or_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "pw-9f8e7d-SECRET";
    let server = RedisServer::start_with(&["--requirepass", "another-one"]).await;
    let url = format!("redis://user:{secret}@{}", server.address);
    let client = Client::open(&url).unwrap();
    let mut events = client.events();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = Config::from_url(&url).unwrap();

    let mut printed = format!("{err} {err:?} {client:?} {config:?}");
    for event in drain(&mut events) {
        printed.push_str(&format!("{event:?}"));
    }
    printed.push_str(&String::from_utf8_lossy(&captured.0.lock().unwrap()));
    let bad_url = Config::from_url(&format!("redis://user:{secret}@host:notaport")).unwrap_err();
    printed.push_str(&format!("{bad_url} {bad_url:?}"));
    assert!(printed.len() > 200, "something was captured");
    assert!(!printed.contains(secret), "the password leaked: {printed}");
    client.shutdown().await;
}

#[test]
fn secrets_in_connection_strings_and_credentials_never_print() {
    let secret = "cs-SECRET-7781";
    let parsed =
        steadfast::config::parse_connection_string(&format!("h:6380,password={secret},ssl=True"))
            .unwrap();
    let credentials = steadfast::connect::credentials::Credentials {
        username: Some("app".into()),
        password: Password::new(secret),
        expires_at: None,
    };
    let bad = steadfast::config::parse_connection_string(&format!("h,password={secret},ssl=maybe"))
        .unwrap_err();
    let bad_url =
        Config::from_url(&format!("rediss://u:{secret}@h?tls_insecure=perhaps")).unwrap_err();
    let printed = format!(
        "{parsed:?} {:?} {credentials:?} {bad} {bad:?} {bad_url} {bad_url:?} {}",
        parsed.config, credentials.password
    );
    assert!(printed.contains("***"), "{printed}");
    assert!(!printed.contains(secret), "a secret leaked: {printed}");
}
