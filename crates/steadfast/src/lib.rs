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
//! | module | what it owns |
//! |---|---|
//! | [`Client`] (`client`) | the handle: commands in, events out, shutdown |
//! | [`config`] | plain-data settings with documented defaults; `redis://` URL parsing |
//! | [`connect`] | resolving (every attempt), dialling with socket options, the handshake |
//! | [`health`] | heartbeat, read-progress watchdog, and the probe that tells slow from dead |
//! | `supervisor` | the only owner of the link: state machine, backoff, single-flight reconnect, force reconnect |
//! | `command` | one deadline per command, waiting for a link, the retry policy, idempotency |
//! | [`Event`], [`Error`] | what the client tells the application |
//! | [`metrics`] | every metric name, recorded through the `metrics` facade |
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

#[doc(hidden)]
pub mod bench_api;
mod client;
mod command;
mod emitter;
mod error;
mod event;
mod shared;
mod supervisor;

pub use client::Client;
pub use config::{
    AzureEvents, ClientIdentity, CommandConfig, Config, ConnectConfig, EndpointConfig,
    ExpectedRole, HealthConfig, MaintenanceConfig, MaintenanceMode, MovingEndpointType, Password,
    Protocol, ReadFrom, ReconnectConfig, TlsConfig, TlsRoots, TlsVerification,
};
pub use error::{Error, ErrorKind, RedisErrorExt};
pub use event::{DisconnectReason, Event, LinkState, MaintenanceNotice};
