//! What a command does to the link it runs on, beyond its reply.
//!
//! # Behaviour
//! - Most commands leave the link as it was ([`Effect::None`]): one table lookup finds that.
//! - *State commands* change what the server keeps per connection, and the shared link serves
//!   every clone of the client: `SELECT`, `CLIENT SETNAME`, `CLIENT SETINFO`,
//!   `CLIENT NO-EVICT`, `CLIENT NO-TOUCH`, `CLIENT TRACKING`. After one succeeds it is
//!   recorded in the link journal ([`crate::connect::Journal`]) and replayed on every new
//!   link, so a reconnect never puts later commands in another database. The latest of each
//!   kind wins. Tracking (client-side caching, RESP3: invalidations arrive on the link itself)
//!   also has every new link announce a flush of the whole cache (the invalidations the old
//!   link would have carried are lost): see [`crate::Client::pushes`].
//! - *Mode commands* would take the shared link over, or change it in a way no reconnect can
//!   keep: the `SUBSCRIBE` family, `MONITOR`, `WATCH` / `MULTI` / `EXEC` / `DISCARD` /
//!   `UNWATCH` sent one by one, `AUTH`, `HELLO`, `RESET`, `READONLY` / `READWRITE`,
//!   `CLIENT REPLY`, `CLIENT TRACKING` with `REDIRECT` (a connection ID no new link keeps)
//!   or `OPTIN` / `OPTOUT`, and `CLIENT CACHING` (each needs `CLIENT CACHING` right before the
//!   command it applies to, on the same link, which a shared link cannot promise). They are
//!   refused before anything is sent, with an
//!   error that says what to use instead ([`Effect::Refused`]). The transaction commands
//!   ([`Effect::Transaction`]) are fine on a [`Session`](crate::Session)'s link, where state
//!   commands are refused instead (they belong to the client, replayed on every link).
//! - *Blocking commands* (`BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`, `BZPOPMIN`,
//!   `BZPOPMAX`, `BZMPOP`, `XREAD`/`XREADGROUP` with `BLOCK`, `WAIT`, `WAITAOF`) get their
//!   own block timeout on top of the command deadline ([`Effect::Blocking`]); a timeout of 0
//!   (block forever) gets no deadline of ours. They run on dedicated links
//!   (`command::blocking`).
//!
//! # Why refuse instead of emulate
//! A subscriber or a `WATCH` on the shared link is state that every other clone's commands
//! would break (RESP2 allows nothing but (P|S)SUBSCRIBE and PING in subscriber mode) and that
//! a reconnect would drop without a word. A `WATCH` has a link of its own in a session; for
//! the rest, an error up front is the only honest answer.

use std::time::Duration;

use redis::{Arg, Cmd};

use super::name::{Name, Table};

/// What a command does to its link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Effect {
    /// Nothing beyond its reply.
    None,
    /// Changes per-connection state: record it once it succeeded, replay it on new links.
    Journal,
    /// Must not be sent on the shared link; the text says what to use instead.
    Refused(&'static str),
    /// `WATCH`, `MULTI`, `EXEC` ... sent one by one: per-connection state that only a
    /// [`Session`](crate::Session) keeps; refused elsewhere with the text.
    Transaction(&'static str),
    /// Blocks on the server for up to this long (`None`: forever).
    Blocking(Option<Duration>),
}

/// Where a blocking command's timeout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    /// The last argument, in seconds (`BLPOP k1 k2 5`).
    LastSeconds,
    /// The first argument after the name, in seconds (`BLMPOP 5 2 k1 k2 LEFT`).
    FirstSeconds,
    /// After the `BLOCK` option, in milliseconds (`XREAD BLOCK 500 STREAMS s 0`).
    BlockOption,
    /// The argument at this index (the name is 0), in milliseconds (`WAIT 1 100`).
    AtMillis(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    Journal,
    Refused(&'static str),
    Transaction(&'static str),
    Blocking(Timeout),
    /// `CLIENT`: depends on the subcommand.
    Client,
}

const SUBSCRIBER: &str = "puts the link in subscriber mode, which the client's shared link \
    cannot be (every clone's commands go over it) and a reconnect would end without a word; \
    use Client::subscriber, whose subscriptions are made again on every new link and whose \
    stream tells where messages may be missing";
const TRANSACTION: &str = "sent on its own it would hold per-connection state on a link \
    that every clone of the client shares and a reconnect would drop; send \
    MULTI ... EXEC as one atomic pipeline (redis::pipe().atomic()), which steadfast sends \
    whole and never splits, or use a session (Client::session; ClusterClient::session on a \
    cluster), whose link is yours";
const WATCH: &str = "a WATCH guards a transaction on one connection, and the shared link \
    serves every clone and may be replaced; use a session (Client::session; \
    ClusterClient::session on a cluster), which tells when its guard was lost, or a script (EVAL / FCALL) for check-and-set";
const CREDENTIALS: &str = "credentials belong in the config (endpoint.username / password, or \
    a credentials provider), so that every new link authenticates; sent as a command they \
    would be lost on the next reconnect";
const PROTOCOL: &str = "the protocol and the handshake belong in the config \
    (endpoint.protocol, endpoint.client_name), so that every new link is set up the same way";
const RESET: &str = "it would silently undo the link's database, name and credentials for \
    every clone; change the config instead";
const REPLICA_MODE: &str = "replica reads are a setting (cluster.read_from on a cluster \
    client), kept on every node's link; sent as a command the mode would be lost on the next \
    reconnect";
const MONITOR: &str = "it turns the link into a stream of every command the server runs; \
    use a redis-rs connection of its own, or `steadfast watch`";
const CLIENT_REPLY: &str = "without replies the shared link cannot pair answers with \
    commands; use a redis-rs connection of its own";
const TRACKING_REDIRECT: &str = "REDIRECT names another connection's ID, which no new link \
    keeps; use tracking on a RESP3 client (invalidations arrive in Client::pushes)";
const TRACKING_OPT: &str = "OPTIN / OPTOUT tracking needs CLIENT CACHING right before the \
    command it applies to, on the same link, which a shared link cannot promise; use default \
    or BCAST tracking";

static CLASSES: Table<Class> = Table::new(|| {
    vec![
        (b"SELECT", Class::Journal),
        (b"CLIENT", Class::Client),
        (b"SUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"PSUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"SSUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"UNSUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"PUNSUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"SUNSUBSCRIBE", Class::Refused(SUBSCRIBER)),
        (b"MONITOR", Class::Refused(MONITOR)),
        (b"MULTI", Class::Transaction(TRANSACTION)),
        (b"EXEC", Class::Transaction(TRANSACTION)),
        (b"DISCARD", Class::Transaction(TRANSACTION)),
        (b"WATCH", Class::Transaction(WATCH)),
        (b"UNWATCH", Class::Transaction(WATCH)),
        (b"AUTH", Class::Refused(CREDENTIALS)),
        (b"HELLO", Class::Refused(PROTOCOL)),
        (b"RESET", Class::Refused(RESET)),
        (b"READONLY", Class::Refused(REPLICA_MODE)),
        (b"READWRITE", Class::Refused(REPLICA_MODE)),
        (b"BLPOP", Class::Blocking(Timeout::LastSeconds)),
        (b"BRPOP", Class::Blocking(Timeout::LastSeconds)),
        (b"BLMOVE", Class::Blocking(Timeout::LastSeconds)),
        (b"BRPOPLPUSH", Class::Blocking(Timeout::LastSeconds)),
        (b"BZPOPMIN", Class::Blocking(Timeout::LastSeconds)),
        (b"BZPOPMAX", Class::Blocking(Timeout::LastSeconds)),
        (b"BLMPOP", Class::Blocking(Timeout::FirstSeconds)),
        (b"BZMPOP", Class::Blocking(Timeout::FirstSeconds)),
        (b"XREAD", Class::Blocking(Timeout::BlockOption)),
        (b"XREADGROUP", Class::Blocking(Timeout::BlockOption)),
        (b"WAIT", Class::Blocking(Timeout::AtMillis(2))),
        (b"WAITAOF", Class::Blocking(Timeout::AtMillis(3))),
    ]
});

/// What a whole request does to its link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// It holds state commands to record once it succeeded.
    pub(crate) is_journalled: bool,
    /// It holds blocking commands: how long they may block in all (`Some(None)`: forever).
    pub(crate) block: Option<Option<Duration>>,
}

const JOURNAL_IN_TRANSACTION: &str = "inside a transaction its effect cannot be told from the \
    reply; send it on its own, before the transaction";
const JOURNAL_ON_SESSION: &str = "a session's link replays the client's state on every \
    reconnect; send it on the client (or set it in the config) so that every link gets it";
const JOURNAL_ON_CLUSTER: &str = "a cluster client keeps a link per node; set the name in the \
    config (endpoint.client_name) so that every node's link gets it (a cluster has only \
    database 0)";

/// How the commands of a request are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Command,
    Pipeline,
    /// `MULTI` ... `EXEC` (an atomic pipeline).
    Transaction,
}

/// Where they are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A client's shared link.
    SharedLink,
    /// A cluster's nodes (a link per node).
    Cluster,
    /// A [`Session`](crate::Session)'s own link: transactions one command at a time are
    /// fine; state commands are not (they belong to the client, replayed on every link).
    Session,
}

/// The plan for `commands` (one, or a pipeline's), or why they must not be sent.
pub(crate) fn plan<'a>(
    commands: impl Iterator<Item = &'a Cmd>,
    shape: Shape,
    destination: Destination,
) -> Result<Plan, crate::Error> {
    let is_transaction = shape == Shape::Transaction;
    let is_cluster_node = destination == Destination::Cluster;
    let is_session = destination == Destination::Session;
    let mut plan = Plan::default();
    for (index, cmd) in commands.enumerate() {
        let refusal = match effect(cmd) {
            Effect::None => continue,
            Effect::Refused(why) => why,
            Effect::Transaction(_) if is_session => continue,
            Effect::Transaction(why) => why,
            Effect::Journal if is_cluster_node => JOURNAL_ON_CLUSTER,
            Effect::Journal if is_session => JOURNAL_ON_SESSION,
            Effect::Journal if is_transaction => JOURNAL_IN_TRANSACTION,
            Effect::Journal => {
                plan.is_journalled = true;
                continue;
            }
            Effect::Blocking(block) => {
                plan.block = Some(match (plan.block, block) {
                    (None, block) => block,
                    (Some(Some(sum)), Some(more)) => Some(sum + more),
                    (Some(_), _) => None,
                });
                continue;
            }
        };
        let name = Name::of(cmd).map_or_else(
            || "the command".to_owned(),
            |n| String::from_utf8_lossy(n.as_bytes()).into_owned(),
        );
        let place = if shape != Shape::Command {
            format!(" (command {} of the pipeline)", index + 1)
        } else {
            String::new()
        };
        return Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("{name}{place} was not sent: {refusal}"),
        ));
    }
    Ok(plan)
}

/// What `cmd` does to the link it is sent on.
pub(crate) fn effect(cmd: &Cmd) -> Effect {
    let Some(class) = CLASSES.of(cmd) else {
        return Effect::None;
    };
    match class {
        Class::Journal => Effect::Journal,
        Class::Refused(why) => Effect::Refused(why),
        Class::Transaction(why) => Effect::Transaction(why),
        Class::Blocking(timeout) => blocking(cmd, timeout),
        Class::Client => client(cmd),
    }
}

/// The journal key of a state command: the latest command with the same key wins
/// (`SELECT`, `CLIENT SETNAME`, `CLIENT SETINFO LIB-NAME` ...).
pub(crate) fn journal_key(cmd: &Cmd) -> String {
    let words: Vec<String> = cmd
        .args_iter()
        .take(3)
        .filter_map(|arg| match arg {
            Arg::Simple(word) => Some(String::from_utf8_lossy(word).to_ascii_uppercase()),
            _ => None,
        })
        .collect();
    match words.as_slice() {
        [client, sub, what, ..] if client == "CLIENT" && sub == "SETINFO" => {
            format!("CLIENT SETINFO {what}")
        }
        [client, sub, ..] if client == "CLIENT" => format!("CLIENT {sub}"),
        [name, ..] => name.clone(),
        [] => String::new(),
    }
}

fn client(cmd: &Cmd) -> Effect {
    let Some(Arg::Simple(sub)) = cmd.args_iter().nth(1) else {
        return Effect::None;
    };
    let sub = Name::new(sub);
    match sub.as_ref().map(Name::as_bytes) {
        Some(b"SETNAME" | b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH") => Effect::Journal,
        Some(b"REPLY") => Effect::Refused(CLIENT_REPLY),
        Some(b"TRACKING") => tracking(cmd),
        Some(b"CACHING") => Effect::Refused(TRACKING_OPT),
        _ => Effect::None,
    }
}

/// `CLIENT TRACKING ON|OFF [options]`: kept in the journal, but for the options a new link
/// cannot keep.
fn tracking(cmd: &Cmd) -> Effect {
    for arg in cmd.args_iter().skip(3) {
        let Arg::Simple(option) = arg else { continue };
        if option.eq_ignore_ascii_case(b"REDIRECT") {
            return Effect::Refused(TRACKING_REDIRECT);
        }
        if option.eq_ignore_ascii_case(b"OPTIN") || option.eq_ignore_ascii_case(b"OPTOUT") {
            return Effect::Refused(TRACKING_OPT);
        }
    }
    Effect::Journal
}

fn blocking(cmd: &Cmd, timeout: Timeout) -> Effect {
    let Some(found) = find_timeout(cmd, timeout) else {
        return Effect::None;
    };
    if found.seconds == 0.0 {
        return Effect::Blocking(None);
    }
    Effect::Blocking(Some(Duration::from_secs_f64(found.seconds.min(1e9))))
}

/// Where a blocking command's timeout argument is, and what it says.
struct FoundTimeout {
    /// The argument's index (the name is 0).
    index: usize,
    seconds: f64,
    is_millis: bool,
}

fn find_timeout(cmd: &Cmd, timeout: Timeout) -> Option<FoundTimeout> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let (index, is_millis) = match timeout {
        Timeout::LastSeconds => (args.len().checked_sub(1)?, false),
        Timeout::FirstSeconds => (1, false),
        Timeout::AtMillis(index) => (index, true),
        Timeout::BlockOption => {
            let at = args
                .iter()
                .position(|arg| arg.eq_ignore_ascii_case(b"BLOCK"))?;
            (at + 1, true)
        }
    };
    let seconds = std::str::from_utf8(args.get(index)?)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| if is_millis { n / 1000.0 } else { n })
        .filter(|n| n.is_finite() && *n >= 0.0)?;
    Some(FoundTimeout {
        index,
        seconds,
        is_millis,
    })
}

/// `cmd`, a blocking command with a timeout, rewritten to block for `remaining` at most: what
/// is left of the caller's wait when a refused attempt is sent again. At least 1 ms, since 0
/// would block forever. `None` when `cmd` has no timeout to rewrite or blocks forever.
pub(crate) fn with_remaining_block(cmd: &Cmd, remaining: Duration) -> Option<Cmd> {
    let name = Name::of(cmd)?;
    let Class::Blocking(timeout) = CLASSES.get(&name)? else {
        return None;
    };
    let found = find_timeout(cmd, timeout).filter(|found| found.seconds > 0.0)?;
    let millis = remaining.as_millis().max(1);
    let text = if found.is_millis {
        millis.to_string()
    } else {
        format!("{}.{:03}", millis / 1000, millis % 1000)
    };
    let mut rewritten = Cmd::new();
    for (index, arg) in cmd.args_iter().enumerate() {
        match arg {
            _ if index == found.index => rewritten.arg(text.as_str()),
            Arg::Simple(bytes) => rewritten.arg(bytes),
            // Blocking commands have no cursor, nor any other kind of argument.
            _ => return None,
        };
    }
    Some(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &[&str]) -> Effect {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        effect(&cmd)
    }

    #[test]
    fn ordinary_commands_have_no_effect_on_the_link() {
        for args in [
            &["GET", "k"][..],
            &["SET", "k", "v"],
            &["CLIENT", "ID"],
            &["XREAD", "STREAMS", "s", "0"],
        ] {
            assert_eq!(of(args), Effect::None, "{args:?}");
        }
    }

    #[test]
    fn state_commands_are_journalled_in_any_case() {
        for args in [
            &["select", "5"][..],
            &["CLIENT", "setname", "worker"],
            &["client", "SETINFO", "lib-name", "app"],
            &["CLIENT", "NO-EVICT", "on"],
            &["CLIENT", "TRACKING", "ON"],
            &[
                "client", "tracking", "on", "bcast", "prefix", "user:", "noloop",
            ],
            &["CLIENT", "TRACKING", "OFF"],
        ] {
            assert_eq!(of(args), Effect::Journal, "{args:?}");
        }
    }

    #[test]
    fn mode_commands_are_refused_with_advice() {
        for args in [
            &["SUBSCRIBE", "news"][..],
            &["psubscribe", "n*"],
            &["MONITOR"],
            &["AUTH", "pw"],
            &["HELLO", "2"],
            &["RESET"],
            &["READONLY"],
            &["CLIENT", "REPLY", "OFF"],
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "7"],
            &["client", "tracking", "on", "optin"],
            &["CLIENT", "TRACKING", "ON", "BCAST", "OPTOUT"],
            &["CLIENT", "CACHING", "yes"],
        ] {
            assert!(
                matches!(of(args), Effect::Refused(why) if !why.is_empty()),
                "{args:?}"
            );
        }
    }

    #[test]
    fn transaction_commands_are_refused_on_the_shared_link_and_sent_in_a_session() {
        for args in [
            &["MULTI"][..],
            &["WATCH", "k"],
            &["exec"],
            &["DISCARD"],
            &["UNWATCH"],
        ] {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            assert!(matches!(effect(&cmd), Effect::Transaction(why) if why.contains("session")));
            let shape = Shape::Command;
            let once = || std::iter::once(&cmd);
            assert!(
                plan(once(), shape, Destination::SharedLink).is_err(),
                "{args:?}"
            );
            assert!(
                plan(once(), shape, Destination::Session).is_ok(),
                "{args:?}"
            );
        }
        let select = redis::cmd("SELECT").arg(2).to_owned();
        let refused = plan(
            std::iter::once(&select),
            Shape::Command,
            Destination::Session,
        );
        assert!(refused.is_err_and(|e| e.to_string().contains("send it on the client")));
    }

    #[test]
    fn blocking_commands_carry_their_timeout_in_its_unit() {
        let secs = |s: f64| Effect::Blocking(Some(Duration::from_secs_f64(s)));
        assert_eq!(of(&["BLPOP", "a", "b", "2.5"]), secs(2.5));
        assert_eq!(of(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "3"]), secs(3.0));
        assert_eq!(of(&["BLMPOP", "4", "1", "a", "LEFT"]), secs(4.0));
        assert_eq!(
            of(&["XREAD", "COUNT", "1", "block", "1500", "STREAMS", "s", "$"]),
            secs(1.5)
        );
        assert_eq!(of(&["WAIT", "1", "250"]), secs(0.25));
        assert_eq!(of(&["WAITAOF", "1", "0", "100"]), secs(0.1));
        assert_eq!(of(&["BLPOP", "a", "0"]), Effect::Blocking(None));
        assert_eq!(of(&["BLPOP", "a", "soon"]), Effect::None);
    }

    #[test]
    fn journal_keys_name_what_the_command_sets() {
        let key = |args: &[&str]| {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            journal_key(&cmd)
        };
        assert_eq!(key(&["select", "5"]), "SELECT");
        assert_eq!(key(&["client", "setname", "w"]), "CLIENT SETNAME");
        assert_eq!(
            key(&["CLIENT", "SETINFO", "lib-ver", "1"]),
            "CLIENT SETINFO LIB-VER"
        );
        assert_eq!(key(&["CLIENT", "NO-EVICT", "on"]), "CLIENT NO-EVICT");
    }

    #[test]
    fn a_blocking_command_sent_again_blocks_only_for_what_is_left_of_its_wait() {
        let rewrite = |args: &[&str], left: Duration| {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            with_remaining_block(&cmd, left).map(|c| c.get_packed_command())
        };
        let packed = |args: &[&str]| {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            Some(cmd.get_packed_command())
        };
        let left = Duration::from_millis(2_345);
        assert_eq!(
            rewrite(&["BLPOP", "a", "b", "10"], left),
            packed(&["BLPOP", "a", "b", "2.345"])
        );
        assert_eq!(
            rewrite(&["BLMPOP", "10", "1", "a", "LEFT"], left),
            packed(&["BLMPOP", "2.345", "1", "a", "LEFT"])
        );
        assert_eq!(
            rewrite(
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "BLOCK",
                    "9000",
                    "STREAMS",
                    "s",
                    ">"
                ],
                left
            ),
            packed(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "2345",
                "STREAMS",
                "s",
                ">"
            ])
        );
        assert_eq!(
            rewrite(&["WAIT", "1", "5000"], Duration::ZERO),
            packed(&["WAIT", "1", "1"]),
            "a wait that ran out becomes the shortest, never 0 (forever)"
        );
        assert_eq!(
            rewrite(&["BLPOP", "a", "0"], left),
            None,
            "forever stays forever"
        );
        assert_eq!(rewrite(&["GET", "a"], left), None);
        assert_eq!(rewrite(&["XREAD", "STREAMS", "s", "0"], left), None);
    }
}
