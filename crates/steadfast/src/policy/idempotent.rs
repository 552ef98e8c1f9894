//! Which commands may be sent twice without changing the outcome.
//!
//! # Behaviour
//! - Reads are idempotent (every read-only command on keys, [`is_read_only`], and questions
//!   about the server). So are writes that set a value regardless of the old one
//!   (`SET` without `NX`/`XX`/`GET`, `MSET`, `SETEX`, `PSETEX`, `HMSET`, `EXPIREAT`, `PEXPIREAT`).
//! - Counters, list pushes, conditional writes, scripts and transactions are not: a second send
//!   could apply them twice or change the reply. The caller can opt in per call
//!   ([`Client::retrying_ambiguous`](crate::Client::retrying_ambiguous)).
//! - A pipeline is idempotent only if every command in it is; a transaction never is.

use redis::{Arg, Cmd};

use super::name::{Name, Table};

/// Reads of keys: a replica may serve them, and sending one twice changes nothing.
const READS: &[&[u8]] = &[
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

/// Other commands whose second send changes nothing: questions about the server, and writes
/// that set a value regardless of the old one.
const OTHERS: &[&[u8]] = &[
    b"DBSIZE",
    b"ECHO",
    b"EXPIREAT",
    b"HMSET",
    b"INFO",
    b"KEYS",
    b"MSET",
    b"PEXPIREAT",
    b"PING",
    b"PSETEX",
    b"RANDOMKEY",
    b"ROLE",
    b"SCAN",
    b"SETEX",
    b"TIME",
];

/// Which table a command is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Other,
}

/// Both tables, looked up once per command.
static KINDS: Table<Kind> = Table::new(|| {
    let reads = READS.iter().map(|&name| (name, Kind::Read));
    reads
        .chain(OTHERS.iter().map(|&name| (name, Kind::Other)))
        .collect()
});

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
    KINDS.get(&name).is_some()
}

/// Whether `cmd` only reads keys (a cluster replica may serve it). `TOUCH` (updates access
/// times) and questions about the server (`INFO`, `DBSIZE`, `SCAN` ...: no slot) are not.
pub(crate) fn is_read_only(cmd: &Cmd) -> bool {
    KINDS.of(cmd) == Some(Kind::Read)
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
    fn the_tables_are_upper_case_and_sorted_so_they_stay_reviewable() {
        for table in [READS, OTHERS] {
            assert!(table.windows(2).all(|w| w[0] < w[1]));
            assert!(table.iter().all(|n| !n.iter().any(u8::is_ascii_lowercase)));
        }
    }

    #[test]
    fn reads_are_read_only_and_writes_and_server_commands_are_not() {
        assert!(is_read_only(redis::cmd("get").arg("k")));
        assert!(is_read_only(redis::cmd("ZRANGE").arg("z").arg(0).arg(-1)));
        assert!(is_read_only(redis::cmd("EVAL_RO").arg("return 1").arg(0)));
        assert!(is_idempotent(redis::cmd("EVAL_RO").arg("return 1").arg(0)));
        assert!(!is_read_only(redis::cmd("SET").arg("k").arg("v")));
        assert!(!is_read_only(redis::cmd("GETEX").arg("k")));
        assert!(!is_read_only(redis::cmd("EVAL").arg("return 1").arg(0)));
        assert!(!is_read_only(&redis::cmd("DBSIZE")));
        assert!(!is_read_only(redis::cmd("TOUCH").arg("k")));
    }
}
