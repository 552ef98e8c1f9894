//! Connections that keep no state of their own share one upstream link; one that does (a
//! database, a name, a blocking command) gets a client of its own, whose links carry it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{exchange, ip, proxy_for};
use steadfast_testkit::TestServer;
use tokio::net::TcpStream;

/// The server's client connections, as `CLIENT LIST` lines.
async fn clients_of(admin: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_connections_share_one_upstream_link_and_a_stateful_one_gets_its_own() {
    common::init_tracing();
    let server = TestServer::start(ip(20), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut connections = Vec::new();
    for _ in 0..40 {
        let mut connection = redis::Client::open(format!("redis://{address}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("INCR")
            .arg("shared:n")
            .query_async(&mut connection)
            .await
            .unwrap();
        connections.push(connection);
    }
    // 40 downstream connections: the admin's own, the proxy's health client and one shared
    // link on the server (one per downstream connection would be 40 more).
    let seen = clients_of(&mut admin).await;
    assert!(
        seen.len() <= 4,
        "{} server connections: {seen:#?}",
        seen.len()
    );
    // A connection with state of its own: its database and name are on a link of its own.
    let mut own = TcpStream::connect(address).await.unwrap();
    let request = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n\
        *3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$8\r\nworker-7\r\n\
        *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nown!\r\n";
    let reply = exchange(&mut own, request, b"+OK\r\n+OK\r\n+OK\r\n").await;
    assert_eq!(reply, b"+OK\r\n+OK\r\n+OK\r\n");
    let seen = clients_of(&mut admin).await;
    assert!(
        seen.iter()
            .any(|line| line.contains("name=worker-7") && line.contains(" db=3 ")),
        "{seen:#?}"
    );
    let in_three: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(
            &mut redis::Client::open(format!("{}/3", server.url()))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(in_three.as_deref(), Some("own!"));
    // The shared link's database was not touched by it: the others still write database 0.
    let _: i64 = redis::cmd("INCR")
        .arg("shared:n")
        .query_async(&mut connections[0])
        .await
        .unwrap();
    let counted: i64 = redis::cmd("GET")
        .arg("shared:n")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(counted, 41);
    proxy.shutdown().await;
}
