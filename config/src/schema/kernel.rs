//! `machine.kernel`: kernel modules to load at boot.

use serde::{Deserialize, Serialize};

use crate::types::ModuleName;
use crate::types::serde_util::nullable;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Kernel {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<KernelModule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct KernelModule {
    pub name: ModuleName,
    /// Passed to the module as given, e.g. `debug=1`.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}
