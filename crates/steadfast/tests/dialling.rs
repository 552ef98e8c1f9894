//! A name with several addresses: dialled staggered and in parallel (RFC 8305), a dead one
//! costs one stagger, a stalled link is judged by the name's other addresses, and a backoff
//! after reaching a replica ends when the name stops listing it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::{Client, Event};
use support::{RedisServer, Workload, config_resolving, init_tracing, summarise};
use tokio::time::Instant;

/// A listener whose accept queue is full, so the kernel drops further SYNs unanswered: a dead
/// address on loopback, no root needed. IPv6 (`::1`) when the machine has it: the dual-stack
/// form, a broken IPv6 path in front of a working IPv4 one.
struct DeadAddress {
    address: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl DeadAddress {
    async fn new() -> Self {
        let ip: std::net::IpAddr = if std::net::TcpListener::bind("[::1]:0").is_ok() {
            "::1".parse().expect("ip")
        } else {
            "127.0.0.1".parse().expect("ip")
        };
        let domain = socket2::Domain::for_address(SocketAddr::new(ip, 0));
        let socket = |()| {
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
                .expect("socket")
        };
        let listener = socket(());
        listener.bind(&SocketAddr::new(ip, 0).into()).expect("bind");
        listener.listen(0).expect("listen");
        let address = listener
            .local_addr()
            .expect("local")
            .as_socket()
            .expect("inet");
        let fillers = (0..4)
            .map(|_| {
                let filler = socket(());
                filler.set_nonblocking(true).expect("nonblocking");
                let _ = filler.connect(&address.into());
                std::net::TcpStream::from(filler)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Self {
            address,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

fn connected_to(event: &Event) -> Option<SocketAddr> {
    match event {
        Event::Connected { address, .. } => address.tcp(),
        _ => None,
    }
}

/// Where the first link the events tell of was made.
fn first_connected(events: &mut tokio::sync::broadcast::Receiver<Event>) -> SocketAddr {
    support::drain(events)
        .iter()
        .find_map(connected_to)
        .expect("a Connected event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_first_address_is_dead_is_served_by_the_next_one_stagger_later() {
    init_tracing();
    let server = RedisServer::start().await;
    let dead = DeadAddress::new().await;
    let resolver = StaticResolver::new(vec![dead.address, server.address]);
    let config = config_resolving(&resolver);
    let stagger = config.connect.address_stagger;
    let started = Instant::now();
    let client = Client::new(config).unwrap();
    let mut events = client.events();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let took = started.elapsed();
    // One after the other, the dead address would have had half the 5 s connect timeout.
    assert!(took < stagger * 5, "connected after {took:?}");
    let _: () = client
        .query(redis::cmd("SET").arg("k").arg("v"))
        .await
        .unwrap();
    assert_eq!(first_connected(&mut events), server.address);
    client.shutdown().await;
}

/// The old primary stops answering (its kernel still accepts connections); `listed_after`
/// later the name lists it first and the new primary second, as round-robin DNS does
/// mid-failover. Returns how long after that the client was served again.
async fn stalled_primary_then_name_lists_both(listed_after: Duration) -> Duration {
    init_tracing();
    let old = RedisServer::start().await;
    let new = RedisServer::start().await;
    let resolver = StaticResolver::new(vec![old.address]);
    let client = Client::new(config_resolving(&resolver)).unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fault = Instant::now();
    old.pause();
    tokio::time::sleep(listed_after).await;
    resolver.set(vec![old.address, new.address]);
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ops = workload.stop().await;
    old.resume();

    let summary = summarise(&ops, fault, restored);
    eprintln!("{summary:?}");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let reached: Vec<SocketAddr> = support::drain(&mut events)
        .iter()
        .filter_map(connected_to)
        .collect();
    assert_eq!(
        reached,
        vec![new.address],
        "one new link, to the new primary"
    );
    client.shutdown().await;
    summary.recovery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_whose_name_also_lists_the_new_one_is_left_for_the_new_one() {
    let recovery = stalled_primary_then_name_lists_both(Duration::ZERO).await;
    // Detection is the read stall (1 s) plus one probe; the old way (the probe stuck on the
    // first address, the link kept until TCP_USER_TIMEOUT) took over 5 s.
    assert!(recovery < Duration::from_millis(1500), "{recovery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_in_the_name_restarts_a_probe_stuck_on_the_old_one() {
    // The first probe starts at ~1 s, on the old address alone, and would wait out its 1 s
    // bound and then a 1 s backoff; the new address makes the monitor probe again at once.
    let recovery = stalled_primary_then_name_lists_both(Duration::from_millis(1300)).await;
    assert!(recovery < Duration::from_millis(500), "{recovery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_stops_listing_the_replica_a_dial_found_ends_the_backoff_at_once() {
    init_tracing();
    let primary = RedisServer::start().await;
    let replica = RedisServer::start().await;
    replica.replicate(&primary).await;
    let resolver = StaticResolver::new(vec![replica.address]);
    let client = Client::new(config_resolving(&resolver)).unwrap();
    let mut events = client.events();

    // Attempts reach the replica and back off, longer each time, until one waits long enough
    // that its timer could not explain a quick dial.
    let long_wait = Duration::from_millis(600);
    let delay = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::ReconnectScheduled { delay, error, .. }) = events.recv().await {
                assert!(error.contains("not a primary"), "{error}");
                if delay >= long_wait {
                    return delay;
                }
            }
        }
    })
    .await
    .expect("a backoff of 600 ms or more within 30 s");
    let flipped = Instant::now();
    resolver.set(vec![primary.address]);
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let took = flipped.elapsed();

    // One look at the name (a quarter of the delay, at most 250 ms apart) and a dial.
    assert!(
        took < Duration::from_millis(400) && took < delay,
        "connected {took:?} after the name moved, in a wait of {delay:?}"
    );
    assert_eq!(first_connected(&mut events), primary.address);
    client.shutdown().await;
}
