//! Commands forwarded as their callers encoded them: the server's bytes come back untouched,
//! errors come back decoded, and the command path's waits and retries hold as for any command.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use redis::{AsyncCommands, Value};
use steadfast::{ErrorKind, Forwarded, LinkState, Protocol};
use support::{RedisServer, config_for, connected, init_tracing};

/// `args` as one RESP array.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
    }
    out
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_without_errors_comes_back_as_the_servers_own_bytes_in_either_protocol() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    let _: () = admin.hset("h", "f", "v").await.unwrap();
    for (protocol, expected) in [
        (Protocol::Resp2, &b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"[..]),
        (Protocol::Resp3, &b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"[..]),
    ] {
        let mut config = config_for(&server);
        config.endpoint.protocol = protocol;
        let client = connected(config).await;
        let hgetall = ["HGETALL", "h"];
        let reply = client.forward(&cmd(&hgetall), &encode(&hgetall)).await;
        assert_eq!(reply.unwrap(), Forwarded::Frames(expected.to_vec()));
        let mut pipeline = redis::pipe();
        pipeline.add_command(cmd(&["SET", "k", "1"]));
        pipeline.add_command(cmd(&["INCR", "k"]));
        let mut encoded = encode(&["SET", "k", "1"]);
        encoded.extend(encode(&["INCR", "k"]));
        let reply = client.forward_pipeline(&pipeline, &encoded).await;
        assert_eq!(reply.unwrap(), Forwarded::Frames(b"+OK\r\n:2\r\n".to_vec()));
        client.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_an_error_comes_back_decoded_and_a_single_commands_error_fails_it() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut pipeline = redis::pipe();
    pipeline.add_command(cmd(&["SET", "s", "text"]));
    pipeline.add_command(cmd(&["INCR", "s"]));
    let mut encoded = encode(&["SET", "s", "text"]);
    encoded.extend(encode(&["INCR", "s"]));
    let Forwarded::Values(values) = client.forward_pipeline(&pipeline, &encoded).await.unwrap()
    else {
        panic!("a reply with an error is decoded");
    };
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], Value::Okay);
    assert!(
        matches!(&values[1], Value::ServerError(e) if e.code() == "ERR"),
        "{values:?}"
    );
    let incr = ["INCR", "s"];
    let failed = client
        .forward(&cmd(&incr), &encode(&incr))
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Server, "{failed}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_the_commands_are_refused_unsent_and_the_link_stays_in_step() {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    let mut pipeline = redis::pipe();
    pipeline.add_command(cmd(&["SET", "a", "1"]));
    pipeline.add_command(cmd(&["SET", "b", "1"]));
    let refused = client
        .forward_pipeline(&pipeline, &encode(&["SET", "a", "1"]))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    let mut admin = server.admin().await;
    let exists: bool = admin.exists("a").await.unwrap();
    assert!(!exists, "nothing of a refused request is sent");
    let subscribe = ["SUBSCRIBE", "c"];
    let refused = client
        .forward(&cmd(&subscribe), &encode(&subscribe))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    let ping = ["PING"];
    let pong = client.forward(&cmd(&ping), &encode(&ping)).await.unwrap();
    assert_eq!(pong, Forwarded::Frames(b"+PONG\r\n".to_vec()));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_command_waits_through_a_restart_and_is_sent_once() {
    init_tracing();
    let mut server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    server.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while matches!(client.state(), LinkState::Connected { .. }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kill was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let incr = ["INCR", "counter"];
    let mut sending = {
        let client = client.clone();
        tokio::spawn(async move { client.forward(&cmd(&incr), &encode(&incr)).await })
    };
    let early = tokio::time::timeout(Duration::from_millis(200), &mut sending).await;
    assert!(
        early.is_err(),
        "with no server the command waits: {early:?}"
    );
    server.spawn_and_wait().await;
    let reply = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.unwrap(), Forwarded::Frames(b":1\r\n".to_vec()));
    client.shutdown().await;
}
