//! Blocking commands on a cluster: routed by slot to a dedicated link of the slot's primary,
//! and sent again to the new primary when a planned failover releases them.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::cluster::*;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_blocked_on_a_shard_that_fails_over_as_planned_pops_on_the_new_primary() {
    let nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let key = key_on_shard(0);
    let waiter = {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            client
                .query::<Option<(String, String)>>(redis::cmd("BLPOP").arg(&key).arg(8))
                .await
        })
    };
    let mut old = nodes[0].admin().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut old)
            .await
            .unwrap();
        if clients.contains("cmd=blpop") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pop never blocked on shard 0"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Other commands on the same shard are not held up by the blocked pop.
    let started = Instant::now();
    let _: () = client
        .query(redis::cmd("SET").arg(format!("{key}:other")).arg(1))
        .await
        .unwrap_or(());
    assert!(started.elapsed() < Duration::from_millis(500));

    fail_over_to(&nodes[3]).await;
    let mut replica = nodes[3].admin().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: i64 = replica.lpush(&key, "job-1").await.unwrap();
    let popped = waiter.await.unwrap().unwrap();
    assert_eq!(popped, Some((key.clone(), "job-1".to_owned())));
    client.shutdown().await;
}
