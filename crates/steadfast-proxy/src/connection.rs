//! One downstream connection: its requests read in order, each answered in order, its state
//! (protocol, database, name, authentication, transaction) kept here and carried onto every
//! upstream link by the library.
//!
//! # Behaviour
//! - The upstream is a [`steadfast::Client`] of the connection's own, made at its first command
//!   that needs the server, with the connection's protocol, database and name, so every link
//!   the library makes for it (after a restart, a failover, a maintenance move) carries them.
//!   A later `SELECT` or `CLIENT SETNAME` goes through the client, which replays it on new
//!   links; a `HELLO` that changes the protocol makes the next command use a new client.
//! - Answered here, as the server would: `HELLO`, `AUTH` (the proxy's own password, never the
//!   upstream's), `CLIENT ID` (stable for the connection, whatever links come and go),
//!   `CLIENT GETNAME` / `SETINFO` / `INFO`, `READONLY` / `READWRITE`, `QUIT`, `RESET`.
//! - `WATCH` / `MULTI` ... `EXEC`: on a session of the connection's client (a link of its own
//!   while the transaction lasts). If that link was replaced under the `WATCH`, the
//!   transaction goes on as the server's would after a watched key changed: `MULTI` `+OK`,
//!   commands `+QUEUED` (never sent), `EXEC` the null reply, the "aborted" every client's
//!   retry loop already handles.
//! - Error replies the proxy writes itself carry their own codes (the README lists them):
//!   `UNKNOWNOUTCOME` (written, and the link died before its reply: it may have been
//!   applied; never sent again unless idempotent), `UNAVAILABLE` (not sent: no server within
//!   the command deadline; safe to retry), `WATCHLOST`, `CROSSSLOT`; the server's own errors
//!   pass through as they are.
//! - Commands are answered in order; replies of commands that arrived together are written
//!   together.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::Value;
use steadfast::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pubsub::{Change, Subscriptions};
use crate::resp::{self, Protocol, Read};
use crate::server::Shared;

/// The most commands of one read sent upstream as one pipeline.
const MAX_BATCH: usize = 1024;

/// Commands the proxy answers or steers itself; every other command goes to the server as
/// it is.
const LOCAL: &[&str] = &[
    "HELLO",
    "AUTH",
    "QUIT",
    "RESET",
    "READONLY",
    "READWRITE",
    "CLIENT",
    "SELECT",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SYNC",
    "PSYNC",
    "WATCH",
    "MULTI",
    "EXEC",
    "DISCARD",
    "UNWATCH",
];

/// What to do after a command.
#[derive(PartialEq, Eq)]
enum Then {
    Go,
    Close,
}

struct Connection<'a> {
    shared: &'a Shared,
    id: u64,
    peer: String,
    protocol: Protocol,
    database: i64,
    name: Option<String>,
    library: (Option<String>, Option<String>),
    is_authenticated: bool,
    upstream: Option<steadfast::Client>,
    transaction: Option<Transaction>,
    subscriptions: Subscriptions,
}

/// A `WATCH` / `MULTI` under way, on a session of the connection's client.
struct Transaction {
    session: steadfast::Session,
    is_watching: bool,
    is_in_multi: bool,
    /// The session's guard was lost: `EXEC` answers null.
    is_lost: bool,
}

/// Serves `stream` until the client leaves, the proxy closes, or the client breaks the
/// protocol.
pub(crate) async fn serve<S>(mut stream: S, peer: String, shared: &Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection {
        shared,
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        peer,
        protocol: Protocol::Resp2,
        database: shared.config.upstream.endpoint.database,
        name: None,
        library: (None, None),
        is_authenticated: shared.config.password.is_none(),
        upstream: None,
        transaction: None,
        subscriptions: Subscriptions::default(),
    };
    let limits = shared.config.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'serving: loop {
        // Every complete command in the buffer, in order; their replies written together.
        let mut used = 0;
        let mut batch: Vec<Vec<Vec<u8>>> = Vec::new();
        loop {
            match resp::read_command(&buf[used..], &limits) {
                Ok(Read::Command(args, length)) => {
                    used += length;
                    if connection.is_plain(&args) {
                        batch.push(args);
                        if batch.len() >= MAX_BATCH {
                            connection.forward_batch(&mut batch, &mut out).await;
                        }
                        continue;
                    }
                    connection.forward_batch(&mut batch, &mut out).await;
                    let then = connection.handle(&args, &mut out).await;
                    if then == Then::Close || shared.closing.is_cancelled() {
                        let _ = stream.write_all(&out).await;
                        break 'serving;
                    }
                }
                Ok(Read::Skip(length)) => used += length,
                Ok(Read::Incomplete { .. }) => break,
                Err(error) => {
                    connection.forward_batch(&mut batch, &mut out).await;
                    resp::write_error(&mut out, &format!("ERR {error}"));
                    let _ = stream.write_all(&out).await;
                    break 'serving;
                }
            }
        }
        connection.forward_batch(&mut batch, &mut out).await;
        buf.drain(..used);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        let read = tokio::select! {
            read = stream.read(&mut chunk) => read,
            delivery = connection.subscriptions.next() => {
                match delivery {
                    Some(delivery) => {
                        connection.subscriptions.write(&delivery, connection.protocol, &mut out);
                    }
                    None => connection.subscriptions = Subscriptions::default(),
                }
                continue;
            }
            () = shared.closing.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    connection.close().await;
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

fn command_of(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(&text(&args[0]));
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// The reply for an error the library returned; those of the proxy's own codes are counted
/// (`steadfast_proxy_errors_total{code}`) and logged.
fn error_reply(error: &steadfast::Error) -> String {
    let reply = reply_for(error);
    let code = reply.split(' ').next().unwrap_or_default();
    if matches!(
        code,
        "UNKNOWNOUTCOME" | "UNAVAILABLE" | "WATCHLOST" | "CROSSSLOT"
    ) {
        metrics::counter!("steadfast_proxy_errors_total", "code" => code.to_owned()).increment(1);
        tracing::info!(code, error = %error, "error reply");
    }
    reply
}

fn reply_for(error: &steadfast::Error) -> String {
    let kind = error.kind();
    match kind {
        ErrorKind::MayHaveBeenApplied => format!("UNKNOWNOUTCOME {error}"),
        ErrorKind::DeadlineExceeded if error.is_ambiguous() => format!("UNKNOWNOUTCOME {error}"),
        ErrorKind::DeadlineExceeded
        | ErrorKind::Connect
        | ErrorKind::QueueFull
        | ErrorKind::NotAttempted
        | ErrorKind::Shutdown => format!("UNAVAILABLE {error}"),
        ErrorKind::WatchLost => format!("WATCHLOST {error}"),
        ErrorKind::CrossSlot => format!("CROSSSLOT {error}"),
        _ => match error
            .redis_error()
            .and_then(|e| e.code().map(|code| (code, e.detail())))
        {
            // The server's own error, as it sent it.
            Some((code, detail)) => match detail {
                Some(detail) => format!("{code} {detail}"),
                None => code.to_owned(),
            },
            None => format!("ERR {error}"),
        },
    }
}

impl Connection<'_> {
    /// Answers one command into `out`.
    async fn handle(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) -> Then {
        metrics::counter!("steadfast_proxy_commands_total").increment(1);
        let name = upper(&args[0]);
        if !self.is_authenticated && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT" | "RESET") {
            resp::write_error(out, "NOAUTH Authentication required.");
            return Then::Go;
        }
        let is_subscribed = self.protocol == Protocol::Resp2 && self.subscriptions.is_active();
        if is_subscribed && name == "PING" && args.len() <= 2 {
            let said = args.get(1).cloned().unwrap_or_default();
            let pong = Value::Array(vec![
                Value::BulkString(b"pong".to_vec()),
                Value::BulkString(said),
            ]);
            resp::write_value(out, &pong, self.protocol);
            return Then::Go;
        }
        let change = Change::of(&name, args);
        if is_subscribed && change.is_none() && !matches!(name.as_str(), "QUIT" | "RESET") {
            resp::write_error(
                out,
                &format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                    name.to_lowercase()
                ),
            );
            return Then::Go;
        }
        if let Some(change) = change {
            let client = self.upstream();
            if let Err(error) = self
                .subscriptions
                .apply(change, move || client, self.protocol, out)
                .await
            {
                resp::write_error(out, &error_reply(&error));
            }
            return Then::Go;
        }
        match name.as_str() {
            "HELLO" => self.hello(args, out).await,
            "AUTH" => self.auth(args, out),
            "QUIT" => {
                out.extend_from_slice(b"+OK\r\n");
                return Then::Close;
            }
            "RESET" => {
                self.reset().await;
                out.extend_from_slice(b"+RESET\r\n");
            }
            "READONLY" | "READWRITE" => out.extend_from_slice(b"+OK\r\n"),
            "CLIENT" => self.client(args, out).await,
            "SELECT" => self.select(args, out).await,
            "MONITOR" | "SYNC" | "PSYNC" => resp::write_error(
                out,
                &format!("ERR steadfast proxy: {name} is not supported yet"),
            ),
            "WATCH" | "MULTI" | "EXEC" | "DISCARD" | "UNWATCH" => {
                self.transaction_step(&name, args, out).await;
            }
            _ => {
                if self.transaction.is_some() {
                    self.in_transaction(args, out).await;
                } else {
                    self.forward(args, out).await;
                }
            }
        }
        Then::Go
    }

    /// The connection's client, made on first need.
    fn upstream(&mut self) -> Result<steadfast::Client, steadfast::Error> {
        if let Some(client) = &self.upstream {
            return Ok(client.clone());
        }
        let mut config = self.shared.config.upstream.clone();
        config.endpoint.protocol = match self.protocol {
            Protocol::Resp2 => steadfast::Protocol::Resp2,
            Protocol::Resp3 => steadfast::Protocol::Resp3,
        };
        config.endpoint.database = self.database;
        config.endpoint.client_name = self.name.clone();
        let client = steadfast::Client::new(config)?;
        self.upstream = Some(client.clone());
        Ok(client)
    }

    /// Whether `args` goes to the server as it is, with nothing for the proxy to do: such
    /// commands arriving together are sent together, as one pipeline.
    fn is_plain(&self, args: &[Vec<u8>]) -> bool {
        self.is_authenticated
            && self.transaction.is_none()
            && !self.subscriptions.is_active()
            && !LOCAL
                .iter()
                .any(|local| local.as_bytes().eq_ignore_ascii_case(&args[0]))
    }

    /// Sends the commands of `batch` (emptied) as one pipeline, their replies in order: each
    /// its own value or server error. When the pipeline failed as a whole after it was written
    /// (the link died: any of it may have been applied), each idempotent command is sent again
    /// on its own and a non-idempotent one is answered `UNKNOWNOUTCOME`, as the library treats
    /// single commands; any other failure (nothing was sent) is every command's answer.
    async fn forward_batch(&mut self, batch: &mut Vec<Vec<Vec<u8>>>, out: &mut Vec<u8>) {
        if !batch.is_empty() {
            metrics::counter!("steadfast_proxy_commands_total").increment(batch.len() as u64);
        }
        match batch.len() {
            0 => return,
            1 => return self.forward(&batch.pop().unwrap_or_default(), out).await,
            _ => {}
        }
        let commands = std::mem::take(batch);
        let mut client = match self.upstream() {
            Ok(client) => client,
            Err(error) => {
                for _ in &commands {
                    resp::write_error(out, &error_reply(&error));
                }
                return;
            }
        };
        let mut pipeline = redis::pipe();
        for args in &commands {
            pipeline.add_command(command_of(args));
        }
        let sent = redis::aio::ConnectionLike::req_packed_commands(
            &mut client,
            &pipeline,
            0,
            commands.len(),
        )
        .await;
        let error = match sent {
            Ok(values) => {
                for value in &values {
                    resp::write_value(out, value, self.protocol);
                }
                return;
            }
            Err(error) => error,
        };
        let Some(failure) = steadfast::RedisErrorExt::steadfast_error(&error) else {
            let reply = match (error.code(), error.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                (Some(code), None) => code.to_owned(),
                _ => format!("ERR {error}"),
            };
            for _ in &commands {
                resp::write_error(out, &reply);
            }
            return;
        };
        if !failure.is_ambiguous() {
            let reply = error_reply(failure);
            for _ in &commands {
                resp::write_error(out, &reply);
            }
            return;
        }
        let unknown = error_reply(failure);
        for (args, cmd) in commands.iter().zip(pipeline.cmd_iter()) {
            if steadfast::is_idempotent(cmd) {
                self.forward(args, out).await;
            } else {
                resp::write_error(out, &unknown);
            }
        }
    }

    async fn forward(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let client = match self.upstream() {
            Ok(client) => client,
            Err(error) => return resp::write_error(out, &error_reply(&error)),
        };
        match client.query::<Value>(&command_of(args)).await {
            Ok(value) => resp::write_value(out, &value, self.protocol),
            Err(error) => resp::write_error(out, &error_reply(&error)),
        }
    }

    async fn hello(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let mut protocol = self.protocol;
        let mut at = 1;
        if let Some(version) = args.get(1) {
            protocol = match text(version).as_str() {
                "2" => Protocol::Resp2,
                "3" => Protocol::Resp3,
                _ => return resp::write_error(out, "NOPROTO unsupported protocol version"),
            };
            at = 2;
        }
        let mut name = None;
        let mut is_authenticated = self.is_authenticated;
        while at < args.len() {
            match upper(&args[at]).as_str() {
                "AUTH" if at + 2 < args.len() => {
                    if !self.password_matches(&args[at + 2]) {
                        return resp::write_error(
                            out,
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    }
                    is_authenticated = true;
                    at += 3;
                }
                "SETNAME" if at + 1 < args.len() => {
                    name = Some(text(&args[at + 1]));
                    at += 2;
                }
                other => {
                    return resp::write_error(
                        out,
                        &format!(
                            "ERR Syntax error in HELLO option '{}'",
                            other.to_lowercase()
                        ),
                    );
                }
            }
        }
        if !is_authenticated {
            return resp::write_error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if protocol != self.protocol && self.subscriptions.is_active() {
            // A new protocol needs a new client, and the subscriptions are the old one's.
            return resp::write_error(
                out,
                "ERR steadfast proxy: HELLO cannot change the protocol of a connection with subscriptions; unsubscribe first",
            );
        }
        self.is_authenticated = true;
        if let Some(name) = name {
            if self.upstream.is_some() && protocol == self.protocol {
                // Through the client, which replays it on every new link.
                let mut reply = Vec::new();
                let setname = [
                    b"CLIENT".to_vec(),
                    b"SETNAME".to_vec(),
                    name.clone().into_bytes(),
                ];
                self.forward(&setname, &mut reply).await;
                if !reply.starts_with(b"+OK") {
                    out.extend_from_slice(&reply);
                    return;
                }
            } else {
                self.drop_upstream();
            }
            self.name = Some(name);
        }
        if protocol != self.protocol {
            self.protocol = protocol;
            self.drop_upstream();
        }
        let version = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk("7.0.0")),
            (bulk("proto"), Value::Int(version)),
            (
                bulk("id"),
                Value::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ),
            (bulk("mode"), bulk("standalone")),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Value::Array(Vec::new())),
        ]);
        resp::write_value(out, &reply, self.protocol);
    }

    fn password_matches(&self, given: &[u8]) -> bool {
        match &self.shared.config.password {
            // Compared in full whatever the first difference, so timing says nothing.
            Some(password) => {
                let expected = password.as_bytes();
                expected.len() == given.len()
                    && expected
                        .iter()
                        .zip(given)
                        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                        == 0
            }
            None => false,
        }
    }

    fn auth(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if !(2..=3).contains(&args.len()) {
            return resp::write_error(out, "ERR wrong number of arguments for 'auth' command");
        }
        if self.shared.config.password.is_none() {
            return resp::write_error(
                out,
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        let given = &args[args.len() - 1];
        if self.password_matches(given) {
            self.is_authenticated = true;
            out.extend_from_slice(b"+OK\r\n");
        } else {
            resp::write_error(
                out,
                "WRONGPASS invalid username-password pair or user is disabled.",
            );
        }
    }

    async fn select(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let Some(database) = args
            .get(1)
            .and_then(|a| text(a).parse::<i64>().ok())
            .filter(|_| args.len() == 2)
        else {
            return resp::write_error(out, "ERR value is not an integer or out of range");
        };
        // Through the client (which replays it on every new link), so the server checks it.
        let mut before = Vec::new();
        self.forward(args, &mut before).await;
        if before.starts_with(b"+OK") {
            self.database = database;
        }
        out.extend_from_slice(&before);
    }

    async fn client(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let sub = args.get(1).map(|a| upper(a)).unwrap_or_default();
        match sub.as_str() {
            "ID" => resp::write_value(
                out,
                &Value::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
                self.protocol,
            ),
            "GETNAME" => {
                let name = self
                    .name
                    .as_ref()
                    .map_or(Value::Nil, |n| Value::BulkString(n.as_bytes().to_vec()));
                resp::write_value(out, &name, self.protocol);
            }
            "SETNAME" if args.len() == 3 => {
                let name = text(&args[2]);
                if name.bytes().any(|b| b == b' ' || b == b'\n') {
                    return resp::write_error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then_some(name);
                if self.upstream.is_some() {
                    self.forward(args, out).await;
                } else {
                    out.extend_from_slice(b"+OK\r\n");
                }
            }
            "SETINFO" if args.len() == 4 => {
                match upper(&args[2]).as_str() {
                    "LIB-NAME" => self.library.0 = Some(text(&args[3])),
                    "LIB-VER" => self.library.1 = Some(text(&args[3])),
                    _ => {
                        return resp::write_error(
                            out,
                            &format!("ERR Unrecognized option '{}'", text(&args[2])),
                        );
                    }
                }
                out.extend_from_slice(b"+OK\r\n");
            }
            "INFO" => {
                let line = format!(
                    "id={} addr={} name={} db={} resp={} lib-name={} lib-ver={}\n",
                    self.id,
                    self.peer,
                    self.name.as_deref().unwrap_or_default(),
                    self.database,
                    if self.protocol == Protocol::Resp3 {
                        3
                    } else {
                        2
                    },
                    self.library.0.as_deref().unwrap_or_default(),
                    self.library.1.as_deref().unwrap_or_default(),
                );
                resp::write_value(out, &Value::BulkString(line.into_bytes()), self.protocol);
            }
            "TRACKING" | "CACHING" | "REPLY" => resp::write_error(
                out,
                &format!("ERR steadfast proxy: CLIENT {sub} is not supported yet"),
            ),
            _ => self.forward(args, out).await,
        }
    }

    /// A command other than `WATCH` / `MULTI` / `EXEC` / `DISCARD` / `UNWATCH` while a
    /// transaction is under way: on its session; once the guard is lost, queued (`+QUEUED`,
    /// never sent: `EXEC` will abort) inside `MULTI`, and on the connection's client outside.
    async fn in_transaction(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let Some(transaction) = self.transaction.as_mut() else {
            return self.forward(args, out).await;
        };
        if !transaction.is_lost {
            match transaction.session.query::<Value>(&command_of(args)).await {
                Ok(value) => return resp::write_value(out, &value, self.protocol),
                Err(error) if error.kind() == ErrorKind::WatchLost => transaction.is_lost = true,
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            }
        }
        if transaction.is_in_multi {
            out.extend_from_slice(b"+QUEUED\r\n");
        } else {
            self.forward(args, out).await;
        }
    }

    async fn transaction_step(&mut self, name: &str, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if name == "WATCH"
            && self
                .transaction
                .as_ref()
                .is_some_and(|t| t.is_lost && !t.is_in_multi)
        {
            // Starting over after a lost guard: a fresh session.
            self.transaction = None;
        }
        if self.transaction.is_none() {
            match name {
                "WATCH" | "MULTI" => {}
                "UNWATCH" => return out.extend_from_slice(b"+OK\r\n"),
                _ => {
                    return resp::write_error(out, &format!("ERR {name} without MULTI"));
                }
            }
            let client = match self.upstream() {
                Ok(client) => client,
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            };
            match client.session().await {
                Ok(session) => {
                    self.transaction = Some(Transaction {
                        session,
                        is_watching: false,
                        is_in_multi: false,
                        is_lost: false,
                    });
                }
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            }
        }
        let protocol = self.protocol;
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let reply = if transaction.is_lost {
            None
        } else {
            match transaction.session.query::<Value>(&command_of(args)).await {
                Err(error) if error.kind() == ErrorKind::WatchLost => {
                    transaction.is_lost = true;
                    None
                }
                other => Some(other),
            }
        };
        let null = if protocol == Protocol::Resp3 {
            &b"_\r\n"[..]
        } else {
            &b"*-1\r\n"[..]
        };
        match (name, reply) {
            // The guard died with its link: the transaction goes on as the server would after
            // a watched key changed (MULTI OK, commands QUEUED, EXEC null), nothing is sent.
            ("MULTI", None) => {
                transaction.is_in_multi = true;
                out.extend_from_slice(b"+OK\r\n");
            }
            ("EXEC", None) | ("EXEC", Some(Ok(Value::Nil))) => {
                out.extend_from_slice(null);
                transaction.is_watching = false;
                transaction.is_in_multi = false;
            }
            ("DISCARD", None) if !transaction.is_in_multi => {
                resp::write_error(out, "ERR DISCARD without MULTI");
            }
            ("DISCARD", None) => {
                out.extend_from_slice(b"+OK\r\n");
                transaction.is_watching = false;
                transaction.is_in_multi = false;
            }
            (_, None) => {
                // UNWATCH, or a WATCH inside MULTI after the loss.
                if name == "UNWATCH" {
                    transaction.is_watching = false;
                }
                out.extend_from_slice(b"+OK\r\n");
            }
            (_, Some(Ok(value))) => {
                match name {
                    "WATCH" => transaction.is_watching = true,
                    "MULTI" => transaction.is_in_multi = true,
                    "UNWATCH" => transaction.is_watching = false,
                    _ => {
                        transaction.is_watching = false;
                        transaction.is_in_multi = false;
                    }
                }
                resp::write_value(out, &value, protocol);
            }
            (_, Some(Err(error))) => {
                if matches!(name, "EXEC" | "DISCARD") {
                    transaction.is_watching = false;
                    transaction.is_in_multi = false;
                }
                resp::write_error(out, &error_reply(&error));
            }
        }
        if !transaction.is_watching && !transaction.is_in_multi {
            // Back to the connection's shared link; the session's link goes back to the pool.
            self.transaction = None;
        }
    }

    /// `RESET`: the connection as it was when it connected.
    async fn reset(&mut self) {
        self.transaction = None;
        self.subscriptions = Subscriptions::default();
        self.protocol = Protocol::Resp2;
        self.database = self.shared.config.upstream.endpoint.database;
        self.name = None;
        self.is_authenticated = self.shared.config.password.is_none();
        self.drop_upstream();
    }

    /// The next command that needs the server makes a client with the connection's state now.
    fn drop_upstream(&mut self) {
        self.transaction = None;
        self.subscriptions = Subscriptions::default();
        if let Some(client) = self.upstream.take() {
            tokio::spawn(async move { client.shutdown().await });
        }
    }

    async fn close(&mut self) {
        self.transaction = None;
        self.subscriptions = Subscriptions::default();
        if let Some(client) = self.upstream.take() {
            client.shutdown().await;
        }
    }
}
