//! The drill: every scenario, from a fresh lab, with steadfast and redis-rs side by side.
//!
//! # Behaviour
//! - [`launch`] runs in the machine's namespace: it makes the client namespace (whose
//!   `/etc/netns/<ns>/resolv.conf` names the lab's DNS server, and whose `gai.conf` ranks
//!   server A first among several addresses), runs this same program inside it
//!   with `ip netns exec`, and afterwards removes everything the run made, whatever happened.
//! - [`run`] runs inside the client namespace: for each scenario it builds a lab, starts every
//!   client under test with both workloads, plays the timeline, and measures. Without root it
//!   runs on loopback what loopback can host and reports the rest as skipped, with the reason.
//! - Every client resolves the endpoint's name with the system resolver, which inside the client
//!   namespace asks the lab's dnsmasq: steadfast runs with its true defaults.

pub mod accounting;
mod azure_notice;
pub mod client;
mod external;
mod goals;
mod haproxy;
pub mod report;
pub mod scenario;
pub mod shards;
pub mod stateful;
pub mod svg;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::LabError;
use crate::lab::{Lab, LabSpec};
use crate::net::{self, DNS_IP, Namespace};
use client::{ClientKind, OptIn, UnderTest};
use report::{DrillReport, Measured, ScenarioReport, Skipped};
use scenario::{Scenario, Timing};
use workload::{Running, WorkloadKind, millis};

/// The environment variable that tells the program it runs inside the lab's client namespace:
/// `<prefix>:<client namespace>`.
pub const INSIDE_ENV: &str = "STEADFAST_DRILL_INSIDE";

/// What to run.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// `--quick`: shorter spells.
    pub is_quick: bool,
    /// Where to write one SVG per scenario.
    pub svg_dir: Option<PathBuf>,
}

impl DrillOptions {
    fn timing(&self) -> Timing {
        if self.is_quick {
            Timing::quick()
        } else {
            Timing::full()
        }
    }
}

/// Told as the drill goes, for a progress bar.
pub trait Progress {
    /// A scenario starts (0-based index of `total`).
    fn started(&self, scenario: Scenario, index: usize, total: usize);
    /// A scenario finished.
    fn finished(&self, report: &ScenarioReport);
}

/// Makes the client namespace, runs `program args` inside it with [`INSIDE_ENV`] set, then
/// removes every namespace and file of this run. Returns the inner program's exit code.
///
/// # Errors
/// When the namespace cannot be made (not root) or the program cannot start.
pub async fn launch(program: &std::path::Path, args: &[String]) -> Result<i32, LabError> {
    let prefix = net::run_prefix();
    let name = format!("{prefix}-client");
    let namespace = Namespace::create(&name)?;
    let etc = PathBuf::from("/etc/netns").join(&name);
    std::fs::create_dir_all(&etc).map_err(|e| LabError::new(format!("{etc:?}: {e}")))?;
    std::fs::write(
        etc.join("resolv.conf"),
        format!("nameserver {DNS_IP}\noptions timeout:1 attempts:2\n"),
    )
    .map_err(|e| LabError::new(format!("{etc:?}/resolv.conf: {e}")))?;
    std::fs::write(etc.join("gai.conf"), gai_conf())
        .map_err(|e| LabError::new(format!("{etc:?}/gai.conf: {e}")))?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(program)
        .args(args)
        .env(INSIDE_ENV, format!("{prefix}:{name}"))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LabError::new(format!("{}: {e}", program.display())))?;
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::signal::ctrl_c() => {
            // The inner run sees the same Ctrl-C and tears its lab down; give it a moment.
            tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await.ok().and_then(Result::ok)
        }
    };
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&etc);
    drop(namespace);
    net::remove_prefixed(&prefix);
    Ok(status.and_then(|s| s.code()).unwrap_or(1))
}

/// The client namespace's `/etc/gai.conf`: glibc's default precedence table (a `precedence`
/// line replaces all of it), and server A ranked above every other address, so a name that
/// lists several addresses lists A first on every lookup (dnsmasq rotates its answers; the
/// `failover-dead-first` scenario needs the dead address first every time).
fn gai_conf() -> String {
    let first = net::server_ip(0);
    format!(
        "precedence ::1/128 50\nprecedence ::/0 40\nprecedence 2002::/16 30\n\
         precedence ::/96 20\nprecedence ::ffff:0:0/96 10\nprecedence ::ffff:{first}/128 100\n"
    )
}

/// Where the drill's labs are built.
#[derive(Clone, Debug)]
pub enum Venue {
    /// Inside the lab's client namespace; the value of [`INSIDE_ENV`] (`prefix:namespace`).
    Namespaces(String),
    /// On loopback without root: only [`Scenario::is_loopback_capable`] scenarios run.
    Loopback,
}

/// Runs the drill's scenarios at `venue`.
///
/// # Errors
/// When a lab cannot be built or a fault cannot be applied.
pub async fn run(
    venue: &Venue,
    options: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport, LabError> {
    let timing = options.timing();
    let mut scenarios = Vec::new();
    let mut skipped = Vec::new();
    let total = options.scenarios.len();
    for (index, &scenario) in options.scenarios.iter().enumerate() {
        progress.started(scenario, index, total);
        let (servers, is_replicated, is_started) = scenario.lab_shape();
        let mut spec = LabSpec {
            prefix: net::run_prefix(),
            index,
            client_namespace: String::new(),
            servers,
            is_replicated,
            is_started,
            cluster: scenario.cluster(&timing),
        };
        let mut lab = match venue {
            Venue::Namespaces(inside) => {
                let (prefix, client) = inside.split_once(':').ok_or_else(|| {
                    LabError::new(format!("{INSIDE_ENV}={inside}: expected prefix:namespace"))
                })?;
                spec.prefix = prefix.to_owned();
                spec.client_namespace = client.to_owned();
                Lab::build(&spec).await?
            }
            Venue::Loopback if scenario.is_loopback_capable() => Lab::loopback(&spec).await?,
            Venue::Loopback => {
                skipped.push(Skipped {
                    scenario,
                    reason: "needs root: packet faults, DNS and namespaces (run as root)".into(),
                });
                continue;
            }
        };
        let report = run_scenario(scenario, &mut lab, &timing).await?;
        drop(lab);
        if let Some(dir) = &options.svg_dir {
            std::fs::create_dir_all(dir).map_err(|e| LabError::new(format!("{dir:?}: {e}")))?;
            let path = dir.join(format!("{}.svg", scenario.name()));
            svg::write(&report, &path).map_err(|e| LabError::new(format!("{path:?}: {e}")))?;
        }
        progress.finished(&report);
        scenarios.push(report);
    }
    Ok(DrillReport {
        machine: machine(),
        is_quick: options.is_quick,
        scenarios,
        skipped,
    })
}

struct Participant {
    client: ClientKind,
    workload: WorkloadKind,
    under_test: Arc<UnderTest>,
    events: Arc<Mutex<Vec<(f64, String)>>>,
}

async fn run_scenario(
    scenario: Scenario,
    lab: &mut Lab,
    timing: &Timing,
) -> Result<ScenarioReport, LabError> {
    if scenario.needs_proxy() {
        lab.start_proxy()?;
    }
    scenario.prepare(lab).await?;
    let url = lab.url();
    let origin = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut participants = Vec::new();
    let (clients, shards): (&[ClientKind], _) = if scenario.is_cluster() {
        (&ClientKind::CLUSTER, Some(scenario::CLUSTER_SHARDS))
    } else {
        (&ClientKind::ALL, None)
    };
    let primaries: Option<Vec<std::net::SocketAddr>> = shards.map(|n| {
        lab.servers[..n]
            .iter()
            .map(crate::server::Server::address)
            .collect()
    });
    // HAProxy's role-check pattern, for the same programs (one endpoint), before any client:
    // it takes seconds to mark the replicas down.
    let haproxy = if shards.is_none() {
        let servers: Vec<std::net::SocketAddr> = lab
            .servers
            .iter()
            .map(crate::server::Server::address)
            .collect();
        match haproxy::Haproxy::start(&servers).await {
            Ok(haproxy) => Some(haproxy),
            Err(why) => {
                tracing::warn!("{why}: HAProxy left out of {}", scenario.name());
                None
            }
        }
    } else {
        None
    };
    for &client in clients {
        for workload in WorkloadKind::ALL {
            let opt_in = OptIn {
                is_azure_events: matches!(
                    scenario,
                    Scenario::AzureMaintenance | Scenario::ClusterAzureMaintenance
                ),
                is_resp3: scenario.needs_proxy(),
            };
            let under_test = Arc::new(
                UnderTest::new(client, &url, opt_in, primaries.as_deref())
                    .await
                    .map_err(LabError::new)?,
            );
            let events = Arc::new(Mutex::new(Vec::new()));
            if let Some(receiver) = under_test.take_events() {
                record_events(receiver, Arc::clone(&events), origin, stop.clone());
            }
            participants.push(Participant {
                client,
                workload,
                under_test,
                events,
            });
        }
    }
    let running: Vec<Running> = participants
        .iter()
        .map(|p| {
            let tag = format!("{:?}-{:?}", p.client, p.workload);
            Running::start(p.workload, Arc::clone(&p.under_test), origin, &tag, shards)
        })
        .collect();
    // The non-idempotent workload: one per client (on the concurrent participant's client).
    let counting: Vec<(ClientKind, accounting::Counting)> = participants
        .iter()
        .filter(|p| p.workload == WorkloadKind::Concurrent)
        .map(|p| {
            let tag = format!("{:?}-counting", p.client);
            let run = accounting::Counting::start(Arc::clone(&p.under_test), &tag, shards);
            (p.client, run)
        })
        .collect();
    let mut stateful_runs = Vec::new();
    if scenario.has_stateful() && (!scenario.is_cluster() || timing.is_stateful_on_cluster) {
        for client in [ClientKind::Steadfast, ClientKind::RedisRsManager] {
            let tag = format!("{client:?}-stateful");
            let opt_in = OptIn {
                is_azure_events: matches!(
                    scenario,
                    Scenario::AzureMaintenance | Scenario::ClusterAzureMaintenance
                ),
                // The maintenance pushes' scenarios: as for the other workloads.
                is_resp3: scenario.needs_proxy(),
            };
            let run = stateful::Stateful::start(client, &url, &tag, shards, opt_in)
                .await
                .map_err(LabError::new)?;
            stateful_runs.push(run);
        }
    }
    // Programs in other languages, through proxies of their own (on a cluster, a proxy in
    // cluster mode, and the program's key on shard 0, the shard the faults hit), started last:
    // their first operation is the scenario's start, as the other clients' ("down-at-start":
    // the server starts 2 s after the clients).
    let mut programs = Vec::new();
    for client in ClientKind::PROGRAMS {
        let mut upstream =
            steadfast::Config::from_url(&url).map_err(|e| LabError::new(e.to_string()))?;
        if matches!(
            scenario,
            Scenario::AzureMaintenance | Scenario::ClusterAzureMaintenance
        ) {
            upstream.maintenance.azure_events = steadfast::AzureEvents::On;
        }
        let tag = format!("{client:?}");
        let key = workload::task_keys(WorkloadKind::Concurrent, &tag, 0, shards).swap_remove(0);
        match external::External::start(client, upstream, key, origin).await {
            Ok(program) => programs.push(program),
            Err(why) => tracing::warn!("{why}: left out of {}", scenario.name()),
        }
    }
    if let Some(haproxy) = &haproxy {
        for client in ClientKind::HAPROXIED {
            let key = format!("{client:?}");
            match external::External::through(client, haproxy.address(), key, origin) {
                Ok(program) => programs.push(program),
                Err(why) => tracing::warn!("{why}: left out of {}", scenario.name()),
            }
        }
    }
    let marks = scenario.play(lab, timing).await;
    let mut outcomes = Vec::new();
    let mut recorded = Vec::new();
    for run in &running {
        run.halt();
    }
    let mut program_ops = Vec::new();
    for program in programs {
        program_ops.push((program.client(), program.stop().await));
    }
    if let Some(haproxy) = haproxy {
        haproxy.stop().await;
    }
    for run in running {
        recorded.push(run.stop().await);
    }
    let servers: Vec<std::net::SocketAddr> = lab
        .servers
        .iter()
        .map(crate::server::Server::address)
        .collect();
    let mut accountings = Vec::new();
    for (client, run) in counting {
        accountings.push(run.stop(client, &servers, scenario).await);
    }
    let restored = marks.as_ref().map_or(origin, |m| m.restored);
    let mut stateful_reports = Vec::new();
    for run in &stateful_runs {
        run.halt();
    }
    for run in stateful_runs {
        stateful_reports.push(run.stop(scenario, &servers, restored).await);
    }
    stop.cancel();
    for participant in &participants {
        participant.under_test.shutdown().await;
    }
    let marks = marks?;
    let (fault_ms, restored_ms) = (millis(marks.fault, origin), millis(marks.restored, origin));
    for (participant, ops) in participants.into_iter().zip(recorded) {
        let events =
            std::mem::take(&mut *participant.events.lock().unwrap_or_else(|e| e.into_inner()));
        // A cluster client has a link per node: its reconnects are not one number.
        let reconnects =
            (participant.client == ClientKind::Steadfast && shards.is_none()).then(|| {
                events
                    .iter()
                    .filter(|(_, text)| text.starts_with("Connected"))
                    .count()
                    .saturating_sub(1)
            });
        outcomes.push(report::measure(
            scenario,
            fault_ms,
            restored_ms,
            Measured {
                client: participant.client,
                workload: participant.workload,
                ops,
                events,
                reconnects,
            },
        ));
    }
    for (client, stopped) in program_ops {
        match stopped {
            Ok(ops) => outcomes.push(report::measure(
                scenario,
                fault_ms,
                restored_ms,
                Measured {
                    client,
                    workload: WorkloadKind::Sequential,
                    ops,
                    events: Vec::new(),
                    reconnects: None,
                },
            )),
            Err(why) => tracing::warn!("{why}: left out of {}", scenario.name()),
        }
    }
    shards::judge_shards(scenario, fault_ms, &mut outcomes);
    Ok(ScenarioReport {
        scenario,
        description: scenario.description(timing),
        fault_ms,
        restored_ms,
        dns_ttl_ms: crate::dns::TTL.as_secs_f64() * 1e3,
        outcomes,
        accounting: accountings,
        stateful: stateful_reports,
    })
}

fn record_events(
    mut events: tokio::sync::broadcast::Receiver<steadfast::Event>,
    sink: Arc<Mutex<Vec<(f64, String)>>>,
    origin: Instant,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = stop.cancelled() => break,
            };
            match event {
                Ok(event) => {
                    let text = format!("{event:?}");
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((millis(Instant::now(), origin), text));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, Linux {}", kernel.trim())
}
