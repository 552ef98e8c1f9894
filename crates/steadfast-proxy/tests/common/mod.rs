//! What the proxy's test binaries share.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use steadfast_proxy::{Listen, Proxy, ProxyConfig};
use steadfast_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Logs of the proxy and the library, to the test's output (`RUST_LOG` filters; warnings by
/// default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "steadfast=warn,steadfast_proxy=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A private loopback address for each server of this test binary.
pub fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 215, (std::process::id() % 250) as u8, n])
}

/// A proxy for `server` on a free loopback port; `password` asked of clients.
pub async fn proxy_for(server: &TestServer, password: Option<&str>) -> (Proxy, SocketAddr) {
    let upstream = steadfast::Config::from_url(&server.url()).unwrap();
    proxy_with(upstream, password).await
}

/// A proxy for `upstream` on a free loopback port; `password` asked of clients.
pub async fn proxy_with(
    upstream: steadfast::Config,
    password: Option<&str>,
) -> (Proxy, SocketAddr) {
    let mut config = ProxyConfig::new(upstream);
    config.password = password.map(str::to_owned);
    start(config).await
}

/// A proxy of `config` on a free loopback port.
pub async fn start(mut config: ProxyConfig) -> (Proxy, SocketAddr) {
    config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
    let proxy = Proxy::start(config).await.unwrap();
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };
    (proxy, address)
}

/// Sends raw bytes on `stream` and reads what comes back within 2 s (until `until` is seen
/// at the end, or the connection closes).
pub async fn exchange(stream: &mut TcpStream, request: &[u8], until: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut chunk = [0u8; 4096];
    while !reply.ends_with(until) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    reply
}
