//! Client-side caching through the proxy: a real cache library (redis-rs's, RESP3, `CLIENT
//! TRACKING ON`) gets the server's invalidations, and never keeps serving a value whose
//! invalidation was lost with an upstream link.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{init_tracing, ip, proxy_for};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use steadfast_testkit::TestServer;
use tokio::time::Instant;

/// A redis-rs connection to `address` with its client-side cache on (RESP3).
async fn caching(address: std::net::SocketAddr) -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{address}/?protocol=resp3")).unwrap();
    let config =
        redis::AsyncConnectionConfig::new().set_cache_config(redis::caching::CacheConfig::new());
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Reads `key` through `cached` until it reads `want`; panics after 5 s.
async fn read_until(cached: &mut MultiplexedConnection, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value: Option<String> = cached.get(key).await.unwrap();
        if value.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still reading {value:?} instead of {want:?} 5 s after the write: a stale cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_value_is_invalidated_through_the_proxy_even_when_its_upstream_link_died() {
    init_tracing();
    let server = TestServer::start(ip(1), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = admin.set("k", "one").await.unwrap();
    let mut cached = caching(address).await;

    // Cached: the second read is a hit; a write elsewhere is invalidated through the proxy.
    read_until(&mut cached, "k", "one").await;
    read_until(&mut cached, "k", "one").await;
    let hits = cached.get_cache_statistics().unwrap().hit;
    assert!(hits >= 1, "the second read was served from the cache");
    let _: () = admin.set("k", "two").await.unwrap();
    read_until(&mut cached, "k", "two").await;

    // The upstream link dies (the downstream connection stays); the write after it would have
    // been invalidated on that link only.
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1);
    let _: () = admin.set("k", "three").await.unwrap();
    read_until(&mut cached, "k", "three").await;

    // The new upstream link tracks the connection's reads too.
    read_until(&mut cached, "k", "three").await;
    let _: () = admin.set("k", "four").await.unwrap();
    read_until(&mut cached, "k", "four").await;
    let stats = cached.get_cache_statistics().unwrap();
    assert!(stats.invalidate >= 3, "{stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_modes_a_new_link_cannot_keep_are_refused_with_the_reason() {
    init_tracing();
    let server = TestServer::start(ip(2), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let client = redis::Client::open(format!("redis://{address}/?protocol=resp3")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for (args, reason) in [
        (&["TRACKING", "ON", "REDIRECT", "3"][..], "REDIRECT"),
        (&["TRACKING", "ON", "OPTIN"], "OPTIN"),
        (&["CACHING", "yes"], "OPTIN"),
    ] {
        let mut cmd = redis::cmd("CLIENT");
        for arg in args {
            cmd.arg(*arg);
        }
        let error = cmd
            .query_async::<()>(&mut connection)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(reason), "{args:?}: {error}");
    }
    proxy.shutdown().await;
}
