//! Pub/Sub on a real cluster: shard channels on their slot's primary, following a planned
//! failover and a slot migration, every missing message inside a reported gap.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use steadfast::cluster::{ClusterClient, ClusterSubscriber, key_slot};
use steadfast::pubsub::{Delivery, Gap, Kind};
use support::cluster::*;
use tokio::time::Instant;

/// SPUBLISHes `n` to `channel` every 2 ms through `client` until stopped; returns, for each
/// number the client confirmed, when it was sent and when it was confirmed: the server
/// published it in between (a node pausing writes for a failover holds it a while).
fn publisher(
    client: ClusterClient,
    channel: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<BTreeMap<u64, (SystemTime, SystemTime)>> {
    tokio::spawn(async move {
        let mut published = BTreeMap::new();
        for n in 0u64.. {
            if stop.is_cancelled() {
                break;
            }
            let at = SystemTime::now();
            let sent: Result<i64, _> = client
                .query(redis::cmd("SPUBLISH").arg(&channel).arg(n))
                .await;
            if sent.is_ok() {
                published.insert(n, (at, SystemTime::now()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        published
    })
}

/// Reads until `until`: the numbers received and the gaps.
async fn read_until(subscriber: &mut ClusterSubscriber, until: Instant) -> (Vec<u64>, Vec<Gap>) {
    let (mut numbers, mut gaps) = (Vec::new(), Vec::new());
    while let Ok(Some(delivery)) = tokio::time::timeout_at(until, subscriber.next()).await {
        match delivery {
            Delivery::Message(m) => {
                numbers.push(String::from_utf8(m.payload).unwrap().parse().unwrap());
            }
            Delivery::Gap(gap) => gaps.push(gap),
            other => panic!("{other:?}"),
        }
    }
    (numbers, gaps)
}

/// Published numbers neither received nor possibly published inside a gap.
fn lost_silently(
    published: &BTreeMap<u64, (SystemTime, SystemTime)>,
    received: &[u64],
    gaps: &[Gap],
) -> Vec<u64> {
    published
        .iter()
        .filter(|(n, _)| !received.contains(n))
        .filter(|(_, (sent, acked))| !gaps.iter().any(|g| g.from <= *acked && *sent <= g.until))
        .map(|(n, _)| *n)
        .collect()
}

/// Publishes to `channel` all along while 300 ms of reading, then `fault`, then `after` of
/// reading, then the publisher's stop and 300 ms more: what was published (sent, confirmed),
/// the numbers received and the gaps.
async fn through<T>(
    client: &ClusterClient,
    subscriber: &mut ClusterSubscriber,
    channel: &str,
    fault: impl std::future::Future<Output = T>,
    after: Duration,
) -> (BTreeMap<u64, (SystemTime, SystemTime)>, Vec<u64>, Vec<Gap>) {
    let stop = tokio_util::sync::CancellationToken::new();
    let publishing = publisher(client.clone(), channel.to_owned(), stop.clone());
    let (mut received, mut gaps) =
        read_until(subscriber, Instant::now() + Duration::from_millis(300)).await;
    fault.await;
    let (more, more_gaps) = read_until(subscriber, Instant::now() + after).await;
    received.extend(more);
    gaps.extend(more_gaps);
    stop.cancel();
    let published = publishing.await.unwrap();
    let (tail, tail_gaps) =
        read_until(subscriber, Instant::now() + Duration::from_millis(300)).await;
    received.extend(tail);
    gaps.extend(tail_gaps);
    (published, received, gaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_channels_and_channels_deliver_from_every_shard() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut subscriber = client.subscriber().unwrap();
    let channels: Vec<String> = (0..3).map(key_on_shard).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    subscriber.ssubscribe(&names).await.unwrap();
    subscriber.subscribe(&["news"]).await.unwrap();
    for channel in &channels {
        let _: i64 = client
            .query(redis::cmd("SPUBLISH").arg(channel).arg("hi"))
            .await
            .unwrap();
    }
    let _: i64 = client
        .query(redis::cmd("PUBLISH").arg("news").arg("all"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(3), subscriber.next())
            .await
            .unwrap()
            .unwrap()
        {
            Delivery::Message(m) => seen.push((m.kind, m.channel)),
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    let mut expected: Vec<(Kind, String)> =
        channels.iter().map(|c| (Kind::Shard, c.clone())).collect();
    expected.push((Kind::Channel, "news".into()));
    expected.sort();
    assert_eq!(seen, expected);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_channel_follows_a_planned_failover_with_every_missing_message_in_a_gap() {
    let nodes = six_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut subscriber = client.subscriber().unwrap();
    let channel = key_on_shard(0);
    subscriber.ssubscribe(&[channel.as_str()]).await.unwrap();
    let (published, received, gaps) = through(
        &client,
        &mut subscriber,
        &channel,
        fail_over_to(&nodes[3]),
        Duration::from_secs(3),
    )
    .await;

    let silent = lost_silently(&published, &received, &gaps);
    let origin = published.values().next().unwrap().0;
    let rel = |t: SystemTime| t.duration_since(origin).unwrap_or_default();
    for gap in &gaps {
        eprintln!(
            "gap {:?} .. {:?} {:?}",
            rel(gap.from),
            rel(gap.until),
            gap.cause
        );
    }
    for n in &silent {
        eprintln!(
            "silent {n} sent at {:?}, confirmed at {:?}",
            rel(published[n].0),
            rel(published[n].1)
        );
    }
    let missing: Vec<u64> = published
        .keys()
        .filter(|n| !received.contains(n))
        .copied()
        .collect();
    eprintln!("missing {missing:?}");
    eprintln!(
        "published {}, received {}, gaps {:?}",
        published.len(),
        received.len(),
        gaps.iter()
            .map(|g| g.until.duration_since(g.from).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert!(silent.is_empty(), "lost without a gap: {silent:?}");
    let last = *published.keys().last().unwrap();
    assert!(
        received.contains(&last),
        "delivered again after the failover"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_channel_follows_its_slot_to_another_shard() {
    let nodes = three_node_cluster().await;
    let client = cluster_client(&nodes).await;
    let mut subscriber = client.subscriber().unwrap();
    let channel = key_on_shard(0);
    let slot = key_slot(channel.as_bytes());
    subscriber.ssubscribe(&[channel.as_str()]).await.unwrap();
    // The slot holds no keys: it is handed over at once.
    let old = owner_of(&nodes, slot).await;
    let hand = async {
        hand_over(&nodes, old, slot).await;
    };
    let (published, received, gaps) = through(
        &client,
        &mut subscriber,
        &channel,
        hand,
        Duration::from_secs(2),
    )
    .await;
    let new_address = owner_of(&nodes, slot).await.address;

    let silent = lost_silently(&published, &received, &gaps);
    assert!(silent.is_empty(), "lost without a gap: {silent:?}");
    assert!(!gaps.is_empty(), "the move was told");
    let last = *published.keys().last().unwrap();
    assert!(
        received.contains(&last),
        "delivered from {new_address} after the move"
    );
    client.shutdown().await;
}
