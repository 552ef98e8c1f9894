//! `steadfast watch`: what a failover looks like from an application, live.
//!
//! A steady low-rate workload (SET then GET of one key of its own, `--rate` per second) runs
//! through a steadfast client with default settings. Every second a line gives the operations,
//! failures and latency percentiles of that second; every client event is printed as it happens.
//! Ctrl-C (or `--duration`) ends it with a summary. `--json` prints one JSON object per line;
//! `--prometheus ADDR` serves the library's metrics (`steadfast::metrics`) at `ADDR/metrics`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use steadfast::Event;
use tokio::time::{Instant, MissedTickBehavior};

/// Options of `steadfast watch`.
#[derive(clap::Args, Clone)]
pub(crate) struct WatchArgs {
    /// A `redis://` / `rediss://` URL or a StackExchange.Redis connection string; without it,
    /// the environment (as for `ping`).
    target: Option<String>,
    /// Operations (SET + GET) per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Serve the library's metrics for Prometheus at ADDR (`127.0.0.1:9187`), path `/metrics`.
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<std::net::SocketAddr>,
}

#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    failed: u64,
    errors: Vec<String>,
}

impl Window {
    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted.get(rank).copied()
    }
}

fn ms(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| json!(d.as_secs_f64() * 1e3))
}

fn text_ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}ms", d.as_secs_f64() * 1e3),
    )
}

/// Runs the watch until Ctrl-C or `--duration`.
pub(crate) async fn watch(args: WatchArgs) -> ExitCode {
    // Before the client exists, so its first events are recorded too.
    if let Some(address) = args.prometheus {
        let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(address)
            .install();
        if let Err(e) = installed {
            eprintln!("error: Prometheus endpoint at {address}: {e}");
            return ExitCode::from(2);
        }
    }
    let started_client =
        crate::config_for(args.target.as_deref()).and_then(steadfast::Client::with_events);
    let (client, mut events) = match started_client {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rate = args.rate.clamp(1, 10_000);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / rate);
    pace.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let started = Instant::now();
    let end = args.duration.map(|s| started + Duration::from_secs(s));
    let key = format!("steadfast:watch:{}", std::process::id());
    let mut window = Window::default();
    let mut total = Window::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<(Duration, Result<(), String>)>(1024);
    let mut value: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = async { match end { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => break,
            _ = pace.tick() => {
                value += 1;
                let (client, key, done) = (client.clone(), key.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let op_started = Instant::now();
                    let outcome = async {
                        client.query::<()>(redis::cmd("SET").arg(&key).arg(value).arg("EX").arg(60)).await?;
                        client.query::<Option<u64>>(redis::cmd("GET").arg(&key)).await.map(drop)
                    }
                    .await
                    .map_err(|e| format!("{:?}: {e}", e.kind()));
                    let _ = done.send((op_started.elapsed(), outcome)).await;
                });
            }
            Some((took, outcome)) = done_rx.recv() => {
                for w in [&mut window, &mut total] {
                    w.latencies.push(took);
                    if let Err(e) = &outcome {
                        w.failed += 1;
                        if w.errors.len() < 5 {
                            w.errors.push(e.clone());
                        }
                    }
                }
            }
            event = events.recv() => {
                if let Ok(event) = event {
                    print_event(&event, started, args.json);
                }
            }
            _ = second.tick() => {
                print_second(&window, started, args.json);
                window = Window::default();
            }
        }
    }
    let elapsed = started.elapsed();
    if args.json {
        println!(
            "{}",
            json!({"summary": true, "seconds": elapsed.as_secs_f64(), "operations": total.latencies.len(),
                "failed": total.failed, "p50_ms": ms(total.percentile(50.0)), "p99_ms": ms(total.percentile(99.0)),
                "max_ms": ms(total.percentile(100.0)), "errors": total.errors})
        );
    } else {
        println!(
            "\nsummary: {:.1} s, {} operations, {} failed, p50 {}, p99 {}, max {}",
            elapsed.as_secs_f64(),
            total.latencies.len(),
            total.failed,
            text_ms(total.percentile(50.0)),
            text_ms(total.percentile(99.0)),
            text_ms(total.percentile(100.0))
        );
        for error in &total.errors {
            println!("  error: {error}");
        }
    }
    client.shutdown().await;
    if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_second(window: &Window, started: Instant, is_json: bool) {
    let at = started.elapsed().as_secs_f64();
    if is_json {
        println!(
            "{}",
            json!({"t": at, "operations": window.latencies.len(), "failed": window.failed,
                "p50_ms": ms(window.percentile(50.0)), "p99_ms": ms(window.percentile(99.0)),
                "max_ms": ms(window.percentile(100.0))})
        );
    } else {
        println!(
            "{at:>7.1}s  ops {:>5}  failed {:>3}  p50 {:>9}  p99 {:>9}  max {:>9}",
            window.latencies.len(),
            window.failed,
            text_ms(window.percentile(50.0)),
            text_ms(window.percentile(99.0)),
            text_ms(window.percentile(100.0))
        );
    }
}

fn print_event(event: &Event, started: Instant, is_json: bool) {
    let at = started.elapsed().as_secs_f64();
    if is_json {
        println!("{}", json!({"t": at, "event": format!("{event:?}")}));
    } else {
        println!("{at:>7.1}s  event  {event:?}");
    }
}
