//! What a maintenance notification asks the client to do: pure, no sockets, no clocks.
//!
//! # Behaviour
//! - De-duplicates by (type, seq): servers replay the same MOVING to connections that opt in
//!   during the window; acting on each would reconnect a dozen times for one event. Frames
//!   without a seq are always new. Distinct seqs are each honoured.
//! - An end frame (MIGRATED, FAILED_OVER, SMIGRATED) that arrives during the handshake is a
//!   replay of an old event and is ignored.
//! - Starts and ends nest: relaxation lasts while more starts than ends were seen, and ends by
//!   itself `cap` after the last start if no end comes.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::push::{Endpoint, Notification};

/// How many (type, seq) pairs are remembered.
const REMEMBERED: usize = 256;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// Nothing (a duplicate, a replay, or a notice only).
    Nothing,
    /// Relaxation starts or deepens.
    Relax,
    /// One start was ended.
    Unrelax,
    /// Replace the link with one to `endpoint`; new connections go there until `until`.
    MoveTo { endpoint: Endpoint, until: Instant },
    /// Replace the link with one to the configured endpoint (resolved again) after `after`.
    ReconnectAfter(Duration),
    /// Slots moved: reload the topology (clusters; a no-op for one endpoint).
    ReloadTopology,
}

/// The reactor's memory.
#[derive(Debug)]
pub(crate) struct Reactor {
    seen: VecDeque<(&'static str, u64)>,
    open_starts: u32,
    relaxed_until: Option<Instant>,
    cap: Duration,
}

impl Reactor {
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            seen: VecDeque::new(),
            open_starts: 0,
            relaxed_until: None,
            cap,
        }
    }

    /// Whether timeouts are relaxed at `now`.
    pub(crate) fn is_relaxed(&self, now: Instant) -> bool {
        self.open_starts > 0 && self.relaxed_until.is_some_and(|until| now < until)
    }

    /// When relaxation ends by itself, if it is on.
    pub(crate) fn relaxed_until(&self) -> Option<Instant> {
        (self.open_starts > 0)
            .then_some(self.relaxed_until)
            .flatten()
    }

    /// Decides what `notification` asks for.
    pub(crate) fn react(
        &mut self,
        notification: &Notification,
        is_during_handshake: bool,
        now: Instant,
    ) -> Reaction {
        if is_during_handshake && notification.is_end() {
            return Reaction::Nothing;
        }
        if let Some(seq) = notification.seq() {
            let key = (notification.kind(), seq);
            if self.seen.contains(&key) {
                return Reaction::Nothing;
            }
            if self.seen.len() == REMEMBERED {
                self.seen.pop_front();
            }
            self.seen.push_back(key);
        }
        if !self.is_relaxed(now) {
            self.open_starts = 0;
        }
        match notification {
            Notification::Moving {
                endpoint: Some(endpoint),
                time,
                ..
            } => Reaction::MoveTo {
                endpoint: endpoint.clone(),
                until: now + *time,
            },
            Notification::Moving {
                endpoint: None,
                time,
                ..
            } => Reaction::ReconnectAfter(*time / 2),
            n if n.is_start() => {
                self.open_starts = self.open_starts.saturating_add(1);
                self.relaxed_until = Some(now + self.cap);
                Reaction::Relax
            }
            Notification::SlotsMigrated { .. } => {
                self.open_starts = self.open_starts.saturating_sub(1);
                Reaction::ReloadTopology
            }
            n if n.is_end() => {
                self.open_starts = self.open_starts.saturating_sub(1);
                Reaction::Unrelax
            }
            _ => Reaction::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reactor() -> Reactor {
        Reactor::new(Duration::from_secs(60))
    }

    fn moving(seq: u64) -> Notification {
        Notification::Moving {
            seq: Some(seq),
            time: Duration::from_secs(15),
            endpoint: Some(Endpoint {
                host: "10.0.0.9".into(),
                port: 12000,
            }),
        }
    }

    fn failing_over(seq: u64) -> Notification {
        Notification::FailingOver {
            seq: Some(seq),
            time: Duration::from_secs(2),
            shards: String::new(),
        }
    }

    fn failed_over(seq: u64) -> Notification {
        Notification::FailedOver {
            seq: Some(seq),
            shards: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_moving_with_the_same_seq_moves_once() {
        let mut r = reactor();
        let now = Instant::now();
        assert!(matches!(
            r.react(&moving(5), false, now),
            Reaction::MoveTo { .. }
        ));
        for _ in 0..12 {
            assert_eq!(r.react(&moving(5), true, now), Reaction::Nothing);
        }
        assert!(
            matches!(r.react(&moving(6), false, now), Reaction::MoveTo { .. }),
            "a second move in the same maintenance is honoured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn moving_target_applies_for_its_time() {
        let now = Instant::now();
        let Reaction::MoveTo { until, endpoint } = reactor().react(&moving(1), false, now) else {
            panic!()
        };
        assert_eq!(until, now + Duration::from_secs(15));
        assert_eq!(endpoint.port, 12000);
    }

    #[tokio::test(start_paused = true)]
    async fn moving_without_endpoint_reconnects_after_half_its_time() {
        let n = Notification::Moving {
            seq: Some(1),
            time: Duration::from_secs(10),
            endpoint: None,
        };
        assert_eq!(
            reactor().react(&n, false, Instant::now()),
            Reaction::ReconnectAfter(Duration::from_secs(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn starts_and_ends_nest() {
        let mut r = reactor();
        let now = Instant::now();
        r.react(&failing_over(1), false, now);
        r.react(
            &Notification::Migrating {
                seq: Some(2),
                time: Duration::ZERO,
                shards: String::new(),
            },
            false,
            now,
        );
        assert!(r.is_relaxed(now));
        assert_eq!(r.react(&failed_over(1), false, now), Reaction::Unrelax);
        assert!(r.is_relaxed(now), "one start is still open");
        r.react(
            &Notification::Migrated {
                seq: Some(2),
                shards: String::new(),
            },
            false,
            now,
        );
        assert!(!r.is_relaxed(now));
    }

    #[tokio::test(start_paused = true)]
    async fn relaxation_ends_by_itself_at_the_cap() {
        let mut r = reactor();
        let now = Instant::now();
        r.react(&failing_over(1), false, now);
        assert!(r.is_relaxed(now + Duration::from_secs(59)));
        assert!(!r.is_relaxed(now + Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_frame_replayed_during_the_handshake_is_ignored() {
        let mut r = reactor();
        let now = Instant::now();
        r.react(&failing_over(1), false, now);
        assert_eq!(r.react(&failed_over(1), true, now), Reaction::Nothing);
        assert!(
            r.is_relaxed(now),
            "the replay did not end the live relaxation"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_of_seen_seqs_is_bounded() {
        let mut r = reactor();
        let now = Instant::now();
        for seq in 0..10_000 {
            r.react(&moving(seq), false, now);
        }
        assert!(r.seen.len() <= REMEMBERED);
    }
}
