//! What a downstream connection's commands go to: a single endpoint's client of the
//! connection's own, or the cluster client every connection shares.
//!
//! # Behaviour
//! - A single endpoint: commands that leave a link's state alone ([`steadfast::is_shareable`]:
//!   `GET`, `SET`, `INCR` ... not `SELECT`, `CLIENT SETNAME`, blocking commands, transactions
//!   or subscriptions) go on one client per protocol that every connection shares (the proxy's
//!   upstream default database, no name), whose link carries many connections' commands
//!   together. A connection's first other command gives it a [`steadfast::Client`] of its own,
//!   made with its protocol, database and name, so every link the library makes for it
//!   carries them; the connection keeps it from then on.
//! - A cluster (`--cluster`): one [`ClusterClient`] per protocol (RESP2 and RESP3 replies differ
//!   in shape, so a connection's replies come from links of its own protocol), made on first
//!   need and shared by every connection: commands are routed by slot, cross-slot `MGET` /
//!   `MSET` / `DEL` / `UNLINK` / `EXISTS` / `TOUCH` split and joined, any other cross-slot
//!   command refused unsent (`CROSSSLOT`). A connection's name stays with the proxy (the links
//!   are shared); the database is 0, as on any cluster.
//! - Transactions run on a session of the slot of their first key (`WATCH`'s, or the first
//!   queued command's); Pub/Sub on a subscriber of the connection's own, which follows
//!   failovers and slot moves.

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, Value};
use std::sync::OnceLock;
use steadfast::cluster::{ClusterClient, ClusterSession, ClusterSubscriber};
use steadfast::pubsub::{Delivery, Kind, Subscriber};
use steadfast::{Error, Session};

use tokio::sync::OnceCell;

use crate::resp::Protocol;

/// A connection's way to the server.
#[derive(Clone)]
pub(crate) enum Backend {
    Endpoint(steadfast::Client),
    Cluster(ClusterClient),
}

impl Backend {
    pub(crate) async fn query(&self, cmd: &Cmd) -> Result<Value, Error> {
        match self {
            Self::Endpoint(client) => client.query(cmd).await,
            Self::Cluster(client) => client.query(cmd).await,
        }
    }

    /// `count` commands of `pipeline`, one reply each (server errors among them as values).
    pub(crate) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        match self {
            Self::Endpoint(client) => client.clone().req_packed_commands(pipeline, 0, count).await,
            Self::Cluster(client) => client.clone().req_packed_commands(pipeline, 0, count).await,
        }
    }

    /// A session for a transaction; on a cluster, for the slot of `key`.
    pub(crate) async fn session(&self, key: &[u8]) -> Result<TxSession, Error> {
        match self {
            Self::Endpoint(client) => client.session().await.map(TxSession::Endpoint),
            Self::Cluster(client) => Ok(TxSession::Cluster(client.session(key))),
        }
    }

    pub(crate) fn subscriber(&self) -> Result<Subscription, Error> {
        match self {
            Self::Endpoint(client) => client.subscriber().map(Subscription::Endpoint),
            Self::Cluster(client) => client.subscriber().map(Subscription::Cluster),
        }
    }

    /// Whether the connection's own state (name, database) reaches the server's links.
    pub(crate) fn is_own(&self) -> bool {
        matches!(self, Self::Endpoint(_))
    }

    /// The connection's own client's push frames (tracking's invalidations); `None` on a
    /// cluster.
    pub(crate) fn pushes(&self) -> Option<tokio::sync::broadcast::Receiver<redis::PushInfo>> {
        match self {
            Self::Endpoint(client) => Some(client.pushes()),
            Self::Cluster(_) => None,
        }
    }

    /// Ends a connection's own client; a shared cluster client stays.
    pub(crate) async fn shutdown(&self) {
        if let Self::Endpoint(client) = self {
            client.shutdown().await;
        }
    }
}

/// A transaction's session.
pub(crate) enum TxSession {
    Endpoint(Session),
    Cluster(ClusterSession),
}

impl TxSession {
    pub(crate) async fn query(&mut self, cmd: &Cmd) -> Result<Value, Error> {
        match self {
            Self::Endpoint(session) => session.query(cmd).await,
            Self::Cluster(session) => session.query(cmd).await,
        }
    }
}

/// A connection's subscriptions upstream.
pub(crate) enum Subscription {
    Endpoint(Subscriber),
    Cluster(ClusterSubscriber),
}

impl Subscription {
    /// Subscribes to (or ends) `names` of `kind`.
    pub(crate) async fn change(
        &mut self,
        kind: Kind,
        is_subscribe: bool,
        names: &[&str],
    ) -> Result<(), Error> {
        macro_rules! change {
            ($subscriber:expr) => {
                match (kind, is_subscribe) {
                    (Kind::Pattern, true) => $subscriber.psubscribe(names).await,
                    (Kind::Shard, true) => $subscriber.ssubscribe(names).await,
                    (Kind::Pattern, false) => $subscriber.punsubscribe(names).await,
                    (Kind::Shard, false) => $subscriber.sunsubscribe(names).await,
                    (_, true) => $subscriber.subscribe(names).await,
                    (_, false) => $subscriber.unsubscribe(names).await,
                }
            };
        }
        match self {
            Self::Endpoint(subscriber) => change!(subscriber),
            Self::Cluster(subscriber) => change!(subscriber),
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        match self {
            Self::Endpoint(subscriber) => subscriber.next().await,
            Self::Cluster(subscriber) => subscriber.next().await,
        }
    }

    pub(crate) fn subscriptions(&self) -> Vec<(Kind, String)> {
        match self {
            Self::Endpoint(subscriber) => subscriber.subscriptions(),
            Self::Cluster(subscriber) => subscriber.subscriptions(),
        }
    }
}

/// The single endpoint's shared clients, one per protocol, made on first need.
#[derive(Default)]
pub(crate) struct Endpoints {
    resp2: OnceLock<steadfast::Client>,
    resp3: OnceLock<steadfast::Client>,
}

impl Endpoints {
    /// The shared client for `protocol`: `config` as it is (its database, no name), its queue
    /// as deep as the proxy's bound on held commands.
    pub(crate) fn get(
        &self,
        protocol: Protocol,
        config: &steadfast::Config,
        max_queued: usize,
    ) -> Result<steadfast::Client, Error> {
        let (cell, wanted) = match protocol {
            Protocol::Resp2 => (&self.resp2, steadfast::Protocol::Resp2),
            Protocol::Resp3 => (&self.resp3, steadfast::Protocol::Resp3),
        };
        if let Some(client) = cell.get() {
            return Ok(client.clone());
        }
        let mut config = config.clone();
        config.endpoint.protocol = wanted;
        config.command.queue_capacity = config.command.queue_capacity.max(max_queued);
        let client = steadfast::Client::new(config)?;
        let mut is_kept = false;
        let kept = cell
            .get_or_init(|| {
                is_kept = true;
                client.clone()
            })
            .clone();
        if !is_kept {
            // Another connection made one first: this one is not needed.
            tokio::spawn(async move { client.shutdown().await });
        }
        Ok(kept)
    }

    /// Shuts every shared client down.
    pub(crate) async fn shutdown(&self) {
        for cell in [&self.resp2, &self.resp3] {
            if let Some(client) = cell.get() {
                client.shutdown().await;
            }
        }
    }
}

/// The shared cluster clients, one per protocol, made on first need.
#[derive(Default)]
pub(crate) struct Clusters {
    resp2: OnceCell<ClusterClient>,
    resp3: OnceCell<ClusterClient>,
}

impl Clusters {
    /// The cluster client for `protocol`, connecting it if it is the first need (within the
    /// command deadline: every connection asking meanwhile waits for the same attempt).
    pub(crate) async fn get(
        &self,
        protocol: Protocol,
        config: &steadfast::Config,
    ) -> Result<ClusterClient, Error> {
        let (cell, wanted) = match protocol {
            Protocol::Resp2 => (&self.resp2, steadfast::Protocol::Resp2),
            Protocol::Resp3 => (&self.resp3, steadfast::Protocol::Resp3),
        };
        cell.get_or_try_init(|| async {
            let mut config = config.clone();
            config.endpoint.protocol = wanted;
            ClusterClient::connect(config).await
        })
        .await
        .cloned()
    }

    /// Shuts every cluster client down.
    pub(crate) async fn shutdown(&self) {
        for cell in [&self.resp2, &self.resp3] {
            if let Some(client) = cell.get() {
                client.shutdown().await;
            }
        }
    }
}
