//! Planned maintenance end to end, as root: steadfast behind the lab's RESP proxy in front of a
//! real redis-server, with a second real server as the MOVING target.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::{Client, Config, DisconnectReason, Event};
use steadfast_lab::LabError;
use steadfast_lab::lab::{Lab, LabSpec};
use steadfast_lab::net::{self, Namespace, PROXY_IP};
use steadfast_lab::proxy::Proxy;
use tokio::time::Instant;

/// What the workload did: operations, failures, the longest operation.
struct Tally {
    ops: usize,
    failures: Vec<String>,
    longest: Duration,
}

/// SET+GET every 10 ms until `until`.
async fn workload(client: Client, until: Instant) -> Tally {
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
    Tally {
        ops,
        failures,
        longest,
    }
}

/// The scenario every test here plays: a RESP3 client connected through `proxy`, its events
/// recorded from the start, and (with [`Rehearsal::run_for`]) the workload running.
struct Rehearsal<'p> {
    proxy: &'p Proxy,
    client: Client,
    seen: Arc<Mutex<Vec<Event>>>,
    workload: Option<tokio::task::JoinHandle<Tally>>,
}

impl<'p> Rehearsal<'p> {
    /// Connects a RESP3 client through `proxy` and records its events.
    async fn connect(proxy: &'p Proxy) -> Self {
        Self::connect_with(proxy, config_for(proxy.address, steadfast::Protocol::Resp3)).await
    }

    /// Connects a client made with `config` through `proxy` and records its events, once a
    /// connection opted in to maintenance notifications (a RESP2 link's listener does just
    /// after the link is ready) or 2 s passed.
    async fn connect_with(proxy: &'p Proxy, config: Config) -> Self {
        let (client, mut events) = Client::with_events(config).unwrap();
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while proxy.opted_in() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                sink.lock().expect("event log").push(event);
            }
        });
        Self {
            proxy,
            client,
            seen,
            workload: None,
        }
    }

    /// Starts the workload for `length`, then waits `settle` before the fault.
    async fn run_for(&mut self, length: Duration, settle: Duration) {
        let until = Instant::now() + length;
        self.workload = Some(tokio::spawn(workload(self.client.clone(), until)));
        tokio::time::sleep(settle).await;
    }

    /// Waits for the workload's end; what it did (printed under `label`) and every event.
    async fn tally(&mut self, label: &str) -> (Tally, Vec<Event>) {
        let tally = self
            .workload
            .take()
            .expect("the workload was started")
            .await
            .unwrap();
        eprintln!(
            "{label}: {} ops, {} failed, longest {:?}",
            tally.ops,
            tally.failures.len(),
            tally.longest
        );
        (tally, self.events())
    }

    /// Every event so far.
    fn events(&self) -> Vec<Event> {
        self.seen.lock().unwrap().clone()
    }
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

/// A client of `protocol` to `address` (a RESP3 link hears pushes itself; a RESP2 link's
/// listener hears them for it).
fn config_for(address: std::net::SocketAddr, protocol: steadfast::Protocol) -> Config {
    let mut config = Config::default();
    config.endpoint.host = address.ip().to_string();
    config.endpoint.port = address.port();
    config.endpoint.protocol = protocol;
    config
}

/// The lab's push proxy in front of server A, in a namespace of its own.
fn push_proxy(lab: &mut Lab) -> Result<Proxy, LabError> {
    let upstream = lab.servers[0].address();
    let namespace = lab.attach("px", PROXY_IP)?;
    Proxy::start(Some(namespace), (PROXY_IP, 6379).into(), upstream)
}

/// A client of `protocol` through the push proxy, a workload running, a MOVING to B: the
/// client moves to B without a failed or slow operation, one planned disconnect, two links.
async fn moves_on_moving(lab: &mut Lab, protocol: steadfast::Protocol) -> Result<(), LabError> {
    let proxy = push_proxy(lab)?;
    let mut rehearsal = Rehearsal::connect_with(&proxy, config_for(proxy.address, protocol)).await;
    assert_eq!(
        rehearsal.proxy.opted_in(),
        1,
        "one connection opted in to maintenance notifications ({protocol:?})"
    );
    rehearsal
        .run_for(Duration::from_secs(3), Duration::from_millis(500))
        .await;

    let target = lab.servers[1].address();
    lab.servers[1].promote().await?;
    let frame = format!(">4\r\n+MOVING\r\n:1\r\n:5\r\n+{target}\r\n");
    assert_eq!(rehearsal.proxy.announce(frame.as_bytes()), 1);
    let (tally, seen) = rehearsal.tally(&format!("MOVING, {protocol:?}")).await;
    if protocol == steadfast::Protocol::Resp2 {
        assert_eq!(
            rehearsal.proxy.opted_in(),
            0,
            "the old link's listener closed with it"
        );
    }
    rehearsal.proxy.close_existing();

    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(
        tally.longest < Duration::from_millis(100),
        "the handoff cost {:?}",
        tally.longest
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
    let connects = seen
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(
        connects, 2,
        "the first link, then one move for one MOVING: {seen:?}"
    );
    rehearsal.client.shutdown().await;
    Ok(())
}

#[test]
fn moving_to_a_new_node_moves_the_client_without_a_failed_or_slow_operation() {
    in_lab("mv", |mut lab| async move {
        moves_on_moving(&mut lab, steadfast::Protocol::Resp3).await
    });
}

#[test]
fn a_resp2_client_hears_moving_on_its_listener_and_moves_without_a_failed_operation() {
    in_lab("mv2", |mut lab| async move {
        moves_on_moving(&mut lab, steadfast::Protocol::Resp2).await
    });
}

/// A client of `protocol` through the push proxy, a workload running, FAILING_OVER, then the
/// server paused longer than the normal deadline: nothing fails, relaxation comes and goes,
/// the link is never suspected.
async fn relaxes_on_failing_over(
    lab: &mut Lab,
    protocol: steadfast::Protocol,
) -> Result<(), LabError> {
    let proxy = push_proxy(lab)?;
    let mut rehearsal = Rehearsal::connect_with(&proxy, config_for(proxy.address, protocol)).await;
    rehearsal
        .run_for(Duration::from_secs(8), Duration::from_millis(300))
        .await;

    assert_eq!(
        rehearsal
            .proxy
            .announce(b">4\r\n+FAILING_OVER\r\n:2\r\n:1\r\n+1\r\n"),
        1,
        "one connection heard it ({protocol:?})"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        // Longer than the 5 s default deadline, shorter than the 10 s relaxed one.
        let _paused = steadfast_lab::fault::Paused::new(&lab.servers[0])?;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    rehearsal
        .proxy
        .announce(b">3\r\n+FAILED_OVER\r\n:2\r\n+1\r\n");
    rehearsal.proxy.clear_pending();
    let (tally, seen) = rehearsal
        .tally(&format!("FAILING_OVER, {protocol:?}"))
        .await;

    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(
        tally.longest > Duration::from_secs(5),
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
    rehearsal.client.shutdown().await;
    Ok(())
}

#[test]
fn failing_over_relaxes_deadlines_so_a_pause_longer_than_the_deadline_fails_nothing() {
    in_lab("fo", |mut lab| async move {
        relaxes_on_failing_over(&mut lab, steadfast::Protocol::Resp3).await
    });
}

#[test]
fn a_resp2_client_hears_failing_over_on_its_listener_and_fails_nothing_in_the_pause() {
    in_lab("fo2", |mut lab| async move {
        relaxes_on_failing_over(&mut lab, steadfast::Protocol::Resp2).await
    });
}

#[test]
fn unknown_push_frames_reach_the_application_untouched() {
    in_lab("up", |mut lab| async move {
        let rehearsal = Rehearsal::connect(lab.start_proxy()?).await;
        let mut pushes = rehearsal.client.pushes();
        assert!(
            rehearsal
                .proxy
                .inject_newest(b">3\r\n+SOMETHING_NEW\r\n:42\r\n$2\r\nhi\r\n")
        );
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
        let pong: String = rehearsal.client.query(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, "PONG", "the link still works after an unknown push");
        rehearsal.client.shutdown().await;
        Ok(())
    });
}

#[test]
fn moving_without_an_endpoint_reconnects_to_the_configured_name_after_half_its_time() {
    in_lab("mn", |mut lab| async move {
        let mut rehearsal = Rehearsal::connect(lab.start_proxy()?).await;
        rehearsal
            .run_for(Duration::from_millis(2_500), Duration::from_millis(200))
            .await;
        let mut events = rehearsal.client.events();
        let announced = Instant::now();
        rehearsal
            .proxy
            .announce(b">4\r\n+MOVING\r\n:9\r\n:2\r\n_\r\n");
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
        let (tally, seen) = rehearsal.tally("MOVING null").await;
        rehearsal.proxy.clear_pending();
        eprintln!("MOVING null: reconnected {planned_after:?} after the frame");
        assert!(
            (Duration::from_millis(950)..Duration::from_millis(1_500)).contains(&planned_after),
            "time/2 = 1 s after the frame: {planned_after:?}"
        );
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        assert!(
            tally.longest < Duration::from_millis(100),
            "{:?}",
            tally.longest
        );
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
        rehearsal.client.shutdown().await;
        Ok(())
    });
}

#[test]
fn moving_to_a_target_that_never_answers_costs_at_most_the_hold_limit_and_fails_nothing() {
    in_lab("md", |mut lab| async move {
        let mut rehearsal = Rehearsal::connect(lab.start_proxy()?).await;
        rehearsal
            .run_for(Duration::from_secs(2), Duration::from_millis(200))
            .await;
        // Nothing lives at .99 on the lab's bridge: the dial gets no answer.
        rehearsal
            .proxy
            .announce(b">4\r\n+MOVING\r\n:3\r\n:30\r\n+10.213.0.99:6379\r\n");
        let (tally, seen) = rehearsal.tally("MOVING nowhere").await;
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        assert!(
            tally.longest < Duration::from_millis(650),
            "held at most the 500 ms hold limit: {:?}",
            tally.longest
        );
        let connects = seen
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count();
        assert_eq!(connects, 1, "no new link after the first: {seen:?}");
        rehearsal.client.shutdown().await;
        Ok(())
    });
}

/// Polls `server`'s `CLIENT LIST` until `count` clients are blocked in `BLPOP` (10 s at most);
/// their `CLIENT LIST` lines.
async fn until_popping(
    server: &steadfast_lab::server::Server,
    count: usize,
) -> Result<Vec<String>, LabError> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let list = server.cli(&["CLIENT", "LIST"]).await?;
        let popping: Vec<String> = list
            .lines()
            .filter(|l| l.contains("cmd=blpop") && l.contains("flags=b"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        let blocked = popping.len();
        if blocked == count {
            return Ok(popping);
        }
        if Instant::now() > until {
            return Err(LabError::new(format!(
                "{blocked} clients blocked in BLPOP, not {count}:\n{list}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker blocked in `BLPOP jobs 0` (no timeout of its own) through the rehearsal's client.
fn pop_forever(
    client: &Client,
) -> tokio::task::JoinHandle<Result<Option<(String, String)>, steadfast::Error>> {
    let worker = client.clone();
    tokio::spawn(async move { worker.query(redis::cmd("BLPOP").arg("jobs").arg(0)).await })
}

/// Pushes an item on `server` and checks that the blocked pop took it, with no outcome left
/// unknown on the way; shuts the client down.
async fn pops_what_is_pushed(
    server: &steadfast_lab::server::Server,
    blocked: tokio::task::JoinHandle<Result<Option<(String, String)>, steadfast::Error>>,
    rehearsal: &Rehearsal<'_>,
) -> Result<(), LabError> {
    server.cli(&["LPUSH", "jobs", "after-the-move"]).await?;
    let popped = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the pop ended")
        .unwrap()
        .expect("the pop did not fail");
    assert_eq!(popped, Some(("jobs".into(), "after-the-move".into())));
    let seen = rehearsal.events();
    let unknown: Vec<&Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::OutcomeUnknown { .. }))
        .collect();
    assert!(unknown.is_empty(), "{seen:?}");
    rehearsal.client.shutdown().await;
    Ok(())
}

#[test]
fn a_pop_blocked_when_moving_arrives_steps_off_the_old_node_and_pops_on_the_new_one() {
    in_lab("mvb", |mut lab| async move {
        let proxy = push_proxy(&mut lab)?;
        let rehearsal = Rehearsal::connect(&proxy).await;
        let blocked = pop_forever(&rehearsal.client);
        until_popping(&lab.servers[0], 1).await?;

        let target = lab.servers[1].address();
        lab.servers[1].promote().await?;
        let frame = format!(">4\r\n+MOVING\r\n:1\r\n:5\r\n+{target}\r\n");
        assert_eq!(
            rehearsal.proxy.announce(frame.as_bytes()),
            2,
            "the shared link and the pop's dedicated link both hear it"
        );
        rehearsal.proxy.clear_pending();
        until_popping(&lab.servers[1], 1).await?;
        until_popping(&lab.servers[0], 0).await?;
        // The old node goes: nothing may have stayed on it.
        rehearsal.proxy.close_existing();
        pops_what_is_pushed(&lab.servers[1], blocked, &rehearsal).await
    });
}

#[test]
fn a_pop_blocked_when_moving_without_an_endpoint_arrives_pops_on_the_link_made_again() {
    in_lab("mnb", |mut lab| async move {
        let proxy = push_proxy(&mut lab)?;
        let rehearsal = Rehearsal::connect(&proxy).await;
        let blocked = pop_forever(&rehearsal.client);
        let before = until_popping(&lab.servers[0], 1).await?;
        // Made again on the same name after time/2 = 1 s: the same proxy, the same server.
        assert_eq!(
            rehearsal
                .proxy
                .announce(b">4\r\n+MOVING\r\n:9\r\n:2\r\n_\r\n"),
            2
        );
        rehearsal.proxy.clear_pending();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        // Not left on the link made before the notice, which closes once drained.
        let after = until_popping(&lab.servers[0], 1).await?;
        assert_ne!(before, after, "the pop moved to the new link");
        pops_what_is_pushed(&lab.servers[0], blocked, &rehearsal).await
    });
}
