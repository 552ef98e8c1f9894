//! Cluster building blocks against real cluster-enabled redis-server processes: key slots agree
//! with `CLUSTER KEYSLOT`, a real `CLUSTER NODES` answer parses into a view whose owners serve
//! their keys, and a real `MOVED` points at the owner.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use steadfast::cluster::{RedirectKind, View, choose, key_slot};
use support::{RedisServer, utc_in};
use tokio::time::Instant;

async fn cluster_node() -> RedisServer {
    RedisServer::start_cluster_node(&["--cluster-node-timeout", "5000"]).await
}

#[tokio::test]
async fn slots_agree_with_the_servers_cluster_keyslot() {
    let server = cluster_node().await;
    let mut admin = server.admin().await;
    let mut keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{}".to_vec(),
        b"{}x".to_vec(),
        b"}{".to_vec(),
        b"{a".to_vec(),
        b"a{b}{c}".to_vec(),
        b"a{b{c}d}".to_vec(),
        vec![0, 255, b'{', 1, b'}', 7],
    ];
    for n in 0..500u32 {
        keys.push(format!("key:{n}").into_bytes());
        keys.push(format!("{{user{}}}.field{n}", n % 17).into_bytes());
        keys.push(n.to_le_bytes().iter().map(|b| b.wrapping_mul(37)).collect());
    }
    for key in keys {
        let expected: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(key_slot(&key), expected, "key {key:?}");
    }
}

/// Three primaries, each serving a third of the slots, introduced to each other, and with
/// `has_replicas` a replica each; every node started with `extra`. Waits (at most 20 s) until
/// every node reports the cluster ok and every replica is in sync.
async fn cluster(has_replicas: bool, extra: &[&str]) -> Vec<RedisServer> {
    let count = if has_replicas { 6 } else { 3 };
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(RedisServer::start_cluster_node(extra).await);
    }
    let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
    for (node, (start, end)) in nodes.iter().zip(ranges) {
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(start)
            .arg(end)
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
    }
    let mut first = nodes[0].admin().await;
    for other in &nodes[1..] {
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg(other.address.ip().to_string())
            .arg(other.address.port())
            .query_async(&mut first)
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(20);
    let known = format!("cluster_known_nodes:{count}");
    wait_for_all(&nodes, until, |cluster, _| cluster.contains(&known)).await;
    if has_replicas {
        for k in 0..3 {
            let id = node_id(&nodes[k]).await;
            let _: () = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(id)
                .query_async(&mut nodes[3 + k].admin().await)
                .await
                .unwrap();
        }
    }
    wait_for_all(&nodes, until, |cluster, replication| {
        cluster.contains("cluster_state:ok")
            && (replication.contains("role:master")
                || replication.contains("master_link_status:up"))
    })
    .await;
    nodes
}

/// Polls every node's `CLUSTER INFO` and `INFO replication` until `is_ready`, failing the test
/// at `until`.
async fn wait_for_all(
    nodes: &[RedisServer],
    until: Instant,
    is_ready: impl Fn(&str, &str) -> bool,
) {
    for node in nodes {
        let mut admin = node.admin().await;
        loop {
            let cluster: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut admin)
                .await
                .unwrap();
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut admin)
                .await
                .unwrap();
            if is_ready(&cluster, &replication) {
                break;
            }
            assert!(
                Instant::now() < until,
                "the cluster did not form: {cluster}\n{replication}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn three_node_cluster() -> Vec<RedisServer> {
    cluster(false, &["--cluster-node-timeout", "5000"]).await
}

#[tokio::test]
async fn a_real_cluster_view_names_the_node_that_serves_each_key_and_moved_points_there() {
    let nodes = three_node_cluster().await;
    let mut views = Vec::new();
    for node in &nodes {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
        views.push(View::parse(&text).unwrap());
    }
    let view = choose(&views).unwrap();
    assert_eq!(view.nodes.len(), 3);
    assert_eq!(view.covered_slots(), 16_384);
    assert!(views.iter().all(|v| v.layout() == view.layout()));
    for key in ["foo", "bar", "{user1}.name", "key:42"] {
        let owner = view.owner(key_slot(key.as_bytes())).unwrap();
        let owner_ip = owner.address.host.clone().unwrap();
        for node in &nodes {
            let mut admin = node.admin().await;
            let reply: redis::RedisResult<()> = redis::cmd("SET")
                .arg(key)
                .arg("v")
                .query_async(&mut admin)
                .await;
            if *node.address.ip().to_string() == *owner_ip {
                assert!(reply.is_ok(), "the owner refused {key}: {reply:?}");
            } else {
                let error = reply.unwrap_err();
                let text = format!("MOVED {}", error.detail().unwrap_or_default());
                let redirect = steadfast::cluster::Redirect::parse(&text).unwrap();
                assert_eq!(redirect.kind, RedirectKind::Moved);
                assert_eq!(redirect.slot, key_slot(key.as_bytes()));
                assert_eq!(redirect.to.host.as_deref(), Some(&*owner_ip));
            }
        }
    }
}

#[tokio::test]
async fn the_keys_a_command_is_routed_by_are_those_the_server_names() {
    let server = cluster_node().await;
    let mut admin = server.admin().await;
    let commands: Vec<redis::Cmd> = vec![
        redis::cmd("GET").arg("k").clone(),
        redis::cmd("SET").arg("k").arg("v").arg("EX").arg(5).clone(),
        redis::cmd("HSET").arg("h").arg("f").arg("v").clone(),
        redis::cmd("MGET").arg("a").arg("b").arg("c").clone(),
        redis::cmd("MSET")
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2")
            .clone(),
        redis::cmd("DEL").arg("a").arg("b").clone(),
        redis::cmd("EXISTS").arg("a").clone(),
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg("k1")
            .arg("k2")
            .arg("x")
            .clone(),
        redis::cmd("EVALSHA")
            .arg("0123456789012345678901234567890123456789")
            .arg(1)
            .arg("k1")
            .clone(),
        redis::cmd("FCALL")
            .arg("f")
            .arg(1)
            .arg("k1")
            .arg("x")
            .clone(),
        redis::cmd("ZUNION")
            .arg(2)
            .arg("z1")
            .arg("z2")
            .arg("WITHSCORES")
            .clone(),
        redis::cmd("ZINTERCARD").arg(2).arg("z1").arg("z2").clone(),
        redis::cmd("SINTERCARD").arg(2).arg("s1").arg("s2").clone(),
        redis::cmd("LMPOP")
            .arg(2)
            .arg("l1")
            .arg("l2")
            .arg("LEFT")
            .clone(),
        redis::cmd("BLMPOP")
            .arg(0)
            .arg(2)
            .arg("l1")
            .arg("l2")
            .arg("LEFT")
            .clone(),
        redis::cmd("BZMPOP")
            .arg(0)
            .arg(1)
            .arg("z1")
            .arg("MIN")
            .clone(),
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("s1")
            .arg("s2")
            .arg(0)
            .arg(0)
            .clone(),
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg("s1")
            .arg(">")
            .clone(),
        redis::cmd("BITOP")
            .arg("AND")
            .arg("dest")
            .arg("a")
            .arg("b")
            .clone(),
        redis::cmd("OBJECT").arg("ENCODING").arg("k").clone(),
        redis::cmd("MEMORY").arg("USAGE").arg("k").clone(),
        redis::cmd("XINFO").arg("STREAM").arg("s").clone(),
        redis::cmd("SUNIONSTORE")
            .arg("d")
            .arg("s1")
            .arg("s2")
            .clone(),
        redis::cmd("PFMERGE").arg("d").arg("h1").clone(),
        redis::cmd("LPUSH").arg("l").arg("v").clone(),
        redis::cmd("INCR").arg("n").clone(),
        redis::cmd("EXPIRE").arg("k").arg(10).clone(),
    ];
    for cmd in commands {
        let mut ask = redis::cmd("COMMAND");
        ask.arg("GETKEYS");
        for arg in cmd.args_iter() {
            if let redis::Arg::Simple(bytes) = arg {
                ask.arg(bytes);
            }
        }
        let named: Vec<Vec<u8>> = ask.query_async(&mut admin).await.unwrap();
        let ours: Vec<Vec<u8>> = steadfast::cluster::command_keys(&cmd)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(
            ours,
            named,
            "{:?}",
            String::from_utf8_lossy(&cmd.get_packed_command())
        );
    }
    for name in ["PING", "INFO", "TIME"] {
        assert!(steadfast::cluster::command_keys(&redis::cmd(name)).is_empty());
        let named: redis::RedisResult<Vec<Vec<u8>>> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(name)
            .query_async(&mut admin)
            .await;
        assert!(
            named.is_err() || named.is_ok_and(|k| k.is_empty()),
            "{name}"
        );
    }
}

async fn node_id(server: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut server.admin().await)
        .await
        .unwrap()
}

/// The server of `nodes` that owns `slot` now.
async fn owner_of(nodes: &[RedisServer], slot: u16) -> &RedisServer {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut nodes[0].admin().await)
        .await
        .unwrap();
    let view = View::parse(&text).unwrap();
    let ip = view.owner(slot).unwrap().address.host.clone().unwrap();
    nodes
        .iter()
        .find(|n| *n.address.ip().to_string() == *ip)
        .unwrap()
}

/// Starts moving `slot` from `source` to another node (`IMPORTING` there, `MIGRATING` on the
/// source) and returns that node.
async fn start_migration<'a>(
    nodes: &'a [RedisServer],
    source: &RedisServer,
    slot: u16,
) -> &'a RedisServer {
    let target = nodes.iter().find(|n| n.address != source.address).unwrap();
    let (source_id, target_id) = (node_id(source).await, node_id(target).await);
    for (node, state, id) in [
        (target, "IMPORTING", &source_id),
        (source, "MIGRATING", &target_id),
    ] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
    }
    target
}

/// Gives the (empty) `slot` of `old` to another node at once (`SETSLOT NODE` on every node, the
/// new owner first) and returns that node.
async fn hand_over<'a>(nodes: &'a [RedisServer], old: &RedisServer, slot: u16) -> &'a RedisServer {
    let new = nodes.iter().find(|n| n.address != old.address).unwrap();
    let new_id = node_id(new).await;
    for node in std::iter::once(new).chain(nodes.iter().filter(|n| n.address != new.address)) {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&new_id)
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
    }
    new
}

async fn cluster_client(nodes: &[RedisServer]) -> steadfast::cluster::ClusterClient {
    let config = steadfast::Config::from_url(&nodes[0].url()).unwrap();
    steadfast::cluster::ClusterClient::connect(config)
        .await
        .unwrap()
}

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

/// MSET, MGET, EXISTS, TOUCH, DEL, MGET, UNLINK over twelve keys of `who` spread over every
/// shard; the replies as text.
async fn multi_key_script<C: redis::aio::ConnectionLike>(con: &mut C, who: &str) -> Vec<String> {
    let keys: Vec<String> = (0..12).map(|n| format!("{who}:mk:{n}")).collect();
    let shards: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| steadfast::cluster::key_slot(k.as_bytes()) / 5462)
        .collect();
    assert_eq!(shards.len(), 3, "the keys must cover every shard");
    let mut mset = redis::cmd("MSET");
    for (n, key) in keys.iter().take(8).enumerate() {
        mset.arg(key).arg(n);
    }
    let with_keys = |name: &str, keys: &[String]| {
        let mut cmd = redis::cmd(name);
        cmd.arg(keys);
        cmd
    };
    let script = [
        mset,
        with_keys("MGET", &keys),
        with_keys("EXISTS", &keys),
        with_keys("TOUCH", &keys),
        with_keys("DEL", &keys[..4]),
        with_keys("MGET", &keys),
        with_keys("UNLINK", &keys),
        with_keys("EXISTS", &keys),
    ];
    let mut replies = Vec::new();
    for cmd in &script {
        let reply: redis::RedisResult<redis::Value> = cmd.query_async(con).await;
        replies.push(format!("{reply:?}"));
    }
    replies
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

/// Which of the test clusters' first three nodes owns `slot` as the cluster was formed.
fn owner_index(slot: u16) -> usize {
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
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

/// Three primaries with a replica each, `cluster-node-timeout` 1 s. Without full coverage
/// required, the other shards keep serving while one fails over; with it (the server's default)
/// every node answers CLUSTERDOWN until the failover ends.
async fn six_node_cluster() -> Vec<RedisServer> {
    cluster(
        true,
        &[
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ],
    )
    .await
}

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

/// A key that shard `shard` (0, 1, 2) of the test clusters serves.
fn key_on_shard(shard: usize) -> String {
    (0..)
        .map(|n| format!("shard-key:{n}"))
        .find(|k| owner_index(key_slot(k.as_bytes())) == shard)
        .unwrap()
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

/// How many times `server` ran `CLUSTER NODES` since its statistics were last reset.
async fn cluster_nodes_calls(server: &RedisServer) -> u64 {
    command_calls(server, "cluster|nodes").await
}

/// How many times `server` ran `command` (`commandstats` spelling: `get`, `cluster|nodes`)
/// since its statistics were last reset.
async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut server.admin().await)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

async fn reset_stats(nodes: &[RedisServer]) {
    for node in nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
    }
}

/// A client of `nodes` that reads from replicas.
async fn replica_reading_client(nodes: &[RedisServer]) -> steadfast::cluster::ClusterClient {
    let config =
        steadfast::Config::from_url(&format!("{}?read_from=replica", nodes[0].url())).unwrap();
    assert_eq!(config.cluster.read_from, steadfast::ReadFrom::Replica);
    steadfast::cluster::ClusterClient::connect(config)
        .await
        .unwrap()
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

#[tokio::test]
async fn an_idle_client_checks_the_topology_with_one_cluster_nodes_every_two_seconds() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    reset_stats(&nodes).await;
    let idle = Duration::from_millis(6_500);
    tokio::time::sleep(idle).await;
    let mut total = 0;
    for node in &nodes {
        let calls = cluster_nodes_calls(node).await;
        // The goal: at most one per node per 2 s (4 rounds fit in 6.5 s).
        assert!(
            calls <= 4,
            "{} ran CLUSTER NODES {calls} times in {idle:?}",
            node.address
        );
        total += calls;
    }
    // Every 2 s, give or take 10 %, one node asked: 3 checks in 6.5 s (2 to 4); a full
    // refresh (3 nodes) when a check saw a change, e.g. a node flagged `fail?` while the
    // machine is loaded. Asking three nodes every round would be 9 to 12.
    eprintln!("{total} CLUSTER NODES in {idle:?} over the whole cluster");
    assert!(
        (2..=7).contains(&total),
        "{total} CLUSTER NODES in {idle:?} over the whole cluster"
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

/// Waits until `node` has a subscriber on Azure's channel (the node's client listens there).
async fn wait_for_azure_listener(node: &RedisServer) {
    let mut admin = node.admin().await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("AzureRedisEvents")
            .query_async(&mut admin)
            .await
            .unwrap();
        if counts.first().is_some_and(|(_, n)| *n > 0) {
            return;
        }
        assert!(Instant::now() < until, "no client listens for Azure events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets `key` over and over until `stop`; returns the failures and the slowest command.
fn writer(
    client: steadfast::cluster::ClusterClient,
    key: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(Vec<String>, Duration)> {
    tokio::spawn(async move {
        let (mut failures, mut slowest) = (Vec::new(), Duration::ZERO);
        let mut n = 0u64;
        while !stop.is_cancelled() {
            n += 1;
            let started = Instant::now();
            if let Err(error) = client.query::<()>(redis::cmd("SET").arg(&key).arg(n)).await {
                failures.push(error.to_string());
            }
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (failures, slowest)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_maintenance_routes_around_its_node_ahead_and_loses_nothing() {
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
    let published = Instant::now();
    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        utc_in(Duration::from_secs(3)),
        nodes[0].address.ip()
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg("AzureRedisEvents")
        .arg(&message)
        .query_async(&mut nodes[0].admin().await)
        .await
        .unwrap();
    // The client routes around the node from 1 s before the start: 1-2 s after publishing.
    tokio::time::sleep_until(published + Duration::from_millis(2_200)).await;
    reset_stats(&nodes[..1]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sets_while_avoided = command_calls(&nodes[0], "set").await;
    let mut replica = nodes[3].admin().await;
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut replica)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut replica).await.unwrap();
        if matches!(role.first(), Some(redis::Value::BulkString(b)) if b.as_slice() == b"master") {
            break;
        }
        assert!(Instant::now() < until, "the replica did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
        "announced shard: slowest {held_slowest:?}; other shard: slowest {untouched_slowest:?}"
    );
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
