//! Stateful workloads beside the request/response ones: Pub/Sub, a queue consumed with blocking
//! pops, and optimistic transactions under `WATCH`, each done by steadfast and by redis-rs the
//! way a redis-rs user would (its `PubSub`, a dedicated connection per blocking worker, a
//! `ConnectionManager` per `WATCH` task), then accounted for.
//!
//! # Behaviour
//! - They run through the single-endpoint scenarios that [`Scenario::has_stateful`] names, on
//!   keys and channels of their own, started with the other workloads and stopped with them.
//! - *pubsub*: a publisher sends a numbered message every 5 ms on a channel (through the
//!   client's command path); the subscriber (a channel and a pattern matching it) counts what
//!   arrived and what is missing, and whether each missing message was published inside a gap
//!   the subscriber reported. steadfast's goals: nothing missing outside a gap; messages again
//!   within 250 ms of the service being back.
//! - *queue*: a producer `LPUSH`es uniquely numbered items every 5 ms; three workers `BLPOP`
//!   and one `BLMOVE`s into a list of its own, each with a 1 s timeout. At the end every
//!   acknowledged item is consumed once or still queued, or it is lost; steadfast's goals:
//!   nothing consumed twice, no more lost than pops reported "outcome unknown", no worker
//!   stopped, and after a planned event no blocked pop left with an unknown outcome.
//! - *stream*: a producer `XADD`s numbered entries every 5 ms; a worker reads them with
//!   `XREADGROUP ... BLOCK 1000` and `XACK`s each. Goals: no entry read twice, the worker never
//!   stopped; entries a read delivered to a link that died stay pending (claimable), counted.
//! - *watch*: four tasks increment one counter with `WATCH` / `GET` / `MULTI` `SET` `EXEC`,
//!   starting over when the transaction aborts or its guard was lost. Goal: the counter equals
//!   the committed transactions (plus at most those whose `EXEC` outcome is unknown).

mod pubsub;
mod queue;
mod stream;
mod watch;

use std::time::Duration;

use serde::Serialize;
use steadfast::RedisErrorExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::ClientKind;
use super::report::Goal;
use super::scenario::Scenario;

/// The pause between a producer's or a publisher's sends.
const PACE: Duration = Duration::from_millis(5);

/// How long a stopped workload's last commands may take (past steadfast's 5 s deadline).
const GRACE: Duration = Duration::from_secs(6);

/// Who does the work: steadfast, or redis-rs as its user would.
#[derive(Clone)]
pub(crate) enum Doer {
    Steadfast(steadfast::Client),
    RedisRs(redis::Client),
    SteadfastCluster(steadfast::cluster::ClusterClient),
    /// The client, and the URL it was made from.
    RedisRsCluster(Box<redis::cluster::ClusterClient>, String),
}

impl Doer {
    fn kind(&self) -> ClientKind {
        match self {
            Self::Steadfast(_) | Self::SteadfastCluster(_) => ClientKind::Steadfast,
            Self::RedisRs(_) => ClientKind::RedisRsManager,
            Self::RedisRsCluster(..) => ClientKind::RedisRsCluster,
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Self::SteadfastCluster(_) | Self::RedisRsCluster(..))
    }

    /// One command through steadfast's command path; `None` for redis-rs (each workload uses
    /// redis-rs as its user would).
    async fn steadfast_query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Option<Result<T, steadfast::Error>> {
        match self {
            Self::Steadfast(client) => Some(client.query(cmd).await),
            Self::SteadfastCluster(client) => Some(client.query(cmd).await),
            Self::RedisRs(_) | Self::RedisRsCluster(..) => None,
        }
    }
}

/// The three workloads of one client, running.
pub(crate) struct Stateful {
    doer: Doer,
    stop: CancellationToken,
    pubsub: pubsub::Running,
    queue: queue::Running,
    stream: stream::Running,
    /// Not on a cluster: sessions are single-endpoint for now.
    watch: Option<watch::Running>,
}

impl Stateful {
    /// Starts the workloads for `kind` against `url`, on keys tagged `tag`; on a cluster of
    /// `shards`, every key and channel in one slot of shard 0 (the shard the faults touch).
    /// `opt_in` as for the scenario's other steadfast clients (the Azure events listener).
    pub(crate) async fn start(
        kind: ClientKind,
        url: &str,
        tag: &str,
        shards: Option<usize>,
        opt_in: super::client::OptIn,
    ) -> Result<Self, String> {
        let config = || -> Result<steadfast::Config, String> {
            let mut config = steadfast::Config::from_url(url).map_err(|e| e.to_string())?;
            if opt_in.is_azure_events {
                config.maintenance.azure_events = steadfast::AzureEvents::On;
            }
            if opt_in.is_resp3 {
                config.endpoint.protocol = steadfast::Protocol::Resp3;
            }
            Ok(config)
        };
        let doer = match (kind, shards) {
            (ClientKind::Steadfast, None) => {
                let config = config()?;
                Doer::Steadfast(steadfast::Client::new(config).map_err(|e| e.to_string())?)
            }
            (ClientKind::Steadfast, Some(_)) => {
                let config = config()?;
                let client = steadfast::cluster::ClusterClient::connect(config)
                    .await
                    .map_err(|e| e.to_string())?;
                Doer::SteadfastCluster(client)
            }
            (_, None) => Doer::RedisRs(redis::Client::open(url).map_err(|e| e.to_string())?),
            (_, Some(_)) => Doer::RedisRsCluster(
                Box::new(redis::cluster::ClusterClient::new(vec![url]).map_err(|e| e.to_string())?),
                url.to_owned(),
            ),
        };
        let tag = match shards {
            // A hash tag on a key of shard 0: one slot for everything.
            Some(_) => {
                let (key, _) = super::workload::task_keys(
                    super::workload::WorkloadKind::Concurrent,
                    tag,
                    0,
                    shards,
                )
                .into_iter()
                .next()
                .unwrap_or_default();
                format!("{{{key}}}")
            }
            None => tag.to_owned(),
        };
        let stop = CancellationToken::new();
        let watch = Some(watch::Running::start(&doer, &tag, &stop).await);
        Ok(Self {
            pubsub: pubsub::Running::start(&doer, &tag, &stop).await,
            queue: queue::Running::start(&doer, &tag, &stop).await,
            stream: stream::Running::start(&doer, &tag, &stop).await,
            watch,
            doer,
            stop,
        })
    }

    /// Starts nothing new from now on (every client's workloads are halted before any is
    /// waited for, so that none runs on through another's grace period).
    pub(crate) fn halt(&self) {
        self.stop.cancel();
    }

    /// Stops the workloads and accounts for what they did, reading the servers at `servers`.
    pub(crate) async fn stop(
        self,
        scenario: Scenario,
        servers: &[std::net::SocketAddr],
        restored: Instant,
    ) -> StatefulReport {
        self.stop.cancel();
        let pubsub = self.pubsub.stop(restored).await;
        let queue = self.queue.stop(servers, restored).await;
        let stream = self.stream.stop(servers, restored).await;
        let watch = match self.watch {
            Some(running) => Some(running.stop(servers).await),
            None => None,
        };
        let client = self.doer.kind();
        match &self.doer {
            Doer::Steadfast(client) => client.shutdown().await,
            Doer::SteadfastCluster(client) => client.shutdown().await,
            Doer::RedisRs(_) | Doer::RedisRsCluster(..) => {}
        }
        let mut report = StatefulReport {
            client,
            pubsub,
            queue,
            stream,
            watch,
            goals: Vec::new(),
        };
        if client == ClientKind::Steadfast {
            report.goals = goals(scenario, &report);
        }
        report
    }
}

/// One client's stateful workloads in one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct StatefulReport {
    /// Which client.
    pub client: ClientKind,
    /// Pub/Sub.
    pub pubsub: pubsub::PubSubCount,
    /// The queue.
    pub queue: queue::QueueCount,
    /// The stream read with `XREADGROUP ... BLOCK`.
    pub stream: stream::StreamCount,
    /// `WATCH` transactions (not on a cluster).
    pub watch: Option<watch::WatchCount>,
    /// steadfast's goals (empty for the others).
    pub goals: Vec<Goal>,
}

fn goals(scenario: Scenario, r: &StatefulReport) -> Vec<Goal> {
    let (p, q) = (&r.pubsub, &r.queue);
    let mut goals = vec![
        Goal {
            goal: "pubsub: 0 messages missing outside a reported gap".into(),
            measured: format!(
                "published {}, received {}, missing {} ({} outside gaps), {} gaps",
                p.published, p.received, p.missing, p.missing_outside_gaps, p.gaps
            ),
            is_met: p.missing_outside_gaps == 0 && p.received > 0,
            is_held: true,
        },
        Goal {
            goal: "pubsub: messages again within 250 ms of the service being back".into(),
            measured: p
                .resumed_ms
                .map_or("never".to_owned(), |ms| format!("{ms:.1} ms")),
            is_met: p.resumed_ms.is_some_and(|ms| ms <= 250.0),
            is_held: true,
        },
        Goal {
            goal: "queue: nothing consumed twice, lost <= pops told \"outcome unknown\"".into(),
            measured: format!(
                "produced {} (unknown {}), consumed {}, left {}, twice {}, lost {}, unknown pops {}",
                q.produced, q.produce_unknown, q.consumed, q.left, q.twice, q.lost, q.pop_unknown
            ),
            is_met: q.twice == 0 && q.lost <= q.pop_unknown,
            is_held: true,
        },
        Goal {
            goal: "queue: no worker stopped".into(),
            measured: format!("{} of {} stopped", q.stopped_workers, q.workers),
            is_met: q.stopped_workers == 0,
            is_held: true,
        },
    ];
    let st = &r.stream;
    goals.push(Goal {
        goal: "stream: no entry read twice, the XREADGROUP worker did not stop".into(),
        measured: format!(
            "added {}, read {}, twice {}, pending (claimable) {}, unknown reads {}, stopped {}",
            st.produced, st.consumed, st.twice, st.pending, st.read_unknown, st.is_stopped
        ),
        is_met: st.twice == 0 && !st.is_stopped && st.consumed > 0,
        is_held: true,
    });
    if let Some(w) = &r.watch {
        goals.push(Goal {
            goal: "watch: counter == transactions applied (no lost update), applied <= committed + unknown".into(),
            measured: format!(
                "counter {}, applied {}, committed {}, unknown {}, guards lost {}, dropped by the servers {}",
                w.counter, w.applied, w.committed, w.unknown, w.lost_guards, w.dropped_by_servers
            ),
            is_met: w.counter == w.applied && w.applied <= w.committed + w.unknown,
            is_held: true,
        });
    }
    if scenario.is_planned() {
        // Pushes are plain commands: their unknown outcomes in a planned cluster failover are
        // the cluster client's, counted by the non-idempotent accounting too; told, not judged.
        goals.push(Goal {
            goal: "queue: a planned event leaves no blocked pop's outcome unknown".into(),
            measured: format!(
                "{} unknown pops ({} unknown pushes)",
                q.pop_unknown, q.produce_unknown
            ),
            is_met: q.pop_unknown == 0,
            is_held: true,
        });
    }
    goals
}

/// One command through whichever client: steadfast's command path, or a redis-rs connection
/// made on first use (`held`). `Err(true)`: may have been applied.
pub(super) async fn run<C: redis::aio::ConnectionLike>(
    doer: &Doer,
    held: &mut Option<C>,
    make: impl std::future::Future<Output = Option<C>>,
    cmd: &redis::Cmd,
) -> Result<redis::Value, bool> {
    if let Some(result) = doer.steadfast_query::<redis::Value>(cmd).await {
        return result.map_err(|e| e.is_ambiguous());
    }
    if held.is_none() {
        *held = make.await;
    }
    let Some(connection) = held else {
        return Err(false);
    };
    // Kept after an error: both kinds reconnect by themselves, and their users keep them.
    cmd.query_async::<redis::Value>(connection)
        .await
        .map_err(|e| e.may_have_been_applied())
}

/// A redis-rs connection of the doer's kind (the cluster client or a reconnecting manager).
pub(super) enum Own {
    Manager(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Own {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Manager(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

pub(super) async fn make(doer: &Doer) -> Option<Own> {
    match doer {
        Doer::RedisRs(client) => redis::aio::ConnectionManager::new(client.clone())
            .await
            .ok()
            .map(Own::Manager),
        Doer::RedisRsCluster(client, _) => {
            client.get_async_connection().await.ok().map(Own::Cluster)
        }
        Doer::Steadfast(_) | Doer::SteadfastCluster(_) => None,
    }
}

/// Sleeps 2.5-7.5 ms, drawn anew, so that tasks do not fall into step.
async fn pace() {
    tokio::time::sleep(PACE / 2 + PACE.mul_f64(rand::random::<f64>())).await;
}

/// What `read` finds on each server of the lab that answers within 2 s (a replica's copy
/// too: `READONLY` is sent first, which anything but a cluster replica refuses harmlessly).
async fn on_each_server<T, F, Fut>(servers: &[std::net::SocketAddr], read: F) -> Vec<T>
where
    F: Fn(redis::aio::MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let mut found = Vec::new();
    for server in servers {
        let attempt = async {
            let mut connection = redis::Client::open(format!("redis://{server}/"))
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            let _: redis::RedisResult<()> =
                redis::cmd("READONLY").query_async(&mut connection).await;
            read(connection).await
        };
        if let Ok(Some(answer)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            found.push(answer);
        }
    }
    found
}

/// The largest answer of [`on_each_server`].
async fn most_complete<T, F, Fut>(servers: &[std::net::SocketAddr], read: F) -> Option<T>
where
    T: Ord,
    F: Fn(redis::aio::MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    on_each_server(servers, read).await.into_iter().max()
}
