//! One connection attempt, step by step, for `steadfast ping`.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{Connector, PushRoutes, Step, Target, Trace};
use crate::config::{Config, Protocol};
use crate::error::Error;

/// What the server said about itself.
#[derive(Clone, Debug)]
pub struct ServerFacts {
    /// `ROLE`: `master` or `slave`.
    pub role: String,
    /// `redis_version` (or `valkey_version`) from `INFO server`, if the server answered it.
    pub version: Option<String>,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The server accepted `CLIENT MAINT_NOTIFICATIONS ON`.
    pub is_maintenance_aware: bool,
}

/// The steps of one attempt, and what it found or where it failed.
#[derive(Debug)]
pub struct Diagnosis {
    /// Durations of the steps that finished.
    pub trace: Trace,
    /// What the server said, or the step that failed and why.
    pub outcome: Result<ServerFacts, (Step, Error)>,
}

/// Connects once with `config`, timing each step, then sends `PING` and asks the server about
/// itself. Nothing is retried. Must run inside a tokio runtime.
///
/// # Errors
/// None as such: a failure is reported in [`Diagnosis::outcome`] with the step that failed. A
/// config that does not validate fails at [`Step::Resolve`].
pub async fn diagnose(config: Config) -> Diagnosis {
    let mut trace = Trace::default();
    let outcome = run(config, &mut trace).await;
    Diagnosis { trace, outcome }
}

async fn run(config: Config, trace: &mut Trace) -> Result<ServerFacts, (Step, Error)> {
    config.validate().map_err(|e| (Step::Resolve, e))?;
    let protocol = config.endpoint.protocol;
    let tasks = tokio_util::task::TaskTracker::new();
    let (application, _) = tokio::sync::broadcast::channel(16);
    let (maintenance, _notices) = tokio::sync::mpsc::channel(16);
    let is_tls = config.tls.is_enabled;
    let connector = Connector::new(
        Arc::new(config),
        PushRoutes {
            application,
            maintenance,
        },
        tasks.clone(),
    )
    .map_err(|e| (Step::Resolve, e))?;
    let link = connector
        .connect_traced(1, &Target::Configured, trace)
        .await
        .map_err(|failure| {
            let failed = match trace.steps.len() {
                0 => Step::Resolve,
                1 => Step::TcpConnect,
                2 if is_tls => Step::Tls,
                _ => Step::Handshake,
            };
            (failed, failure.error)
        })?;
    let started = Instant::now();
    let mut connection = link.connection.clone();
    let bound = Duration::from_secs(5);
    let ping =
        tokio::time::timeout(bound, connection.send_packed_command(&redis::cmd("PING"))).await;
    match ping {
        Ok(Ok(Value::SimpleString(_) | Value::Okay | Value::BulkString(_))) => {
            trace.steps.push((Step::Ping, started.elapsed()));
        }
        Ok(Ok(other)) => {
            link.close();
            return Err((
                Step::Ping,
                Error::new(crate::ErrorKind::Server, format!("PING answered {other:?}")),
            ));
        }
        Ok(Err(e)) => {
            link.close();
            return Err((
                Step::Ping,
                Error::from_redis(crate::ErrorKind::Server, "PING", e),
            ));
        }
        Err(_) => {
            link.close();
            return Err((
                Step::Ping,
                Error::new(
                    crate::ErrorKind::DeadlineExceeded,
                    format!("PING got no answer within {bound:?}"),
                ),
            ));
        }
    }
    let info = tokio::time::timeout(
        bound,
        connection.send_packed_command(redis::cmd("INFO").arg("server")),
    )
    .await;
    let version = match info {
        Ok(Ok(Value::BulkString(bytes))) => version_of(&String::from_utf8_lossy(&bytes)),
        Ok(Ok(Value::VerbatimString { text, .. })) => version_of(&text),
        _ => None,
    };
    let facts = ServerFacts {
        role: link.role.to_string(),
        version,
        protocol,
        is_maintenance_aware: link.is_maintenance_aware,
    };
    link.close();
    tasks.close();
    Ok(facts)
}

fn version_of(info: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key, "valkey_version" | "redis_version").then(|| format!("{key} {}", value.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_version_wins_over_the_compatibility_field_when_first() {
        assert_eq!(
            version_of("# Server\r\nredis_version:7.0.15\r\n"),
            Some("redis_version 7.0.15".into())
        );
        assert_eq!(
            version_of("valkey_version:8.0.1\nredis_version:7.2.4\n"),
            Some("valkey_version 8.0.1".into())
        );
        assert_eq!(version_of("nothing"), None);
    }
}
