//! The connector: one connection attempt, from a name to a ready link.
//!
//! # Behaviour
//! - The endpoint's name is resolved on every attempt; no address is kept across attempts.
//! - Each address is tried in turn, sharing the attempt's `connect_timeout`, with the socket
//!   options (`TCP_NODELAY`, `TCP_USER_TIMEOUT`, keepalive) set before the SYN.
//! - The stream is wrapped in an activity meter and handed to redis-rs's
//!   `MultiplexedConnection::new_with_config`, which runs `HELLO 3` (or `AUTH` for RESP2) with the
//!   credentials and `SELECT`. Then one round trip sends `CLIENT SETNAME`, `CLIENT ID` and `ROLE`;
//!   a managed service that refuses `CLIENT ID` or `ROLE` still yields a usable link.
//! - Push frames (RESP3) go to the client's push channel; unknown frames pass through untouched.

pub(crate) mod activity;
pub(crate) mod link;
pub mod resolve;
pub(crate) mod socket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, RedisConnectionInfo, Value};
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout_at};
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::config::{Config, Protocol};
use crate::error::{Error, ErrorKind};
use activity::{Activity, MeteredStream};
pub(crate) use link::Link;

/// How an attempt failed, as far as the backoff cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// Every address refused the connection: the host is up and nothing listens (a restart).
    Refused,
    /// No address answered the SYNs within the attempt: the attempt itself was the wait.
    Unanswered,
    /// A server (or the resolver) was reached and the attempt still failed: back off, since
    /// trying again costs it work.
    Rejected,
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) class: FailureClass,
    pub(crate) error: Error,
}

/// Makes links. Cheap to clone; holds no address between attempts.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<Config>,
    pushes: broadcast::Sender<PushInfo>,
    tasks: TaskTracker,
}

impl Connector {
    pub(crate) fn new(
        config: Arc<Config>,
        pushes: broadcast::Sender<PushInfo>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            config,
            pushes,
            tasks,
        }
    }

    /// Resolves, dials and handshakes, all within `connect.connect_timeout`.
    pub(crate) async fn connect(&self, generation: u64) -> Result<Link, ConnectFailure> {
        let deadline = Instant::now() + self.config.connect.connect_timeout;
        let endpoint = &self.config.endpoint;
        let label = self.config.endpoint_label();
        let addresses = match timeout_at(
            deadline,
            endpoint.resolver.resolve(&endpoint.host, endpoint.port),
        )
        .await
        {
            Ok(Ok(addresses)) if !addresses.is_empty() => addresses,
            Ok(Ok(_)) => {
                return Err(failure(
                    format!("resolve {label}: no addresses"),
                    FailureClass::Rejected,
                ));
            }
            Ok(Err(e)) => {
                return Err(failure(
                    format!("resolve {label}: {e}"),
                    FailureClass::Rejected,
                ));
            }
            Err(_) => {
                return Err(failure(
                    format!(
                        "resolve {label} timed out after {:?}",
                        self.config.connect.connect_timeout
                    ),
                    FailureClass::Rejected,
                ));
            }
        };
        let (stream, address) = self.dial_any(&addresses, deadline).await?;
        match timeout_at(deadline, self.handshake(stream, address, generation)).await {
            Ok(result) => result,
            Err(_) => Err(failure(
                format!(
                    "handshake with {address} timed out after {:?}",
                    self.config.connect.connect_timeout
                ),
                FailureClass::Rejected,
            )),
        }
    }

    async fn dial_any(
        &self,
        addresses: &[SocketAddr],
        deadline: Instant,
    ) -> Result<(tokio::net::TcpStream, SocketAddr), ConnectFailure> {
        let mut errors = Vec::new();
        let mut is_refused = true;
        for (index, &address) in addresses.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let share = remaining / u32::try_from(addresses.len() - index).unwrap_or(u32::MAX);
            match socket::dial_paced(address, &self.config.connect, share).await {
                Ok(stream) => return Ok((stream, address)),
                Err(e) => {
                    is_refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                    errors.push(format!("tcp connect to {address}: {e}"));
                }
            }
        }
        let class = if is_refused {
            FailureClass::Refused
        } else {
            FailureClass::Unanswered
        };
        Err(failure(errors.join("; "), class))
    }

    async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        address: SocketAddr,
        generation: u64,
    ) -> Result<Link, ConnectFailure> {
        let activity = Activity::new();
        let metered = MeteredStream::new(stream, Arc::clone(&activity));
        let endpoint = &self.config.endpoint;
        let mut info = RedisConnectionInfo::default()
            .set_db(endpoint.database)
            .set_lib_name("steadfast", env!("CARGO_PKG_VERSION"));
        if let Some(user) = &endpoint.username {
            info = info.set_username(user);
        }
        if let Some(password) = &endpoint.password {
            info = info.set_password(password.expose());
        }
        let mut options = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(None);
        if endpoint.protocol == Protocol::Resp3 {
            info = info.set_protocol(ProtocolVersion::RESP3);
            let pushes = self.pushes.clone();
            options = options.set_push_sender(move |push: PushInfo| {
                // No receiver is fine: pushes are offered, never required.
                let _ = pushes.send(push);
                Ok::<(), redis::aio::SendError>(())
            });
        }
        let (mut connection, driver) =
            MultiplexedConnection::new_with_config(&info, metered, options)
                .await
                .map_err(|e| {
                    let kind = if is_auth_failure(&e) {
                        ErrorKind::Auth
                    } else {
                        ErrorKind::Connect
                    };
                    ConnectFailure {
                        class: FailureClass::Rejected,
                        error: Error::from_redis(kind, &format!("handshake with {address}"), e),
                    }
                })?;
        let closed = tokio_util::sync::CancellationToken::new();
        let driver_task = {
            let activity = Arc::clone(&activity);
            let closed = closed.clone();
            self.tasks.spawn(async move {
                driver.await;
                activity.mark_closed();
                closed.cancel();
            })
        };
        let (client_id, role) = session_facts(&mut connection, endpoint.client_name.as_deref())
            .await
            .map_err(|e| {
                driver_task.abort();
                ConnectFailure {
                    class: FailureClass::Rejected,
                    error: Error::from_redis(
                        ErrorKind::Connect,
                        &format!("handshake with {address}"),
                        e,
                    ),
                }
            })?;
        debug!(%address, generation, ?client_id, %role, "link ready");
        Ok(Link {
            generation,
            address,
            connection,
            activity,
            client_id,
            role,
            closed,
            driver: driver_task.abort_handle(),
        })
    }
}

/// `CLIENT SETNAME`, `CLIENT ID` and `ROLE` in one round trip. Refusals of the last two (some
/// managed services rename them) are tolerated; a failed round trip is not.
async fn session_facts(
    connection: &mut MultiplexedConnection,
    client_name: Option<&str>,
) -> redis::RedisResult<(Option<i64>, String)> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    if let Some(name) = client_name {
        pipe.cmd("CLIENT").arg("SETNAME").arg(name).ignore();
    }
    pipe.cmd("CLIENT").arg("ID").cmd("ROLE");
    let replies: Vec<Value> = pipe.query_async(connection).await?;
    let client_id = match replies.first() {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    };
    let role = match replies.get(1) {
        Some(Value::Array(items)) => match items.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => "unknown".to_owned(),
        },
        _ => "unknown".to_owned(),
    };
    Ok((client_id, role))
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

fn failure(message: String, class: FailureClass) -> ConnectFailure {
    ConnectFailure {
        class,
        error: Error::new(ErrorKind::Connect, message),
    }
}
