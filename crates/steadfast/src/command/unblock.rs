//! Ending a blocking command's wait on the server when nobody waits for its reply any more.
//!
//! # Behaviour
//! - [`unblock`] sends `CLIENT UNBLOCK <id>` for a link over a fresh connection, from a task of
//!   its own: the command ends as if its timeout had passed, and the server does not hand the
//!   next pushed item to a reply nobody reads.
//! - The fresh connection must reach the same server as the link (after a failover the name
//!   may lead elsewhere, where the same client id is somebody else): if it does not, nothing
//!   is sent. A link that has died needs no unblocking: the server dropped the command with it.
//! - Whoever asks keeps reading the link: if the wait ends anyway, the blocked command's
//!   caller learns how (`command::blocking`).

use std::sync::Arc;
use std::time::Duration;

use crate::connect::{Connector, Link, Target};

/// How long the unblocking connection may take in all.
pub(super) const UNBLOCK_LIMIT: Duration = Duration::from_secs(5);

/// Asks the server of `link` to end the wait of the command blocked on it; returns at once.
pub(super) fn unblock(
    connector: &Connector,
    tasks: &tokio_util::task::TaskTracker,
    link: Arc<Link>,
) {
    let Some(client_id) = link.client_id.filter(|_| !link.is_closed()) else {
        return;
    };
    let connector = connector.clone();
    tasks.spawn(async move {
        let attempt = async {
            // To the very server the link is on, wherever the name (or a MOVING) points now.
            let target = match link.address.tcp() {
                Some(address) => Target::Endpoint(crate::maintenance::push::Endpoint {
                    host: address.ip().to_string(),
                    port: address.port(),
                }),
                None => Target::Configured,
            };
            let fresh = connector.connect(0, &target).await.ok()?;
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
