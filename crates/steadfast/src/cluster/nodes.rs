//! The node table: one core [`Client`](crate::Client) per cluster node, made on first use and
//! closed when the topology drops the node, and the suspects: nodes to route around for a
//! while (a command left them stalled, they answered `LOADING` to a replica read, or
//! maintenance was announced for them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::redirect::NodeAddress;
use super::routing::Routing;
use crate::config::{Config, ExpectedRole};
use crate::emitter::Emitter;
use crate::error::Error;
use crate::event::{Event, MaintenanceNotice};

/// Every node's client and the suspects.
pub(super) struct Nodes {
    /// The cluster client's config, from which every node's is made.
    config: Config,
    clients: Mutex<HashMap<NodeAddress, crate::Client>>,
    suspects: Arc<Suspects>,
    /// Where the nodes' events go.
    events: Emitter,
    /// A node's link lost or its role changed: asks for a refresh.
    trigger: Arc<Notify>,
    /// Maintenance notices from the nodes' links and listeners, with the node they came from.
    notices: mpsc::Sender<(NodeAddress, MaintenanceNotice)>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Nodes to route around, and until when.
#[derive(Default)]
pub(super) struct Suspects {
    until: Mutex<HashMap<NodeAddress, Instant>>,
    /// Some node was ever suspected: until then commands skip the lock (marks expire by time).
    any: AtomicBool,
}

impl Suspects {
    /// Marks `address` to be routed around for `how_long` (a later mark never shortens one).
    pub(super) fn mark(&self, address: &NodeAddress, how_long: Duration) {
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.retain(|_, at| now < *at);
        let at = until.entry(address.clone()).or_insert(now + how_long);
        *at = (*at).max(now + how_long);
        self.any.store(true, Ordering::Release);
    }

    fn contains(&self, address: &NodeAddress) -> bool {
        self.any.load(Ordering::Acquire) && {
            let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
            until.get(address).is_some_and(|at| Instant::now() < *at)
        }
    }
}

impl Nodes {
    pub(super) fn new(
        config: Config,
        events: Emitter,
        trigger: Arc<Notify>,
        notices: mpsc::Sender<(NodeAddress, MaintenanceNotice)>,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
            suspects: Arc::new(Suspects::default()),
            events,
            trigger,
            notices,
            cancel,
            tasks,
        }
    }

    /// The suspects, for a task that marks one later.
    pub(super) fn suspects(&self) -> Arc<Suspects> {
        Arc::clone(&self.suspects)
    }

    /// Whether the node's link is up (or not made yet: it is made on first use) and it is not
    /// a suspect.
    pub(super) fn is_up(&self, address: &NodeAddress) -> bool {
        self.up_client(address).0
    }

    /// [`is_up`](Self::is_up), and the node's client when it has one.
    pub(super) fn up_client(&self, address: &NodeAddress) -> (bool, Option<crate::Client>) {
        if self.suspects.contains(address) {
            return (false, None);
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(address) {
            None => (true, None),
            Some(client) => (
                matches!(client.state(), crate::LinkState::Connected { .. }),
                Some(client.clone()),
            ),
        }
    }

    /// A command left `address` stalled: route around it for one read-stall threshold (its
    /// link may still look connected; the health monitor's probe could not tell).
    pub(super) fn suspect(&self, address: &NodeAddress) {
        self.suspect_for(address, self.config.health.read_stall);
    }

    /// Routes around `address` for `how_long`.
    pub(super) fn suspect_for(&self, address: &NodeAddress, how_long: Duration) {
        self.suspects.mark(address, how_long);
    }

    /// The node client for `address`, made on first use. Its events are forwarded (a lost
    /// link or a role change also asks for a refresh); its maintenance notices go to the
    /// router's watch, which reports each once.
    pub(super) fn client(&self, address: &NodeAddress) -> Result<crate::Client, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        if config.tls.is_enabled && config.tls.server_name.is_none() {
            config.tls.server_name = Some(config.endpoint.host.clone());
        }
        config.endpoint.host = address.host.as_deref().unwrap_or_default().to_owned();
        config.endpoint.port = address.port;
        config.endpoint.role = ExpectedRole::Any;
        let client = crate::Client::cluster_node(config)?;
        let mut events = client.events();
        let (forward, cancel) = (self.events.clone(), self.cancel.clone());
        let (trigger, notices) = (Arc::clone(&self.trigger), self.notices.clone());
        let from = address.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(Event::Maintenance(notice)) => {
                            let _ = notices.try_send((from.clone(), notice));
                        }
                        Ok(event) => {
                            // A node's link lost or its role changed: the topology may have.
                            if matches!(event, Event::Disconnected { .. } | Event::RoleChanged { .. }) {
                                trigger.notify_one();
                            }
                            forward.forward(event);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        clients.insert(address.clone(), client.clone());
        Ok(client)
    }

    /// Makes a node client for every node in `routing` that has none (their links are dialled
    /// in the background, so a replica's link is up before it takes over), and with
    /// `wait_until`, waits until then for every primary's link.
    pub(super) async fn dial_every_node(&self, routing: &Routing, wait_until: Option<Instant>) {
        let mut primaries = Vec::new();
        for shard in &routing.shards {
            if let Ok(client) = self.client(&shard.primary) {
                primaries.push(client);
            }
            for replica in &shard.replicas {
                let _ = self.client(&replica.address);
            }
        }
        if let Some(until) = wait_until {
            for client in primaries {
                let _ = client
                    .wait_connected(until.saturating_duration_since(Instant::now()))
                    .await;
            }
        }
    }

    /// Shuts down the clients of nodes `routing` no longer lists (a node removed from the
    /// cluster, a seed that is not a node). A command still on one gets `Shutdown` from it and
    /// is routed again.
    pub(super) fn retire_departed(&self, routing: &Routing) {
        let listed: Vec<&NodeAddress> = routing.nodes().collect();
        let departed: Vec<(NodeAddress, crate::Client)> = {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<NodeAddress> = clients
                .keys()
                .filter(|address| !listed.contains(address))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|address| clients.remove(&address).map(|c| (address, c)))
                .collect()
        };
        for (address, client) in departed {
            debug!(%address, "node left the table; closing its client");
            self.tasks.spawn(async move { client.shutdown().await });
        }
    }

    /// Shuts every node client down, one after the other.
    pub(super) async fn shut_every_client(&self) {
        let clients: Vec<crate::Client> = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for client in clients {
            client.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeAddress {
        NodeAddress {
            host: Some("10.0.0.1".into()),
            port,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspect_is_routed_around_until_its_mark_runs_out_and_a_shorter_mark_never_shortens_it()
     {
        let suspects = Suspects::default();
        assert!(!suspects.contains(&node(7000)));
        suspects.mark(&node(7000), Duration::from_secs(2));
        suspects.mark(&node(7000), Duration::from_millis(100));
        assert!(suspects.contains(&node(7000)));
        assert!(!suspects.contains(&node(7001)), "only the node marked");
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(suspects.contains(&node(7000)), "the longer mark holds");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!suspects.contains(&node(7000)), "the mark ran out");
    }
}
