//! `steadfast proxy`: a local RESP server that gives any Redis client, in any language,
//! steadfast's failover behaviour.
//!
//! Each downstream connection is served by the library's own machinery (supervisor, health,
//! retry policy, maintenance reactions), whose links carry its state (database, name,
//! protocol ...) onto every new upstream link; what cannot be carried over is told, never
//! hidden.

pub mod resp;
