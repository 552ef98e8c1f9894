//! The routing table the cluster client reads on every command: slot -> shard, shard -> primary
//! and replicas. Built from a chosen [`View`]; patched in place by `MOVED` until the next
//! refresh replaces it.
//!
//! # Behaviour
//! - A node the view lists without a host (the server does not know its own address yet) gets
//!   the host of the node that answered.
//! - Replicas flagged failing are kept but marked, so replica reads can skip them.
//! - `MOVED slot node`: the slot now belongs to the shard whose primary is `node`, a new shard if
//!   no shard has that primary; nothing else changes.

use super::SLOTS;
use super::redirect::NodeAddress;
use super::topology::View;

const UNCOVERED: u16 = u16::MAX;

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replica {
    pub(crate) address: NodeAddress,
    pub(crate) is_failing: bool,
}

/// A primary and its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) primary: NodeAddress,
    pub(crate) replicas: Vec<Replica>,
}

/// Slot -> shard.
#[derive(Clone, Debug)]
pub(crate) struct Routing {
    pub(crate) epoch: u64,
    pub(crate) shards: Vec<Shard>,
    slots: Vec<u16>,
}

impl Routing {
    /// A table with no shard: every slot uncovered.
    pub(crate) fn empty() -> Self {
        Self {
            epoch: 0,
            shards: Vec::new(),
            slots: vec![UNCOVERED; usize::from(SLOTS)],
        }
    }

    /// Every node of the table: each shard's primary, then its replicas.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &NodeAddress> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter().map(|r| &r.address)))
    }

    /// Whether `other` says the same: epoch, every slot's primary, every shard's replicas and
    /// their failing flags.
    pub(crate) fn agrees_with(&self, other: &Routing) -> bool {
        self.epoch == other.epoch
            && self.shards.len() == other.shards.len()
            && !self.layout_differs(other)
            && self.shards.iter().all(|shard| {
                other.shards.iter().any(|theirs| {
                    theirs.primary == shard.primary
                        && theirs.replicas.len() == shard.replicas.len()
                        && shard.replicas.iter().all(|r| theirs.replicas.contains(r))
                })
            })
    }

    /// Whether some slot has a different primary in `other`.
    pub(crate) fn layout_differs(&self, other: &Routing) -> bool {
        (0..SLOTS).any(|slot| {
            self.shard_for(slot).map(|s| &s.primary) != other.shard_for(slot).map(|s| &s.primary)
        })
    }

    /// The table of `view`, which `answering` sent.
    pub(crate) fn from_view(view: &View, answering: &NodeAddress) -> Self {
        let fill = |address: &NodeAddress| NodeAddress {
            host: address.host.clone().or_else(|| answering.host.clone()),
            port: address.port,
        };
        let mut shards: Vec<Shard> = Vec::new();
        let mut slots = vec![UNCOVERED; usize::from(SLOTS)];
        let layout = view.layout();
        for (slot, owner) in layout.iter().enumerate() {
            let Some(owner) = owner else { continue };
            let primary = fill(owner);
            let index = match shards.iter().position(|s| s.primary == primary) {
                Some(index) => index,
                None => {
                    let id = view
                        .nodes
                        .iter()
                        .find(|n| n.is_primary && &n.address == *owner)
                        .map(|n| n.id.as_str())
                        .unwrap_or_default();
                    shards.push(Shard {
                        primary,
                        replicas: view
                            .replicas_of(id)
                            .map(|r| Replica {
                                address: fill(&r.address),
                                is_failing: r.is_failing,
                            })
                            .collect(),
                    });
                    shards.len() - 1
                }
            };
            slots[slot] = u16::try_from(index).unwrap_or(UNCOVERED);
        }
        Self {
            epoch: view.epoch,
            shards,
            slots,
        }
    }

    /// The shard serving `slot`, if any.
    pub(crate) fn shard_for(&self, slot: u16) -> Option<&Shard> {
        let index = *self.slots.get(usize::from(slot))?;
        self.shards.get(usize::from(index))
    }

    /// How many slots no shard serves.
    pub(crate) fn uncovered(&self) -> usize {
        self.slots.iter().filter(|&&s| s == UNCOVERED).count()
    }

    /// Applies `MOVED slot to`.
    pub(crate) fn moved(&mut self, slot: u16, to: NodeAddress) {
        if slot >= SLOTS {
            return;
        }
        let index = match self.shards.iter().position(|s| s.primary == to) {
            Some(index) => index,
            None => {
                self.shards.push(Shard {
                    primary: to,
                    replicas: Vec::new(),
                });
                self.shards.len() - 1
            }
        };
        self.slots[usize::from(slot)] = u16::try_from(index).unwrap_or(UNCOVERED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn address(host: &str, port: u16) -> NodeAddress {
        NodeAddress {
            host: Some(host.into()),
            port,
        }
    }

    fn routing() -> Routing {
        let view = View::parse(&format!(
            "{A} :6379@16379 myself,master - 0 0 1 connected 0-8191\n\
             {B} 10.0.0.2:6379@16379 master - 0 0 2 connected 8192-16000\n\
             cccccccccccccccccccccccccccccccccccccccc 10.0.0.3:6379@16379 slave {A} 0 0 1 connected\n\
             dddddddddddddddddddddddddddddddddddddddd 10.0.0.4:6379@16379 slave,fail {B} 0 0 2 connected\n"
        ))
        .unwrap();
        Routing::from_view(&view, &address("10.0.0.1", 6379))
    }

    #[test]
    fn every_slot_maps_to_its_primary_and_a_missing_host_is_the_answering_nodes() {
        let r = routing();
        assert_eq!(r.epoch, 2);
        assert_eq!(r.shards.len(), 2);
        assert_eq!(
            r.shard_for(0).map(|s| &s.primary),
            Some(&address("10.0.0.1", 6379))
        );
        assert_eq!(
            r.shard_for(8192).map(|s| &s.primary),
            Some(&address("10.0.0.2", 6379))
        );
        assert_eq!(r.uncovered(), 16384 - 16001);
        assert!(r.shard_for(16001).is_none());
    }

    #[test]
    fn replicas_belong_to_their_primarys_shard_with_their_failure_flag() {
        let r = routing();
        let first = r.shard_for(0).unwrap();
        assert_eq!(
            first.replicas,
            [Replica {
                address: address("10.0.0.3", 6379),
                is_failing: false
            }]
        );
        let second = r.shard_for(9000).unwrap();
        assert!(second.replicas[0].is_failing);
    }

    #[test]
    fn a_table_agrees_with_its_copy_and_not_with_a_moved_slot_or_a_replica_failing() {
        let r = routing();
        assert!(r.agrees_with(&routing()));
        let mut moved = routing();
        moved.moved(5, address("10.0.0.2", 6379));
        assert!(!r.agrees_with(&moved));
        let mut failing = routing();
        failing.shards[0].replicas[0].is_failing = true;
        assert!(!r.agrees_with(&failing));
        let mut later = routing();
        later.epoch += 1;
        assert!(!r.agrees_with(&later));
    }

    #[test]
    fn moved_repoints_one_slot_to_a_known_or_new_primary() {
        let mut r = routing();
        r.moved(5, address("10.0.0.2", 6379));
        assert_eq!(
            r.shard_for(5).map(|s| &s.primary),
            Some(&address("10.0.0.2", 6379))
        );
        assert_eq!(r.shards.len(), 2, "known primary: no new shard");
        r.moved(16001, address("10.0.0.9", 6379));
        assert_eq!(r.shards.len(), 3);
        assert_eq!(
            r.shard_for(16001).map(|s| &s.primary),
            Some(&address("10.0.0.9", 6379))
        );
        assert_eq!(
            r.shard_for(6).map(|s| &s.primary),
            Some(&address("10.0.0.1", 6379))
        );
        r.moved(16384, address("10.0.0.9", 6379));
        assert_eq!(r.uncovered(), 16384 - 16001 - 1);
    }
}
