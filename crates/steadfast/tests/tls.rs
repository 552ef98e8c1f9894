//! TLS against a real redis-server started with `tls-port` and certificates the test generates.

mod support;

use std::sync::Arc;
use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::{Client, ClientIdentity, Config, ErrorKind, TlsRoots, TlsVerification};
use support::{RedisServer, TlsCerts, init_tracing};

/// TLS config for `localhost`, resolved to the server's address.
fn tls_config(server: &RedisServer, certs: &TlsCerts) -> Config {
    let mut config = Config::default();
    config.endpoint.host = "localhost".into();
    config.endpoint.resolver = Arc::new(StaticResolver::new(vec![server.address]));
    config.tls.is_enabled = true;
    config.tls.roots = TlsRoots::CaFile(certs.dir.join("ca.pem"));
    config.command.deadline = Duration::from_secs(2);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_name_is_verified_again_when_the_name_moves_to_a_new_address() {
    init_tracing();
    let certs = TlsCerts::generate();
    let mut first = RedisServer::start_tls(&certs, false).await;
    let resolver = StaticResolver::new(vec![first.address]);
    let mut config = tls_config(&first, &certs);
    config.endpoint.resolver = Arc::new(resolver.clone());
    let client = Client::new(config).unwrap();
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");

    let elsewhere = TlsCerts::generate().ip;
    let second = RedisServer::start_tls_at(&certs, elsewhere, false).await;
    resolver.set(vec![second.address]);
    first.kill();
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG", "verified as localhost at {}", second.address);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused_with_a_clear_error() {
    init_tracing();
    let certs = TlsCerts::generate();
    let other = TlsCerts::generate();
    let server = RedisServer::start_tls(&certs, false).await;
    let mut config = tls_config(&server, &certs);
    config.tls.roots = TlsRoots::CaFile(other.dir.join("ca.pem"));
    let client = Client::new(config).unwrap();
    let started = tokio::time::Instant::now();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails fast: {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("tls handshake") && text.contains("certificate"),
        "{text}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_option_accepts_an_unknown_certificate() {
    init_tracing();
    let certs = TlsCerts::generate();
    let server = RedisServer::start_tls(&certs, false).await;
    let mut config = tls_config(&server, &certs);
    config.tls.roots = TlsRoots::WebPki;
    config.tls.verification = TlsVerification::InsecureAcceptAnyCertificate;
    let client = Client::new(config).unwrap();
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    init_tracing();
    let certs = TlsCerts::generate();
    let server = RedisServer::start_tls(&certs, true).await;

    let without = Client::new(tls_config(&server, &certs)).unwrap();
    let err = without
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    without.shutdown().await;

    let mut config = tls_config(&server, &certs);
    config.tls.client_identity = Some(ClientIdentity {
        certificate_file: certs.dir.join("client.pem"),
        key_file: certs.dir.join("client.key"),
    });
    let with = Client::new(config).unwrap();
    let pong: String = with.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    with.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_url_turns_tls_on_and_the_server_name_follows_the_host() {
    let config = Config::from_url("rediss://cache.example:6380").unwrap();
    assert!(config.tls.is_enabled);
    assert_eq!(
        config.tls.server_name, None,
        "verified against the URL's host"
    );
}
