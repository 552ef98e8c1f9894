//! # steadfast
//!
//! A Redis and Valkey client layer that keeps working through failovers, planned maintenance and
//! network faults by itself, with defaults that need no tuning.
//!
//! A redis-rs user switches by changing one constructor: [`Client`] implements
//! [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method and
//! [`redis::Pipeline::query_async`] work on it unchanged.
//!
//! ```no_run
//! use redis::AsyncCommands;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Returns at once, even if the server is down: the client keeps trying.
//!     let mut client = steadfast::Client::open("redis://127.0.0.1:6379")?;
//!     let mut events = client.events();
//!     tokio::spawn(async move {
//!         while let Ok(event) = events.recv().await {
//!             eprintln!("steadfast: {event:?}");
//!         }
//!     });
//!     let _: () = client.set("key", "value").await?;
//!     let value: String = client.get("key").await?;
//!     assert_eq!(value, "value");
//!     client.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Layout
//!
//! Every module, by layer: a module names only modules of a lower row (or files of its own
//! folder), and nothing below the client names `client` or `cluster` (the `layers` test reads
//! the sources and checks both).
//!
//! | row | module | what it owns |
//! |---|---|---|
//! | 6 | [`cluster`] | the cluster router over node clients: slots, redirections, a pure per-attempt decision, per-shard breakers, topology upkeep, maintenance per shard |
//! | 5 | [`Client`] (`client`) | the handle: builds the parts, spawns the workers, commands in, events out, shutdown |
//! | 4 | `command` | one deadline per command, waiting for a link, acting on the retry policy, the link journal's records, readiness polls; blocking commands on dedicated links (unblocking abandoned ones); [`Session`]s for `WATCH` ... `EXEC` |
//! | 4 | [`pubsub`] | [`pubsub::Subscriber`]: subscriptions made again on every new link, gap markers where messages may be missing |
//! | 4 | [`health`] | heartbeat, read-progress watchdog, and the probe that tells slow from dead: a pure machine and its driver |
//! | 4 | [`maintenance`] | acting on announced maintenance: the push listener, the Azure events watch |
//! | 4 | `reauth` | re-authenticating the live link before its credentials expire |
//! | 3 | `shared` | what a client's clones share (the supervisor's handle, the timeouts in force, the emitter, the queue, the dedicated links it lends), and the parts a worker gets (the published link, the reporter, the emitter) |
//! | 3 | `supervisor` | the only owner of the link: state machine, backoff, single-flight reconnect, force reconnect; its handle |
//! | 2 | [`connect`] | resolving (every attempt), dialling with socket options, TLS, the handshake, the link |
//! | 1 | [`config`] | plain-data settings with documented defaults; URL, TOML, environment, connection strings |
//! | 0 | `policy` | pure rules: command names, effects, idempotency, retry classes |
//! | 0 | `notices` | maintenance notifications as data (public as [`maintenance::push`], [`maintenance::azure`]) and the reactor's rules |
//! | 0 | `endpoint` | addresses ([`connect::Address`]), resolvers ([`connect::resolve`]), credentials ([`connect::credentials`], [`Password`]) |
//! | 0 | `emitter` | the one way events go out: metrics, tracing, broadcast |
//! | 0 | [`Event`], [`Error`], [`health::Verdict`] | what the client tells the application |
//! | 0 | [`metrics`] | every metric name, recorded through the `metrics` facade |
//!
//! ```text
//! caller -> Client -> command: deadline -> wait for a link -> link -> retry policy
//!                                               ^
//! health (watchdog, probe) -- verdict ----------+--> supervisor -> connector: resolve, dial,
//! READONLY / closed socket / force policy -------+                 socket options, handshake
//! ```
//!
//! ## Glossary
//! - **link**: one live connection with its generation, address and traffic record.
//! - **generation**: the number of a link; every new link gets the next one.
//! - **primary / replica**: the server roles (`ROLE` answers `master` / `slave`).
//! - **ambiguous**: a command written before its link died; it may have been applied.
//! - **suspect / verdict**: a stalled link is suspect; only a probe's verdict condemns it.

pub mod cluster;
pub mod config;
pub mod connect;
pub mod health;
pub mod maintenance;
pub mod metrics;
pub mod pubsub;

mod backoff;
#[doc(hidden)]
pub mod bench_api;
mod client;
mod command;
mod emitter;
mod endpoint;
mod error;
mod event;
#[doc(hidden)]
pub mod fuzz_api;
mod notices;
mod policy;
mod reauth;
mod shared;
mod supervisor;
mod verdict;

pub use client::{Client, Forwarded};
pub use command::session::Session;
pub use config::{
    AzureEvents, ClientIdentity, ClusterConfig, CommandConfig, Config, ConnectConfig,
    EndpointConfig, ExpectedRole, HealthConfig, MaintenanceConfig, MaintenanceMode,
    MovingEndpointType, Password, Protocol, ReadFrom, ReconnectConfig, TlsConfig, TlsRoots,
    TlsVerification,
};
pub use error::{Error, ErrorKind, RedisErrorExt};
pub use event::{Abandoned, DisconnectReason, Event, LinkState, MaintenanceNotice, Role};

/// Whether sending `cmd` twice leaves the server and the reply as sending it once: the rule by
/// which the retry policy sends a command again after an ambiguous failure (written, then the
/// link died). For code that sends commands on the library's behalf, such as the proxy.
///
/// ```
/// assert!(steadfast::is_idempotent(redis::cmd("GET").arg("k")));
/// assert!(steadfast::is_idempotent(redis::cmd("SET").arg("k").arg("v")));
/// assert!(!steadfast::is_idempotent(redis::cmd("INCR").arg("k")));
/// assert!(!steadfast::is_idempotent(redis::cmd("SET").arg("k").arg("v").arg("NX")));
/// ```
pub fn is_idempotent(cmd: &redis::Cmd) -> bool {
    policy::idempotent::is_idempotent(cmd)
}

/// Whether `cmd` may go on a link shared with other callers: it changes nothing of the link's
/// own state (`SELECT`, `CLIENT SETNAME`, `HELLO` ...), does not block (`BLPOP`, `XREAD ...
/// BLOCK`, `WAIT` ...), and is no part of a transaction or a subscription. For code that sends
/// other callers' commands, such as the proxy, which sends such commands of every connection
/// on one shared client and gives a connection a client of its own at its first other one.
///
/// ```
/// assert!(steadfast::is_shareable(redis::cmd("GET").arg("k")));
/// assert!(steadfast::is_shareable(redis::cmd("INCR").arg("k")));
/// assert!(!steadfast::is_shareable(redis::cmd("SELECT").arg(2)));
/// assert!(!steadfast::is_shareable(redis::cmd("BLPOP").arg("jobs").arg(5)));
/// assert!(!steadfast::is_shareable(redis::cmd("WATCH").arg("k")));
/// assert!(!steadfast::is_shareable(redis::cmd("SUBSCRIBE").arg("news")));
/// ```
pub fn is_shareable(cmd: &redis::Cmd) -> bool {
    policy::effect::effect(cmd) == policy::effect::Effect::None
}

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
