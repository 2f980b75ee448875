//! Cross-field rules a single value's type cannot express (poll bounds,
//! dependency cycles, duplicate names...). Errors refuse a config;
//! warnings accept it and are reported to the operator.

mod api;
mod metrics;
mod network;
mod plugins;
mod services;
mod time;

use crate::decode::decode;
use crate::error::{ConfigError, Issue};
use crate::schema::MachineConfig;

/// What `validate` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl Validation {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Issue::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Issue::new(path, message));
    }
}

/// A decoded config that passed validation, with the warnings it raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: MachineConfig,
    pub warnings: Vec<Issue>,
}

/// Checks the rules that span fields of a decoded config.
pub fn validate(cfg: &MachineConfig) -> Validation {
    let mut out = Validation::default();
    let machine = &cfg.machine;
    if machine.hostname.is_none() {
        out.warn("machine.hostname", "no hostname: the node keeps its current one");
    }
    api::check(&machine.api, &mut out);
    time::check(&machine.time, &mut out);
    network::check(&machine.network, &mut out);
    services::check(machine, &mut out);
    plugins::check(&machine.plugins, &mut out);
    plugins::check_platform(machine, &mut out);
    metrics::check(machine.metrics.as_ref(), &mut out);
    out
}

/// Decodes and validates; any validation error refuses the config.
pub fn load(bytes: &[u8]) -> Result<Loaded, ConfigError> {
    let config = decode(bytes)?;
    let Validation { errors, warnings } = validate(&config);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    Ok(Loaded { config, warnings })
}
