//! `machine.time`: NTP client settings. Defaults follow chrony's: poll
//! between 64s and 1024s, step the clock for offsets above 400ms.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::nullable;
use crate::types::{Duration, HostPort};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default, expecting = "a mapping")]
pub struct Time {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Empty: the mode's default servers (PID 1: `bronze.ntp=`, else
    /// pool.ntp.org; process mode: only `--time-servers`).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<HostPort>,
    /// How long boot waits for the first sync before going on.
    #[serde(skip_serializing_if = "is_default_boot_timeout")]
    pub boot_timeout: Duration,
    #[serde(skip_serializing_if = "is_default_min_poll")]
    pub min_poll: Duration,
    #[serde(skip_serializing_if = "is_default_max_poll")]
    pub max_poll: Duration,
    /// Offsets above this are stepped; smaller ones are slewed.
    #[serde(skip_serializing_if = "is_default_step_threshold")]
    pub step_threshold: Duration,
}

impl Time {
    pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
    pub const DEFAULT_MIN_POLL: Duration = Duration::from_secs(64);
    pub const DEFAULT_MAX_POLL: Duration = Duration::from_secs(1024);
    pub const DEFAULT_STEP_THRESHOLD: Duration = Duration::from_millis(400);
}

impl Default for Time {
    fn default() -> Self {
        Time {
            disabled: false,
            servers: Vec::new(),
            boot_timeout: Self::DEFAULT_BOOT_TIMEOUT,
            min_poll: Self::DEFAULT_MIN_POLL,
            max_poll: Self::DEFAULT_MAX_POLL,
            step_threshold: Self::DEFAULT_STEP_THRESHOLD,
        }
    }
}

fn is_default_boot_timeout(d: &Duration) -> bool {
    *d == Time::DEFAULT_BOOT_TIMEOUT
}

fn is_default_min_poll(d: &Duration) -> bool {
    *d == Time::DEFAULT_MIN_POLL
}

fn is_default_max_poll(d: &Duration) -> bool {
    *d == Time::DEFAULT_MAX_POLL
}

fn is_default_step_threshold(d: &Duration) -> bool {
    *d == Time::DEFAULT_STEP_THRESHOLD
}
