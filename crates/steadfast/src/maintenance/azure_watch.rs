//! Listening to Azure's `AzureRedisEvents` channel on a dedicated connection, and acting on it.
//!
//! # Behaviour
//! - On by default for Azure Cache for Redis host names (`*.redis.cache.windows.net` and the
//!   sovereign clouds'), configurable for any host ([`AzureEvents`]).
//! - A dedicated connection, made by the client's own connector (same TLS, credentials, resolver
//!   and socket options; RESP3), subscribes to `AzureRedisEvents`; it reconnects with jittered
//!   backoff (1 s to 30 s) whenever it drops, and never touches the command link.
//! - Every message becomes an [`Event::Maintenance`], `Scheduled` and unknown types included.
//! - `NodeMaintenanceStarting`: about [`MaintenanceConfig::azure_lead`] before `StartTimeInUTC`
//!   the command link is replaced, made before broken (held commands, fresh connection, the old
//!   one drained): the load balancer routes the fresh connection to the healthy node. At the
//!   same moment blocking commands hold off the announced server (`shared::dedicated::Hold`):
//!   one blocked there is unblocked and sent again once the shared link has moved to another
//!   address (or 10 s after the start), so it does not die with the server.
//! - From `StartTimeInUTC` on, for `shared::timeouts::ALERT_SPAN` (15 s), the health monitor
//!   watches the link closely: it resolves the name on every tick (100 ms) and suspects a link
//!   that has read nothing for a quarter of `health.read_stall` (then probes it), so a server
//!   that goes at the start is left within a few ticks even when the name moved only then.
//! - `FailoverComplete`, `ScaleComplete`, `Ended`: the role behind the link is checked again with
//!   `ROLE`; a link that no longer reaches a primary is replaced.
//! - A cluster node's client only reports the event: the cluster router acts on it for the node
//!   it names (`cluster::ClusterClient`).
//!
//! [`MaintenanceConfig::azure_lead`]: crate::MaintenanceConfig::azure_lead

use std::time::{Duration, SystemTime};

use redis::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::azure::{self, AzureEvent, AzureEventKind, CHANNEL};
use crate::backoff::{Backoff, Jitter};
use crate::config::{AzureEvents, Config};
use crate::connect::{Connector, Link, Target};
use crate::event::{DisconnectReason, Event, MaintenanceNotice};
use crate::shared::LinkParts;
use crate::shared::dedicated::BLOCKING_HOLD;

/// Where blocking commands are told to hold off the announced server.
type Hold = tokio::sync::watch::Sender<Option<crate::shared::dedicated::Hold>>;

const AZURE_SUFFIXES: &[&str] = &[
    ".redis.cache.windows.net",
    ".redis.cache.chinacloudapi.cn",
    ".redis.cache.usgovcloudapi.net",
    ".redis.cache.cloudapi.de",
    ".redisenterprise.cache.azure.net",
];

/// Whether the listener runs for this config.
pub(crate) fn is_wanted(config: &Config) -> bool {
    match config.maintenance.azure_events {
        AzureEvents::On => true,
        AzureEvents::Off => false,
        AzureEvents::Auto => {
            let host = config.endpoint.host.to_ascii_lowercase();
            AZURE_SUFFIXES.iter().any(|suffix| host.ends_with(suffix))
        }
    }
}

/// How many messages may wait for the listener.
const MESSAGES: usize = 256;

/// Starts the listener; it ends with the client.
pub(crate) fn spawn(
    parts: LinkParts,
    timeouts: std::sync::Arc<crate::shared::Timeouts>,
    connector: &Connector,
    hold: Option<Hold>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let tracker = tasks.clone();
    let (messages, _) = tokio::sync::broadcast::channel(MESSAGES);
    let connector = connector.for_listener(messages.clone(), "steadfast-events");
    tasks.spawn(async move {
        tokio::select! {
            () = listen(parts, &timeouts, connector, hold, messages, cancel.clone(), tracker) => {}
            () = cancel.cancelled() => {}
        }
    });
}

async fn listen(
    parts: LinkParts,
    timeouts: &crate::shared::Timeouts,
    connector: Connector,
    hold: Option<Hold>,
    messages: tokio::sync::broadcast::Sender<redis::PushInfo>,
    cancel: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    // Before subscribing again: uniform in [500 ms, 2 s], the ceiling doubling to 30 s; every
    // client of a fleet resubscribes after the same event, so the jitter spreads them.
    let mut retry = Backoff::new(
        Duration::from_secs(2),
        Duration::from_secs(30),
        Jitter::From(Duration::from_millis(500)),
        rand::random(),
    );
    loop {
        let mut received = messages.subscribe();
        match subscribe(&connector).await {
            Ok(link) => {
                retry.reset();
                info!(channel = CHANNEL, "listening for Azure maintenance events");
                loop {
                    let push = tokio::select! {
                        push = received.recv() => push,
                        () = link.closed() => break,
                    };
                    let push = match push {
                        Ok(push) => push,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            warn!(missed, "Azure maintenance events were missed");
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(message) = redis::Msg::from_push_info(push) else {
                        continue;
                    };
                    if message.get_channel_name() != CHANNEL {
                        continue;
                    }
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match azure::parse(&payload) {
                        Some(event) => {
                            react(&parts, timeouts, hold.as_ref(), event, &cancel, &tasks);
                        }
                        None => debug!(%payload, "not an Azure maintenance event"),
                    }
                }
                link.close();
                warn!(
                    channel = CHANNEL,
                    "Azure event subscription ended; resubscribing"
                );
            }
            Err(e) => warn!(error = %e, "cannot subscribe to Azure maintenance events"),
        }
        if cancel.is_cancelled() {
            return;
        }
        let delay = retry.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
}

/// A dedicated link subscribed to the channel.
async fn subscribe(connector: &Connector) -> Result<Link, String> {
    let link = connector
        .connect(0, &Target::Configured)
        .await
        .map_err(|failure| failure.error.to_string())?;
    let mut connection = link.connection.clone();
    match connection.subscribe(CHANNEL).await {
        Ok(()) => Ok(link),
        Err(e) => {
            link.close();
            Err(format!("SUBSCRIBE {CHANNEL}: {e}"))
        }
    }
}

fn react(
    parts: &LinkParts,
    timeouts: &crate::shared::Timeouts,
    hold: Option<&Hold>,
    event: AzureEvent,
    cancel: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    info!(kind = ?event.kind, start = ?event.start_time, "Azure maintenance event");
    parts
        .emitter
        .emit(Event::Maintenance(MaintenanceNotice::Azure(event.clone())));
    if parts.is_cluster_node() {
        // A cluster's router acts for the node the event names (it routes that shard's
        // commands around it); a node's own link is not the one to replace.
        return;
    }
    match event.kind {
        AzureEventKind::Starting => {
            let Some(start) = event.start_time else {
                return;
            };
            // From the start, the health monitor watches the link closely: the server goes
            // away around then, and where the name moves only at the start (or the fresh link
            // below still reached the server named) it is seen within a tick, not a read stall.
            timeouts.alert_from(
                tokio::time::Instant::now()
                    + start.duration_since(SystemTime::now()).unwrap_or_default(),
            );
            let lead = parts.config.maintenance.azure_lead;
            let delay = start
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(lead);
            let (reporter, slot, cancel) = (
                parts.reporter.clone(),
                parts.published.clone(),
                cancel.clone(),
            );
            let hold = hold.cloned();
            let until = tokio::time::Instant::now()
                + start.duration_since(SystemTime::now()).unwrap_or_default()
                + BLOCKING_HOLD;
            tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {
                        if let Some(link) = slot.borrow().link.clone() {
                            info!(generation = link.generation, "draining ahead of Azure maintenance");
                            if let Some(hold) = &hold {
                                // Blocking commands step off the server until the link moved.
                                hold.send_replace(Some(crate::shared::dedicated::Hold {
                                    address: link.address.clone(),
                                    generation: None,
                                    until,
                                }));
                            }
                            reporter.replace(
                                link.generation,
                                Target::Configured,
                                DisconnectReason::Planned,
                            );
                        }
                    }
                    () = cancel.cancelled() => {}
                }
            });
        }
        AzureEventKind::FailoverComplete
        | AzureEventKind::ScaleComplete
        | AzureEventKind::Ended => {
            let (reporter, slot, cancel) = (
                parts.reporter.clone(),
                parts.published.clone(),
                cancel.clone(),
            );
            let bound = parts.config.health.probe_timeout;
            tasks.spawn(async move {
                let Some(link) = slot.borrow().link.clone() else {
                    return;
                };
                let mut connection = link.connection.clone();
                let question = redis::cmd("ROLE");
                let role = tokio::select! {
                    role = tokio::time::timeout(bound, connection.send_packed_command(&question)) => role,
                    () = cancel.cancelled() => return,
                };
                if let Ok(Ok(Value::Array(items))) = role {
                    let is_primary = matches!(items.first(),
                        Some(Value::BulkString(b)) if b.as_slice() == b"master");
                    if !is_primary {
                        info!(generation = link.generation, "role re-check: no longer a primary");
                        reporter.link_lost(link.generation, DisconnectReason::ReadOnly);
                    }
                }
            });
        }
        AzureEventKind::Scheduled | AzureEventKind::Start | AzureEventKind::Unknown(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_host_names_turn_the_listener_on_by_default() {
        let mut config = Config::default();
        config.endpoint.host = "contoso.redis.cache.windows.net".into();
        assert!(is_wanted(&config));
        config.endpoint.host = "cache.internal".into();
        assert!(!is_wanted(&config));
        config.maintenance.azure_events = AzureEvents::On;
        assert!(is_wanted(&config));
        config.endpoint.host = "contoso.redis.cache.windows.net".into();
        config.maintenance.azure_events = AzureEvents::Off;
        assert!(!is_wanted(&config));
    }
}
