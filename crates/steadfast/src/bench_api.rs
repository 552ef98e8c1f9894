//! The policy functions the micro-benchmarks (`benches/policy.rs`) time. Not part of the API:
//! hidden from the docs, may change in any release.
//!
//! Each item is a thin wrapper over the crate-private function the client calls, so the bench
//! times the real code, not a copy.

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisError};
use tokio::time::Instant;

use crate::backoff;
use crate::connect::activity;
use crate::health::{Verdict, probe};
use crate::policy::{idempotent, retry};
use crate::supervisor::force;

/// How a failed attempt is classified; the name of the decision.
pub fn classify(error: &RedisError, was_written: bool) -> &'static str {
    let handover = if was_written {
        retry::Handover::Written
    } else {
        retry::Handover::Unsent
    };
    match retry::decide(error, handover) {
        retry::Decision::WaitAndRetry => "wait and retry",
        retry::Decision::ReconnectAndRetry { .. } => "reconnect and retry",
        retry::Decision::Ambiguous => "ambiguous",
        retry::Decision::Fail => "fail",
    }
}

/// Whether a command may be sent again after an ambiguous failure.
pub fn is_idempotent(cmd: &Cmd) -> bool {
    idempotent::is_idempotent(cmd)
}

/// Whether `pipeline` may be sent on the shared link: the plan every request is checked
/// against before it is sent, a lookup per command.
pub fn may_send(pipeline: &redis::Pipeline) -> bool {
    crate::command::Request::Pipeline {
        pipeline,
        offset: 0,
        count: 0,
    }
    .plan(crate::policy::effect::Destination::SharedLink)
    .is_ok()
}

/// The supervisor's reconnect backoff with its default settings.
#[derive(Debug)]
pub struct Backoff(backoff::Backoff);

impl Backoff {
    /// The backoff of `Config::default()`, seeded.
    pub fn with_defaults(seed: u64) -> Self {
        let reconnect = crate::Config::default().reconnect;
        Self(
            backoff::Backoff::new(
                reconnect.backoff_initial,
                reconnect.backoff_max,
                backoff::Jitter::Full,
                seed,
            )
            .with_quick(reconnect.refused_retry),
        )
    }

    /// The next delay after a failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.0.next().unwrap_or_default()
    }

    /// The delay after an attempt every address refused.
    pub fn quick(&mut self) -> Duration {
        self.0.quick()
    }

    /// Starts again from the first step.
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

/// One link's traffic record: what every command and every health look touches.
#[derive(Debug)]
pub struct Activity(Arc<activity::Activity>);

impl Activity {
    /// A fresh record.
    pub fn new() -> Self {
        Self(activity::Activity::new())
    }

    /// What every command does to the record: count it in flight, then out.
    pub fn command(&self) {
        drop(self.0.begin());
    }

    /// The watchdog's question on every look at a busy link: has it read nothing for
    /// `read_stall`? Holds one command in flight meanwhile; true when the link is suspect.
    pub fn health_look(&self, read_stall: Duration) -> bool {
        let held = self.0.begin();
        let is_suspect = self.0.stalled_for(Instant::now()) >= read_stall;
        drop(held);
        is_suspect
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe's verdict on a `CLIENT LIST ID` answer about a stalled link.
pub fn judge_listing(listing: &str, stalled_for: Duration) -> Verdict {
    probe::judge_listing(listing, stalled_for)
}

/// The force-reconnect breaker: replaces a link that produced only errors for too long.
#[derive(Debug)]
pub struct Breaker(force::ForcePolicy);

impl Breaker {
    /// The breaker with the thresholds of `Config::default()`.
    pub fn with_defaults() -> Self {
        let reconnect = crate::Config::default().reconnect;
        Self(force::ForcePolicy::new(
            reconnect.force_after_errors_for,
            reconnect.force_min_interval,
        ))
    }

    /// Records an error now; true when the link must be replaced.
    pub fn on_error(&mut self) -> bool {
        self.0.on_error(Instant::now()).is_some()
    }

    /// Records a success.
    pub fn on_success(&mut self) {
        self.0.on_success();
    }
}

/// The library's own multiplexed connection (requests and replies as RESP bytes), for the
/// proxy's overhead bench, which measures it in the shape of the proxy's shared link.
#[derive(Clone, Debug)]
pub struct Wire(crate::connect::wire::Wire);

impl Wire {
    /// A wire over `stream` with room for `queue` waiting requests; the future drives it.
    pub fn new<S>(stream: S, queue: usize) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (wire, driver) = crate::connect::wire::Wire::new(stream, queue, None);
        (Self(wire), driver)
    }

    /// Sends encoded commands; the frames of their `replies` replies, concatenated.
    pub async fn send(&self, bytes: Vec<u8>, replies: usize) -> std::io::Result<Vec<u8>> {
        self.0.send(bytes, replies).await
    }
}
