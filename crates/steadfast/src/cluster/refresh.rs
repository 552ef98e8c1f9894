//! When to refresh the topology: a trailing-edge gate over any number of triggers.
//!
//! # Behaviour
//! - A trigger while idle starts a refresh at once.
//! - Triggers while a refresh runs, or during the cooldown after it, are remembered (never
//!   dropped) and fold into one more refresh when the cooldown ends: the last trigger is always
//!   followed by a refresh that started after it.
//! - Refreshes start at least `cooldown` apart, so whatever the trigger rate there are at most
//!   `1 / cooldown` refreshes a second (200 ms: 5 a second).
//! - Pure: the caller passes the time and runs the refresh.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Running { is_pending: bool },
    Cooling { until: Instant, is_pending: bool },
}

/// The gate; see the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct RefreshGate {
    cooldown: Duration,
    state: State,
}

impl RefreshGate {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            state: State::Idle,
        }
    }

    /// Something suggests the topology changed. True: start a refresh now.
    pub(crate) fn trigger(&mut self, now: Instant) -> bool {
        match self.state {
            State::Idle => {
                self.state = State::Running { is_pending: false };
                true
            }
            State::Running { .. } => {
                self.state = State::Running { is_pending: true };
                false
            }
            State::Cooling { until, .. } => {
                self.state = State::Cooling {
                    until,
                    is_pending: true,
                };
                self.poll(now)
            }
        }
    }

    /// The running refresh ended (whatever its outcome).
    pub(crate) fn finished(&mut self, now: Instant) {
        let is_pending = matches!(self.state, State::Running { is_pending: true });
        self.state = State::Cooling {
            until: now + self.cooldown,
            is_pending,
        };
    }

    /// Time passed. True: start the refresh the cooldown held back.
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        match self.state {
            State::Cooling { until, is_pending } if now >= until => {
                self.state = if is_pending {
                    State::Running { is_pending: false }
                } else {
                    State::Idle
                };
                is_pending
            }
            _ => false,
        }
    }

    /// When [`poll`](Self::poll) may next return true, if a refresh is held back.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Cooling {
                until,
                is_pending: true,
            } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const COOLDOWN: Duration = Duration::from_millis(200);

    #[test]
    fn a_trigger_while_idle_starts_at_once() {
        let now = Instant::now();
        let mut gate = RefreshGate::new(COOLDOWN);
        assert!(gate.trigger(now));
        assert!(!gate.trigger(now), "one refresh at a time");
    }

    #[test]
    fn triggers_during_a_refresh_fold_into_one_after_the_cooldown() {
        let now = Instant::now();
        let mut gate = RefreshGate::new(COOLDOWN);
        assert!(gate.trigger(now));
        for _ in 0..50 {
            assert!(!gate.trigger(now));
        }
        gate.finished(now + Duration::from_millis(10));
        assert_eq!(gate.wake_at(), Some(now + Duration::from_millis(210)));
        assert!(!gate.poll(now + Duration::from_millis(209)));
        assert!(gate.poll(now + Duration::from_millis(210)));
        gate.finished(now + Duration::from_millis(220));
        assert!(!gate.poll(now + Duration::from_secs(5)), "nothing pending");
        assert!(gate.trigger(now + Duration::from_secs(5)));
    }

    #[test]
    fn a_trigger_after_the_cooldown_starts_at_once() {
        let now = Instant::now();
        let mut gate = RefreshGate::new(COOLDOWN);
        assert!(gate.trigger(now));
        gate.finished(now);
        assert!(!gate.trigger(now + Duration::from_millis(100)));
        assert!(gate.trigger(now + Duration::from_millis(200)));
    }

    proptest! {
        /// Any schedule of triggers and completions: refreshes start at least a cooldown apart
        /// after the previous one ended, and the last trigger is followed by a refresh.
        #[test]
        fn no_trigger_is_dropped_and_no_storm_starts(
            steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..200)
        ) {
            let origin = Instant::now();
            let mut now = origin;
            let mut gate = RefreshGate::new(COOLDOWN);
            let mut running_since: Option<Instant> = None;
            let mut last_end: Option<Instant> = None;
            let mut last_trigger: Option<Instant> = None;
            let mut last_start: Option<Instant> = None;
            let start = |at: Instant, last_end: Option<Instant>, running: &mut Option<Instant>| {
                if let Some(end) = last_end {
                    assert!(at >= end + COOLDOWN, "started within the cooldown");
                }
                assert!(running.is_none(), "two refreshes at once");
                *running = Some(at);
                at
            };
            for (advance_ms, is_trigger) in steps {
                now += Duration::from_millis(advance_ms);
                if gate.poll(now) {
                    last_start = Some(start(now, last_end, &mut running_since));
                }
                if is_trigger {
                    last_trigger = Some(now);
                    if gate.trigger(now) {
                        last_start = Some(start(now, last_end, &mut running_since));
                    }
                } else if running_since.take().is_some() {
                    gate.finished(now);
                    last_end = Some(now);
                }
            }
            // Let every refresh finish and the gate drain.
            for _ in 0..3 {
                if running_since.take().is_some() {
                    gate.finished(now);
                    last_end = Some(now);
                }
                now += COOLDOWN;
                if gate.poll(now) {
                    last_start = Some(start(now, last_end, &mut running_since));
                }
            }
            if let Some(trigger) = last_trigger {
                prop_assert!(last_start.is_some_and(|s| s >= trigger), "the last trigger was dropped");
            }
        }
    }
}
