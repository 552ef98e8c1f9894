//! Reconnect storm: `STEADFAST_STORM_CLIENTS` clients (default 1,000) on one local redis-server;
//! the server is killed (SIGKILL), stays down `STEADFAST_STORM_DOWN_SECONDS` (default 3), and is
//! started again on the same address. Every connection attempt the clients make is counted from
//! their events (a failed attempt is a `ReconnectScheduled`, a successful one a `Connected`), in
//! bins of 100 ms, until every client is back; the server's own count of accepted connections
//! checks the successful ones.
//!
//! Prints the attempts per 100 ms (peak against the average over the window from the kill until
//! the last client is back) and the time from the server accepting again until every client is
//! back; writes an SVG chart to `STEADFAST_STORM_SVG` (default `target/storm.svg` in the
//! workspace).
//!
//! `STEADFAST_STORM_REFUSED_RETRY_MS` sets `reconnect.refused_retry` (default 50 ms).
//!
//! Run: `cargo bench -p steadfast --bench storm` (needs `redis-server` on PATH and an open-file
//! limit above the client count).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotters::prelude::*;
use steadfast::Event;
use tokio::time::Instant;

const BIN: Duration = Duration::from_millis(100);
/// At most this many attempts are recorded (about 10 per client per second of outage).
const MAX_RECORDED: usize = 2_000_000;

#[derive(Default)]
struct Record {
    /// When each attempt ended, since the kill.
    attempts: Vec<Duration>,
    /// When each client was back, since the kill.
    back: Vec<Duration>,
}

fn main() {
    let clients = support::env_number("STEADFAST_STORM_CLIENTS", 1_000) as usize;
    let down = Duration::from_secs(support::env_number("STEADFAST_STORM_DOWN_SECONDS", 3));
    let svg = std::env::var("STEADFAST_STORM_SVG").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/storm.svg"),
        PathBuf::from,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = support::Server::start(&runtime, 252, &["--maxclients", "20000"]);
    let url = server.url.clone();
    let mut config = steadfast::Config::from_url(&url).unwrap();
    if let Ok(ms) = std::env::var("STEADFAST_STORM_REFUSED_RETRY_MS") {
        config.reconnect.refused_retry = Duration::from_millis(ms.parse().unwrap());
    }
    let refused_retry = config.reconnect.refused_retry;
    let backoff_cap = config.reconnect.backoff_max;

    let record = Arc::new(Mutex::new(Record::default()));
    let back = Arc::new(AtomicUsize::new(0));
    let all_back = Arc::new(tokio::sync::Notify::new());
    let origin = Arc::new(std::sync::OnceLock::<Instant>::new());
    let all = runtime.block_on(async {
        let all = support::connected_clients(&config, clients).await;
        for client in &all {
            let mut events = client.events();
            let (record, back, all_back, origin) = (
                Arc::clone(&record),
                Arc::clone(&back),
                Arc::clone(&all_back),
                Arc::clone(&origin),
            );
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    let Some(origin) = origin.get() else { continue };
                    let at = origin.elapsed();
                    let is_back = matches!(event, Event::Connected { .. });
                    if !is_back && !matches!(event, Event::ReconnectScheduled { .. }) {
                        continue;
                    }
                    let mut record = record.lock().unwrap();
                    if record.attempts.len() < MAX_RECORDED {
                        record.attempts.push(at);
                    }
                    if is_back {
                        record.back.push(at);
                        drop(record);
                        if back.fetch_add(1, Ordering::AcqRel) + 1 == clients {
                            all_back.notify_one();
                        }
                    }
                }
            });
        }
        all
    });

    origin.set(Instant::now()).unwrap();
    let origin = *origin.get().unwrap();
    server.kill();
    runtime.block_on(async { tokio::time::sleep(down).await });
    let spawned = origin.elapsed();
    server.start_again(&runtime);
    let ready = origin.elapsed();
    let is_all_back = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), all_back.notified())
            .await
            .is_ok()
            || back.load(Ordering::Acquire) >= clients
    });
    // The restarted server counts from zero; minus the INFO query's own connection.
    let accepted = connections_received(&runtime, &url).saturating_sub(1);
    let record = std::mem::take(&mut *record.lock().unwrap());
    runtime.block_on(async {
        for client in all {
            client.shutdown().await;
        }
    });

    let last_back = record.back.iter().copied().max().unwrap_or_default();
    let bins = bin(&record.attempts, last_back);
    let window = bins.len().max(1);
    let total: usize = bins.iter().sum();
    let average = total as f64 / window as f64;
    let peak = bins.iter().copied().max().unwrap_or(0);
    let peak_at = bins.iter().position(|&b| b == peak).unwrap_or(0);
    let all_back_after = last_back.saturating_sub(ready);
    println!("clients                          {clients}");
    println!(
        "reconnect.refused_retry          {} ms",
        refused_retry.as_millis()
    );
    println!(
        "server down (kill -9 to spawn)   {:.2} s",
        spawned.as_secs_f64()
    );
    println!(
        "server accepting again at        {:.3} s",
        ready.as_secs_f64()
    );
    println!(
        "clients back                     {} of {clients}{}",
        record.back.len(),
        if is_all_back {
            ""
        } else {
            " (gave up after 60 s)"
        }
    );
    println!("connection attempts              {total}");
    println!(
        "connections the server accepted  {accepted} (after the restart, including the bench's readiness check)"
    );
    println!(
        "window (kill to last back)       {:.1} s, {window} bins of 100 ms",
        last_back.as_secs_f64()
    );
    println!("attempts per 100 ms: average     {average:.1}");
    println!(
        "attempts per 100 ms: peak        {peak} at {:.1} s ({:.2}x the average; goal at most 2x)",
        peak_at as f64 * BIN.as_secs_f64(),
        peak as f64 / average.max(f64::MIN_POSITIVE)
    );
    println!(
        "all back after the server        {:.3} s (goal: within the backoff cap {:.0} s + 1 s)",
        all_back_after.as_secs_f64(),
        backoff_cap.as_secs_f64()
    );
    if let Some(parent) = svg.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    chart(&svg, &bins, &record.back, clients, spawned, ready).unwrap();
    println!("chart                            {}", svg.display());
}

/// Attempts per 100 ms bin, from the kill through `end`.
fn bin(attempts: &[Duration], end: Duration) -> Vec<usize> {
    let count = usize::try_from(end.as_millis() / BIN.as_millis()).unwrap_or(0) + 1;
    let mut bins = vec![0usize; count];
    for at in attempts {
        let i = usize::try_from(at.as_millis() / BIN.as_millis()).unwrap_or(usize::MAX);
        if let Some(bin) = bins.get_mut(i) {
            *bin += 1;
        }
    }
    bins
}

/// The server's `total_connections_received` (0 when it cannot be read).
fn connections_received(runtime: &tokio::runtime::Runtime, url: &str) -> u64 {
    runtime
        .block_on(async {
            let client = redis::Client::open(url).ok()?;
            let mut con = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut con)
                .await
                .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn chart(
    path: &std::path::Path,
    bins: &[usize],
    back: &[Duration],
    clients: usize,
    spawned: Duration,
    ready: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let end_s = bins.len() as f64 * BIN.as_secs_f64();
    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(330);
    let peak = bins.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "Reconnect storm: {clients} clients, server killed at 0 s, restarted at {:.1} s",
                spawned.as_secs_f64()
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0usize..peak + peak / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the kill")
        .y_desc("attempts per 100 ms")
        .draw()?;
    chart.draw_series(bins.iter().enumerate().map(|(i, &n)| {
        let x = i as f64 * BIN.as_secs_f64();
        Rectangle::new([(x, 0), (x + BIN.as_secs_f64(), n)], BLUE.mix(0.6).filled())
    }))?;
    let outage = RGBColor(200, 0, 0);
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0), (ready.as_secs_f64(), peak / 40 + 1)],
        outage.mix(0.8).filled(),
    )))?;

    let mut sorted: Vec<f64> = back.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "clients back (cumulative); red: server down",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0usize..clients + clients / 20 + 1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the kill")
        .y_desc("clients back")
        .draw()?;
    let mut points = vec![(0.0, 0usize)];
    points.extend(sorted.iter().enumerate().map(|(i, &t)| (t, i + 1)));
    chart.draw_series(LineSeries::new(points, GREEN.stroke_width(2)))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0), (ready.as_secs_f64(), clients / 40 + 1)],
        outage.mix(0.8).filled(),
    )))?;
    root.present()?;
    Ok(())
}
