//! Configuration: plain data, grouped by concern, with documented defaults.
//!
//! # Behaviour
//! - Every field is public and has a default that needs no tuning; each field's doc says the
//!   default and why it was chosen.
//! - [`Config::validate`] is the one place that rejects bad values, with an error that names the
//!   field and the value (never a password).
//! - [`parse_connection_string`] reads the StackExchange.Redis form Azure's portal shows.
//! - [`Config::from_toml`] and [`Config::from_env`] read a file and the environment.
//! - [`Config::from_url`] reads a `redis://` URL (`redis://[[user]:password@]host[:port][/db][?protocol=resp2|resp3&client_name=NAME]`).

mod cluster;
mod connection_string;
mod file;
mod maintenance;
mod url;

pub use cluster::{ClusterConfig, ReadFrom};
pub use connection_string::{ConnectionString, parse as parse_connection_string};
pub use maintenance::{AzureEvents, MaintenanceConfig, MaintenanceMode, MovingEndpointType};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::endpoint::credentials::Password;
use crate::endpoint::resolve::{Resolver, SystemResolver};
use crate::error::Error;

/// Everything a [`Client`](crate::Client) needs to know. Build it with struct update syntax
/// from [`Config::default`] or parse it from a URL with [`Config::from_url`].
///
/// ```
/// use std::time::Duration;
/// let mut config = steadfast::Config::from_url("redis://cache.internal:6379/2").unwrap();
/// config.command.deadline = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Config {
    /// Where the server is and who we are to it.
    pub endpoint: EndpointConfig,
    /// How one connection attempt is made.
    pub connect: ConnectConfig,
    /// TLS (rustls): off unless `rediss://` or `tls.is_enabled`.
    pub tls: TlsConfig,
    /// How a dead link is told from a slow one.
    pub health: HealthConfig,
    /// When a lost link is replaced.
    pub reconnect: ReconnectConfig,
    /// What happens to each command.
    pub command: CommandConfig,
    /// How announced maintenance is acted on.
    pub maintenance: MaintenanceConfig,
    /// How a cluster client routes and keeps its slot table (a single-endpoint client ignores
    /// it).
    pub cluster: ClusterConfig,
}

/// The endpoint and the session settings sent at handshake.
#[derive(Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Host name or IP address of the primary endpoint. It is resolved again on every connection
    /// attempt, so a DNS name that moves to a promoted replica is followed.
    /// Default: `127.0.0.1`.
    pub host: String,
    /// TCP port. Default: `6379`.
    pub port: u16,
    /// A Unix domain socket to connect to instead of `host:port` (`unix://` URLs). No TLS, no
    /// resolution, no TCP options. Default: `None`.
    pub unix_socket: Option<std::path::PathBuf>,
    /// ACL user name; `None` authenticates as `default` when a password is set. Default: `None`.
    pub username: Option<String>,
    /// Password; never printed by `Debug`, events or logs. Default: `None`.
    pub password: Option<Password>,
    /// Where fresh credentials come from (rotating tokens, rotated ACL passwords); when set,
    /// `username` and `password` are unused. Default: `None`.
    pub credentials: Option<Arc<dyn crate::endpoint::credentials::CredentialsProvider>>,
    /// Credentials without an expiry are refreshed (and live links re-authenticated) this often
    /// when a provider is set. Default: 5 min.
    pub credentials_refresh: Duration,
    /// Database selected on every new connection. Default: `0`.
    pub database: i64,
    /// Wire protocol. Default: [`Protocol::Resp2`], redis-rs's default (same replies); RESP3
    /// adds maintenance pushes and RESP3 types (its replies cannot be turned back into RESP2
    /// exactly: redis-rs parses doubles into `f64`, losing the server's text).
    pub protocol: Protocol,
    /// Name given to each connection with `CLIENT SETNAME`, visible in `CLIENT LIST`.
    /// Default: `steadfast`.
    pub client_name: Option<String>,
    /// How the host name is turned into addresses. Default: the system resolver
    /// (`getaddrinfo`), called again on every attempt.
    pub resolver: Arc<dyn Resolver>,
    /// The role the server behind the endpoint must have. Default: [`ExpectedRole::Primary`]: a
    /// connection that reaches a replica (the name has not moved yet after a failover) counts as
    /// a failed attempt and the name is resolved again after a backoff.
    pub role: ExpectedRole,
}

/// Which server role a link may be served by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedRole {
    /// Only a primary (`ROLE` answers `master`); servers that refuse `ROLE` are accepted.
    Primary,
    /// Any role: for read-only workloads against a replica endpoint.
    Any,
}

impl EndpointConfig {
    pub(crate) fn expects_primary(&self) -> bool {
        self.role == ExpectedRole::Primary
    }

    /// The name's addresses now, asked of the resolver; `None` when the lookup failed, took
    /// longer than `limit` or listed nothing (a look that saw nothing).
    pub(crate) async fn addresses_within(
        &self,
        limit: Duration,
    ) -> Option<Vec<std::net::SocketAddr>> {
        let lookup = self.resolver.resolve(&self.host, self.port);
        match tokio::time::timeout(limit, lookup).await {
            Ok(Ok(addresses)) if !addresses.is_empty() => Some(addresses),
            _ => None,
        }
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 6379,
            unix_socket: None,
            username: None,
            password: None,
            credentials: None,
            credentials_refresh: Duration::from_secs(300),
            database: 0,
            protocol: Protocol::Resp2,
            client_name: Some("steadfast".to_owned()),
            resolver: Arc::new(SystemResolver),
            role: ExpectedRole::Primary,
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("unix_socket", &self.unix_socket)
            .field("username", &self.username)
            .field("password", &self.password)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "provider"),
            )
            .field("database", &self.database)
            .field("protocol", &self.protocol)
            .field("client_name", &self.client_name)
            .field("resolver", &self.resolver)
            .field("role", &self.role)
            .finish()
    }
}

/// The wire protocol spoken after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// RESP2: redis-rs's default replies (the default here too).
    Resp2,
    /// RESP3 (`HELLO 3`): maintenance push notifications arrive on the same connection, and
    /// replies keep RESP3's types (maps, sets, doubles, booleans).
    Resp3,
}

/// TLS with rustls.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Use TLS. Default: `false`; `rediss://` sets it.
    pub is_enabled: bool,
    /// The name to verify the certificate against and send as SNI. Default: `None`, meaning
    /// `endpoint.host`; it stays the same whatever address the name resolves to, so reconnects
    /// after a failover verify the same name.
    pub server_name: Option<String>,
    /// Which certificate authorities are trusted. Default: [`TlsRoots::WebPki`].
    pub roots: TlsRoots,
    /// A client certificate for mutual TLS. Default: `None`.
    pub client_identity: Option<ClientIdentity>,
    /// Whether the server's certificate is checked. Default: [`TlsVerification::Full`].
    pub verification: TlsVerification,
}

/// Trusted certificate authorities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's roots, bundled (`webpki-roots`): the same everywhere, no system files needed.
    #[default]
    WebPki,
    /// The operating system's store (`rustls-native-certs`).
    Platform,
    /// Only the PEM certificates in this file (a private CA, a managed service's bundle).
    CaFile(std::path::PathBuf),
}

/// A client certificate and its key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub certificate_file: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

/// Whether the server's certificate is verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVerification {
    /// Chain and name are verified.
    #[default]
    Full,
    /// Any certificate is accepted: encryption without authentication. For tests and
    /// emergencies only; anyone on the path can impersonate the server.
    InsecureAcceptAnyCertificate,
}

/// How one connection attempt is made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectConfig {
    /// Bound on one attempt: resolving, dialling every address and the handshake.
    /// Default: 5 s (Azure guidance: shorter makes an overloaded server worse).
    pub connect_timeout: Duration,
    /// `TCP_NODELAY`: send every write at once instead of letting Nagle coalesce small writes
    /// while replies are outstanding. Default: `false`, as redis-rs: measured on loopback with 16
    /// commands in flight, `true` cut throughput to 0.62x (every command its own packet) and
    /// gained nothing at 1 or 256 in flight; each command is written whole and its reply carries
    /// the ACK, so Nagle adds no delay to a multiplexed link.
    pub tcp_nodelay: bool,
    /// `TCP_USER_TIMEOUT`: unacknowledged data older than this kills the socket, so a path that
    /// stopped answering fails in seconds instead of Linux's 13-15 minutes (`tcp_retries2`).
    /// Default: 5 s.
    pub tcp_user_timeout: Duration,
    /// TCP keepalive: idle time before the first probe. Default: 15 s (backstop for idle links and
    /// NAT or load-balancer state).
    pub keepalive_idle: Duration,
    /// TCP keepalive: time between probes. Default: 5 s.
    pub keepalive_interval: Duration,
    /// TCP keepalive: unanswered probes before the kernel drops the socket. Default: 3.
    pub keepalive_count: u32,
    /// While no SYN of an attempt has been answered, a fresh one is sent this often (each socket
    /// lives at most 1 s), so a path that heals is used within this interval rather than at the
    /// kernel's next retransmission (1, 3, 7 s ...). Default: 100 ms (at most 10 SYNs a second to
    /// a host that does not answer; none once it does).
    pub syn_interval: Duration,
    /// A name with several addresses: the next address is dialled this long after the previous
    /// one if that one has not connected yet, the earlier attempts going on (RFC 8305's
    /// "Connection Attempt Delay"); an address that failed goes last for 30 s. Default: 100 ms (a
    /// connect inside a region takes well under 10 ms, so an address silent for 100 ms is most
    /// likely dead; RFC 8305 recommends 250 ms for the open Internet and no less than 100 ms).
    /// Zero dials every address at once.
    pub address_stagger: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            tcp_nodelay: false,
            tcp_user_timeout: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            keepalive_count: 3,
            syn_interval: Duration::from_millis(100),
            address_stagger: Duration::from_millis(100),
        }
    }
}

/// How a dead link is told from a slow one; see [`health`](crate::health).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HealthConfig {
    /// A link with nothing in flight for this long gets a `PING`. Default: 1 s (also keeps
    /// Azure's 10-minute idle timeout away).
    pub ping_interval: Duration,
    /// Commands in flight and no byte read for this long makes the link *suspect*: the name is
    /// checked again and a probe on a fresh connection judges the link. Default: 1 s (a dead link
    /// is suspected within 1.1 s; suspicion alone never drops a link, so slow commands are safe).
    pub read_stall: Duration,
    /// Bound on the probe's own connection and questions. Default: 1 s.
    pub probe_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(1),
            read_stall: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// When a lost link is replaced, and how often the client tries again.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// First backoff step after a failed attempt that reached a server. Default: 100 ms.
    pub backoff_initial: Duration,
    /// Cap of the exponential backoff. Default: 5 s.
    pub backoff_max: Duration,
    /// Delay between attempts while the server's host refuses the connection (nothing listens
    /// on the port: a restart in progress). A refused SYN costs the server nothing, so the
    /// client checks often and is back within this delay of the server listening again.
    /// Jittered between half and all of it. Also the poll of a server that answers "not ready"
    /// (`LOADING` while it reads its dataset, `MASTERDOWN`, `BUSY`): one `PING` per link this
    /// often, commands sent again as soon as it answers. Default: 50 ms, so a restarted server is
    /// served within ~50 ms of listening again, and of finishing its load.
    pub refused_retry: Duration,
    /// Force reconnect: errors for this long with no success replaces the link even though it
    /// looks alive (Azure's `ReconnectErrorThreshold`). Default: 30 s.
    pub force_after_errors_for: Duration,
    /// Force reconnect at most once per this interval (Azure's `ReconnectMinInterval`).
    /// Default: 60 s.
    pub force_min_interval: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            refused_retry: Duration::from_millis(50),
            force_after_errors_for: Duration::from_secs(30),
            force_min_interval: Duration::from_secs(60),
        }
    }
}

/// What happens to each command: its deadline, its wait for a link, its retries.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CommandConfig {
    /// One deadline per command, covering the wait for a link, every retry and the reply.
    /// Default: 5 s (Azure: start below 5 s).
    pub deadline: Duration,
    /// Commands that may wait for a link at once; more fail at once with
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull). Default: 10 000.
    pub queue_capacity: usize,
    /// Send again every command whose outcome is unknown (written, then the link died), not only
    /// the idempotent ones. Default: `false`: a non-idempotent command is never applied twice.
    pub is_retry_ambiguous_allowed: bool,
    /// Dedicated links for blocking commands (`BLPOP`, `XREAD BLOCK`, `WAIT` ...), made on
    /// first use and kept: a blocked command never sits on the shared link, where every other
    /// command would queue behind it on the server. A blocking command waits, within its
    /// deadline, while all of them are busy. Default: 16 (one per queue worker; raise it to the
    /// number of callers that block at once).
    pub blocking_links: usize,
    /// Dedicated links lent to [`Session`](crate::Session)s (`WATCH` ... `EXEC`), one per
    /// session while it is held. Default: 16.
    pub session_links: usize,
    /// Deliveries a [`Subscriber`](crate::pubsub::Subscriber) keeps for an application that
    /// has not read them yet; beyond that newer messages are dropped, counted, and told with a
    /// slow-consumer gap in the stream. Default: 10 000.
    pub subscriber_buffer: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            queue_capacity: 10_000,
            is_retry_ambiguous_allowed: false,
            blocking_links: 16,
            session_links: 16,
            subscriber_buffer: 10_000,
        }
    }
}

/// Parses `value` of `field` with `T`'s `FromStr`, naming both in the error.
pub(crate) fn parse_choice<T: std::str::FromStr<Err = &'static str>>(
    field: &str,
    value: &str,
) -> Result<T, Error> {
    value
        .parse()
        .map_err(|expected| Error::invalid_config(field, value, expected))
}

impl Config {
    /// Parses a `redis://` URL into a config with every other field at its default.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the part of the URL
    /// that is wrong; a password in the URL is never repeated in the message.
    pub fn from_url(input: &str) -> Result<Self, Error> {
        let (endpoint, is_tls, settings) = url::parse_with_settings(input)?;
        let mut config = Self {
            endpoint,
            ..Self::default()
        };
        config.tls.is_enabled = is_tls;
        for setting in settings {
            match setting {
                url::Setting::ConnectTimeout(d) => config.connect.connect_timeout = d,
                url::Setting::CommandTimeout(d) => config.command.deadline = d,
                url::Setting::TlsServerName(name) => config.tls.server_name = Some(name),
                url::Setting::TlsCaFile(path) => config.tls.roots = TlsRoots::CaFile(path),
                url::Setting::TlsInsecure(is_insecure) => {
                    config.tls.verification = if is_insecure {
                        TlsVerification::InsecureAcceptAnyCertificate
                    } else {
                        TlsVerification::Full
                    };
                }
                url::Setting::Maintenance(mode) => config.maintenance.mode = mode,
                url::Setting::AzureEvents(choice) => config.maintenance.azure_events = choice,
                url::Setting::ReadFrom(choice) => config.cluster.read_from = choice,
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the first bad field
    /// and its value.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("connect.connect_timeout", self.connect.connect_timeout),
            ("connect.tcp_user_timeout", self.connect.tcp_user_timeout),
            ("connect.syn_interval", self.connect.syn_interval),
            ("connect.keepalive_idle", self.connect.keepalive_idle),
            (
                "connect.keepalive_interval",
                self.connect.keepalive_interval,
            ),
            ("health.ping_interval", self.health.ping_interval),
            (
                "endpoint.credentials_refresh",
                self.endpoint.credentials_refresh,
            ),
            ("health.read_stall", self.health.read_stall),
            ("health.probe_timeout", self.health.probe_timeout),
            ("reconnect.backoff_initial", self.reconnect.backoff_initial),
            ("reconnect.backoff_max", self.reconnect.backoff_max),
            ("reconnect.refused_retry", self.reconnect.refused_retry),
            ("command.deadline", self.command.deadline),
            (
                "maintenance.relaxed_timeout",
                self.maintenance.relaxed_timeout,
            ),
            ("maintenance.relaxed_cap", self.maintenance.relaxed_cap),
            ("maintenance.hold_limit", self.maintenance.hold_limit),
        ];
        if self.maintenance.mode == MaintenanceMode::Enabled
            && self.endpoint.protocol == Protocol::Resp2
        {
            let why = "maintenance notifications are RESP3 pushes: set endpoint.protocol = Resp3";
            return Err(Error::invalid_config("maintenance.mode", "Enabled", why));
        }
        for (field, value) in positive {
            if value.is_zero() {
                return Err(Error::invalid_config(
                    field,
                    "0s",
                    "must be greater than zero",
                ));
            }
        }
        if self.reconnect.backoff_max < self.reconnect.backoff_initial {
            return Err(Error::invalid_config(
                "reconnect.backoff_max",
                &format!("{:?}", self.reconnect.backoff_max),
                "must not be below reconnect.backoff_initial",
            ));
        }
        if let Some(path) = &self.endpoint.unix_socket
            && self.tls.is_enabled
        {
            return Err(Error::invalid_config(
                "tls.is_enabled",
                &format!("true with unix socket {}", path.display()),
                "TLS over a Unix socket is not supported",
            ));
        }
        if self.endpoint.host.is_empty() && self.endpoint.unix_socket.is_none() {
            return Err(Error::invalid_config(
                "endpoint.host",
                "\"\"",
                "must not be empty",
            ));
        }
        if self.endpoint.port == 0 {
            return Err(Error::invalid_config(
                "endpoint.port",
                "0",
                "must be 1-65535",
            ));
        }
        if self.endpoint.database < 0 {
            return Err(Error::invalid_config(
                "endpoint.database",
                &self.endpoint.database.to_string(),
                "must not be negative",
            ));
        }
        if self.connect.keepalive_count == 0 {
            return Err(Error::invalid_config(
                "connect.keepalive_count",
                "0",
                "must be at least 1",
            ));
        }
        self.cluster.validate()?;
        let counts = [
            ("command.queue_capacity", self.command.queue_capacity),
            ("command.blocking_links", self.command.blocking_links),
            ("command.session_links", self.command.session_links),
            ("command.subscriber_buffer", self.command.subscriber_buffer),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, count)| *count == 0) {
            return Err(Error::invalid_config(field, "0", "must be at least 1"));
        }
        Ok(())
    }

    /// `host:port` as written in the config, for messages.
    pub(crate) fn endpoint_label(&self) -> String {
        match &self.endpoint.unix_socket {
            Some(path) => format!("unix:{}", path.display()),
            None => format!("{}:{}", self.endpoint.host, self.endpoint.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn default_config_is_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn zero_deadline_is_rejected_naming_the_field() {
        let mut config = Config::default();
        config.command.deadline = Duration::ZERO;
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("command.deadline"), "{err}");
    }

    #[test]
    fn backoff_cap_below_initial_is_rejected() {
        let mut config = Config::default();
        config.reconnect.backoff_max = Duration::from_millis(10);
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("reconnect.backoff_max"), "{err}");
    }

    #[test]
    fn password_never_shows_in_debug_output() {
        let mut config = Config::default();
        config.endpoint.password = Some(Password::new("hunter2-secret"));
        let printed = format!("{config:?} {:?}", config.endpoint);
        assert!(!printed.contains("hunter2-secret"), "{printed}");
        assert!(printed.contains("***"));
    }
}
