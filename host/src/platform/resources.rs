//! The platform controller's resources: `PlatformDetection` (which
//! platform, and what every provider answered) and `PlatformMetadata` (the
//! chosen provider's answer, fresh or cached). Both have the id
//! [`PLATFORM_ID`].

use super::metadata::PlatformMetadata;
use crate::state::types::{NS_RUNTIME, resource};
use serde::{Deserialize, Serialize};

/// Id of both resources.
pub const PLATFORM_ID: &str = "platform";

/// One provider's answer to `detect()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectionAnswer {
    /// Platform name the provider stands for.
    pub provider: String,
    /// The plugin instance that answered.
    pub instance: String,
    /// `yes`, `no`, or `error`.
    pub answer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDetectionSpec {
    /// The platform in use: a provider's name, `metal`, or empty when
    /// detection failed.
    pub platform: String,
    /// `kernel command line`, `config`, `detection`, or `default`.
    pub source: String,
    #[serde(default)]
    pub answers: Vec<DetectionAnswer>,
    /// Why no platform could be chosen (several said yes, a pinned one is
    /// not installed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub duration_ms: u64,
    /// When this choice was made (RFC 3339): every round is a new version
    /// of the resource, even when it chose the same as the last one, so a
    /// refresh can tell that it ran.
    #[serde(default)]
    pub chosen_at: String,
    /// The last `platform refresh` request this round answers (a counter;
    /// 0 before any): a refresh waits for a round that saw its own number.
    #[serde(default)]
    pub refresh: u64,
}
resource!(
    PlatformDetectionSpec,
    PLATFORM_DETECTION,
    "PlatformDetections.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["platformdetection", "platformdetections"]
);

/// What happened to the user data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDataStatus {
    /// `none`, `machine-config`, `cloud-config`, `script`, `other`.
    pub kind: String,
    /// `applied`, `ignored`, `invalid`, `kept-stored-config`, or empty.
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformMetadataSpec {
    pub platform: String,
    /// The plugin instance that fetched it.
    pub instance: String,
    /// Served from the state dir's cache, not (yet) from the service.
    pub cached: bool,
    /// When the service gave this answer (RFC 3339).
    pub fetched_at: String,
    /// Seconds between `fetchedAt` and when this was published.
    pub age_seconds: u64,
    /// Fetch attempts since the last success.
    pub attempts: u32,
    /// The last failed attempt's error, while retrying.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    pub user_data: UserDataStatus,
    /// The answer, without user data (which can hold secrets).
    pub metadata: PlatformMetadata,
}
resource!(
    PlatformMetadataSpec,
    PLATFORM_METADATA,
    "PlatformMetadatas.bronze.dev",
    NS_RUNTIME,
    sensitive = false,
    aliases = ["platformmetadata", "platformmetadatas", "pm"]
);
