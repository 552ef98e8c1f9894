//! Drop-in means drop-in: connection state a caller sets with commands survives reconnects,
//! commands that would take the shared link over are refused up front, and blocking commands
//! get their own time and never leave the server blocked for nobody.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use steadfast::{Client, ErrorKind};
use support::{RedisServer, config_for, connected, init_tracing, kill_clients};
use tokio::time::Instant;

/// Kills every normal client and waits until `client` has a new link.
async fn reconnect(server: &RedisServer, client: &Client) {
    let mut admin = server.admin().await;
    let before = client.state();
    assert!(kill_clients(&mut admin).await >= 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.state() == before {
        assert!(Instant::now() < deadline, "no new link after the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
}

/// The client's own `CLIENT INFO` line.
async fn client_info(client: &Client) -> String {
    client
        .query::<String>(redis::cmd("CLIENT").arg("INFO"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_sent_as_a_command_stays_in_force_after_a_reconnect() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut client = connected(config_for(&server)).await;
    let _: () = redis::cmd("SELECT")
        .arg(5)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(redis::aio::ConnectionLike::get_db(&client), 5);
    reconnect(&server, &client).await;
    let _: () = client.set("after-reconnect", 1).await.unwrap();
    let mut admin = server.admin().await;
    let in_zero: bool = admin.exists("after-reconnect").await.unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(5)
        .query_async(&mut admin)
        .await
        .unwrap();
    let in_five: bool = admin.exists("after-reconnect").await.unwrap();
    assert!(
        in_five && !in_zero,
        "the SET after the reconnect must land in database 5"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_name_and_no_evict_sent_as_commands_stay_in_force_after_a_reconnect() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let _: () = client
        .query(redis::cmd("CLIENT").arg("SETNAME").arg("billing-worker"))
        .await
        .unwrap();
    let _: () = client
        .query(redis::cmd("CLIENT").arg("NO-EVICT").arg("ON"))
        .await
        .unwrap();
    reconnect(&server, &client).await;
    let name: String = client
        .query(redis::cmd("CLIENT").arg("GETNAME"))
        .await
        .unwrap();
    assert_eq!(name, "billing-worker");
    let info = client_info(&client).await;
    let flags = info
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("flags="))
        .unwrap_or_default();
    assert!(flags.contains('e'), "NO-EVICT must be on again: {info}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_command_the_server_refuses_is_not_replayed() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let err = client
        .query::<()>(redis::cmd("SELECT").arg(99))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    reconnect(&server, &client).await;
    let _: () = client
        .query(redis::cmd("SET").arg("k").arg(1))
        .await
        .unwrap();
    let mut admin = server.admin().await;
    let in_zero: bool = admin.exists("k").await.unwrap();
    assert!(in_zero);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_would_take_the_shared_link_over_are_refused_and_the_client_stays_usable() {
    init_tracing();
    let server = RedisServer::start().await;
    for protocol in [steadfast::Protocol::Resp2, steadfast::Protocol::Resp3] {
        let mut config = config_for(&server);
        config.endpoint.protocol = protocol;
        let mut client = connected(config).await;
        let refused = [
            redis::cmd("SUBSCRIBE").arg("news").clone(),
            redis::cmd("PSUBSCRIBE").arg("n*").clone(),
            redis::cmd("MONITOR").clone(),
            redis::cmd("MULTI").clone(),
            redis::cmd("WATCH").arg("k").clone(),
            redis::cmd("AUTH").arg("secret").clone(),
            redis::cmd("HELLO").arg(3).clone(),
            redis::cmd("RESET").clone(),
            redis::cmd("CLIENT").arg("REPLY").arg("OFF").clone(),
        ];
        for cmd in &refused {
            let err = client.query::<redis::Value>(cmd).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
            assert!(err.to_string().contains("was not sent"), "{err}");
            assert!(!err.is_ambiguous());
        }
        assert!(
            !client
                .query::<redis::Value>(redis::cmd("AUTH").arg("secret"))
                .await
                .unwrap_err()
                .to_string()
                .contains("secret"),
            "a refused AUTH must not repeat its password"
        );
        let mut pipe = redis::pipe();
        pipe.get("a").cmd("SUBSCRIBE").arg("news");
        let err: redis::RedisError = pipe
            .query_async::<redis::Value>(&mut client)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("SUBSCRIBE (command 2 of the pipeline)"),
            "{err}"
        );
        // Nothing above reached the server: every clone still works, and transactions
        // go whole as atomic pipelines.
        let _: () = client.set("k", "v").await.unwrap();
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .incr("counter", 1)
            .query_async(&mut client)
            .await
            .unwrap();
        assert_eq!(
            n,
            if protocol == steadfast::Protocol::Resp2 {
                1
            } else {
                2
            }
        );
        let value: String = client.clone().get("k").await.unwrap();
        assert_eq!(value, "v");
        client.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_may_wait_its_own_timeout_beyond_the_command_deadline() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.command.deadline = Duration::from_millis(500);
    let mut client = connected(config).await;
    let mut admin = server.admin().await;
    let pusher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _: i64 = admin.lpush("jobs", "job-1").await.unwrap();
    });
    let popped: Option<(String, String)> = client.blpop("jobs", 3.0).await.unwrap();
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));
    pusher.await.unwrap();
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_its_caller_gave_up_on_is_unblocked_and_pops_nothing() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut client = connected(config_for(&server)).await;
    let mut admin = server.admin().await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        client.blpop::<_, Option<(String, String)>>("jobs", 0.0),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "BLPOP with nothing to pop must still be waiting"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut admin)
            .await
            .unwrap();
        if support::info_field(&info, "blocked_clients") == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned BLPOP still blocks on the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _: i64 = admin.lpush("jobs", "job-1").await.unwrap();
    let left: i64 = admin.llen("jobs").await.unwrap();
    assert_eq!(left, 1, "nobody may have popped the item");
    // The shared link serves the next command at once.
    let _: () = client.set("k", "v").await.unwrap();
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_commands_and_pipelines_work_unchanged() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut client = Client::open(&server.url()).unwrap();

    let _: () = client.set("name", "steadfast").await.unwrap();
    let name: String = client.get("name").await.unwrap();
    assert_eq!(name, "steadfast");
    let n: i64 = client.incr("hits", 5).await.unwrap();
    assert_eq!(n, 5);

    let (a, b): (i64, String) = redis::pipe()
        .incr("hits", 1)
        .get("name")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!((a, b.as_str()), (6, "steadfast"));

    let (x,): (i64,) = redis::pipe()
        .atomic()
        .incr("hits", 1)
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(x, 7);

    let err = client.lpush::<_, _, i64>("name", "x").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some("WRONGTYPE"),
        "final errors pass through as redis-rs errors"
    );
    client.shutdown().await;
}

/// The next `invalidate` push on `pushes` within 5 s: its key list, `None` for a flush of
/// everything.
async fn next_invalidation(
    pushes: &mut tokio::sync::broadcast::Receiver<redis::PushInfo>,
) -> Option<Vec<Vec<u8>>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let push = tokio::time::timeout_at(deadline, pushes.recv())
            .await
            .expect("no invalidate push within 5 s")
            .unwrap();
        if push.kind != redis::PushKind::Invalidate {
            continue;
        }
        return match push.data.first() {
            Some(redis::Value::Array(keys)) => Some(
                keys.iter()
                    .map(|k| match k {
                        redis::Value::BulkString(key) => key.clone(),
                        other => panic!("unexpected key {other:?}"),
                    })
                    .collect(),
            ),
            Some(redis::Value::Nil) => None,
            other => panic!("unexpected invalidate data {other:?}"),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_survives_a_reconnect_and_the_lost_invalidations_are_told_as_a_flush() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut config = config_for(&server);
    config.endpoint.protocol = steadfast::Protocol::Resp3;
    let client = connected(config).await;
    let mut pushes = client.pushes();
    let _: () = client
        .query(redis::cmd("CLIENT").arg("TRACKING").arg("ON"))
        .await
        .unwrap();
    let mut admin = server.admin().await;
    let _: () = admin.set("cached", "one").await.unwrap();
    let _: String = client.query(redis::cmd("GET").arg("cached")).await.unwrap();
    let _: () = admin.set("cached", "two").await.unwrap();
    assert_eq!(
        next_invalidation(&mut pushes).await,
        Some(vec![b"cached".to_vec()])
    );

    // The key is read again (tracked), then the link dies: a write after that would be
    // invalidated on the old link only, so the client is told to flush everything.
    let _: String = client.query(redis::cmd("GET").arg("cached")).await.unwrap();
    reconnect(&server, &client).await;
    assert_eq!(next_invalidation(&mut pushes).await, None);
    let mut admin = server.admin().await; // the kill took the old one too

    // The new link tracks too: its reads are invalidated (after the flushes of the link's
    // end and of the new link's start).
    let _: String = client.query(redis::cmd("GET").arg("cached")).await.unwrap();
    let _: () = admin.set("cached", "three").await.unwrap();
    let mut keys = next_invalidation(&mut pushes).await;
    while keys.is_none() {
        keys = next_invalidation(&mut pushes).await;
    }
    assert_eq!(keys, Some(vec![b"cached".to_vec()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_a_new_link_cannot_keep_is_refused_unsent() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    for args in [
        &["TRACKING", "ON", "REDIRECT", "5"][..],
        &["TRACKING", "ON", "OPTIN"],
        &["CACHING", "yes"],
    ] {
        let mut cmd = redis::cmd("CLIENT");
        for arg in args {
            cmd.arg(*arg);
        }
        let error = client.query::<()>(&cmd).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{args:?}: {error}");
        assert!(error.to_string().contains("was not sent"), "{error}");
    }
    let info = client_info(&client).await;
    assert!(info.contains("flags=N"), "tracking stayed off: {info}");
}
