//! Blocking commands run on dedicated links that follow failovers: they never hold up the shared
//! link, wait as long as their caller asked, come back from a demotion on the new primary with
//! what is left of their wait, and report "outcome unknown" when their link dies while blocked.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use steadfast::connect::resolve::StaticResolver;
use steadfast::{Abandoned, ErrorKind, Event, RedisErrorExt};
use support::{RedisServer, config_for, config_resolving, connected, init_tracing};
use tokio::time::Instant;

/// `CLIENT LIST` lines of the connections blocked in `command`.
async fn blocked_in(admin: &mut redis::aio::MultiplexedConnection, command: &str) -> Vec<String> {
    RedisServer::blocked_in(admin, command).await
}

/// The steadfast error a redis-rs error carries (the test fails if it carries none).
fn steadfast_error(error: &redis::RedisError) -> steadfast::Error {
    error
        .steadfast_error()
        .cloned()
        .unwrap_or_else(|| panic!("{error}"))
}

/// Waits until `count` connections are blocked in `command`.
async fn until_blocked(admin: &mut redis::aio::MultiplexedConnection, command: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked_in(admin, command).await.len() < count {
        assert!(
            Instant::now() < deadline,
            "never {count} blocked in {command}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_command_does_not_hold_up_commands_of_other_clones() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut admin = server.admin().await;
    let mut worker = client.clone();
    let blocked = tokio::spawn(async move {
        worker
            .blpop::<_, Option<(String, String)>>("jobs", 3.0)
            .await
    });
    until_blocked(&mut admin, "blpop", 1).await;
    let started = Instant::now();
    let mut other = client.clone();
    let _: () = other.set("k", "v").await.unwrap();
    let value: String = other.get("k").await.unwrap();
    assert_eq!(value, "v");
    // Before dedicated links, the GET queued behind the BLPOP for the whole 3 s.
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let _: i64 = admin.lpush("jobs", "job-1").await.unwrap();
    let popped = blocked.await.unwrap().unwrap();
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_block_at_once_each_on_a_link_of_its_own() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut admin = server.admin().await;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let mut worker = client.clone();
            tokio::spawn(async move {
                worker
                    .blpop::<_, Option<(String, String)>>("jobs", 5.0)
                    .await
            })
        })
        .collect();
    until_blocked(&mut admin, "blpop", 8).await;
    for n in 0..8 {
        let _: i64 = admin.lpush("jobs", format!("job-{n}")).await.unwrap();
    }
    let mut items = Vec::new();
    for worker in workers {
        items.push(worker.await.unwrap().unwrap().unwrap().1);
    }
    items.sort();
    let expected: Vec<String> = (0..8).map(|n| format!("job-{n}")).collect();
    assert_eq!(items, expected, "each item popped exactly once");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_longer_than_the_command_deadline_or_forever_waits_as_asked() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.deadline = Duration::from_millis(500);
    let client = connected(config).await;
    let mut admin = server.admin().await;
    let (mut long, mut forever) = (client.clone(), client.clone());
    let timed =
        tokio::spawn(async move { long.blpop::<_, Option<(String, String)>>("a", 3.0).await });
    let unbounded =
        tokio::spawn(async move { forever.blpop::<_, Option<(String, String)>>("b", 0.0).await });
    until_blocked(&mut admin, "blpop", 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _: i64 = admin.lpush("a", "x").await.unwrap();
    let _: i64 = admin.lpush("b", "y").await.unwrap();
    assert_eq!(
        timed.await.unwrap().unwrap(),
        Some(("a".into(), "x".into()))
    );
    assert_eq!(
        unbounded.await.unwrap().unwrap(),
        Some(("b".into(), "y".into()))
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_pop_released_by_a_demotion_waits_on_the_new_primary_for_what_is_left() {
    init_tracing();
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    b.replicate(&a).await;
    let resolver = StaticResolver::new(vec![a.address]);
    let client = connected(config_resolving(&resolver)).await;
    let mut events = client.events();
    let mut worker = client.clone();
    let started = Instant::now();
    let blocked = tokio::spawn(async move {
        worker
            .blpop::<_, Option<(String, String)>>("jobs", 4.0)
            .await
    });
    until_blocked(&mut a.admin().await, "blpop", 1).await;

    // Failover: B promoted, the name moved to B, A demoted (it releases the BLPOP: UNBLOCKED).
    b.promote().await;
    resolver.set(vec![b.address]);
    a.replicate(&b).await;
    let mut admin_b = b.admin().await;
    until_blocked(&mut admin_b, "blpop", 1).await;
    let timeout_there: String = blocked_in(&mut admin_b, "blpop").await.join("\n");
    let _: i64 = admin_b.lpush("jobs", "after-failover").await.unwrap();
    assert_eq!(
        blocked.await.unwrap().unwrap(),
        Some(("jobs".into(), "after-failover".into())),
        "blocked there: {timeout_there}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let seen = support::drain(&mut events);
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::OutcomeUnknown { .. })),
        "a release by the server is no unknown outcome: {seen:?}"
    );

    // What is left of the wait, not the whole wait again: a 1.5 s BLPOP released after about
    // 1 s waits about 0.5 s more on the new primary.
    let mut worker = client.clone();
    let started = Instant::now();
    let blocked = tokio::spawn(async move {
        worker
            .blpop::<_, Option<(String, String)>>("none", 1.5)
            .await
    });
    until_blocked(&mut admin_b, "blpop", 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.promote().await;
    resolver.set(vec![a.address]);
    b.replicate(&a).await;
    assert_eq!(blocked.await.unwrap().unwrap(), None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2300),
        "waited {waited:?} in all for a 1.5 s BLPOP"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_whose_link_dies_while_blocked_is_an_unknown_outcome_and_not_sent_again() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let mut admin = server.admin().await;
    let mut worker = client.clone();
    let blocked = tokio::spawn(async move {
        worker
            .blpop::<_, Option<(String, String)>>("jobs", 10.0)
            .await
    });
    until_blocked(&mut admin, "blpop", 1).await;
    let line = blocked_in(&mut admin, "blpop").await.remove(0);
    let id = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("id="))
        .unwrap()
        .to_owned();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut admin)
        .await
        .map(|_: i64| ())
        .unwrap();
    let error = blocked.await.unwrap().unwrap_err();
    let error = steadfast_error(&error);
    assert!(error.is_ambiguous(), "{error}");
    assert_eq!(error.kind(), ErrorKind::MayHaveBeenApplied, "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        blocked_in(&mut admin, "blpop").await.is_empty(),
        "the pop was not sent again"
    );
    let seen = support::drain(&mut events);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::OutcomeUnknown { command } if command == "BLPOP")),
        "{seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_leaves_nothing_blocked_and_is_told_how_the_wait_ended() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let mut admin = server.admin().await;
    let mut worker = client.clone();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        worker.blpop::<_, Option<(String, String)>>("jobs", 0.0),
    )
    .await;
    assert!(gave_up.is_err(), "nothing to pop: still waiting");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !blocked_in(&mut admin, "blpop").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the abandoned BLPOP still blocks"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _: i64 = admin.lpush("jobs", "job-1").await.unwrap();
    let left: i64 = admin.llen("jobs").await.unwrap();
    assert_eq!(left, 1, "nobody popped the item");
    let deadline = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        let seen = support::drain(&mut events);
        if let Some(outcome) = seen.iter().find_map(|e| match e {
            Event::BlockingAbandoned { outcome, .. } => Some(*outcome),
            _ => None,
        }) {
            break outcome;
        }
        assert!(Instant::now() < deadline, "no BlockingAbandoned event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(outcome, Abandoned::Unblocked);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_beyond_the_dedicated_links_wait_for_one_within_their_deadline() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.blocking_links = 1;
    config.command.deadline = Duration::from_millis(300);
    let client = connected(config).await;
    let mut admin = server.admin().await;
    let mut first = client.clone();
    let holder =
        tokio::spawn(async move { first.blpop::<_, Option<(String, String)>>("a", 2.0).await });
    until_blocked(&mut admin, "blpop", 1).await;
    let mut second = client.clone();
    let error = second
        .blpop::<_, Option<(String, String)>>("b", 0.5)
        .await
        .unwrap_err();
    let error = steadfast_error(&error);
    assert_eq!(error.kind(), ErrorKind::DeadlineExceeded, "{error}");
    assert!(!error.is_ambiguous(), "never sent: {error}");
    assert!(
        error.to_string().contains("command.blocking_links"),
        "{error}"
    );
    let _: i64 = admin.lpush("a", "x").await.unwrap();
    assert_eq!(
        holder.await.unwrap().unwrap(),
        Some(("a".into(), "x".into()))
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_blocked_on_a_server_announced_for_maintenance_steps_off_it_and_pops_on_the_new_primary()
 {
    init_tracing();
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    b.replicate(&a).await;
    let resolver = StaticResolver::new(vec![a.address]);
    let mut config = config_resolving(&resolver);
    config.maintenance.azure_events = steadfast::AzureEvents::On;
    let client = connected(config).await;
    let mut events = client.events();
    let mut admin_a = a.admin().await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("AzureRedisEvents")
            .query_async(&mut admin_a)
            .await
            .unwrap();
        if counts.first().is_some_and(|(_, n)| *n > 0) {
            break;
        }
        assert!(Instant::now() < until, "no Azure listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut worker = client.clone();
    let blocked = tokio::spawn(async move {
        worker
            .blpop::<_, Option<(String, String)>>("jobs", 20.0)
            .await
    });
    until_blocked(&mut admin_a, "blpop", 1).await;

    // Announced 3 s ahead (whole seconds); from 1 s before the start the pop holds off A.
    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        support::utc_in(Duration::from_secs(3)),
        a.address.ip()
    );
    let _: i64 = admin_a.publish("AzureRedisEvents", &message).await.unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while !blocked_in(&mut admin_a, "blpop").await.is_empty() {
        assert!(Instant::now() < until, "the pop never stepped off A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The maintenance: A stops answering, B is promoted, the name moves to B.
    a.pause();
    b.promote().await;
    resolver.set(vec![b.address]);
    let mut admin_b = b.admin().await;
    until_blocked(&mut admin_b, "blpop", 1).await;
    let _: i64 = admin_b.lpush("jobs", "after-maintenance").await.unwrap();
    let popped = blocked.await.unwrap().unwrap();
    a.resume();
    assert_eq!(popped, Some(("jobs".into(), "after-maintenance".into())));
    let seen = support::drain(&mut events);
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::OutcomeUnknown { .. })),
        "the pop never died with A: {seen:?}"
    );
    client.shutdown().await;
}
