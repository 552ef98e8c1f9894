//! The connector: one connection attempt, from a name to a ready link.
//!
//! # Behaviour
//! - The endpoint's name is resolved on every attempt; no address is kept across attempts.
//! - Several addresses are dialled staggered and in parallel, the first to connect winning, and
//!   an address that failed recently is dialled last (`dial`: RFC 8305's Happy Eyeballs); all
//!   within the attempt's `connect_timeout`, with the socket options (`TCP_NODELAY`,
//!   `TCP_USER_TIMEOUT`, keepalive) set before the SYN.
//! - The stream is wrapped in an activity meter and becomes the library's own multiplexed
//!   connection (`wire`: requests as RESP bytes, replies matched in order, pushes apart). One
//!   round trip then sends `HELLO 3` (or `AUTH` for RESP2) with the credentials, `SELECT`,
//!   `CLIENT SETINFO`, `CLIENT SETNAME`, `CLIENT ID` and `ROLE` (`handshake`); a managed
//!   service that refuses `CLIENT ID` or `ROLE` still yields a usable link.
//! - With RESP3 the connection opts in to maintenance notifications
//!   (`CLIENT MAINT_NOTIFICATIONS ON moving-endpoint-type ...`) in the same round trip, after the
//!   push listener is in place. Maintenance frames go to the reactor, tagged with the link's
//!   generation and whether the handshake was still running; every other push frame goes to the
//!   application untouched.
//! - A RESP2 link of the client's own supervisor gets an idle RESP3 connection beside it that
//!   hears those frames for it (`aside`); a server that refuses them is not asked again for a while.
//! - While a MOVING target applies, dials for the configured endpoint go to the target instead.

pub(crate) mod activity;
mod aside;
mod batch;
mod diagnose;
pub(crate) mod dial;
mod handshake;
mod journal;
pub(crate) mod link;
pub(crate) mod socket;
mod tls;
pub(crate) mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::Mutex;

use redis::PushInfo;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, timeout_at};
use tokio_util::task::TaskTracker;

use crate::config::Config;
pub use crate::endpoint::{Address, credentials, resolve};
use crate::error::{Error, ErrorKind};
use crate::notices::Notice;
use crate::notices::push::Endpoint;
pub use diagnose::{Diagnosis, ServerFacts, diagnose};
pub(crate) use journal::Journal;
pub(crate) use link::Link;
pub(crate) use wire::queued_refusals;

/// How an attempt failed, as far as the backoff cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// Every address refused the connection: the host is up and nothing listens (a restart).
    Refused,
    /// No address answered the SYNs within the attempt: the attempt itself was the wait.
    Unanswered,
    /// A server (or the resolver) was reached and the attempt still failed: back off, since
    /// trying again costs it work.
    Rejected,
    /// A server answered that it is not ready (`LOADING`, `MASTERDOWN`, `BUSY`): it is there,
    /// asking again is cheap, and it will be ready at a moment nobody knows; try again as soon
    /// as after a refusal.
    NotReady,
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) class: FailureClass,
    pub(crate) error: Error,
}

/// A step of one connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Resolving the name.
    Resolve,
    /// The TCP connection.
    TcpConnect,
    /// The TLS handshake.
    Tls,
    /// `HELLO` / `AUTH`, `SELECT`, the session questions and the maintenance opt-in.
    Handshake,
    /// The first `PING`.
    Ping,
}

/// How long each step of one connection attempt took, in order.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// What the name resolved to.
    pub resolved: Vec<SocketAddr>,
    /// The address the connection reached.
    pub address: Option<Address>,
    /// Finished steps and their durations.
    pub steps: Vec<(Step, std::time::Duration)>,
    /// Where the step under way is told (the supervisor's attempts).
    progress: Option<Progress>,
    /// An address to dial last (the health probe's: the stalled link's own).
    avoid: Option<SocketAddr>,
    /// The one address to dial, whatever the name lists now (the health monitor's question
    /// whether a server the name moved away from still answers).
    only: Option<SocketAddr>,
}

impl Trace {
    fn finish(&mut self, step: Step, started: &mut Instant) {
        let now = Instant::now();
        self.steps.push((step, now - *started));
        *started = now;
    }

    /// The attempt is now doing `what` ("tls handshake with 10.0.0.5:6380").
    fn enter(&self, what: impl FnOnce() -> String) {
        if let Some(progress) = &self.progress {
            progress.enter(what());
        }
    }
}

/// What the supervisor's connection attempt under way is waiting for, and since when: a
/// command whose deadline runs out before any link existed says so, instead of only "the
/// deadline ran out" (a server that accepts and never answers, TLS to a plain port). Cheap to
/// clone; clones share one record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress(Arc<Mutex<Option<(String, Instant)>>>);

impl Progress {
    fn enter(&self, what: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, Instant::now()));
    }

    /// The attempt ended (a link, or a failure the supervisor records).
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// "handshake with 10.0.0.5:6379, waiting for 4.9s", while an attempt is under way.
    pub(crate) fn describe(&self) -> Option<String> {
        let current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .map(|(what, since)| format!("{what}, no answer for {:.1?}", since.elapsed()))
    }
}

/// Where push frames go: maintenance notifications to the reactor, everything else to the
/// application, untouched.
#[derive(Clone, Debug)]
pub(crate) struct PushRoutes {
    pub(crate) application: broadcast::Sender<PushInfo>,
    pub(crate) maintenance: mpsc::Sender<Notice>,
}

/// Where a dial goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The configured endpoint, or the MOVING target while one applies.
    Configured,
    /// This endpoint (a MOVING target).
    Endpoint(Endpoint),
}

/// Makes links. Cheap to clone; holds no address between attempts (a MOVING target applies
/// until its time runs out, then the configured name is resolved again).
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<Config>,
    tls: Option<tls::Tls>,
    routes: PushRoutes,
    tasks: TaskTracker,
    moved_to: Arc<Mutex<Option<(Endpoint, Instant)>>>,
    /// Links send `READONLY` at handshake: a cluster node that serves reads from replicas.
    is_read_only_session: bool,
    /// State commands the caller sent, replayed on every new link.
    pub(crate) journal: Journal,
    /// Addresses that recently failed to answer, dialled last; shared by every clone.
    failures: dial::Failures,
    /// RESP2 supervisor links get a maintenance listener beside them (`aside`).
    listens_aside: bool,
}

impl Connector {
    /// # Errors
    /// TLS files that cannot be read ([`ErrorKind::InvalidConfig`]).
    pub(crate) fn new(
        config: Arc<Config>,
        routes: PushRoutes,
        tasks: TaskTracker,
    ) -> Result<Self, Error> {
        Ok(Self {
            tls: tls::Tls::from_config(&config)?,
            config,
            routes,
            tasks,
            moved_to: Arc::new(Mutex::new(None)),
            is_read_only_session: false,
            journal: Journal::default(),
            failures: dial::Failures::default(),
            listens_aside: false,
        })
    }

    /// This connector's supervisor links, when they speak RESP2, get a maintenance listener
    /// beside them (`aside`): the client the application holds, and each cluster node's.
    pub(crate) fn with_listener_aside(mut self) -> Self {
        self.listens_aside = true;
        self
    }

    /// This connector's links send `READONLY` at handshake (a cluster node's, when reads may go
    /// to replicas: a replica then serves reads of its primary's slots instead of `MOVED`).
    /// A connector whose links replay `journal`: a dedicated link follows the state commands
    /// sent through its client's shared link.
    pub(crate) fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// A connector whose MOVING target is `parent`'s: a move heard on any link of a client
    /// sends every one of its links (shared and dedicated) to the new node.
    pub(crate) fn with_moves_of(mut self, parent: &Self) -> Self {
        self.moved_to = Arc::clone(&parent.moved_to);
        self
    }

    pub(crate) fn with_read_only_session(mut self) -> Self {
        self.is_read_only_session = true;
        self
    }

    /// A connector like this one whose links speak RESP3, are named `name`, and send every
    /// non-maintenance push frame to `application` (a dedicated listener's own channel).
    pub(crate) fn for_listener(
        &self,
        application: broadcast::Sender<PushInfo>,
        name: &str,
    ) -> Self {
        let mut config = (*self.config).clone();
        config.endpoint.protocol = crate::config::Protocol::Resp3;
        config.endpoint.client_name = Some(name.to_owned());
        Self {
            config: Arc::new(config),
            tls: self.tls.clone(),
            routes: PushRoutes {
                application,
                maintenance: self.routes.maintenance.clone(),
            },
            tasks: self.tasks.clone(),
            moved_to: Arc::clone(&self.moved_to),
            is_read_only_session: false,
            journal: Journal::default(),
            failures: self.failures.clone(),
            listens_aside: false,
        }
    }

    /// Tells the application to drop its whole client-side cache, when the journal has
    /// tracking on: called when a new link is published and when an old one is closed after
    /// draining, the two moments after which the old link's invalidations can no longer
    /// arrive. The push is the server's own "flush everything" (`invalidate` with a null key
    /// list), so a client library's cache handles it as a `FLUSHALL`.
    pub(crate) fn announce_cache_flush(&self, generation: u64) {
        if !self.journal.is_tracking() {
            return;
        }
        metrics::counter!("steadfast_tracking_flushes_total").increment(1);
        tracing::info!(
            generation,
            "client-side cache flush announced: invalidations of the old link are lost"
        );
        let _ = self.routes.application.send(PushInfo {
            kind: redis::PushKind::Invalidate,
            data: vec![redis::Value::Nil],
        });
    }

    /// New connections go to `endpoint` until `until` (a MOVING target).
    pub(crate) fn move_to(&self, endpoint: Endpoint, until: Instant) {
        *self.moved_to.lock().unwrap_or_else(|e| e.into_inner()) = Some((endpoint, until));
    }

    fn destination(&self, target: &Target) -> (String, u16) {
        let endpoint = &self.config.endpoint;
        match target {
            Target::Endpoint(to) => (to.host.clone(), to.port),
            Target::Configured => {
                let mut moved = self.moved_to.lock().unwrap_or_else(|e| e.into_inner());
                match moved.as_ref() {
                    Some((to, until)) if Instant::now() < *until => (to.host.clone(), to.port),
                    _ => {
                        *moved = None;
                        (endpoint.host.clone(), endpoint.port)
                    }
                }
            }
        }
    }

    /// Resolves, dials and handshakes, all within `connect.connect_timeout`.
    pub(crate) async fn connect(
        &self,
        generation: u64,
        target: &Target,
    ) -> Result<Link, ConnectFailure> {
        self.connect_traced(generation, target, &mut Trace::default())
            .await
    }

    /// [`Connector::connect`], telling `progress` which step it is waiting for (the
    /// supervisor's attempts; a RESP2 link gets its maintenance listener here).
    pub(crate) async fn connect_reporting(
        &self,
        generation: u64,
        target: &Target,
        progress: Progress,
    ) -> Result<Link, ConnectFailure> {
        let mut trace = Trace {
            progress: Some(progress),
            ..Trace::default()
        };
        let link = self.connect_traced(generation, target, &mut trace).await?;
        self.listen_aside(&link, target);
        Ok(link)
    }

    /// [`Connector::connect`], dialling `avoid` after every other address of the name (the
    /// health probe: a connection that reaches another address is a second opinion on the
    /// stalled link at `avoid`).
    pub(crate) async fn connect_avoiding(
        &self,
        avoid: Option<SocketAddr>,
    ) -> Result<Link, ConnectFailure> {
        let mut trace = Trace {
            avoid,
            ..Trace::default()
        };
        self.connect_traced(0, &Target::Configured, &mut trace)
            .await
    }

    /// [`Connector::connect`] to `address` alone, whatever the name lists now: whether the
    /// server a name moved away from still answers a handshake.
    pub(crate) async fn connect_only(&self, address: SocketAddr) -> Result<Link, ConnectFailure> {
        let mut trace = Trace {
            only: Some(address),
            ..Trace::default()
        };
        self.connect_traced(0, &Target::Configured, &mut trace)
            .await
    }

    /// Whether the server at `address` completes a handshake within `bound`: one that is
    /// killed, unreachable or frozen (SIGSTOP) does not.
    pub(crate) async fn answers(&self, address: SocketAddr, bound: std::time::Duration) -> bool {
        match tokio::time::timeout(bound, self.connect_only(address)).await {
            Ok(Ok(fresh)) => {
                fresh.close();
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }

    /// `address` is the way to a server no more (a link there was judged dead): dial it after
    /// the name's other addresses for a while.
    pub(crate) fn remember_failed(&self, address: SocketAddr) {
        self.failures.record(address, Instant::now());
    }

    /// [`Connector::connect`], recording how long each step took into `trace`.
    pub(crate) async fn connect_traced(
        &self,
        generation: u64,
        target: &Target,
        trace: &mut Trace,
    ) -> Result<Link, ConnectFailure> {
        let deadline = Instant::now() + self.config.connect.connect_timeout;
        if let (Some(path), Target::Configured) = (&self.config.endpoint.unix_socket, target) {
            return self.connect_unix(path, generation, deadline, trace).await;
        }
        let (host, port) = self.destination(target);
        let label = format!("{host}:{port}");
        let mut step_started = Instant::now();
        trace.enter(|| format!("resolve {label}"));
        let addresses =
            match timeout_at(deadline, self.config.endpoint.resolver.resolve(&host, port)).await {
                Ok(Ok(addresses)) if !addresses.is_empty() => addresses,
                Ok(Ok(_)) => {
                    return Err(failure(
                        format!("resolve {label}: no addresses"),
                        FailureClass::Rejected,
                    ));
                }
                Ok(Err(e)) => {
                    return Err(failure(
                        format!("resolve {label}: {e}"),
                        FailureClass::Rejected,
                    ));
                }
                Err(_) => {
                    return Err(failure(
                        format!(
                            "resolve {label} timed out after {:?}",
                            self.config.connect.connect_timeout
                        ),
                        FailureClass::Rejected,
                    ));
                }
            };
        trace.finish(Step::Resolve, &mut step_started);
        trace.resolved.clone_from(&addresses);
        trace.enter(|| {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            format!("tcp connect to {}", list.join(", "))
        });
        let ordered = match trace.only {
            Some(only) => vec![only],
            None => self.failures.order(&addresses, trace.avoid),
        };
        let (stream, address) =
            dial::race(&ordered, &self.config.connect, deadline, &self.failures)
                .await
                .map_err(|lost| {
                    let class = if lost.is_refused {
                        FailureClass::Refused
                    } else {
                        FailureClass::Unanswered
                    };
                    failure(lost.errors.join("; "), class)
                })?;
        trace.finish(Step::TcpConnect, &mut step_started);
        trace.address = Some(Address::Tcp(address));
        let local = stream.local_addr().ok();
        let attempt = async {
            match &self.tls {
                None => {
                    trace.enter(|| format!("handshake with {address}"));
                    handshake::handshake(self, stream, address.into(), generation).await
                }
                Some(tls) => {
                    trace.enter(|| format!("tls handshake with {address} ({host})"));
                    let stream = tls.wrap(stream, &host).await.map_err(|e| {
                        let kind = if tls::is_certificate_problem(&e) {
                            ErrorKind::Tls
                        } else if tls::is_not_tls(&e) {
                            ErrorKind::Protocol
                        } else {
                            ErrorKind::Connect
                        };
                        ConnectFailure {
                            class: FailureClass::Rejected,
                            error: Error::new(
                                kind,
                                format!("tls handshake with {address} ({host}): {e}"),
                            ),
                        }
                    })?;
                    trace.finish(Step::Tls, &mut step_started);
                    trace.enter(|| format!("handshake with {address} (over tls)"));
                    handshake::handshake(self, stream, address.into(), generation).await
                }
            }
        };
        match timeout_at(deadline, attempt).await {
            Ok(result) => {
                if result.is_ok() {
                    trace.finish(Step::Handshake, &mut step_started);
                }
                result.map(|mut link| {
                    link.local = local;
                    link
                })
            }
            Err(_) => Err(failure(
                format!(
                    "handshake with {address} timed out after {:?}",
                    self.config.connect.connect_timeout
                ),
                FailureClass::Rejected,
            )),
        }
    }

    /// A link over the Unix domain socket at `path` (no resolution, no TCP options, no TLS).
    async fn connect_unix(
        &self,
        path: &std::path::Path,
        generation: u64,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Link, ConnectFailure> {
        let mut step_started = Instant::now();
        trace.finish(Step::Resolve, &mut step_started);
        let address = Address::Unix(path.to_owned());
        trace.enter(|| format!("connect to {address}"));
        let stream = match timeout_at(deadline, tokio::net::UnixStream::connect(path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let class = if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) {
                    FailureClass::Refused
                } else {
                    FailureClass::Unanswered
                };
                return Err(failure(format!("connect to {address}: {e}"), class));
            }
            Err(_) => {
                return Err(failure(
                    format!("connect to {address} timed out"),
                    FailureClass::Unanswered,
                ));
            }
        };
        trace.finish(Step::TcpConnect, &mut step_started);
        trace.address = Some(address.clone());
        trace.enter(|| format!("handshake with {address}"));
        match timeout_at(
            deadline,
            handshake::handshake(self, stream, address.clone(), generation),
        )
        .await
        {
            Ok(result) => {
                if result.is_ok() {
                    trace.finish(Step::Handshake, &mut step_started);
                }
                result
            }
            Err(_) => Err(failure(
                format!("handshake with {address} timed out"),
                FailureClass::Rejected,
            )),
        }
    }
}

pub(crate) fn failure(message: String, class: FailureClass) -> ConnectFailure {
    ConnectFailure {
        class,
        error: Error::new(ErrorKind::Connect, message),
    }
}
