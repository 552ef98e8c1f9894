//! Pub/Sub through the proxy against real redis-server processes: subscriptions survive a
//! server restart on the client's one connection, and the gap is told on the proxy's channel.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{exchange, ip, proxy_for};
use futures_util::StreamExt;
use redis::AsyncCommands;
use steadfast_proxy::GAP_CHANNEL;
use steadfast_testkit::TestServer;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_server_restart_and_the_gap_is_told_on_the_gap_channel() {
    let mut server = TestServer::start(ip(11), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("news").await.unwrap();
    pubsub.subscribe(GAP_CHANNEL).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let url = server.url();
    let publish = |payload: &'static str| {
        let url = url.clone();
        async move {
            let mut direct = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            direct.publish::<_, _, i64>("news", payload).await.ok()
        }
    };
    assert_eq!(publish("before").await, Some(1), "one subscriber upstream");
    let first = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.get_payload::<String>().unwrap(), "before");

    server.kill();
    server.restart().await;
    // Published until the proxy's new link has subscribed again (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while publish("after").await != Some(1) {
        assert!(Instant::now() < deadline, "never subscribed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    while !seen.iter().any(|(channel, _)| channel == "news") {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a message within 5 s")
            .expect("the client's connection stayed open");
        seen.push((
            message.get_channel_name().to_owned(),
            message.get_payload::<String>().unwrap(),
        ));
    }
    // The gap first, then the message published after it.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, GAP_CHANNEL);
    let gap: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(gap["channels"], serde_json::json!(["news"]), "{gap}");
    assert_eq!(gap["cause"]["kind"], "link_lost", "{gap}");
    assert!(gap["from_ms"].as_u64().unwrap() <= gap["until_ms"].as_u64().unwrap());
    assert_eq!(seen[1], ("news".to_owned(), "after".to_owned()));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_connection_answers_as_the_server_does_in_resp2_and_resp3() {
    let server = TestServer::start(ip(12), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;

    // RESP2: confirmations counted one by one; only the subscribed commands are allowed.
    let mut resp2 = TcpStream::connect(address).await.unwrap();
    let confirmed = exchange(&mut resp2, b"SUBSCRIBE a b\r\n", b":2\r\n").await;
    assert_eq!(
        confirmed,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    );
    let refused = exchange(&mut resp2, b"GET k\r\n", b"\r\n").await;
    assert!(
        refused.starts_with(b"-ERR Can't execute 'get'"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let pong = exchange(&mut resp2, b"PING\r\n", b"$0\r\n\r\n").await;
    assert_eq!(pong, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let ended = exchange(&mut resp2, b"UNSUBSCRIBE\r\n", b":0\r\n").await;
    assert_eq!(
        ended,
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
    );
    let again = exchange(&mut resp2, b"GET k\r\n", b"\r\n").await;
    assert_eq!(again, b"$-1\r\n", "out of subscribed mode");

    // RESP3: confirmations and messages are pushes, and any command may be sent.
    let mut resp3 = TcpStream::connect(address).await.unwrap();
    exchange(&mut resp3, b"HELLO 3\r\n", b"*0\r\n").await;
    let confirmed = exchange(&mut resp3, b"PSUBSCRIBE p*\r\n", b":1\r\n").await;
    assert_eq!(confirmed, b">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n");
    let value = exchange(&mut resp3, b"GET k\r\n", b"\r\n").await;
    assert_eq!(value, b"_\r\n");
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let receivers: i64 = direct.publish("pq", "hi").await.unwrap();
    assert_eq!(receivers, 1);
    let message = exchange(&mut resp3, b"", b"$2\r\nhi\r\n").await;
    assert_eq!(
        message,
        b">4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$2\r\nhi\r\n"
    );
    // Unsubscribing from nothing says so, with the count 0.
    let none = exchange(&mut resp3, b"SUNSUBSCRIBE\r\n", b":0\r\n").await;
    assert_eq!(none, b">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n");
    proxy.shutdown().await;
}
