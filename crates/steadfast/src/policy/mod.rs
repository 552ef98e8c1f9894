//! What the command path decides by, as pure functions of a command or an error: a command's
//! name ([`name`]), what it does to the link it runs on ([`effect`]), whether it may be sent
//! twice ([`idempotent`]), and what a failed attempt means ([`retry`]).
//!
//! Leaves: the command path, the cluster router and the handshake use them; they use nothing
//! of the crate's but errors.

pub(crate) mod effect;
pub(crate) mod idempotent;
pub(crate) mod name;
pub(crate) mod retry;
