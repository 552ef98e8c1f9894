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
//!   listener closed at once, and the client asks no more (every clone of its connector shares
//!   the answer): one short extra connection in all.
//! - None is made with `maintenance.mode` disabled or `maintenance.resp2_listener` off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, info};

use super::{Address, Connector, FailureClass, Link, Target, Trace};
use crate::backoff::{Backoff, Jitter};
use crate::config::{MaintenanceMode, Protocol};

/// Handshakes rejected in a row (no `HELLO 3`, a proxy in front that closes on it, a full
/// server) after which the client stops trying.
const REJECTIONS: u32 = 3;

/// The name the listener's connection carries in `CLIENT LIST`.
pub(crate) const NAME: &str = "steadfast-notices";

/// Whether the client's links get a listener, and whether its server refused one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Aside {
    /// Set for the supervisor of a client the application holds (and each cluster node's).
    pub(super) is_wanted: bool,
    /// The server refused the opt-in: ask no more.
    pub(super) is_refused: Arc<AtomicBool>,
}

impl Connector {
    /// Whether a listener goes beside `link`.
    fn wants_listener(&self) -> bool {
        let config = &self.config;
        self.aside.is_wanted
            && config.endpoint.protocol == Protocol::Resp2
            && config.maintenance.resp2_listener
            && config.maintenance.mode != MaintenanceMode::Disabled
            && !self.aside.is_refused.load(Ordering::Relaxed)
    }

    /// Starts a listener beside `link` (made for `target`), if one is wanted; it ends with the
    /// link.
    pub(super) fn listen_aside(&self, link: &Link, target: &Target) {
        if !self.wants_listener() {
            return;
        }
        let (application, _) = tokio::sync::broadcast::channel(1);
        let listener = self.for_listener(application, NAME);
        let address = match &link.address {
            Address::Tcp(address) => Some(*address),
            Address::Unix(_) => None,
        };
        let generation = link.generation;
        let closed = link.closed.clone();
        let target = target.clone();
        let is_refused = Arc::clone(&self.aside.is_refused);
        self.tasks.spawn(async move {
            tokio::select! {
                () = closed.cancelled() => {}
                () = listen(&listener, address, generation, &target, &is_refused) => {}
            }
        });
    }
}

/// Keeps a listener connection to `address` open, made again when it drops; returns when the
/// server refuses the opt-in.
async fn listen(
    listener: &Connector,
    address: Option<SocketAddr>,
    generation: u64,
    target: &Target,
    is_refused: &AtomicBool,
) {
    let mut retry = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Jitter::From(Duration::from_millis(500)),
        rand::random(),
    );
    let mut rejected = 0;
    loop {
        let mut trace = Trace {
            only: address,
            ..Trace::default()
        };
        match listener
            .connect_traced(generation, target, &mut trace)
            .await
        {
            Ok(connection) if !connection.is_maintenance_aware => {
                is_refused.store(true, Ordering::Relaxed);
                info!(
                    address = %connection.address,
                    "the server refused maintenance notifications: this RESP2 client hears none"
                );
                connection.close();
                return;
            }
            Ok(connection) => {
                rejected = 0;
                debug!(address = %connection.address, generation,
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
                    is_refused.store(true, Ordering::Relaxed);
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
