//! The cluster client's routing over a healthy real cluster: every key to its owner, keys in
//! different slots refused or split, pipelines split per node and answered in order, batched
//! commands, and every reply equal to redis-rs `cluster_async`'s.

#![allow(clippy::unwrap_used)]

mod support;

use steadfast::cluster::key_slot;
use support::cluster::*;

#[tokio::test]
async fn the_cluster_client_sends_every_key_to_the_node_that_owns_it() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    for n in 0..300 {
        let key = format!("spread:{n}");
        let _: () = client
            .query(redis::cmd("SET").arg(&key).arg(n))
            .await
            .unwrap();
    }
    for n in (0..300).step_by(7) {
        let key = format!("spread:{n}");
        let owner = owner_of(&nodes, key_slot(key.as_bytes())).await;
        let stored: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut owner.admin().await)
            .await
            .unwrap();
        assert_eq!(stored, n, "{key} is on its owner");
        let read: i64 = client.query(redis::cmd("GET").arg(&key)).await.unwrap();
        assert_eq!(read, n);
    }
    let mut con = client.clone();
    let (a, b): (i64, i64) = redis::pipe()
        .cmd("INCR")
        .arg("{tag}.a")
        .cmd("INCR")
        .arg("{tag}.b")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 1), "a one-slot pipeline goes to its node");
    client.shutdown().await;
}

#[tokio::test]
async fn keys_in_different_slots_are_refused_before_sending_unless_the_command_can_be_split() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let error = client
        .query::<Vec<String>>(redis::cmd("SINTER").arg("foo").arg("bar"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), steadfast::ErrorKind::CrossSlot);
    assert!(error.to_string().contains("12182"), "{error}");
    let same: Vec<Option<String>> = client
        .query(redis::cmd("MGET").arg("{u}.a").arg("{u}.b"))
        .await
        .unwrap();
    assert_eq!(same, vec![None, None]);
    client.shutdown().await;
}

#[tokio::test]
async fn multi_key_commands_over_every_shard_answer_as_redis_rs_cluster_async_does() {
    let nodes = three_node_cluster().await;
    let mut client = cluster_client(&nodes).await;
    let mut theirs = redis::cluster::ClusterClient::new(vec![nodes[0].url()])
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let expected = multi_key_script(&mut theirs, "k").await;
    let got = multi_key_script(&mut client, "k").await;
    assert!(expected[1].contains("bulk-string"), "{expected:?}");
    assert_eq!(expected, got);
    client.shutdown().await;
}

#[tokio::test]
async fn a_pipeline_over_every_shard_is_split_per_node_and_answered_in_order() {
    let nodes = three_node_cluster().await;
    let mut client = cluster_client(&nodes).await;
    let keys: Vec<String> = (0..30).map(|n| format!("split:{n}")).collect();
    let mut writes = redis::pipe();
    for (n, key) in keys.iter().enumerate() {
        writes.cmd("SET").arg(key).arg(n).ignore();
    }
    writes.cmd("PING");
    let (pong,): (String,) = writes.query_async(&mut client).await.unwrap();
    assert_eq!(pong, "PONG", "a keyless command rides along");
    let mut reads = redis::pipe();
    for key in keys.iter().rev() {
        reads.cmd("GET").arg(key);
    }
    let values: Vec<usize> = reads.query_async(&mut client).await.unwrap();
    let expected: Vec<usize> = (0..30).rev().collect();
    assert_eq!(values, expected, "replies in the caller's order");
    for (n, key) in keys.iter().enumerate() {
        let owner = owner_of(&nodes, key_slot(key.as_bytes())).await;
        let stored: usize = redis::cmd("GET")
            .arg(key)
            .query_async(&mut owner.admin().await)
            .await
            .unwrap();
        assert_eq!(stored, n, "{key} lives on its slot's owner");
    }
    let error = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("split:0")
        .arg(1)
        .cmd("SET")
        .arg("split:1")
        .arg(1)
        .query_async::<()>(&mut client)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("different slots"),
        "a transaction is never split: {error}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_batched_together_each_get_their_own_reply_even_when_one_caller_gives_up() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let _: () = client
        .query(redis::cmd("LPUSH").arg("batch:list").arg(1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..256)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                if n % 3 == 0 {
                    // Polled once, then dropped: it may have started a batch; the others in it
                    // must still get their replies.
                    let cmd = redis::cmd("SET").arg("batch:dropped").arg(n).clone();
                    let query = client.query::<()>(&cmd);
                    tokio::select! {
                        biased;
                        _ = query => {}
                        () = std::future::ready(()) => {}
                    }
                }
                if n % 64 == 0 {
                    // A wrong-type reply in the middle of others' batches is this caller's only.
                    let error = client
                        .query::<Option<String>>(redis::cmd("GET").arg("batch:list"))
                        .await
                        .unwrap_err();
                    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
                    return;
                }
                for round in 0..20 {
                    let key = format!("batch:{n}");
                    let value = n * 1_000 + round;
                    let _: () = client
                        .query(redis::cmd("SET").arg(&key).arg(value))
                        .await
                        .unwrap();
                    let read: usize = client.query(redis::cmd("GET").arg(&key)).await.unwrap();
                    assert_eq!(read, value, "{key} got its own reply");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    client.shutdown().await;
}

#[tokio::test]
async fn every_reply_over_a_cluster_equals_redis_rs_cluster_asyncs() {
    let nodes = three_node_cluster().await;
    let mut theirs = redis::cluster::ClusterClient::new(vec![nodes[0].url()])
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    support::replies::seed(&mut theirs).await;
    let mut client = cluster_client(&nodes).await;
    support::replies::replies_match(
        &mut theirs,
        &mut client,
        "cluster",
        support::replies::Compare::Cluster,
    )
    .await;
    client.shutdown().await;
}
