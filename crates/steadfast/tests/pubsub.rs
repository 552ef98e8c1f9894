//! Pub/Sub against real servers: subscriptions come back on every new link, and every message
//! that went missing falls inside a gap the stream reported.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use steadfast::pubsub::{Delivery, Gap, GapCause, Kind, Subscriber};
use steadfast::{Client, ErrorKind, Event, Protocol};
use support::{RedisServer, config_for, connected, init_tracing};
use tokio::time::Instant;

/// Publishes `n:<number>` to `channel` every 2 ms until told to stop; returns, for each number,
/// when it was sent and when its publication was confirmed.
fn publisher(server: &RedisServer, channel: &'static str) -> Publisher {
    let stop = tokio_util::sync::CancellationToken::new();
    let url = server.url();
    let until = stop.clone();
    let task = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut published = BTreeMap::new();
        let mut number = 0u64;
        while !until.is_cancelled() {
            let connection = client.get_multiplexed_async_connection().await;
            if let Ok(mut connection) = connection {
                while !until.is_cancelled() {
                    let at = SystemTime::now();
                    let sent: redis::RedisResult<i64> =
                        connection.publish(channel, format!("n:{number}")).await;
                    if sent.is_err() {
                        break;
                    }
                    published.insert(number, (at, SystemTime::now()));
                    number += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        published
    });
    Publisher { stop, task }
}

struct Publisher {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<BTreeMap<u64, (SystemTime, SystemTime)>>,
}

impl Publisher {
    async fn stop(self) -> BTreeMap<u64, (SystemTime, SystemTime)> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Kills the server's one subscriber connection (`CLIENT KILL TYPE pubsub`).
async fn kill_the_subscriber_link(admin: &mut redis::aio::MultiplexedConnection) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

/// Reads deliveries for `lasting`: the numbers received, and the gaps.
async fn read_for(subscriber: &mut Subscriber, lasting: Duration) -> (Vec<u64>, Vec<Gap>) {
    let (mut numbers, mut gaps) = (Vec::new(), Vec::new());
    let until = Instant::now() + lasting;
    while let Ok(Some(delivery)) = tokio::time::timeout_at(until, subscriber.next()).await {
        match delivery {
            Delivery::Message(message) => {
                let text = String::from_utf8(message.payload).unwrap();
                numbers.push(text.trim_start_matches("n:").parse().unwrap());
            }
            Delivery::Gap(gap) => gaps.push(gap),
            other => panic!("{other:?}"),
        }
    }
    (numbers, gaps)
}

/// Every number published but not received was published inside a reported gap.
fn missing_outside_gaps(
    published: &BTreeMap<u64, (SystemTime, SystemTime)>,
    received: &[u64],
    gaps: &[Gap],
) -> Vec<u64> {
    let first = received.first().copied().unwrap_or(0);
    let last = received.last().copied().unwrap_or(0);
    published
        .iter()
        .filter(|(n, _)| **n >= first && **n <= last && !received.contains(n))
        .filter(|(_, (sent, acked))| !gaps.iter().any(|g| g.from <= *acked && *sent <= g.until))
        .map(|(n, _)| *n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_through_channels_patterns_and_shard_channels_on_a_resp2_client() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.endpoint.protocol = Protocol::Resp2;
    let client = connected(config).await;
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["news"]).await.unwrap();
    subscriber.psubscribe(&["prices.*"]).await.unwrap();
    subscriber.ssubscribe(&["orders"]).await.unwrap();
    let mut admin = server.admin().await;
    let _: i64 = admin.publish("news", "a").await.unwrap();
    let _: i64 = admin.publish("prices.eur", "b").await.unwrap();
    let _: i64 = redis::cmd("SPUBLISH")
        .arg("orders")
        .arg("c")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(2), subscriber.next())
            .await
            .unwrap()
            .unwrap()
        {
            Delivery::Message(m) => seen.push((m.kind, m.channel, m.pattern, m.payload)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            (Kind::Channel, "news".into(), None, b"a".to_vec()),
            (
                Kind::Pattern,
                "prices.eur".into(),
                Some("prices.*".into()),
                b"b".to_vec()
            ),
            (Kind::Shard, "orders".into(), None, b"c".to_vec()),
        ]
    );
    // The shared link is still a plain RESP2 link serving commands.
    let mut shared = client.clone();
    let _: () = shared.set("k", "v").await.unwrap();
    subscriber.unsubscribe(&["news"]).await.unwrap();
    let _: i64 = admin.publish("news", "gone").await.unwrap();
    let _: i64 = admin.publish("prices.usd", "kept").await.unwrap();
    match subscriber.next().await.unwrap() {
        Delivery::Message(m) => assert_eq!(m.payload, b"kept"),
        other => panic!("{other:?}"),
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_link_comes_back_subscribed_and_every_missing_message_is_in_a_gap() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["ticks"]).await.unwrap();
    let publisher = publisher(&server, "ticks");
    let (mut received, mut gaps) = read_for(&mut subscriber, Duration::from_millis(300)).await;
    assert!(gaps.is_empty(), "{gaps:?}");

    let mut admin = server.admin().await;
    kill_the_subscriber_link(&mut admin).await;
    let (more, more_gaps) = read_for(&mut subscriber, Duration::from_millis(700)).await;
    received.extend(more);
    gaps.extend(more_gaps);
    let published = publisher.stop().await;

    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.channels, vec!["ticks".to_owned()]);
    assert!(matches!(gap.cause, GapCause::LinkLost(_)), "{gap:?}");
    let lasted = gap.until.duration_since(gap.from).unwrap();
    assert!(lasted < Duration::from_millis(500), "{lasted:?}");
    assert!(received.len() > 100, "messages flowed before and after");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    let outside = missing_outside_gaps(&published, &received, &gaps);
    eprintln!(
        "published {}, received {}, gap {lasted:?}",
        published.len(),
        received.len()
    );
    assert!(outside.is_empty(), "missing outside any gap: {outside:?}");
    assert!(
        support::drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::SubscriptionGap { .. }))
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_the_server_restarts() {
    init_tracing();
    let mut server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["ticks"]).await.unwrap();
    subscriber.psubscribe(&["t*"]).await.unwrap();
    server.kill();
    server.spawn_and_wait().await;
    let mut admin = server.admin().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let gap = loop {
        let _: i64 = admin.publish("ticks", "n:0").await.unwrap();
        match tokio::time::timeout(Duration::from_millis(50), subscriber.next()).await {
            Ok(Some(Delivery::Gap(gap))) => break gap,
            Ok(other) => panic!("a gap comes first: {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "never subscribed again"),
        }
    };
    assert_eq!(gap.channels, vec!["ticks".to_owned()]);
    assert_eq!(gap.patterns, vec!["t*".to_owned()]);
    // Both subscriptions deliver again: one message through each.
    let _: i64 = admin.publish("ticks", "n:1").await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(2), subscriber.next())
            .await
            .unwrap()
            .unwrap()
        {
            Delivery::Message(m) if m.payload == b"n:1" => kinds.push(m.kind),
            Delivery::Message(_) => {}
            other => panic!("{other:?}"),
        }
    }
    kinds.sort();
    assert_eq!(kinds, vec![Kind::Channel, Kind::Pattern]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_told_the_count_of_what_was_dropped_without_waiting_for_another_message()
{
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.subscriber_buffer = 10;
    let client = connected(config).await;
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["burst"]).await.unwrap();
    let mut admin = server.admin().await;
    for n in 0..100 {
        let _: i64 = admin.publish("burst", format!("n:{n}")).await.unwrap();
    }
    // All 100 reach the subscriber's link at once; its follower passes them on in well under
    // this (it never waits for the application).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (numbers, gaps) = read_for(&mut subscriber, Duration::from_millis(200)).await;
    assert_eq!(numbers, (0..10).collect::<Vec<u64>>(), "the buffer's worth");
    // Nothing more is published, yet the drop is told as soon as there is room.
    let causes: Vec<GapCause> = gaps.into_iter().map(|g| g.cause).collect();
    assert_eq!(causes, vec![GapCause::SlowConsumer { dropped: 90 }]);
    let _: i64 = admin.publish("burst", "n:100").await.unwrap();
    match subscriber.next().await.unwrap() {
        Delivery::Message(m) => assert_eq!(m.payload, b"n:100"),
        other => panic!("{other:?}"),
    }
    client.shutdown().await;
}

/// Fills a subscriber's queue of 10 with `published` messages it does not read, kills its link,
/// waits until it has subscribed again, then reads: the numbers, the gaps, and when the link
/// was killed.
async fn link_lost_while_behind(published: u64) -> (Vec<u64>, Vec<Gap>, std::time::SystemTime) {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.subscriber_buffer = 10;
    let client = connected(config).await;
    let mut events = client.events();
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["behind"]).await.unwrap();
    let mut admin = server.admin().await;
    for n in 0..published {
        let _: i64 = admin.publish("behind", format!("n:{n}")).await.unwrap();
    }
    // Until the server has handed them all to the subscriber's socket: what the kernel holds
    // is read before the end of the stream.
    let written_by = Instant::now() + Duration::from_secs(2);
    loop {
        let listing: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        if listing.contains(" obl=0 ") && listing.contains(" oll=0 ") {
            break;
        }
        assert!(Instant::now() < written_by, "still buffered: {listing}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = std::time::SystemTime::now();
    kill_the_subscriber_link(&mut admin).await;
    // The link-lost gap finds no room in the queue: the follower subscribes again and keeps it
    // for when the application makes room.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::SubscriptionGap {
                is_slow_consumer: false,
                ..
            }) = events.recv().await
            {
                return;
            }
        }
    })
    .await
    .expect("subscribed again within 5 s");
    let (mut numbers, gaps) = read_for(&mut subscriber, Duration::from_millis(300)).await;
    let _: i64 = admin.publish("behind", "n:100").await.unwrap();
    let (after, _) = read_for(&mut subscriber, Duration::from_millis(300)).await;
    numbers.extend(after);
    client.shutdown().await;
    (numbers, gaps, killed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_while_the_queue_is_full_is_told_once_there_is_room() {
    let (numbers, gaps, killed_at) = link_lost_while_behind(10).await;
    let mut expected: Vec<u64> = (0..10).collect();
    expected.push(100);
    assert_eq!(
        numbers, expected,
        "the buffer's worth, then what came after"
    );
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert!(matches!(gap.cause, GapCause::LinkLost(_)), "{gap:?}");
    assert!(
        gap.from <= killed_at && gap.until >= killed_at,
        "the gap covers the lost link: {gap:?}, killed at {killed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_after_messages_were_dropped_is_folded_into_the_slow_consumer_gap() {
    let (numbers, gaps, killed_at) = link_lost_while_behind(15).await;
    let mut expected: Vec<u64> = (0..10).collect();
    expected.push(100);
    assert_eq!(numbers, expected);
    assert_eq!(gaps.len(), 1, "one gap tells both losses: {gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap.cause, GapCause::SlowConsumer { dropped: 5 });
    assert!(
        gap.from <= killed_at && gap.until >= killed_at,
        "the gap covers the lost link: {gap:?}, killed at {killed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_on_the_shared_client_points_to_the_subscriber() {
    init_tracing();
    let server = RedisServer::start().await;
    let client: Client = connected(config_for(&server)).await;
    let error = client
        .query::<()>(redis::cmd("SUBSCRIBE").arg("news"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(error.to_string().contains("Client::subscriber"), "{error}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscriber_follows_the_shared_link_to_the_new_primary_without_waiting_for_its_heartbeat()
 {
    init_tracing();
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    let resolver = steadfast::connect::resolve::StaticResolver::new(vec![a.address]);
    let client = connected(support::config_resolving(&resolver)).await;
    let mut events = client.events();
    let b_address = steadfast::connect::Address::Tcp(b.address);
    let moved_at = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::Connected { address, .. }) if address == b_address => {
                    return Instant::now();
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    let mut subscriber = client.subscriber().unwrap();
    subscriber.subscribe(&["ticks"]).await.unwrap();
    let workload = support::Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A stops answering (no RST: a vanished host); the name now leads to B.
    a.pause();
    resolver.set(vec![b.address]);
    let mut admin_b = b.admin().await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let resumed = loop {
        let _: i64 = admin_b.publish("ticks", "n:1").await.unwrap();
        match tokio::time::timeout(Duration::from_millis(10), subscriber.next()).await {
            Ok(Some(Delivery::Message(_))) => break Instant::now(),
            Ok(Some(Delivery::Gap(_))) | Err(_) => {}
            Ok(other) => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "never subscribed on B");
    };
    workload.stop().await;
    a.resume();
    let moved_at = moved_at.await.unwrap();
    // The shared link found A dead through its busy traffic (read stall, probe); the idle
    // subscriber followed it at once. On its own heartbeat (a PING each second, then the
    // same stall and probe) it would have taken a second or more longer.
    let after = resumed.saturating_duration_since(moved_at);
    eprintln!("subscriber back on B {after:?} after the shared link");
    assert!(after < Duration::from_millis(500), "{after:?}");
    client.shutdown().await;
}
