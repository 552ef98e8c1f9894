//! Stateful connections through a restart: a queue worker blocked in `BLPOP`, a `WATCH`
//! transaction in a session, and a Pub/Sub subscriber, against a local redis-server that is
//! killed with SIGKILL and started again while they work. Prints what each saw.
//!
//! Run: `cargo run --release -p steadfast --example stateful` (needs `redis-server`).
//! Exits non-zero if the worker stopped, the subscriber did not come back, or a transaction
//! committed unguarded.

#![allow(clippy::print_stdout)]

use std::process::Child;
use std::time::Duration;

use redis::AsyncCommands;
use steadfast::pubsub::{Delivery, GapCause};
use steadfast::{ErrorKind, RedisErrorExt};
use steadfast_testkit::{Listen, ServerLine};

const ADDRESS: &str = "127.0.0.78";

/// A redis-server process, killed with SIGKILL when dropped (even if the example fails).
struct Server(Child);

impl Server {
    fn start() -> Self {
        let ip = ADDRESS.parse().expect("an IP address");
        let child = ServerLine::new(Listen::Tcp(ip))
            .command("redis-server")
            .spawn()
            .expect("redis-server must be on PATH (apt-get install -y redis-server)");
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A queue worker: blocks for jobs on a dedicated link, never on the shared one.
async fn worker(client: steadfast::Client, jobs: usize) -> Result<usize, steadfast::Error> {
    let mut done = 0;
    let mut worker = client.clone();
    while done < jobs {
        match worker
            .blpop::<_, Option<(String, String)>>("jobs", 1.0)
            .await
        {
            Ok(Some((_, job))) => {
                println!("worker: {job}");
                done += 1;
            }
            Ok(None) => {} // the 1 s timeout: nothing queued
            // Written, then the link died while it was blocked: a job may have been popped
            // and not delivered. Not resent; the application decides (here: it goes on).
            Err(e) if e.may_have_been_applied() => println!("worker: outcome unknown ({e})"),
            Err(e) => {
                return Err(e
                    .steadfast_error()
                    .cloned()
                    .unwrap_or_else(|| panic!("{e}")));
            }
        }
    }
    Ok(done)
}

/// An optimistic increment: WATCH, read, MULTI ... EXEC in a session; starts over when another
/// writer got in first or the link holding the WATCH was replaced.
async fn increment(session: &mut steadfast::Session) -> Result<i64, redis::RedisError> {
    loop {
        redis::cmd("WATCH")
            .arg("balance")
            .query_async::<()>(&mut *session)
            .await?;
        let balance: Option<i64> = session.get("balance").await?;
        let next = balance.unwrap_or(0) + 1;
        let committed: Result<Option<()>, _> = redis::pipe()
            .atomic()
            .set("balance", next)
            .ignore()
            .query_async(&mut *session)
            .await;
        match committed {
            Ok(Some(())) => return Ok(next),
            Ok(None) => println!("session: someone else wrote first; again"),
            Err(e)
                if e.steadfast_error().map(steadfast::Error::kind)
                    == Some(ErrorKind::WatchLost) =>
            {
                println!("session: the WATCH died with its link; again")
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start();
    let client = steadfast::Client::open(&format!("redis://{ADDRESS}:6379"))?;
    client.wait_connected(Duration::from_secs(5)).await?;

    let mut subscriber = client.subscriber()?;
    subscriber.subscribe(&["news"]).await?;
    let mut session = client.session().await?;
    println!("session: balance {}", increment(&mut session).await?);
    let working = tokio::spawn(worker(client.clone(), 2));
    let mut shared = client.clone();
    let _: i64 = shared.lpush("jobs", "job-1").await?;

    // The server dies and comes back empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(server);
    let server = Server::start();
    // The client notices the dead link on its own (the kill closed its socket).
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.wait_connected(Duration::from_secs(5)).await?;

    // The shared client rode through; the worker's next pop and the session's next
    // transaction run on new links; the subscriber is subscribed again and says where its
    // stream has a hole.
    let _: i64 = shared.lpush("jobs", "job-2").await?;
    println!("session: balance {}", increment(&mut session).await?);
    let mut is_back = false;
    for _ in 0..200 {
        let _: i64 = shared.publish("news", "after the restart").await?;
        match tokio::time::timeout(Duration::from_millis(20), subscriber.next()).await {
            Ok(Some(Delivery::Gap(gap))) => {
                let lasted = gap.until.duration_since(gap.from).unwrap_or_default();
                let why = match &gap.cause {
                    GapCause::LinkLost(why) => why.clone(),
                    other => format!("{other:?}"),
                };
                println!(
                    "subscriber: messages on {:?} may be missing for {lasted:?}: {why}",
                    gap.channels
                );
            }
            Ok(Some(Delivery::Message(message))) => {
                println!(
                    "subscriber: {}: {}",
                    message.channel,
                    String::from_utf8_lossy(&message.payload)
                );
                is_back = true;
                break;
            }
            _ => {}
        }
    }
    let done = tokio::time::timeout(Duration::from_secs(10), working).await???;
    println!("worker: {done} jobs done");
    client.shutdown().await;
    drop(server);
    if !is_back || done != 2 {
        return Err("the subscriber or the worker did not come back".into());
    }
    Ok(())
}
