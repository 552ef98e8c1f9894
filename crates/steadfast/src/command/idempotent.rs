//! Which commands may be sent twice without changing the outcome.
//!
//! # Behaviour
//! - Reads are idempotent. So are writes that set a value regardless of the old one
//!   (`SET` without `NX`/`XX`/`GET`, `MSET`, `SETEX`, `PSETEX`, `HMSET`, `EXPIREAT`, `PEXPIREAT`).
//! - Counters, list pushes, conditional writes, scripts and transactions are not: a second send
//!   could apply them twice or change the reply. The caller can opt in per call
//!   ([`Client::retrying_ambiguous`](crate::Client::retrying_ambiguous)).
//! - A pipeline is idempotent only if every command in it is; a transaction never is.

use redis::{Arg, Cmd};

use super::name::{Name, Table};

const IDEMPOTENT: &[&[u8]] = &[
    b"BITCOUNT",
    b"BITPOS",
    b"DBSIZE",
    b"DUMP",
    b"ECHO",
    b"EXISTS",
    b"EXPIREAT",
    b"EXPIRETIME",
    b"GEODIST",
    b"GEOHASH",
    b"GEOPOS",
    b"GET",
    b"GETBIT",
    b"GETRANGE",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HMSET",
    b"HRANDFIELD",
    b"HSCAN",
    b"HSTRLEN",
    b"HVALS",
    b"INFO",
    b"KEYS",
    b"LINDEX",
    b"LLEN",
    b"LPOS",
    b"LRANGE",
    b"MGET",
    b"MSET",
    b"PEXPIREAT",
    b"PEXPIRETIME",
    b"PFCOUNT",
    b"PING",
    b"PSETEX",
    b"PTTL",
    b"RANDOMKEY",
    b"ROLE",
    b"SCAN",
    b"SCARD",
    b"SDIFF",
    b"SETEX",
    b"SINTER",
    b"SINTERCARD",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SMISMEMBER",
    b"SRANDMEMBER",
    b"SSCAN",
    b"STRLEN",
    b"SUNION",
    b"TIME",
    b"TTL",
    b"TYPE",
    b"XINFO",
    b"XLEN",
    b"XPENDING",
    b"XRANGE",
    b"XREVRANGE",
    b"ZCARD",
    b"ZCOUNT",
    b"ZDIFF",
    b"ZINTER",
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

/// `SET` options that make a second send observable.
const SET_CONDITIONS: &[&[u8]] = &[b"NX", b"XX", b"GET"];

/// Whether sending `cmd` twice leaves the server and the reply as sending it once.
pub(crate) fn is_idempotent(cmd: &Cmd) -> bool {
    let Some(name) = Name::of(cmd) else {
        return false;
    };
    if name.as_bytes() == b"SET" {
        return !cmd.args_iter().skip(1).any(|arg| match arg {
            Arg::Simple(a) => SET_CONDITIONS.iter().any(|c| a.eq_ignore_ascii_case(c)),
            _ => false,
        });
    }
    static TABLE: Table<()> = Table::new(|| IDEMPOTENT.iter().map(|&name| (name, ())).collect());
    TABLE.get(&name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_plain_sets_are_idempotent() {
        assert!(is_idempotent(redis::cmd("get").arg("k")));
        assert!(is_idempotent(
            redis::cmd("SET").arg("k").arg("v").arg("EX").arg(5)
        ));
        assert!(is_idempotent(redis::cmd("MGET").arg("a").arg("b")));
    }

    #[test]
    fn counters_and_conditional_sets_are_not() {
        assert!(!is_idempotent(redis::cmd("INCR").arg("k")));
        assert!(!is_idempotent(
            redis::cmd("SET").arg("k").arg("v").arg("nx")
        ));
        assert!(!is_idempotent(
            redis::cmd("SET").arg("k").arg("v").arg("GET")
        ));
        assert!(!is_idempotent(redis::cmd("LPUSH").arg("k").arg("v")));
        assert!(!is_idempotent(redis::cmd("EVAL").arg("return 1").arg(0)));
    }

    #[test]
    fn the_table_is_upper_case_and_sorted_so_it_stays_reviewable() {
        assert!(IDEMPOTENT.windows(2).all(|w| w[0] < w[1]));
        assert!(
            IDEMPOTENT
                .iter()
                .all(|n| !n.iter().any(u8::is_ascii_lowercase))
        );
    }
}
