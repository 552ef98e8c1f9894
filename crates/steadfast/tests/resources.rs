//! What the client costs the server and the machine around failures: one socket after
//! reconnects, none after shutdown or drop, one dial for a hundred failing commands, and a
//! wrong password retried with backoff, not in a hot loop.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use steadfast::{Client, ErrorKind, Event, Password};
use support::{RedisServer, config_for, connected, drain, init_tracing, kill_clients};
use tokio::time::Instant;

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
