//! `HealthCheck` resources: the latest result of each health-check plugin
//! instance.

use crate::state::types::{NS_RUNTIME, resource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// The installed plugin that ran.
    pub plugin: String,
    /// The instance (also the resource id).
    pub instance: String,
    /// healthy, degraded, unhealthy or unknown. A plugin that fails, times
    /// out or is quarantined reports unknown, never unhealthy.
    pub status: String,
    pub summary: String,
    pub details: BTreeMap<String, String>,
    /// RFC 3339 start of the last run.
    pub last_run: String,
    pub duration_ms: u64,
    /// Runs in a row that did not report healthy or degraded.
    pub consecutive_failures: u32,
    /// The last call's outcome: ok, timeout, trap, limit, host-error.
    pub outcome: String,
}

resource!(
    HealthCheckSpec,
    HEALTH_CHECK,
    "HealthChecks.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["healthcheck", "healthchecks", "hc"]
);
