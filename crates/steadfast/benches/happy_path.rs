//! Happy-path cost: steadfast's `Client` against a raw redis-rs `MultiplexedConnection`, on the
//! same local redis-server, in the same process and runtime, benchmark after benchmark.
//!
//! Run: `cargo bench -p steadfast --bench happy_path`. Needs `redis-server` on PATH; the bench
//! starts its own on a private loopback address and kills it at the end.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::future::join_all;
use redis::aio::ConnectionLike;

async fn get<C: ConnectionLike>(con: &mut C) {
    let _: Option<String> = redis::cmd("GET")
        .arg("bench:key")
        .query_async(con)
        .await
        .unwrap();
}

async fn concurrent<C: ConnectionLike + Clone>(con: &C, n: usize) {
    join_all((0..n).map(|_| {
        let mut con = con.clone();
        async move { get(&mut con).await }
    }))
    .await;
}

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = support::Server::start(&rt, 251, &[]);
    let url = server.url.clone();
    let (raw, steadfast) = rt.block_on(async {
        let raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let steadfast = steadfast::Client::open(&url).unwrap();
        steadfast
            .wait_connected(Duration::from_secs(5))
            .await
            .unwrap();
        (raw, steadfast)
    });

    let mut group = c.benchmark_group("sequential_get");
    group.bench_function("redis-rs", |b| {
        b.to_async(&rt).iter(|| {
            let mut con = raw.clone();
            async move { get(&mut con).await }
        })
    });
    group.bench_function("steadfast", |b| {
        b.to_async(&rt).iter(|| {
            let mut con = steadfast.clone();
            async move { get(&mut con).await }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("concurrent_64_get");
    group.bench_function("redis-rs", |b| {
        b.to_async(&rt).iter(|| concurrent(&raw, 64))
    });
    group.bench_function("steadfast", |b| {
        b.to_async(&rt).iter(|| concurrent(&steadfast, 64))
    });
    group.finish();
    rt.block_on(steadfast.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = happy_path
}
criterion_main!(benches);
