//! The drop-in differential: commands of every family whose replies steadfast must give
//! exactly as redis-rs does (single endpoint and cluster).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use redis::Value;

/// Data for the read commands below, written once with raw redis-rs.
pub async fn seed<R: redis::aio::ConnectionLike + Send>(raw: &mut R) {
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

pub fn command(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// Commands of every family whose replies are the same on every call.
pub const READS: &[&[&str]] = &[
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
pub const WRITES: &[&[&str]] = &[
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

pub fn with_who(args: &[&str], who: &str) -> redis::Cmd {
    let owned: Vec<String> = args.iter().map(|a| a.replace("{who}", who)).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    command(&refs)
}

/// How replies are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Replies and errors, text and all.
    Exact,
    /// A cluster: replies exactly, errors by kind and code (a cluster client refuses a
    /// cross-slot command before sending it, in its own words); keyless commands whose reply is
    /// in the answering node's own hash order (`CONFIG GET maxmemory*`) are left out, since any
    /// node may answer them.
    Cluster,
}

fn show(result: &redis::RedisResult<Value>, compare: Compare) -> String {
    match (result, compare) {
        (Err(e), Compare::Cluster) => format!("error {:?} {:?}", e.kind(), e.code()),
        _ => format!("{result:?}"),
    }
}

/// Sends every command of [`READS`] and [`WRITES`] to both and asserts the replies are equal.
pub async fn replies_match<R, C>(raw: &mut R, client: &mut C, label: &str, compare: Compare)
where
    R: redis::aio::ConnectionLike + Send,
    C: redis::aio::ConnectionLike + Send,
{
    for args in READS {
        if compare == Compare::Cluster && args[0] == "CONFIG" {
            continue;
        }
        let cmd = command(args);
        let expected: redis::RedisResult<Value> = cmd.query_async(raw).await;
        let got: redis::RedisResult<Value> = cmd.query_async(client).await;
        assert_eq!(
            show(&expected, compare),
            show(&got, compare),
            "{label}: {args:?}"
        );
    }
    for args in WRITES {
        let expected: redis::RedisResult<Value> = with_who(args, "raw").query_async(raw).await;
        let got: redis::RedisResult<Value> = with_who(args, "sf").query_async(client).await;
        // Replies that name the key (LMPOP) name each client's own.
        assert_eq!(
            show(&expected, compare).replace("raw:", "sf:"),
            show(&got, compare),
            "{label}: {args:?}"
        );
    }
}
