//! One downstream connection: its requests read in order, each answered in order, its state
//! (protocol, database, name, authentication, transaction) kept here and carried onto every
//! upstream link by the library.
//!
//! # Behaviour
//! - Commands that leave a link's state alone go on the client of the connection's protocol
//!   that every such connection shares (`crate::backend`), as long as the connection has no
//!   state of its own. From its first other command (a `SELECT` of another database, a name,
//!   a blocking command, a transaction, a subscription) the connection has a
//!   [`steadfast::Client`] of its own, made with its protocol, database and name, so every link
//!   the library makes for it (after a restart, a failover, a maintenance move) carries them.
//!   A later `SELECT` or `CLIENT SETNAME` goes through that client, which replays it on new
//!   links; a `HELLO` that changes the protocol makes the next command use a new client.
//! - Answered here, as the server would: `HELLO`, `AUTH` (the proxy's own password, never the
//!   upstream's), `CLIENT ID` (stable for the connection, whatever links come and go),
//!   `CLIENT GETNAME` / `SETINFO` / `INFO`, `READONLY` / `READWRITE`, `QUIT`, `RESET`.
//! - `CLIENT TRACKING ON` (client-side caching, RESP3): through the connection's own client,
//!   which replays it on every new link; its `invalidate` pushes are written to the
//!   connection between replies, the library's "flush everything" among them whenever an
//!   upstream link closes or a new one is made (a lagging receiver: the same flush).
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

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::{PushInfo, PushKind, Value};
use steadfast::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

mod batch;
mod cluster;
mod forward;
mod local;
mod transaction;

pub(crate) use local::ServerKind;

use crate::backend::{Backend, TxSession};
use crate::pubsub::{Change, Subscriptions};
use crate::resp::{self, Protocol, Read};
use crate::server::Shared;
use batch::Batch;

/// What a connection's buffers keep between commands.
const IDLE_BUFFER: usize = 1024;
/// Free room to read into while a command is still arriving.
const READ_AHEAD: usize = 16 * 1024;
/// Buffers larger than this are shrunk once served.
const SHRINK_ABOVE: usize = 64 * 1024;

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
    "CLUSTER",
    "ASKING",
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
    /// The proxy's address as this connection reached it (what `CLUSTER SLOTS` names).
    local: Option<std::net::SocketAddr>,
    protocol: Protocol,
    database: i64,
    name: Option<String>,
    library: (Option<String>, Option<String>),
    is_authenticated: bool,
    upstream: Option<Backend>,
    transaction: Option<Transaction>,
    subscriptions: Subscriptions,
    /// The own client's pushes while `CLIENT TRACKING` is on (RESP3 connections).
    invalidations: Option<broadcast::Receiver<PushInfo>>,
    /// `steadfast_proxy_commands_total`, looked up once for the connection, not per read.
    commands_total: metrics::Counter,
}

/// A `WATCH` / `MULTI` under way, on a session of the connection's client.
struct Transaction {
    /// `None` on a cluster between `MULTI` and the first queued command, whose key picks the
    /// slot (and so the node) of the session.
    session: Option<TxSession>,
    is_watching: bool,
    is_in_multi: bool,
    /// The session's guard was lost: `EXEC` answers null.
    is_lost: bool,
}

/// Serves `stream` until the client leaves, the proxy closes, or the client breaks the
/// protocol.
pub(crate) async fn serve<S>(
    mut stream: S,
    peer: String,
    local: Option<std::net::SocketAddr>,
    shared: &Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection {
        shared,
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        peer,
        local,
        protocol: Protocol::Resp2,
        database: shared.config.upstream.endpoint.database,
        name: None,
        library: (None, None),
        is_authenticated: shared.config.password.is_none(),
        upstream: None,
        transaction: None,
        subscriptions: Subscriptions::default(),
        invalidations: None,
        commands_total: metrics::counter!("steadfast_proxy_commands_total"),
    };
    let limits = shared.config.limits;
    // Buffers grow with what a client sends and shrink back once it has been served, so an
    // idle connection holds little (the footprint goal: 1,000 idle connections).
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut is_streaming = false;
    // Kept between reads (cleared by each send), so a read's commands cost no new batch.
    let mut batch = Batch::default();
    // Made once: a new one each read would register with the token again each time.
    let closing = shared.closing.cancelled();
    tokio::pin!(closing);
    'serving: loop {
        // Every complete command in the buffer, in order; their replies written together.
        let mut used = 0;
        loop {
            match resp::read_command(&buf[used..], &limits) {
                Ok(Read::Command(args, length)) => {
                    let bytes = &buf[used..used + length];
                    used += length;
                    if connection.is_plain(&args[0]) {
                        batch.push(command_of(&args), bytes);
                        if batch.len() >= MAX_BATCH {
                            connection.forward_batch(&mut batch, &mut out).await;
                        }
                        continue;
                    }
                    let args: Vec<Vec<u8>> = args.into_iter().map(Cow::into_owned).collect();
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
        if out.capacity() > SHRINK_ABOVE {
            out.shrink_to(IDLE_BUFFER);
        }
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf.shrink_to(IDLE_BUFFER);
        }
        // Room to read into: a little for a new command; more inside a long one, or while the
        // client sends faster than a small buffer takes (the last read filled it).
        buf.reserve(if buf.is_empty() && !is_streaming {
            IDLE_BUFFER
        } else {
            READ_AHEAD
        });
        let room = buf.capacity() - buf.len();
        // The push branches only where there can be pushes (a fair draw among the ready ones,
        // so neither a flood of messages nor a client sending without pause starves the other).
        let has_subscriber = connection.subscriptions.has_subscriber();
        let has_invalidations = connection.invalidations.is_some();
        let read = tokio::select! {
            () = &mut closing => break,
            delivery = connection.subscriptions.next(), if has_subscriber => {
                match delivery {
                    Some(delivery) => {
                        connection.subscriptions.write(&delivery, connection.protocol, &mut out);
                    }
                    None => connection.subscriptions = Subscriptions::default(),
                }
                continue;
            }
            push = next_push(&mut connection.invalidations), if has_invalidations => {
                connection.pass_on(push, &mut out);
                continue;
            }
            read = stream.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => is_streaming = n == room,
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

fn command_of<A: AsRef<[u8]>>(args: &[A]) -> redis::Cmd {
    let size = args.iter().map(|arg| arg.as_ref().len()).sum();
    let mut cmd = redis::Cmd::with_capacity(args.len(), size);
    for arg in args {
        cmd.arg(arg.as_ref());
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
        self.commands_total.increment(1);
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
            let backend = self.upstream().await;
            if let Err(error) = self
                .subscriptions
                .apply(change, move || backend, self.protocol, out)
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
            "CLUSTER" => self.cluster(args, out).await,
            "ASKING" if self.shared.config.is_cluster => out.extend_from_slice(b"+OK\r\n"),
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

    /// The connection's way to the server, made on first need: a client of its own for a
    /// single endpoint, the shared cluster client of its protocol for a cluster.
    async fn upstream(&mut self) -> Result<Backend, steadfast::Error> {
        if let Some(backend) = &self.upstream {
            return Ok(backend.clone());
        }
        if self.shared.config.is_cluster {
            let client = self
                .shared
                .clusters
                .get(self.protocol, &self.shared.config.upstream)
                .await?;
            self.upstream = Some(Backend::Cluster(client.clone()));
            return Ok(Backend::Cluster(client));
        }
        let mut config = self.shared.config.upstream.clone();
        config.endpoint.protocol = match self.protocol {
            Protocol::Resp2 => steadfast::Protocol::Resp2,
            Protocol::Resp3 => steadfast::Protocol::Resp3,
        };
        config.endpoint.database = self.database;
        config.endpoint.client_name = self.name.clone();
        let client = steadfast::Client::new(config)?;
        self.upstream = Some(Backend::Endpoint(client.clone()));
        Ok(Backend::Endpoint(client))
    }

    /// Where `cmds` go: the shared client of the connection's protocol while the connection
    /// has nothing of its own (the upstream's database, no name, no client of its own yet)
    /// and every one of them leaves a link's state alone; else the connection's own client.
    async fn backend_for<'c>(
        &mut self,
        mut cmds: impl Iterator<Item = &'c redis::Cmd>,
    ) -> Result<Backend, steadfast::Error> {
        let config = &self.shared.config;
        let is_shareable = !config.is_cluster
            && self.upstream.is_none()
            && self.database == config.upstream.endpoint.database
            && self.name.is_none()
            && cmds.all(steadfast::is_shareable);
        if is_shareable {
            let client =
                self.shared
                    .endpoints
                    .get(self.protocol, &config.upstream, config.max_queued)?;
            return Ok(Backend::Endpoint(client));
        }
        self.upstream().await
    }

    /// Whether `args` goes to the server as it is, with nothing for the proxy to do: such
    /// commands arriving together are sent together, as one pipeline.
    fn is_plain(&self, name: &[u8]) -> bool {
        self.is_authenticated
            && self.transaction.is_none()
            && !self.subscriptions.is_active()
            && !LOCAL
                .iter()
                .any(|local| local.as_bytes().eq_ignore_ascii_case(name))
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

    /// Writes a push of the connection's own client: a tracking invalidation as the server
    /// sent it (or the library's "flush everything"); a receiver that fell behind lost some,
    /// so the application is told to flush everything.
    fn pass_on(&mut self, push: Result<PushInfo, broadcast::error::RecvError>, out: &mut Vec<u8>) {
        let data = match push {
            Ok(PushInfo {
                kind: PushKind::Invalidate,
                data,
            }) => data,
            Ok(_) => return,
            Err(broadcast::error::RecvError::Lagged(_)) => vec![Value::Nil],
            Err(broadcast::error::RecvError::Closed) => {
                self.invalidations = None;
                return;
            }
        };
        let push = Value::Push {
            kind: PushKind::Invalidate,
            data,
        };
        resp::write_value(out, &push, self.protocol);
    }

    /// The next command that needs the server makes a client with the connection's state now.
    fn drop_upstream(&mut self) {
        self.transaction = None;
        self.subscriptions = Subscriptions::default();
        self.invalidations = None;
        if let Some(backend) = self.upstream.take() {
            tokio::spawn(async move { backend.shutdown().await });
        }
    }

    async fn close(&mut self) {
        self.invalidations = None;
        self.transaction = None;
        self.subscriptions = Subscriptions::default();
        if let Some(backend) = self.upstream.take() {
            backend.shutdown().await;
        }
    }
}

/// The next push of a tracking connection's client; never, without tracking.
async fn next_push(
    invalidations: &mut Option<broadcast::Receiver<PushInfo>>,
) -> Result<PushInfo, broadcast::error::RecvError> {
    match invalidations {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
