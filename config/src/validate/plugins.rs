//! Rules for `machine.plugins`: unique instance ids, HTTP grants that are
//! plain http(s) prefixes, compile limits the compiler can work in.

use std::collections::HashSet;

use crate::schema::{Machine, PluginCompile, Plugins};
use crate::validate::Validation;

pub(super) fn check(plugins: &Plugins, out: &mut Validation) {
    if plugins.allow_unsigned {
        out.warn("machine.plugins.allowUnsigned", "unsigned plugins are accepted");
    }
    if let Some(memory) = plugins.compile.memory_limit
        && memory.as_u64() < PluginCompile::MIN_MEMORY.as_u64()
    {
        out.error(
            "machine.plugins.compile.memoryLimit",
            format!("{memory} is too little: the compiler needs at least {}", PluginCompile::MIN_MEMORY),
        );
    }
    if let Some(cpu) = &plugins.compile.cpu_limit
        && *cpu < PluginCompile::MIN_CPU
    {
        out.error(
            "machine.plugins.compile.cpuLimit",
            format!("{cpu} is too little: at least {}", PluginCompile::MIN_CPU),
        );
    }
    let mut ids = HashSet::new();
    for (i, instance) in plugins.instances.iter().enumerate() {
        let at = format!("machine.plugins.instances[{i}]");
        if !ids.insert(instance.id.as_str()) {
            out.error(
                format!("{at}.id"),
                format!("plugin instance {:?} is defined more than once", instance.id.as_str()),
            );
        }
        for (j, grant) in instance.grants.http.iter().enumerate() {
            let url_at = format!("{at}.grants.http[{j}].url");
            let url = &grant.url;
            if !matches!(url.scheme(), "http" | "https") {
                out.error(url_at.clone(), format!("scheme {:?} is not allowed; expected http or https", url.scheme()));
            }
            if url.query().is_some() || url.fragment().is_some() {
                out.error(url_at, "a grant is a URL prefix and cannot have a query or fragment");
            }
            if grant.methods.is_empty() {
                out.error(format!("{at}.grants.http[{j}].methods"), "must list at least one method");
            }
        }
        if let Some(schedule) = &instance.schedule
            && schedule.interval.is_zero()
        {
            out.error(format!("{at}.schedule.interval"), "must be greater than zero");
        }
    }
}

/// `machine.platform.providers` names instances that exist.
pub(super) fn check_platform(machine: &Machine, out: &mut Validation) {
    for (platform, instance) in &machine.platform.providers {
        if !machine.plugins.instances.iter().any(|i| i.id == *instance) {
            out.error(
                format!("machine.platform.providers.{platform}"),
                format!(
                    "instance {:?} is not defined in machine.plugins.instances; expected the id of a \
                     metadata-provider instance",
                    instance.as_str()
                ),
            );
        }
    }
    if let Some(configurator) = &machine.network.configurator
        && !machine.plugins.instances.iter().any(|i| i.id == configurator.instance)
    {
        out.error(
            "machine.network.configurator.instance",
            format!(
                "instance {:?} is not defined in machine.plugins.instances; expected the id of a \
                 network-configurator instance",
                configurator.instance.as_str()
            ),
        );
    }
}
