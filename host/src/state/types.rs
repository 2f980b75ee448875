//! The resource types bronzed publishes, and the one list of them the API
//! resolves user-typed names against.

use super::ResourceDefinition;
use serde::{Deserialize, Serialize};

/// Namespace of configuration-derived resources.
pub const NS_CONFIG: &str = "config";
/// Namespace of runtime state.
pub const NS_RUNTIME: &str = "runtime";

/// Declares a resource type's definition and its `ResourceSpec` impl.
/// Used by every module that publishes resources.
macro_rules! resource {
    ($spec:ty, $def:ident, $name:literal, $ns:expr, sensitive = $sens:literal, aliases = [$($alias:literal),*]) => {
        pub static $def: $crate::state::ResourceDefinition = $crate::state::ResourceDefinition {
            type_name: $name,
            aliases: &[$($alias),*],
            namespace: $ns,
            sensitive: $sens,
        };
        impl $crate::state::ResourceSpec for $spec {
            const DEFINITION: &'static $crate::state::ResourceDefinition = &$def;
        }
    };
}
pub(crate) use resource;

/// The live machine config (contains the CA key: sensitive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfigSpec {
    /// The document as applied.
    pub document: String,
    /// Whether this live config is an unconfirmed `try`.
    pub try_pending: bool,
    /// Whether a different config is staged for the next boot.
    pub staged_pending: bool,
}
resource!(
    MachineConfigSpec,
    MACHINE_CONFIG,
    "MachineConfigs.bronze.dev",
    NS_CONFIG,
    sensitive = true,
    aliases = ["machineconfig", "machineconfigs", "mc"]
);

/// Where the machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Maintenance,
    Booting,
    Running,
    Rebooting,
    ShuttingDown,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Maintenance => "maintenance",
            Stage::Booting => "booting",
            Stage::Running => "running",
            Stage::Rebooting => "rebooting",
            Stage::ShuttingDown => "shutting-down",
        }
    }
}

/// A condition the machine waits on before it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmetCondition {
    pub name: String,
    pub reason: String,
}

/// The machine's stage and readiness; id `machine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatusSpec {
    pub stage: Stage,
    pub ready: bool,
    pub unmet_conditions: Vec<UnmetCondition>,
    /// "pid1" or "process".
    pub mode: String,
    /// Where state is kept, e.g. "state disk /dev/vda at /var/lib/bronze".
    pub storage: String,
    /// The boot slot this system runs from; empty when it was not booted
    /// from a Bronze disk.
    #[serde(default)]
    pub slot: String,
    /// What each boot slot holds (`BootStatus` has the whole story).
    #[serde(default)]
    pub slots: Vec<crate::boot::SlotStatusSpec>,
    /// The last upgrade written to this disk and its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<crate::boot::history::LastUpgradeSpec>,
}
resource!(
    MachineStatusSpec,
    MACHINE_STATUS,
    "MachineStatuses.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["machinestatus", "machinestatuses", "ms"]
);

/// One audited API call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventSpec {
    pub time: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub method: String,
    /// "ok" or the gRPC code name, e.g. "permission-denied".
    pub result: String,
    pub message: String,
    pub peer: String,
}
resource!(
    AuditEventSpec,
    AUDIT_EVENT,
    "AuditEvents.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["auditevent", "auditevents", "audit"]
);

/// Something the machine wants an operator to know (not an API call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineEventSpec {
    pub time: String,
    /// The subsystem, e.g. "time".
    pub kind: String,
    /// "info" or "warning".
    pub severity: String,
    pub message: String,
}
resource!(
    MachineEventSpec,
    MACHINE_EVENT,
    "MachineEvents.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["machineevent", "machineevents"]
);

/// The node's time sync; id `node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeStatusSpec {
    /// False when disabled or without servers.
    pub enabled: bool,
    pub synced: bool,
    pub synced_by_timeout: bool,
    pub epoch: u64,
    /// "discipline" or "observe-only".
    pub mode: String,
    pub servers: Vec<String>,
    pub current_server: String,
    pub current_address: String,
    pub last_offset_seconds: f64,
    pub last_rtt_seconds: f64,
    pub jitter_seconds: f64,
    pub poll_interval_seconds: f64,
    pub last_sync: String,
    pub last_error: String,
    /// "step", "slew" or "refused" (in observe-only mode: what would have been done).
    pub last_decision: String,
    pub spikes: u64,
    pub steps: u64,
    /// The kernel's view, from a read-only adjtimex.
    pub kernel: crate::time::kernel::KernelClockState,
}
resource!(
    TimeStatusSpec,
    TIME_STATUS,
    "TimeStatuses.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["timestatus", "timestatuses", "ts"]
);

/// One configured time server; id = the server as configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeServerStatusSpec {
    pub server: String,
    pub addresses: Vec<String>,
    /// NTP-style reach register: one bit per exchange, newest lowest.
    pub reach: u8,
    pub last_offset_seconds: f64,
    pub last_rtt_seconds: f64,
    pub stratum: u8,
    /// Last kiss-o'-death code received, if any.
    pub kiss_code: String,
    /// While a kiss-o'-death hold-off is in force: until when (RFC 3339,
    /// or "forever"); the server is not asked before.
    pub held_off_until: String,
    pub last_error: String,
    pub last_sample: String,
}
resource!(
    TimeServerStatusSpec,
    TIME_SERVER_STATUS,
    "TimeServerStatuses.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["timeserverstatus", "timeserverstatuses", "timeservers"]
);

/// Every resource type the API serves.
pub static ALL: &[&ResourceDefinition] = &[
    &MACHINE_CONFIG,
    &MACHINE_STATUS,
    &crate::boot::BOOT_STATUS,
    &AUDIT_EVENT,
    &MACHINE_EVENT,
    &TIME_STATUS,
    &TIME_SERVER_STATUS,
    &crate::services::status::SERVICE_STATUS,
    &crate::network::resources::LINK_STATUS,
    &crate::network::layers::NETWORK_SPEC,
    &crate::network::resources::ADDRESS_STATUS,
    &crate::network::resources::ROUTE_STATUS,
    &crate::network::dhcp::DHCP_LEASE,
    &crate::plugins::resources::HEALTH_CHECK,
    &crate::platform::resources::PLATFORM_DETECTION,
    &crate::platform::resources::PLATFORM_METADATA,
];

/// Resolves a user-typed name (alias or canonical, any case).
pub fn lookup(name: &str) -> Option<&'static ResourceDefinition> {
    let lower = name.to_ascii_lowercase();
    ALL.iter().copied().find(|d| d.type_name.eq_ignore_ascii_case(&lower) || d.aliases.iter().any(|a| *a == lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively() {
        assert_eq!(lookup("MachineStatus").unwrap().type_name, "MachineStatuses.bronze.dev");
        assert_eq!(lookup("machinestatuses.bronze.dev").unwrap().type_name, "MachineStatuses.bronze.dev");
        assert_eq!(lookup("auditevents").unwrap().type_name, "AuditEvents.bronze.dev");
        assert!(lookup("nope").is_none());
    }

    #[test]
    fn aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for def in ALL {
            for a in def.aliases {
                assert!(seen.insert(*a), "alias {a} used twice");
            }
        }
    }
}
