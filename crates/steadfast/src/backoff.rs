//! Delays between attempts: the one backoff every part of the crate that waits and retries uses.
//!
//! # Behaviour
//! - [`Backoff`] is an endless iterator of delays: step `n`'s ceiling is `initial * 2^n`,
//!   capped at `max`; [`Backoff::reset`] starts again from `initial` (after a success).
//! - Each delay is drawn below its ceiling as its [`Jitter`] says: the ceiling itself (one
//!   waiter, nobody to fall in step with), uniform in `[0, ceiling]` (*full jitter*: a fleet
//!   that failed at the same instant does not come back in lockstep), or uniform in
//!   `[floor, ceiling]` (spread out, never sooner than `floor`).
//! - [`Backoff::quick`] is the supervisor's delay after an attempt that every address refused,
//!   or that no address answered (the attempt itself took the time): uniform in
//!   `[quick / 2, quick]`, not growing.
//! - Seeded: the same seed gives the same delays (tests); clients seed from the OS.
//!
//! # Why refusals do not grow the supervisor's backoff
//! A refused SYN means the host is up and nothing listens yet (a restart in progress); answering
//! it costs the server's kernel nothing, and waiting seconds would keep the client away long after
//! the server is back. Attempts that reach a server and fail (timeouts, handshake errors) do cost
//! it, and those back off exponentially.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How a delay is drawn below its step's ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// Exactly the ceiling.
    None,
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Uniform in `[floor, ceiling]` (the ceiling when it is below the floor).
    From(Duration),
}

/// Exponential backoff with a cap and a jitter; an endless iterator of delays.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    /// The setting [`Backoff::quick`] draws around.
    quick: Duration,
    step: u32,
    rng: SmallRng,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, jitter: Jitter, seed: u64) -> Self {
        Self {
            initial,
            max,
            jitter,
            quick: initial,
            step: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// With [`Backoff::quick`] drawing around `setting` (default: `initial`).
    #[must_use]
    pub(crate) fn with_quick(mut self, setting: Duration) -> Self {
        self.quick = setting;
        self
    }

    /// Starts again from `initial` (after a success).
    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }

    /// The delay after an attempt that every address refused or none answered.
    pub(crate) fn quick(&mut self) -> Duration {
        let low = self.quick / 2;
        uniform(&mut self.rng, low, self.quick)
    }

    /// The ceiling of the current step, before jitter.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.step.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceiling();
        self.step = self.step.saturating_add(1);
        Some(match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => uniform(&mut self.rng, Duration::ZERO, ceiling),
            Jitter::From(floor) => uniform(&mut self.rng, floor.min(ceiling), ceiling),
        })
    }
}

fn uniform(rng: &mut SmallRng, low: Duration, high: Duration) -> Duration {
    let low = u64::try_from(low.as_micros()).unwrap_or(u64::MAX);
    let high = u64::try_from(high.as_micros()).unwrap_or(u64::MAX).max(low);
    Duration::from_micros(rng.random_range(low..=high))
}

/// `base`, moved at random by up to a tenth either way: periodic work of many clients (topology
/// checks) does not fall in step.
pub(crate) fn spread(base: Duration) -> Duration {
    let tenth = base / 10;
    base - tenth + tenth.mul_f64(2.0 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Jitter::Full,
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

    #[test]
    fn without_jitter_the_delays_are_the_ceilings() {
        let b = Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(1),
            Jitter::None,
            0,
        );
        let ms: Vec<u128> = b.take(7).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn a_spread_stays_within_a_tenth_of_its_base() {
        for _ in 0..100 {
            let d = spread(Duration::from_secs(2));
            assert!(d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200));
        }
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
        fn a_floored_delay_is_never_below_its_floor_nor_above_its_ceiling(seed in any::<u64>(), n in 1usize..50) {
            let mut b = Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                Jitter::From(Duration::from_millis(500)),
                seed,
            );
            for _ in 0..n {
                let ceiling = b.ceiling();
                let delay = b.next().unwrap();
                prop_assert!(delay >= Duration::from_millis(500) && delay <= ceiling);
            }
        }

        #[test]
        fn refusal_delay_stays_between_half_and_all_of_the_setting(seed in any::<u64>()) {
            let mut b = backoff(seed).with_quick(Duration::from_millis(100));
            let d = b.quick();
            prop_assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
