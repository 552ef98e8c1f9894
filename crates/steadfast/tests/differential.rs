//! Drop-in replies: every reply and typed conversion from steadfast equals raw redis-rs's on
//! the same server, both at their defaults and both with RESP3.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::collections::HashMap;

use redis::{AsyncCommands, Value};
use support::replies::{Compare, replies_match, seed};
use support::{RedisServer, config_for, connected, init_tracing};

/// The typed conversions of the common AsyncCommands a switching user would call.
#[derive(Debug, PartialEq)]
struct Typed {
    hgetall_vec: redis::RedisResult<Vec<String>>,
    hgetall_map: redis::RedisResult<HashMap<String, String>>,
    zrange_vec: redis::RedisResult<Vec<String>>,
    zrange_pairs: redis::RedisResult<Vec<(String, f64)>>,
    zscore: redis::RedisResult<Option<f64>>,
    zscore_text: redis::RedisResult<Option<String>>,
    config_vec: redis::RedisResult<Vec<String>>,
    config_map: redis::RedisResult<HashMap<String, String>>,
    smembers: redis::RedisResult<std::collections::BTreeSet<String>>,
    xrange: redis::RedisResult<Vec<(String, Vec<String>)>>,
    script: redis::RedisResult<Vec<redis::Value>>,
    geodist_text: redis::RedisResult<Option<String>>,
}

async fn typed<C: redis::aio::ConnectionLike + Send + Sync>(c: &mut C) -> Typed {
    Typed {
        hgetall_vec: c.hgetall("h").await,
        hgetall_map: c.hgetall("h").await,
        zrange_vec: c.zrange_withscores("z", 0, -1).await,
        zrange_pairs: c.zrange_withscores("z", 0, -1).await,
        zscore: c.zscore("z", "a").await,
        zscore_text: c.zscore("z", "c").await,
        config_vec: redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(c)
            .await,
        config_map: redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(c)
            .await,
        smembers: c.smembers("set").await,
        xrange: redis::cmd("XRANGE")
            .arg("st")
            .arg("-")
            .arg("+")
            .query_async(c)
            .await,
        script: redis::cmd("EVAL")
            .arg("return {1, 'two', true}")
            .arg(0)
            .query_async(c)
            .await,
        geodist_text: redis::cmd("GEODIST")
            .arg("geo")
            .arg("Palermo")
            .arg("Catania")
            .arg("km")
            .query_async(c)
            .await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_their_defaults_steadfast_and_redis_rs_give_the_same_replies_and_conversions() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut raw = server.admin().await;
    seed(&mut raw).await;
    let mut client = connected(config_for(&server)).await;
    replies_match(&mut raw, &mut client, "defaults", Compare::Exact).await;
    let (expected, got) = (typed(&mut raw).await, typed(&mut client).await);
    assert!(
        expected.hgetall_vec.is_ok() && expected.zrange_vec.is_ok() && expected.config_vec.is_ok()
    );
    assert_eq!(expected, got);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resp3_on_both_steadfast_and_redis_rs_give_the_same_replies_and_conversions() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut raw = redis::Client::open(format!("{}/?protocol=resp3", server.url()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    seed(&mut raw).await;
    let mut config = config_for(&server);
    config.endpoint.protocol = steadfast::Protocol::Resp3;
    let mut client = connected(config).await;
    replies_match(&mut raw, &mut client, "resp3", Compare::Exact).await;
    let (expected, got) = (typed(&mut raw).await, typed(&mut client).await);
    assert!(matches!(
        raw.hgetall::<_, Value>("h").await,
        Ok(Value::Map(_))
    ));
    assert_eq!(expected, got);
    client.shutdown().await;
}
