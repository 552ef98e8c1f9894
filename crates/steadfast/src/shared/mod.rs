//! The parts every clone of a client and its workers share.
//!
//! # Behaviour
//! - [`Shared`] bundles them, each a named part: the supervisor's [`Handle`] (the published
//!   link, reporting a lost one, the force-reconnect bookkeeping), the [`Timeouts`] in force, the
//!   one [`Emitter`], the command queue, the link journal and the connector.
//! - It lives as long as a clone of the client does; the command path borrows it. Dropping it
//!   cancels every worker.
//! - The workers (health monitor, maintenance listener, Azure watch, re-authentication) never
//!   hold it: each gets the parts it uses, [`LinkParts`] (the published link, the reporter, the
//!   emitter, the config) and, for some, the [`Timeouts`] or the stall signal. A worker thus
//!   never keeps a client alive that the application has dropped, and cannot reach the queue,
//!   the journal or the pushes it has no business with.
//! - Nothing here names `client.rs`: the client builds a `Shared` and hands the parts down.
//!
//! [`Handle`]: crate::supervisor::Handle

pub(crate) mod dedicated;
pub(crate) mod timeouts;

use std::sync::Arc;

use redis::PushInfo;
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connect::Link;
use crate::connect::{Connector, Journal, Progress};
use crate::emitter::Emitter;
use crate::supervisor::{Handle, Published, Reporter};
pub(crate) use dedicated::{Dedicated, Lent, Use};
pub(crate) use timeouts::Timeouts;

/// Whether a client serves one endpoint or is one node of a cluster client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeMode {
    /// An application's client of one endpoint.
    Endpoint,
    /// A node of a cluster client: cluster refusals (READONLY, MOVED, ASK, TRYAGAIN,
    /// CLUSTERDOWN, MASTERDOWN) go back to the cluster router at once instead of being handled
    /// on this link, and a stalled link is reported so the router can go elsewhere.
    ClusterNode,
}

/// What every clone of a client shares. Workers hold it weakly.
pub(crate) struct Shared {
    /// First: what every command reads.
    pub(crate) timeouts: Arc<Timeouts>,
    pub(crate) config: Arc<Config>,
    /// The supervisor's handle: the published link, reports, force-reconnect bookkeeping.
    pub(crate) link: Handle,
    pub(crate) emitter: Emitter,
    /// RESP3 push frames for the application (never maintenance notifications).
    pub(crate) pushes: broadcast::Sender<PushInfo>,
    /// What the supervisor's connection attempt under way waits for.
    pub(crate) progress: Progress,
    /// State commands the caller sent, replayed on every new link.
    pub(crate) journal: Journal,
    /// Makes the one-off connections that unblock abandoned blocking commands.
    pub(crate) connector: Connector,
    /// Room for commands waiting for a link.
    pub(crate) queue: Semaphore,
    pub(crate) mode: NodeMode,
    /// Woken on every look of the health monitor at a stalled link (cluster nodes only), so
    /// the router can take an idempotent command elsewhere instead of waiting out its deadline.
    pub(crate) stalled: Arc<Notify>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Links of their own for blocking commands and sessions; `None` on a dedicated core.
    pub(crate) dedicated: Option<dedicated::Dedicated>,
}

impl Shared {
    /// A node of a cluster client.
    pub(crate) fn is_cluster_node(&self) -> bool {
        self.mode == NodeMode::ClusterNode
    }

    /// The parts a link worker uses.
    pub(crate) fn link_parts(&self) -> LinkParts {
        LinkParts {
            published: self.link.published.clone(),
            reporter: self.link.reporter.clone(),
            emitter: self.emitter.clone(),
            config: Arc::clone(&self.config),
            mode: self.mode,
        }
    }
}

/// What a link worker reads the link from and reports through: cheap clones that keep no
/// client alive (the workers end with the client's cancel token).
#[derive(Clone)]
pub(crate) struct LinkParts {
    /// The link to use, as the supervisor last published it.
    pub(crate) published: watch::Receiver<Published>,
    /// Asks the supervisor for a new link.
    pub(crate) reporter: Reporter,
    pub(crate) emitter: Emitter,
    pub(crate) config: Arc<Config>,
    pub(crate) mode: NodeMode,
}

impl LinkParts {
    /// The published link, if one serves.
    pub(crate) fn current(&self) -> Option<Arc<Link>> {
        self.published.borrow().link.clone()
    }

    /// A node of a cluster client.
    pub(crate) fn is_cluster_node(&self) -> bool {
        self.mode == NodeMode::ClusterNode
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
