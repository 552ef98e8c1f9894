//! Real Redis Clusters for the cluster tests: three or six cluster-enabled servers with their
//! slots assigned, and helpers that find, move and count what the tests look at.

use std::time::Duration;

use steadfast::cluster::{View, key_slot};
use tokio::time::Instant;

use super::RedisServer;

pub async fn cluster_node() -> RedisServer {
    RedisServer::start_cluster_node(&["--cluster-node-timeout", "5000"]).await
}

/// Three primaries, each serving a third of the slots, introduced to each other, and with
/// `has_replicas` a replica each; every node started with `extra`. Waits (at most 20 s) until
/// every node reports the cluster ok and every replica is in sync.
pub async fn cluster(has_replicas: bool, extra: &[&str]) -> Vec<RedisServer> {
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
pub async fn wait_for_all(
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

pub async fn three_node_cluster() -> Vec<RedisServer> {
    cluster(false, &["--cluster-node-timeout", "5000"]).await
}

pub async fn node_id(server: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut server.admin().await)
        .await
        .unwrap()
}

/// The server of `nodes` that owns `slot` now.
pub async fn owner_of(nodes: &[RedisServer], slot: u16) -> &RedisServer {
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
pub async fn start_migration<'a>(
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
pub async fn hand_over<'a>(
    nodes: &'a [RedisServer],
    old: &RedisServer,
    slot: u16,
) -> &'a RedisServer {
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

pub async fn cluster_client(nodes: &[RedisServer]) -> steadfast::cluster::ClusterClient {
    let config = steadfast::Config::from_url(&nodes[0].url()).unwrap();
    steadfast::cluster::ClusterClient::connect(config)
        .await
        .unwrap()
}

/// MSET, MGET, EXISTS, TOUCH, DEL, MGET, UNLINK over twelve keys of `who` spread over every
/// shard; the replies as text.
pub async fn multi_key_script<C: redis::aio::ConnectionLike>(
    con: &mut C,
    who: &str,
) -> Vec<String> {
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

/// Which of the test clusters' first three nodes owns `slot` as the cluster was formed.
pub fn owner_index(slot: u16) -> usize {
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
}

/// Three primaries with a replica each, `cluster-node-timeout` 1 s. Without full coverage
/// required, the other shards keep serving while one fails over; with it (the server's default)
/// every node answers CLUSTERDOWN until the failover ends.
pub async fn six_node_cluster() -> Vec<RedisServer> {
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

/// A key that shard `shard` (0, 1, 2) of the test clusters serves.
pub fn key_on_shard(shard: usize) -> String {
    (0..)
        .map(|n| format!("shard-key:{n}"))
        .find(|k| owner_index(key_slot(k.as_bytes())) == shard)
        .unwrap()
}

/// How many times `server` ran `CLUSTER NODES` since its statistics were last reset.
pub async fn cluster_nodes_calls(server: &RedisServer) -> u64 {
    command_calls(server, "cluster|nodes").await
}

/// How many times `server` ran `command` (`commandstats` spelling: `get`, `cluster|nodes`)
/// since its statistics were last reset.
pub async fn command_calls(server: &RedisServer, command: &str) -> u64 {
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

pub async fn reset_stats(nodes: &[RedisServer]) {
    for node in nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
    }
}

/// A client of `nodes` that reads from replicas.
pub async fn replica_reading_client(nodes: &[RedisServer]) -> steadfast::cluster::ClusterClient {
    let config =
        steadfast::Config::from_url(&format!("{}?read_from=replica", nodes[0].url())).unwrap();
    assert_eq!(config.cluster.read_from, steadfast::ReadFrom::Replica);
    steadfast::cluster::ClusterClient::connect(config)
        .await
        .unwrap()
}

/// Waits until `node` has a subscriber on Azure's channel (the node's client listens there).
pub async fn wait_for_azure_listener(node: &RedisServer) {
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
pub fn writer(
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

/// `CLUSTER FAILOVER` on `replica`; returns once it calls itself a primary (at most 10 s).
pub async fn fail_over_to(replica: &RedisServer) {
    let mut admin = replica.admin().await;
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut admin)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut admin).await.unwrap();
        if matches!(role.first(), Some(redis::Value::BulkString(b)) if b.as_slice() == b"master") {
            return;
        }
        assert!(Instant::now() < until, "the replica did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
