//! Which keys a command names, and so which slot it goes to.
//!
//! # Behaviour
//! - Most commands name one key, right after the command name (`GET k`, `HSET k f v`, ...).
//! - Commands that name every argument as a key (`MGET`, `DEL`, `EXISTS`, `TOUCH`, `UNLINK`,
//!   `WATCH`, `SINTER`, `SUNION`, `SDIFF`, `PFCOUNT`, `PFMERGE`), or every other argument
//!   (`MSET`, `MSETNX`), or keys after a count (`EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`,
//!   `FCALL`, `FCALL_RO`, `ZUNION`, `ZINTER`, `ZINTERCARD`, `ZDIFF`, `SINTERCARD`, `LMPOP`,
//!   `ZMPOP`; `BLMPOP` and `BZMPOP` after their timeout), after a
//!   keyword (`XREAD`, `XREADGROUP`: after `STREAMS`, half of the rest), or in second place
//!   (`OBJECT sub k`, `MEMORY USAGE k`, `XINFO sub k`), or after the first (`BITOP op dest k...`:
//!   the destination and every source) are read by their
//!   own rule.
//! - Commands about the server, not keys (`PING`, `INFO`, `CLUSTER`, `CLIENT`, `CONFIG`, `TIME`,
//!   `SCRIPT`, `FUNCTION`, `DBSIZE`, `ROLE`, `HELLO`, `AUTH`, ...) name no key: any primary may
//!   answer. So do scripts and functions with zero keys.
//! - [`command_slot`] gives the one slot of a command's keys, [`Slot::Any`] for no key, or
//!   [`Slot::Cross`] when its keys hash to different slots (the server would refuse it with
//!   `CROSSSLOT`; the router reports it before sending).

use redis::{Arg, Cmd};

use super::key_slot;

/// Where a command goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// All its keys hash to this slot.
    One(u16),
    /// It names no key.
    Any,
    /// Its keys hash to these two (and maybe more) different slots.
    Cross(u16, u16),
}

/// How a command's keys are laid out after its name.
enum Layout {
    None,
    First,
    All,
    EveryOther,
    Second,
    /// Every argument after the first (`BITOP op dest k...`).
    AfterFirst,
    /// `numkeys` at this index of the arguments after the name, then that many keys.
    Counted(usize),
    /// After the `STREAMS` keyword: the first half of what follows.
    Streams,
}

fn layout(name: &[u8]) -> Layout {
    const NONE: &[&str] = &[
        "ACL",
        "AUTH",
        "BGREWRITEAOF",
        "BGSAVE",
        "CLIENT",
        "CLUSTER",
        "COMMAND",
        "CONFIG",
        "DBSIZE",
        "DEBUG",
        "DISCARD",
        "ECHO",
        "EXEC",
        "FLUSHALL",
        "FLUSHDB",
        "FUNCTION",
        "HELLO",
        "INFO",
        "KEYS",
        "LASTSAVE",
        "LATENCY",
        "MEMORY",
        "MODULE",
        "MONITOR",
        "MULTI",
        "PING",
        "PSUBSCRIBE",
        "PUBLISH",
        "PUBSUB",
        "PUNSUBSCRIBE",
        "QUIT",
        "RANDOMKEY",
        "READONLY",
        "READWRITE",
        "REPLICAOF",
        "ROLE",
        "SAVE",
        "SCAN",
        "SCRIPT",
        "SELECT",
        "SHUTDOWN",
        "SLAVEOF",
        "SLOWLOG",
        "SUBSCRIBE",
        "SWAPDB",
        "TIME",
        "UNSUBSCRIBE",
        "UNWATCH",
        "WAIT",
    ];
    const ALL: &[&str] = &[
        "DEL",
        "EXISTS",
        "MGET",
        "PFCOUNT",
        "PFMERGE",
        "SDIFF",
        "SDIFFSTORE",
        "SINTER",
        "SINTERSTORE",
        "SUNION",
        "SUNIONSTORE",
        "TOUCH",
        "UNLINK",
        "WATCH",
    ];
    // `ZUNION numkeys k...`
    const COUNT_FIRST: &[&str] = &[
        "LMPOP",
        "SINTERCARD",
        "ZDIFF",
        "ZINTER",
        "ZINTERCARD",
        "ZMPOP",
        "ZUNION",
    ];
    // `EVAL script numkeys k...`, `BLMPOP timeout numkeys k...`
    const COUNT_SECOND: &[&str] = &[
        "BLMPOP",
        "BZMPOP",
        "EVAL",
        "EVALSHA",
        "EVALSHA_RO",
        "EVAL_RO",
        "FCALL",
        "FCALL_RO",
    ];
    let is = |list: &[&str]| list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
    if is(NONE) {
        Layout::None
    } else if is(ALL) {
        Layout::All
    } else if is(&["MSET", "MSETNX"]) {
        Layout::EveryOther
    } else if is(COUNT_FIRST) {
        Layout::Counted(0)
    } else if is(COUNT_SECOND) {
        Layout::Counted(1)
    } else if is(&["BITOP"]) {
        Layout::AfterFirst
    } else if is(&["OBJECT", "XINFO"]) {
        Layout::Second
    } else if is(&["XREAD", "XREADGROUP"]) {
        Layout::Streams
    } else {
        Layout::First
    }
}

/// The keys `cmd` names; empty for a command about the server.
///
/// ```
/// let eval = redis::cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b").arg("x").clone();
/// assert_eq!(steadfast::cluster::command_keys(&eval), [&b"a"[..], &b"b"[..]]);
/// ```
pub fn command_keys(cmd: &Cmd) -> Vec<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|arg| match arg {
            Arg::Simple(bytes) => bytes,
            _ => &b""[..],
        })
        .collect();
    let Some((name, rest)) = args.split_first() else {
        return Vec::new();
    };
    if name.eq_ignore_ascii_case(b"MEMORY")
        && rest
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case(b"USAGE"))
    {
        return rest.get(1).copied().into_iter().collect();
    }
    match layout(name) {
        Layout::None => Vec::new(),
        Layout::First => rest.first().copied().into_iter().collect(),
        Layout::All => rest.to_vec(),
        Layout::EveryOther => rest.iter().step_by(2).copied().collect(),
        Layout::Second => rest.get(1).copied().into_iter().collect(),
        Layout::AfterFirst => rest.iter().skip(1).copied().collect(),
        Layout::Counted(at) => {
            let count = rest
                .get(at)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            rest.iter().skip(at + 1).take(count).copied().collect()
        }
        Layout::Streams => {
            let Some(at) = rest.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return Vec::new();
            };
            let after = &rest[at + 1..];
            after[..after.len() / 2].to_vec()
        }
    }
}

/// The slot `cmd` goes to.
///
/// ```
/// use steadfast::cluster::{Slot, command_slot};
/// assert_eq!(command_slot(redis::cmd("GET").arg("foo")), Slot::One(12182));
/// assert_eq!(command_slot(&redis::cmd("PING")), Slot::Any);
/// ```
pub fn command_slot(cmd: &Cmd) -> Slot {
    let mut slots = command_keys(cmd).into_iter().map(key_slot);
    let Some(first) = slots.next() else {
        return Slot::Any;
    };
    match slots.find(|&s| s != first) {
        Some(other) => Slot::Cross(first, other),
        None => Slot::One(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(cmd: &Cmd) -> Vec<String> {
        command_keys(cmd)
            .into_iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn most_commands_name_the_argument_after_their_name() {
        assert_eq!(keys_of(redis::cmd("GET").arg("k")), ["k"]);
        assert_eq!(
            keys_of(redis::cmd("hset").arg("h").arg("f").arg("v")),
            ["h"]
        );
        assert_eq!(command_slot(redis::cmd("GET").arg("foo")), Slot::One(12182));
    }

    #[test]
    fn server_commands_name_no_key() {
        assert_eq!(command_slot(&redis::cmd("PING")), Slot::Any);
        assert_eq!(command_slot(redis::cmd("CLUSTER").arg("NODES")), Slot::Any);
        assert_eq!(
            command_slot(redis::cmd("INFO").arg("replication")),
            Slot::Any
        );
        assert_eq!(
            command_slot(redis::cmd("EVAL").arg("return 1").arg(0)),
            Slot::Any
        );
    }

    #[test]
    fn multi_key_commands_use_every_key_and_refuse_cross_slot() {
        let same = redis::cmd("MGET").arg("{u}.a").arg("{u}.b").clone();
        assert_eq!(command_slot(&same), Slot::One(key_slot(b"u")));
        let cross = redis::cmd("DEL").arg("foo").arg("bar").clone();
        assert_eq!(command_slot(&cross), Slot::Cross(12182, 5061));
        let mset = redis::cmd("MSET")
            .arg("{u}.a")
            .arg("1")
            .arg("{u}.b")
            .arg("2")
            .clone();
        assert_eq!(keys_of(&mset), ["{u}.a", "{u}.b"]);
    }

    #[test]
    fn counted_keyword_and_second_place_keys_are_found() {
        let eval = redis::cmd("EVALSHA")
            .arg("sha")
            .arg(2)
            .arg("a")
            .arg("b")
            .arg("argv")
            .clone();
        assert_eq!(keys_of(&eval), ["a", "b"]);
        let blmpop = redis::cmd("BLMPOP")
            .arg(0)
            .arg(1)
            .arg("l")
            .arg("LEFT")
            .clone();
        assert_eq!(keys_of(&blmpop), ["l"]);
        let zunion = redis::cmd("ZUNION")
            .arg(2)
            .arg("z1")
            .arg("z2")
            .arg("WITHSCORES")
            .clone();
        assert_eq!(keys_of(&zunion), ["z1", "z2"]);
        let xread = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg("s1")
            .arg("s2")
            .arg("0")
            .arg("0")
            .clone();
        assert_eq!(keys_of(&xread), ["s1", "s2"]);
        let bitop = redis::cmd("BITOP").arg("AND").arg("dest").arg("a").clone();
        assert_eq!(keys_of(&bitop), ["dest", "a"]);
        let usage = redis::cmd("MEMORY").arg("USAGE").arg("k").clone();
        assert_eq!(keys_of(&usage), ["k"]);
        assert!(keys_of(redis::cmd("MEMORY").arg("STATS")).is_empty());
    }

    #[test]
    fn a_bad_count_names_no_key_instead_of_panicking() {
        assert!(keys_of(redis::cmd("EVAL").arg("s").arg("x")).is_empty());
        assert_eq!(keys_of(redis::cmd("EVAL").arg("s").arg(5).arg("a")), ["a"]);
        assert!(keys_of(&redis::cmd("XREAD")).is_empty());
        assert!(keys_of(&redis::cmd("EVAL")).is_empty());
    }
}
