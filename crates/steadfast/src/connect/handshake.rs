//! The handshake on a fresh stream: the protocol, the credentials, our session questions and
//! the maintenance opt-in, in one round trip.
//!
//! # Behaviour
//! - The stream becomes a [`Wire`] whose push handler is installed before anything is sent, so
//!   a MOVING the server sends during the handshake is not lost.
//! - One pipeline sends `HELLO 3` (with the credentials) or, in RESP2, `AUTH` (when there is a
//!   password); `SELECT` (a database other than 0); `CLIENT SETINFO` (library name and version,
//!   refusals ignored); `CLIENT SETNAME`, the link journal's commands (state the caller set
//!   with commands: `SELECT`, `CLIENT SETNAME` ...; a refusal fails the attempt),
//!   `CLIENT MAINT_NOTIFICATIONS ON moving-endpoint-type <type>` (RESP3, unless disabled),
//!   `READONLY` (a cluster node whose client reads from replicas), `CLIENT ID` and `ROLE`.
//!   Refusals of `READONLY`, `CLIENT ID` and `ROLE` are tolerated (some managed services rename
//!   them); a refused opt-in fails the attempt only in [`MaintenanceMode::Enabled`]. A server
//!   too old for `AUTH user password` is asked again with the password alone.
//! - Refused credentials fail the attempt as [`ErrorKind::Auth`] with the server's reason
//!   (never the password); an answer that is not the Redis protocol as
//!   [`ErrorKind::Protocol`].
//! - A server that answers the handshake with `LOADING`, `MASTERDOWN` or `BUSY` fails the attempt
//!   as *not ready* ([`FailureClass::NotReady`]): the next attempt comes after
//!   `reconnect.refused_retry`, not after the growing backoff. (Redis answers `HELLO`, `AUTH`,
//!   `SELECT`, `CLIENT` and `ROLE` while loading, so a loading server usually yields a link, and
//!   its commands wait in `command::ready`.)

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::{PushInfo, Value};
use tracing::debug;

use super::activity::{Activity, MeteredStream};
use super::wire::{self, Wire};
use super::{Address, ConnectFailure, Connector, FailureClass, Link, PushRoutes};
use crate::config::{MaintenanceMode, MovingEndpointType, Protocol};
use crate::error::{Error, ErrorKind};
use crate::event::Role;
use crate::notices::{Notice, push};

/// Requests a link's wire holds waiting to be written; callers wait beyond it (the command
/// queue bounds how many there are).
const WIRE_QUEUE: usize = 1024;

pub(super) async fn handshake<S>(
    connector: &Connector,
    stream: S,
    address: Address,
    generation: u64,
) -> Result<Link, ConnectFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = &connector.config;
    let endpoint = &config.endpoint;
    let activity = Activity::new();
    let metered = MeteredStream::new(stream, Arc::clone(&activity));
    let login = match &endpoint.credentials {
        Some(provider) => {
            let fresh = provider.credentials().await.map_err(|e| {
                rejected(Error::new(
                    ErrorKind::Auth,
                    format!("credentials for {address}: {e}"),
                ))
            })?;
            Some((fresh.username.clone(), fresh.password.expose().to_owned()))
        }
        None => endpoint
            .password
            .as_ref()
            .map(|password| (endpoint.username.clone(), password.expose().to_owned())),
    };
    let is_during_handshake = Arc::new(AtomicBool::new(true));
    let is_resp3 = endpoint.protocol == Protocol::Resp3;
    let pushes = is_resp3.then(|| {
        route_pushes(
            connector.routes.clone(),
            generation,
            Arc::clone(&is_during_handshake),
        )
    });
    let (wire, driver) = Wire::new(metered, WIRE_QUEUE, pushes);
    let closed = tokio_util::sync::CancellationToken::new();
    let driver_task = {
        let activity = Arc::clone(&activity);
        let closed = closed.clone();
        connector.tasks.spawn(async move {
            driver.await;
            activity.mark_closed();
            closed.cancel();
        })
    };
    let mut connection = wire::Connection::new(wire, endpoint.database);
    let opt_in = (is_resp3 && config.maintenance.mode != MaintenanceMode::Disabled).then(|| {
        let peer = address
            .tcp()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        endpoint_type(config.maintenance.endpoint_type, peer)
    });
    let (journal_version, replay) = connector.journal.snapshot();
    let hello = Hello {
        is_resp3,
        login: login
            .as_ref()
            .map(|(user, password)| (user.as_deref(), password.as_str())),
        database: endpoint.database,
    };
    let session = Session {
        client_name: endpoint.client_name.as_deref(),
        replay: &replay,
        opt_in,
        is_read_only: connector.is_read_only_session,
    };
    let facts = match introduce(&mut connection, &hello, &session).await {
        Ok(facts) => facts,
        Err(failure) => {
            driver_task.abort();
            return Err(failure.at(&address));
        }
    };
    if let Some(refused) = &facts.replay_refused {
        driver_task.abort();
        let command = replay.get(refused.index).map(describe).unwrap_or_default();
        let class = if refused.is_not_ready {
            FailureClass::NotReady
        } else {
            FailureClass::Rejected
        };
        return Err(ConnectFailure {
            class,
            error: Error::new(
                ErrorKind::Connect,
                format!(
                    "handshake with {address}: replaying `{command}` (sent earlier by the caller) was refused: {}",
                    refused.reply
                ),
            ),
        });
    }
    if let Some(Err(refusal)) = &facts.maintenance
        && config.maintenance.mode == MaintenanceMode::Enabled
    {
        driver_task.abort();
        return Err(rejected(Error::new(
            ErrorKind::Connect,
            format!("{address} refused maintenance notifications: {refusal}"),
        )));
    }
    is_during_handshake.store(false, Ordering::Release);
    debug!(address = %address, generation, client_id = ?facts.client_id, role = %facts.role,
        maintenance = ?facts.maintenance, "link ready");
    Ok(Link {
        generation,
        address,
        local: None,
        connection,
        activity,
        client_id: facts.client_id,
        role: facts.role,
        is_maintenance_aware: matches!(facts.maintenance, Some(Ok(()))),
        closed,
        driver: driver_task.abort_handle(),
        batcher: std::sync::Arc::default(),
        journal_version: journal_version.into(),
        ready: tokio::sync::Mutex::default(),
    })
}

/// The push handler of one link: maintenance frames to the reactor (never blocking; a full
/// queue drops the frame, counted in the log), the rest to the application.
fn route_pushes(
    routes: PushRoutes,
    generation: u64,
    is_during_handshake: Arc<AtomicBool>,
) -> wire::Pushes {
    Box::new(move |frame: &[u8]| {
        let Ok(Value::Push { kind, data }) = redis::parse_redis_value(frame) else {
            return;
        };
        if let Some(notification) = push::parse(&kind, &data) {
            let notice = Notice {
                generation,
                notification,
                is_during_handshake: is_during_handshake.load(Ordering::Acquire),
            };
            if routes.maintenance.try_send(notice).is_err() {
                tracing::warn!(
                    generation,
                    "maintenance queue full: a notification was dropped"
                );
            }
        } else {
            // No receiver is fine: pushes are offered, never required.
            let _ = routes.application.send(PushInfo { kind, data });
        }
    })
}

/// How a connection says who it is: the protocol, the credentials, the database.
struct Hello<'a> {
    is_resp3: bool,
    /// `(username, password)`.
    login: Option<(Option<&'a str>, &'a str)>,
    database: i64,
}

/// A handshake that failed, before the address is known to the message.
enum Failure {
    /// Credentials refused: the server's reason.
    Auth(String),
    /// Not the Redis protocol.
    Protocol(String),
    /// Any other refusal or failure.
    Other(redis::RedisError),
}

impl Failure {
    fn at(self, address: &Address) -> ConnectFailure {
        match self {
            Self::Auth(reason) => rejected(Error::new(
                ErrorKind::Auth,
                format!("handshake with {address}: the credentials were refused: {reason}"),
            )),
            Self::Protocol(detail) => rejected(Error::new(
                ErrorKind::Protocol,
                format!(
                    "handshake with {address}: the answer is not the Redis protocol \
                     (another service on this port, or one that expects TLS?): {detail}"
                ),
            )),
            Self::Other(e) => ConnectFailure {
                class: refusal_class(&e),
                error: Error::from_redis(
                    ErrorKind::Connect,
                    &format!("handshake with {address}"),
                    e,
                ),
            },
        }
    }
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::Parse {
            let detail = e.detail().map_or_else(|| e.to_string(), str::to_owned);
            return Self::Protocol(detail.lines().next().unwrap_or_default().to_owned());
        }
        Self::Other(e)
    }
}

/// Says hello and asks the session questions: one round trip (two with a server that knows no
/// ACL users).
async fn introduce(
    connection: &mut wire::Connection,
    hello: &Hello<'_>,
    session: &Session<'_>,
) -> Result<Facts, Failure> {
    let mut with_username = true;
    loop {
        let mut pipe = redis::pipe();
        let username = hello
            .login
            .and_then(|(user, _)| user)
            .filter(|_| with_username);
        if hello.is_resp3 {
            let hello_cmd = pipe.cmd("HELLO").arg(3);
            if let Some((user, password)) = hello.login {
                hello_cmd
                    .arg("AUTH")
                    .arg(user.unwrap_or("default"))
                    .arg(password);
            }
        } else if let Some((_, password)) = hello.login {
            let auth = pipe.cmd("AUTH");
            if let Some(user) = username {
                auth.arg(user);
            }
            auth.arg(password);
        }
        if hello.database != 0 {
            pipe.cmd("SELECT").arg(hello.database);
        }
        pipe.cmd("CLIENT")
            .arg("SETINFO")
            .arg("LIB-NAME")
            .arg("steadfast")
            .cmd("CLIENT")
            .arg("SETINFO")
            .arg("LIB-VER")
            .arg(env!("CARGO_PKG_VERSION"));
        let setup = pipe.len();
        let replies = ask(connection, pipe, session).await?;
        let (setup_replies, session_replies) = replies.split_at(setup.min(replies.len()));
        let mut setup_replies = setup_replies.iter();
        let has_hello = hello.is_resp3 || hello.login.is_some();
        if has_hello && let Some(Value::ServerError(e)) = setup_replies.next() {
            let detail = e.details().unwrap_or("");
            if detail.contains("wrong number of arguments for 'auth'") && username.is_some() {
                with_username = false;
                continue;
            }
            if hello.is_resp3 && detail.starts_with("unknown command `HELLO`") {
                return Err(Failure::Other(redis::RedisError::from((
                    redis::ErrorKind::RESP3NotSupported,
                    "the server does not know HELLO, so RESP3 cannot be used",
                ))));
            }
            let error = redis::RedisError::from(e.clone());
            if is_auth_failure(&error) || !hello.is_resp3 {
                return Err(Failure::Auth(format!("{} {detail}", e.code())));
            }
            return Err(Failure::Other(error));
        }
        if hello.database != 0
            && let Some(Value::ServerError(e)) = setup_replies.next()
        {
            return Err(Failure::Other(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "the server refused to switch database",
                format!("{} {}", e.code(), e.details().unwrap_or("")),
            ))));
        }
        if let Some(e) = replies.iter().find_map(|reply| match reply {
            Value::ServerError(e) if e.code() == "NOAUTH" => Some(e),
            _ => None,
        }) {
            // No credentials, and the server wants some.
            return Err(Failure::Auth(format!(
                "NOAUTH {}",
                e.details().unwrap_or("")
            )));
        }
        return Ok(facts(session_replies, session));
    }
}

struct Facts {
    client_id: Option<i64>,
    role: Role,
    /// `None`: not asked; `Some(Err(reply))`: refused.
    maintenance: Option<Result<(), String>>,
    /// The first replayed journal command the server refused.
    replay_refused: Option<Refused>,
}

/// A replayed journal command the server refused.
struct Refused {
    /// Its place in the journal.
    index: usize,
    /// The server's reply.
    reply: String,
    /// The refusal was "not ready" (`LOADING` ...), not "no".
    is_not_ready: bool,
}

/// What the session round trip sends.
struct Session<'a> {
    client_name: Option<&'a str>,
    /// The link journal's commands, replayed after the configured name.
    replay: &'a [redis::Cmd],
    opt_in: Option<&'static str>,
    is_read_only: bool,
}

/// Adds the session's questions to `pipe` and sends it all, every command's reply a value.
async fn ask(
    connection: &mut wire::Connection,
    mut pipe: redis::Pipeline,
    session: &Session<'_>,
) -> redis::RedisResult<Vec<Value>> {
    if let Some(name) = session.client_name {
        pipe.cmd("CLIENT").arg("SETNAME").arg(name);
    }
    for cmd in session.replay {
        pipe.add_command(cmd.clone());
    }
    if session.is_read_only {
        pipe.cmd("READONLY");
    }
    if let Some(endpoint_type) = session.opt_in {
        pipe.cmd("CLIENT")
            .arg("MAINT_NOTIFICATIONS")
            .arg("ON")
            .arg("moving-endpoint-type")
            .arg(endpoint_type);
    }
    pipe.cmd("CLIENT").arg("ID").cmd("ROLE");
    let count = pipe.len();
    connection.send_packed_commands(&pipe, 0, count).await
}

/// What the session questions' `replies` say.
fn facts(replies: &[Value], session: &Session<'_>) -> Facts {
    let mut replies = replies.iter();
    if session.client_name.is_some() {
        replies.next();
    }
    let mut replay_refused = None;
    for index in 0..session.replay.len() {
        if let Some(Value::ServerError(e)) = replies.next() {
            let reply = format!("{} {}", e.code(), e.details().unwrap_or(""));
            let is_not_ready = crate::policy::retry::is_not_ready(&e.clone().into());
            replay_refused.get_or_insert(Refused {
                index,
                reply,
                is_not_ready,
            });
        }
    }
    if session.is_read_only {
        replies.next();
    }
    let maintenance = session.opt_in.map(|_| match replies.next() {
        Some(Value::Okay) => Ok(()),
        Some(Value::SimpleString(s)) if s.eq_ignore_ascii_case("OK") => Ok(()),
        Some(Value::ServerError(e)) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        other => Err(format!("unexpected reply {other:?}")),
    });
    let client_id = match replies.next() {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    };
    let role = match replies.next() {
        Some(Value::Array(items)) => match items.first() {
            Some(Value::BulkString(bytes)) => {
                Role::from_role_reply(&String::from_utf8_lossy(bytes))
            }
            Some(Value::SimpleString(s)) => Role::from_role_reply(s),
            _ => Role::Unknown,
        },
        _ => Role::Unknown,
    };
    Facts {
        client_id,
        role,
        maintenance,
        replay_refused,
    }
}

/// A command as the caller wrote it, for an error message (`SELECT 5`).
fn describe(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "0".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `moving-endpoint-type` for a connection to `peer` (plain TCP: `*-ip`).
fn endpoint_type(choice: MovingEndpointType, peer: IpAddr) -> &'static str {
    match choice {
        MovingEndpointType::Auto if is_private(peer) => "internal-ip",
        MovingEndpointType::Auto => "external-ip",
        MovingEndpointType::InternalIp => "internal-ip",
        MovingEndpointType::InternalFqdn => "internal-fqdn",
        MovingEndpointType::ExternalIp => "external-ip",
        MovingEndpointType::ExternalFqdn => "external-fqdn",
        MovingEndpointType::None => "none",
    }
}

/// RFC 1918, RFC 4193, loopback, link-local and 100.64/10.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Rejected credentials. redis-rs names some of these; the server's `WRONGPASS` and `NOAUTH`
/// replies arrive as extension codes.
fn is_auth_failure(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::AuthenticationFailed
            | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    ) || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn rejected(error: Error) -> ConnectFailure {
    ConnectFailure {
        class: FailureClass::Rejected,
        error,
    }
}

/// A server that refused the handshake: one that is there and not ready yet (`LOADING` ...) is
/// asked again soon; any other refusal backs off.
fn refusal_class(error: &redis::RedisError) -> FailureClass {
    if crate::policy::retry::is_not_ready(error) {
        FailureClass::NotReady
    } else {
        FailureClass::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_peers_get_internal_endpoints_and_public_ones_external() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert_eq!(
                endpoint_type(MovingEndpointType::Auto, ip),
                "internal-ip",
                "{private}"
            );
        }
        for public in ["8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(
                endpoint_type(MovingEndpointType::Auto, ip),
                "external-ip",
                "{public}"
            );
        }
    }

    #[test]
    fn an_explicit_endpoint_type_overrides_the_rule() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            endpoint_type(MovingEndpointType::ExternalFqdn, ip),
            "external-fqdn"
        );
        assert_eq!(endpoint_type(MovingEndpointType::None, ip), "none");
    }
}
