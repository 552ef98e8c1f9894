//! The proxy's operations endpoint against a real redis-server: `/health` follows the
//! upstream primary, `/metrics` carries the proxy's and the library's metrics.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{exchange, ip};
use steadfast_proxy::{Listen, Proxy, ProxyConfig};
use steadfast_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `GET path` on the operations endpoint: the status code and the body.
async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// Asks `path` until its status is `status` (within 10 s).
async fn until_status(address: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (seen, body) = get(address, path).await;
        if seen == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: still {seen} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_whether_the_upstream_primary_is_reachable_and_metrics_count_the_proxys_work() {
    let mut server = TestServer::start(ip(21), &[]).await;
    let mut config = ProxyConfig::new(steadfast::Config::from_url(&server.url()).unwrap());
    config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
    config.operations = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let proxy = Proxy::start(config).await.unwrap();
    let operations = proxy.operations_address().unwrap();
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };

    let ok = until_status(operations, "/health", 200).await;
    let ok: serde_json::Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["role"], "primary");
    assert_eq!(ok["upstream"], server.address.to_string());

    let mut raw = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        exchange(&mut raw, b"SET a 1\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    let metrics = until_status(operations, "/metrics", 200).await;
    for name in [
        "steadfast_proxy_connections ",
        "steadfast_proxy_commands_total ",
        "steadfast_proxy_upstream_primary_reachable 1",
        "steadfast_links_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    server.kill();
    let down: serde_json::Value =
        serde_json::from_str(&until_status(operations, "/health", 503).await).unwrap();
    assert_eq!(down["status"], "unavailable");
    assert!(!proxy.health().is_primary_reachable);
    server.restart().await;
    until_status(operations, "/health", 200).await;
    assert_eq!(get(operations, "/nothing").await.0, 404);
    proxy.shutdown().await;
}
