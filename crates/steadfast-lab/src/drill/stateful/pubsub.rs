//! The Pub/Sub workload: a numbered publisher and a subscriber that counts what is missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::StreamExt;
use serde::Serialize;
use steadfast::pubsub::Delivery;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Doer, GRACE, Own, make, pace, run};

/// What was published, received and reported missing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PubSubCount {
    /// Messages the publisher was told were published.
    pub published: u64,
    /// Distinct messages received (through the channel subscription).
    pub received: u64,
    /// Published but never received.
    pub missing: u64,
    /// Missing, and published (between its send and its confirmation) outside every reported
    /// gap: lost without a word.
    pub missing_outside_gaps: u64,
    /// Gaps the subscriber reported.
    pub gaps: u64,
    /// Messages received twice.
    pub twice: u64,
    /// The first message received after the service was back, ms after that.
    pub resumed_ms: Option<f64>,
}

#[derive(Default)]
struct Seen {
    /// Number -> when it arrived.
    received: BTreeMap<u64, Instant>,
    twice: u64,
    gaps: Vec<(SystemTime, SystemTime)>,
}

pub(super) struct Running {
    published: tokio::task::JoinHandle<BTreeMap<u64, (SystemTime, SystemTime)>>,
    seen: Arc<Mutex<Seen>>,
    subscriber: tokio::task::JoinHandle<()>,
    stop_reading: CancellationToken,
}

/// steadfast's subscriber, on one endpoint or a cluster (shard channel).
enum AnySubscriber {
    One(steadfast::pubsub::Subscriber),
    Cluster(steadfast::cluster::ClusterSubscriber),
}

impl AnySubscriber {
    async fn start(doer: &Doer, channel: &str) -> Option<Self> {
        match doer {
            Doer::Steadfast(client) => {
                let mut subscriber = client.subscriber().ok()?;
                subscriber.subscribe(&[channel]).await.ok()?;
                Some(Self::One(subscriber))
            }
            Doer::SteadfastCluster(client) => {
                let mut subscriber = client.subscriber().ok()?;
                subscriber.ssubscribe(&[channel]).await.ok()?;
                Some(Self::Cluster(subscriber))
            }
            Doer::RedisRs(_) | Doer::RedisRsCluster(..) => None,
        }
    }

    async fn next(&mut self) -> Option<Delivery> {
        match self {
            Self::One(subscriber) => subscriber.next().await,
            Self::Cluster(subscriber) => subscriber.next().await,
        }
    }
}

fn number(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

impl Running {
    pub(super) async fn start(doer: &Doer, tag: &str, stop: &CancellationToken) -> Self {
        let channel = format!("{tag}:events");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop_reading = CancellationToken::new();
        let subscriber = match doer {
            Doer::Steadfast(_) | Doer::SteadfastCluster(_) => {
                let subscriber = AnySubscriber::start(doer, &channel).await;
                let (seen, until) = (Arc::clone(&seen), stop_reading.clone());
                tokio::spawn(async move {
                    let Some(mut subscriber) = subscriber else {
                        return;
                    };
                    loop {
                        let delivery = tokio::select! {
                            () = until.cancelled() => return,
                            delivery = subscriber.next() => delivery,
                        };
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        match delivery {
                            Some(Delivery::Message(message)) => {
                                if let Some(n) = number(&message.payload)
                                    && seen.received.insert(n, Instant::now()).is_some()
                                {
                                    seen.twice += 1;
                                }
                            }
                            Some(Delivery::Gap(gap)) => seen.gaps.push((gap.from, gap.until)),
                            Some(_) => {}
                            None => return,
                        }
                    }
                })
            }
            Doer::RedisRsCluster(_, url) => {
                // As a redis-rs user would: a RESP3 cluster connection with a push sender, and
                // SSUBSCRIBE on it.
                let (pushes, mut pushed) = tokio::sync::mpsc::unbounded_channel();
                let built = redis::cluster::ClusterClientBuilder::new(vec![url.as_str()])
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .build();
                let mut connection = match built {
                    Ok(built) => built.get_async_connection().await.ok(),
                    Err(_) => None,
                };
                if let Some(connection) = &mut connection {
                    let _ = connection.ssubscribe(&channel).await;
                }
                let (seen, until) = (Arc::clone(&seen), stop_reading.clone());
                tokio::spawn(async move {
                    let _held = connection;
                    loop {
                        let push = tokio::select! {
                            () = until.cancelled() => return,
                            push = pushed.recv() => push,
                        };
                        let Some(push) = push else { return };
                        if push.kind != redis::PushKind::SMessage {
                            continue;
                        }
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(redis::Value::BulkString(payload)) = push.data.get(1)
                            && let Some(n) = number(payload)
                            && seen.received.insert(n, Instant::now()).is_some()
                        {
                            seen.twice += 1;
                        }
                    }
                })
            }
            Doer::RedisRs(client) => {
                let (client, channel) = (client.clone(), channel.clone());
                let (seen, until) = (Arc::clone(&seen), stop_reading.clone());
                let subscribed = CancellationToken::new();
                let ready = subscribed.clone();
                let task = tokio::spawn(async move {
                    // As a redis-rs user would: subscribe, read until the stream ends, then
                    // connect and subscribe again.
                    while !until.is_cancelled() {
                        let Ok(mut pubsub) = client.get_async_pubsub().await else {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        };
                        if pubsub.subscribe(&channel).await.is_err() {
                            continue;
                        }
                        ready.cancel();
                        let mut messages = pubsub.on_message();
                        loop {
                            let message = tokio::select! {
                                () = until.cancelled() => return,
                                message = messages.next() => message,
                            };
                            let Some(message) = message else {
                                break;
                            };
                            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(n) = number(message.get_payload_bytes())
                                && seen.received.insert(n, Instant::now()).is_some()
                            {
                                seen.twice += 1;
                            }
                        }
                    }
                });
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), subscribed.cancelled())
                        .await;
                task
            }
        };
        let published = {
            let (doer, stop) = (doer.clone(), stop.clone());
            tokio::spawn(async move {
                let mut published = BTreeMap::new();
                let mut own: Option<Own> = None;
                for n in 0u64.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let at = SystemTime::now();
                    let cmd = redis::cmd("PUBLISH").arg(&channel).arg(n).clone();
                    let cmd = if doer.is_cluster() {
                        redis::cmd("SPUBLISH").arg(&channel).arg(n).clone()
                    } else {
                        cmd
                    };
                    let is_sent = run(&doer, &mut own, make(&doer), &cmd).await.is_ok();
                    // The server published it between the send and the confirmation.
                    if is_sent {
                        published.insert(n, (at, SystemTime::now()));
                    }
                    pace().await;
                }
                published
            })
        };
        Self {
            published,
            seen,
            subscriber,
            stop_reading,
        }
    }

    pub(super) async fn stop(self, restored: Instant) -> PubSubCount {
        let published = tokio::time::timeout(GRACE, self.published)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        // The last messages' way to the subscriber.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        self.stop_reading.cancel();
        let _ = tokio::time::timeout(GRACE, self.subscriber).await;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        let missing: Vec<(SystemTime, SystemTime)> = published
            .iter()
            .filter(|(n, _)| !seen.received.contains_key(n))
            .map(|(_, at)| *at)
            .collect();
        let outside = missing
            .iter()
            // Published between its send and its confirmation: explained by a gap it overlaps.
            .filter(|(sent, acked)| {
                !seen
                    .gaps
                    .iter()
                    .any(|(from, until)| from <= acked && sent <= until)
            })
            .count();
        let resumed_ms = seen
            .received
            .values()
            .filter(|at| **at >= restored)
            .min()
            .map(|at| (*at - restored).as_secs_f64() * 1e3);
        PubSubCount {
            published: published.len() as u64,
            received: seen.received.len() as u64,
            missing: missing.len() as u64,
            missing_outside_gaps: outside as u64,
            gaps: seen.gaps.len() as u64,
            twice: seen.twice,
            resumed_ms,
        }
    }
}
