//! Nodes that fail, go down or are announced for maintenance under the cluster client: only
//! their shard waits, a dead shard is refused at once, replica reads leave a dead replica, and
//! announced maintenance is routed around ahead.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::cluster::*;
use support::utc_start_in;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_and_only_its_shard_waits() {
    let mut nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let keys: Vec<String> = (0..3).map(key_on_shard).collect();
    let until = Instant::now() + Duration::from_secs(9);
    let workers: Vec<_> = keys
        .iter()
        .map(|key| {
            let (client, key) = (client.clone(), key.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let started = Instant::now();
                    let result: Result<(), _> =
                        client.query(redis::cmd("SET").arg(&key).arg(n)).await;
                    outcomes.push((started, started.elapsed(), result.is_ok()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    nodes[0].kill();
    let mut per_shard = Vec::new();
    for worker in workers {
        per_shard.push(worker.await.unwrap());
    }
    for (shard, outcomes) in per_shard.iter().enumerate().skip(1) {
        let failed = outcomes.iter().filter(|o| !o.2).count();
        let slowest = outcomes.iter().map(|o| o.1).max().unwrap();
        assert_eq!(failed, 0, "shard {shard} was not involved");
        assert!(
            slowest < Duration::from_millis(500),
            "shard {shard} was not involved, yet waited {slowest:?}"
        );
    }
    let killed = &per_shard[0];
    let failed = killed.iter().filter(|o| !o.2).count();
    let resumed = killed
        .iter()
        .find(|o| o.0 > killed_at && o.2)
        .map(|o| o.0 + o.1 - killed_at);
    assert!(
        resumed.is_some_and(|r| r < Duration::from_secs(6)),
        "writes to the failed-over shard resumed: {resumed:?}"
    );
    assert!(
        killed.last().is_some_and(|o| o.2),
        "and keep succeeding on the promoted replica"
    );
    eprintln!(
        "killed shard: {failed} failed of {}, first write done {resumed:?} after the kill",
        killed.len()
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_with_every_node_down_is_refused_at_once_while_the_others_serve() {
    let mut nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut events = client.events();
    let (down, up) = (key_on_shard(0), key_on_shard(1));
    // Shard 0's primary and its only replica.
    nodes[0].kill();
    nodes[3].kill();
    let until = Instant::now() + Duration::from_secs(30);
    let mut refused_in = None;
    let mut failed_first = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let error = client
            .query::<()>(redis::cmd("SET").arg(&down).arg(1))
            .await
            .expect_err("no node serves shard 0");
        // The command during which the breaker opens is refused when it asks again; the next
        // one is refused at once.
        if error.kind() == steadfast::ErrorKind::NotAttempted
            && started.elapsed() < Duration::from_millis(10)
        {
            refused_in = Some(started.elapsed());
            assert!(error.is_retryable(), "not sent: safe to retry");
            break;
        }
        failed_first += 1;
    }
    let refused_in = refused_in.expect("the shard's breaker refused at once within 30 s");
    let mut opened = false;
    while let Ok(event) = events.try_recv() {
        opened |= matches!(event, steadfast::Event::ShardBreakerOpened { .. });
    }
    assert!(opened, "the opening was an event");
    for n in 0..50 {
        let started = Instant::now();
        let _: () = client
            .query(redis::cmd("SET").arg(&up).arg(n))
            .await
            .expect("shard 1 serves");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "shard 1 is not held up by shard 0: {:?}",
            started.elapsed()
        );
    }
    eprintln!(
        "shard 0 down: {failed_first} commands failed before the breaker refused in {refused_in:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_reads_on_replicas_serve_the_reads_and_primaries_the_writes() {
    let nodes = six_node_cluster().await;
    let client = replica_reading_client(&nodes).await;
    let keys: Vec<String> = (0..60).map(|n| format!("read:{n}")).collect();
    for key in &keys {
        let _: () = client
            .query(redis::cmd("SET").arg(key).arg(key))
            .await
            .unwrap();
    }
    // Replication is asynchronous: wait until the replicas hold every key between them.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut held = 0;
        for replica in &nodes[3..] {
            let size: i64 = redis::cmd("DBSIZE")
                .query_async(&mut replica.admin().await)
                .await
                .unwrap();
            held += size;
        }
        if held == 60 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the replicas hold {held} of 60 keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reset_stats(&nodes).await;
    for key in &keys {
        let value: Option<String> = client.query(redis::cmd("GET").arg(key)).await.unwrap();
        assert_eq!(value.as_deref(), Some(key.as_str()), "read from a replica");
    }
    let mut on_primaries = 0;
    for primary in &nodes[..3] {
        on_primaries += command_calls(primary, "get").await;
    }
    let mut on_replicas = 0;
    for replica in &nodes[3..] {
        let calls = command_calls(replica, "get").await;
        assert!(calls > 0, "every replica serves its shard's reads");
        on_replicas += calls;
    }
    assert_eq!(
        (on_primaries, on_replicas),
        (0, 60),
        "reads on replicas only"
    );
    let _: () = client
        .query(redis::cmd("SET").arg("read:0").arg("again"))
        .await
        .expect("a write goes to the primary (a replica would answer MOVED)");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_reads_on_a_dead_replica_leaves_its_reads_to_the_primary() {
    let mut nodes = six_node_cluster().await;
    let client = replica_reading_client(&nodes).await;
    let key = key_on_shard(0);
    let _: () = client
        .query(redis::cmd("SET").arg(&key).arg("v"))
        .await
        .unwrap();
    // Shard 0's only replica.
    nodes[3].kill();
    reset_stats(&nodes[..3]).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let value: Option<String> = client
            .query(redis::cmd("GET").arg(&key))
            .await
            .expect("the primary serves the read");
        assert_eq!(value.as_deref(), Some("v"));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a dead replica costs at most one link wait: {slowest:?}"
    );
    assert_eq!(command_calls(&nodes[0], "get").await, 100);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_maintenance_routes_around_its_node_from_the_start_and_loses_nothing() {
    let nodes = six_node_cluster().await;
    let config =
        steadfast::Config::from_url(&format!("{}?azure_events=on", nodes[0].url())).unwrap();
    let client = steadfast::cluster::ClusterClient::connect(config)
        .await
        .unwrap();
    wait_for_azure_listener(&nodes[0]).await;
    let mut events = client.events();
    let stop = tokio_util::sync::CancellationToken::new();
    let held = writer(client.clone(), key_on_shard(0), stop.clone());
    let untouched = writer(client.clone(), key_on_shard(1), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Shard 0's primary, 3 s ahead (whole seconds: the start is 2-3 s away).
    let (start_text, start) = utc_start_in(Duration::from_secs(3));
    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{start_text}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        nodes[0].address.ip()
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg("AzureRedisEvents")
        .arg(&message)
        .query_async(&mut nodes[0].admin().await)
        .await
        .unwrap();
    // Until shortly before the start the node serves its shard's writes.
    tokio::time::sleep_until(start - Duration::from_millis(600)).await;
    reset_stats(&nodes[..1]).await;
    tokio::time::sleep_until(start - Duration::from_millis(100)).await;
    let sets_before_the_start = command_calls(&nodes[0], "set").await;
    // From the start it is routed around.
    tokio::time::sleep_until(start + Duration::from_millis(100)).await;
    reset_stats(&nodes[..1]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sets_while_avoided = command_calls(&nodes[0], "set").await;
    fail_over_to(&nodes[3]).await;
    // The held writer reaches the new primary, and writes there a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (held_failures, held_slowest) = held.await.unwrap();
    let (untouched_failures, untouched_slowest) = untouched.await.unwrap();
    let mut reported = 0;
    while let Ok(event) = events.try_recv() {
        reported += usize::from(matches!(event, steadfast::Event::Maintenance(_)));
    }
    eprintln!(
        "announced shard: {sets_before_the_start} sets in the 500 ms before the start, slowest {held_slowest:?}; other shard: slowest {untouched_slowest:?}"
    );
    assert!(sets_before_the_start > 0, "the node serves until its start");
    assert_eq!(sets_while_avoided, 0, "nothing sent to the announced node");
    assert!(held_failures.is_empty(), "{held_failures:?}");
    assert!(untouched_failures.is_empty(), "{untouched_failures:?}");
    assert!(
        untouched_slowest < Duration::from_millis(300),
        "the other shard is not held: {untouched_slowest:?}"
    );
    assert_eq!(reported, 1, "reported once, not once per node");
    client.shutdown().await;
}
