//! What the health probe concluded about a stalled link: the one word that may condemn a link.
//!
//! A leaf: events carry it, the health monitor reaches it, the supervisor acts on it.

/// What a probe on a fresh connection concluded about a stalled link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The link is dead; it is replaced. The text says how the probe knew.
    Dead(String),
    /// The server is alive and busy with our command; the link is kept.
    Alive(String),
    /// Nothing better could be reached; the link is kept and probed again later.
    Unknown(String),
}
