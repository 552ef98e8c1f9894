//! Pub/Sub on a cluster: each subscription placed on the node that serves it, and moved when
//! the cluster moves.
//!
//! # Behaviour
//! - A shard channel (`SSUBSCRIBE`) lives on the primary of its slot; a channel or a pattern
//!   (whose messages every node hears) on the primary of slot 0. Each node used gets one
//!   subscriber link of its own (`pubsub`), which makes its subscriptions again after its own
//!   reconnects and tells its own gaps.
//! - Every [`MOVE_CHECK`], and at once when a node ends a shard subscription unasked (the
//!   `SUNSUBSCRIBE` a node sends when the slot migrates away), each subscription's place is
//!   read from the routing table again; one whose node changed (a failover, a resharding) is
//!   made on the new node, then ended on the old one, and a [`Gap`] tells that messages
//!   published to it since the old node was last heard from (or ended it) until the new node
//!   confirmed may be missing. A subscription the new node refuses (`MOVED`: the table is
//!   behind) triggers a topology refresh and is tried again at the next check, its gap open.
//! - The messages of every node arrive in one stream. A gap follows the messages the old node
//!   delivered; the new node's first messages may come just before it (their order across
//!   nodes is not kept), its times say exactly what it covers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::redirect::NodeAddress;
use super::router::Router;
use super::routing::Routing;
use super::slot::key_slot;
use crate::error::{Error, ErrorKind};
use crate::event::Event;
use crate::pubsub::{Control, Delivery, Gap, GapCause, Kind};

/// How often every subscription's place is checked against the routing table.
pub(super) const MOVE_CHECK: Duration = Duration::from_millis(250);

/// A Pub/Sub subscriber on a cluster whose subscriptions follow failovers and slot
/// migrations. Made by [`ClusterClient::subscriber`](super::ClusterClient::subscriber); the
/// same calls and stream as [`crate::pubsub::Subscriber`].
///
/// ```no_run
/// use steadfast::pubsub::Delivery;
///
/// # async fn demo(client: steadfast::cluster::ClusterClient) -> Result<(), steadfast::Error> {
/// let mut subscriber = client.subscriber()?;
/// subscriber.ssubscribe(&["orders:{eu}"]).await?;
/// while let Some(delivery) = subscriber.next().await {
///     if let Delivery::Gap(gap) = delivery {
///         println!("may have missed {:?} on {:?}", gap.cause, gap.shard_channels);
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ClusterSubscriber {
    asks: mpsc::Sender<Ask>,
    deliveries: mpsc::Receiver<Delivery>,
    wanted: Arc<Mutex<BTreeSet<(Kind, String)>>>,
    stop: CancellationToken,
}

struct Ask {
    kind: Kind,
    names: Vec<String>,
    is_subscribe: bool,
    reply: oneshot::Sender<Result<(), Error>>,
}

impl ClusterSubscriber {
    pub(super) fn start(router: Arc<Router>) -> Self {
        let (asks, asked) = mpsc::channel(16);
        let (out, deliveries) = mpsc::channel(router.config.command.subscriber_buffer);
        let (unsolicited, told) = mpsc::unbounded_channel();
        let wanted = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = router.cancel.child_token();
        let placer = Placer {
            router: Arc::clone(&router),
            wanted: Arc::clone(&wanted),
            placed: HashMap::new(),
            displaced: HashMap::new(),
            homes: HashMap::new(),
            last_heard: HashMap::new(),
            out,
            unsolicited,
            pending: Vec::new(),
        };
        router.tasks.spawn(placer.run(asked, told, stop.clone()));
        Self {
            asks,
            deliveries,
            wanted,
            stop,
        }
    }

    async fn change(&self, kind: Kind, names: &[&str], is_subscribe: bool) -> Result<(), Error> {
        if names.is_empty() {
            return Err(Error::invalid_config(
                "channels",
                "[]",
                "name at least one channel or pattern",
            ));
        }
        let (reply, replied) = oneshot::channel();
        let ask = Ask {
            kind,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            is_subscribe,
            reply,
        };
        let gone = || Error::new(ErrorKind::Shutdown, "the cluster client was shut down");
        self.asks.send(ask).await.map_err(|_| gone())?;
        replied.await.map_err(|_| gone())?
    }

    /// Subscribes to `channels` (any node hears them).
    ///
    /// # Errors
    /// As for any command; the channels are then not kept.
    pub async fn subscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.change(Kind::Channel, channels, true).await
    }

    /// Subscribes to `patterns`.
    ///
    /// # Errors
    /// As [`ClusterSubscriber::subscribe`].
    pub async fn psubscribe(&mut self, patterns: &[&str]) -> Result<(), Error> {
        self.change(Kind::Pattern, patterns, true).await
    }

    /// Subscribes to shard `channels`, each on the primary of its slot.
    ///
    /// # Errors
    /// As [`ClusterSubscriber::subscribe`].
    pub async fn ssubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.change(Kind::Shard, channels, true).await
    }

    /// Ends the subscriptions to `channels`.
    ///
    /// # Errors
    /// As [`ClusterSubscriber::subscribe`].
    pub async fn unsubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.change(Kind::Channel, channels, false).await
    }

    /// Ends the subscriptions to `patterns`.
    ///
    /// # Errors
    /// As [`ClusterSubscriber::subscribe`].
    pub async fn punsubscribe(&mut self, patterns: &[&str]) -> Result<(), Error> {
        self.change(Kind::Pattern, patterns, false).await
    }

    /// Ends the subscriptions to shard `channels`.
    ///
    /// # Errors
    /// As [`ClusterSubscriber::subscribe`].
    pub async fn sunsubscribe(&mut self, channels: &[&str]) -> Result<(), Error> {
        self.change(Kind::Shard, channels, false).await
    }

    /// The next message or gap, from any node; `None` once the cluster client was shut down.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }

    /// The subscriptions in force.
    pub fn subscriptions(&self) -> Vec<(Kind, String)> {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.iter().cloned().collect()
    }
}

impl std::fmt::Debug for ClusterSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSubscriber")
            .field("subscriptions", &self.subscriptions())
            .finish()
    }
}

impl Drop for ClusterSubscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Where a subscription of `kind` to `name` belongs in `routing`.
fn place(routing: &Routing, kind: Kind, name: &str) -> Option<NodeAddress> {
    let slot = match kind {
        Kind::Shard => key_slot(name.as_bytes()),
        Kind::Channel | Kind::Pattern => 0,
    };
    routing.shard_for(slot).map(|shard| shard.primary.clone())
}

/// One node's subscriber link.
struct Home {
    control: Control,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Drop for Home {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// The task that places every subscription; it owns the homes.
struct Placer {
    router: Arc<Router>,
    wanted: Arc<Mutex<BTreeSet<(Kind, String)>>>,
    /// Where each subscription is made now.
    placed: HashMap<(Kind, String), NodeAddress>,
    /// Subscriptions down since this time (moved away, ended unasked, refused), not yet made
    /// again.
    displaced: HashMap<(Kind, String), SystemTime>,
    homes: HashMap<NodeAddress, Home>,
    /// When each home's link last read anything, as of the last check.
    last_heard: HashMap<NodeAddress, SystemTime>,
    out: mpsc::Sender<Delivery>,
    unsolicited: crate::pubsub::Unsolicited,
    /// Gaps the stream had no room for yet.
    pending: Vec<Gap>,
}

impl Placer {
    async fn run(
        mut self,
        mut asked: mpsc::Receiver<Ask>,
        mut told: mpsc::UnboundedReceiver<(Kind, String, SystemTime)>,
        stop: CancellationToken,
    ) {
        let mut check = tokio::time::interval(MOVE_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                ask = asked.recv() => {
                    let Some(ask) = ask else { return };
                    let done = self.change(&ask).await;
                    let _ = ask.reply.send(done);
                    continue;
                }
                ended = told.recv() => {
                    if let Some((kind, name, at)) = ended {
                        self.placed.remove(&(kind, name.clone()));
                        self.displaced.entry((kind, name)).or_insert(at);
                        self.router.trigger.notify_one();
                    }
                }
                _ = check.tick() => {}
            }
            self.check().await;
        }
    }

    /// The subscriber link of `node`, made on first use.
    fn home(&mut self, node: &NodeAddress) -> Result<&Home, Error> {
        if !self.homes.contains_key(node) {
            let client = self.router.nodes.client(node)?;
            let subscriber = client.subscriber_telling(Some(self.unsolicited.clone()))?;
            let (control, mut deliveries) = subscriber.into_parts();
            let out = self.out.clone();
            let forwarder = self.router.tasks.spawn(async move {
                while let Some(delivery) = deliveries.recv().await {
                    if out.send(delivery).await.is_err() {
                        return;
                    }
                }
            });
            self.homes.insert(node.clone(), Home { control, forwarder });
        }
        self.homes
            .get(node)
            .ok_or_else(|| Error::new(ErrorKind::Shutdown, "no subscriber link"))
    }

    async fn change(&mut self, ask: &Ask) -> Result<(), Error> {
        let routing = self.router.routing();
        for name in &ask.names {
            let key = (ask.kind, name.clone());
            if ask.is_subscribe {
                let node = place(&routing, ask.kind, name).ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotAttempted,
                        format!("no shard serves the slot of {name} now"),
                    )
                })?;
                let home = self.home(&node)?;
                home.control
                    .change(ask.kind, &[name.as_str()], true)
                    .await?;
                self.placed.insert(key.clone(), node);
                self.lock_wanted().insert(key);
            } else {
                self.lock_wanted().remove(&key);
                self.displaced.remove(&key);
                if let Some(node) = self.placed.remove(&key)
                    && let Some(home) = self.homes.get(&node)
                {
                    home.control
                        .change(ask.kind, &[name.as_str()], false)
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Kind, String)>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves every subscription whose place changed, and tells the gaps.
    async fn check(&mut self) {
        let now = SystemTime::now();
        for (node, home) in &self.homes {
            if let Some(heard) = home.control.last_read() {
                self.last_heard.insert(node.clone(), heard);
            }
        }
        let routing = self.router.routing();
        let wanted: Vec<(Kind, String)> = self.lock_wanted().iter().cloned().collect();
        for key in wanted {
            let Some(node) = place(&routing, key.0, &key.1) else {
                continue;
            };
            let old = self.placed.get(&key).cloned();
            if old.as_ref() == Some(&node) && !self.displaced.contains_key(&key) {
                continue;
            }
            // Down since the old node was last heard from, or since it ended it.
            let since = self.displaced.get(&key).copied().unwrap_or_else(|| {
                old.as_ref()
                    .and_then(|o| self.last_heard.get(o).copied())
                    .unwrap_or(now)
            });
            self.displaced.entry(key.clone()).or_insert(since);
            let made = match self.home(&node) {
                Ok(home) => home.control.change(key.0, &[key.1.as_str()], true).await,
                Err(error) => Err(error),
            };
            if let Err(error) = made {
                tracing::info!(%error, channel = %key.1, "subscription not placed yet");
                self.router.trigger.notify_one();
                continue;
            }
            if let Some(old) = old.filter(|o| *o != node)
                && let Some(home) = self.homes.get(&old)
            {
                // Its node may be gone: ended in the background, never waited for.
                let control_core = home.control.detached_end(key.0, key.1.clone());
                self.router.tasks.spawn(control_core);
            }
            self.placed.insert(key.clone(), node.clone());
            let from = self.displaced.remove(&key).unwrap_or(since);
            self.tell(&key, from, &node);
        }
        // A node no subscription uses any more keeps no link.
        let used: std::collections::HashSet<&NodeAddress> = self.placed.values().collect();
        let idle: Vec<NodeAddress> = self
            .homes
            .keys()
            .filter(|node| !used.contains(node))
            .cloned()
            .collect();
        for node in idle {
            self.homes.remove(&node);
            self.last_heard.remove(&node);
        }
        self.pending
            .retain(|gap| self.out.try_send(Delivery::Gap(gap.clone())).is_err());
    }

    fn tell(&mut self, key: &(Kind, String), from: SystemTime, node: &NodeAddress) {
        let (mut channels, mut patterns, mut shard_channels) = (Vec::new(), Vec::new(), Vec::new());
        match key.0 {
            Kind::Channel => channels.push(key.1.clone()),
            Kind::Pattern => patterns.push(key.1.clone()),
            Kind::Shard => shard_channels.push(key.1.clone()),
        }
        let gap = Gap {
            channels,
            patterns,
            shard_channels,
            from,
            until: SystemTime::now(),
            cause: GapCause::LinkLost(format!("moved to {node}")),
        };
        self.router.events.emit(Event::SubscriptionGap {
            subscriptions: 1,
            lasted: gap.until.duration_since(gap.from).unwrap_or_default(),
            is_slow_consumer: false,
        });
        tracing::info!(?gap, "a subscription moved to another node");
        if self.out.try_send(Delivery::Gap(gap.clone())).is_err() {
            self.pending.push(gap);
        }
    }
}
