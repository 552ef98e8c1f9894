//! WATCH sessions on a cluster: one slot's transactions on the node that serves it, and a
//! guard that a failover takes is told, never run unguarded.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use steadfast::cluster::ClusterSession;
use steadfast::{ErrorKind, Event, RedisErrorExt};
use support::cluster::*;

/// One guarded increment of `{key}.counter`, logged in `{key}.log`: `Ok(true)` committed,
/// `Ok(false)` someone else's write or a lost guard (start over).
async fn try_increment(session: &mut ClusterSession, key: &str) -> redis::RedisResult<bool> {
    let counter = format!("{key}.counter");
    let outcome = async {
        redis::cmd("WATCH")
            .arg(&counter)
            .query_async::<()>(session)
            .await?;
        let value: Option<i64> = redis::cmd("GET").arg(&counter).query_async(session).await?;
        redis::pipe()
            .atomic()
            .set(&counter, value.unwrap_or(0) + 1)
            .ignore()
            .rpush(format!("{key}.log"), 1)
            .ignore()
            .query_async::<Option<()>>(session)
            .await
    }
    .await;
    match outcome {
        Ok(committed) => Ok(committed.is_some()),
        Err(e) if e.steadfast_error().map(|e| e.kind()) == Some(ErrorKind::WatchLost) => Ok(false),
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_sessions_slot_is_refused_before_anything_is_sent() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut session = client.session("{a}");
    let refused = session
        .query::<()>(redis::cmd("WATCH").arg("{b}.counter"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::CrossSlot, "{refused}");
    assert!(refused.to_string().contains("was not sent"), "{refused}");
    // Keys of its own slot go, inside a transaction or not.
    let _: () = session
        .query(redis::cmd("SET").arg("{a}.x").arg(1))
        .await
        .unwrap();
    assert!(try_increment(&mut session, "{a}").await.unwrap());
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_incrementing_under_watch_on_a_cluster_lose_no_update() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut session = client.session("{acct}");
                let mut committed = 0;
                while committed < 200 {
                    if try_increment(&mut session, "{acct}").await.unwrap() {
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
    assert_eq!(committed, 400);
    let counter: i64 = client
        .query(redis::cmd("GET").arg("{acct}.counter"))
        .await
        .unwrap();
    assert_eq!(counter, 400);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_shard_that_fails_over_is_lost_out_loud_and_the_next_one_runs_on_the_new_primary()
 {
    let nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut events = client.events();
    let key = format!("{{{}}}", key_on_shard(0));
    let counter = format!("{key}.counter");
    let mut session = client.session(&key);
    redis::cmd("WATCH")
        .arg(&counter)
        .query_async::<()>(&mut session)
        .await
        .unwrap();
    let _: Option<i64> = redis::cmd("GET")
        .arg(&counter)
        .query_async(&mut session)
        .await
        .unwrap();

    // The shard fails over (planned): the old primary is a replica now, the guard is gone.
    fail_over_to(&nodes[3]).await;
    let mut new_primary = nodes[3].admin().await;
    let _: () = new_primary.set(&counter, 41).await.unwrap();

    // The table may still name the old primary for a moment: then the old node itself
    // refuses (MOVED, nothing ran); either way the transaction must not commit.
    let error = redis::pipe()
        .atomic()
        .set(&counter, 1)
        .ignore()
        .query_async::<Option<()>>(&mut session)
        .await
        .unwrap_err();
    assert_eq!(
        error.steadfast_error().map(|e| e.kind()),
        Some(ErrorKind::WatchLost),
        "{error}"
    );
    let value: i64 = new_primary.get(&counter).await.unwrap();
    assert_eq!(value, 41, "the unguarded transaction never ran");
    // Told as an event too (a node's events reach the cluster's stream through a task).
    let told = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::WatchLost { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(told.is_ok(), "no WatchLost event");

    // Starting over works, on the new primary: one commit within 5 s (a try the old node
    // refuses while the table catches up is a lost guard, told, and tried again).
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while !try_increment(&mut session, &key).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < until,
            "never committed on the new primary"
        );
    }
    let value: i64 = new_primary.get(&counter).await.unwrap();
    assert_eq!(value, 42);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_increments_through_a_planned_failover_equal_their_commits() {
    let nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let key = format!("{{{}}}", key_on_shard(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (client, key) = (client.clone(), key.clone());
            tokio::spawn(async move {
                let mut session = client.session(&key);
                let mut committed = 0u64;
                let until = tokio::time::Instant::now() + Duration::from_secs(4);
                while tokio::time::Instant::now() < until {
                    match try_increment(&mut session, &key).await {
                        Ok(true) => committed += 1,
                        Ok(false) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                committed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    fail_over_to(&nodes[3]).await;
    let mut committed = 0;
    for worker in workers {
        committed += worker.await.unwrap();
    }
    let mut new_primary = nodes[3].admin().await;
    let counter: i64 = new_primary.get(format!("{key}.counter")).await.unwrap();
    let logged: u64 = new_primary.llen(format!("{key}.log")).await.unwrap();
    eprintln!("committed {committed}, counter {counter}, log {logged}");
    assert!(committed > 50, "the workers kept going: {committed}");
    assert_eq!(
        counter as u64, committed,
        "every commit counted once, no lost update"
    );
    assert_eq!(logged, committed);
    client.shutdown().await;
}
