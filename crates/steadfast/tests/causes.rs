//! Errors say why: a command whose deadline runs out before any link existed names the step
//! the connection attempt was stuck in, and an endpoint that is not a Redis server fails
//! commands at once with that cause.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::{Client, Config, ErrorKind};
use support::{RedisServer, init_tracing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A TCP server on `address` that runs `serve` on every connection it accepts, until dropped.
struct FakePeer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakePeer {
    /// Accepts connections and never answers (holding each open).
    async fn silent() -> Self {
        Self::start(|mut stream| async move {
            let mut buf = [0u8; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await
    }

    /// Answers whatever arrives with `reply`, then closes.
    async fn answering(reply: &'static [u8]) -> Self {
        Self::start(move |mut stream| async move {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(reply).await;
            let _ = stream.shutdown().await;
        })
        .await
    }

    async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let reserved = RedisServer::reserve(&[]);
        let listener = TcpListener::bind(reserved.address).await.unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        Self {
            address: reserved.address,
            task,
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        config.endpoint.host = self.address.ip().to_string();
        config.endpoint.port = self.address.port();
        config
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_is_named_in_the_deadline_error() {
    init_tracing();
    let peer = FakePeer::silent().await;
    let mut config = peer.config();
    config.command.deadline = Duration::from_secs(1);
    let client = Client::new(config).unwrap();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(!err.is_ambiguous(), "{err}");
    let message = err.to_string();
    println!("{message}");
    assert!(
        message.contains(&format!("handshake with {}", peer.address))
            && message.contains("no answer for"),
        "the error must name the step and the address: {message}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_redis_port_names_the_tls_handshake_in_the_error() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = Config::default();
    config.endpoint.host = "localhost".into();
    config.endpoint.resolver = Arc::new(StaticResolver::new(vec![server.address]));
    config.tls.is_enabled = true;
    config.command.deadline = Duration::from_secs(1);
    let client = Client::new(config).unwrap();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    let message = err.to_string();
    println!("{message}");
    assert!(
        message.contains(&format!("tls handshake with {}", server.address)),
        "the error must name the TLS step and the address: {message}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_fails_commands_at_once_with_a_protocol_error() {
    init_tracing();
    let peer = FakePeer::answering(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let client = Client::new(peer.config()).unwrap();
    let started = Instant::now();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!("{err}");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(!err.is_ambiguous());
    assert!(
        err.to_string().contains(&peer.address.to_string()),
        "the error must name the address: {err}"
    );
    assert!(
        took < Duration::from_secs(2),
        "a protocol error must not wait out the 5 s deadline: took {took:?}"
    );
    client.shutdown().await;
}
