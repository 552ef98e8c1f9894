//! The per-shard circuit breaker: a shard whose primary keeps failing is refused at once, so its
//! commands stop taking queue places and deadlines that other shards need.
//!
//! # Behaviour
//! - Counts only transport failures and deadline misses on the shard's primary ([`Outcome`]);
//!   an error reply (`WRONGTYPE`, `NOPERM` ...) is an answer, and counts as a success.
//! - Closed: commands pass. `threshold` failures in a row open it.
//! - Open: commands are refused at once ("not attempted": safe to retry) until `open_for` has
//!   passed; then it is half-open.
//! - Half-open: one command (the probe) passes, the others are refused. Its success closes the
//!   breaker; its failure opens it again, for twice as long (at most `open_max`).
//! - Every change of state is returned to the caller, which emits the event.
//! - Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};

/// How one command on the shard's primary ended, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A reply, including an error reply.
    Answered,
    /// The connection failed, or the command's deadline passed with no reply.
    TransportFailure,
}

/// Whether a command may go to the shard now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it.
    Pass,
    /// Send it: it is the half-open probe; report its outcome.
    Probe,
    /// Refuse it at once, not attempted.
    Refuse,
}

/// A change the caller reports as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The breaker opened after this many failures in a row, for this long.
    Opened { failures: u32, open_for: Duration },
    /// The probe succeeded; commands pass again.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, open_for: Duration },
    HalfOpen { is_probing: bool },
}

/// The breaker; see the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    /// How long each opening lasts: `open_min`, doubling on every failed probe up to
    /// `open_max`; back to `open_min` once a probe succeeds.
    open_times: Backoff,
    state: State,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_min: Duration, open_max: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_times: Backoff::new(open_min, open_max.max(open_min), Jitter::None, 0),
            state: State::Closed { failures: 0 },
        }
    }

    /// May a command go to the shard now?
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Pass,
            State::Open { until, .. } if now >= until => {
                self.state = State::HalfOpen { is_probing: true };
                Admission::Probe
            }
            State::Open { .. }
            | State::HalfOpen {
                is_probing: true, ..
            } => Admission::Refuse,
            State::HalfOpen { is_probing: false } => {
                self.state = State::HalfOpen { is_probing: true };
                Admission::Probe
            }
        }
    }

    /// Records how a command ended, with what [`admit`](Self::admit) said of it.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        outcome: Outcome,
        admission: Admission,
    ) -> Option<Change> {
        let was_probe = admission == Admission::Probe;
        match (self.state, outcome) {
            (State::Closed { .. }, Outcome::Answered) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, Outcome::TransportFailure) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    self.open(now, failures)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen { .. }, Outcome::Answered) if was_probe => {
                self.state = State::Closed { failures: 0 };
                self.open_times.reset();
                Some(Change::Closed)
            }
            (State::HalfOpen { .. }, Outcome::TransportFailure) if was_probe => self.open(now, 1),
            // Outcomes of commands admitted before the breaker opened change nothing now.
            _ => None,
        }
    }

    /// A probe that was admitted but never sent (its caller gave up): let another one through.
    pub(crate) fn probe_abandoned(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen { is_probing: false };
        }
    }

    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Closed with no failure counted: admitting passes and an answer changes nothing, so a
    /// caller may skip it while every breaker is pristine.
    pub(crate) fn is_pristine(&self) -> bool {
        self.state == State::Closed { failures: 0 }
    }

    fn open(&mut self, now: Instant, failures: u32) -> Option<Change> {
        let open_for = self.open_times.next().unwrap_or_default();
        self.state = State::Open {
            until: now + open_for,
            open_for,
        };
        Some(Change::Opened { failures, open_for })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(4);

    fn breaker() -> Breaker {
        Breaker::new(3, MIN, MAX)
    }

    #[test]
    fn error_replies_never_open_it() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..100 {
            assert_eq!(b.admit(now), Admission::Pass);
            assert_eq!(b.record(now, Outcome::Answered, Admission::Pass), None);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn failures_in_a_row_open_it_and_an_answer_resets_the_count() {
        let now = Instant::now();
        let mut b = breaker();
        b.record(now, Outcome::TransportFailure, Admission::Pass);
        b.record(now, Outcome::TransportFailure, Admission::Pass);
        b.record(now, Outcome::Answered, Admission::Pass);
        b.record(now, Outcome::TransportFailure, Admission::Pass);
        b.record(now, Outcome::TransportFailure, Admission::Pass);
        assert!(!b.is_open());
        assert_eq!(
            b.record(now, Outcome::TransportFailure, Admission::Pass),
            Some(Change::Opened {
                failures: 3,
                open_for: MIN
            })
        );
        assert_eq!(b.admit(now), Admission::Refuse);
    }

    #[test]
    fn one_probe_half_opens_it_and_its_success_closes_it() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(now, Outcome::TransportFailure, Admission::Pass);
        }
        assert_eq!(b.admit(now + MIN), Admission::Probe);
        assert_eq!(b.admit(now + MIN), Admission::Refuse, "one probe at a time");
        assert_eq!(
            b.record(now + MIN, Outcome::Answered, Admission::Probe),
            Some(Change::Closed)
        );
        assert_eq!(b.admit(now + MIN), Admission::Pass);
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long_up_to_the_cap() {
        let mut now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(now, Outcome::TransportFailure, Admission::Pass);
        }
        let mut open_for = MIN;
        for expected in [1_000, 2_000, 4_000, 4_000] {
            now += open_for;
            assert_eq!(b.admit(now), Admission::Probe);
            let change = b.record(now, Outcome::TransportFailure, Admission::Probe);
            open_for = Duration::from_millis(expected);
            assert_eq!(
                change,
                Some(Change::Opened {
                    failures: 1,
                    open_for
                })
            );
            assert_eq!(
                b.admit(now + open_for - Duration::from_millis(1)),
                Admission::Refuse
            );
        }
    }

    #[test]
    fn late_outcomes_from_before_the_opening_change_nothing() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(now, Outcome::TransportFailure, Admission::Pass);
        }
        assert_eq!(b.record(now, Outcome::Answered, Admission::Pass), None);
        assert!(b.is_open());
        assert_eq!(b.admit(now + MIN), Admission::Probe);
        assert_eq!(
            b.record(now + MIN, Outcome::TransportFailure, Admission::Pass),
            None
        );
        assert_eq!(
            b.admit(now + MIN),
            Admission::Refuse,
            "the probe is still out"
        );
    }

    #[test]
    fn an_abandoned_probe_lets_another_through() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(now, Outcome::TransportFailure, Admission::Pass);
        }
        assert_eq!(b.admit(now + MIN), Admission::Probe);
        b.probe_abandoned();
        assert_eq!(b.admit(now + MIN), Admission::Probe);
    }
}
