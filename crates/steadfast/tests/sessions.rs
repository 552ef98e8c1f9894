//! Sessions: `WATCH` ... `MULTI` ... `EXEC` on a link of the caller's own, which fails the
//! transaction when the link that held the guard was replaced instead of running it unguarded.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use steadfast::{Client, ErrorKind, Event, RedisErrorExt, Session};
use support::{RedisServer, config_for, connected, init_tracing, kill_clients};

/// One optimistic increment of `counter`: WATCH, GET, MULTI SET EXEC. `Ok(true)` when it
/// committed, `Ok(false)` when someone else changed the counter or the guard was lost.
async fn try_increment(session: &mut Session) -> Result<bool, redis::RedisError> {
    redis::cmd("WATCH")
        .arg("counter")
        .query_async::<()>(&mut *session)
        .await?;
    let value: Option<i64> = session.get("counter").await?;
    let committed: Result<Option<(i64,)>, redis::RedisError> = redis::pipe()
        .atomic()
        .set("counter", value.unwrap_or(0) + 1)
        .ignore()
        .incr("commits", 1)
        .query_async(&mut *session)
        .await;
    match committed {
        Ok(reply) => Ok(reply.is_some()),
        Err(e) if e.steadfast_error().map(|e| e.kind()) == Some(ErrorKind::WatchLost) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn counters(server: &RedisServer) -> (i64, i64) {
    let mut admin = server.admin().await;
    let counter: Option<i64> = admin.get("counter").await.unwrap();
    let commits: Option<i64> = admin.get("commits").await.unwrap();
    (counter.unwrap_or(0), commits.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_incrementing_under_watch_lose_no_update() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut session = client.session().await.unwrap();
                let mut committed = 0;
                while committed < 300 {
                    if try_increment(&mut session).await.unwrap() {
                        committed += 1;
                    }
                }
                committed
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap();
    }
    assert_eq!(committed, 600);
    // On one shared link the two tasks' WATCHes mixed: 206 of 600 updates were lost.
    assert_eq!(counters(&server).await, (600, 600));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_link_was_replaced_fails_the_transaction_instead_of_running_it_unguarded() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let mut session = client.session().await.unwrap();
    let mut admin = server.admin().await;
    let _: () = admin.set("counter", 10).await.unwrap();

    redis::cmd("WATCH")
        .arg("counter")
        .query_async::<()>(&mut session)
        .await
        .unwrap();
    let value: i64 = session.get("counter").await.unwrap();
    // The link dies (with the WATCH), and meanwhile someone else changes the counter: on a
    // new link an EXEC would commit over their write.
    assert!(kill_clients(&mut admin).await >= 1);
    let _: () = admin.set("counter", 500).await.unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let outcome: Result<Option<(i64,)>, _> = redis::pipe()
        .atomic()
        .set("counter", value + 1)
        .ignore()
        .incr("commits", 1)
        .query_async(&mut session)
        .await;
    let error = match outcome {
        Err(error) => error,
        Ok(reply) => panic!("the transaction ran unguarded: {reply:?}"),
    };
    let error = error
        .steadfast_error()
        .cloned()
        .unwrap_or_else(|| panic!("{error}"));
    assert_eq!(error.kind(), ErrorKind::WatchLost, "{error}");
    assert!(!error.is_ambiguous(), "nothing was sent: {error}");
    assert!(error.to_string().contains("WATCH"), "{error}");
    assert_eq!(counters(&server).await, (500, 0), "their write stands");
    let seen = support::drain(&mut events);
    assert!(
        seen.iter().any(|e| matches!(e, Event::WatchLost { .. })),
        "{seen:?}"
    );

    // Starting over works, on the new link.
    assert!(try_increment(&mut session).await.unwrap());
    assert_eq!(counters(&server).await, (501, 1));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_a_transaction_sent_one_by_one_are_queued_and_run_by_exec() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut session = client.session().await.unwrap();
    let _: () = redis::cmd("MULTI").query_async(&mut session).await.unwrap();
    let queued: String = redis::cmd("INCR")
        .arg("n")
        .query_async(&mut session)
        .await
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let _: String = redis::cmd("INCR")
        .arg("n")
        .query_async(&mut session)
        .await
        .unwrap();
    let results: Vec<i64> = redis::cmd("EXEC").query_async(&mut session).await.unwrap();
    assert_eq!(results, vec![1, 2]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_mid_transaction_leaves_nothing_queued_for_the_next_one() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.session_links = 1;
    let client = connected(config).await;
    {
        let mut session = client.session().await.unwrap();
        let _: () = redis::cmd("MULTI").query_async(&mut session).await.unwrap();
        let _: String = redis::cmd("SET")
            .arg("k")
            .arg("queued")
            .query_async(&mut session)
            .await
            .unwrap();
    }
    // The one session link is lent again once the dropped session's MULTI was discarded.
    let mut next = client.session().await.unwrap();
    let value: Option<String> = next.get("k").await.unwrap();
    assert_eq!(value, None, "not QUEUED, and the queued SET never ran");
    let exec = redis::cmd("EXEC")
        .query_async::<redis::Value>(&mut next)
        .await;
    assert!(exec.is_err(), "no transaction is open: {exec:?}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_client_sends_watch_users_to_sessions_and_sessions_refuse_state_commands() {
    init_tracing();
    let server = RedisServer::start().await;
    let client: Client = connected(config_for(&server)).await;
    let error = client
        .query::<()>(redis::cmd("WATCH").arg("k"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(error.to_string().contains("Client::session"), "{error}");
    let mut session = client.session().await.unwrap();
    let error = session
        .query::<()>(redis::cmd("SELECT").arg(3))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(
        error.to_string().contains("send it on the client"),
        "{error}"
    );
    client.shutdown().await;
}
