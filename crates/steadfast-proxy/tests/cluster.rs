//! A Redis Cluster behind the proxy (`--cluster`): one node owning every slot to its clients,
//! cluster-unaware and cluster-mode alike, with commands routed by slot and shards failing over
//! under them.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../steadfast/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use redis::Value;
use steadfast_proxy::{Proxy, ProxyConfig};
use support::RedisServer;
use support::cluster::{fail_over_to, key_on_shard, six_node_cluster, three_node_cluster};
use tokio::time::Instant;

async fn proxy_for_cluster(nodes: &[RedisServer]) -> (Proxy, SocketAddr) {
    common::init_tracing();
    let mut config = ProxyConfig::new(steadfast::Config::from_url(&nodes[0].url()).unwrap());
    config.is_cluster = true;
    common::start(config).await
}

async fn connection(address: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{address}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_unaware_client_reaches_every_shard_through_one_address() {
    let nodes = three_node_cluster().await;
    let (proxy, address) = proxy_for_cluster(&nodes).await;
    let mut connection = connection(address).await;
    let keys: Vec<String> = (0..3).map(key_on_shard).collect();
    for (n, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(n)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    // Each key is on its own shard's primary, not on the node the proxy was pointed at.
    for (n, key) in keys.iter().enumerate() {
        let mut direct = nodes[n].admin().await;
        let stored: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut direct)
            .await
            .unwrap_or(None);
        assert_eq!(stored, Some(n.to_string()), "{key} on shard {n}");
    }
    // Multi-key commands over three slots are split and joined.
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        values,
        vec![Some("0".into()), Some("1".into()), Some("2".into())]
    );
    let deleted: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    // Any other command over several slots is refused, unsent.
    let refused = redis::cmd("RENAME")
        .arg(&keys[0])
        .arg(&keys[1])
        .query_async::<Value>(&mut connection)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("CROSSSLOT"), "{refused}");
    // A pipeline over every shard, non-idempotent: each command ran exactly once.
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("INCR")
            .arg(key)
            .cmd("LPUSH")
            .arg(format!("{key}:log"))
            .arg("x");
    }
    let replies: Vec<i64> = pipe.query_async(&mut connection).await.unwrap();
    assert_eq!(replies, vec![1; 6]);
    // A transaction on one slot, WATCH included.
    let _: () = redis::cmd("WATCH")
        .arg(&keys[2])
        .query_async(&mut connection)
        .await
        .unwrap();
    let committed: Option<(i64, i64)> = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&keys[2])
        .cmd("INCR")
        .arg(&keys[2])
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(committed, Some((2, 3)));
    // The proxy is one node owning every slot, at the address the client used.
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await
        .unwrap();
    let Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    assert_eq!(ranges.len(), 1);
    let Value::Array(range) = &ranges[0] else {
        panic!("{ranges:?}")
    };
    assert_eq!(range[..2], [Value::Int(0), Value::Int(16_383)]);
    let Value::Array(node) = &range[2] else {
        panic!("{range:?}")
    };
    assert_eq!(
        node[..2],
        [
            Value::BulkString(address.ip().to_string().into_bytes()),
            Value::Int(i64::from(address.port()))
        ]
    );
    let refused = redis::cmd("SELECT")
        .arg(1)
        .query_async::<Value>(&mut connection)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("cluster mode"), "{refused}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_mode_client_sends_everything_to_the_proxy_and_it_routes() {
    let nodes = three_node_cluster().await;
    let (proxy, address) = proxy_for_cluster(&nodes).await;
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://{address}")]).unwrap();
    let mut connection = client.get_async_connection().await.unwrap();
    for n in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("cluster-mode:{n}"))
            .arg(n)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let mut total = 0;
    for node in &nodes {
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut node.admin().await)
            .await
            .unwrap();
        assert!(size > 0, "every shard holds some of the 50 keys");
        total += size;
    }
    assert_eq!(total, 50);
    let got: Option<i64> = redis::cmd("GET")
        .arg("cluster-mode:49")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(got, Some(49));
    proxy.shutdown().await;
}

/// One writer per shard, each an INCR loop (non-idempotent) through the proxy with a plain
/// connection; returns (acknowledged, failures) per writer.
fn writers(
    address: SocketAddr,
    keys: &[String],
    until: Instant,
) -> Vec<tokio::task::JoinHandle<(i64, Vec<String>)>> {
    keys.iter()
        .map(|key| {
            let key = key.clone();
            tokio::spawn(async move {
                let mut connection = connection(address).await;
                let (mut acknowledged, mut failures) = (0, Vec::new());
                while Instant::now() < until {
                    match redis::cmd("INCR")
                        .arg(&key)
                        .query_async::<i64>(&mut connection)
                        .await
                    {
                        Ok(_) => acknowledged += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (acknowledged, failures)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_failing_over_under_the_proxy_loses_and_doubles_nothing() {
    let nodes = six_node_cluster().await;
    let (proxy, address) = proxy_for_cluster(&nodes).await;
    let keys: Vec<String> = (0..3).map(key_on_shard).collect();
    let until = Instant::now() + Duration::from_secs(6);
    let running = writers(address, &keys, until);
    // Every writer has been answered before the failover starts.
    let started = Instant::now() + Duration::from_secs(5);
    let mut probe = connection(address).await;
    for key in &keys {
        loop {
            let n: Option<i64> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut probe)
                .await
                .unwrap();
            if n.is_some() {
                break;
            }
            assert!(Instant::now() < started, "{key} was never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Shard 0's replica (node 3) takes over, coordinated (CLUSTER FAILOVER).
    fail_over_to(&nodes[3]).await;
    for (key, writer) in keys.iter().zip(running) {
        let (acknowledged, failures) = writer.await.unwrap();
        assert!(failures.is_empty(), "{key}: {failures:?}");
        let stored: i64 = redis::cmd("GET")
            .arg(key)
            .query_async(&mut probe)
            .await
            .unwrap();
        assert_eq!(stored, acknowledged, "{key}: every INCR ran exactly once");
    }
    // Shard 0's writes went on at its new primary.
    let on_new_primary: i64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut nodes[3].admin().await)
        .await
        .unwrap();
    let role: Vec<Value> = redis::cmd("ROLE")
        .query_async(&mut nodes[3].admin().await)
        .await
        .unwrap();
    assert_eq!(role[0], Value::BulkString(b"master".to_vec()));
    assert!(on_new_primary > 0);
    proxy.shutdown().await;
}
