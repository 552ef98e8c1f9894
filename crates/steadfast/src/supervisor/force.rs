//! Force reconnect, in the style of Azure's guidance (`ReconnectErrorThreshold`,
//! `ReconnectMinInterval`): a link that produces only errors for too long is replaced, even if
//! every health signal says it is alive.
//!
//! # Behaviour
//! - Any success clears the error spell.
//! - A spell of errors lasting `errors_for` with no success asks for a replacement, at most once
//!   per `min_interval`.

use std::time::Duration;

use tokio::time::Instant;

/// The pure policy: remembers when the error spell began and when it last forced.
#[derive(Debug, Clone)]
pub(crate) struct ForcePolicy {
    errors_for: Duration,
    min_interval: Duration,
    spell_started: Option<Instant>,
    last_forced: Option<Instant>,
}

impl ForcePolicy {
    pub(crate) fn new(errors_for: Duration, min_interval: Duration) -> Self {
        Self {
            errors_for,
            min_interval,
            spell_started: None,
            last_forced: None,
        }
    }

    pub(crate) fn on_success(&mut self) {
        self.spell_started = None;
    }

    pub(crate) fn is_in_spell(&self) -> bool {
        self.spell_started.is_some()
    }

    /// Records an error at `now`; returns how long errors went on if the link must be replaced.
    pub(crate) fn on_error(&mut self, now: Instant) -> Option<Duration> {
        let started = *self.spell_started.get_or_insert(now);
        let spell = now.saturating_duration_since(started);
        let is_rested = self
            .last_forced
            .is_none_or(|at| now.saturating_duration_since(at) >= self.min_interval);
        if spell >= self.errors_for && is_rested {
            self.last_forced = Some(now);
            self.spell_started = None;
            return Some(spell);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ForcePolicy {
        ForcePolicy::new(Duration::from_secs(30), Duration::from_secs(60))
    }

    #[tokio::test(start_paused = true)]
    async fn errors_shorter_than_the_threshold_do_not_force() {
        let mut p = policy();
        assert_eq!(p.on_error(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(p.on_error(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn thirty_seconds_of_errors_forces_once() {
        let mut p = policy();
        p.on_error(Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(p.on_error(Instant::now()), Some(Duration::from_secs(30)));
        p.on_error(Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            p.on_error(Instant::now()),
            None,
            "within the 60 s minimum interval"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            p.on_error(Instant::now()).is_some(),
            "after the minimum interval"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_ends_the_error_spell() {
        let mut p = policy();
        p.on_error(Instant::now());
        tokio::time::advance(Duration::from_secs(20)).await;
        p.on_success();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(p.on_error(Instant::now()), None);
    }
}
