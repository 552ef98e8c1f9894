//! Fault tests against real redis-server processes: the client rides through restarts, killed
//! connections, paused servers and demotions without a failed operation.

mod support;

use std::time::Duration;

use steadfast::connect::resolve::StaticResolver;
use steadfast::{Client, Event};
use support::{
    RedisServer, Workload, config_for, config_resolving, connected, init_tracing, kill_clients,
    summarise,
};
use tokio::time::Instant;

const RECOVERY_GOAL: Duration = Duration::from_millis(100);

/// Asserts the goal for a fault: no failed operation, and the first success after the
/// cause was gone came within 100 ms of it.
fn rode_through(fault_name: &str, ops: Vec<support::Op>, fault: Instant, restored: Instant) {
    let summary = summarise(&ops, fault, restored);
    eprintln!("{fault_name}: {summary:?}");
    assert!(
        summary.failed.is_empty(),
        "{fault_name} failed: {:?}",
        summary.failed
    );
    assert!(
        summary.recovery <= RECOVERY_GOAL,
        "{fault_name}: recovery {:?}",
        summary.recovery
    );
}

/// A primary A, its replica B, a name that resolves to A, and a client connected through it.
async fn replicated_pair() -> (RedisServer, RedisServer, StaticResolver, steadfast::Client) {
    init_tracing();
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    b.replicate(&a).await;
    let resolver = StaticResolver::new(vec![a.address]);
    let client = connected(config_resolving(&resolver)).await;
    (a, b, resolver, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_kill_9_loses_no_operation_and_recovers_within_100_ms() {
    init_tracing();
    let mut server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let fault = Instant::now();
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restored = server.spawn_and_wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    rode_through("restart", workload.stop().await, fault, restored);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_loses_no_operation_and_recovers_within_100_ms() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut admin = server.admin().await;
    let fault = Instant::now();
    let killed = kill_clients(&mut admin).await;
    assert!(killed >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;

    rode_through("client kill", workload.stop().await, fault, fault);
    let mut reconnected = false;
    while let Ok(event) = events.try_recv() {
        reconnected |= matches!(event, Event::Connected { generation: 2, .. });
    }
    assert!(reconnected, "a second link was made");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_for_the_length_of_a_deadline_loses_no_operation_and_keeps_the_link() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A command sent the instant the server stops waits for the whole pause plus its own
    // processing, so the pause must end a little before the 5 s deadline for it to succeed.
    let fault = Instant::now();
    server.pause();
    tokio::time::sleep(Duration::from_millis(4_800)).await;
    server.resume();
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    rode_through("sigstop", workload.stop().await, fault, restored);
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::HeartbeatMissed { .. })),
        "the stall was noticed: {seen:?}"
    );
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "a paused server is slow, not dead: {seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_moves_writes_to_the_new_primary_without_a_failed_operation() {
    let (a, b, resolver, client) = replicated_pair().await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Failover: B promoted, the name moved to B, A demoted to a replica of B and still reachable.
    let fault = Instant::now();
    b.promote().await;
    resolver.set(vec![b.address]);
    a.replicate(&b).await;
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;

    rode_through("demotion", workload.stop().await, fault, restored);
    let (mut moved, mut saw_demotion) = (false, false);
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Connected { address, role, .. } => {
                moved |= address == b.address && role == steadfast::Role::Primary;
            }
            Event::RoleChanged { role, .. } => saw_demotion |= role == steadfast::Role::Replica,
            _ => {}
        }
    }
    assert!(moved, "the client now talks to B as primary");
    assert!(saw_demotion, "the demotion of A was reported");
    let keys_on_b: u64 = redis::cmd("DBSIZE")
        .query_async(&mut b.admin().await)
        .await
        .unwrap();
    assert!(keys_on_b > 0, "writes landed on the new primary");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_serves_commands_once_it_is_up() {
    init_tracing();
    let mut server = RedisServer::reserve(&[]);
    let client = Client::new(config_for(&server)).unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply: Result<String, _> = client.query(&redis::cmd("PING")).await;
            (reply, started)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !pending.is_finished(),
        "the command waits instead of failing"
    );
    let restored = server.spawn_and_wait().await;
    let (reply, _) = pending.await.unwrap();
    let served = Instant::now();
    assert_eq!(reply.unwrap(), "PONG");
    assert!(
        served - restored <= RECOVERY_GOAL,
        "served {:?} after start",
        served - restored
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_queue_capacity_fail_at_once_without_being_sent() {
    init_tracing();
    let server = RedisServer::reserve(&[]);
    let mut config = config_for(&server);
    config.command.queue_capacity = 2;
    let client = Client::new(config).unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.query::<String>(&redis::cmd("PING")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), steadfast::ErrorKind::QueueFull, "{err}");
    assert!(!err.is_ambiguous());
    assert!(started.elapsed() < Duration::from_millis(50));
    for task in waiting {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), steadfast::ErrorKind::DeadlineExceeded, "{err}");
        assert!(!err.is_ambiguous(), "never written: {err}");
        assert!(
            err.to_string().contains("refused"),
            "names the last failure: {err}"
        );
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_primary_with_the_name_moved_is_judged_dead_and_replaced_in_bounded_time() {
    init_tracing();
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    let resolver = StaticResolver::new(vec![a.address]);
    let client = connected(config_resolving(&resolver)).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A hangs (the kernel still acknowledges, nothing answers) and the name moves to B.
    let fault = Instant::now();
    a.pause();
    resolver.set(vec![b.address]);
    let mut detected = None;
    let mut replaced = None;
    let limit = fault + Duration::from_secs(5);
    while replaced.is_none() && Instant::now() < limit {
        match tokio::time::timeout_at(limit, events.recv()).await {
            Ok(Ok(Event::Disconnected { reason, .. })) => {
                assert!(
                    matches!(reason, steadfast::DisconnectReason::NameMoved(_)),
                    "{reason:?}"
                );
                detected = Some(fault.elapsed());
            }
            Ok(Ok(Event::Connected { address, .. })) if address == b.address => {
                // Made before the old link is let go: told before its Disconnected.
                replaced = Some(fault.elapsed());
                detected = detected.or(replaced);
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    // A stays frozen past a command deadline (5 s): the commands caught on it are cut off
    // once it fails a fresh handshake, and sent again on B, not left to their deadline.
    tokio::time::sleep_until(fault + Duration::from_millis(5_500)).await;
    let told = support::drain(&mut events);
    assert!(
        is_name_moved_told(&told),
        "the old link's end is told: {told:?}"
    );
    a.resume();
    let ops = workload.stop().await;
    let summary = summarise(&ops, fault, fault);
    println!("hung primary: detected {detected:?}, replaced {replaced:?}, {summary:?}");
    let detected = detected.expect("the hung link was judged dead");
    assert!(
        detected <= Duration::from_millis(1_500),
        "judged dead {detected:?} after the hang (read_stall 1 s + one 100 ms tick + a lookup)"
    );
    assert!(replaced.is_some(), "the client moved to B");
    assert!(summary.failed.is_empty(), "failed: {:?}", summary.failed);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_endpoint_serves_commands_and_rides_through_a_restart() {
    init_tracing();
    let socket = std::env::temp_dir().join(format!("steadfast-unix-{}.sock", std::process::id()));
    let start = || {
        steadfast_testkit::ServerLine::new(steadfast_testkit::Listen::Unix(socket.clone()))
            .command("redis-server")
            .spawn()
            .expect("redis-server installed")
    };
    let mut server = start();
    let client = Client::open(&format!("unix://{}", socket.display())).unwrap();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fault = Instant::now();
    let _ = server.kill();
    let _ = server.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut server = start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server never listened on {socket:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rode_through("unix restart", workload.stop().await, fault, restored);
    client.shutdown().await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&socket);
}

/// `rejected_calls` of `command` in `INFO commandstats` (0 if it was never called).
fn rejected_calls(commandstats: &str, command: &str) -> u64 {
    commandstats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .and_then(|fields| {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix("rejected_calls="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_out_a_loading_restart_and_each_is_refused_about_once() {
    init_tracing();
    let mut server = RedisServer::start().await;
    let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap();
    // About a second of LOADING on restart here.
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .arg("filler")
        .arg(64)
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    drop(admin);
    let client = connected(config_for(&server)).await;
    const TASKS: usize = 32;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let set = redis::cmd("SET").arg(format!("t{task}")).arg(n).to_owned();
                if let Err(e) = client.query::<()>(&set).await {
                    failed.push(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    server.spawn_and_wait().await;
    // Ready: PING answers PONG, not LOADING.
    let loading_since = Instant::now();
    let mut probe = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    while redis::cmd("PING")
        .query_async::<String>(&mut probe)
        .await
        .is_err()
    {
        assert!(
            loading_since.elapsed() < Duration::from_secs(20),
            "still loading"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let loaded_after = loading_since.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut failed = Vec::new();
    for task in tasks {
        failed.extend(task.await.unwrap());
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut probe)
        .await
        .unwrap();
    let (sets, pings) = (
        rejected_calls(&stats, "set"),
        rejected_calls(&stats, "ping"),
    );
    eprintln!("loading {loaded_after:?}: SET refused {sets} times, PING {pings}");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        loaded_after > Duration::from_millis(300),
        "the server was loading for {loaded_after:?}: too short to test"
    );
    // Each waiting command met LOADING about once; one PING per poll (50 ms) did the asking.
    // With a growing pause per command it was 5-10 refusals each.
    assert!(sets <= 2 * TASKS as u64, "SET refused {sets} times");
    assert!(pings >= 1, "the client polled with PING");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_demoted_midway_sends_only_its_refused_commands_again_on_the_new_primary() {
    let (_a, b, resolver, mut client) = replicated_pair().await;
    // B promoted and the name moved; then the pipeline itself demotes A halfway through, so
    // its first INCR runs on A and the rest are refused there (READONLY), not executed.
    b.promote().await;
    resolver.set(vec![b.address]);
    let (ran, demoted, incr, pushed): (i64, String, i64, i64) = demoting_pipeline(&b)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((ran, demoted.as_str()), (1, "OK"));
    assert_eq!(
        (incr, pushed),
        (1, 1),
        "the refused commands ran once, on B"
    );
    assert_nothing_doubled_on(&b).await;
    client.shutdown().await;
}

/// A pipeline that demotes its own server (to a replica of `to`) halfway: its first INCR runs,
/// the INCR and LPUSH after `REPLICAOF` are refused there (`READONLY`), not executed.
fn demoting_pipeline(to: &RedisServer) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    pipeline
        .incr("ran_on_a", 1)
        .cmd("REPLICAOF")
        .arg(to.address.ip().to_string())
        .arg(to.address.port())
        .incr("counter", 1)
        .lpush("list", "once");
    pipeline
}

/// The refused commands of [`demoting_pipeline`] ran exactly once on `b`.
async fn assert_nothing_doubled_on(b: &RedisServer) {
    let (counter, length): (i64, i64) = redis::pipe()
        .get("counter")
        .llen("list")
        .query_async(&mut b.admin().await)
        .await
        .expect("B answers GET and LLEN");
    assert_eq!((counter, length), (1, 1), "nothing doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_pipeline_demoted_midway_sends_only_its_refused_commands_again_too() {
    // As above, with the pipeline sent as the caller's own bytes (`forward_pipeline`, the
    // proxy's path): the refusals must not reach the caller either.
    let (_a, b, resolver, client) = replicated_pair().await;
    b.promote().await;
    resolver.set(vec![b.address]);
    let pipeline = demoting_pipeline(&b);
    let encoded = pipeline.get_packed_pipeline();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.forward_pipeline(&pipeline, &encoded),
    )
    .await
    .expect("answered within 10 s")
    .unwrap();
    let steadfast::Forwarded::Values(values) = reply else {
        panic!("a reply that held refusals is decoded: {reply:?}");
    };
    assert_eq!(
        values,
        vec![
            redis::Value::Int(1),
            redis::Value::Okay,
            redis::Value::Int(1),
            redis::Value::Int(1),
        ],
        "the refused commands ran once, on B"
    );
    assert_nothing_doubled_on(&b).await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinated_failover_moves_writes_to_the_new_primary_without_a_failed_operation() {
    let (a, b, resolver, client) = replicated_pair().await;
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // FAILOVER: A pauses writes until B has caught up, B is promoted, A becomes its replica
    // (READONLY to writes); then the name moves to B, as a managed service moves it.
    let fault = Instant::now();
    let _: () = redis::cmd("FAILOVER")
        .query_async(&mut a.admin().await)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut b.admin().await)
            .await
            .unwrap();
        if role[0] == redis::Value::BulkString(b"master".to_vec()) {
            break;
        }
        assert!(Instant::now() < deadline, "B was never promoted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    resolver.set(vec![b.address]);
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rode_through(
        "coordinated failover",
        workload.stop().await,
        fault,
        restored,
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_by_a_failover_pause_when_the_name_moves_is_answered_not_cut_off_into_an_unknown_outcome()
 {
    let (a, b, resolver, client) = replicated_pair().await;
    let mut events = client.events();
    let mut admin_a = a.admin().await;

    // What FAILOVER does to A while B catches up: writes wait. One INCR waits there.
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "5000", "WRITE"])
        .query_async(&mut admin_a)
        .await
        .unwrap();
    let mut writer = client.clone();
    let incr = tokio::spawn(async move {
        redis::cmd("INCR")
            .arg("counter")
            .query_async::<i64>(&mut writer)
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // B is promoted and the name moves to it while A, still pausing, answers handshakes.
    b.promote().await;
    resolver.set(vec![b.address]);
    // Past the read-stall threshold: the monitor sees the name moved and replaces the link.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    // A becomes B's replica and lets its paused writes through: READONLY to the INCR.
    a.replicate(&b).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin_a)
        .await
        .unwrap();

    let reply = tokio::time::timeout(Duration::from_secs(5), incr)
        .await
        .expect("the INCR ended within its deadline")
        .unwrap();
    assert_eq!(
        reply.unwrap(),
        1,
        "refused on A, sent again and applied once on B"
    );
    let on_b: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut b.admin().await)
        .await
        .unwrap();
    assert_eq!(on_b, 1, "nothing doubled");
    let seen = support::drain(&mut events);
    assert!(is_name_moved_told(&seen), "the move is told: {seen:?}");
    assert!(
        !told_an_unknown_outcome(&seen),
        "no unknown outcome: {seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_behind_a_write_refused_as_readonly_is_answered_on_the_demoted_server_not_cut_off()
 {
    let (a, b, resolver, client) = replicated_pair().await;
    let mut events = client.events();
    // A failover the client has not heard of yet: B promoted, A its replica, the name on B.
    b.promote().await;
    a.replicate(&b).await;
    resolver.set(vec![b.address]);
    // A holds what it would run for 300 ms; a write it refuses at once (READONLY comes before
    // any pause), so the PUBLISH sent right behind the INCR is answered only later.
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "300", "ALL"])
        .query_async(&mut a.admin().await)
        .await
        .unwrap();
    let (mut first, mut second) = (client.clone(), client.clone());
    let (mut incr, mut publish) = (redis::cmd("INCR"), redis::cmd("PUBLISH"));
    incr.arg("counter");
    publish.arg(&["news", "hello"]);
    let (incr, publish) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(
            incr.query_async::<i64>(&mut first),
            publish.query_async::<i64>(&mut second),
        )
    })
    .await
    .expect("both ended within their deadline");

    assert_eq!(
        incr.unwrap(),
        1,
        "refused on A, sent again and applied on B"
    );
    assert_eq!(
        publish.unwrap(),
        0,
        "answered where it was sent, not cut off into an unknown outcome"
    );
    let seen = support::drain(&mut events);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                reason: steadfast::DisconnectReason::ReadOnly,
                ..
            }
        )),
        "the demotion is told: {seen:?}"
    );
    assert!(
        !told_an_unknown_outcome(&seen),
        "no unknown outcome: {seen:?}"
    );
    client.shutdown().await;
}

/// Whether a command's outcome was told unknown.
fn told_an_unknown_outcome(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::OutcomeUnknown { .. }))
}

/// Whether a link's end was told as the name having moved away from its server.
fn is_name_moved_told(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::Disconnected {
                reason: steadfast::DisconnectReason::NameMoved(_),
                ..
            }
        )
    })
}
