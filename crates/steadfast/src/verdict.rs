//! What the health probe concluded about a stalled link: the one word that may condemn a link.
//!
//! A leaf: events carry it, the health monitor reaches it, the supervisor acts on it.

/// What a probe on a fresh connection concluded about a stalled link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The link is dead; it is replaced. The text says how the probe knew.
    Dead(String),
    /// The endpoint's name moved to another server while the link's own still answers (a
    /// planned failover, a coordinated `FAILOVER`): the link is replaced, the new one made
    /// before the old one is closed, and the commands in flight on the old one finish there
    /// (a reply, or a refusal such as `READONLY` that may be sent again), never cut off.
    Moved(String),
    /// The server is alive and busy with our command; the link is kept.
    Alive(String),
    /// Nothing better could be reached; the link is kept and probed again later.
    Unknown(String),
}
