//! Drop-in replies: every reply and typed conversion from steadfast equals raw redis-rs's on
//! the same server, both at their defaults and both with RESP3.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use steadfast::Client;
use support::{RedisServer, config_for, connected, init_tracing};

/// Data for the read commands below, written once with raw redis-rs.
async fn seed(raw: &mut MultiplexedConnection) {
    let setup: &[&[&str]] = &[
        &["SET", "s", "hello"],
        &["RPUSH", "l", "a", "b", "c", "b"],
        &["HSET", "h", "f1", "v1", "f2", "v2"],
        &["HSET", "h1", "only", "one"],
        &["SADD", "set", "x", "y", "z"],
        &["ZADD", "z", "1.5", "a", "2", "b", "0.1", "c", "-3.25", "d"],
        &["ZADD", "z1", "7.5", "m"],
        &["XADD", "st", "1-1", "f", "v"],
        &["XADD", "st", "2-1", "g", "w", "h", "x"],
        &["XGROUP", "CREATE", "st", "grp", "0"],
        &[
            "GEOADD",
            "geo",
            "13.361389",
            "38.115556",
            "Palermo",
            "15.087269",
            "37.502669",
            "Catania",
        ],
        &["PFADD", "hll", "a", "b", "c"],
        &["SETBIT", "bits", "7", "1"],
    ];
    for args in setup {
        let _: Value = command(args).query_async(raw).await.unwrap();
    }
}

fn command(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// Commands of every family whose replies are the same on every call.
const READS: &[&[&str]] = &[
    &["GET", "s"],
    &["GET", "missing"],
    &["STRLEN", "s"],
    &["GETRANGE", "s", "0", "2"],
    &["MGET", "s", "missing"],
    &["LRANGE", "l", "0", "-1"],
    &["LPOS", "l", "b", "COUNT", "0"],
    &["LINDEX", "l", "9"],
    &["HGETALL", "h"],
    &["HGETALL", "missing"],
    &["HMGET", "h", "f1", "nope"],
    &["HKEYS", "h"],
    &["HRANDFIELD", "h1", "1", "WITHVALUES"],
    &["SMEMBERS", "set"],
    &["SISMEMBER", "set", "x"],
    &["SMISMEMBER", "set", "x", "q"],
    &["SINTER", "set", "set"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &["ZRANGE", "z", "0", "-1"],
    &["ZREVRANGE", "z", "0", "1", "WITHSCORES"],
    &["ZRANGEBYSCORE", "z", "-inf", "+inf", "WITHSCORES"],
    &["ZRANGE", "z", "(0", "2", "BYSCORE", "WITHSCORES"],
    &["ZSCORE", "z", "a"],
    &["ZSCORE", "z", "c"],
    &["ZMSCORE", "z", "a", "nope", "d"],
    &["ZRANK", "z", "b"],
    &["ZRANDMEMBER", "z1", "1", "WITHSCORES"],
    &["ZUNION", "2", "z", "z1", "WITHSCORES"],
    &["ZINTER", "1", "z", "WITHSCORES"],
    &["ZDIFF", "2", "z", "z1", "WITHSCORES"],
    &["ZSCAN", "z", "0"],
    &["XRANGE", "st", "-", "+"],
    &["XREVRANGE", "st", "+", "-", "COUNT", "1"],
    &["XREAD", "COUNT", "5", "STREAMS", "st", "0"],
    &["XREAD", "STREAMS", "st", "$"],
    &["XLEN", "st"],
    &["XINFO", "GROUPS", "st"],
    &["XPENDING", "st", "grp"],
    &["GEOPOS", "geo", "Palermo", "nowhere"],
    &["GEODIST", "geo", "Palermo", "Catania", "km"],
    &["GEOHASH", "geo", "Palermo"],
    &[
        "GEOSEARCH",
        "geo",
        "FROMLONLAT",
        "15",
        "37",
        "BYRADIUS",
        "200",
        "km",
        "ASC",
        "WITHCOORD",
        "WITHDIST",
    ],
    &["PFCOUNT", "hll"],
    &["BITCOUNT", "bits"],
    &["TYPE", "z"],
    &["EXISTS", "s", "l", "nope"],
    &["OBJECT", "ENCODING", "l"],
    &["CONFIG", "GET", "maxmemory*"],
    &["EVAL", "return {1, 'two', {3, 'four'}, true, false}", "0"],
    &["EVAL", "return redis.call('HGETALL', KEYS[1])", "1", "h"],
    &["EVAL", "return tonumber('2.5')", "0"],
    &["EVAL", "return false", "0"],
    &["EVAL", "return true", "0"],
    &["EVAL", "return redis.error_reply('MY failure')", "0"],
    &["ECHO", "bytes"],
    &["PING"],
    &["COMMAND", "INFO", "GET"],
    &["HGET", "l", "wrongtype"],
];

/// Writes whose replies do not depend on who sent them; each client writes its own key.
const WRITES: &[&[&str]] = &[
    &["SET", "{who}:k", "v"],
    &["SET", "{who}:k", "v2", "GET"],
    &["INCRBYFLOAT", "{who}:f", "1.1"],
    &["ZINCRBY", "{who}:z", "2.5", "m"],
    &["ZADD", "{who}:z", "INCR", "0.5", "m"],
    &["ZPOPMIN", "{who}:z", "5"],
    &["HINCRBYFLOAT", "{who}:h", "f", "0.25"],
    &["LPUSH", "{who}:l", "a", "b"],
    &["LMPOP", "1", "{who}:l", "LEFT", "COUNT", "2"],
    &["XADD", "{who}:s", "5-1", "f", "v"],
    &["DEL", "{who}:k", "{who}:f"],
];

fn with_who(args: &[&str], who: &str) -> redis::Cmd {
    let owned: Vec<String> = args.iter().map(|a| a.replace("{who}", who)).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    command(&refs)
}

async fn replies_match(raw: &mut MultiplexedConnection, client: &mut Client, label: &str) {
    for args in READS {
        let cmd = command(args);
        let expected: redis::RedisResult<Value> = cmd.query_async(raw).await;
        let got: redis::RedisResult<Value> = cmd.query_async(client).await;
        assert_eq!(
            format!("{expected:?}"),
            format!("{got:?}"),
            "{label}: {args:?}"
        );
    }
    for args in WRITES {
        let expected: redis::RedisResult<Value> = with_who(args, "raw").query_async(raw).await;
        let got: redis::RedisResult<Value> = with_who(args, "sf").query_async(client).await;
        // Replies that name the key (LMPOP) name each client's own.
        assert_eq!(
            format!("{expected:?}").replace("raw:", "sf:"),
            format!("{got:?}"),
            "{label}: {args:?}"
        );
    }
}

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
    replies_match(&mut raw, &mut client, "defaults").await;
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
    replies_match(&mut raw, &mut client, "resp3").await;
    let (expected, got) = (typed(&mut raw).await, typed(&mut client).await);
    assert!(matches!(
        raw.hgetall::<_, Value>("h").await,
        Ok(Value::Map(_))
    ));
    assert_eq!(expected, got);
    client.shutdown().await;
}
