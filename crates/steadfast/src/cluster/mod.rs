//! Redis Cluster building blocks: key slots, redirections and topology views.
//!
//! These are the pure parts of cluster mode (issue 8): each reads what a server sends and never
//! panics on it. The cluster client that uses them is built on the same link machinery as
//! [`Client`](crate::Client).

mod breaker;
mod client;
mod keys;
mod multikey;
mod redirect;
mod refresh;
mod routing;
mod slot;
mod topology;

pub use client::ClusterClient;
pub use keys::{Slot, command_keys, command_slot};
pub use redirect::{NodeAddress, Redirect, RedirectKind};
pub use slot::{SLOTS, hashed_part, key_slot};
pub use topology::{Node, ParseError, View, choose};
