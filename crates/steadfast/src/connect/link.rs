//! A link: one live connection plus its bookkeeping.
//!
//! # Behaviour
//! - Closing a link aborts its driver task, which drops the socket; dropping the last handle to a
//!   link closes it too, so no socket outlives the link that owned it.
//! - [`Link::closed`] resolves when the socket failed or was closed, whoever did it.

use std::sync::Arc;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::activity::Activity;

/// One live connection. Shared as `Arc<Link>` between the supervisor and commands in flight.
pub(crate) struct Link {
    pub(crate) generation: u64,
    pub(crate) address: super::Address,
    /// Our end of a TCP link, as the server's `CLIENT LIST` shows it (`addr=`).
    pub(crate) local: Option<std::net::SocketAddr>,
    pub(crate) connection: super::wire::Connection,
    pub(crate) activity: Arc<Activity>,
    /// `CLIENT ID` at handshake, for the health probe's `CLIENT LIST ID`.
    pub(crate) client_id: Option<i64>,
    pub(crate) role: crate::event::Role,
    /// The server accepted `CLIENT MAINT_NOTIFICATIONS ON`.
    pub(crate) is_maintenance_aware: bool,
    pub(super) closed: CancellationToken,
    pub(super) driver: AbortHandle,
    /// Single commands batched into pipelines (cluster nodes).
    pub(crate) batcher: Arc<super::batch::Batcher>,
    /// The version of the link journal this link's state matches.
    pub(crate) journal_version: std::sync::atomic::AtomicU64,
    /// When the server last answered a readiness `PING` after refusing with `LOADING` ...; the
    /// lock makes one command per link the poller (`command::ready`).
    pub(crate) ready: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Link {
    /// Drops the socket. Commands in flight on it fail at once.
    pub(crate) fn close(&self) {
        self.activity.mark_closed();
        self.driver.abort();
        self.closed.cancel();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.activity.is_closed()
    }

    /// Resolves once the socket is gone.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.role == crate::event::Role::Primary
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
        // The driver task was aborted before it could say so.
        self.closed.cancel();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("generation", &self.generation)
            .field("address", &self.address)
            .field("client_id", &self.client_id)
            .field("role", &self.role)
            .finish()
    }
}
