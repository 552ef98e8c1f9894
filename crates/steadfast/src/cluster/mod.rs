//! Redis Cluster: key slots, redirections, topology views, and the [`ClusterClient`] that
//! routes over one core [`Client`](crate::Client) per node.
//!
//! The pure parts read what a server sends and never panic on it; the router's decisions are
//! pure functions with their own tables of tests; the tasks only carry them out.
//!
//! | file | what it holds |
//! |---|---|
//! | `slot`, `keys`, `multikey` | key slots, a command's keys, multi-key commands split per slot |
//! | `redirect`, `topology`, `routing` | `MOVED` / `ASK`, `CLUSTER NODES` views, the routing table |
//! | `client` | [`ClusterClient`]: connect, `query`, `events`, `ConnectionLike` |
//! | `router` | the router's parts and the loop that takes a command from slot to reply |
//! | `route` | where an attempt goes: the primary, a replica to read from or to ask in a takeover |
//! | `attempt` | what one attempt came to and the next step (pure, table-tested) |
//! | `request` | a request's slot, whether a replica may serve it, `ASKING` |
//! | `pipeline` | pipelines over several slots: split by node or slot, joined in order |
//! | `nodes` | one node client per node, and the nodes routed around for a while |
//! | `breaker`, `breakers` | one shard's circuit breaker (pure), and the table of them |
//! | `refresh`, `refresher` | the refresh gate (pure), and the background refresh |
//! | `maintenance` | a node announced for maintenance, routed around |
//! | `subscriber` | [`ClusterSubscriber`]: each subscription on the node that serves it, moved with the cluster |
//! | `session` | [`ClusterSession`]: `WATCH` / `MULTI` / `EXEC` for one slot, on the node that serves it |

mod attempt;
mod breaker;
mod breakers;
mod client;
mod keys;
mod maintenance;
mod multikey;
mod nodes;
mod pipeline;
mod redirect;
mod refresh;
mod refresher;
mod request;
mod route;
mod router;
mod routing;
mod session;
mod slot;
mod subscriber;
mod topology;

pub use client::ClusterClient;
pub use keys::{Slot, command_keys, command_slot};
pub use redirect::{NodeAddress, Redirect, RedirectKind};
pub use session::ClusterSession;
pub use slot::{SLOTS, hashed_part, key_slot};
pub use subscriber::ClusterSubscriber;
pub use topology::{Node, ParseError, View, choose};
