//! The cluster's layout as one node sees it (`CLUSTER NODES`), and the choice between the views
//! of several nodes.
//!
//! # Behaviour
//! - [`View::parse`] reads a `CLUSTER NODES` answer: every node's id, address, role, failure
//!   flags, configuration epoch, link state, and the slots each primary serves. Slots being
//!   imported or migrated (`[slot-<-id]`, `[slot->-id]`) are not ownership and are skipped. A
//!   malformed line is an error naming the line, the field and the value, never a panic.
//! - A view's *epoch* is the highest configuration epoch among its primaries: a failover or a
//!   resharding always raises it, so a lower epoch means an older view.
//! - [`choose`] takes the views of up to three nodes and returns the layout most of them report
//!   (slot -> primary address). Tie rule: among the layouts with the most votes, the one with the
//!   highest epoch; then the one covering more slots; then the first answer.
//! - Views older than the current one are refused by the caller with [`View::is_older_than`].

use std::fmt;

use super::SLOTS;
use super::redirect::{NodeAddress, parse_address};

/// One node as a `CLUSTER NODES` line describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's 40-character id.
    pub id: String,
    /// Where it listens; the host is `None` when the server does not know it yet.
    pub address: NodeAddress,
    /// `hostname` announced with `cluster-announce-hostname`, if any.
    pub hostname: Option<String>,
    /// A primary (`master`), else a replica.
    pub is_primary: bool,
    /// For a replica: its primary's id.
    pub primary_id: Option<String>,
    /// Flagged `fail` (agreed by the cluster) or `fail?` (suspected by this node).
    pub is_failing: bool,
    /// The node that answered.
    pub is_myself: bool,
    /// The node's configuration epoch.
    pub config_epoch: u64,
    /// The answering node's cluster bus link to it is up.
    pub is_connected: bool,
    /// Slot ranges it serves, inclusive (primaries only).
    pub slots: Vec<(u16, u16)>,
}

/// A `CLUSTER NODES` answer that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// Which field.
    pub field: &'static str,
    /// The value found (at most 64 characters).
    pub value: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CLUSTER NODES line {}: bad {} {:?}",
            self.line, self.field, self.value
        )
    }
}

impl std::error::Error for ParseError {}

/// The cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Every node listed.
    pub nodes: Vec<Node>,
    /// The highest configuration epoch among the primaries.
    pub epoch: u64,
}

impl View {
    /// Reads a `CLUSTER NODES` answer.
    ///
    /// ```
    /// let view = steadfast::cluster::View::parse(
    ///     "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-16383\n",
    /// ).unwrap();
    /// assert_eq!(view.owner(12182).map(|n| n.address.port), Some(6379));
    /// ```
    ///
    /// # Errors
    /// A line without the eight fixed fields, or with a field that cannot be read.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut nodes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            nodes.push(parse_line(index + 1, line)?);
        }
        let epoch = nodes
            .iter()
            .filter(|n| n.is_primary)
            .map(|n| n.config_epoch)
            .max()
            .unwrap_or(0);
        Ok(Self { nodes, epoch })
    }

    /// The primary serving `slot`, if any. When two primaries claim it (a view caught mid-
    /// failover), the one with the higher configuration epoch, as the cluster itself decides;
    /// on equal epochs, the one listed first.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.is_primary && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .rev()
            .max_by_key(|n| n.config_epoch)
    }

    /// For every slot, the address of its primary (`None` when no primary serves it).
    pub fn layout(&self) -> Vec<Option<&NodeAddress>> {
        let mut layout: Vec<(Option<&NodeAddress>, u64)> = vec![(None, 0); usize::from(SLOTS)];
        for node in self.nodes.iter().filter(|n| n.is_primary) {
            for &(start, end) in &node.slots {
                for slot in &mut layout[usize::from(start)..=usize::from(end)] {
                    if slot.0.is_none() || node.config_epoch > slot.1 {
                        *slot = (Some(&node.address), node.config_epoch);
                    }
                }
            }
        }
        layout.into_iter().map(|(address, _)| address).collect()
    }

    /// How many slots some primary serves.
    pub fn covered_slots(&self) -> usize {
        self.layout().iter().filter(|a| a.is_some()).count()
    }

    /// Whether this view predates `current` (a lower epoch): it must not replace it.
    pub fn is_older_than(&self, current: &View) -> bool {
        self.epoch < current.epoch
    }

    /// The replicas of the primary with `primary_id`.
    pub fn replicas_of<'a>(&'a self, primary_id: &'a str) -> impl Iterator<Item = &'a Node> {
        self.nodes
            .iter()
            .filter(move |n| n.primary_id.as_deref() == Some(primary_id))
    }
}

/// The view most nodes agree on; see the module documentation for the tie rule. `None` when
/// `views` is empty.
pub fn choose(views: &[View]) -> Option<&View> {
    let layouts: Vec<_> = views.iter().map(View::layout).collect();
    let votes: Vec<usize> = layouts
        .iter()
        .map(|mine| layouts.iter().filter(|other| *other == mine).count())
        .collect();
    (0..views.len())
        .max_by(|&a, &b| {
            let key = |i: usize| {
                (
                    votes[i],
                    views[i].epoch,
                    layouts[i].iter().filter(|s| s.is_some()).count(),
                )
            };
            // On a full tie, the earlier answer wins (max_by keeps the last maximum).
            key(a).cmp(&key(b)).then(b.cmp(&a))
        })
        .map(|i| &views[i])
}

fn parse_line(line: usize, text: &str) -> Result<Node, ParseError> {
    let bad = |field: &'static str, value: &str| ParseError {
        line,
        field,
        value: value.chars().take(64).collect(),
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(bad("line (fewer than 8 fields)", text));
    }
    let id = fields[0];
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad("node id", id));
    }
    // ip:port@cport[,hostname]
    let (endpoint, hostname) = match fields[1].split_once(',') {
        Some((endpoint, hostname)) => (
            endpoint,
            (!hostname.is_empty()).then(|| hostname.to_owned()),
        ),
        None => (fields[1], None),
    };
    let endpoint = endpoint.split_once('@').map_or(endpoint, |(e, _)| e);
    let address = parse_address(endpoint).ok_or_else(|| bad("address", fields[1]))?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let is_primary = flags.contains(&"master");
    let primary_id = match fields[3] {
        "-" => None,
        other => Some(other.to_owned()),
    };
    let config_epoch = fields[6]
        .parse()
        .map_err(|_| bad("config epoch", fields[6]))?;
    let is_connected = match fields[7] {
        "connected" => true,
        "disconnected" => false,
        other => return Err(bad("link state", other)),
    };
    let mut slots = Vec::new();
    for entry in &fields[8..] {
        if entry.starts_with('[') {
            continue; // importing / migrating: not ownership
        }
        let (start, end) = entry.split_once('-').unwrap_or((entry, entry));
        let start: u16 = start.parse().map_err(|_| bad("slot", entry))?;
        let end: u16 = end.parse().map_err(|_| bad("slot", entry))?;
        if start > end || end >= SLOTS {
            return Err(bad("slot", entry));
        }
        slots.push((start, end));
    }
    Ok(Node {
        id: id.to_owned(),
        address,
        hostname,
        is_primary,
        primary_id,
        is_failing: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
        is_myself: flags.contains(&"myself"),
        config_epoch,
        is_connected,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn three_shards(epoch_c: u64) -> String {
        format!(
            "{A} 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-5460\n\
             {B} 10.0.0.2:6379@16379,node-b master - 0 0 2 connected 5461-10922 [10923-<-{C}]\n\
             {C} 10.0.0.3:6379@16379 master - 0 0 {epoch_c} connected 10923-16383\n\
             dddddddddddddddddddddddddddddddddddddddd 10.0.0.4:6379@16379 slave {A} 0 0 1 connected\n"
        )
    }

    #[test]
    fn every_slot_has_the_primary_the_answer_names() {
        let view = View::parse(&three_shards(3)).unwrap();
        assert_eq!(view.nodes.len(), 4);
        assert_eq!(view.epoch, 3);
        assert_eq!(view.owner(0).map(|n| n.id.as_str()), Some(A));
        assert_eq!(view.owner(5461).map(|n| n.id.as_str()), Some(B));
        assert_eq!(view.owner(16383).map(|n| n.id.as_str()), Some(C));
        assert_eq!(view.covered_slots(), usize::from(SLOTS));
        assert_eq!(view.nodes[1].hostname.as_deref(), Some("node-b"));
        assert_eq!(view.replicas_of(A).count(), 1);
    }

    #[test]
    fn a_migrating_slot_stays_with_its_owner() {
        let view = View::parse(&three_shards(3)).unwrap();
        assert_eq!(view.owner(10923).map(|n| n.id.as_str()), Some(C));
    }

    #[test]
    fn two_claims_on_a_slot_go_to_the_higher_epoch() {
        let text = format!(
            "{A} 10.0.0.1:6379@16379 master,fail - 0 0 1 connected 0-16383\n\
             {B} 10.0.0.2:6379@16379 master - 0 0 7 connected 0-100\n"
        );
        let view = View::parse(&text).unwrap();
        assert_eq!(view.owner(50).map(|n| n.id.as_str()), Some(B));
        assert_eq!(view.owner(101).map(|n| n.id.as_str()), Some(A));
        assert!(view.nodes[0].is_failing);
        assert_eq!(
            view.layout()[50].map(|a| a.host.clone()),
            Some(Some("10.0.0.2".into()))
        );
        let equal = View::parse(&text.replace(" 0 0 7 ", " 0 0 1 ")).unwrap();
        assert_eq!(
            equal.owner(50).map(|n| n.id.as_str()),
            Some(A),
            "listed first"
        );
        assert_eq!(equal.layout()[50], equal.owner(50).map(|n| &n.address));
    }

    #[test]
    fn the_majority_layout_wins_and_a_tie_goes_to_the_higher_epoch() {
        let old = View::parse(&three_shards(3)).unwrap();
        let moved = format!(
            "{A} 10.0.0.1:6379@16379 master - 0 0 1 connected 0-5460\n\
             {B} 10.0.0.2:6379@16379 master - 0 0 2 connected 5461-10922\n\
             {C} 10.0.0.9:6379@16379 master - 0 0 9 connected 10923-16383\n"
        );
        let new = View::parse(&moved).unwrap();
        let two_old = [old.clone(), new.clone(), old.clone()];
        assert_eq!(choose(&two_old).map(|v| v.epoch), Some(3));
        let tie = [old.clone(), new.clone()];
        assert_eq!(choose(&tie).map(|v| v.epoch), Some(9));
        assert!(old.is_older_than(&new));
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn a_full_tie_goes_to_the_first_answer() {
        let a = View::parse(&three_shards(3)).unwrap();
        let mut b = a.clone();
        b.nodes[0].hostname = Some("marker".into());
        assert_eq!(choose(&[a.clone(), b.clone()]), Some(&a));
        assert_eq!(choose(&[b.clone(), a]), Some(&b));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_field() {
        let err = View::parse("x 10.0.0.1:6379@1 master - 0 0 1 connected 0-99999\n").unwrap_err();
        assert_eq!((err.line, err.field), (1, "slot"));
        let err = View::parse("\nid 10.0.0.1@1 master - 0 0 1 connected\n").unwrap_err();
        assert_eq!((err.line, err.field), (2, "address"));
        let err = View::parse("id 10.0.0.1:1@1 master - 0 0 x connected\n").unwrap_err();
        assert_eq!(err.field, "config epoch");
        assert!(err.to_string().contains("line 1"));
        assert!(View::parse("too short\n").is_err());
    }

    #[test]
    fn a_node_without_an_address_yet_has_no_host() {
        let view = View::parse(&format!("{A} :0@0 master,noaddr - 0 0 0 connected\n")).unwrap();
        assert_eq!(view.nodes[0].address.host, None);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,300}") {
            let _ = View::parse(&text);
        }
    }
}
