//! Planned maintenance: what servers announce ahead of time, and how the client acts on it.
//!
//! # Behaviour
//! - [`push`]: RESP3 push notifications (Redis Software / Redis Cloud): MOVING, MIGRATING,
//!   MIGRATED, FAILING_OVER, FAILED_OVER, SMIGRATING, SMIGRATED.
//! - [`azure`]: Azure Cache for Redis's `AzureRedisEvents` pub/sub messages.
//! - Both parsers are tolerant (every variant seen in the field), never panic, and are fuzzed.

pub mod azure;
pub mod push;
pub(crate) mod reactor;
