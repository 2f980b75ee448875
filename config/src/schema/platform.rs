//! `machine.platform`: how the node finds out which cloud or platform it
//! runs on and what that platform's metadata service says.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::nullable;
use crate::types::{Duration, Platform, PluginId, UniqueMap};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default, expecting = "a mapping")]
pub struct PlatformSettings {
    /// Pin the platform (`aws`, `metal`, ...): no detection. The kernel
    /// command line's `bronze.platform=` wins over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Platform>,
    /// Run every provider's `detect()` when nothing pins the platform;
    /// false: the node is `metal` unless pinned.
    #[serde(skip_serializing_if = "is_true")]
    pub detect: bool,
    /// How long boot keeps retrying the metadata service before it goes on
    /// without it (or with the cached answer); it keeps retrying after.
    #[serde(skip_serializing_if = "is_default_fetch_timeout")]
    pub fetch_timeout: Duration,
    /// Replace a shipped provider: platform name → the id of an instance in
    /// `machine.plugins.instances` (a `metadata-provider` plugin).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "UniqueMap::is_empty")]
    pub providers: UniqueMap<Platform, PluginId>,
}

impl PlatformSettings {
    pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for PlatformSettings {
    fn default() -> Self {
        PlatformSettings {
            name: None,
            detect: true,
            fetch_timeout: Self::DEFAULT_FETCH_TIMEOUT,
            providers: UniqueMap::new(),
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_default_fetch_timeout(d: &Duration) -> bool {
    *d == PlatformSettings::DEFAULT_FETCH_TIMEOUT
}
