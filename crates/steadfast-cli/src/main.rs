//! The `steadfast` command-line tool. Thin: the logic lives in the library and the lab.

// A command-line tool prints its results on standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steadfast_lab::drill::report::{DrillReport, ScenarioReport};
use steadfast_lab::drill::scenario::Scenario;
use steadfast_lab::drill::{self, DrillOptions, Progress};

#[derive(Parser)]
#[command(
    name = "steadfast",
    version,
    about = "Redis connections that survive failovers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect once to TARGET, timing each step (resolve, TCP, TLS, handshake, first PING), and
    /// say what the server is. Exit code: 0 ok, 2 bad input, 10 resolve, 11 TCP connect, 12 TLS,
    /// 13 handshake (auth included), 14 PING.
    Ping {
        /// A `redis://` / `rediss://` URL or a StackExchange.Redis connection string
        /// (`host:6380,password=...,ssl=True`).
        target: String,
    },
    /// Real faults against real servers, steadfast and redis-rs side by side (needs root).
    Drill(DrillArgs),
}

#[derive(clap::Args, Clone)]
struct DrillArgs {
    /// Shorter fault spells (blackhole 10 s, loss 5 s), for CI.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one SVG timeline per scenario into DIR.
    #[arg(long, value_name = "DIR", default_value = "drill-report")]
    svg_dir: PathBuf,
    /// Run only these scenarios (repeatable); names as in the table.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Remove namespaces and files left by a drill that was killed, then exit.
    #[arg(long)]
    cleanup: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ping { target } => ping(&target).await,
        Command::Drill(args) => drill_command(args).await,
    }
}

async fn ping(target: &str) -> ExitCode {
    use steadfast::connect::{Step, diagnose};
    let config = if target.contains("://") {
        steadfast::Config::from_url(target)
    } else {
        steadfast::config::parse_connection_string(target).map(|parsed| {
            for option in &parsed.ignored {
                eprintln!("note: {option} means nothing to steadfast and was ignored");
            }
            parsed.config
        })
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let endpoint = format!("{}:{}", config.endpoint.host, config.endpoint.port);
    let is_tls = config.tls.is_enabled;
    let diagnosis = diagnose(config).await;
    let trace = &diagnosis.trace;
    for (step, took) in &trace.steps {
        let detail = match step {
            Step::Resolve => format!("{endpoint} -> {:?}", trace.resolved),
            Step::TcpConnect => trace.address.map(|a| a.to_string()).unwrap_or_default(),
            Step::Tls => "verified".to_owned(),
            Step::Handshake => {
                "HELLO/AUTH, SELECT, CLIENT SETNAME/ID, ROLE, maintenance opt-in".to_owned()
            }
            Step::Ping => "PONG".to_owned(),
            _ => String::new(),
        };
        println!(
            "{:<10} {:>10.3} ms  {detail}",
            step_name(*step),
            took.as_secs_f64() * 1e3
        );
    }
    if !is_tls {
        println!("{:<10} {:>13}  plain TCP", "tls", "-");
    }
    match diagnosis.outcome {
        Ok(facts) => {
            println!(
                "server     {}, role {}, {:?}, maintenance notifications {}",
                facts.version.as_deref().unwrap_or("version unknown"),
                facts.role,
                facts.protocol,
                if facts.is_maintenance_aware {
                    "supported"
                } else {
                    "not supported"
                }
            );
            ExitCode::SUCCESS
        }
        Err((step, error)) => {
            println!("{:<10} FAILED     {error}", step_name(step));
            ExitCode::from(match step {
                Step::Resolve => 10,
                Step::TcpConnect => 11,
                Step::Tls => 12,
                Step::Handshake => 13,
                _ => 14,
            })
        }
    }
}

fn step_name(step: steadfast::connect::Step) -> &'static str {
    use steadfast::connect::Step;
    match step {
        Step::Resolve => "resolve",
        Step::TcpConnect => "tcp",
        Step::Tls => "tls",
        Step::Handshake => "handshake",
        Step::Ping => "ping",
        _ => "step",
    }
}

async fn drill_command(args: DrillArgs) -> ExitCode {
    if args.cleanup {
        return match steadfast_lab::net::cleanup_leftovers() {
            Ok(removed) if removed.is_empty() => {
                eprintln!("nothing left behind");
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for name in removed {
                    eprintln!("removed {name}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut scenarios = Vec::new();
    for name in &args.scenarios {
        match Scenario::from_name(name) {
            Some(scenario) => scenarios.push(scenario),
            None => {
                let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                eprintln!(
                    "error: unknown scenario {name:?}; known: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.to_vec();
    }
    let options = DrillOptions {
        scenarios,
        is_quick: args.quick,
        svg_dir: Some(args.svg_dir.clone()),
    };
    if let Ok(inside) = std::env::var(drill::INSIDE_ENV) {
        return drill_at(&drill::Venue::Namespaces(inside), &options, &args).await;
    }
    if !steadfast_lab::net::can_create_namespaces() {
        eprintln!("no root: running on loopback what loopback can host");
        return drill_at(&drill::Venue::Loopback, &options, &args).await;
    }
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            eprintln!("error: cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    let forwarded: Vec<String> = std::env::args().skip(1).collect();
    match drill::launch(&program, &forwarded).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn drill_at(venue: &drill::Venue, options: &DrillOptions, args: &DrillArgs) -> ExitCode {
    let progress = Bar::new(options.scenarios.len());
    let outcome = tokio::select! {
        outcome = drill::run(venue, options, &progress) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: tearing the lab down");
            return ExitCode::from(130);
        }
    };
    progress.bar.finish_and_clear();
    match outcome {
        Ok(report) => finish(&report, args),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn finish(report: &DrillReport, args: &DrillArgs) -> ExitCode {
    print!("{}", report.table());
    if let Some(path) = &args.json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if !report.scenarios.is_empty() {
        println!("\ntimelines: {}/<scenario>.svg", args.svg_dir.display());
    }
    if report.is_met() {
        println!("steadfast met every goal");
        ExitCode::SUCCESS
    } else {
        println!("steadfast MISSED a goal");
        ExitCode::FAILURE
    }
}

/// A progress bar over scenarios.
struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new(total: usize) -> Self {
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self { bar }
    }
}

impl Progress for Bar {
    fn started(&self, scenario: Scenario, _index: usize, _total: usize) {
        self.bar.set_message(scenario.name());
    }

    fn finished(&self, report: &ScenarioReport) {
        let verdict = if report.is_met() {
            "goals met"
        } else {
            "goal MISSED"
        };
        self.bar
            .println(format!("{}: {verdict}", report.scenario.name()));
        self.bar.inc(1);
    }
}
