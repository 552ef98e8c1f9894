//! Slow is not dead, against real redis-server processes: a server busy with a slow command and
//! a command blocked on an empty list keep their link, judged alive by the probe.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use steadfast::Event;
use support::{RedisServer, Workload, config_for, connected, drain, init_tracing};

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

/// The id of the one connection blocked in `BLPOP`, if one is.
async fn blocked_pop(admin: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    RedisServer::blocked_in(admin, "blpop")
        .await
        .first()
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix("id="))
        })
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_is_judged_alive_and_keeps_its_link() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.deadline = Duration::from_secs(12);
    let client = connected(config).await;
    let mut events = client.events();
    let mut admin = server.admin().await;

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .query::<Option<(String, String)>>(redis::cmd("BLPOP").arg("jobs").arg(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let blocked_at_first = blocked_pop(&mut admin).await.unwrap();
    let connections_before = server.connections_received().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The dedicated link read nothing for 6 s: the watchdog suspected it, and a probe from a
    // fresh connection found it blocked, so the same connection still waits.
    // Each count opens one connection of its own; more than that are the probe's.
    assert!(
        server.connections_received().await > connections_before + 1,
        "the stalled link was probed"
    );
    assert_eq!(
        blocked_pop(&mut admin).await.as_deref(),
        Some(blocked_at_first.as_str()),
        "the blocked link was kept"
    );
    let _: u64 = admin.lpush("jobs", "job-1").await.unwrap();
    let popped = waiter.await.unwrap().unwrap();
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));

    let seen = drain(&mut events);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "{seen:?}"
    );
    client.shutdown().await;
}
