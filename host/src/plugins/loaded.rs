//! An installed plugin in memory (manifest + compiled component + its
//! imports), and arming an instance of it against the operator's grants.

use super::call::CallLimits;
use super::capabilities::{Imports, effective, linker, missing_grants};
use super::context::InstanceContext;
use super::engine::PluginEngine;
use super::facts::Facts;
use super::instance::Armed;
use super::log::PluginLog;
use super::net::{HttpPolicy, ProbePolicy, Resolver};
use super::registry::Entry;
use super::worlds::Prepared;
use bronze_bundle::{Capability, Manifest, World};
use bronze_config::PluginInstance;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;

/// Memory a plugin gets when neither it nor the operator says.
pub const DEFAULT_MEMORY: u64 = 32 << 20;
/// No plugin gets more, whatever it asks for.
pub const MAX_MEMORY: u64 = 1 << 30;
/// Per-call deadline when neither the plugin nor the operator says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the compiled code came from, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Loaded from the AOT cache.
    Cache,
    /// Compiled now (install, or the cache was missing or unusable).
    Compiled,
    /// Precompiled when the image was built (an image plugin's first load).
    Image,
}

impl ArtifactSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactSource::Cache => "cache",
            ArtifactSource::Compiled => "compiled",
            ArtifactSource::Image => "image",
        }
    }
}

pub struct LoadedPlugin {
    pub entry: Entry,
    pub manifest: Manifest,
    pub component: Component,
    pub imports: Imports,
    pub artifact: ArtifactSource,
    /// Bytes of memory the component needs to start (its largest initial
    /// memory); an instance whose limit is lower is refused.
    pub memory_minimum: u64,
}

/// Shared inputs for arming instances.
#[derive(Clone)]
pub struct ArmContext {
    pub engine: PluginEngine,
    pub facts: Facts,
    pub resolver: Arc<dyn Resolver>,
    pub volumes: Arc<dyn super::volumes::VolumeSource>,
}

/// Links `plugin` for `instance` (its grants, config and limits). Errors
/// are sentences naming the config path; the instance is then refused.
pub fn arm(
    ctx: &ArmContext,
    plugin: Arc<LoadedPlugin>,
    instance: &PluginInstance,
    at: &str,
    log: Arc<PluginLog>,
    image_instance: bool,
) -> Result<(Armed, u32), String> {
    let manifest = &plugin.manifest;
    // An image plugin's own instance (armed with its manifest's `[grants]`)
    // may leave a scoped capability without targets: denied at run time.
    let mut problems = missing_grants(&plugin.imports, &instance.grants, at, image_instance);
    let config = instance.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Err(config_problems) = manifest.check_config(&config) {
        problems.extend(config_problems.into_iter().map(|p| format!("{at}.config: {p}")));
    }
    let (memory, memory_from) = match (instance.limits.memory, manifest.limits.memory) {
        (Some(memory), _) => (memory.as_u64(), format!("{at}.limits.memory")),
        (None, Some(memory)) => (memory.as_u64(), "[limits] memory in plugin.toml".to_string()),
        (None, None) => (DEFAULT_MEMORY, "the default".to_string()),
    };
    let memory = memory.min(MAX_MEMORY);
    if plugin.memory_minimum > memory {
        // Wasmtime would refuse every call at instantiation; say it once.
        problems.push(format!(
            "{at}.limits.memory: plugin {} needs {} of memory to start (its largest initial memory), more than this instance's limit of {} (from {memory_from}{})",
            manifest.id.as_str(),
            bytes(plugin.memory_minimum),
            bytes(memory),
            if plugin.memory_minimum > MAX_MEMORY { "; no plugin gets more than 1 GiB" } else { "" },
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let capabilities = effective(&plugin.imports, manifest, &instance.grants, image_instance);
    let prepared = prepare(&ctx.engine, &plugin.component, manifest.world, &capabilities, &plugin.imports.types)?;
    let granted_config = capabilities.contains(&Capability::Config);
    let cx = InstanceContext {
        instance: instance.id.as_str().to_string(),
        plugin: manifest.id.as_str().to_string(),
        config: if granted_config { manifest.effective_config(&config) } else { Default::default() },
        http: HttpPolicy::new(&instance.grants.http),
        probe: ProbePolicy::new(&instance.grants.probe),
        facts: ctx.facts.clone(),
        log,
        resolver: ctx.resolver.clone(),
        volumes: super::volumes::VolumeAccess {
            source: ctx.volumes.clone(),
            labels: if capabilities.contains(&Capability::Volumes) {
                instance.grants.volumes.iter().map(|l| l.as_str().to_string()).collect()
            } else {
                Vec::new()
            },
        },
    };
    let timeout = instance
        .schedule
        .as_ref()
        .and_then(|s| s.timeout.as_ref())
        .or(instance.limits.timeout.as_ref())
        .or(manifest.limits.timeout.as_ref())
        .map_or(DEFAULT_TIMEOUT, |d| d.as_std());
    let concurrency = instance.limits.concurrency.or(manifest.limits.concurrency).unwrap_or(1);
    let interval = match manifest.world {
        World::HealthCheck => instance.schedule.as_ref().map(|s| s.interval.as_std()),
        // Providers and configurators are called on demand until the
        // controllers that use them exist.
        _ => None,
    };
    let armed = Armed {
        plugin,
        prepared: Arc::new(prepared),
        cx: Arc::new(cx),
        limits: CallLimits { memory: memory as usize, timeout },
        capabilities,
        interval,
    };
    Ok((armed, concurrency))
}

/// `n` bytes for people: in MiB when that is exact.
pub fn bytes(n: u64) -> String {
    if n > 0 && n.is_multiple_of(1 << 20) { format!("{} MiB", n >> 20) } else { format!("{n} bytes") }
}

/// Links a component with exactly `capabilities` and checks that it
/// exports what `world` requires.
pub fn prepare(
    engine: &PluginEngine,
    component: &Component,
    world: World,
    capabilities: &std::collections::BTreeSet<Capability>,
    types: &[String],
) -> Result<Prepared, String> {
    let linker = linker(engine.engine(), capabilities, types).map_err(|e| format!("cannot build the linker: {e:#}"))?;
    let pre = linker.instantiate_pre(component).map_err(|e| format!("cannot link the component: {e:#}"))?;
    super::worlds::link(world, pre).map_err(|e| {
        format!("plugin.toml says world {} but the component does not implement it: {e:#}", world.as_str())
    })
}
