//! What servers announce ahead of time, as data: RESP3 maintenance push notifications
//! ([`push`]), Azure's `AzureRedisEvents` messages ([`azure`]), and the rules that turn a
//! notification into a reaction ([`reactor`]).
//!
//! Leaves with no state of their own: the connector's push listener, events and the
//! maintenance workers ([`crate::maintenance`]) use them; they use nothing of the crate's. The
//! parsers are public as `steadfast::maintenance::push` and `steadfast::maintenance::azure`.

pub mod azure;
pub mod push;
pub(crate) mod reactor;

/// A maintenance notification as received on one link.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    /// The link it came on (0: a probe's connection, ignored).
    pub(crate) generation: u64,
    pub(crate) notification: push::Notification,
    /// It arrived before the handshake finished (end frames then are replays).
    pub(crate) is_during_handshake: bool,
}

/// How many notifications may wait for the reactor.
pub(crate) const NOTICE_QUEUE: usize = 256;
