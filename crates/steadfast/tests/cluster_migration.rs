//! Slots that move under the cluster client (`MOVED`, `ASK`, migrations in progress): single
//! commands, pipelines and transactions land where their keys live, whole or per command.

#![allow(clippy::unwrap_used)]

mod support;

use steadfast::cluster::key_slot;
use support::cluster::*;

#[tokio::test]
async fn a_pipeline_command_whose_slot_moved_goes_to_the_new_owner_and_the_rest_stands() {
    let nodes = three_node_cluster().await;
    let mut client = cluster_client(&nodes).await;
    let moving = "{moved-in-pipe}.k";
    let slot = key_slot(b"moved-in-pipe");
    let old = owner_of(&nodes, slot).await;
    // Another key the same node owns, and one on another node.
    let stays = (0..)
        .map(|n| format!("stays:{n}"))
        .find(|k| {
            key_slot(k.as_bytes()) != slot
                && old.address == nodes[owner_index(key_slot(k.as_bytes()))].address
        })
        .unwrap();
    let elsewhere = (0..)
        .map(|n| format!("elsewhere:{n}"))
        .find(|k| old.address != nodes[owner_index(key_slot(k.as_bytes()))].address)
        .unwrap();
    let _: () = client
        .query(redis::cmd("GET").arg(moving))
        .await
        .map(|_: Option<String>| ())
        .unwrap();
    let new = hand_over(&nodes, old, slot).await;
    // The client's table still names the old owner: its part comes back with one MOVED.
    let (a, b, c): ((), (), ()) = redis::pipe()
        .cmd("SET")
        .arg(&stays)
        .arg("s")
        .cmd("SET")
        .arg(moving)
        .arg("m")
        .cmd("SET")
        .arg(&elsewhere)
        .arg("e")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((a, b, c), ((), (), ()));
    let stored: Option<String> = redis::cmd("GET")
        .arg(moving)
        .query_async(&mut new.admin().await)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("m"), "on the new owner");
    let stored: Option<String> = redis::cmd("GET")
        .arg(&stays)
        .query_async(&mut old.admin().await)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("s"), "the rest of the part stood");
    client.shutdown().await;
}

#[tokio::test]
async fn a_transaction_whose_slot_moved_is_sent_whole_to_the_new_owner() {
    let nodes = three_node_cluster().await;
    let mut client = cluster_client(&nodes).await;
    let (a, b) = ("{moved-tx}.a", "{moved-tx}.b");
    let slot = key_slot(b"moved-tx");
    let _: Option<String> = client.query(redis::cmd("GET").arg(a)).await.unwrap();
    let old = owner_of(&nodes, slot).await;
    let new = hand_over(&nodes, old, slot).await;
    let (first, second): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(a)
        .cmd("INCR")
        .arg(b)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((first, second), (1, 1), "applied once, whole");
    let stored: Vec<Option<i64>> = redis::cmd("MGET")
        .arg(a)
        .arg(b)
        .query_async(&mut new.admin().await)
        .await
        .unwrap();
    assert_eq!(stored, [Some(1), Some(1)], "on the new owner");
    client.shutdown().await;
}

#[tokio::test]
async fn a_slot_that_moved_is_followed_and_the_write_lands_on_the_new_owner() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let key = "moving:key";
    let slot = key_slot(key.as_bytes());
    let _: Option<String> = client.query(redis::cmd("GET").arg(key)).await.unwrap();
    let old = owner_of(&nodes, slot).await;
    // The slot is empty: hand it over directly.
    let new = hand_over(&nodes, old, slot).await;
    let _: () = client
        .query(redis::cmd("SET").arg(key).arg("after"))
        .await
        .unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut new.admin().await)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("after"));
    client.shutdown().await;
}

#[tokio::test]
async fn a_key_asked_elsewhere_during_a_migration_goes_there_after_asking() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let key = "migrating:key";
    let slot = key_slot(key.as_bytes());
    let source = owner_of(&nodes, slot).await;
    let target = start_migration(&nodes, source, slot).await;
    // The key is not on the source, so the source answers ASK for it.
    let _: () = client
        .query(redis::cmd("SET").arg(key).arg("asked"))
        .await
        .unwrap();
    let mut on_target = target.admin().await;
    let (_, stored): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(key)
        .query_async(&mut on_target)
        .await
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("asked"),
        "written on the importing node"
    );
    let mut on_source = source.admin().await;
    let keys_there: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut on_source)
        .await
        .unwrap();
    assert_eq!(keys_there, 0, "not on the migrating node");
    client.shutdown().await;
}

#[tokio::test]
async fn a_pipeline_half_migrated_gets_each_command_served_where_its_key_lives() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let (stays, moves) = ("{half}.stays", "{half}.moves");
    let slot = key_slot(b"half");
    let _: () = client
        .query(redis::cmd("SET").arg(stays).arg("here"))
        .await
        .unwrap();
    let source = owner_of(&nodes, slot).await;
    let target = start_migration(&nodes, source, slot).await;
    // The source serves the key it holds and answers ASK for the one it does not.
    let (first, set, second): (String, (), String) = redis::pipe()
        .cmd("GET")
        .arg(stays)
        .cmd("SET")
        .arg(moves)
        .arg("there")
        .cmd("GET")
        .arg(stays)
        .query_async(&mut client.clone())
        .await
        .unwrap();
    assert_eq!((first.as_str(), set, second.as_str()), ("here", (), "here"));
    let (_, stored): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(moves)
        .query_async(&mut target.admin().await)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("there"), "on the importing node");
    client.shutdown().await;
}

#[tokio::test]
async fn a_transaction_asked_elsewhere_runs_there_whole_after_asking() {
    let nodes = three_node_cluster().await;
    let mut client = cluster_client(&nodes).await;
    // One key: the importing node answers TRYAGAIN to a transaction over several keys until
    // the migration ends (the server's rule), which the client waits out.
    let key = "{asked-tx}.a";
    let slot = key_slot(b"asked-tx");
    let source = owner_of(&nodes, slot).await;
    let target = start_migration(&nodes, source, slot).await;
    let (first, second): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(key)
        .cmd("INCRBY")
        .arg(key)
        .arg(2)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((first, second), (1, 3), "applied once, as one transaction");
    let (_, stored): ((), Option<i64>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(key)
        .query_async(&mut target.admin().await)
        .await
        .unwrap();
    assert_eq!(stored, Some(3), "on the importing node");
    client.shutdown().await;
}
