//! The command deadline and the read-stall threshold in force now: relaxed while announced
//! maintenance runs, as configured otherwise; and the window after an announced start during
//! which the health monitor watches the link closely ([`Timeouts::alert`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::emitter::Emitter;
use crate::event::Event;

/// What every command reads first, in one cache line: with many clients each command otherwise
/// misses the cache on the separate `Config` allocation (measured by the growth bench). Laid
/// out in declaration order so that what a command reads (`is_relaxed` and the two deadlines)
/// is in the first line; the rest is read by the health monitor.
#[repr(C, align(64))]
pub(crate) struct Timeouts {
    /// A migration or failover is announced: deadlines and the stall threshold are relaxed.
    is_relaxed: AtomicBool,
    deadline: Duration,
    relaxed_deadline: Duration,
    read_stall: Duration,
    relaxed_read_stall: Duration,
    /// From each announced maintenance start to [`ALERT_SPAN`] after it, earliest first
    /// (never read by commands).
    alerts: std::sync::Mutex<Vec<Alert>>,
}

/// How long after an announced start the link is watched closely: the server named goes away
/// around the start, and a switch seen in the first seconds is the one that matters.
pub(crate) const ALERT_SPAN: Duration = Duration::from_secs(15);
/// At most this many announced starts are remembered.
const ALERTS: usize = 4;

/// A window in which the health monitor watches the link closely: it looks at the name on
/// every tick and suspects a stall sooner (`health` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Alert {
    pub(crate) from: Instant,
    pub(crate) until: Instant,
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
            alerts: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Watch closely from `from` (an announced start) for [`ALERT_SPAN`]. Windows already
    /// over are forgotten; of more than [`ALERTS`] pending, the latest starts are dropped.
    pub(crate) fn alert_from(&self, from: Instant) {
        let now = Instant::now();
        let mut alerts = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        alerts.retain(|a| now < a.until);
        alerts.push(Alert {
            from,
            until: from + ALERT_SPAN,
        });
        alerts.sort_by_key(|a| a.from);
        alerts.truncate(ALERTS);
    }

    /// The first alert window not over at `now`.
    pub(crate) fn alert(&self, now: Instant) -> Option<Alert> {
        let alerts = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        alerts.iter().copied().find(|a| now < a.until)
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
    fn an_alert_lasts_its_span_from_the_announced_start_and_a_later_start_follows_it() {
        let timeouts = Timeouts::new(&config(5, 1, 10));
        let now = Instant::now();
        assert_eq!(timeouts.alert(now), None, "no alert before an announcement");
        let start = now + Duration::from_secs(3);
        timeouts.alert_from(start);
        let alert = timeouts
            .alert(now)
            .expect("an alert announced for later is kept");
        assert_eq!((alert.from, alert.until), (start, start + ALERT_SPAN));
        assert_eq!(
            timeouts.alert(start + ALERT_SPAN),
            None,
            "over after its span"
        );
        let later = start + Duration::from_secs(60);
        timeouts.alert_from(later);
        assert_eq!(
            timeouts.alert(now).map(|a| a.from),
            Some(start),
            "a later start waits its turn"
        );
        assert_eq!(
            timeouts.alert(start + ALERT_SPAN).map(|a| a.from),
            Some(later),
            "and comes once the first is over"
        );
    }

    #[test]
    fn what_a_command_reads_lies_in_the_first_cache_line() {
        let end = std::mem::offset_of!(Timeouts, relaxed_deadline) + size_of::<Duration>();
        assert!(std::mem::offset_of!(Timeouts, is_relaxed) < 64);
        assert!(std::mem::offset_of!(Timeouts, deadline) < 64);
        assert!(end <= 64, "the relaxed deadline ends at byte {end}");
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
