//! Maintenance against a real redis-server on loopback: Azure's `AzureRedisEvents` published on
//! the real server, and a server that refuses the RESP3 opt-in.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::maintenance::azure::{AzureEventKind, CHANNEL};
use steadfast::{AzureEvents, DisconnectReason, Event, MaintenanceNotice};
use support::{
    RedisServer, Workload, config_for, config_resolving, connected, drain, init_tracing, utc_in,
};
use tokio::time::Instant;

async fn wait_for_subscriber(admin: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(CHANNEL)
            .query_async(admin)
            .await
            .unwrap();
        if counts.first().is_some_and(|(_, n)| *n > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client never subscribed to {CHANNEL}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_maintenance_starting_replaces_the_link_ahead_of_time_without_a_failed_operation() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.maintenance.azure_events = AzureEvents::On;
    let client = connected(config).await;
    let mut admin = server.admin().await;
    wait_for_subscriber(&mut admin).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let published = Instant::now();
    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        utc_in(Duration::from_secs(3)),
        server.address.ip()
    );
    let receivers: u64 = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(&message)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let mut replaced_after = None;
    let limit = published + Duration::from_secs(5);
    while replaced_after.is_none() && Instant::now() < limit {
        if let Ok(Ok(Event::Disconnected {
            reason: DisconnectReason::Planned,
            ..
        })) = tokio::time::timeout_at(limit, events.recv()).await
        {
            replaced_after = Some(published.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = workload.stop().await;
    let failed: Vec<_> = ops.iter().filter(|o| o.error.is_some()).collect();
    let longest = ops.iter().map(|o| o.end - o.start).max().unwrap();
    eprintln!(
        "azure starting: replaced after {replaced_after:?}, {} ops, {} failed, longest {longest:?}",
        ops.len(),
        failed.len()
    );
    let replaced_after = replaced_after.expect("the link was replaced ahead of the maintenance");
    // StartTimeInUTC has whole seconds: the drain lands 1-2 s after publishing a start 3 s ahead.
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2_500)).contains(&replaced_after),
        "{replaced_after:?}"
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        longest < Duration::from_millis(100),
        "the handoff cost {longest:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_azure_notification_surfaces_as_an_event_and_scheduled_changes_nothing() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.maintenance.azure_events = AzureEvents::On;
    let client = connected(config).await;
    let mut admin = server.admin().await;
    wait_for_subscriber(&mut admin).await;
    let mut events = client.events();
    for message in [
        format!(
            "NotificationType|NodeMaintenanceScheduled|StartTimeInUTC|{}|IsReplica|False",
            utc_in(Duration::from_secs(600))
        ),
        "NotificationType|SomethingNew|IPAddress||SSLPort|x".to_owned(),
        "not a notification at all".to_owned(),
    ] {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = drain(&mut events);
    let kinds: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Maintenance(MaintenanceNotice::Azure(event)) => Some(event.kind.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            AzureEventKind::Scheduled,
            AzureEventKind::Unknown("SomethingNew".into())
        ]
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "{seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_the_opt_in_is_used_exactly_as_before() {
    init_tracing();
    let server = RedisServer::start().await;
    // Subscribed before anything starts: the first Connected cannot be missed.
    let (client, mut events) = steadfast::Client::with_events(config_for(&server)).unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    let seen = drain(&mut events);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Connected {
                is_maintenance_aware: false,
                ..
            }
        )),
        "Debian's redis-server refuses CLIENT MAINT_NOTIFICATIONS: {seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_is_asked_once_for_notifications_by_every_client_of_the_process() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let before = server.connections_received().await;
    let client = connected(config_for(&server)).await;
    // The listener beside the RESP2 link is made right after it, refused, and closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = server.connections_received().await;
    assert_eq!(
        first,
        before + 3,
        "the link, its listener and this INFO's own connection"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while RedisServer::clients_named(&mut admin, "steadfast-notices").await > 0 {
        assert!(Instant::now() < deadline, "the refused listener stays open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    support::kill_clients(&mut admin).await;
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new link and this INFO's own connection: no listener is asked for again.
    let after = server.connections_received().await;
    assert_eq!(after, first + 2, "no second listener after a refusal");

    // Nor by another client of the process (a proxy's many clients, a pool).
    let other = connected(config_for(&server)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.connections_received().await,
        after + 2,
        "the other client's link and this INFO's own connection"
    );
    other.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_hello_rejects_the_listener_three_times_and_is_left_alone() {
    init_tracing();
    // No RESP3 here: `HELLO` is renamed away, as on servers before Redis 6.
    let server = RedisServer::start_with(&["--rename-command", "HELLO", ""]).await;
    let client = connected(config_for(&server)).await;
    // Three rejected handshakes, 0.5-1 s and 0.5-2 s apart, then no more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled = server.connections_received().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        server.connections_received().await,
        settled + 1,
        "only this INFO's own connection: the listener stopped trying"
    );
    let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG", "the RESP2 link serves as before");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp2_client_with_the_listener_off_makes_one_connection() {
    init_tracing();
    let server = RedisServer::start().await;
    let before = server.connections_received().await;
    let mut config = config_for(&server);
    config.maintenance.resp2_listener = false;
    let client = connected(config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.connections_received().await,
        before + 2,
        "the link and this INFO's own connection, no listener"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_at_the_announced_start_is_left_within_a_few_ticks_not_a_read_stall() {
    init_tracing();
    let (a, b) = (RedisServer::start().await, RedisServer::start().await);
    let resolver = StaticResolver::new(vec![a.address]);
    let mut config = config_resolving(&resolver);
    config.maintenance.azure_events = AzureEvents::On;
    let client = connected(config).await;
    let mut admin = a.admin().await;
    wait_for_subscriber(&mut admin).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());

    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        utc_in(Duration::from_secs(3)),
        a.address.ip()
    );
    let _: u64 = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(&message)
        .query_async(&mut admin)
        .await
        .unwrap();
    // The link is replaced (to A again: the name has not moved yet) one second before the start.
    let planned = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Disconnected {
                reason: DisconnectReason::Planned,
                ..
            }) = events.recv().await
            {
                return Instant::now();
            }
        }
    })
    .await
    .expect("the link was replaced ahead of the start");
    // At the start A stops answering (no RST: SIGSTOP) and the name moves to B.
    tokio::time::sleep_until(planned + Duration::from_secs(1)).await;
    a.pause();
    resolver.set(vec![b.address]);
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ops = workload.stop().await;
    a.resume();

    let longest = ops.iter().map(|o| o.end - o.start).max().unwrap();
    let failed: Vec<_> = ops.iter().filter(|o| o.error.is_some()).collect();
    eprintln!(
        "start: {} ops, longest {longest:?} (the last began {:?} after the cut), {} failed",
        ops.len(),
        ops.last().map(|o| o.start.saturating_duration_since(cut)),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    // A tick (100 ms) to see the name move, a dial to B: without the alert, a read stall (1 s).
    assert!(
        longest < Duration::from_millis(500),
        "the operations caught at the start waited {longest:?}"
    );
    let mut b_admin = b.admin().await;
    let on_b: u64 = redis::cmd("DBSIZE")
        .query_async(&mut b_admin)
        .await
        .unwrap();
    assert!(on_b > 0, "the workload's writes went on on B");
    client.shutdown().await;
}
