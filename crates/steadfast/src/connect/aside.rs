//! A RESP2 link's maintenance listener: a second, idle RESP3 connection to the link's server
//! that hears the server's maintenance notifications for it.
//!
//! # Behaviour
//! - A RESP2 connection cannot carry push frames, so MOVING, MIGRATING, FAILING_OVER ... never
//!   reach it. Right after a RESP2 link of a client's own supervisor is ready (not a dedicated
//!   link's: those follow the shared one; not a probe's), a listener connection is made to the
//!   link's own address by the same connector (TLS, credentials, socket options), named
//!   `steadfast-notices`, speaking RESP3 and opted in with `CLIENT MAINT_NOTIFICATIONS`.
//! - Its maintenance frames are routed as the link's own: tagged with the link's generation, so
//!   the client's reactor acts on them exactly as if the link had heard them (a MOVING replaces
//!   that link, made before broken). Its other push frames are dropped: it subscribes to nothing
//!   and is never sent a command after its handshake.
//! - It lives as long as its link: closed when the link is closed or dropped. If it drops while
//!   the link lives (the server closed idle connections), it is made again after a jittered
//!   backoff from 1 s doubling to 30 s.
//! - A server that refuses the opt-in (open-source Redis and Valkey answer `-ERR`) gets the
//!   listener closed at once, and is not asked again by any client of the process for ten
//!   minutes (remembered by address: a proxy's many clients, or a pool of them, ask once; an
//!   upgraded server is asked again later): one short extra connection in all. So is a server
//!   that rejects the listener's handshake three times in a row (no `HELLO 3` before Redis 6,
//!   a proxy in front that closes on it, `maxclients` reached). A listener that cannot connect
//!   at all (the server is away) is tried again as long as its link lives.
//! - None is made with `maintenance.mode` disabled or `maintenance.resp2_listener` off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::{Address, Connector, FailureClass, Link, Target, Trace};
use crate::backoff::{Backoff, Jitter};
use crate::config::{MaintenanceMode, Protocol};
use crate::metrics::MAINTENANCE_LISTENERS;

/// Handshakes rejected in a row (no `HELLO 3`, a proxy in front that closes on it, a full
/// server) after which the listener stops trying.
const REJECTIONS: u32 = 3;

/// How long a server that refused is not asked again (an upgraded server is asked again).
const REFUSAL_MEMORY: Duration = Duration::from_secs(600);

/// At most this many refusing servers are remembered; beyond it the oldest is forgotten.
const REMEMBERED: usize = 1024;

/// The name the listener's connection carries in `CLIENT LIST`.
const NAME: &str = "steadfast-notices";

/// Servers that refused a listener, and when: not asked again by any client of this process
/// for [`REFUSAL_MEMORY`] (a proxy's many clients, a pool of clients, all ask once).
static REFUSED: LazyLock<Mutex<HashMap<Address, Instant>>> = LazyLock::new(Mutex::default);

fn is_refused(address: &Address, now: Instant) -> bool {
    let refused = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    refused
        .get(address)
        .is_some_and(|at| now.duration_since(*at) < REFUSAL_MEMORY)
}

fn remember_refusal(address: &Address, now: Instant) {
    let mut refused = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    refused.retain(|_, at| now.duration_since(*at) < REFUSAL_MEMORY);
    if refused.len() >= REMEMBERED
        && let Some(oldest) = refused
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(a, _)| a.clone())
    {
        refused.remove(&oldest);
    }
    refused.insert(address.clone(), now);
}

impl Connector {
    /// Whether a listener goes beside `link`.
    fn wants_listener(&self, link: &Link) -> bool {
        let config = &self.config;
        self.listens_aside
            && config.endpoint.protocol == Protocol::Resp2
            && config.maintenance.resp2_listener
            && config.maintenance.mode != MaintenanceMode::Disabled
            && !is_refused(&link.address, Instant::now())
    }

    /// Starts a listener beside `link` (made for `target`), if one is wanted; it ends with the
    /// link.
    pub(super) fn listen_aside(&self, link: &Link, target: &Target) {
        if !self.wants_listener(link) {
            return;
        }
        let (application, _) = tokio::sync::broadcast::channel(1);
        let listener = self.for_listener(application, NAME);
        let address = link.address.clone();
        let generation = link.generation;
        let closed = link.closed.clone();
        let target = target.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = closed.cancelled() => {}
                () = listen(&listener, &address, generation, &target) => {}
            }
        });
    }
}

/// Keeps a listener connection to `address` open, made again when it drops; returns when the
/// server refuses the opt-in or rejects [`REJECTIONS`] handshakes in a row (remembered).
async fn listen(listener: &Connector, address: &Address, generation: u64, target: &Target) {
    let only: Option<SocketAddr> = match address {
        Address::Tcp(address) => Some(*address),
        Address::Unix(_) => None,
    };
    let mut retry = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Jitter::From(Duration::from_millis(500)),
        rand::random(),
    );
    let mut rejected = 0;
    loop {
        let mut trace = Trace {
            only,
            ..Trace::default()
        };
        match listener
            .connect_traced(generation, target, &mut trace)
            .await
        {
            Ok(connection) if !connection.is_maintenance_aware => {
                remember_refusal(address, Instant::now());
                metrics::counter!(MAINTENANCE_LISTENERS, "outcome" => "refused").increment(1);
                info!(
                    address = %connection.address,
                    "the server refused maintenance notifications: this RESP2 client hears none"
                );
                connection.close();
                return;
            }
            Ok(connection) => {
                rejected = 0;
                metrics::counter!(MAINTENANCE_LISTENERS, "outcome" => "listening").increment(1);
                info!(address = %connection.address, generation,
                    "listening for maintenance notifications beside a RESP2 link");
                retry.reset();
                connection.closed().await;
                debug!(
                    generation,
                    "the maintenance listener dropped; making it again"
                );
            }
            Err(failure) if failure.class == FailureClass::Rejected => {
                rejected += 1;
                if rejected >= REJECTIONS {
                    remember_refusal(address, Instant::now());
                    metrics::counter!(MAINTENANCE_LISTENERS, "outcome" => "refused").increment(1);
                    info!(generation, error = %failure.error,
                        "the server rejected the maintenance listener {REJECTIONS} times: this RESP2 client hears no notifications");
                    return;
                }
                debug!(generation, error = %failure.error, "the maintenance listener was rejected");
            }
            Err(failure) => {
                debug!(generation, error = %failure.error, "the maintenance listener could not connect");
            }
        }
        let delay = retry.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
}
