//! The client handle.
//!
//! # Behaviour
//! - [`Client::new`] returns at once, whether or not the server is up: the supervisor keeps
//!   dialling in the background and commands wait for the first link (within their deadline).
//! - Clones share one link, one supervisor and one health monitor.
//! - Dropping the last clone, or [`Client::shutdown`], ends every task and closes every socket.

mod forward;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, PushInfo, RedisFuture, Value};
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::session::Session;
use crate::command::{self, Reply, Request};
use crate::config::Config;
use crate::connect::{Connector, Journal, Progress, PushRoutes};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::{Event, LinkState};
use crate::health;
use crate::maintenance;
use crate::pubsub::Subscriber;
use crate::shared::{self, Dedicated, NodeMode, Shared, Timeouts, Use};
use crate::supervisor;

pub use forward::Forwarded;

/// Push frames a slow receiver may fall behind by before it is told it lagged (a broadcast
/// channel allocates every slot up front, per client).
const PUSH_CAPACITY: usize = 128;

/// Push frames a subscriber's link holds until its follower passes them on (`pubsub`).
const SUBSCRIBER_PUSH_CAPACITY: usize = 4096;

/// A Redis client that follows failovers by itself. Cheap to clone.
///
/// It implements [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method and
/// [`redis::Pipeline::query_async`] work on it unchanged.
///
/// ```no_run
/// use redis::AsyncCommands;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = steadfast::Client::open("redis://primary.cache.internal:6379")?;
/// let _: () = client.set("greeting", "hello").await?;
/// let greeting: String = client.get("greeting").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    is_ambiguous_allowed: bool,
}

impl Client {
    /// Starts a client for `config`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when [`Config::validate`] fails or no tokio runtime is
    /// running. A server that is down is not an error: the client keeps trying and serves commands as soon as it is up.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_events(config).map(|(client, _)| client)
    }

    /// [`Client::new`], with a receiver subscribed before anything starts, so not even the first
    /// [`Event::Connected`] can be missed.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_events(config: Config) -> Result<(Self, broadcast::Receiver<Event>), Error> {
        Self::start(config, NodeMode::Endpoint)
    }

    /// A node of a cluster client (see [`NodeMode::ClusterNode`]).
    pub(crate) fn cluster_node(config: Config) -> Result<Self, Error> {
        Self::start(config, NodeMode::ClusterNode).map(|(client, _)| client)
    }

    fn start(config: Config, mode: NodeMode) -> Result<(Self, broadcast::Receiver<Event>), Error> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "steadfast::Client must be created inside a tokio runtime",
            ));
        }
        let (shared, first_receiver) = start_core(Arc::new(config), mode, None)?;
        let client = Self {
            shared,
            is_ambiguous_allowed: false,
        };
        Ok((client, first_receiver))
    }

    /// Starts a client for a `redis://` URL with every other setting at its default.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the part of the URL that is wrong.
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::new(Config::from_url(url)?)
    }

    /// Sends one command and converts the reply.
    ///
    /// # Errors
    /// See [`ErrorKind`]: final server errors at once; deadline, queue-full and
    /// may-have-been-applied errors after the policy has done what it may.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let value = self.send(cmd).await?;
        redis::from_redis_value(value).map_err(|e| {
            Error::from_redis(
                ErrorKind::Server,
                "reply conversion",
                redis::RedisError::from(e),
            )
        })
    }

    /// Runs `request` through the command path of this client (used by the cluster router),
    /// giving up at `until` if that comes before the command's own deadline.
    pub(crate) async fn execute_until(
        &self,
        request: Request<'_>,
        until: Instant,
    ) -> Result<Reply, Error> {
        command::execute(
            &self.shared,
            request,
            self.is_ambiguous_allowed,
            Some(until),
        )
        .await
    }

    /// Resolves at the health monitor's next look at this link while it is stalled (cluster
    /// nodes only; never resolves otherwise).
    pub(crate) fn stalled(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.stalled.notified()
    }

    async fn send(&self, cmd: &Cmd) -> Result<Value, Error> {
        let reply = command::execute(
            &self.shared,
            Request::Single(cmd),
            self.is_ambiguous_allowed,
            None,
        );
        Ok(reply.await?.into_value())
    }

    /// A handle on the same client that sends *every* command again after an ambiguous failure
    /// (written, then the link died), not only idempotent ones. Use it for commands you know are
    /// safe to apply twice.
    ///
    /// ```no_run
    /// # async fn demo(client: steadfast::Client) -> Result<(), steadfast::Error> {
    /// let mut lenient = client.retrying_ambiguous();
    /// let _: () = redis::AsyncCommands::hset(&mut lenient, "user:1", "seen", 1).await.unwrap();
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn retrying_ambiguous(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            is_ambiguous_allowed: true,
        }
    }

    /// A [`Session`]: a link of the caller's own, for `WATCH` ... `MULTI` ... `EXEC` and other
    /// sequences that need one connection, lent until the session is dropped. It follows
    /// failovers like the client, and if its link is replaced while a `WATCH` or `MULTI` is
    /// active, the transaction fails with [`ErrorKind::WatchLost`] instead of running
    /// unguarded. Waits, within the command deadline, while all `command.session_links` are
    /// lent.
    ///
    /// # Errors
    /// [`ErrorKind::DeadlineExceeded`] when no session link came free in time;
    /// [`ErrorKind::Shutdown`] after shutdown.
    pub async fn session(&self) -> Result<Session, Error> {
        let Some(dedicated) = &self.shared.dedicated else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a dedicated link lends no sessions",
            ));
        };
        let deadline = Instant::now() + self.shared.timeouts.deadline();
        Session::lend(dedicated, self.shared.emitter.clone(), deadline).await
    }

    /// A [`Subscriber`]: Pub/Sub on a link of its own whose subscriptions are made again on
    /// every new link, with a [`Gap`](crate::pubsub::Gap) in its stream wherever messages may
    /// have been missed. Subscribe with its methods; read with [`Subscriber::next`].
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] on a dedicated link's core (never for the application's
    /// client); TLS files that cannot be read.
    pub fn subscriber(&self) -> Result<Subscriber, Error> {
        self.subscriber_telling(None)
    }

    /// [`Client::subscriber`], telling `unsolicited` of subscriptions the server ends unasked
    /// (a cluster node's shard channels; the cluster subscriber places them again).
    pub(crate) fn subscriber_telling(
        &self,
        unsolicited: Option<crate::pubsub::Unsolicited>,
    ) -> Result<Subscriber, Error> {
        let Some(dedicated) = &self.shared.dedicated else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a dedicated link makes no subscribers",
            ));
        };
        let core = dedicated.start_subscriber()?;
        Ok(Subscriber::start(
            core,
            self.shared.emitter.clone(),
            unsolicited,
        ))
    }

    /// A receiver of every later [`Event`].
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.emitter.subscribe()
    }

    /// A receiver of RESP3 push frames (any kind that is not a maintenance notification),
    /// passed through untouched. Only RESP3 links ([`crate::Protocol::Resp3`]) carry them.
    ///
    /// Client-side caching: after `CLIENT TRACKING ON` (default or `BCAST` mode) the server's
    /// `invalidate` pushes arrive here, and tracking is replayed on every new link. The
    /// invalidations an old link would still have carried are lost with it, so when a link is
    /// closed for good (it died, or it was replaced and has drained) and when a new one is
    /// published, an `invalidate` with a null key list (the server's own "flush everything",
    /// as after `FLUSHALL`) arrives here too, counted in `steadfast_tracking_flushes_total`:
    /// drop the whole cache then. A lagging receiver (`RecvError::Lagged`) has lost
    /// invalidations too: drop the cache then as well.
    pub fn pushes(&self) -> broadcast::Receiver<PushInfo> {
        self.shared.pushes.subscribe()
    }

    /// Where the link stands now.
    pub fn state(&self) -> LinkState {
        self.shared.link.published.borrow().state
    }

    /// Waits until a link serves commands, or `limit` passes.
    ///
    /// # Errors
    /// [`ErrorKind::DeadlineExceeded`] when no link came up in time;
    /// [`ErrorKind::Shutdown`] after shutdown.
    pub async fn wait_connected(&self, limit: Duration) -> Result<(), Error> {
        let mut published = self.shared.link.published.clone();
        let ready = published
            .wait_for(|s| matches!(s.state, LinkState::Connected { .. } | LinkState::Shutdown));
        match tokio::time::timeout(limit, ready).await {
            Ok(Ok(s)) if s.state != LinkState::Shutdown => Ok(()),
            Ok(_) => Err(Error::new(ErrorKind::Shutdown, "the client was shut down")),
            Err(_) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "no link to {} within {limit:?}",
                    self.shared.config.endpoint_label()
                ),
            )),
        }
    }

    /// Ends every background task and closes every socket; commands still waiting fail with
    /// [`ErrorKind::Shutdown`]. Returns when all of it is done.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

/// What a dedicated core takes from the client that lends it.
#[derive(Clone)]
struct Parent {
    journal: Journal,
    /// Its connector: a dedicated core shares its MOVING target.
    connector: Connector,
    /// Blocking commands' hold: a blocking link busy under one is moved by its command
    /// (`None` for other dedicated links, which follow at once).
    hold: Option<tokio::sync::watch::Receiver<Option<shared::dedicated::Hold>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The client's shared link, which a dedicated link follows to a new address.
    published: tokio::sync::watch::Receiver<supervisor::Published>,
}

/// Builds a client core: the shared parts, the supervisor and the workers. `parent` is `None`
/// for the client the application holds, which gets dedicated cores of its own to lend
/// (`shared::dedicated`); a dedicated core replays its parent's journal, ends with it, and
/// has no Azure watch (the parent's tells the application of a planned switch).
fn start_core(
    config: Arc<Config>,
    mode: NodeMode,
    parent: Option<&Parent>,
) -> Result<(Arc<Shared>, broadcast::Receiver<Event>), Error> {
    let (emitter, first_receiver) = match parent {
        None => Emitter::new(),
        Some(_) => {
            let quiet = Emitter::quiet();
            let receiver = quiet.subscribe();
            (quiet, receiver)
        }
    };
    let (pushes, _) = broadcast::channel(match parent {
        // A subscriber's messages: its follower drains them at once.
        Some(_) if config.endpoint.protocol == crate::config::Protocol::Resp3 => {
            SUBSCRIBER_PUSH_CAPACITY
        }
        _ => PUSH_CAPACITY,
    });
    let cancel = parent.map_or_else(CancellationToken::new, |p| p.cancel.child_token());
    let tasks = parent.map_or_else(TaskTracker::new, |p| p.tasks.clone());
    let (notices_tx, notices_rx) = tokio::sync::mpsc::channel(maintenance::NOTICE_QUEUE);
    let routes = PushRoutes {
        application: pushes.clone(),
        maintenance: notices_tx,
    };
    let mut connector = Connector::new(Arc::clone(&config), routes, tasks.clone())?;
    if parent.is_none() {
        connector = connector.with_listener_aside();
    }
    if let Some(parent) = parent {
        connector = connector
            .with_journal(parent.journal.clone())
            .with_moves_of(&parent.connector);
    } else if mode == NodeMode::ClusterNode
        && config.cluster.read_from == crate::config::ReadFrom::Replica
    {
        connector = connector.with_read_only_session();
    }
    let progress = Progress::default();
    let link = supervisor::spawn(
        Arc::clone(&config),
        connector.clone(),
        emitter.clone(),
        cancel.clone(),
        &tasks,
        progress.clone(),
    );
    let dedicated = match parent {
        Some(_) => None,
        None => {
            let hold = tokio::sync::watch::Sender::new(None);
            let parent = Parent {
                journal: connector.journal.clone(),
                connector: connector.clone(),
                hold: Some(hold.subscribe()),
                cancel: cancel.clone(),
                tasks: tasks.clone(),
                published: link.published.clone(),
            };
            let own = Arc::clone(&config);
            let start: shared::dedicated::Start = Box::new(move |use_| {
                let config = match use_ {
                    // Subscribed, a RESP2 link could carry nothing else, not even a PING.
                    Use::Subscriber => {
                        let mut config = (*own).clone();
                        config.endpoint.protocol = crate::config::Protocol::Resp3;
                        Arc::new(config)
                    }
                    Use::Blocking | Use::Session => Arc::clone(&own),
                };
                let mut parent = parent.clone();
                if use_ != Use::Blocking {
                    parent.hold = None;
                }
                start_core(config, mode, Some(&parent)).map(|(core, _)| core)
            });
            Some(Dedicated::new(&config, start, hold))
        }
    };
    let shared = Arc::new(Shared {
        timeouts: Arc::new(Timeouts::new(&config)),
        queue: Semaphore::new(config.command.queue_capacity),
        mode,
        stalled: Arc::new(tokio::sync::Notify::new()),
        config,
        link,
        emitter,
        progress,
        journal: connector.journal.clone(),
        connector: connector.clone(),
        pushes,
        cancel: cancel.clone(),
        tasks: tasks.clone(),
        dedicated,
    });
    maintenance::spawn(
        shared.link_parts(),
        Arc::clone(&shared.timeouts),
        notices_rx,
        connector.clone(),
        shared.dedicated.as_ref().map(|d| d.hold.clone()),
        cancel.clone(),
        &tasks,
    );
    if parent.is_none() && maintenance::azure_watch::is_wanted(&shared.config) {
        let hold = shared.dedicated.as_ref().map(|d| d.hold.clone());
        maintenance::azure_watch::spawn(
            shared.link_parts(),
            Arc::clone(&shared.timeouts),
            &connector,
            hold,
            cancel.clone(),
            &tasks,
        );
    }
    if let Some(provider) = shared.config.endpoint.credentials.clone() {
        crate::reauth::spawn_refresher(
            shared.link_parts(),
            provider,
            shared.config.endpoint.credentials_refresh,
            cancel.clone(),
            &tasks,
        );
    }
    if let Some(parent) = parent {
        shared::dedicated::follow(
            parent.published.clone(),
            parent.hold.clone(),
            shared.link_parts(),
            cancel.clone(),
            &tasks,
        );
    }
    health::spawn(
        health::Watched {
            link: shared.link_parts(),
            timeouts: Arc::clone(&shared.timeouts),
            stalled: Arc::clone(&shared.stalled),
            connector,
        },
        cancel,
        &tasks,
    );
    Ok((shared, first_receiver))
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.config.endpoint_label())
            .field("state", &self.state())
            .finish()
    }
}

impl ConnectionLike for Client {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.send(cmd).await.map_err(Into::into) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let request = Request::Pipeline {
                pipeline,
                offset,
                count,
            };
            let reply = command::execute(&self.shared, request, self.is_ambiguous_allowed, None);
            Ok(reply.await?.into_values())
        })
    }

    fn get_db(&self) -> i64 {
        self.shared
            .journal
            .database()
            .unwrap_or(self.shared.config.endpoint.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_a_client_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Client::new(Config::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
