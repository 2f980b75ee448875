//! `machine.plugins`: which plugin signatures are trusted, the plugin
//! instances to run with the capabilities ("grants") each may use, and the
//! limits of compiling a plugin.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::{is_default, keyword_enum, nullable};
use crate::types::{ByteSize, Duration, PluginId, ProbeTarget, TrustedKey, UniqueMap, Url, VolumeLabel};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Plugins {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<TrustedKey>,
    /// Accept bundles without a signature. A signature that is present must
    /// still verify with a trusted key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<PluginInstance>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub compile: PluginCompile,
}

/// What compiling one plugin may use (at install, for image plugins, and
/// when the compiled-code cache is unusable). Compiling runs in a process
/// of its own; one over a limit is stopped and the plugin refused. Absent
/// means the node's default (512MiB, 60s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct PluginCompile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// CPU time, all of the compiler's threads together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Duration>,
}

impl PluginCompile {
    /// The least memory the compiler can start in.
    pub const MIN_MEMORY: ByteSize = ByteSize::mib(32);
    /// The least CPU time that makes sense.
    pub const MIN_CPU: Duration = Duration::from_secs(1);
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct PluginInstance {
    pub id: PluginId,
    /// The installed plugin this instance runs; defaults to `id`, so one
    /// plugin can run as several instances with different config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginId>,
    #[serde(default = "enabled_default", skip_serializing_if = "is_enabled_default")]
    pub enabled: bool,
    /// Handed to the plugin when it holds the `config` grant.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "UniqueMap::is_empty")]
    pub config: UniqueMap<String, String>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub grants: Grants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub limits: Limits,
}

impl PluginInstance {
    /// The installed plugin this instance runs.
    pub fn plugin_id(&self) -> &PluginId {
        self.plugin.as_ref().unwrap_or(&self.id)
    }

    pub fn new(id: PluginId) -> Self {
        PluginInstance {
            id,
            plugin: None,
            enabled: true,
            config: UniqueMap::new(),
            grants: Grants::default(),
            schedule: None,
            limits: Limits::default(),
        }
    }
}

fn enabled_default() -> bool {
    true
}

fn is_enabled_default(enabled: &bool) -> bool {
    *enabled
}

/// Capabilities a plugin may use; everything is denied unless granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Grants {
    /// Read its `config` map.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config: bool,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpGrant>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub probe: Vec<ProbeTarget>,
    /// Labels of volumes (config drives) it may read files from.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeLabel>,
}

keyword_enum! {
    /// Node facts a plugin may read.
    pub enum Fact ("fact", "a fact") {
        Dmi => "dmi",
        Links => "links",
        Cmdline => "cmdline",
        Time => "time",
    }
}

/// HTTP requests a plugin may make: to URLs under `url` (a prefix), with
/// these methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct HttpGrant {
    pub url: Url,
    #[serde(default = "HttpGrant::default_methods", skip_serializing_if = "HttpGrant::is_default_methods")]
    pub methods: Vec<HttpMethod>,
}

impl HttpGrant {
    pub fn new(url: Url) -> Self {
        HttpGrant { url, methods: Self::default_methods() }
    }

    fn default_methods() -> Vec<HttpMethod> {
        vec![HttpMethod::Get]
    }

    fn is_default_methods(methods: &[HttpMethod]) -> bool {
        *methods == [HttpMethod::Get]
    }
}

keyword_enum! {
    pub enum HttpMethod ("HTTP method", "an HTTP method") {
        Get => "GET",
        Head => "HEAD",
        Post => "POST",
        Put => "PUT",
        Patch => "PATCH",
        Delete => "DELETE",
        Options => "OPTIONS",
    }
}

/// Run the plugin periodically rather than on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Schedule {
    pub interval: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Resource limits for one instance; absent means the runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Calls running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}
