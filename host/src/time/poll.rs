//! The adaptive poll interval: how long to wait before the next measurement,
//! how long to back off after a failed exchange, and the matching kernel PLL
//! time constant.

use std::time::Duration;

/// Default shortest poll interval.
pub const DEFAULT_MIN: Duration = Duration::from_secs(64);
/// Default longest poll interval.
pub const DEFAULT_MAX: Duration = Duration::from_secs(1024);

/// Consecutive good samples needed before the interval doubles.
const GOOD_TO_DOUBLE: u32 = 4;
/// Noise floor for the good/bad thresholds: below 50 µs the jitter estimate
/// is mostly measurement resolution.
const JITTER_FLOOR: f64 = 50e-6;
/// Smallest error backoff when `min` is below 8 s (tests, development).
const ERROR_FLOOR: Duration = Duration::from_millis(250);
/// Relative random spread of error backoffs, so many nodes that lost the
/// same server do not retry in lockstep.
const ERROR_JITTER: f64 = 0.1;

/// Bounds of the poll interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    pub min: Duration,
    pub max: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self { min: DEFAULT_MIN, max: DEFAULT_MAX }
    }
}

/// Adaptive poll state for the current server.
#[derive(Debug, Clone)]
pub struct Poll {
    policy: PollPolicy,
    interval: Duration,
    good: u32,
    errors: u32,
    /// Set by a KoD RATE: the server asked us to slow down, so adaptive
    /// halving never goes below the interval it forced.
    rate_floor: Option<Duration>,
}

impl Poll {
    /// Starts at `policy.min`. A `max` below `min` is treated as `min`.
    pub fn new(policy: PollPolicy) -> Self {
        let policy = PollPolicy { min: policy.min, max: policy.max.max(policy.min) };
        Self { policy, interval: policy.min, good: 0, errors: 0, rate_floor: None }
    }

    /// Back to the initial state, e.g. when the server changes: a RATE
    /// request and the learned stability belong to the old one.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }

    pub fn policy(&self) -> PollPolicy {
        self.policy
    }

    /// Wait before the next regular poll.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether the current server sent a KoD RATE since the last reset.
    pub fn rate_limited(&self) -> bool {
        self.rate_floor.is_some()
    }

    /// Adapts to an accepted sample: a clock that stays well within its
    /// jitter can be polled less often; a large offset needs closer watch.
    pub fn on_sample(&mut self, offset: f64, jitter: f64) {
        self.errors = 0;
        let scale = jitter.max(JITTER_FLOOR);
        let offset = offset.abs();
        if offset > 16.0 * scale {
            let floor = self.rate_floor.unwrap_or(self.policy.min).max(self.policy.min);
            self.interval = (self.interval / 2).max(floor);
            self.good = 0;
        } else if offset < 4.0 * scale {
            self.good += 1;
            if self.good >= GOOD_TO_DOUBLE {
                self.interval = self.interval.saturating_mul(2).min(self.policy.max);
                self.good = 0;
            }
        } else {
            self.good = 0;
        }
    }

    /// KoD RATE: the server asked us to slow down. Doubles the interval
    /// (clamped to `max`) and keeps adaptive halving from undoing it.
    pub fn on_kod_rate(&mut self) {
        self.interval = self.interval.saturating_mul(2).min(self.policy.max);
        self.good = 0;
        self.rate_floor = Some(self.interval);
    }

    /// Retry delay after a failed exchange: exponential from `min / 8`
    /// (floored at 250 ms), doubling per consecutive error up to `max`,
    /// spread by ±10 % and never above `max`. The next sample resets it.
    pub fn on_error(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let base = (self.policy.min / 8).max(ERROR_FLOOR);
        let exp = self.errors.min(31);
        self.errors = self.errors.saturating_add(1);
        let delay = base.saturating_mul(1u32 << exp).min(self.policy.max);
        let factor = 1.0 + rng.random_range(-ERROR_JITTER..=ERROR_JITTER);
        // Not `mul_f64`: it panics on overflow for absurd `max` values.
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor).map_or(self.policy.max, |d| d.min(self.policy.max))
    }

    /// Kernel PLL time constant for the current interval: log2(seconds) − 4,
    /// clamped to 0..=10.
    pub fn time_constant(&self) -> i64 {
        self.interval.as_secs().checked_ilog2().map_or(0, |l| (i64::from(l) - 4).clamp(0, 10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn test_poll() -> Poll {
        Poll::new(PollPolicy { min: secs(1), max: secs(8) })
    }

    #[test]
    fn starts_at_min_with_defaults() {
        let p = Poll::new(PollPolicy::default());
        assert_eq!(p.interval(), secs(64));
        assert_eq!(p.policy(), PollPolicy { min: secs(64), max: secs(1024) });
    }

    #[test]
    fn doubles_after_four_good_samples() {
        let mut p = test_poll();
        // Jitter 10 µs is below the 50 µs floor: good means |offset| < 200 µs.
        for _ in 0..3 {
            p.on_sample(150e-6, 10e-6);
        }
        assert_eq!(p.interval(), secs(1));
        p.on_sample(-150e-6, 10e-6);
        assert_eq!(p.interval(), secs(2));
        for _ in 0..4 {
            p.on_sample(0.0, 0.0);
        }
        assert_eq!(p.interval(), secs(4));
    }

    #[test]
    fn an_in_between_sample_breaks_the_good_run() {
        let mut p = test_poll();
        for _ in 0..3 {
            p.on_sample(0.0, 0.0);
        }
        // 500 µs is neither good (< 200 µs) nor bad (> 800 µs).
        p.on_sample(500e-6, 0.0);
        for _ in 0..3 {
            p.on_sample(0.0, 0.0);
        }
        assert_eq!(p.interval(), secs(1));
        p.on_sample(0.0, 0.0);
        assert_eq!(p.interval(), secs(2));
    }

    #[test]
    fn large_offset_halves_and_resets_the_count() {
        let mut p = test_poll();
        for _ in 0..12 {
            p.on_sample(0.0, 0.0);
        }
        assert_eq!(p.interval(), secs(8));
        // Jitter 1 ms: bad means |offset| > 16 ms.
        p.on_sample(-0.017, 0.001);
        assert_eq!(p.interval(), secs(4));
        for _ in 0..3 {
            p.on_sample(0.0, 0.001);
        }
        p.on_sample(0.017, 0.001);
        assert_eq!(p.interval(), secs(2));
        p.on_sample(0.017, 0.001);
        p.on_sample(0.017, 0.001);
        p.on_sample(0.017, 0.001);
        assert_eq!(p.interval(), secs(1));
    }

    #[test]
    fn interval_is_clamped_to_max() {
        let mut p = test_poll();
        for _ in 0..40 {
            p.on_sample(0.0, 0.0);
        }
        assert_eq!(p.interval(), secs(8));
    }

    #[test]
    fn rate_doubles_clamps_and_holds_against_halving() {
        let mut p = test_poll();
        assert!(!p.rate_limited());
        p.on_kod_rate();
        assert_eq!(p.interval(), secs(2));
        assert!(p.rate_limited());
        p.on_kod_rate();
        assert_eq!(p.interval(), secs(4));
        p.on_sample(1.0, 0.0);
        assert_eq!(p.interval(), secs(4));
        p.on_kod_rate();
        p.on_kod_rate();
        assert_eq!(p.interval(), secs(8));
        p.reset();
        assert_eq!(p.interval(), secs(1));
        assert!(!p.rate_limited());
    }

    #[test]
    fn error_backoff_grows_within_jitter_and_max() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut p = test_poll();
        // min 1 s < 8 s: base is max(125 ms, 250 ms) = 250 ms.
        let nominal = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for n in nominal {
            let d = p.on_error(&mut rng).as_secs_f64();
            assert!(d >= n * 0.9 - 1e-9 && d <= n * 1.1 + 1e-9, "delay {d} for nominal {n}");
            assert!(d <= 8.0, "delay {d} above max");
        }
        // A sample resets the consecutive count.
        p.on_sample(0.0, 0.0);
        let d = p.on_error(&mut rng).as_secs_f64();
        assert!((0.225..=0.275).contains(&d), "delay {d}");
        // The interval itself is untouched by errors.
        assert_eq!(p.interval(), secs(1));
    }

    #[test]
    fn error_backoff_with_default_policy_starts_at_eight_seconds() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = Poll::new(PollPolicy::default());
        let first = p.on_error(&mut rng).as_secs_f64();
        assert!((7.2..=8.8).contains(&first), "first {first}");
        let second = p.on_error(&mut rng).as_secs_f64();
        assert!((14.4..=17.6).contains(&second), "second {second}");
    }

    #[test]
    fn error_jitter_actually_varies() {
        let mut rng = StdRng::seed_from_u64(42);
        let delays: Vec<Duration> = (0..20)
            .map(|_| {
                let mut p = test_poll();
                p.on_error(&mut rng)
            })
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]));
        assert!(delays.iter().all(|d| (Duration::from_millis(225)..=Duration::from_millis(275)).contains(d)));
    }

    #[test]
    fn time_constant_follows_interval() {
        assert_eq!(Poll::new(PollPolicy::default()).time_constant(), 2);
        let mut p = Poll::new(PollPolicy { min: secs(1024), max: secs(1024) });
        assert_eq!(p.time_constant(), 6);
        p = test_poll();
        assert_eq!(p.time_constant(), 0);
        let p = Poll::new(PollPolicy { min: secs(1 << 16), max: secs(1 << 16) });
        assert_eq!(p.time_constant(), 10);
    }

    #[test]
    fn max_below_min_is_min() {
        let p = Poll::new(PollPolicy { min: secs(16), max: secs(4) });
        assert_eq!(p.policy(), PollPolicy { min: secs(16), max: secs(16) });
        assert_eq!(p.interval(), secs(16));
    }
}
