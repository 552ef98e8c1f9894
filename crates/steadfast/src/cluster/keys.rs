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
use crate::policy::name::{Name, Table};

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
#[derive(Clone, Copy)]
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
    /// `MEMORY USAGE k`; other `MEMORY` subcommands name no key.
    Memory,
}

// Each table upper-case and sorted, to stay reviewable (a test checks both).
const NONE: &[&[u8]] = &[
    b"ACL",
    b"AUTH",
    b"BGREWRITEAOF",
    b"BGSAVE",
    b"CLIENT",
    b"CLUSTER",
    b"COMMAND",
    b"CONFIG",
    b"DBSIZE",
    b"DEBUG",
    b"DISCARD",
    b"ECHO",
    b"EXEC",
    b"FLUSHALL",
    b"FLUSHDB",
    b"FUNCTION",
    b"HELLO",
    b"INFO",
    b"KEYS",
    b"LASTSAVE",
    b"LATENCY",
    b"MODULE",
    b"MONITOR",
    b"MULTI",
    b"PING",
    b"PSUBSCRIBE",
    b"PUBLISH",
    b"PUBSUB",
    b"PUNSUBSCRIBE",
    b"QUIT",
    b"RANDOMKEY",
    b"READONLY",
    b"READWRITE",
    b"REPLICAOF",
    b"ROLE",
    b"SAVE",
    b"SCAN",
    b"SCRIPT",
    b"SELECT",
    b"SHUTDOWN",
    b"SLAVEOF",
    b"SLOWLOG",
    b"SUBSCRIBE",
    b"SWAPDB",
    b"TIME",
    b"UNSUBSCRIBE",
    b"UNWATCH",
    b"WAIT",
];
const ALL: &[&[u8]] = &[
    b"DEL",
    b"EXISTS",
    b"MGET",
    b"PFCOUNT",
    b"PFMERGE",
    b"SDIFF",
    b"SDIFFSTORE",
    b"SINTER",
    b"SINTERSTORE",
    b"SUNION",
    b"SUNIONSTORE",
    b"TOUCH",
    b"UNLINK",
    b"WATCH",
];
/// `ZUNION numkeys k...`
const COUNT_FIRST: &[&[u8]] = &[
    b"LMPOP",
    b"SINTERCARD",
    b"ZDIFF",
    b"ZINTER",
    b"ZINTERCARD",
    b"ZMPOP",
    b"ZUNION",
];
/// `EVAL script numkeys k...`, `BLMPOP timeout numkeys k...`
const COUNT_SECOND: &[&[u8]] = &[
    b"BLMPOP",
    b"BZMPOP",
    b"EVAL",
    b"EVALSHA",
    b"EVALSHA_RO",
    b"EVAL_RO",
    b"FCALL",
    b"FCALL_RO",
];

fn layout(name: &Name) -> Layout {
    static TABLE: Table<Layout> = Table::new(|| {
        let mut table: Vec<(&'static [u8], Layout)> = vec![
            (b"MSET", Layout::EveryOther),
            (b"MSETNX", Layout::EveryOther),
            (b"BITOP", Layout::AfterFirst),
            (b"OBJECT", Layout::Second),
            (b"XINFO", Layout::Second),
            (b"XREAD", Layout::Streams),
            (b"XREADGROUP", Layout::Streams),
            (b"MEMORY", Layout::Memory),
        ];
        for (names, layout) in [
            (NONE, Layout::None),
            (ALL, Layout::All),
            (COUNT_FIRST, Layout::Counted(0)),
            (COUNT_SECOND, Layout::Counted(1)),
        ] {
            table.extend(names.iter().map(|&name| (name, layout)));
        }
        table
    });
    TABLE.get(name).unwrap_or(Layout::First)
}

/// Calls `visit` with each key `cmd` names, in order, until it returns `false`. Allocates
/// nothing except for `XREAD`'s streams.
fn visit_keys<'a>(cmd: &'a Cmd, mut visit: impl FnMut(&'a [u8]) -> bool) {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let Some(name) = args.next() else {
        return;
    };
    // A name longer than any command's is not one we know: its first argument, as most.
    let layout = Name::new(name).map_or(Layout::First, |name| layout(&name));
    let mut each = |keys: &mut dyn Iterator<Item = &'a [u8]>| {
        for key in keys {
            if !visit(key) {
                break;
            }
        }
    };
    match layout {
        Layout::None => {}
        Layout::First => each(&mut args.take(1)),
        Layout::All => each(&mut args),
        Layout::EveryOther => each(&mut args.step_by(2)),
        Layout::Second => each(&mut args.skip(1).take(1)),
        Layout::AfterFirst => each(&mut args.skip(1)),
        Layout::Memory => {
            if args
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case(b"USAGE"))
            {
                each(&mut args.take(1));
            }
        }
        Layout::Counted(at) => {
            let count = args
                .nth(at)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            each(&mut args.take(count));
        }
        Layout::Streams => {
            let mut after = args.skip_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"));
            if after.next().is_none() {
                return;
            }
            let rest: Vec<&[u8]> = after.collect();
            each(&mut rest[..rest.len() / 2].iter().copied());
        }
    }
}

/// The keys `cmd` names; empty for a command about the server.
///
/// ```
/// let eval = redis::cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b").arg("x").clone();
/// assert_eq!(steadfast::cluster::command_keys(&eval), [&b"a"[..], &b"b"[..]]);
/// ```
pub fn command_keys(cmd: &Cmd) -> Vec<&[u8]> {
    let mut keys = Vec::new();
    visit_keys(cmd, |key| {
        keys.push(key);
        true
    });
    keys
}

/// The slot `cmd` goes to.
///
/// ```
/// use steadfast::cluster::{Slot, command_slot};
/// assert_eq!(command_slot(redis::cmd("GET").arg("foo")), Slot::One(12182));
/// assert_eq!(command_slot(&redis::cmd("PING")), Slot::Any);
/// ```
pub fn command_slot(cmd: &Cmd) -> Slot {
    let mut slot = Slot::Any;
    visit_keys(cmd, |key| {
        let this = key_slot(key);
        slot = match slot {
            Slot::Any => Slot::One(this),
            Slot::One(first) if first != this => Slot::Cross(first, this),
            other => other,
        };
        !matches!(slot, Slot::Cross(..))
    });
    slot
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
    fn the_tables_are_upper_case_and_sorted_so_they_stay_reviewable() {
        for table in [NONE, ALL, COUNT_FIRST, COUNT_SECOND] {
            assert!(table.windows(2).all(|w| w[0] < w[1]));
            assert!(table.iter().all(|n| !n.iter().any(u8::is_ascii_lowercase)));
        }
    }

    #[test]
    fn a_bad_count_names_no_key_instead_of_panicking() {
        assert!(keys_of(redis::cmd("EVAL").arg("s").arg("x")).is_empty());
        assert_eq!(keys_of(redis::cmd("EVAL").arg("s").arg(5).arg("a")), ["a"]);
        assert!(keys_of(&redis::cmd("XREAD")).is_empty());
        assert!(keys_of(&redis::cmd("EVAL")).is_empty());
    }
}
