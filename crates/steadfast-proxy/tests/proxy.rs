//! The proxy against real redis-server processes, with clients that know nothing of
//! steadfast: redis-rs with its defaults, and raw RESP over TCP.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tokio::io::AsyncReadExt;

mod common;

use common::{exchange, ip, proxy_for};
use redis::AsyncCommands;
use steadfast_testkit::TestServer;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rs_client_with_its_defaults_works_through_the_proxy() {
    let server = TestServer::start(ip(1), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let client = redis::Client::open(format!("redis://{address}/2")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = connection.set("k", "v").await.unwrap();
    let value: String = connection.get("k").await.unwrap();
    assert_eq!(value, "v");
    let n: i64 = connection.incr("n", 5).await.unwrap();
    assert_eq!(n, 5);
    let _: () = connection.hset("h", "f", 1).await.unwrap();
    let all: std::collections::HashMap<String, i64> = connection.hgetall("h").await.unwrap();
    assert_eq!(all.get("f"), Some(&1));
    let (a, b): (String, i64) = redis::pipe()
        .get("k")
        .get("n")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!((a.as_str(), b), ("v", 5));
    // The database the client chose (2) is the one written on the server.
    let mut direct = redis::Client::open(format!("{}/2", server.url()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let seen: String = direct.get("k").await.unwrap();
    assert_eq!(seen, "v");
    // A database the server does not have is refused by the server, and changes nothing.
    let refused: redis::RedisResult<()> = redis::cmd("SELECT")
        .arg(99)
        .query_async(&mut connection)
        .await;
    assert!(refused.unwrap_err().to_string().contains("out of range"));
    let still: String = connection.get("k").await.unwrap();
    assert_eq!(still, "v");
    // A server error comes through as the server wrote it.
    let wrong: redis::RedisResult<i64> = connection.incr("k", 1).await;
    assert!(wrong.unwrap_err().to_string().contains("not an integer"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp3_client_gets_resp3_replies_and_the_servers_version_and_a_resp2_one_resp2_replies() {
    let server = TestServer::start(ip(2), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    let hello = exchange(&mut raw, b"HELLO 3\r\n", b"*0\r\n").await;
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    // The upstream's own version, as a client that checks features by it expects.
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut direct)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned();
    let told = format!("$7\r\nversion\r\n${}\r\n{version}\r\n", version.len());
    assert!(
        String::from_utf8_lossy(&hello).contains(&told),
        "{} does not tell version {version}",
        String::from_utf8_lossy(&hello)
    );
    exchange(&mut raw, b"HSET h f 1\r\n", b"\r\n").await;
    let map = exchange(&mut raw, b"HGETALL h\r\n", b"$1\r\n1\r\n").await;
    assert_eq!(map, b"%1\r\n$1\r\nf\r\n$1\r\n1\r\n");
    let mut raw2 = TcpStream::connect(address).await.unwrap();
    let flat = exchange(&mut raw2, b"HGETALL h\r\n", b"$1\r\n1\r\n").await;
    assert_eq!(flat, b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_fails_no_command_and_the_clients_connection_stays() {
    let mut server = TestServer::start(ip(3), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let id_before: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .unwrap();
    let worker = {
        let mut connection = connection.clone();
        tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, Vec::new());
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                match connection.incr::<_, _, i64>("counter", 1).await {
                    Ok(_) => done += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (done, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await;
    let (done, failed) = worker.await.unwrap();
    // A kill loses what was in flight: "outcome unknown" (never resent), nothing else.
    assert!(
        failed.iter().all(|e| e.contains("UNKNOWNOUTCOME")),
        "{failed:?}"
    );
    assert!(
        failed.len() <= 1,
        "at most the one command in flight: {failed:?}"
    );
    assert!(done > 200, "{done} increments");
    let id_after: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(id_before, id_after, "the client's connection never broke");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_lost_with_its_link_aborts_exec_with_the_null_reply() {
    let server = TestServer::start(ip(4), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    exchange(&mut raw, b"SET balance 10\r\n", b"+OK\r\n").await;
    exchange(&mut raw, b"WATCH balance\r\n", b"+OK\r\n").await;
    exchange(&mut raw, b"GET balance\r\n", b"10\r\n").await;
    // The session's link dies (every normal client of the server is killed); another writer
    // changes the key meanwhile: the WATCH that would have caught it is gone.
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = admin.set("balance", 99).await.unwrap();
    // As the server answers when a watched key changed: MULTI OK, QUEUED, EXEC null.
    let reply = exchange(&mut raw, b"MULTI\r\nSET balance 11\r\nEXEC\r\n", b"*-1\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n+QUEUED\r\n*-1\r\n",
        "EXEC aborted"
    );
    let balance: i64 = admin.get("balance").await.unwrap();
    assert_eq!(balance, 99, "the unguarded SET never ran");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_password_is_asked_and_the_connection_state_is_the_clients_own() {
    let server = TestServer::start(ip(5), &[]).await;
    let (proxy, address) = proxy_for(&server, Some("s3cret")).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    let refused = exchange(&mut raw, b"GET k\r\n", b"\r\n").await;
    assert_eq!(refused, b"-NOAUTH Authentication required.\r\n");
    let wrong = exchange(&mut raw, b"AUTH nope\r\n", b"\r\n").await;
    assert!(wrong.starts_with(b"-WRONGPASS"));
    assert_eq!(
        exchange(&mut raw, b"AUTH s3cret\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    assert_eq!(
        exchange(&mut raw, b"CLIENT SETNAME worker-7\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    assert_eq!(
        exchange(&mut raw, b"CLIENT GETNAME\r\n", b"worker-7\r\n").await,
        b"$8\r\nworker-7\r\n"
    );
    exchange(&mut raw, b"SET k 1\r\n", b"+OK\r\n").await;
    // The upstream link carries the client's name.
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(list.contains("name=worker-7"), "{list}");
    assert_eq!(exchange(&mut raw, b"QUIT\r\n", b"\r\n").await, b"+OK\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_oversized_request_closes_that_connection_and_no_other() {
    let server = TestServer::start(ip(6), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut good = TcpStream::connect(address).await.unwrap();
    assert_eq!(
        exchange(&mut good, b"SET a 1\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    for bad in [
        &b"*1\r\n$536870913\r\n"[..],
        b"*1048577\r\n",
        b"*1\r\n:3\r\n",
        b"SET k \"open\r\n",
    ] {
        let mut client = TcpStream::connect(address).await.unwrap();
        let reply = exchange(&mut client, bad, b"\r\n").await;
        assert!(
            reply.starts_with(b"-ERR Protocol error"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let mut rest = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), client.read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0))), "closed after {bad:?}");
    }
    assert_eq!(
        exchange(&mut good, b"GET a\r\n", b"1\r\n").await,
        b"$1\r\n1\r\n"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_together_are_answered_in_order_around_the_ones_the_proxy_steers() {
    let server = TestServer::start(ip(7), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    // Plain commands, a server error among them, a SELECT (the proxy's) in the middle: one
    // write, replies in the order sent, the SELECT in force from where it was.
    let request = b"SET s text\r\nINCR n\r\nINCR s\r\nINCR n\r\nSELECT 3\r\nINCR n\r\nGET s\r\nCLIENT ID\r\nINCR n\r\n";
    let reply = exchange(&mut raw, request, b":2\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n:1\r\n-ERR value is not an integer or out of range\r\n:2\r\n+OK\r\n:1\r\n$-1\r\n:1\r\n:2\r\n"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_a_million_commands_is_answered_in_full_and_no_other_client_waits() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(ip(8), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    const COMMANDS: usize = 1_000_000;
    let (mut reader, mut writer) = TcpStream::connect(address).await.unwrap().into_split();
    let sender = tokio::spawn(async move {
        let command = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n";
        let chunk = command.repeat(10_000);
        for _ in 0..COMMANDS / 10_000 {
            writer.write_all(&chunk).await.unwrap();
        }
        writer
    });
    let counter = tokio::spawn(async move {
        // Every reply is ":<n>\r\n": the last is the million.
        let (mut lines, mut tail, mut last) = (0usize, Vec::new(), Vec::new());
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(120);
        while lines < COMMANDS {
            let n = tokio::time::timeout_at(deadline, reader.read(&mut chunk))
                .await
                .expect("the whole pipeline within 120 s")
                .unwrap();
            assert!(n > 0, "closed after {lines} replies");
            for &byte in &chunk[..n] {
                tail.push(byte);
                if byte == b'\n' {
                    lines += 1;
                    last = std::mem::take(&mut tail);
                }
            }
        }
        last
    });
    // Meanwhile another client is answered as usual.
    let mut other = TcpStream::connect(address).await.unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(
            exchange(&mut other, b"PING\r\n", b"\r\n").await,
            b"+PONG\r\n"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = counter.await.unwrap();
    drop(sender.await.unwrap());
    assert_eq!(last, format!(":{COMMANDS}\r\n").into_bytes());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_by_a_kill_sends_its_idempotent_commands_again_and_tells_the_others_unknown()
 {
    use tokio::io::AsyncWriteExt;
    let mut server = TestServer::start(ip(9), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    assert_eq!(exchange(&mut raw, b"PING\r\n", b"\r\n").await, b"+PONG\r\n");
    // The server is kept busy, so the batch is written and never answered; then it dies.
    let url = server.url();
    tokio::spawn(async move {
        let mut direct = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(2)
            .query_async(&mut direct)
            .await;
    });
    // Until the server is busy: a PING on a connection of its own goes unanswered for 50 ms.
    let busy_by = Instant::now() + Duration::from_secs(2);
    loop {
        let mut probe = TcpStream::connect(server.address).await.unwrap();
        probe.write_all(b"PING\r\n").await.unwrap();
        let mut pong = [0u8; 16];
        if tokio::time::timeout(Duration::from_millis(50), probe.read(&mut pong))
            .await
            .is_err()
        {
            break;
        }
        assert!(Instant::now() < busy_by, "the server never got busy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    raw.write_all(b"SET a 1\r\nINCR n\r\nGET a\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    server.restart().await;
    let replies = exchange(&mut raw, b"", b"$1\r\n1\r\n").await;
    let text = String::from_utf8_lossy(&replies);
    assert!(text.starts_with("+OK\r\n-UNKNOWNOUTCOME "), "{text}");
    assert!(text.ends_with("\r\n$1\r\n1\r\n"), "{text}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_proxys_bound_are_refused_unsent_and_the_connection_goes_on() {
    use std::net::SocketAddr;
    use steadfast_proxy::{Listen, Proxy, ProxyConfig};
    let server = TestServer::start(ip(10), &[]).await;
    let mut config = ProxyConfig::new(steadfast::Config::from_url(&server.url()).unwrap());
    config.listen = vec![Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))];
    config.max_queued = 2;
    let proxy = Proxy::start(config).await.unwrap();
    let Listen::Tcp(address) = proxy.addresses()[0].clone() else {
        unreachable!("a TCP listener was asked for")
    };
    let mut raw = TcpStream::connect(address).await.unwrap();
    let refused = exchange(&mut raw, b"INCR n\r\nINCR n\r\nINCR n\r\n", b"not sent\r\n").await;
    let text = String::from_utf8_lossy(&refused);
    assert_eq!(text.matches("-UNAVAILABLE ").count(), 3, "{text}");
    assert!(text.contains("max_queued"), "{text}");
    // Nothing was sent; within the bound the connection is served as usual.
    assert_eq!(exchange(&mut raw, b"INCR n\r\n", b"\r\n").await, b":1\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_server_turned_replica_is_aborted_with_the_null_reply() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(ip(11), &[]).await;
    let (proxy, address) = proxy_for(&server, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(
        exchange(&mut raw, b"WATCH k\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    assert_eq!(exchange(&mut raw, b"MULTI\r\n", b"\r\n").await, b"+OK\r\n");
    assert_eq!(
        exchange(&mut raw, b"SET k 1\r\n", b"\r\n").await,
        b"+QUEUED\r\n"
    );
    // A coordinated failover's steps: writes paused (the EXEC waits), the server demoted (a
    // replica of a primary that is not there), writes let go: the server aborts the EXEC
    // (EXECABORT ... READONLY), and the client sees the aborted transaction its retry loop
    // handles.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5_000)
        .arg("WRITE")
        .query_async(&mut direct)
        .await
        .unwrap();
    raw.write_all(b"EXEC\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query_async(&mut direct)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(exchange(&mut raw, b"", b"\r\n").await, b"*-1\r\n");
    let value: Option<String> = direct.get("k").await.unwrap();
    assert_eq!(value, None, "nothing of it ran");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_pop_released_by_a_demotion_pops_on_the_new_primary() {
    use std::sync::Arc;
    use steadfast::connect::resolve::StaticResolver;
    use tokio::io::AsyncWriteExt;
    let a = TestServer::start(ip(12), &[]).await;
    let b = TestServer::start(ip(13), &[]).await;
    let connect = |server: &TestServer| {
        let url = server.url();
        async move {
            redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }
    };
    let (mut on_a, mut on_b) = (connect(&a).await, connect(&b).await);
    let replicate = |to: &TestServer| {
        redis::cmd("REPLICAOF")
            .arg(to.address.ip().to_string())
            .arg(to.address.port())
            .clone()
    };
    let _: () = replicate(&a).query_async(&mut on_b).await.unwrap();
    let resolver = StaticResolver::new(vec![a.address]);
    let mut upstream = steadfast::Config::from_url("redis://primary.test:6379").unwrap();
    upstream.endpoint.resolver = Arc::new(resolver.clone());
    let (proxy, address) = common::proxy_with(upstream, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    raw.write_all(b"BLPOP jobs 10\r\n").await.unwrap();
    blocked_on(&mut on_a).await;
    // Failover: B promoted, the name moved, A demoted (which releases A's blocked clients).
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut on_b)
        .await
        .unwrap();
    resolver.set(vec![b.address]);
    let _: () = replicate(&b).query_async(&mut on_a).await.unwrap();
    // The pop waits on B now; a job pushed there is what it returns.
    blocked_on(&mut on_b).await;
    let _: i64 = on_b.lpush("jobs", "resize:42").await.unwrap();
    let popped = exchange(&mut raw, b"", b"resize:42\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&popped),
        "*2\r\n$4\r\njobs\r\n$9\r\nresize:42\r\n"
    );
    proxy.shutdown().await;
}

/// Waits (5 s at most) until a client of the server behind `admin` is blocked in `BLPOP`.
async fn blocked_on(admin: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        if clients.contains("cmd=blpop") {
            return;
        }
        assert!(Instant::now() < deadline, "no pop blocked there: {clients}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_demoted_midway_gets_its_refused_commands_run_on_the_new_primary() {
    use std::sync::Arc;
    use steadfast::connect::resolve::StaticResolver;
    let a = TestServer::start(ip(14), &[]).await;
    let b = TestServer::start(ip(15), &[]).await;
    let mut on_b = redis::Client::open(b.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let resolver = StaticResolver::new(vec![a.address]);
    let mut upstream = steadfast::Config::from_url("redis://primary.test:6379").unwrap();
    upstream.endpoint.resolver = Arc::new(resolver.clone());
    let (proxy, address) = common::proxy_with(upstream, None).await;
    let mut raw = TcpStream::connect(address).await.unwrap();
    assert_eq!(exchange(&mut raw, b"PING\r\n", b"\r\n").await, b"+PONG\r\n");
    // The name moves to B; then the client's pipeline (one write, so the proxy sends it as
    // one) demotes A halfway through: its first INCR runs on A, the rest are refused there.
    resolver.set(vec![b.address]);
    let pipeline = redis::pipe()
        .incr("ran_on_a", 1)
        .cmd("REPLICAOF")
        .arg(b.address.ip().to_string())
        .arg(b.address.port())
        .incr("counter", 1)
        .lpush("list", "once")
        .get_packed_pipeline();
    let replies = exchange(&mut raw, &pipeline, b":1\r\n:1\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        ":1\r\n+OK\r\n:1\r\n:1\r\n",
        "the refused commands ran on B, and no READONLY reached the client"
    );
    let (counter, length): (i64, i64) = redis::pipe()
        .get("counter")
        .llen("list")
        .query_async(&mut on_b)
        .await
        .unwrap();
    assert_eq!((counter, length), (1, 1), "nothing doubled");
    proxy.shutdown().await;
}
