//! The supervisor: the only owner of the link.
//!
//! # Behaviour
//! - Runs in its own task and drives the pure [`machine`]: dials, publishes the new link to the
//!   command path, closes the old one, backs off, and never gives up while the client lives.
//! - Anything may *report* a lost link (the socket closing, a health verdict, a READONLY reply,
//!   the force-reconnect policy) with [`Reporter::link_lost`]; only the supervisor acts on it,
//!   once per generation (single flight: a hundred reports, one dial).
//! - Dials run in their own tasks, so a caller whose deadline ran out never cancels a reconnect
//!   halfway.
//! - A dial that reaches a replica while the endpoint should be a primary counts as a failed
//!   attempt (the name has not moved yet): the supervisor backs off and resolves again. While it
//!   waits it keeps looking at the name (every quarter of the delay, 20 to 250 ms apart), and
//!   dials as soon as the name stops listing that replica: a failover's name flip ends the wait,
//!   not the backoff's timer.

pub(crate) mod force;
mod handle;
mod machine;
mod silence;

pub(crate) use handle::Handle;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::emitter::Emitter;

use crate::config::Config;
use crate::connect::{ConnectFailure, Connector, FailureClass, Link, Progress, Target};
use crate::event::{DisconnectReason, Event, LinkState, Role};
use machine::{Action, Input, Machine, State};

/// The published link: what the command path sees, the link to use, if any, and the state to
/// report.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub(crate) link: Option<Arc<Link>>,
    pub(crate) state: LinkState,
    /// Why the last attempt failed, while no link serves; shown to commands that wait.
    pub(crate) last_failure: Option<crate::error::Error>,
}

/// The link commands use, readable without a lock: the same as [`Published::link`], kept in
/// step by [`Publisher`] (every command reads it; a watch's read lock and reference count were
/// four contended atomic operations per command, BENCHMARKS.md "The published link").
pub(crate) type FastLink = Arc<arc_swap::ArcSwapOption<Link>>;

/// Where the supervisor publishes: the watch that waiters follow, and the [`FastLink`] copy of
/// its link, changed together under the watch's lock.
struct Publisher {
    watch: watch::Sender<Published>,
    fast: FastLink,
}

impl Publisher {
    fn send_modify(&self, change: impl FnOnce(&mut Published)) {
        self.watch.send_modify(|published| {
            change(published);
            self.fast.store(published.link.clone());
        });
    }

    fn send_replace(&self, published: Published) {
        self.send_modify(|slot| *slot = published);
    }
}

/// A report that the link of `generation` must go: at once, or made before broken.
#[derive(Debug)]
enum Report {
    Lost {
        generation: u64,
        reason: DisconnectReason,
    },
    Replace {
        generation: u64,
        target: Target,
        reason: DisconnectReason,
    },
}

/// The handle every part uses to report a lost link. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Reporter {
    reports: mpsc::Sender<Report>,
}

impl Reporter {
    /// Asks for the link of `generation` to be replaced. Never blocks: when the queue of reports
    /// is full, reports are already waiting and this one adds nothing.
    pub(crate) fn link_lost(&self, generation: u64, reason: DisconnectReason) {
        let _ = self.reports.try_send(Report::Lost { generation, reason });
    }

    /// Asks for the link of `generation` to be replaced by one to `target`, the new one made
    /// before the old one is closed and its commands in flight left to finish (planned
    /// maintenance, a name that moved away from a server that still answers); `reason` is told
    /// when the old one goes.
    pub(crate) fn replace(&self, generation: u64, target: Target, reason: DisconnectReason) {
        let _ = self.reports.try_send(Report::Replace {
            generation,
            target,
            reason,
        });
    }
}

/// Starts the supervisor task; returns its handle.
pub(crate) fn spawn(
    config: Arc<Config>,
    connector: Connector,
    emitter: Emitter,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
    progress: Progress,
) -> Handle {
    let (published_tx, published_rx) = watch::channel(Published {
        link: None,
        state: LinkState::Connecting,
        last_failure: None,
    });
    let fast = FastLink::default();
    let (reports_tx, reports_rx) = mpsc::channel(256);
    let backoff = Backoff::new(
        config.reconnect.backoff_initial,
        config.reconnect.backoff_max,
        Jitter::Full,
        rand::random(),
    )
    .with_quick(config.reconnect.refused_retry);
    let task = Supervisor {
        config: Arc::clone(&config),
        connector,
        emitter: emitter.clone(),
        cancel,
        published: Publisher {
            watch: published_tx,
            fast: Arc::clone(&fast),
        },
        reports: reports_rx,
        tasks: tasks.clone(),
        dial: None,
        wait: None,
        replica_at: None,
        dialled: None,
        current: None,
        outgoing: None,
        hold: None,
        last_role: None,
        progress,
    };
    tasks.spawn(task.run(backoff));
    let reporter = Reporter {
        reports: reports_tx,
    };
    Handle::new(&config, published_rx, fast, reporter, emitter)
}

/// What woke the supervisor's loop, before it is turned into the machine's [`Input`].
enum Wakeup {
    Shutdown,
    Report(Report),
    LinkClosed,
    /// Boxed: a link is large, and a dial ends once per link.
    Dialled(Box<Result<Result<Link, ConnectFailure>, tokio::task::JoinError>>),
    Waited,
    HoldExpired(u64),
}

/// The supervisor's task: carries out what the [`Machine`] decides, owns the links.
struct Supervisor {
    config: Arc<Config>,
    connector: Connector,
    emitter: Emitter,
    cancel: CancellationToken,
    published: Publisher,
    reports: mpsc::Receiver<Report>,
    tasks: tokio_util::task::TaskTracker,
    dial: Option<JoinHandle<Result<Link, ConnectFailure>>>,
    /// The backoff's wait: a timer, or a timer and a look at the name (see [`name_leaves`]).
    wait: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    /// Where the last dial found a replica instead of a primary: the wait that follows also
    /// ends once the name stops listing it.
    replica_at: Option<std::net::SocketAddr>,
    dialled: Option<Link>,
    current: Option<Arc<Link>>,
    /// The old link of a planned replacement, still answering until it is drained.
    outgoing: Option<Arc<Link>>,
    /// While commands are held for a planned replacement: the link being dialled, and when the
    /// hold must end.
    hold: Option<(u64, std::pin::Pin<Box<tokio::time::Sleep>>)>,
    last_role: Option<Role>,
    /// What the dial under way waits for (read by commands whose deadline runs out).
    progress: Progress,
}

/// Closes `link` once it has no command in flight, or after `limit`; with `silent_after` (the
/// new link and the probe timeout), also as soon as the old server is judged silent by
/// [`silence::is_silent`] (killed, unreachable or frozen: nothing in flight there
/// will be answered, and cutting it off now lets the commands that may be sent again go to the
/// new link).
async fn drain(
    link: Arc<Link>,
    limit: std::time::Duration,
    connector: Connector,
    silent_after: Option<(Option<std::net::SocketAddr>, std::time::Duration)>,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let emptied = async {
        while link.activity.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    match (silent_after, link.address.tcp()) {
        (Some((new, ceiling)), Some(address)) if link.activity.in_flight() > 0 => {
            tokio::select! {
                () = emptied => {}
                true = silence::is_silent(&connector, address, new, ceiling) => warn!(
                    generation = link.generation,
                    %address,
                    in_flight = link.activity.in_flight(),
                    "the server the name moved away from does not answer; its commands in flight are cut off"
                ),
            }
        }
        _ => emptied.await,
    }
    debug!(generation = link.generation, "drained");
    link.close();
    // Keys read on it while it drained are tracked nowhere now.
    connector.announce_cache_flush(link.generation);
}

/// How often [`name_leaves`] looks at the name during a wait of `delay`: four times per wait,
/// never more often than every 20 ms (a name served with a 1 s TTL flips once) nor less often
/// than every 250 ms (the longest a flipped name keeps the client away).
fn name_look_interval(delay: std::time::Duration) -> std::time::Duration {
    (delay / 4).clamp(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_millis(250),
    )
}

/// Ends once the endpoint's name resolves, and not to `replica` (where the last dial found a
/// replica instead of a primary): the name flip of a failover, after which the rest of the
/// backoff would only keep the client from the new primary. Runs only while the supervisor
/// waits; a lookup that fails or times out is a look that saw nothing.
async fn name_leaves(
    config: Arc<Config>,
    replica: std::net::SocketAddr,
    delay: std::time::Duration,
) {
    let endpoint = &config.endpoint;
    let every = name_look_interval(delay);
    loop {
        tokio::time::sleep(every).await;
        if let Some(addresses) = endpoint.addresses_within(config.health.probe_timeout).await
            && !addresses.contains(&replica)
        {
            debug!(%replica, ?addresses, "the name no longer lists the replica; dialling now");
            return;
        }
    }
}

impl Supervisor {
    async fn run(mut self, backoff: Backoff) {
        let (mut machine, actions) = Machine::start(backoff);
        self.apply(actions);
        while *machine.state() != State::Stopped {
            let input = self.next_input().await;
            let actions = machine.on(input);
            self.apply(actions);
            if let Some(stale) = self.dialled.take() {
                stale.close();
            }
        }
        self.published.send_replace(Published {
            link: None,
            state: LinkState::Shutdown,
            last_failure: None,
        });
        debug!("supervisor stopped");
    }

    async fn next_input(&mut self) -> Input {
        let current = self.current.clone();
        let woke = {
            let link_closed = async {
                match &current {
                    Some(link) => link.closed().await,
                    None => std::future::pending().await,
                }
            };
            let dial = async {
                match self.dial.as_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            };
            let wait = async {
                match self.wait.as_mut() {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            };
            let hold = async {
                match self.hold.as_mut() {
                    Some((generation, sleep)) => {
                        sleep.await;
                        *generation
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => Wakeup::Shutdown,
                Some(report) = self.reports.recv() => Wakeup::Report(report),
                () = link_closed => Wakeup::LinkClosed,
                result = dial => Wakeup::Dialled(Box::new(result)),
                () = wait => Wakeup::Waited,
                generation = hold => Wakeup::HoldExpired(generation),
            }
        };
        match woke {
            Wakeup::Shutdown => Input::Shutdown,
            Wakeup::Report(Report::Lost { generation, reason }) => {
                Input::LinkLost { generation, reason }
            }
            Wakeup::Report(Report::Replace {
                generation,
                target,
                reason,
            }) => Input::Replace {
                generation,
                target,
                reason,
            },
            Wakeup::LinkClosed => Input::LinkLost {
                generation: current.as_ref().map_or(0, |l| l.generation),
                reason: DisconnectReason::Closed("connection closed".into()),
            },
            Wakeup::Dialled(result) => {
                self.dial = None;
                self.progress.clear();
                self.dial_outcome(*result)
            }
            Wakeup::Waited => {
                self.wait = None;
                Input::BackoffElapsed
            }
            Wakeup::HoldExpired(generation) => {
                self.hold = None;
                Input::HoldExpired { generation }
            }
        }
    }

    fn dial_outcome(
        &mut self,
        result: Result<Result<Link, ConnectFailure>, tokio::task::JoinError>,
    ) -> Input {
        self.replica_at = None;
        match result {
            Ok(Ok(link))
                if self.config.endpoint.expects_primary()
                    && !link.is_primary()
                    && link.role != Role::Unknown =>
            {
                let error = format!(
                    "{} answered as a {}, not a primary",
                    link.address, link.role
                );
                self.replica_at = link.address.tcp();
                link.close();
                Input::DialFailed {
                    class: FailureClass::Rejected,
                    error,
                }
            }
            Ok(Ok(link)) => {
                let generation = link.generation;
                self.dialled = Some(link);
                Input::DialSucceeded { generation }
            }
            Ok(Err(failure)) => {
                let error = failure.error.to_string();
                self.published
                    .send_modify(|p| p.last_failure = Some(failure.error));
                Input::DialFailed {
                    class: failure.class,
                    error,
                }
            }
            Err(join) => Input::DialFailed {
                class: FailureClass::Rejected,
                error: format!("dial task ended: {join}"),
            },
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Dial { generation, target } => {
                    let connector = self.connector.clone();
                    let progress = self.progress.clone();
                    self.dial = Some(self.tasks.spawn(async move {
                        connector
                            .connect_reporting(generation, &target, progress)
                            .await
                    }));
                }
                Action::Hold { generation } => {
                    self.outgoing = self.current.clone();
                    self.published.send_modify(|p| p.link = None);
                    let limit = self.config.maintenance.hold_limit;
                    self.hold = Some((generation, Box::pin(tokio::time::sleep(limit))));
                }
                Action::Release => {
                    self.hold = None;
                    let current = self.current.clone();
                    self.published.send_modify(|p| p.link = current);
                }
                Action::Drain {
                    generation,
                    unless_silent,
                } => {
                    self.hold = None;
                    if let Some(old) = self.outgoing.take() {
                        debug_assert_eq!(old.generation, generation);
                        self.tasks.spawn(drain(
                            old,
                            self.config.maintenance.relaxed_timeout,
                            self.connector.clone(),
                            unless_silent.then(|| {
                                (
                                    self.current.as_ref().and_then(|l| l.address.tcp()),
                                    self.config.health.probe_timeout,
                                )
                            }),
                        ));
                    }
                }
                Action::Wait(delay) => {
                    let sleep = tokio::time::sleep(delay);
                    self.wait = Some(match self.replica_at.take() {
                        Some(replica) => {
                            let leaves = name_leaves(Arc::clone(&self.config), replica, delay);
                            Box::pin(async move {
                                tokio::select! {
                                    () = sleep => {}
                                    () = leaves => {}
                                }
                            })
                        }
                        None => Box::pin(sleep),
                    });
                }
                Action::Publish { generation } => self.publish(generation),
                Action::Close { generation } => self.let_go(generation, false),
                Action::Retire { generation } => self.let_go(generation, true),
                Action::CancelDial => {
                    if let Some(handle) = self.dial.take() {
                        handle.abort();
                        self.progress.clear();
                    }
                }
                Action::Emit(event) => self.emit(event),
            }
        }
    }

    fn publish(&mut self, generation: u64) {
        let Some(link) = self.dialled.take() else {
            warn!(generation, "publish without a dialled link");
            return;
        };
        let link = Arc::new(link);
        info!(address = %link.address, generation, role = %link.role, "connected");
        if let Some(last) = &self.last_role
            && *last != link.role
        {
            self.emit(Event::RoleChanged {
                generation,
                role: link.role.clone(),
            });
        }
        self.last_role = Some(link.role.clone());
        self.emit(Event::Connected {
            address: link.address.clone(),
            generation,
            role: link.role.clone(),
            is_maintenance_aware: link.is_maintenance_aware,
        });
        self.current = Some(Arc::clone(&link));
        self.published.send_replace(Published {
            link: Some(link),
            state: LinkState::Connected { generation },
            last_failure: None,
        });
        self.connector.announce_cache_flush(generation);
    }

    /// Stops serving the current link (of `generation`) and closes it: at once, or, where it
    /// is `retired`, once the commands on it are answered (within the probe timeout).
    fn let_go(&mut self, generation: u64, retired: bool) {
        self.outgoing = None;
        self.hold = None;
        if let Some(link) = self.current.take() {
            debug_assert_eq!(link.generation, generation);
            if retired {
                // No new command goes to it; the ones on it are answered there.
                link.activity.mark_closed();
                self.tasks.spawn(drain(
                    Arc::clone(&link),
                    self.config.health.probe_timeout,
                    self.connector.clone(),
                    None,
                ));
            } else {
                link.close();
            }
            // A cache must not serve what nobody invalidates any more while the next link is
            // being made.
            self.connector.announce_cache_flush(generation);
        }
        self.published.send_modify(|p| {
            p.link = None;
            p.state = LinkState::Connecting;
        });
    }

    fn emit(&self, event: Event) {
        self.emitter.emit(event);
    }
}
