//! Where a command goes next: one look at the routing table gives the slot's primary, a
//! replica to read from, or (while the primary is unreachable) a replica to ask in turn, one
//! of which may already have taken over.

use std::sync::atomic::Ordering;

use super::keys::Slot;
use super::redirect::NodeAddress;
use super::router::Router;
use super::routing::Replica;

/// Where one attempt goes, from one look at the routing table.
pub(super) struct Route {
    pub(super) target: NodeAddress,
    /// The shard's primary; `None` for an `ASK` target (no shard's breaker applies).
    pub(super) primary: Option<NodeAddress>,
    /// The shard has a replica this command could still ask.
    pub(super) has_replica_to_ask: bool,
    /// A read sent to a replica by choice (`ReadFrom::Replica`), not a takeover probe.
    pub(super) is_replica_read: bool,
    /// The target's node client, when the look found it (saves a second look).
    pub(super) client: Option<crate::Client>,
}

/// What one command has learnt while looking for its slot's owner.
pub(super) struct Search {
    /// A read a replica may serve (`cluster.read_from`).
    pub(super) reads_replica: bool,
    /// Nodes this command found unreachable: while its slot's primary is one of them, the
    /// command asks the shard's replicas, one of which may already have taken over.
    pub(super) unreachable: Vec<NodeAddress>,
    /// Which replica to ask next.
    pub(super) turn: usize,
}

impl Search {
    pub(super) fn mark_unreachable(&mut self, node: NodeAddress) {
        if !self.unreachable.contains(&node) {
            self.unreachable.push(node);
        }
    }
}

impl Router {
    /// Where to send a command for `slot` now, from one look at the table: the slot's primary,
    /// unless this command found it unreachable or its link is down (then it joins the
    /// search's `unreachable`); then, in turn, a replica of its shard that is not failing and
    /// not unreachable. `None`: no shard serves the slot (wait for a refresh).
    pub(super) fn route(&self, slot: Slot, search: &mut Search) -> Option<Route> {
        let routing = self.routing();
        let shard = match slot {
            Slot::One(slot) => routing.shard_for(slot)?,
            _ => routing.shards.first()?,
        };
        // A replica this command may still ask: not flagged failing, not found unreachable.
        let askable = |r: &&Replica, unreachable: &[NodeAddress]| {
            !r.is_failing && !unreachable.contains(&r.address)
        };
        if search.reads_replica && !shard.replicas.is_empty() {
            let usable: Vec<&NodeAddress> = shard
                .replicas
                .iter()
                .filter(|r| askable(r, &search.unreachable) && self.nodes.is_up(&r.address))
                .map(|r| &r.address)
                .collect();
            if !usable.is_empty() {
                let at = self.read_turn.fetch_add(1, Ordering::Relaxed) % usable.len();
                return Some(Route {
                    target: usable[at].clone(),
                    primary: Some(shard.primary.clone()),
                    has_replica_to_ask: true,
                    is_replica_read: true,
                    client: None,
                });
            }
        }
        let primary = Some(shard.primary.clone());
        if !search.unreachable.contains(&shard.primary) {
            let (is_up, client) = self.nodes.up_client(&shard.primary);
            if is_up {
                let has_replica_to_ask = shard
                    .replicas
                    .iter()
                    .any(|r| askable(&r, &search.unreachable));
                return Some(Route {
                    target: shard.primary.clone(),
                    has_replica_to_ask,
                    primary,
                    is_replica_read: false,
                    client,
                });
            }
            search.unreachable.push(shard.primary.clone());
        }
        let replicas: Vec<&NodeAddress> = shard
            .replicas
            .iter()
            .filter(|r| askable(r, &search.unreachable))
            .map(|r| &r.address)
            .collect();
        let target = if replicas.is_empty() {
            // No replica to ask: the primary, whose link may come back within the deadline.
            shard.primary.clone()
        } else {
            search.turn += 1;
            replicas[search.turn % replicas.len()].clone()
        };
        Some(Route {
            target,
            primary,
            has_replica_to_ask: !replicas.is_empty(),
            is_replica_read: false,
            client: None,
        })
    }
}
