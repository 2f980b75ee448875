//! Constructors for health reports, so a check reads as
//! `Report::healthy("...").detail("k", v)`.

use crate::{Report, Status};

impl Report {
    /// A report with `status`, `summary` and no details.
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Report { status, summary: summary.into(), details: Vec::new() }
    }

    /// Everything checked is fine.
    pub fn healthy(summary: impl Into<String>) -> Self {
        Self::new(Status::Healthy, summary)
    }

    /// Working, but something needs attention.
    pub fn degraded(summary: impl Into<String>) -> Self {
        Self::new(Status::Degraded, summary)
    }

    /// The checked thing is not working.
    pub fn unhealthy(summary: impl Into<String>) -> Self {
        Self::new(Status::Unhealthy, summary)
    }

    /// The check could not tell: bad config, a denied capability, ...
    pub fn unknown(summary: impl Into<String>) -> Self {
        Self::new(Status::Unknown, summary)
    }

    /// Adds one key/value detail (the host keeps the first 32).
    pub fn detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.push((key.into(), value.to_string()));
        self
    }
}
