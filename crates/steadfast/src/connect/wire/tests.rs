//! The wire against real redis-server processes.

use std::net::IpAddr;
use std::time::Duration;

use steadfast_testkit::TestServer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::Wire;

/// A loopback address of this test binary's own, `n` telling the tests apart.
fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 218, (std::process::id() % 250) as u8, n])
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

async fn wire_to(server: &TestServer, pushes: Option<mpsc::UnboundedSender<Vec<u8>>>) -> Wire {
    let stream = TcpStream::connect(server.address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let pushes = pushes.map(|pushes| -> super::Pushes {
        Box::new(move |frame: &[u8]| {
            let _ = pushes.send(frame.to_vec());
        })
    });
    let (wire, driver) = Wire::new(stream, 1024, pushes);
    tokio::spawn(driver);
    wire
}

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn replies_reach_their_own_senders_when_many_send_at_once() {
    let server = TestServer::start(ip(1), &[]).await;
    let wire = wire_to(&server, None).await;
    let mut senders = Vec::new();
    for _ in 0..50 {
        let wire = wire.clone();
        senders.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let reply = wire.send(command(&["INCR", "n"]), 1).await.unwrap();
                let text = String::from_utf8(reply).unwrap();
                let value: u64 = text
                    .strip_prefix(':')
                    .and_then(|rest| rest.strip_suffix("\r\n"))
                    .unwrap()
                    .parse()
                    .unwrap();
                // Each sender sees its own counter go up.
                assert!(seen.last().is_none_or(|last| *last < value));
                seen.push(value);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for sender in senders {
        all.extend(timeout(LIMIT, sender).await.unwrap().unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_pipeline_gets_all_its_replies_as_the_server_sent_them() {
    let server = TestServer::start(ip(2), &[]).await;
    let wire = wire_to(&server, None).await;
    let mut bytes = command(&["SET", "a", "1"]);
    bytes.extend(command(&["INCR", "a"]));
    bytes.extend(command(&["GET", "a"]));
    bytes.extend(command(&["LPUSH", "a", "x"]));
    let reply = timeout(LIMIT, wire.send(bytes, 4)).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        "+OK\r\n:2\r\n$1\r\n2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
}

#[tokio::test]
async fn a_killed_connection_fails_the_waiting_request_and_every_later_one() {
    let server = TestServer::start(ip(3), &[]).await;
    let blocked = wire_to(&server, None).await;
    let admin = wire_to(&server, None).await;
    let waiting = {
        let blocked = blocked.clone();
        tokio::spawn(async move { blocked.send(command(&["BLPOP", "nothing", "0"]), 1).await })
    };
    // Kill every other client once the BLPOP is in: the blocked one goes.
    timeout(LIMIT, async {
        loop {
            let list = admin.send(command(&["CLIENT", "LIST"]), 1).await.unwrap();
            if String::from_utf8_lossy(&list).contains("cmd=blpop") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let killed = admin
        .send(
            command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]),
            1,
        )
        .await
        .unwrap();
    assert_eq!(killed, b":1\r\n");
    let failed = timeout(LIMIT, waiting).await.unwrap().unwrap();
    assert!(failed.is_err(), "{failed:?}");
    let later = timeout(LIMIT, blocked.send(command(&["PING"]), 1))
        .await
        .unwrap();
    assert!(later.is_err());
}

#[tokio::test]
async fn push_frames_go_to_the_push_sender_and_are_nobodys_reply() {
    let server = TestServer::start(ip(4), &[]).await;
    let (pushes, mut pushed) = mpsc::unbounded_channel();
    let tracked = wire_to(&server, Some(pushes)).await;
    let writer = wire_to(&server, None).await;
    let mut setup = command(&["HELLO", "3"]);
    setup.extend(command(&["CLIENT", "TRACKING", "on"]));
    setup.extend(command(&["GET", "k"]));
    let reply = tracked.send(setup, 3).await.unwrap();
    assert!(
        reply.ends_with(b"+OK\r\n_\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    writer.send(command(&["SET", "k", "v"]), 1).await.unwrap();
    let push = timeout(LIMIT, pushed.recv()).await.unwrap().unwrap();
    assert_eq!(push, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    let pong = timeout(LIMIT, tracked.send(command(&["PING"]), 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, b"+PONG\r\n");
}

#[tokio::test]
async fn another_service_on_the_port_fails_the_request_as_not_resp() {
    let listener = tokio::net::TcpListener::bind((ip(5), 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut peer, _) = listener.accept().await.unwrap();
        let _ = tokio::io::AsyncWriteExt::write_all(&mut peer, b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await;
        tokio::time::sleep(LIMIT).await;
    });
    let (wire, driver) = Wire::new(TcpStream::connect(address).await.unwrap(), 8, None);
    tokio::spawn(driver);
    let failed = timeout(LIMIT, wire.send(command(&["PING"]), 1))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(failed.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        failed.to_string().contains("not the Redis protocol"),
        "{failed}"
    );
}

#[tokio::test]
async fn large_replies_come_back_whole() {
    let server = TestServer::start(ip(6), &[]).await;
    let wire = wire_to(&server, None).await;
    let value = "v".repeat(8 << 20);
    wire.send(command(&["SET", "big", &value]), 1)
        .await
        .unwrap();
    let mut push = vec!["RPUSH", "list"];
    push.extend(std::iter::repeat_n("element", 100_000));
    wire.send(command(&push), 1).await.unwrap();
    let mut both = command(&["GET", "big"]);
    both.extend(command(&["LRANGE", "list", "0", "-1"]));
    let reply = timeout(LIMIT, wire.send(both, 2)).await.unwrap().unwrap();
    let bulk = format!("${}\r\n{value}\r\n", value.len());
    assert!(reply.starts_with(bulk.as_bytes()));
    let list = &reply[bulk.len()..];
    assert!(list.starts_with(b"*100000\r\n$7\r\nelement\r\n"));
    assert_eq!(
        list.len(),
        "*100000\r\n".len() + 100_000 * "$7\r\nelement\r\n".len()
    );
}

#[tokio::test]
async fn a_subscription_confirmation_answers_the_request_that_asked_for_it_and_nothing_else() {
    let server = TestServer::start(ip(8), &[]).await;
    let (pushes, mut pushed) = mpsc::unbounded_channel();
    let subscriber = wire_to(&server, Some(pushes)).await;
    let publisher = wire_to(&server, None).await;
    subscriber.send(command(&["HELLO", "3"]), 1).await.unwrap();
    let confirmed = timeout(
        LIMIT,
        subscriber.request(command(&["SUBSCRIBE", "c"]), 1, true),
    )
    .await
    .unwrap()
    .unwrap()
    .bytes;
    assert_eq!(confirmed, b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    let copy = timeout(LIMIT, pushed.recv()).await.unwrap().unwrap();
    assert_eq!(copy, confirmed, "the confirmation is offered as a push too");
    publisher
        .send(command(&["PUBLISH", "c", "x"]), 1)
        .await
        .unwrap();
    let message = timeout(LIMIT, pushed.recv()).await.unwrap().unwrap();
    assert!(message.starts_with(b">3\r\n$7\r\nmessage"), "{message:?}");
    // Unasked for, a confirmation is only a push: the PING's reply is still the PING's.
    let mut unasked = command(&["UNSUBSCRIBE", "c"]);
    unasked.extend(command(&["PING"]));
    let pong = timeout(LIMIT, subscriber.send(unasked, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, b"+PONG\r\n");
    let unsubscribed = timeout(LIMIT, pushed.recv()).await.unwrap().unwrap();
    assert!(unsubscribed.starts_with(b">3\r\n$11\r\nunsubscribe"));
}

#[tokio::test]
async fn replies_say_whether_an_error_is_among_them() {
    let server = TestServer::start(ip(7), &[]).await;
    let wire = wire_to(&server, None).await;
    let mut refused = command(&["SET", "s", "text"]);
    refused.extend(command(&["INCR", "s"]));
    let replies = timeout(LIMIT, wire.request(refused, 2, false))
        .await
        .unwrap()
        .unwrap();
    assert!(replies.has_error);
    assert!(replies.bytes.starts_with(b"+OK\r\n-ERR"));
    let mut fine = command(&["PING"]);
    fine.extend(command(&["MGET", "nothing", "s"]));
    let replies = timeout(LIMIT, wire.request(fine, 2, false))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !replies.has_error,
        "{:?}",
        String::from_utf8_lossy(&replies.bytes)
    );
}
