//! Encoding a config back to YAML: deterministic (struct field order, maps
//! sorted by key) and minimal (empty and default-valued fields left out).

use crate::schema::MachineConfig;

impl MachineConfig {
    /// The config as a YAML document that decodes back to an equal config.
    pub fn to_yaml(&self) -> String {
        // serde_yaml only fails on byte strings, nested enums, non-scalar
        // map keys or a failing `Serialize` impl; the schema has none.
        serde_yaml::to_string(self).expect("the machine config schema always encodes")
    }
}
