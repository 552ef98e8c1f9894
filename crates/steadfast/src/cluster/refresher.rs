//! The refresher: keeps the routing table fresh in the background. A check every
//! `cluster.refresh_interval` (jittered) asks one node; a trigger (a redirection, a lost link,
//! a breaker opened ...) gets a full refresh from up to three nodes; both pass the
//! [`RefreshGate`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::redirect::NodeAddress;
use super::refresh::RefreshGate;
use super::router::Router;
use super::routing::Routing;
use super::topology::{View, choose};
use crate::config::ClusterConfig;
use crate::event::Event;

/// How long one node gets to answer `CLUSTER NODES`.
const VIEW_TIMEOUT: Duration = Duration::from_secs(1);
/// How many nodes a full refresh asks.
const VIEWS: usize = 3;

/// Which nodes may be asked for the topology.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Askable {
    /// The table's nodes.
    Table,
    /// The table's nodes, then the seeds it does not list.
    TableAndSeeds,
}

impl Router {
    /// The routing may be stale: asks for a refresh and waits until one completes, at most
    /// `wait` and never past `deadline`.
    pub(super) async fn refresh_and_wait(&self, deadline: Instant, wait: Duration) {
        let mut refreshed = self.refreshed.subscribe();
        self.trigger.notify_one();
        let _ = timeout_at(deadline.min(Instant::now() + wait), refreshed.changed()).await;
    }

    /// Nodes to ask for the topology, rotated by the round count so that successive rounds
    /// ask different nodes, nodes whose link is up first.
    fn nodes_in_turn(&self, routing: &Routing, askable: Askable) -> Vec<NodeAddress> {
        let mut nodes: Vec<NodeAddress> = routing.nodes().cloned().collect();
        if askable == Askable::TableAndSeeds {
            for seed in &self.seeds {
                if !nodes.contains(seed) {
                    nodes.push(seed.clone());
                }
            }
        }
        let turn = usize::try_from(*self.refreshed.borrow()).unwrap_or(0);
        if !nodes.is_empty() {
            let by = turn % nodes.len();
            nodes.rotate_left(by);
        }
        nodes.sort_by_key(|address| !self.nodes.is_up(address));
        nodes
    }

    /// `address`'s `CLUSTER NODES`, parsed; `None` when it did not answer one within
    /// [`VIEW_TIMEOUT`].
    async fn view_of(&self, address: &NodeAddress) -> Option<View> {
        let node = self.nodes.client(address).ok()?;
        let question = redis::cmd("CLUSTER").arg("NODES").clone();
        let text = tokio::time::timeout(VIEW_TIMEOUT, node.query::<String>(&question))
            .await
            .ok()?
            .ok()?;
        View::parse(&text).ok()
    }

    /// The periodic check: `CLUSTER NODES` from one node (each in turn, one whose link is up),
    /// compared with the table; a full refresh ([`refresh_once`](Self::refresh_once)) only when
    /// it differs or no node answered.
    async fn check_once(&self) {
        let routing = self.routing();
        let asked = self
            .nodes_in_turn(&routing, Askable::Table)
            .into_iter()
            .next()
            .filter(|address| self.nodes.is_up(address));
        let unchanged = match asked {
            Some(address) => self
                .view_of(&address)
                .await
                .is_some_and(|view| Routing::from_view(&view, &address).agrees_with(&routing)),
            None => false,
        };
        if unchanged {
            self.refreshed.send_modify(|n| *n = n.wrapping_add(1));
        } else {
            self.refresh_once().await;
        }
    }

    /// One round: `CLUSTER NODES` from up to three nodes (the table's, else the seeds), the
    /// majority view, and the swap. A view with a lower epoch than the table's is refused.
    pub(super) async fn refresh_once(&self) {
        let routing = self.routing();
        let candidates = self.nodes_in_turn(&routing, Askable::TableAndSeeds);
        let mut asks: futures_util::stream::FuturesUnordered<_> = candidates
            .into_iter()
            .take(VIEWS)
            .map(|address| async move { self.view_of(&address).await.map(|view| (view, address)) })
            .collect();
        // Every answer, or as soon as two agree (a majority of the three asked).
        let mut answers: Vec<(View, NodeAddress)> = Vec::new();
        let _ = tokio::time::timeout(VIEW_TIMEOUT, async {
            while let Some(answer) = asks.next().await {
                let Some((view, address)) = answer else {
                    continue;
                };
                let agrees = answers.iter().any(|(v, _)| v.layout() == view.layout());
                answers.push((view, address));
                if agrees {
                    break;
                }
            }
        })
        .await;
        let views: Vec<View> = answers.iter().map(|(v, _)| v.clone()).collect();
        if let Some(chosen) = choose(&views) {
            let answering = answers
                .iter()
                .find(|(v, _)| v == chosen)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            if chosen.epoch >= routing.epoch {
                self.swap(Routing::from_view(chosen, &answering), &routing)
                    .await;
            } else {
                debug!(
                    epoch = chosen.epoch,
                    current = routing.epoch,
                    "refused an older view"
                );
            }
        }
        self.refreshed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Puts `next` in place of `current`; a new layout is reported, its departed nodes'
    /// clients closed and its new nodes dialled.
    async fn swap(&self, next: Routing, current: &Routing) {
        let is_new = next.layout_differs(current);
        let event = Event::TopologyChanged {
            epoch: next.epoch,
            shards: next.shards.len(),
            uncovered: next.uncovered(),
        };
        let next = Arc::new(next);
        *self.routing.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&next);
        if is_new {
            debug!(?event, "topology");
            self.events.emit(event);
            self.nodes.retire_departed(&next);
            self.nodes.dial_every_node(&next, None).await;
        }
    }
}

/// The background refresh, through the gate: a check every `cluster.refresh_interval`
/// (jittered), a full refresh on every trigger. Ends with the cancel token, or when every
/// handle of the client is gone.
pub(super) async fn refresher(
    router: Weak<Router>,
    cluster: ClusterConfig,
    cancel: CancellationToken,
) {
    let mut gate = RefreshGate::new(cluster.refresh_min_interval);
    let mut next_periodic = Instant::now() + crate::backoff::spread(cluster.refresh_interval);
    // A trigger came since the last round: the next round is a full refresh.
    let mut is_triggered = false;
    loop {
        let wake = gate
            .wake_at()
            .map_or(next_periodic, |at| at.min(next_periodic));
        // Hold only the trigger while waiting, not the client: dropping every handle ends this.
        let Some(trigger) = router.upgrade().map(|r| Arc::clone(&r.trigger)) else {
            break;
        };
        let should_start = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_periodic {
                    next_periodic = now + crate::backoff::spread(cluster.refresh_interval);
                    gate.trigger(now)
                } else {
                    gate.poll(now)
                }
            }
            () = trigger.notified() => {
                is_triggered = true;
                gate.trigger(Instant::now())
            }
        };
        drop(trigger);
        if !should_start {
            continue;
        }
        let Some(router) = router.upgrade() else {
            break;
        };
        if std::mem::take(&mut is_triggered) {
            router.refresh_once().await;
        } else {
            router.check_once().await;
        }
        gate.finished(Instant::now());
    }
}
