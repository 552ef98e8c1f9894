//! Pub/Sub that follows failovers and tells what it missed.
//!
//! # Behaviour
//! - [`Client::subscriber`](crate::Client::subscriber) makes a [`Subscriber`] with a link of its
//!   own (RESP3, whatever the client's protocol: subscribed, a RESP2 link could carry nothing
//!   else, not even the heartbeat's question), made, watched and replaced by the same supervisor
//!   and health monitor as the shared link. A subscribed link is idle from the client's side:
//!   the heartbeat is what finds a half-open one.
//! - Every subscription (channels, patterns, shard channels) is made again on every new link:
//!   after a restart, a dead or half-open link, a demotion, a failover, a maintenance move.
//! - Messages published while no link was subscribed are gone for good. Where that happened,
//!   the stream of [`Delivery`]s holds, in order, a [`Gap`]: which subscriptions were down and
//!   from when (the last bytes read on the old link: anything published later may be missing)
//!   until when (the new link confirmed them: everything published later arrives). The
//!   application can re-read the state it would have learnt from the lost messages. Each gap
//!   is also an [`Event::SubscriptionGap`](crate::Event::SubscriptionGap) and a metric.
//! - A slow consumer: the subscriber keeps up to `command.subscriber_buffer` deliveries for the
//!   application. Beyond that, newer messages are dropped (the link is never slowed, and
//!   re-subscribing never waits for the application), counted, and a [`Gap`] with
//!   [`GapCause::SlowConsumer`] takes their place in the stream as soon as there is room.
//! - Dropping the subscriber closes its link.

mod follower;
pub(crate) mod frames;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::command::{self, Request};
use crate::error::{Error, ErrorKind};
use crate::shared::Shared;

/// What kind of subscription a message came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// `SUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE` (sharded Pub/Sub).
    Shard,
}

impl Kind {
    fn subscribe(self) -> &'static str {
        match self {
            Self::Channel => "SUBSCRIBE",
            Self::Pattern => "PSUBSCRIBE",
            Self::Shard => "SSUBSCRIBE",
        }
    }

    fn unsubscribe(self) -> &'static str {
        match self {
            Self::Channel => "UNSUBSCRIBE",
            Self::Pattern => "PUNSUBSCRIBE",
            Self::Shard => "SUNSUBSCRIBE",
        }
    }
}

/// A published message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The subscription it came through.
    pub kind: Kind,
    /// The channel it was published to (read as UTF-8, invalid bytes replaced).
    pub channel: String,
    /// The pattern that matched, for [`Kind::Pattern`].
    pub pattern: Option<String>,
    /// What was published.
    pub payload: Vec<u8>,
}

/// Why messages may be missing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapCause {
    /// The subscribed link was lost (or replaced) and the subscriptions were made again on a new
    /// one; the text says why.
    LinkLost(String),
    /// The application did not keep up: this many messages were dropped.
    SlowConsumer {
        /// Messages dropped.
        dropped: u64,
    },
}

/// Where messages may be missing from the stream, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// Channels whose messages may be missing.
    pub channels: Vec<String>,
    /// Patterns whose messages may be missing.
    pub patterns: Vec<String>,
    /// Shard channels whose messages may be missing.
    pub shard_channels: Vec<String>,
    /// Messages published from here on may be missing.
    pub from: SystemTime,
    /// Messages published from here on arrive again.
    pub until: SystemTime,
    /// Why.
    pub cause: GapCause,
}

/// One item of a subscriber's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// A message.
    Message(Message),
    /// Messages may be missing here.
    Gap(Gap),
}

/// The subscriptions a subscriber wants, made again on every new link.
#[derive(Debug, Default)]
pub(crate) struct Wanted(BTreeSet<(Kind, String)>);

/// A Pub/Sub subscriber whose subscriptions follow failovers. Made by
/// [`Client::subscriber`](crate::Client::subscriber).
///
/// ```no_run
/// use steadfast::pubsub::Delivery;
///
/// # async fn demo(client: steadfast::Client) -> Result<(), steadfast::Error> {
/// let mut subscriber = client.subscriber()?;
/// subscriber.subscribe(&["orders"]).await?;
/// subscriber.psubscribe(&["prices.*"]).await?;
/// while let Some(delivery) = subscriber.next().await {
///     match delivery {
///         Delivery::Message(message) => println!("{}: {:?}", message.channel, message.payload),
///         // Messages published between gap.from and gap.until may be missing: re-read the
///         // state they would have told (a snapshot, a stream, a database).
///         Delivery::Gap(gap) => println!("missed {:?} ({:?})", gap.channels, gap.cause),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Subscriber {
    control: Control,
    deliveries: mpsc::Receiver<Delivery>,
}

/// What changes a subscriber's subscriptions; dropping it closes the subscriber's link.
pub(crate) struct Control {
    core: Arc<Shared>,
    wanted: Arc<Mutex<Wanted>>,
    stop: CancellationToken,
}

/// A subscription the server ended without being asked (`SUNSUBSCRIBE` when a shard channel's
/// slot moved away), and when: messages published to it since may be missing.
pub(crate) type Unsolicited = mpsc::UnboundedSender<(Kind, String, SystemTime)>;

impl Subscriber {
    /// Starts a subscriber on `core`, a dedicated core of its own (RESP3). `unsolicited` hears
    /// of subscriptions the server ended (a cluster's shard channels); without it they are made
    /// again on the next link.
    pub(crate) fn start(
        core: Arc<Shared>,
        emitter: crate::emitter::Emitter,
        unsolicited: Option<Unsolicited>,
    ) -> Self {
        let wanted = Arc::new(Mutex::new(Wanted::default()));
        let buffer = core.config.command.subscriber_buffer;
        let (deliver, deliveries) = mpsc::channel(buffer);
        let stop = core.cancel.child_token();
        follower::spawn(follower::Follower {
            core: Arc::clone(&core),
            wanted: Arc::clone(&wanted),
            deliver,
            emitter,
            stop: stop.clone(),
            unsolicited,
            last_frame: Mutex::new(None),
        });
        Self {
            control: Control { core, wanted, stop },
            deliveries,
        }
    }

    /// Its two halves: what changes the subscriptions, and the stream.
    pub(crate) fn into_parts(self) -> (Control, mpsc::Receiver<Delivery>) {
        (self.control, self.deliveries)
    }

    /// Subscribes to `channels`; returns once the server confirmed every one.
    ///
    /// # Errors
    /// As for any command (no link within the deadline ...); the channels are then not kept.
    pub async fn subscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Channel, channels, true).await
    }

    /// Subscribes to `patterns` (`PSUBSCRIBE`).
    ///
    /// # Errors
    /// As [`Subscriber::subscribe`].
    pub async fn psubscribe(&mut self, patterns: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Pattern, patterns, true).await
    }

    /// Subscribes to shard `channels` (`SSUBSCRIBE`, Redis 7 or later).
    ///
    /// # Errors
    /// As [`Subscriber::subscribe`].
    pub async fn ssubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Shard, channels, true).await
    }

    /// Ends the subscriptions to `channels`.
    ///
    /// # Errors
    /// As [`Subscriber::subscribe`]; they are not made again on a new link either way.
    pub async fn unsubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Channel, channels, false).await
    }

    /// Ends the subscriptions to `patterns`.
    ///
    /// # Errors
    /// As [`Subscriber::unsubscribe`].
    pub async fn punsubscribe(&mut self, patterns: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Pattern, patterns, false).await
    }

    /// Ends the subscriptions to shard `channels`.
    ///
    /// # Errors
    /// As [`Subscriber::unsubscribe`].
    pub async fn sunsubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.control.change(Kind::Shard, channels, false).await
    }

    /// The next message or gap; `None` once the subscriber's client was shut down.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }

    /// The subscriptions in force (made again on every new link).
    pub fn subscriptions(&self) -> Vec<(Kind, String)> {
        self.control.subscriptions()
    }
}

impl Control {
    /// The subscriptions in force.
    pub(crate) fn subscriptions(&self) -> Vec<(Kind, String)> {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.0.iter().cloned().collect()
    }

    /// When the link serving now last read anything (`None`: no link serves).
    pub(crate) fn last_read(&self) -> Option<SystemTime> {
        let link = self.core.link.current().filter(|l| !l.is_closed())?;
        Some(follower::wall(link.activity.last_read()))
    }

    /// Ends the subscription of `kind` to `name` at once (it is not made again on a new link)
    /// and returns the future that tells the server, to run in the background: its node may be
    /// gone.
    pub(crate) fn detached_end(
        &self,
        kind: Kind,
        name: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&(kind, name.clone()));
        let core = Arc::clone(&self.core);
        async move {
            let _ = send(&core, kind.unsubscribe(), &[name]).await;
        }
    }

    /// Subscribes (or ends the subscriptions) of `kind` to `names`, one confirmation each.
    pub(crate) async fn change(
        &self,
        kind: Kind,
        names: &[&str],
        is_subscribe: bool,
    ) -> Result<(), Error> {
        if names.is_empty() {
            return Err(Error::invalid_config(
                "channels",
                "[]",
                "name at least one channel or pattern",
            ));
        }
        {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            for name in names {
                let key = (kind, (*name).to_owned());
                if is_subscribe {
                    wanted.0.insert(key);
                } else {
                    wanted.0.remove(&key);
                }
            }
        }
        let verb = if is_subscribe {
            kind.subscribe()
        } else {
            kind.unsubscribe()
        };
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let sent = send(&self.core, verb, &names).await;
        if sent.is_err() && is_subscribe {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            for name in &names {
                wanted.0.remove(&(kind, name.clone()));
            }
        }
        sent
    }
}

/// Sends `verb` for each of `names` on `core`'s link, one command per name (each answered by
/// exactly one confirmation), in one pipeline.
pub(crate) async fn send(core: &Shared, verb: &str, names: &[String]) -> Result<(), Error> {
    let mut pipeline = redis::pipe();
    for name in names {
        pipeline.cmd(verb).arg(name);
    }
    let request = Request::Pipeline {
        pipeline: &pipeline,
        offset: 0,
        count: names.len(),
    };
    let reply = command::subscribe(core, request).await?;
    match reply.into_values().into_iter().find_map(|v| match v {
        redis::Value::ServerError(error) => Some(error),
        _ => None,
    }) {
        Some(error) => Err(Error::from_redis(ErrorKind::Server, verb, error.into())),
        None => Ok(()),
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("subscriptions", &self.subscriptions())
            .finish()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.cancel();
        self.core.cancel.cancel();
    }
}
