//! Maintenance per shard: a node announced to go down for maintenance is routed around from
//! the announced start (a `FAILING_OVER`: shortly before it), so its shard's commands reach the
//! promoted replica the moment it serves; other shards are not touched.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::redirect::NodeAddress;
use super::router::Router;
use crate::event::{Event, MaintenanceNotice};
use crate::maintenance::azure::{AzureEvent, AzureEventKind};
use crate::maintenance::push::Notification;

/// Maintenance notices waiting for the router.
pub(super) const NOTICES: usize = 64;
/// How long after an announced start the announced node stays avoided, unless the cluster
/// names another primary sooner (its commands then go there).
const AVOID_AFTER_START: Duration = Duration::from_secs(2);
/// How many Azure events are remembered to report each once (every node's listener hears
/// each message).
const RECENT: usize = 16;

impl Router {
    /// The node an Azure event names: its IP, and among several nodes there, its port.
    fn node_named(&self, event: &AzureEvent) -> Option<NodeAddress> {
        let ip = event.ip_address?.to_string();
        let routing = self.routing();
        let at_ip: Vec<&NodeAddress> = routing
            .nodes()
            .filter(|address| address.host.as_deref() == Some(ip.as_str()))
            .collect();
        match at_ip.as_slice() {
            [one] => Some((*one).clone()),
            several => several
                .iter()
                .find(|a| Some(a.port) == event.non_ssl_port || Some(a.port) == event.ssl_port)
                .map(|a| (*a).clone()),
        }
    }

    /// Routes around `node` from `lead` before `start` until [`AVOID_AFTER_START`] after it.
    fn avoid(&self, node: NodeAddress, start: Instant, lead: Duration) {
        let begin = start.checked_sub(lead).unwrap_or(start);
        let window =
            (start + AVOID_AFTER_START).saturating_duration_since(begin.max(Instant::now()));
        let suspects = self.nodes.suspects();
        let (trigger, cancel) = (Arc::clone(&self.trigger), self.cancel.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(begin) => {}
            }
            tracing::info!(%node, ?window, "maintenance announced: routing around the node");
            suspects.mark(&node, window);
            trigger.notify_one();
        });
    }
}

/// Acts on maintenance announced for one node: from the announced start (an Azure
/// `NodeMaintenanceStarting` naming the node's IP and port; a `FAILING_OVER` on the node's link,
/// whose failover starts "within" its time: from `maintenance.azure_lead` before that) until
/// 2 s after it, the node is routed around: its shard's
/// commands ask the shard's replicas every `cluster.takeover_poll` (one that has not taken over
/// answers `MOVED`, not executed) and go to the new primary the moment it serves, instead of
/// meeting the node as it goes down. Notices that a change ended (`FAILED_OVER`, `MIGRATED`,
/// `SMIGRATED`, `MOVING`, Azure `FailoverComplete` / `ScaleComplete` / `Ended`) trigger a
/// refresh. Every notice is reported once on `events()`.
pub(super) async fn maintenance_watch(
    router: Weak<Router>,
    mut notices: mpsc::Receiver<(NodeAddress, MaintenanceNotice)>,
    cancel: CancellationToken,
) {
    let mut recent: VecDeque<AzureEvent> = VecDeque::new();
    loop {
        let (from, notice) = tokio::select! {
            () = cancel.cancelled() => break,
            received = notices.recv() => match received {
                Some(received) => received,
                None => break,
            },
        };
        let Some(router) = router.upgrade() else {
            break;
        };
        if let MaintenanceNotice::Azure(event) = &notice {
            if recent.contains(event) {
                continue;
            }
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // Recorded by the node that heard it.
        router.events.forward(Event::Maintenance(notice.clone()));
        match notice {
            MaintenanceNotice::Push {
                notification: Notification::FailingOver { time, .. },
                ..
            } => router.avoid(
                from,
                Instant::now() + time,
                router.config.maintenance.azure_lead,
            ),
            MaintenanceNotice::Push {
                notification:
                    Notification::FailedOver { .. }
                    | Notification::Migrated { .. }
                    | Notification::SlotsMigrated { .. }
                    | Notification::Moving { .. },
                ..
            } => router.trigger.notify_one(),
            MaintenanceNotice::Azure(event) => match event.kind {
                AzureEventKind::Starting => {
                    let start = event.start_time.map_or(Instant::now(), |at| {
                        Instant::now()
                            + at.duration_since(std::time::SystemTime::now())
                                .unwrap_or_default()
                    });
                    match router.node_named(&event) {
                        // The node serves until its start; routing around it earlier only
                        // holds its shard's writes (a second, in the drill, where a client
                        // that ignores the notice lost nothing).
                        Some(node) => router.avoid(node, start, Duration::ZERO),
                        None => debug!(?event, "maintenance for a node not in the table"),
                    }
                }
                AzureEventKind::FailoverComplete
                | AzureEventKind::ScaleComplete
                | AzureEventKind::Ended => router.trigger.notify_one(),
                _ => {}
            },
            MaintenanceNotice::Push { .. } => {}
        }
    }
}
