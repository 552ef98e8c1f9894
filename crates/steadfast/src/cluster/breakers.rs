//! The breaker table: one [`Breaker`] per shard, by the shard's primary, and the [`Ticket`] a
//! command holds while it is on a shard. While every breaker is pristine, commands do not take
//! the table's lock (one atomic load).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::breaker::{Admission, Breaker, Change, Outcome};
use super::redirect::NodeAddress;
use crate::config::ClusterConfig;
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::Event;

/// Every shard's breaker.
pub(super) struct Breakers {
    table: Mutex<HashMap<NodeAddress, Breaker>>,
    /// How many breakers are not pristine: while none is, commands skip the lock.
    troubled: AtomicUsize,
    cluster: ClusterConfig,
    events: Emitter,
    /// An opened breaker asks for a refresh: the shard may have a new primary.
    trigger: Arc<Notify>,
}

impl Breakers {
    pub(super) fn new(cluster: &ClusterConfig, events: Emitter, trigger: Arc<Notify>) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            troubled: AtomicUsize::new(0),
            cluster: cluster.clone(),
            events,
            trigger,
        }
    }

    /// Whether some breaker has counted a failure or is open.
    pub(super) fn is_troubled(&self) -> bool {
        self.troubled.load(Ordering::Acquire) != 0
    }

    /// Runs `f` on the breaker of the shard whose primary is `primary`, keeping the count of
    /// breakers that are not pristine.
    fn with_breaker<T>(&self, primary: &NodeAddress, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = table.entry(primary.clone()).or_insert_with(|| {
            Breaker::new(
                self.cluster.breaker_threshold,
                self.cluster.breaker_open_min,
                self.cluster.breaker_open_max,
            )
        });
        let was_pristine = breaker.is_pristine();
        let result = f(breaker);
        match (was_pristine, breaker.is_pristine()) {
            (true, false) => {
                self.troubled.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.troubled.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        result
    }
}

/// A command admitted by its shard's breaker; reports how it ended (a probe abandoned by a
/// caller who gave up lets the next command probe).
pub(super) struct Ticket<'a> {
    breakers: &'a Breakers,
    primary: NodeAddress,
    /// [`Admission::Pass`] or [`Admission::Probe`].
    admission: Admission,
    is_recorded: bool,
}

impl<'a> Ticket<'a> {
    /// Admits a command to the shard whose primary is `primary`, or refuses it.
    ///
    /// # Errors
    /// [`ErrorKind::NotAttempted`] while the shard's breaker is open.
    pub(super) fn admit(breakers: &'a Breakers, primary: NodeAddress) -> Result<Self, Error> {
        let admission = if breakers.is_troubled() {
            breakers.with_breaker(&primary, |b| b.admit(Instant::now()))
        } else {
            Admission::Pass
        };
        match admission {
            Admission::Refuse => {
                // The table may have moved on (a new primary has a closed breaker).
                breakers.trigger.notify_one();
                Err(Error::new(
                    ErrorKind::NotAttempted,
                    format!(
                        "no node of the shard of {primary} answered lately (its circuit breaker is open): not sent, safe to retry"
                    ),
                ))
            }
            Admission::Pass | Admission::Probe => Ok(Self {
                breakers,
                primary,
                admission,
                is_recorded: false,
            }),
        }
    }

    /// Tells the shard's breaker how the command ended; an opened or closed breaker is
    /// reported as an event.
    pub(super) fn record(mut self, outcome: Outcome) {
        self.is_recorded = true;
        let breakers = self.breakers;
        if outcome == Outcome::Answered
            && self.admission != Admission::Probe
            && !breakers.is_troubled()
        {
            return;
        }
        let admission = self.admission;
        let change = breakers.with_breaker(&self.primary, |b| {
            b.record(Instant::now(), outcome, admission)
        });
        let primary = self.primary.clone();
        let event = match change {
            None => return,
            Some(Change::Opened { failures, open_for }) => {
                tracing::warn!(%primary, failures, ?open_for, "shard breaker opened");
                // The shard may have a new primary the table does not know yet.
                breakers.trigger.notify_one();
                Event::ShardBreakerOpened {
                    primary,
                    failures,
                    open_for,
                }
            }
            Some(Change::Closed) => {
                tracing::info!(%primary, "shard breaker closed");
                Event::ShardBreakerClosed { primary }
            }
        };
        breakers.events.emit(event);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.admission == Admission::Probe && !self.is_recorded {
            self.breakers
                .with_breaker(&self.primary, Breaker::probe_abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn breakers() -> (Breakers, tokio::sync::broadcast::Receiver<Event>) {
        let (events, receiver) = Emitter::new();
        let cluster = ClusterConfig {
            breaker_threshold: 2,
            breaker_open_min: Duration::from_secs(1),
            breaker_open_max: Duration::from_secs(8),
            ..ClusterConfig::default()
        };
        (
            Breakers::new(&cluster, events, Arc::new(Notify::new())),
            receiver,
        )
    }

    fn primary() -> NodeAddress {
        NodeAddress {
            host: Some("10.0.0.1".into()),
            port: 7000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_that_fails_twice_refuses_commands_until_its_probe_succeeds() {
        let (breakers, mut events) = breakers();
        assert!(!breakers.is_troubled(), "a new table has nothing to say");
        for _ in 0..2 {
            Ticket::admit(&breakers, primary())
                .unwrap()
                .record(Outcome::TransportFailure);
        }
        assert!(matches!(
            events.try_recv(),
            Ok(Event::ShardBreakerOpened { failures: 2, .. })
        ));
        let refused = Ticket::admit(&breakers, primary()).err().unwrap();
        assert_eq!(refused.kind(), ErrorKind::NotAttempted);
        tokio::time::advance(Duration::from_millis(1001)).await;
        Ticket::admit(&breakers, primary())
            .unwrap()
            .record(Outcome::Answered);
        assert!(matches!(
            events.try_recv(),
            Ok(Event::ShardBreakerClosed { .. })
        ));
        assert!(
            !breakers.is_troubled(),
            "a closed breaker is pristine again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_its_caller_gave_up_on_lets_the_next_command_probe() {
        let (breakers, _events) = breakers();
        for _ in 0..2 {
            Ticket::admit(&breakers, primary())
                .unwrap()
                .record(Outcome::TransportFailure);
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        drop(Ticket::admit(&breakers, primary()).unwrap());
        assert!(
            Ticket::admit(&breakers, primary()).is_ok(),
            "the abandoned probe's turn passes on"
        );
    }
}
