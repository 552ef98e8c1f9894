//! Dedicated links: client cores of their own, each lent to one caller at a time.
//!
//! # Behaviour
//! - A core is a whole single-link client (its supervisor, health monitor, maintenance
//!   listener and re-authentication), so a dedicated link follows failovers exactly as the
//!   shared one does. It replays the shared client's journal (database, name ...), ends with
//!   the client (its cancel token is a child of the client's) and tells its own link's comings
//!   and goings to nobody: what a caller loses on it is told by whoever lent it.
//! - A dedicated link follows the client's shared link ([`follow`]): when the shared link is
//!   replaced by one to another address (a failover found by its busy traffic, a moved name,
//!   a demotion), a dedicated link still on the old address is replaced at once, instead of
//!   waiting for its own heartbeat to find out (an idle subscriber's link would take seconds).
//! - Two bounded sets: one for blocking commands, one for sessions. A core is made on first
//!   need and kept when given back; at most `command.blocking_links` (`session_links`) exist.
//!   A caller that finds every one lent waits for one, until its deadline.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LinkParts, Shared};
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::event::DisconnectReason;
use crate::supervisor::Published;

/// Makes one core for a use.
pub(crate) type Start = Box<dyn Fn(Use) -> Result<Arc<Shared>, Error> + Send + Sync>;

/// What a dedicated link is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// One blocking command (`BLPOP`, `XREAD ... BLOCK`, `WAIT` ...).
    Blocking,
    /// A [`Session`](crate::Session), for as long as the caller holds it.
    Session,
    /// A [`Subscriber`](crate::pubsub::Subscriber)'s, for as long as it lives: never lent
    /// again, and not counted against either set.
    Subscriber,
}

/// The client's dedicated cores.
pub(crate) struct Dedicated {
    blocking: Set,
    sessions: Set,
    start: Start,
    /// Announced maintenance: blocking commands step off the server it names (see [`Hold`]).
    pub(crate) hold: watch::Sender<Option<Hold>>,
}

/// Blocking commands hold off a server announced for maintenance (Azure's
/// `NodeMaintenanceStarting` shortly before its start, a RESP3 `MOVING` as the shared link
/// moves) until the client's shared link has left it, or `until`. One blocked there is
/// unblocked (it took nothing) and sent again, with what is left of its wait, once the hold
/// ends, instead of dying with the server ("outcome unknown").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The server the shared link was on when the hold began.
    pub(crate) address: crate::endpoint::Address,
    /// `MOVING` without an endpoint may bring the link back to the same address: the hold
    /// also ends once the shared link is newer than this generation. `None` (Azure: the link
    /// is made again on the same server ahead of time, the name moves at the start): only a
    /// move to another address ends it.
    pub(crate) generation: Option<u64>,
    /// The hold ends here at the latest.
    pub(crate) until: Instant,
}

impl Hold {
    /// Whether the hold is still in force, the shared link being `shared` now.
    pub(crate) fn is_in_force(&self, shared: Option<&crate::connect::Link>, now: Instant) -> bool {
        let is_left = shared.is_some_and(|link| {
            link.address != self.address
                || self.generation.is_some_and(|held| link.generation > held)
        });
        now < self.until && !is_left
    }

    /// Whether a dedicated link (`own`) must be made again before anything is sent on it, once
    /// the hold has ended with the shared link at `shared`: it is on the held server, and either
    /// the shared link left that server or `own` is older than the shared link now in use.
    pub(crate) fn is_stale(
        &self,
        own: &crate::connect::Link,
        shared: Option<&crate::connect::Link>,
    ) -> bool {
        own.address == self.address
            && shared.is_none_or(|shared| {
                shared.address != self.address
                    || own.activity.opened_at() < shared.activity.opened_at()
            })
    }
}

/// How long after an announced start blocking commands hold off at the most (a maintenance
/// that keeps the address, behind a load balancer, ends the hold this way).
pub(crate) const BLOCKING_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

struct Set {
    idle: Arc<Mutex<Vec<Arc<Shared>>>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl Set {
    fn new(size: usize) -> Self {
        Self {
            idle: Arc::default(),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }
}

impl Dedicated {
    pub(crate) fn new(config: &Config, start: Start, hold: watch::Sender<Option<Hold>>) -> Self {
        Self {
            blocking: Set::new(config.command.blocking_links),
            sessions: Set::new(config.command.session_links),
            start,
            hold,
        }
    }

    /// A core for `use_`, made if none is idle; waits until `deadline` while all are lent.
    ///
    /// # Errors
    /// [`ErrorKind::DeadlineExceeded`] (not written) when none came free in time; the core's
    /// own start errors.
    pub(crate) async fn lend(&self, use_: Use, deadline: Instant) -> Result<Lent, Error> {
        let set = match use_ {
            Use::Blocking | Use::Subscriber => &self.blocking,
            Use::Session => &self.sessions,
        };
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&set.permits).acquire_owned())
            .await
            .map_err(|_| {
                let (what, field) = match use_ {
                    Use::Blocking | Use::Subscriber => {
                        ("blocking commands", "command.blocking_links")
                    }
                    Use::Session => ("sessions", "command.session_links"),
                };
                Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "all {} dedicated links for {what} stayed busy until the deadline \
                         ({field}); nothing was sent",
                        set.size
                    ),
                )
            })?
            .map_err(|_| Error::new(ErrorKind::Shutdown, "the client was shut down"))?;
        let idle = set.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let core = match idle {
            Some(core) => core,
            None => (self.start)(use_)?,
        };
        Ok(Lent {
            core,
            home: Arc::clone(&set.idle),
            _permit: permit,
        })
    }
}

impl Dedicated {
    /// A core of its own for a subscriber (RESP3, a push queue of its own).
    pub(crate) fn start_subscriber(&self) -> Result<Arc<Shared>, Error> {
        (self.start)(Use::Subscriber)
    }
}

/// A core lent to one caller; given back when dropped.
pub(crate) struct Lent {
    core: Arc<Shared>,
    home: Arc<Mutex<Vec<Arc<Shared>>>>,
    _permit: OwnedSemaphorePermit,
}

impl Lent {
    pub(crate) fn core(&self) -> &Arc<Shared> {
        &self.core
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.core.cancel.is_cancelled() {
            self.home
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(&self.core));
        }
    }
}

/// Replaces `core`'s link whenever the client's shared link (`parent`) moves to another
/// address while `core`'s link is still on the old one; ends with `cancel`. A blocking link
/// (`hold` given) busy while a hold covers its server is left to its blocking command, which
/// steps off the server itself (closing the link now would end the command "outcome
/// unknown"): it is replaced once idle, if still there, or when the hold ends.
pub(crate) fn follow(
    mut parent: watch::Receiver<Published>,
    hold: Option<watch::Receiver<Option<Hold>>>,
    core: LinkParts,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = parent.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let Some(moved_to) = parent.borrow_and_update().link.clone() else {
                continue;
            };
            let Some(own) = core.current() else {
                continue;
            };
            if own.address == moved_to.address || own.is_closed() {
                continue;
            }
            // Busy under a hold for its server: wait for its command to step off (bounded by
            // the hold), then replace it if it is still there.
            let held_until = hold.as_ref().and_then(|hold| {
                hold.borrow()
                    .as_ref()
                    .filter(|h| h.address == own.address)
                    .map(|h| h.until)
            });
            if let Some(until) = held_until {
                while own.activity.in_flight() > 0 && Instant::now() < until && !own.is_closed() {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                    }
                }
            }
            if !own.is_closed() {
                tracing::info!(
                    generation = own.generation,
                    from = %own.address,
                    to = %moved_to.address,
                    "the shared link moved: a dedicated link follows"
                );
                own.activity.mark_closed();
                core.reporter.link_lost(
                    own.generation,
                    DisconnectReason::Closed(format!(
                        "the client's shared link moved to {}",
                        moved_to.address
                    )),
                );
            }
        }
    });
}
