//! The `ServiceStatus` resource.

use crate::state::types::{NS_RUNTIME, resource};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Dependencies unmet.
    #[default]
    Waiting,
    Starting,
    Running,
    Stopping,
    /// Stopped by an operator; stays stopped until started.
    Stopped,
    /// Exited 0 and its policy does not restart it.
    Finished,
    /// Exited non-zero (or could not start) and its policy does not restart it.
    Failed,
    /// Waiting to be restarted.
    Backoff,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// No health check configured.
    #[default]
    None,
    /// Not probed yet, or the probe itself cannot run.
    Unknown,
    Healthy,
    Unhealthy,
}

/// One supervised service; id = the service name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatusSpec {
    pub name: String,
    pub state: ServiceState,
    /// Why it is in this state (unmet dependency, backoff, last exit).
    pub message: String,
    /// RFC 3339 time the state was entered.
    pub since: String,
    /// 0 when not running.
    pub pid: i32,
    /// Exits so far (each exit is counted, whatever the policy did next).
    pub restarts: u64,
    pub last_exit: String,
    pub last_exit_code: Option<i32>,
    pub last_exit_signal: Option<i32>,
    pub last_exit_time: String,
    pub health: HealthState,
    pub health_message: String,
    pub health_checked: String,
}

resource!(
    ServiceStatusSpec,
    SERVICE_STATUS,
    "ServiceStatuses.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["servicestatus", "servicestatuses", "services", "service"]
);
