//! The runtime `steadfast proxy` serves on, and a proxy served on a thread of its own.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ip;
use steadfast_proxy::{Listen, OwnThread, ProxyConfig};
use steadfast_testkit::TestServer;

#[test]
fn one_thread_is_the_current_thread_scheduler_and_more_are_worker_threads() {
    let one = steadfast_proxy::runtime(1).unwrap();
    assert_eq!(
        one.handle().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread
    );
    let three = steadfast_proxy::runtime(3).unwrap();
    assert_eq!(
        three.handle().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread
    );
    assert_eq!(three.metrics().num_workers(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_on_a_thread_of_its_own_serves_many_connections_and_its_shutdown_closes_the_port() {
    common::init_tracing();
    let server = TestServer::start(ip(60), &[]).await;
    let mut config = ProxyConfig::new(steadfast::Config::from_url(&server.url()).unwrap());
    config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
    let proxy = OwnThread::start(config, 1).await.unwrap();
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };
    let workers = (0..16).map(|_| {
        tokio::spawn(async move {
            let mut connection = redis::Client::open(format!("redis://{address}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for _ in 0..50 {
                let _: i64 = redis::cmd("INCR")
                    .arg("own-thread:n")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
        })
    });
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
    }
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: i64 = redis::cmd("GET")
        .arg("own-thread:n")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 16 * 50);
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .unwrap();
    assert!(refused.is_err(), "the port still accepts after shutdown");
}
