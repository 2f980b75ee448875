//! `Duration`: a non-negative span written the humantime way (`30s`, `2m`,
//! `1h30m`, `500ms`), keeping the text the user wrote.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

/// A span of time. Equality and ordering compare the span, not the text,
/// so `2m` equals `120s`.
#[derive(Debug, Clone)]
pub struct Duration {
    value: std::time::Duration,
    /// The form the user wrote; `None` for values built in code.
    text: Option<String>,
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration { value: std::time::Duration::from_secs(secs), text: None }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration { value: std::time::Duration::from_millis(millis), text: None }
    }

    pub const fn from_std(value: std::time::Duration) -> Self {
        Duration { value, text: None }
    }

    pub const fn as_std(&self) -> std::time::Duration {
        self.value
    }

    pub const fn is_zero(&self) -> bool {
        self.value.is_zero()
    }
}

impl FromStr for Duration {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.trim_start().starts_with('-') {
            return Err(ValueError::invalid("duration", s, "negative durations are not allowed"));
        }
        let value = humantime::parse_duration(s)
            .map_err(|_| ValueError::invalid("duration", s, "expected a number with a unit, like 30s or 2m"))?;
        Ok(Duration { value, text: Some(s.to_owned()) })
    }
}

/// Code-built values print in the largest whole unit (`2m`, `1024s`,
/// `400ms`), which is how the defaults are documented.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(text) = &self.text {
            return f.write_str(text);
        }
        let (secs, nanos) = (self.value.as_secs(), self.value.subsec_nanos());
        match (secs, nanos) {
            (0, 0) => f.write_str("0s"),
            (s, 0) if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            (s, 0) if s % 60 == 0 => write!(f, "{}m", s / 60),
            (s, 0) => write!(f, "{s}s"),
            (_, n) if n % 1_000_000 == 0 => write!(f, "{}ms", self.value.as_millis()),
            _ => write!(f, "{}", humantime::format_duration(self.value)),
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Duration::from_std(value)
    }
}

impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Duration {}

impl Hash for Duration {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl PartialOrd for Duration {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Duration {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

text_serde!(Duration, "a duration with a unit, like 30s or 2m");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        for (text, secs, millis) in [("30s", 30, 0), ("2m", 120, 0), ("1h30m", 5400, 0), ("500ms", 0, 500)] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.as_std(), std::time::Duration::from_secs(secs) + std::time::Duration::from_millis(millis));
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn rejects_negative_and_garbage() {
        let err = "-5s".parse::<Duration>().unwrap_err();
        assert_eq!(err.to_string(), "invalid duration \"-5s\": negative durations are not allowed");
        let err = "2x".parse::<Duration>().unwrap_err();
        assert_eq!(err.to_string(), "invalid duration \"2x\": expected a number with a unit, like 30s or 2m");
        assert!("".parse::<Duration>().is_err());
        assert!("10".parse::<Duration>().is_err());
    }

    #[test]
    fn equality_compares_the_span() {
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_secs(120));
        assert_eq!(Duration::from_secs(5400).to_string(), "90m");
        assert_eq!(Duration::from_secs(1024).to_string(), "1024s");
        assert_eq!(Duration::from_secs(7200).to_string(), "2h");
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_std(std::time::Duration::new(1, 5)).to_string(), "1s 5ns");
        assert_eq!(Duration::from_secs(5400).to_string().parse::<Duration>().unwrap(), Duration::from_secs(5400));
    }
}
