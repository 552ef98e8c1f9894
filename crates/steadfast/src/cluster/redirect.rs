//! `MOVED` and `ASK` redirections, read from a server's error reply.
//!
//! # Behaviour
//! - `MOVED <slot> <host>:<port>`: the slot lives elsewhere for good; the map is updated and a
//!   refresh is scheduled.
//! - `ASK <slot> <host>:<port>`: this one command goes to that node, preceded by `ASKING`; the map
//!   is not touched (the slot is being migrated).
//! - The host may be an IPv4 address, a bracketed or bare IPv6 address, or a name; an empty host
//!   or `?` means "the node that answered" (Redis 7 with an unknown preferred endpoint).
//! - Anything else is not a redirection: [`Redirect::parse`] returns `None`, never panics.

pub use crate::endpoint::NodeAddress;

/// Which redirection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectKind {
    /// The slot moved for good.
    Moved,
    /// One command, during a migration.
    Ask,
}

/// A parsed `MOVED` or `ASK` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `MOVED` or `ASK`.
    pub kind: RedirectKind,
    /// The slot the command's keys hash to.
    pub slot: u16,
    /// The node to ask.
    pub to: NodeAddress,
}

impl Redirect {
    /// Reads an error reply such as `MOVED 3999 127.0.0.1:6381` (the leading `-` of the wire form
    /// may be present or not).
    ///
    /// ```
    /// use steadfast::cluster::{Redirect, RedirectKind};
    /// let r = Redirect::parse("MOVED 3999 10.0.0.7:6379").unwrap();
    /// assert_eq!((r.kind, r.slot, r.to.port), (RedirectKind::Moved, 3999, 6379));
    /// assert!(Redirect::parse("WRONGTYPE Operation against a key").is_none());
    /// ```
    pub fn parse(reply: &str) -> Option<Self> {
        let reply = reply.strip_prefix('-').unwrap_or(reply).trim_end();
        let mut words = reply.split(' ');
        let kind = match words.next()? {
            "MOVED" => RedirectKind::Moved,
            "ASK" => RedirectKind::Ask,
            _ => return None,
        };
        let slot: u16 = words.next()?.parse().ok()?;
        if slot >= super::SLOTS {
            return None;
        }
        let to = parse_address(words.next()?)?;
        if words.next().is_some() {
            return None;
        }
        Some(Self { kind, slot, to })
    }
}

/// Reads `host:port`, `[v6]:port` or `v6:port` (the port is after the last colon).
pub(crate) fn parse_address(text: &str) -> Option<NodeAddress> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = match host {
        "" | "?" => None,
        h if h.chars().any(|c| c.is_whitespace() || c.is_control()) => return None,
        h => Some(h.into()),
    };
    Some(NodeAddress { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn address(host: &str, port: u16) -> NodeAddress {
        NodeAddress {
            host: Some(host.into()),
            port,
        }
    }

    #[test]
    fn moved_and_ask_are_read_with_their_slot_and_node() {
        assert_eq!(
            Redirect::parse("-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect {
                kind: RedirectKind::Moved,
                slot: 3999,
                to: address("127.0.0.1", 6381)
            })
        );
        assert_eq!(
            Redirect::parse("ASK 0 node-3.example:6379").map(|r| (r.kind, r.to)),
            Some((RedirectKind::Ask, address("node-3.example", 6379)))
        );
    }

    #[test]
    fn ipv6_hosts_are_read_with_or_without_brackets() {
        let bracketed = Redirect::parse("MOVED 1 [::1]:6379").map(|r| r.to);
        let bare = Redirect::parse("MOVED 1 ::1:6379").map(|r| r.to);
        assert_eq!(bracketed, Some(address("::1", 6379)));
        assert_eq!(bare, Some(address("::1", 6379)));
    }

    #[test]
    fn an_empty_or_unknown_host_means_the_answering_node() {
        let to = Redirect::parse("MOVED 5 :6380").map(|r| r.to);
        assert_eq!(
            to,
            Some(NodeAddress {
                host: None,
                port: 6380
            })
        );
        let to = Redirect::parse("MOVED 5 ?:6380").map(|r| r.to);
        assert_eq!(
            to,
            Some(NodeAddress {
                host: None,
                port: 6380
            })
        );
    }

    #[test]
    fn malformed_redirections_are_not_redirections() {
        for reply in [
            "MOVED",
            "MOVED 16384 127.0.0.1:6379",
            "MOVED -1 127.0.0.1:6379",
            "MOVED 1 127.0.0.1",
            "MOVED 1 127.0.0.1:70000",
            "MOVED 1 127.0.0.1:6379 extra",
            "moved 1 127.0.0.1:6379",
            "ERR unknown command",
        ] {
            assert_eq!(Redirect::parse(reply), None, "{reply}");
        }
    }

    proptest! {
        #[test]
        fn any_reply_parses_or_is_refused_without_panicking(reply in "\\PC{0,80}") {
            let _ = Redirect::parse(&reply);
        }

        #[test]
        fn a_written_redirection_reads_back(slot in 0u16..16384, port: u16, host in "[a-z0-9.-]{1,30}") {
            let parsed = Redirect::parse(&format!("ASK {slot} {host}:{port}"));
            prop_assert_eq!(parsed, Some(Redirect { kind: RedirectKind::Ask, slot, to: address(&host, port) }));
        }
    }
}
