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
