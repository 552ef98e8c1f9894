//! Planned maintenance end to end, as root: steadfast behind the lab's RESP proxy in front of a
//! real redis-server, with a second real server as the MOVING target.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::{Client, Config, DisconnectReason, Event};
use steadfast_lab::LabError;
use steadfast_lab::lab::{Lab, LabSpec};
use steadfast_lab::net::{self, Namespace, PROXY_IP};
use steadfast_lab::proxy::Proxy;
use tokio::time::Instant;

/// SET+GET every 10 ms; returns (operations, failures, longest).
async fn workload(client: Client, until: Instant) -> (usize, Vec<String>, Duration) {
    let (mut ops, mut failures, mut longest) = (0, Vec::new(), Duration::ZERO);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let started = Instant::now();
        let result = async {
            client
                .query::<()>(redis::cmd("SET").arg("k").arg(i))
                .await?;
            client
                .query::<Option<u64>>(redis::cmd("GET").arg("k"))
                .await
        }
        .await;
        longest = longest.max(started.elapsed());
        ops += 1;
        if let Err(e) = result {
            failures.push(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (ops, failures, longest)
}

fn record(client: &Client) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut events = client.events();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            sink.lock().expect("event log").push(event);
        }
    });
    seen
}

fn in_lab<F>(test: &'static str, body: impl FnOnce(Lab) -> F + Send + 'static)
where
    F: std::future::Future<Output = Result<(), LabError>> + 'static,
{
    let prefix = format!("{}-{test}", net::run_prefix());
    let client = Namespace::create(&format!("{prefix}-client")).expect("needs root");
    let spec = LabSpec {
        prefix,
        index: 0,
        client_namespace: client.name().to_owned(),
        servers: 2,
        is_replicated: true,
        is_started: true,
        cluster: None,
    };
    net::run_in(client.name(), move || {
        Box::pin(async move { body(Lab::build(&spec).await?).await })
    })
    .expect("the namespaced thread ran")
    .expect("the lab scenario passed");
}

/// Push notifications need RESP3, which these clients opt in to.
fn config_for(address: std::net::SocketAddr) -> Config {
    let mut config = Config::default();
    config.endpoint.host = address.ip().to_string();
    config.endpoint.port = address.port();
    config.endpoint.protocol = steadfast::Protocol::Resp3;
    config
}

#[test]
fn moving_to_a_new_node_moves_the_client_without_a_failed_or_slow_operation() {
    in_lab("mv", |mut lab| async move {
        let upstream = lab.servers[0].address();
        let namespace = lab.attach("px", PROXY_IP)?;
        let proxy = Proxy::start(Some(namespace), (PROXY_IP, 6379).into(), upstream)?;
        let client = Client::new(config_for(proxy.address)).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            proxy.opted_in(),
            1,
            "the client opted in to maintenance notifications"
        );
        let seen = record(&client);
        let run = tokio::spawn(workload(
            client.clone(),
            Instant::now() + Duration::from_secs(3),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;

        let target = lab.servers[1].address();
        lab.servers[1].promote().await?;
        let frame = format!(">4\r\n+MOVING\r\n:1\r\n:5\r\n+{target}\r\n");
        assert_eq!(proxy.announce(frame.as_bytes()), 1);
        let (ops, failures, longest) = run.await.unwrap();
        proxy.close_existing();

        let seen = seen.lock().unwrap().clone();
        eprintln!(
            "MOVING: {ops} ops, {} failed, longest {longest:?}",
            failures.len()
        );
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            longest < Duration::from_millis(100),
            "the handoff cost {longest:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Connected { address, .. } if *address == target)),
            "moved to B: {seen:?}"
        );
        assert!(
            seen.iter().any(|e| matches!(
                e,
                Event::Disconnected {
                    reason: DisconnectReason::Planned,
                    ..
                }
            )),
            "{seen:?}"
        );
        let moves = seen
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count();
        assert_eq!(moves, 1, "one move for one MOVING");
        client.shutdown().await;
        Ok(())
    });
}

#[test]
fn failing_over_relaxes_deadlines_so_a_pause_longer_than_the_deadline_fails_nothing() {
    in_lab("fo", |mut lab| async move {
        let upstream = lab.servers[0].address();
        let namespace = lab.attach("px", PROXY_IP)?;
        let proxy = Proxy::start(Some(namespace), (PROXY_IP, 6379).into(), upstream)?;
        let client = Client::new(config_for(proxy.address)).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        let seen = record(&client);
        let run = tokio::spawn(workload(
            client.clone(),
            Instant::now() + Duration::from_secs(8),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;

        proxy.announce(b">4\r\n+FAILING_OVER\r\n:2\r\n:1\r\n+1\r\n");
        tokio::time::sleep(Duration::from_millis(200)).await;
        {
            // Longer than the 5 s default deadline, shorter than the 10 s relaxed one.
            let _paused = steadfast_lab::fault::Paused::new(&lab.servers[0])?;
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        proxy.announce(b">3\r\n+FAILED_OVER\r\n:2\r\n+1\r\n");
        proxy.clear_pending();
        let (ops, failures, longest) = run.await.unwrap();

        let seen = seen.lock().unwrap().clone();
        eprintln!(
            "FAILING_OVER: {ops} ops, {} failed, longest {longest:?}",
            failures.len()
        );
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            longest > Duration::from_secs(5),
            "the pause outlasted the normal deadline"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Relaxed { is_relaxed: true })),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Relaxed { is_relaxed: false })),
            "{seen:?}"
        );
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
            "a relaxed link is not suspected: {seen:?}"
        );
        client.shutdown().await;
        Ok(())
    });
}

#[test]
fn unknown_push_frames_reach_the_application_untouched() {
    in_lab("up", |mut lab| async move {
        let proxy = lab.start_proxy()?;
        let client = Client::new(config_for(proxy.address)).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        let mut pushes = client.pushes();
        assert!(proxy.inject_newest(b">3\r\n+SOMETHING_NEW\r\n:42\r\n$2\r\nhi\r\n"));
        let push = tokio::time::timeout(Duration::from_secs(2), pushes.recv())
            .await
            .expect("the frame arrived")
            .expect("a push");
        assert_eq!(push.kind, redis::PushKind::Other("SOMETHING_NEW".into()));
        assert_eq!(
            push.data,
            vec![
                redis::Value::Int(42),
                redis::Value::BulkString(b"hi".to_vec())
            ]
        );
        let pong: String = client.query(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, "PONG", "the link still works after an unknown push");
        client.shutdown().await;
        Ok(())
    });
}

#[test]
fn moving_without_an_endpoint_reconnects_to_the_configured_name_after_half_its_time() {
    in_lab("mn", |mut lab| async move {
        let proxy = lab.start_proxy()?;
        let client = Client::new(config_for(proxy.address)).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        let seen = record(&client);
        let run = tokio::spawn(workload(
            client.clone(),
            Instant::now() + Duration::from_millis(2_500),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut events = client.events();
        let announced = Instant::now();
        proxy.announce(b">4\r\n+MOVING\r\n:9\r\n:2\r\n_\r\n");
        let planned_after = loop {
            match tokio::time::timeout(Duration::from_secs(3), events.recv()).await {
                Ok(Ok(Event::Disconnected {
                    reason: DisconnectReason::Planned,
                    ..
                })) => break announced.elapsed(),
                Ok(Ok(_)) => {}
                other => panic!("no planned reconnect: {other:?}"),
            }
        };
        let (ops, failures, longest) = run.await.unwrap();
        proxy.clear_pending();
        let seen = seen.lock().unwrap().clone();
        eprintln!(
            "MOVING null: reconnected after {planned_after:?}, {ops} ops, {} failed, longest {longest:?}",
            failures.len()
        );
        assert!(
            (Duration::from_millis(950)..Duration::from_millis(1_500)).contains(&planned_after),
            "time/2 = 1 s after the frame: {planned_after:?}"
        );
        assert!(failures.is_empty(), "{failures:?}");
        assert!(longest < Duration::from_millis(100), "{longest:?}");
        let planned = seen
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Disconnected {
                        reason: DisconnectReason::Planned,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(planned, 1, "one reconnect for one MOVING: {seen:?}");
        client.shutdown().await;
        Ok(())
    });
}

#[test]
fn moving_to_a_target_that_never_answers_costs_at_most_the_hold_limit_and_fails_nothing() {
    in_lab("md", |mut lab| async move {
        let proxy = lab.start_proxy()?;
        let client = Client::new(config_for(proxy.address)).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        let seen = record(&client);
        let run = tokio::spawn(workload(
            client.clone(),
            Instant::now() + Duration::from_secs(2),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nothing lives at .99 on the lab's bridge: the dial gets no answer.
        proxy.announce(b">4\r\n+MOVING\r\n:3\r\n:30\r\n+10.213.0.99:6379\r\n");
        let (ops, failures, longest) = run.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        eprintln!(
            "MOVING nowhere: {ops} ops, {} failed, longest {longest:?}",
            failures.len()
        );
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            longest < Duration::from_millis(650),
            "held at most the 500 ms hold limit: {longest:?}"
        );
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Connected { .. })),
            "no new link: {seen:?}"
        );
        client.shutdown().await;
        Ok(())
    });
}
