//! Which `bronze:host` interfaces a plugin instance gets: the component's
//! actual imports ∩ its manifest ∩ the operator's grant. Anything imported
//! but not granted refuses the plugin (with every missing grant listed);
//! nothing ungranted is ever linked, not even as a trapping stub.

use super::bindings::host::bronze::host as wit;
use super::context::PluginState;
use bronze_bundle::{Capability, Manifest};
use bronze_config::Grants;
use std::collections::BTreeSet;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// The interfaces a component imports, split by who provides them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imports {
    /// `bronze:host` capabilities (without `log`'s implicit grant removed).
    pub capabilities: BTreeSet<Capability>,
    /// Interfaces that only define types (`bronze:host/types`, the
    /// `bronze:plugin/*` record interfaces), by their imported name; they
    /// are linked as empty instances, so importing one with functions fails.
    pub types: Vec<String>,
    /// `wasi:*` interfaces: linked, but with an empty context.
    pub wasi: Vec<String>,
    /// Anything else: nobody provides it, so the component cannot run.
    pub unknown: Vec<String>,
}

impl Imports {
    pub fn of(engine: &Engine, component: &Component) -> Imports {
        let mut imports = Imports::default();
        for (name, _) in component.component_type().imports(engine) {
            if let Some(capability) = Capability::from_interface(name) {
                imports.capabilities.insert(capability);
            } else if is_types_interface(name) {
                imports.types.push(name.to_string());
            } else if name.starts_with("wasi:") {
                imports.wasi.push(name.to_string());
            } else {
                imports.unknown.push(name.to_string());
            }
        }
        imports
    }

    /// Interface names for status displays, like `bronze:host/probe`.
    pub fn names(&self) -> Vec<String> {
        self.capabilities.iter().map(|c| c.interface().to_string()).collect()
    }
}

/// Whether `name` (with or without version) only defines types.
fn is_types_interface(name: &str) -> bool {
    let base = name.split_once('@').map_or(name, |(base, _)| base);
    bronze_bundle::TYPE_ONLY_INTERFACES.contains(&base)
}

/// Checks the imports against the manifest: a component may not import
/// more than its manifest requests, nor anything Bronze does not provide.
pub fn check_manifest(imports: &Imports, manifest: &Manifest) -> Result<(), String> {
    let host_names = imports.capabilities.iter().map(|c| c.interface().to_string());
    let mut problems: Vec<String> = manifest
        .unrequested_imports(host_names.chain(imports.unknown.iter().cloned()))
        .iter()
        .map(ToString::to_string)
        .collect();
    // Other packages are not the manifest's business, but nothing provides them.
    problems.extend(
        imports
            .unknown
            .iter()
            .filter(|name| !name.starts_with(bronze_bundle::HOST_PACKAGE))
            .map(|name| format!("the component imports {name}, which this host does not provide")),
    );
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Every import the grant does not cover, as sentences naming the import
/// and the grant that would allow it. `at` is the instance's config path.
/// With `scoped_may_be_empty` (first-party image plugins, whose
/// `[grants]` cannot name targets known only at boot, like a nocloud seed
/// URL), a scoped capability without targets is linked and denies every
/// use instead.
pub fn missing_grants(imports: &Imports, grants: &Grants, at: &str, scoped_may_be_empty: bool) -> Vec<String> {
    imports
        .capabilities
        .iter()
        .filter(|c| !(c.granted_by(grants) || (scoped_may_be_empty && c.row().scoped)))
        .map(|c| c.missing_grant(at))
        .collect()
}

/// The effective capability set: imports ∩ manifest ∩ grant.
pub fn effective(
    imports: &Imports,
    manifest: &Manifest,
    grants: &Grants,
    scoped_may_be_empty: bool,
) -> BTreeSet<Capability> {
    let requested = manifest.capabilities();
    imports
        .capabilities
        .iter()
        .filter(|c| requested.contains(c) && (c.granted_by(grants) || (scoped_may_be_empty && c.row().scoped)))
        .copied()
        .collect()
}

/// A linker with WASI (empty context), the type-only interfaces the
/// component imports (as empty instances) and exactly `capabilities`.
pub fn linker(
    engine: &Engine,
    capabilities: &BTreeSet<Capability>,
    types: &[String],
) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    for name in types {
        linker.instance(name)?;
    }
    for capability in capabilities {
        match capability {
            Capability::Log => wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            Capability::Config => wit::config::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            Capability::Facts(fact) => match fact {
                bronze_config::Fact::Dmi => wit::facts_dmi::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
                bronze_config::Fact::Links => wit::facts_links::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
                bronze_config::Fact::Cmdline => wit::facts_cmdline::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
                bronze_config::Fact::Time => wit::facts_time::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            },
            Capability::Http => wit::http::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            Capability::Probe => wit::probe::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            Capability::Volumes => wit::volumes::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
        }
    }
    Ok(linker)
}
