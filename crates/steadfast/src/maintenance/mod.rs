//! Planned maintenance: what servers announce ahead of time, and how the client acts on it.
//!
//! # Behaviour
//! - [`push`]: RESP3 push notifications (Redis Software / Redis Cloud): MOVING, MIGRATING,
//!   MIGRATED, FAILING_OVER, FAILED_OVER, SMIGRATING, SMIGRATED. A RESP2 client hears them on
//!   an idle RESP3 connection beside its link (`maintenance.resp2_listener`, on by default;
//!   a server that refuses the opt-in is not asked again for a while).
//! - [`azure`]: Azure Cache for Redis's `AzureRedisEvents` pub/sub messages.
//! - Both parsers are tolerant (every variant seen in the field), never panic, and are fuzzed.
//! - Reactions (the contract the mature clients agree on):
//!   - MIGRATING, FAILING_OVER, SMIGRATING relax the command deadline and the stall threshold to
//!     `maintenance.relaxed_timeout` (10 s); their end frames restore them; starts and ends nest,
//!     and a cap (`relaxed_cap`, 60 s) ends relaxation if no end comes.
//!   - MOVING with an endpoint: new commands are held, a link to the endpoint is made, published,
//!     and the old link closed once its replies are in; new connections go to the endpoint until
//!     `time` has passed. MOVING with a null endpoint: the same, to the configured name (resolved
//!     again) after `time / 2`.
//!   - MOVING also makes blocking commands on dedicated links step off the old server
//!     (`shared::dedicated::Hold`): unblocked there, they wait for the shared link's move and
//!     go again on the new one, instead of ending "outcome unknown" when the old link closes.
//!   - De-duplicated by (type, seq); end frames replayed during the handshake are ignored.
//!   - Azure: see the `AzureRedisEvents` listener below; `NodeMaintenanceStarting` replaces the link about
//!     one second before the announced start.

pub(crate) mod azure_watch;

pub(crate) use crate::notices::{NOTICE_QUEUE, Notice, reactor};
pub use crate::notices::{azure, push};

/// Blocking commands' hold (the client's dedicated links), set on a move.
pub(crate) type HoldSender = tokio::sync::watch::Sender<Option<crate::shared::dedicated::Hold>>;

/// Starts the task that acts on RESP3 maintenance notifications; it ends with the client.
pub(crate) fn spawn(
    link: crate::shared::LinkParts,
    timeouts: std::sync::Arc<crate::shared::Timeouts>,
    notices: tokio::sync::mpsc::Receiver<Notice>,
    connector: crate::connect::Connector,
    hold: Option<HoldSender>,
    cancel: tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let tracker = tasks.clone();
    tasks.spawn(run(
        link, timeouts, notices, connector, hold, cancel, tracker,
    ));
}

/// Blocking commands step off the server the shared link is on until it has moved (at most
/// [`BLOCKING_HOLD`](crate::shared::dedicated::BLOCKING_HOLD)).
fn hold_blocking(hold: Option<&HoldSender>, link: &crate::shared::LinkParts) {
    let (Some(hold), Some(on)) = (hold, link.current()) else {
        return;
    };
    hold.send_replace(Some(crate::shared::dedicated::Hold {
        address: on.address.clone(),
        generation: Some(on.generation),
        until: tokio::time::Instant::now() + crate::shared::dedicated::BLOCKING_HOLD,
    }));
}

async fn run(
    link: crate::shared::LinkParts,
    timeouts: std::sync::Arc<crate::shared::Timeouts>,
    mut notices: tokio::sync::mpsc::Receiver<Notice>,
    connector: crate::connect::Connector,
    hold: Option<HoldSender>,
    cancel: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    use crate::connect::Target;
    use crate::event::{DisconnectReason, Event, MaintenanceNotice};
    use reactor::{Reaction, Reactor};
    use tokio::time::Instant;

    let mut reactor = Reactor::new(link.config.maintenance.relaxed_cap);
    loop {
        let relaxed_until = reactor.relaxed_until();
        let notice = tokio::select! {
            () = cancel.cancelled() => break,
            notice = notices.recv() => match notice {
                Some(notice) => Some(notice),
                None => break,
            },
            () = async {
                match relaxed_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        if let Some(notice) = notice.filter(|n| n.generation != 0) {
            tracing::info!(generation = notice.generation, notification = ?notice.notification,
                during_handshake = notice.is_during_handshake, "maintenance notification");
            link.emitter
                .emit(Event::Maintenance(MaintenanceNotice::Push {
                    generation: notice.generation,
                    notification: notice.notification.clone(),
                }));
            let reaction = reactor.react(
                &notice.notification,
                notice.is_during_handshake,
                Instant::now(),
            );
            match reaction {
                Reaction::MoveTo { endpoint, until } => {
                    connector.move_to(endpoint.clone(), until);
                    hold_blocking(hold.as_ref(), &link);
                    link.reporter.replace(
                        notice.generation,
                        Target::Endpoint(endpoint),
                        DisconnectReason::Planned,
                    );
                }
                Reaction::ReconnectAfter(after) => {
                    let (parts, hold) = (link.clone(), hold.clone());
                    let cancel = cancel.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            () = tokio::time::sleep(after) => {
                                hold_blocking(hold.as_ref(), &parts);
                                parts.reporter.replace(
                                    notice.generation,
                                    Target::Configured,
                                    DisconnectReason::Planned,
                                );
                            }
                            () = cancel.cancelled() => {}
                        }
                    });
                }
                Reaction::Relax
                | Reaction::Unrelax
                | Reaction::ReloadTopology
                | Reaction::Nothing => {}
            }
        }
        timeouts.set_relaxed(reactor.is_relaxed(Instant::now()), &link.emitter);
    }
}
