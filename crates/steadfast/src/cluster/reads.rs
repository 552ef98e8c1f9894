//! Which commands only read, and so may be served by a replica.
//!
//! # Behaviour
//! - A command flagged read-only by Redis 7 that names keys (`GET`, `HGETALL`, `ZRANGE`,
//!   `XRANGE`, `EVAL_RO`, `SORT_RO` ...) only reads. `TOUCH` (updates access times) and
//!   commands about the server (`INFO`, `DBSIZE`, `SCAN` ...: no slot) are left to primaries.
//! - A pipeline reads only if every command in it does; a transaction never counts.

use redis::Cmd;

use crate::command::name::{Name, Table};

// Upper-case and sorted, to stay reviewable (a test checks both).
const READ_ONLY: &[&[u8]] = &[
    b"BITCOUNT",
    b"BITFIELD_RO",
    b"BITPOS",
    b"DUMP",
    b"EVALSHA_RO",
    b"EVAL_RO",
    b"EXISTS",
    b"EXPIRETIME",
    b"FCALL_RO",
    b"GEODIST",
    b"GEOHASH",
    b"GEOPOS",
    b"GEORADIUSBYMEMBER_RO",
    b"GEORADIUS_RO",
    b"GEOSEARCH",
    b"GET",
    b"GETBIT",
    b"GETRANGE",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HRANDFIELD",
    b"HSCAN",
    b"HSTRLEN",
    b"HVALS",
    b"LCS",
    b"LINDEX",
    b"LLEN",
    b"LPOS",
    b"LRANGE",
    b"MGET",
    b"PEXPIRETIME",
    b"PFCOUNT",
    b"PTTL",
    b"SCARD",
    b"SDIFF",
    b"SINTER",
    b"SINTERCARD",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SMISMEMBER",
    b"SORT_RO",
    b"SRANDMEMBER",
    b"SSCAN",
    b"STRLEN",
    b"SUBSTR",
    b"SUNION",
    b"TTL",
    b"TYPE",
    b"XINFO",
    b"XLEN",
    b"XPENDING",
    b"XRANGE",
    b"XREAD",
    b"XREVRANGE",
    b"ZCARD",
    b"ZCOUNT",
    b"ZDIFF",
    b"ZINTER",
    b"ZINTERCARD",
    b"ZLEXCOUNT",
    b"ZMSCORE",
    b"ZRANDMEMBER",
    b"ZRANGE",
    b"ZRANGEBYLEX",
    b"ZRANGEBYSCORE",
    b"ZRANK",
    b"ZREVRANGE",
    b"ZREVRANGEBYLEX",
    b"ZREVRANGEBYSCORE",
    b"ZREVRANK",
    b"ZSCAN",
    b"ZSCORE",
    b"ZUNION",
];

/// Whether `cmd` only reads keys (a replica may serve it).
pub(crate) fn is_read_only(cmd: &Cmd) -> bool {
    static TABLE: Table<()> = Table::new(|| READ_ONLY.iter().map(|&name| (name, ())).collect());
    Name::of(cmd).is_some_and(|name| TABLE.get(&name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_read_only_and_writes_and_server_commands_are_not() {
        assert!(is_read_only(redis::cmd("get").arg("k")));
        assert!(is_read_only(redis::cmd("ZRANGE").arg("z").arg(0).arg(-1)));
        assert!(is_read_only(redis::cmd("EVAL_RO").arg("return 1").arg(0)));
        assert!(!is_read_only(redis::cmd("SET").arg("k").arg("v")));
        assert!(!is_read_only(redis::cmd("GETEX").arg("k")));
        assert!(!is_read_only(redis::cmd("EVAL").arg("return 1").arg(0)));
        assert!(!is_read_only(&redis::cmd("DBSIZE")));
        assert!(!is_read_only(redis::cmd("TOUCH").arg("k")));
    }

    #[test]
    fn the_table_is_upper_case_and_sorted_so_it_stays_reviewable() {
        assert!(READ_ONLY.windows(2).all(|w| w[0] < w[1]));
        assert!(
            READ_ONLY
                .iter()
                .all(|n| !n.iter().any(u8::is_ascii_lowercase))
        );
    }
}
