//! Nothing applied twice: non-idempotent writes (INCR, LPUSH) under killed connections are
//! never doubled, and the outcomes reported unknown are at most those in flight.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use steadfast::RedisErrorExt;
use support::{RedisServer, config_for, connected, init_tracing, kill_clients};

/// Tasks of the non-idempotent workload below: each has at most one command in flight, so no
/// kill can leave more than this many outcomes unknown.
const WRITERS: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_lpush_under_killed_connections_are_never_applied_twice_nor_reported_unknown_beyond_those_in_flight()
 {
    init_tracing();
    let server = RedisServer::start().await;
    let client = connected(config_for(&server)).await;
    // Per kill window: [acked INCR, ambiguous INCR, acked LPUSH, ambiguous LPUSH].
    const KILLS: usize = 10;
    let counts: Arc<Vec<[AtomicU64; 4]>> = Arc::new(
        (0..=KILLS)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect(),
    );
    let window = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for task in 0..WRITERS {
        let (client, counts, window, stop) =
            (client.clone(), counts.clone(), window.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let is_push = n.is_multiple_of(2);
                // LPUSH goes the redis-rs way (AsyncCommands, a redis::RedisError), INCR the
                // steadfast way: both must tell an unknown outcome.
                let outcome: Result<i64, (bool, String)> = if is_push {
                    let mut handle = client.clone();
                    handle
                        .lpush("list", format!("{task}:{n}"))
                        .await
                        .map_err(|e| (e.may_have_been_applied(), e.to_string()))
                } else {
                    client
                        .query::<i64>(redis::cmd("INCR").arg("counter"))
                        .await
                        .map_err(|e| (e.is_ambiguous(), e.to_string()))
                };
                let slot = &counts[window.load(Ordering::Acquire)];
                let column = usize::from(is_push) * 2;
                match outcome {
                    Ok(_) => slot[column].fetch_add(1, Ordering::Relaxed),
                    Err((true, _)) => slot[column + 1].fetch_add(1, Ordering::Relaxed),
                    Err((false, e)) => panic!("only unknown outcomes are expected: {e}"),
                };
            }
        }));
    }
    let mut admin = server.admin().await;
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        window.store(kill, Ordering::Release);
        let _ = kill_clients(&mut admin).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let column = |c: usize| -> u64 { counts.iter().map(|w| w[c].load(Ordering::Relaxed)).sum() };
    let counter: u64 = admin.get("counter").await.unwrap();
    let list: u64 = admin.llen("list").await.unwrap();
    let (incr_acked, incr_unknown, push_acked, push_unknown) =
        (column(0), column(1), column(2), column(3));
    println!(
        "INCR: server {counter}, acknowledged {incr_acked}, may have been applied {incr_unknown}; \
         LPUSH: server {list}, acknowledged {push_acked}, may have been applied {push_unknown}"
    );
    assert!(incr_acked > 0 && push_acked > 0);
    assert!(
        counter >= incr_acked && counter <= incr_acked + incr_unknown,
        "INCR: server {counter} must lie in [acked {incr_acked}, acked + unknown {}]",
        incr_acked + incr_unknown
    );
    assert!(
        list >= push_acked && list <= push_acked + push_unknown,
        "LPUSH: server {list} must lie in [acked {push_acked}, acked + unknown {}]",
        push_acked + push_unknown
    );
    for (kill, w) in counts.iter().enumerate().skip(1) {
        let unknown = w[1].load(Ordering::Relaxed) + w[3].load(Ordering::Relaxed);
        assert!(
            unknown <= WRITERS,
            "kill {kill}: {unknown} outcomes unknown, but at most {WRITERS} commands were in flight"
        );
    }
    client.shutdown().await;
}
