//! `machine.upgrade`: who may sign the system this node upgrades to. An
//! upgrade bundle (kernel, initramfs, a manifest of their digests) is
//! installed only with an Ed25519 signature by one of these keys; with none
//! listed, the node refuses every upgrade. Separate from the plugin keys: the
//! key that may change the operating system is not the one that may add a
//! sandboxed plugin.

use serde::{Deserialize, Serialize};

use crate::types::TrustedKey;
use crate::types::serde_util::nullable;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Upgrade {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<TrustedKey>,
}
