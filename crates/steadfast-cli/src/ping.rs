//! `steadfast ping`: one traced connection attempt.

use std::process::ExitCode;

/// Connects once to `target` and prints each step.
pub(crate) async fn ping(target: Option<&str>) -> ExitCode {
    use steadfast::connect::{Step, diagnose};
    let config = match crate::config_for(target) {
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
            Step::TcpConnect => trace
                .address
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
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
        if *step == Step::TcpConnect && !is_tls {
            println!("{:<10} {:>13}  off (plain TCP)", "tls", "-");
        }
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
