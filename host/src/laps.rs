//! A stopwatch with named laps, for the boot's timeline on the console:
//! early boot, the node's start and the network apply each say where
//! their time went, in one format ("name N ms, ...").

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Laps {
    started: Instant,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Default for Laps {
    fn default() -> Self {
        Self::new()
    }
}

impl Laps {
    /// Starts the clock now.
    pub fn new() -> Self {
        let now = Instant::now();
        Self { started: now, last: now, laps: Vec::new() }
    }

    /// Ends the step `name` now; the next step starts.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// From the start to the end of the last lap.
    pub fn total(&self) -> Duration {
        self.last - self.started
    }

    /// The laps so far, in order.
    pub fn laps(&self) -> &[(&'static str, Duration)] {
        &self.laps
    }
}

impl fmt::Display for Laps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, took)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {} ms", took.as_millis())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_are_named_in_order_and_sum_to_the_total() {
        let mut laps = Laps::new();
        std::thread::sleep(Duration::from_millis(20));
        laps.lap("first");
        laps.lap("second");
        let names: Vec<&str> = laps.laps().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(laps.laps()[0].1 >= Duration::from_millis(20));
        assert_eq!(laps.laps().iter().map(|(_, d)| *d).sum::<Duration>(), laps.total());
        let text = laps.to_string();
        assert!(text.starts_with("first ") && text.contains(" ms, second ") && text.ends_with(" ms"), "{text}");
    }
}
