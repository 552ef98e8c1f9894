//! `steadfast proxy`: a local RESP server that gives any Redis client, in any language,
//! steadfast's failover behaviour.
//!
//! Each downstream connection is served by the library's own machinery (supervisor, health,
//! retry policy, maintenance reactions): its stateless commands through a client every such
//! connection shares, and once it has state of its own through a client of its own, whose
//! links carry that state (protocol, database, name) onto every new upstream link; what cannot
//! be carried over is told, never hidden.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = steadfast::Config::from_url("redis://primary.example.internal:6379")?;
//! let proxy = steadfast_proxy::Proxy::start(steadfast_proxy::ProxyConfig::new(upstream)).await?;
//! // Applications connect to 127.0.0.1:6379 with any client.
//! tokio::signal::ctrl_c().await?;
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```

mod backend;
mod connection;
pub mod operations;
mod pubsub;
pub mod resp;
mod runtime;
mod server;

pub use operations::Health;
pub use pubsub::GAP_CHANNEL;
pub use runtime::{OwnThread, runtime};
pub use server::{Listen, Proxy, ProxyConfig, StartError};
