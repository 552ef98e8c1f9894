//! Micro-benchmarks of the policy paths: what the client decides per command, per failure and per
//! health look, timed on the real functions (through the hidden `steadfast::bench_api`).
//!
//! Run: `cargo bench -p steadfast --bench policy`. Needs no server.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use steadfast::bench_api::{self, Activity, Backoff, Breaker};

fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify an error");
    let cases = [
        (
            "READONLY",
            RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "refused")),
            true,
        ),
        (
            "connection reset, written",
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            true,
        ),
        (
            "WRONGTYPE",
            RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "wrong")),
            true,
        ),
    ];
    for (name, error, was_written) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| bench_api::classify(black_box(error), black_box(*was_written)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("is idempotent");
    let mut set = redis::cmd("SET");
    set.arg("key").arg("value");
    let mut incr = redis::cmd("INCR");
    incr.arg("key");
    let mut get = redis::cmd("GET");
    get.arg("key");
    for (name, cmd) in [("GET", get), ("SET", set), ("INCR", incr)] {
        group.bench_function(name, |b| {
            b.iter(|| bench_api::is_idempotent(black_box(&cmd)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("plan a pipeline");
    for (name, command) in [("of 100 GETs", "GET"), ("of 100 SETs", "SET")] {
        let mut pipeline = redis::pipe();
        for i in 0..100 {
            pipeline.cmd(command).arg(format!("key:{i}"));
        }
        group.bench_function(name, |b| {
            b.iter(|| bench_api::may_send(black_box(&pipeline)));
        });
    }
    group.finish();
}

fn backoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("next backoff delay");
    let mut backoff = Backoff::with_defaults(7);
    group.bench_function("after a failed attempt", |b| {
        b.iter(|| black_box(backoff.next_delay()));
    });
    group.bench_function("after a refused attempt", |b| {
        b.iter(|| black_box(backoff.quick()));
    });
    group.finish();
}

fn health(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("health verdict");
    let activity = Activity::new();
    group.bench_function("count one command in and out", |b| {
        b.iter(|| activity.command());
    });
    let read_stall = Duration::from_secs(1);
    group.bench_function("look at a busy link", |b| {
        b.iter(|| black_box(activity.health_look(black_box(read_stall))));
    });
    let listing = "id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name=steadfast age=30 \
                   idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 \
                   argv-mem=10 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=get \
                   user=default redir=-1 resp=2\n";
    group.bench_function("judge a CLIENT LIST answer", |b| {
        b.iter(|| bench_api::judge_listing(black_box(listing), black_box(read_stall)));
    });
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker decision");
    let mut breaker = Breaker::with_defaults();
    group.bench_function("on success", |b| {
        b.iter(|| breaker.on_success());
    });
    group.bench_function("on error, then success", |b| {
        b.iter(|| {
            let is_open = breaker.on_error();
            breaker.on_success();
            black_box(is_open)
        });
    });
    group.finish();
}

criterion_group!(policy, classify, backoff, health, breaker);
criterion_main!(policy);
