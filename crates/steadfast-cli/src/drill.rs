//! `steadfast drill`: the lab's scenarios, side by side with redis-rs.

use std::process::ExitCode;

use steadfast_lab::drill::report::{DrillReport, ScenarioReport};
use steadfast_lab::drill::scenario::Scenario;
use steadfast_lab::drill::{self, DrillOptions, Progress};

use crate::DrillArgs;

/// Runs the drill (or `--cleanup`).
pub(crate) async fn drill_command(args: DrillArgs) -> ExitCode {
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
        scenarios = Scenario::ALL
            .into_iter()
            .filter(|s| !args.quick || s.is_in_quick_drill())
            .collect();
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
