//! What repeated failures do to an instance: exponential backoff (1 s,
//! doubling, capped) and, after [`QUARANTINE_AFTER`] failures within
//! [`QUARANTINE_WINDOW`], quarantine until an operator run or a reinstall.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First retry delay after a failure; doubles per consecutive failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const QUARANTINE_AFTER: usize = 5;
pub const QUARANTINE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Failures {
    pub consecutive: u32,
    recent: VecDeque<Instant>,
    pub backoff_until: Option<Instant>,
    /// Set once quarantined: why.
    pub quarantined: Option<String>,
}

impl Failures {
    pub fn succeeded(&mut self) {
        self.consecutive = 0;
        self.backoff_until = None;
    }

    /// Records a failure at `now`; returns the backoff, and whether this
    /// failure quarantined the instance (`describe` gives the reason).
    pub fn failed(&mut self, now: Instant, describe: impl FnOnce(usize) -> String) -> (Duration, bool) {
        self.consecutive += 1;
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > QUARANTINE_WINDOW) {
            self.recent.pop_front();
        }
        let backoff = BACKOFF_START.saturating_mul(1 << (self.consecutive - 1).min(16)).min(BACKOFF_MAX);
        self.backoff_until = Some(now + backoff);
        let quarantine = self.recent.len() >= QUARANTINE_AFTER && self.quarantined.is_none();
        if quarantine {
            self.quarantined = Some(describe(self.recent.len()));
        }
        (backoff, quarantine)
    }

    /// Forgets everything (operator run, reinstall).
    pub fn clear(&mut self) {
        *self = Failures::default();
    }

    pub fn in_backoff(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_is_capped() {
        let mut f = Failures::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..12).map(|_| f.failed(now, |_| String::new()).0.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        f.succeeded();
        assert_eq!(f.failed(now, |_| String::new()).0, BACKOFF_START);
    }

    #[test]
    fn five_failures_in_the_window_quarantine_once() {
        let mut f = Failures::default();
        let start = Instant::now();
        for i in 0..4 {
            let (_, q) = f.failed(start + Duration::from_secs(i), |n| format!("{n} failures"));
            assert!(!q);
        }
        let (_, q) = f.failed(start + Duration::from_secs(5), |n| format!("{n} failures"));
        assert!(q);
        assert_eq!(f.quarantined.as_deref(), Some("5 failures"));
        let (_, again) = f.failed(start + Duration::from_secs(6), |n| format!("{n}"));
        assert!(!again, "quarantine is reported once");
        f.clear();
        assert!(f.quarantined.is_none() && f.consecutive == 0 && !f.in_backoff(start));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut f = Failures::default();
        let start = Instant::now();
        for i in 0..10u64 {
            // One failure every 200 s: never 5 within 600 s.
            let (_, q) = f.failed(start + Duration::from_secs(i * 200), |_| String::new());
            assert!(!q, "quarantined at failure {i}");
            f.succeeded();
        }
    }
}
