//! What names a server and proves who the client is: an endpoint's address, how its name is
//! resolved, credentials.
//!
//! Leaves: the config holds them, the connector uses them, events carry addresses; they use
//! nothing of the crate's but errors. Public as `steadfast::connect::{Address, resolve,
//! credentials}` and `steadfast::Password`.

mod address;
pub mod credentials;
mod node;
pub mod resolve;

pub use address::Address;
pub use node::NodeAddress;
