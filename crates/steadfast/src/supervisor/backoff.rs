//! Delays between connection attempts.
//!
//! # Behaviour
//! - [`Backoff`] is an iterator of delays: exponential from `initial`, capped at `max`, with
//!   *full jitter* (each delay uniform in `[0, step]`), so a fleet that lost its server at the same
//!   instant does not come back in lockstep. It never ends.
//! - [`Backoff::quick`] is the delay after an attempt that every address refused, or that no
//!   address answered (the attempt itself took the time): uniform in
//!   `[refused_retry / 2, refused_retry]`, not growing.
//!
//! # Why refusals do not grow the backoff
//! A refused SYN means the host is up and nothing listens yet (a restart in progress); answering
//! it costs the server's kernel nothing, and waiting seconds would keep the client away long after
//! the server is back. Attempts that reach a server and fail (timeouts, handshake errors) do cost
//! it, and those back off exponentially.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Exponential backoff with full jitter and a cap; an endless iterator of delays.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    refused_retry: Duration,
    step: u32,
    rng: StdRng,
}

impl Backoff {
    pub(crate) fn new(
        initial: Duration,
        max: Duration,
        refused_retry: Duration,
        seed: u64,
    ) -> Self {
        Self {
            initial,
            max,
            refused_retry,
            step: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Starts again from `initial` (after a success).
    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }

    /// The delay after an attempt that every address refused or none answered.
    pub(crate) fn quick(&mut self) -> Duration {
        let low = self.refused_retry / 2;
        jitter(&mut self.rng, low, self.refused_retry)
    }

    /// The ceiling of the current step, before jitter.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.step.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceiling();
        self.step = self.step.saturating_add(1);
        Some(jitter(&mut self.rng, Duration::ZERO, ceiling))
    }
}

fn jitter(rng: &mut StdRng, low: Duration, high: Duration) -> Duration {
    let low = u64::try_from(low.as_micros()).unwrap_or(u64::MAX);
    let high = u64::try_from(high.as_micros()).unwrap_or(u64::MAX).max(low);
    Duration::from_micros(rng.random_range(low..=high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_millis(100),
            seed,
        )
    }

    #[test]
    fn ceilings_double_until_the_cap() {
        let mut b = backoff(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling());
            b.next();
        }
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
    }

    #[test]
    fn reset_returns_to_the_first_step() {
        let mut b = backoff(1);
        b.by_ref().take(5).for_each(drop);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn two_clients_with_different_seeds_do_not_move_in_lockstep() {
        let a: Vec<_> = backoff(1).take(8).collect();
        let b: Vec<_> = backoff(2).take(8).collect();
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn every_delay_is_within_its_ceiling_and_the_cap(seed in any::<u64>(), n in 1usize..200) {
            let mut b = backoff(seed);
            for _ in 0..n {
                let ceiling = b.ceiling();
                let delay = b.next().unwrap();
                prop_assert!(delay <= ceiling && delay <= Duration::from_secs(5));
            }
        }

        #[test]
        fn refusal_delay_stays_between_half_and_all_of_the_setting(seed in any::<u64>()) {
            let mut b = backoff(seed);
            let d = b.quick();
            prop_assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
