//! Restart delays: exponential with jitter, capped, forgiven after a stable run.
//!
//! supervisord gives up after `startretries` quick crashes and leaves a service FATAL until a person
//! comes by; Kubernetes instead keeps trying with a doubling delay up to a cap and forgets the
//! crashes once the container has run for a while. This is the Kubernetes schedule, as a pure value
//! the program task consults, so it can be tested without clocks or processes.

use std::time::Duration;

use crate::config::BackoffConfig;

/// Where a program is in its restart schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Restarts since the last stable run; the next delay is `initial * 2^failures`.
    failures: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            failures: 0,
        }
    }

    /// The delay before the next start, advancing the schedule. `random` is uniform in `[0, 1)`:
    /// the delay is shortened by up to `jitter` of itself, so programs that crashed together do not
    /// restart in lockstep, and the cap is never exceeded.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let base = self.undithered();
        self.failures = self.failures.saturating_add(1);
        let cut = self.config.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }

    /// The delay the next call of [`Backoff::next_delay`] starts from, before jitter.
    pub fn undithered(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }

    /// True once the schedule has reached its cap (it stays there; it never gives up by itself).
    pub fn at_cap(&self) -> bool {
        self.undithered() >= self.config.max
    }

    /// A run that lasted `reset_after` or longer forgives every earlier crash; says whether it did.
    pub fn observe_run(&mut self, ran_for: Duration) -> bool {
        let stable = ran_for >= self.config.reset_after;
        if stable {
            self.failures = 0;
        }
        stable
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stay_there() {
        let mut b = Backoff::new(config(0.0));
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(b.at_cap());
        for _ in 0..1000 {
            assert_eq!(b.next_delay(0.0), Duration::from_secs(60));
        }
    }

    #[test]
    fn jitter_only_shortens_and_never_exceeds_the_cap() {
        let mut b = Backoff::new(config(0.2));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(1800));
        for _ in 0..20 {
            let d = b.next_delay(0.999);
            assert!(d <= Duration::from_secs(60), "{d:?}");
        }
        assert!(b.next_delay(0.999) >= Duration::from_secs(48));
    }

    #[test]
    fn a_stable_run_resets_the_schedule() {
        let mut b = Backoff::new(config(0.0));
        for _ in 0..5 {
            b.next_delay(0.0);
        }
        b.observe_run(Duration::from_secs(59));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(32));
        b.observe_run(Duration::from_secs(60));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut b = Backoff::new(config(0.0));
        b.failures = u32::MAX - 1;
        assert_eq!(b.next_delay(0.0), Duration::from_secs(60));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(60));
    }
}
