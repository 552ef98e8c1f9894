//! The lab itself, as root: its network carries traffic, faults cut it, delay it and heal, DNS
//! flips, and nothing is left behind.

use std::time::Duration;

use steadfast::connect::resolve::{DnsResolver, Resolver};
use steadfast_lab::LabError;
use steadfast_lab::fault;
use steadfast_lab::lab::{ENDPOINT_NAME, Lab, LabSpec};
use steadfast_lab::net::{self, CLIENT_IP, DNS_IP, Namespace};
use steadfast_lab::server::ping;

/// Connects, sends PING and waits for the reply; the round trip, bounded to 2 s.
async fn timed_ping(address: std::net::SocketAddr) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .map(|()| started.elapsed())
}

#[test]
fn lab_carries_traffic_faults_cut_and_heal_dns_flips_and_nothing_is_left_behind() {
    let prefix = format!("{}-t", net::run_prefix());
    let client = Namespace::create(&format!("{prefix}-client"))
        .expect("the lab needs root: network namespaces and iptables");
    let spec = LabSpec {
        prefix: prefix.clone(),
        index: 1,
        client_namespace: client.name().to_owned(),
        servers: 2,
        is_replicated: true,
        is_started: true,
        cluster: None,
    };
    let outcome = net::run_in(client.name(), move || {
        Box::pin(async move {
            let lab = Lab::build(&spec).await?;
            let (a, b) = (&lab.servers[0], &lab.servers[1]);
            assert!(ping(a.address()).await, "A answers across the bridge");
            assert!(ping(b.address()).await, "B answers across the bridge");
            assert!(
                b.cli(&["ROLE"]).await?.starts_with("slave"),
                "B replicates A"
            );

            {
                let _cut = fault::partition(a, CLIENT_IP)?;
                assert!(!ping(a.address()).await, "a partition drops silently");
                assert!(ping(b.address()).await, "only A is cut off");
            }
            assert!(ping(a.address()).await, "dropping the guard heals");

            {
                let _rst = fault::reject(a, CLIENT_IP)?;
                let started = tokio::time::Instant::now();
                let refused = tokio::net::TcpStream::connect(a.address()).await;
                assert!(refused.is_err(), "reject answers with a reset");
                assert!(
                    started.elapsed() < Duration::from_millis(100),
                    "at once, no timeout"
                );
            }

            let resolver =
                DnsResolver::new((DNS_IP, 53).into()).map_err(|e| LabError::new(e.to_string()))?;
            let first = resolver.resolve(ENDPOINT_NAME, 6379).await;
            assert_eq!(first.unwrap(), vec![a.address()]);
            lab.dns()?.point_at(b.ip)?;
            tokio::time::sleep(steadfast_lab::dns::TTL + Duration::from_millis(200)).await;
            let moved = resolver.resolve(ENDPOINT_NAME, 6379).await;
            assert_eq!(
                moved.unwrap(),
                vec![b.address()],
                "the name moved once its TTL ran out"
            );

            {
                let _slow = steadfast_lab::relay::delay(a, CLIENT_IP, Duration::from_millis(150))?;
                let rtt = timed_ping(a.address())
                    .await
                    .expect("answers through the relay");
                assert!(
                    rtt >= Duration::from_millis(300),
                    "150 ms each way: {rtt:?}"
                );
                assert!(rtt < Duration::from_millis(900), "{rtt:?}");
            }
            let rtt = timed_ping(a.address())
                .await
                .expect("answers directly again");
            assert!(
                rtt < Duration::from_millis(100),
                "the delay ended with its guard: {rtt:?}"
            );

            {
                let _paused = fault::Paused::new(a)?;
                assert!(!ping(a.address()).await, "a paused server answers nothing");
            }
            assert!(ping(a.address()).await, "resumed on drop");
            Ok::<_, LabError>(())
        })
    });
    outcome.unwrap().unwrap();
    assert_eq!(
        net::namespaces_with(&prefix).unwrap(),
        vec![format!("{prefix}-client")]
    );
    drop(client);
    assert!(
        net::namespaces_with(&prefix).unwrap().is_empty(),
        "every namespace was removed"
    );
}
