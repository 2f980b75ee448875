//! The machine config schema: plain serde structs, decoded strictly
//! (unknown keys are errors) with camelCase keys. Optional sections default
//! to empty and are left out of the encoding when they hold their defaults.

mod api;
mod kernel;
mod logging;
mod metrics;
mod network;
mod platform;
mod plugins;
mod services;
mod time;
mod upgrade;

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use api::{Api, Ca, CertSan};
pub use kernel::{Kernel, KernelModule};
pub use logging::{LogLevel, Logging};
pub use metrics::Metrics;
pub use network::{
    Bond, BondMode, Configurator, DhcpOptions, Interface, LacpRate, Network, Route, Selector, Vlan, XmitHashPolicy,
};
pub use platform::PlatformSettings;
pub use plugins::{Fact, Grants, HttpGrant, HttpMethod, Limits, PluginCompile, PluginInstance, Plugins, Schedule};
pub use services::{Health, Resources, RestartPolicy, Service};
pub use time::Time;
pub use upgrade::Upgrade;

use crate::types::serde_util::{is_default, nullable};
use crate::types::{Hostname, SysctlKey, UniqueMap};

/// One machine config document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct MachineConfig {
    pub version: Version,
    pub machine: Machine,
}

impl MachineConfig {
    pub fn new(machine: Machine) -> Self {
        MachineConfig { version: Version::V1Alpha1, machine }
    }
}

/// The schema version. Only `v1alpha1` exists; anything else is refused
/// rather than guessed at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Version {
    #[default]
    V1Alpha1,
}

impl Version {
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V1Alpha1 => "v1alpha1",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

struct VersionVisitor;

impl Visitor<'_> for VersionVisitor {
    type Value = Version;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the schema version v1alpha1")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Version, E> {
        match v {
            "v1alpha1" => Ok(Version::V1Alpha1),
            other => Err(E::custom(format!("unsupported version {other:?}, expected v1alpha1"))),
        }
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(VersionVisitor)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Everything about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Machine {
    /// Absent: the node keeps the hostname it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    pub api: Api,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub time: Time,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub kernel: Kernel,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "UniqueMap::is_empty")]
    pub sysctls: UniqueMap<SysctlKey, String>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub network: Network,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub plugins: Plugins,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub platform: PlatformSettings,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub logging: Logging,
    /// Absent: no metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub upgrade: Upgrade,
}

impl Machine {
    /// A machine with only the API set; everything else at its default.
    pub fn new(api: Api) -> Self {
        Machine {
            hostname: None,
            api,
            time: Time::default(),
            kernel: Kernel::default(),
            sysctls: UniqueMap::new(),
            network: Network::default(),
            services: Vec::new(),
            plugins: Plugins::default(),
            platform: PlatformSettings::default(),
            logging: Logging::default(),
            metrics: None,
            upgrade: Upgrade::default(),
        }
    }
}
