//! Sample filtering: picking the best sample of a burst and rejecting
//! offset spikes against the recent history, while still letting a real,
//! persistent shift of the clock through.

use std::collections::VecDeque;

use super::types::Sample;

/// How many accepted samples the spike filter remembers.
pub const WINDOW: usize = 8;

/// The filter only judges once it has this many samples; before that it
/// has no notion of "normal" and accepts everything.
const MIN_HISTORY: usize = 3;

/// Consecutive, mutually agreeing spikes that are taken as a real shift.
const CONFIRM: usize = 3;

/// Scales the MAD into an estimate of the standard deviation (normal data).
const MAD_TO_SIGMA: f64 = 1.4826;

/// Never call anything within 0.5 ms of the median a spike: below that,
/// network noise dominates and the slew absorbs it anyway.
const LIMIT_FLOOR: f64 = 0.5e-3;

/// The sample of a burst with the minimum round trip (ties: the first):
/// the shortest exchange has the least room for asymmetric queuing delay.
pub fn best_of_burst(samples: &[Sample]) -> Option<Sample> {
    samples.iter().copied().reduce(|best, s| if s.rtt < best.rtt { s } else { best })
}

/// What the spike filter says about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FilterVerdict {
    /// Use it; it is now part of the window.
    Accept,
    /// Too far from the window's median; not used and not remembered in
    /// the window.
    Spike {
        /// Median offset of the window, seconds.
        median: f64,
        /// Largest accepted distance from the median, seconds.
        limit: f64,
    },
}

/// Median/MAD spike filter over the last [`WINDOW`] accepted samples.
#[derive(Debug, Clone, Default)]
pub struct SpikeFilter {
    window: VecDeque<Sample>,
    /// The current run of consecutive spikes (at most `CONFIRM - 1` between
    /// calls), so a persistent shift can be recognised.
    spikes: Vec<Sample>,
}

impl SpikeFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything, e.g. after the clock was stepped or the server
    /// changed: old offsets no longer describe the new situation.
    pub fn reset(&mut self) {
        self.window.clear();
        self.spikes.clear();
    }

    /// Number of accepted samples in the window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Judges `s` against the window and, if accepted, adds it.
    pub fn check(&mut self, s: Sample) -> FilterVerdict {
        if self.window.len() < MIN_HISTORY {
            self.accept(s);
            return FilterVerdict::Accept;
        }
        let offsets: Vec<f64> = self.window.iter().map(|w| w.offset).collect();
        let median = median(&offsets);
        let deviations: Vec<f64> = offsets.iter().map(|o| (o - median).abs()).collect();
        let mad = median_of(deviations);
        let limit = (3.0 * MAD_TO_SIGMA * mad).max(3.0 * s.rtt / 2.0).max(LIMIT_FLOOR);
        // Written so that a NaN offset is a spike, never accepted.
        if (s.offset - median).abs() <= limit {
            self.accept(s);
            return FilterVerdict::Accept;
        }
        self.spikes.push(s);
        if self.spikes.len() >= CONFIRM {
            let run = &self.spikes[self.spikes.len() - CONFIRM..];
            let mean = run.iter().map(|r| r.offset).sum::<f64>() / CONFIRM as f64;
            if run.iter().all(|r| (r.offset - mean).abs() <= limit) {
                // The clock (or the server) really moved: start over from
                // the shifted samples instead of rejecting forever.
                self.window = run.iter().copied().collect();
                self.spikes.clear();
                return FilterVerdict::Accept;
            }
            // Keep only the newest ones: they may still start an agreeing run.
            self.spikes.drain(..self.spikes.len() + 1 - CONFIRM);
        }
        FilterVerdict::Spike { median, limit }
    }

    /// RMS of successive offset differences in the window, seconds: how much
    /// the measurements wander from one poll to the next (0 with < 2 samples).
    pub fn jitter(&self) -> f64 {
        if self.window.len() < 2 {
            return 0.0;
        }
        let (sum, n) = self
            .window
            .iter()
            .zip(self.window.iter().skip(1))
            .fold((0.0, 0usize), |(sum, n), (a, b)| (sum + (b.offset - a.offset).powi(2), n + 1));
        (sum / n as f64).sqrt()
    }

    fn accept(&mut self, s: Sample) {
        self.spikes.clear();
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(s);
    }
}

fn median(values: &[f64]) -> f64 {
    median_of(values.to_vec())
}

/// Median of a non-empty list (mean of the two middle values for an even
/// count); 0 for an empty one.
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addr() -> SocketAddr {
        "192.0.2.1:123".parse().unwrap()
    }

    fn sample(offset: f64, rtt: f64) -> Sample {
        Sample { server: addr(), offset, rtt, stratum: 2, leap: 0 }
    }

    /// A filter holding `n` samples alternating +20 µs / −20 µs, 200 µs RTT.
    fn steady(n: usize) -> SpikeFilter {
        let mut f = SpikeFilter::new();
        for i in 0..n {
            let o = if i % 2 == 0 { 20e-6 } else { -20e-6 };
            assert_eq!(f.check(sample(o, 200e-6)), FilterVerdict::Accept);
        }
        f
    }

    #[test]
    fn best_of_burst_picks_min_rtt_first_on_ties() {
        let burst = [sample(0.1, 0.004), sample(0.2, 0.002), sample(0.3, 0.002), sample(0.4, 0.003)];
        assert_eq!(best_of_burst(&burst).map(|s| s.offset), Some(0.2));
        assert_eq!(best_of_burst(&[]), None);
    }

    #[test]
    fn steady_samples_are_accepted_and_window_is_capped() {
        let f = steady(20);
        assert_eq!(f.len(), WINDOW);
    }

    #[test]
    fn single_outlier_is_a_spike() {
        let mut f = steady(8);
        // Median of ±20 µs is 0, MAD 20 µs → 89 µs; RTT term 300 µs; floor 0.5 ms wins.
        assert_eq!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { median: 0.0, limit: 0.5e-3 });
        assert_eq!(f.len(), 8);
        // Back to normal afterwards.
        assert_eq!(f.check(sample(10e-6, 200e-6)), FilterVerdict::Accept);
    }

    #[test]
    fn limit_widens_with_the_samples_own_rtt() {
        let mut f = steady(8);
        // 40 ms RTT → limit 60 ms, so a 50 ms offset is plausible.
        assert_eq!(f.check(sample(0.050, 0.040)), FilterVerdict::Accept);
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn limit_follows_the_mad() {
        let mut f = SpikeFilter::new();
        for o in [0.0, 0.002, -0.002, 0.002] {
            assert_eq!(f.check(sample(o, 0.0)), FilterVerdict::Accept);
        }
        // Offsets {-2, 0, 2, 2} ms: median 1 ms, deviations {3, 1, 1, 1} ms → MAD 1 ms.
        let verdict = f.check(sample(0.010, 0.0));
        let FilterVerdict::Spike { median, limit } = verdict else { panic!("expected a spike, got {verdict:?}") };
        assert!((median - 0.001).abs() < 1e-12, "median {median}");
        assert!((limit - 3.0 * 1.4826e-3).abs() < 1e-12, "limit {limit}");
    }

    #[test]
    fn three_agreeing_shifted_samples_are_accepted() {
        let mut f = steady(8);
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert!(matches!(f.check(sample(0.0502, 200e-6)), FilterVerdict::Spike { .. }));
        assert_eq!(f.check(sample(0.0501, 200e-6)), FilterVerdict::Accept);
        assert_eq!(f.len(), 3);
        // The window now describes the new level.
        assert_eq!(f.check(sample(0.0500, 200e-6)), FilterVerdict::Accept);
        assert!(matches!(f.check(sample(0.0, 200e-6)), FilterVerdict::Spike { .. }));
    }

    #[test]
    fn disagreeing_spikes_are_not_a_shift() {
        let mut f = steady(8);
        for o in [0.050, -0.050, 0.050, -0.050] {
            assert!(matches!(f.check(sample(o, 200e-6)), FilterVerdict::Spike { .. }), "offset {o}");
        }
        assert_eq!(f.len(), 8);
        // The run slides: [-50, +50] are kept, so three more +50 ms are needed.
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert_eq!(f.check(sample(0.050, 200e-6)), FilterVerdict::Accept);
    }

    #[test]
    fn an_accepted_sample_breaks_a_spike_run() {
        let mut f = steady(8);
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert_eq!(f.check(sample(0.0, 200e-6)), FilterVerdict::Accept);
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn reset_clears_window_and_spike_run() {
        let mut f = steady(8);
        assert!(matches!(f.check(sample(0.050, 200e-6)), FilterVerdict::Spike { .. }));
        f.reset();
        assert_eq!(f.len(), 0);
        assert!(f.is_empty());
        assert_eq!(f.jitter(), 0.0);
        // With an empty window anything is accepted again.
        assert_eq!(f.check(sample(7.0, 200e-6)), FilterVerdict::Accept);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn jitter_of_known_offsets() {
        let mut f = SpikeFilter::new();
        assert_eq!(f.jitter(), 0.0);
        f.check(sample(0.0, 0.0));
        assert_eq!(f.jitter(), 0.0);
        // Differences 1, 2, -3 ms → RMS sqrt(14/3) ms ≈ 2.1602 ms.
        for o in [0.001, 0.003, 0.0] {
            assert_eq!(f.check(sample(o, 0.004)), FilterVerdict::Accept);
        }
        let expected = (14.0e-6_f64 / 3.0).sqrt();
        assert!((f.jitter() - expected).abs() < 1e-12, "jitter {}", f.jitter());
        assert!((expected - 2.1602e-3).abs() < 1e-7);
    }
}
