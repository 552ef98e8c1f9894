//! A blocking command whose caller gave up is unblocked on the server.
//!
//! # Behaviour
//! - While a blocking command (`BLPOP` ...) waits on the shared link, an [`Unblock`] guard is
//!   armed. Its reply disarms it.
//! - If the caller drops the command, or its deadline runs out, the guard sends
//!   `CLIENT UNBLOCK <id>` over a fresh connection, from a task of its own: otherwise the
//!   server would go on blocking and hand the next pushed item to a reply nobody reads (the
//!   item would be lost).
//! - The fresh connection must reach the same server as the link (after a failover the name
//!   may lead elsewhere, where the same client id is somebody else): if it does not, nothing
//!   is sent. A link that has died needs no unblocking: the server dropped the command with it.

use std::sync::Arc;
use std::time::Duration;

use crate::connect::{Connector, Link, Target};

/// How long the unblocking connection may take in all.
const UNBLOCK_LIMIT: Duration = Duration::from_secs(5);

/// Armed while a blocking command waits for its reply.
pub(super) struct Unblock {
    connector: Connector,
    tasks: tokio_util::task::TaskTracker,
    link: Arc<Link>,
    client_id: i64,
    is_armed: bool,
}

impl Unblock {
    /// A guard for a blocking command about to be sent on `link`; `None` when the link's
    /// client id is unknown (the server refused `CLIENT ID`).
    pub(super) fn arm(
        connector: &Connector,
        tasks: &tokio_util::task::TaskTracker,
        link: &Arc<Link>,
    ) -> Option<Self> {
        Some(Self {
            connector: connector.clone(),
            tasks: tasks.clone(),
            link: Arc::clone(link),
            client_id: link.client_id?,
            is_armed: true,
        })
    }

    /// The reply came: nothing to do.
    pub(super) fn disarm(mut self) {
        self.is_armed = false;
    }
}

impl Drop for Unblock {
    fn drop(&mut self) {
        if !self.is_armed || self.link.is_closed() || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let (connector, link, client_id) = (
            self.connector.clone(),
            Arc::clone(&self.link),
            self.client_id,
        );
        self.tasks.spawn(async move {
            let attempt = async {
                let fresh = connector.connect(0, &Target::Configured).await.ok()?;
                if fresh.address != link.address {
                    fresh.close();
                    return None;
                }
                let mut connection = fresh.connection.clone();
                let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(client_id)
                    .query_async(&mut connection)
                    .await;
                fresh.close();
                unblocked.ok()
            };
            let outcome = tokio::time::timeout(UNBLOCK_LIMIT, attempt).await;
            tracing::debug!(client_id, ?outcome, "abandoned blocking command unblocked");
        });
    }
}
