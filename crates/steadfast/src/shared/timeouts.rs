//! The command deadline and the read-stall threshold in force now: relaxed while announced
//! maintenance runs, as configured otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::emitter::Emitter;
use crate::event::Event;

/// What every command reads first, in one cache line: with many clients each command otherwise
/// misses the cache on the separate `Config` allocation (measured by the growth bench).
#[repr(align(64))]
pub(crate) struct Timeouts {
    /// A migration or failover is announced: deadlines and the stall threshold are relaxed.
    is_relaxed: AtomicBool,
    deadline: Duration,
    relaxed_deadline: Duration,
    read_stall: Duration,
    relaxed_read_stall: Duration,
}

impl Timeouts {
    /// Relaxed values are the configured ones raised to `maintenance.relaxed_timeout`, never
    /// lowered.
    pub(crate) fn new(config: &Config) -> Self {
        let relaxed = config.maintenance.relaxed_timeout;
        Self {
            is_relaxed: AtomicBool::new(false),
            deadline: config.command.deadline,
            relaxed_deadline: config.command.deadline.max(relaxed),
            read_stall: config.health.read_stall,
            relaxed_read_stall: config.health.read_stall.max(relaxed),
        }
    }

    /// The command deadline now.
    pub(crate) fn deadline(&self) -> Duration {
        if self.is_relaxed.load(Ordering::Relaxed) {
            self.relaxed_deadline
        } else {
            self.deadline
        }
    }

    /// The read-stall threshold now.
    pub(crate) fn read_stall(&self) -> Duration {
        if self.is_relaxed.load(Ordering::Relaxed) {
            self.relaxed_read_stall
        } else {
            self.read_stall
        }
    }

    /// Relaxes or restores both; a change is logged and emitted as [`Event::Relaxed`].
    pub(crate) fn set_relaxed(&self, is_relaxed: bool, emitter: &Emitter) {
        let was = self.is_relaxed.swap(is_relaxed, Ordering::Relaxed);
        if was != is_relaxed {
            tracing::info!(is_relaxed, "timeouts relaxed for maintenance");
            emitter.emit(Event::Relaxed { is_relaxed });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(deadline: u64, read_stall: u64, relaxed: u64) -> Config {
        let mut config = Config::default();
        config.command.deadline = Duration::from_secs(deadline);
        config.health.read_stall = Duration::from_secs(read_stall);
        config.maintenance.relaxed_timeout = Duration::from_secs(relaxed);
        config
    }

    #[test]
    fn relaxing_raises_both_to_the_relaxed_timeout_and_restoring_brings_them_back() {
        let (emitter, _events) = Emitter::new();
        let timeouts = Timeouts::new(&config(5, 1, 10));
        timeouts.set_relaxed(true, &emitter);
        assert_eq!(timeouts.deadline(), Duration::from_secs(10));
        assert_eq!(timeouts.read_stall(), Duration::from_secs(10));
        timeouts.set_relaxed(false, &emitter);
        assert_eq!(timeouts.deadline(), Duration::from_secs(5));
        assert_eq!(timeouts.read_stall(), Duration::from_secs(1));
    }

    #[test]
    fn relaxing_never_shortens_a_longer_configured_value() {
        let (emitter, _events) = Emitter::new();
        let timeouts = Timeouts::new(&config(30, 20, 10));
        timeouts.set_relaxed(true, &emitter);
        assert_eq!(timeouts.deadline(), Duration::from_secs(30));
        assert_eq!(timeouts.read_stall(), Duration::from_secs(20));
    }

    #[test]
    fn only_a_change_is_emitted() {
        let (emitter, mut events) = Emitter::new();
        let timeouts = Timeouts::new(&config(5, 1, 10));
        timeouts.set_relaxed(true, &emitter);
        timeouts.set_relaxed(true, &emitter);
        timeouts.set_relaxed(false, &emitter);
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        assert!(
            matches!(
                seen.as_slice(),
                [
                    Event::Relaxed { is_relaxed: true },
                    Event::Relaxed { is_relaxed: false }
                ]
            ),
            "{seen:?}"
        );
    }
}
