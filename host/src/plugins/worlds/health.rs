//! `health-check`: `check() -> report`, called on the instance's schedule.

use super::{Prepared, Step, World, pairs_size};
use crate::plugins::context::PluginState;
use bronze_bundle::text::escape_within;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// Generated bindings of the world.
pub mod bindings {
    crate::plugins::bindings::plugin_world!("bronze:plugin/health-check");
}

pub use bindings::bronze::plugin::health::{Report, Status};

/// Kept of a health report's summary.
pub const MAX_SUMMARY: usize = 1024;
/// Kept of a health report's details.
pub const MAX_DETAILS: usize = 32;
pub const MAX_DETAIL_BYTES: usize = 1024;

pub struct Health;

/// A health report as the host keeps it: escaped, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub status: &'static str,
    pub summary: String,
    pub details: Vec<(String, String)>,
}

impl HealthReport {
    /// Counts as passing (for `consecutiveFailures`).
    pub fn passing(&self) -> bool {
        matches!(self.status, "healthy" | "degraded")
    }
}

pub fn status_str(status: Status) -> &'static str {
    match status {
        Status::Healthy => "healthy",
        Status::Degraded => "degraded",
        Status::Unhealthy => "unhealthy",
        Status::Unknown => "unknown",
    }
}

impl World for Health {
    const WORLD: bronze_bundle::World = bronze_bundle::World::HealthCheck;
    type Pre = bindings::HealthCheckPre<PluginState>;
    type Input = ();
    type Raw = Report;
    type Output = HealthReport;

    fn link(pre: InstancePre<PluginState>) -> wasmtime::Result<Prepared> {
        Ok(Prepared::Health(bindings::HealthCheckPre::new(pre)?))
    }

    fn pre(prepared: &Prepared) -> Option<&Self::Pre> {
        match prepared {
            Prepared::Health(pre) => Some(pre),
            _ => None,
        }
    }

    fn invoke<'a>(pre: &'a Self::Pre, store: &'a mut Store<PluginState>, _: ()) -> BoxFuture<'a, Result<Report, Step>> {
        Box::pin(async move {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(Step::Instantiate)?;
            plugin.call_check(&mut *store).await.map_err(Step::Call)
        })
    }

    fn raw_size(r: &Report) -> usize {
        r.summary.len() + pairs_size(&r.details)
    }

    /// Escapes, then trims to what is kept (the limits apply to the
    /// escaped text).
    fn check(mut report: Report) -> Result<HealthReport, String> {
        report.details.truncate(MAX_DETAILS);
        Ok(HealthReport {
            status: status_str(report.status),
            summary: escape_within(&report.summary, MAX_SUMMARY).into_owned(),
            details: report
                .details
                .iter()
                .map(|(k, v)| {
                    (escape_within(k, MAX_DETAIL_BYTES).into_owned(), escape_within(v, MAX_DETAIL_BYTES).into_owned())
                })
                .collect(),
        })
    }

    fn to_json(r: &HealthReport) -> Value {
        json!({
            "status": r.status,
            "summary": r.summary,
            "details": r.details.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::worlds::metadata::tests::{ESCAPED, HOSTILE};

    #[test]
    fn health_reports_are_escaped_then_cut() {
        let report = Report {
            status: Status::Healthy,
            summary: HOSTILE.into(),
            details: vec![(HOSTILE.into(), HOSTILE.into()), ("bells".into(), "\x07".repeat(MAX_DETAIL_BYTES))],
        };
        let report = Health::check(report).unwrap();
        assert_eq!(report.summary, ESCAPED);
        assert_eq!(report.details[0], (ESCAPED.to_string(), ESCAPED.to_string()));
        assert_eq!(report.details[1].1, "\\x07".repeat(MAX_DETAIL_BYTES / 4));
    }
}
