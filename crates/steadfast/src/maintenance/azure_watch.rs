//! Listening to Azure's `AzureRedisEvents` channel on a dedicated connection, and acting on it.
//!
//! # Behaviour
//! - On by default for Azure Cache for Redis host names (`*.redis.cache.windows.net` and the
//!   sovereign clouds'), configurable for any host ([`AzureEvents`]).
//! - A dedicated pub/sub connection subscribes to `AzureRedisEvents`; it reconnects with
//!   jittered backoff (1 s to 30 s) whenever it drops, and never touches the command link.
//! - Every message becomes an [`Event::Maintenance`], `Scheduled` and unknown types included.
//! - `NodeMaintenanceStarting`: about [`MaintenanceConfig::azure_lead`] before `StartTimeInUTC`
//!   the command link is replaced, made before broken (held commands, fresh connection, the old
//!   one drained): the load balancer routes the fresh connection to the healthy node.
//! - `FailoverComplete`, `ScaleComplete`, `Ended`: the role behind the link is checked again with
//!   `ROLE`; a link that no longer reaches a primary is replaced.
//!
//! [`MaintenanceConfig::azure_lead`]: crate::MaintenanceConfig::azure_lead

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use rand::Rng;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::azure::{self, AzureEvent, AzureEventKind, CHANNEL};
use crate::client::Shared;
use crate::config::{AzureEvents, Config};
use crate::connect::Target;
use crate::event::{DisconnectReason, Event, MaintenanceNotice};

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

/// Starts the listener; it ends with the client.
pub(crate) fn spawn(
    shared: Weak<Shared>,
    config: Arc<Config>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let tracker = tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = listen(shared, config, cancel.clone(), tracker) => {}
            () = cancel.cancelled() => {}
        }
    });
}

async fn listen(
    shared: Weak<Shared>,
    config: Arc<Config>,
    cancel: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    let mut failures: u32 = 0;
    loop {
        match subscribe(&config).await {
            Ok(pubsub) => {
                failures = 0;
                info!(channel = CHANNEL, "listening for Azure maintenance events");
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    match azure::parse(&payload) {
                        Some(event) => react(&shared, &config, event, &cancel, &tasks),
                        None => debug!(%payload, "not an Azure maintenance event"),
                    }
                }
                warn!(
                    channel = CHANNEL,
                    "Azure event subscription ended; resubscribing"
                );
            }
            Err(e) => warn!(error = %e, "cannot subscribe to Azure maintenance events"),
        }
        if shared.strong_count() == 0 {
            return;
        }
        failures = failures.saturating_add(1);
        let ceiling = Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
        let delay = rand::rng().random_range(Duration::from_millis(500)..=ceiling);
        tokio::time::sleep(delay).await;
    }
}

async fn subscribe(config: &Config) -> redis::RedisResult<redis::aio::PubSub> {
    let endpoint = &config.endpoint;
    let mut settings = RedisConnectionInfo::default().set_db(endpoint.database);
    if let Some(user) = &endpoint.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &endpoint.password {
        settings = settings.set_password(password.expose());
    }
    let info = ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let bound = config.connect.connect_timeout;
    let attempt = async {
        let mut pubsub = redis::Client::open(info)?.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(bound, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "subscribing to AzureRedisEvents timed out",
            )))
        })
}

fn react(
    shared: &Shared,
    config: &Config,
    event: AzureEvent,
    cancel: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    info!(kind = ?event.kind, start = ?event.start_time, "Azure maintenance event");
    shared.emit(Event::Maintenance(MaintenanceNotice::Azure(event.clone())));
    match event.kind {
        AzureEventKind::Starting => {
            let Some(start) = event.start_time else {
                return;
            };
            let lead = config.maintenance.azure_lead;
            let delay = start
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(lead);
            let (reporter, slot, cancel) =
                (shared.reporter.clone(), shared.slot.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {
                        if let Some(link) = slot.borrow().link.clone() {
                            info!(generation = link.generation, "draining ahead of Azure maintenance");
                            reporter.replace(link.generation, Target::Configured);
                        }
                    }
                    () = cancel.cancelled() => {}
                }
            });
        }
        AzureEventKind::FailoverComplete
        | AzureEventKind::ScaleComplete
        | AzureEventKind::Ended => {
            let (reporter, slot, cancel) =
                (shared.reporter.clone(), shared.slot.clone(), cancel.clone());
            let bound = config.health.probe_timeout;
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
