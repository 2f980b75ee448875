//! `machine.services`: the long-running processes the node supervises,
//! their dependencies, restart policy and health checks.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::{is_default, keyword_enum, nullable};
use crate::types::{
    AbsPath, ByteSize, CpuQuota, Duration, EnvName, PluginId, ServiceName, TcpEndpoint, UniqueMap, Url,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Service {
    pub name: ServiceName,
    pub command: AbsPath,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "UniqueMap::is_empty")]
    pub env: UniqueMap<EnvName, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<AbsPath>,
    /// Numeric uid; absent runs as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// Numeric gid; absent runs as root's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Other services, or the milestones `time-synced` and `network-ready`.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ServiceName>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// How long a stop waits after SIGTERM before SIGKILL.
    #[serde(
        default = "Service::default_stop_grace_period",
        skip_serializing_if = "Service::is_default_stop_grace_period"
    )]
    pub stop_grace_period: Duration,
    /// How much recent output is kept in memory for `logs`.
    #[serde(default = "Service::default_log_buffer_size", skip_serializing_if = "Service::is_default_log_buffer_size")]
    pub log_buffer_size: ByteSize,
    /// CPU and memory limits; as PID 1 the service's cgroup enforces them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
}

/// What a service may use. As PID 1 each service runs in its own cgroup v2
/// group (`/sys/fs/cgroup/bronze.slice/<name>`) with these as `cpu.max` and
/// `memory.max`; in process mode they are not enforced (a warning says so).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Resources {
    /// CPU time per period, like `500m` (half a core) or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuQuota>,
    /// The most memory (page cache included) before the kernel reclaims,
    /// then kills in the group; at least 4MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

impl Resources {
    pub const MIN_MEMORY: u64 = 4 << 20;
}

impl Service {
    /// Milestones a service may depend on besides other services.
    pub const MILESTONES: [&'static str; 2] = ["time-synced", "network-ready"];
    pub const DEFAULT_LOG_BUFFER_SIZE: ByteSize = ByteSize::mib(1);
    pub const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

    pub fn new(name: ServiceName, command: AbsPath) -> Self {
        Service {
            name,
            command,
            args: Vec::new(),
            env: UniqueMap::new(),
            working_dir: None,
            user: None,
            group: None,
            depends_on: Vec::new(),
            restart: RestartPolicy::default(),
            health: None,
            stop_grace_period: Self::DEFAULT_STOP_GRACE_PERIOD,
            log_buffer_size: Self::DEFAULT_LOG_BUFFER_SIZE,
            resources: Resources::default(),
        }
    }

    fn default_stop_grace_period() -> Duration {
        Self::DEFAULT_STOP_GRACE_PERIOD
    }

    fn is_default_stop_grace_period(d: &Duration) -> bool {
        *d == Self::DEFAULT_STOP_GRACE_PERIOD
    }

    fn default_log_buffer_size() -> ByteSize {
        Self::DEFAULT_LOG_BUFFER_SIZE
    }

    fn is_default_log_buffer_size(size: &ByteSize) -> bool {
        *size == Self::DEFAULT_LOG_BUFFER_SIZE
    }
}

keyword_enum! {
    /// What to do when the process exits.
    #[derive(Default)]
    pub enum RestartPolicy ("restart policy", "a restart policy") {
        #[default]
        Always => "always",
        OnFailure => "on-failure",
        Never => "never",
    }
}

/// How to tell a running service is healthy: exactly one of `tcp`, `http`
/// or `plugin` (checked by validation so the error names the service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default, expecting = "a mapping")]
pub struct Health {
    /// Healthy when a TCP connection succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpEndpoint>,
    /// Healthy on a 2xx answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Url>,
    /// Healthy when this plugin instance says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginId>,
    #[serde(skip_serializing_if = "Health::is_default_interval")]
    pub interval: Duration,
    #[serde(skip_serializing_if = "Health::is_default_timeout")]
    pub timeout: Duration,
}

impl Health {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    fn is_default_interval(d: &Duration) -> bool {
        *d == Self::DEFAULT_INTERVAL
    }

    fn is_default_timeout(d: &Duration) -> bool {
        *d == Self::DEFAULT_TIMEOUT
    }
}

impl Default for Health {
    fn default() -> Self {
        Health { tcp: None, http: None, plugin: None, interval: Self::DEFAULT_INTERVAL, timeout: Self::DEFAULT_TIMEOUT }
    }
}
