//! The plugin manager: loads installed plugins at start (from the AOT cache
//! when it can), keeps instances in step with the machine config, and
//! installs, upgrades and removes plugins while the node runs.
//!
//! Nothing here blocks the API: loading happens in the background, every
//! compile runs in a worker process under limits ([`super::compiler`]), AOT
//! loads run on niced threads ([`super::background`]), and calls run in
//! their own tasks. The node's own engine cannot compile.

use super::artifact::{load_artifact, load_cached, load_image_artifact, sha256_file};
use super::background::run_niced;
use super::capabilities::{Imports, check_manifest};
use super::compile_worker::{WorkerArgs, WorkerReport};
use super::compiler::{CompileError, CompileLimits, Compiler};
use super::engine::PluginEngine;
use super::facts::Facts;
use super::instance::{Instance, InstanceView};
use super::loaded::{ArmContext, ArtifactSource, LoadedPlugin, arm, prepare};
use super::log::{LogLine, PluginLog};
use super::net::SystemResolver;
use super::outcome::Outcome;
use super::registry::{Entry, Index, Registry, SOURCE_API, SOURCE_IMAGE, WorkFile};
use super::resources::HealthCheckSpec;
use crate::config::LiveConfig;
use crate::state::{Store, Writer};
use bronze_bundle::{MANIFEST_FILE, Manifest, SIGNATURE_FILE, WASM_FILE, sha256_hex};
use bronze_config::{MachineConfig, PluginInstance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use wasmtime::component::Component;

/// Why a plugin operation was refused; each maps to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bundle itself is wrong (manifest, signature, component, world).
    #[error("{0}")]
    Invalid(String),
    /// The bundle is fine but the node's config does not allow it yet.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    NotFound(String),
    /// Compiling it went over the compile worker's limits.
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Internal(String),
}

impl PluginError {
    fn from_compile(id: &str, e: CompileError) -> PluginError {
        match e {
            CompileError::Invalid { reason } => PluginError::Invalid(format!("{id}: {reason}")),
            CompileError::Memory { .. } | CompileError::Cpu { .. } | CompileError::Timeout { .. } => {
                PluginError::Limit(e.to_string())
            }
            CompileError::Worker { .. } => PluginError::Internal(e.to_string()),
        }
    }
}

/// A component a worker just compiled, loaded from its artifact, which is
/// still in the work dir until [`Registry::adopt_artifact`] takes it.
struct Fresh {
    /// Compiled now, or the image's precompiled artifact.
    source: ArtifactSource,
    component: Component,
    artifact: WorkFile,
    report: WorkerReport,
    took: Duration,
}

/// What the image ships for an installed image plugin ([`PluginManager::shipped`]).
enum Shipped {
    /// No artifact for the entry's wasm from an engine like the node's.
    Nothing,
    /// The artifact the entry records: mapped from the image, unhashed.
    Recorded(PathBuf),
    /// An artifact for the entry's wasm from this engine, but not the one
    /// the entry records (its bundle directory in the image).
    Other(PathBuf),
}

/// What an install changed.
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub id: String,
    pub version: String,
    pub previous_version: Option<String>,
    pub sha256: String,
    pub signed_by: Option<String>,
    pub compile_ms: u64,
    pub instances: Vec<String>,
}

/// One installed plugin for `plugins list/status`.
#[derive(Debug, Clone)]
pub struct PluginView {
    pub entry: Entry,
    pub imports: Vec<String>,
    /// "cache", "compiled", or "failed: ..." when it could not be loaded.
    pub artifact: String,
    pub instances: Vec<InstanceView>,
}

struct Slot {
    instance: Arc<Instance>,
    task: AbortHandle,
}

#[derive(Default)]
struct Inner {
    index: Index,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Installed plugins that could not be loaded, and why.
    failed: BTreeMap<String, String>,
    instances: BTreeMap<String, Slot>,
    /// Logs outlive instance re-creation so operators keep the history.
    logs: BTreeMap<String, Arc<PluginLog>>,
}

pub struct PluginManager {
    arm_ctx: ArmContext,
    compiler: Compiler,
    registry: Registry,
    health: Arc<Writer<HealthCheckSpec>>,
    inner: Mutex<Inner>,
    /// One install/remove/reconcile at a time.
    change: Arc<tokio::sync::Mutex<()>>,
    config: watch::Receiver<Option<LiveConfig>>,
    /// Bundles shipped with the image.
    image_plugins: Option<PathBuf>,
    /// Bumped after every reconcile.
    changes: watch::Sender<u64>,
    /// True once the first load is done.
    loaded: watch::Sender<bool>,
}

/// An image plugin's precompiled artifact, next to its `plugin.wasm`.
pub const IMAGE_ARTIFACT: &str = "plugin.cwasm";
/// What the image build's compile worker reported for it, and for which wasm.
pub const IMAGE_ARTIFACT_REPORT: &str = "plugin.cwasm.json";

/// The contents of [`IMAGE_ARTIFACT_REPORT`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageArtifact {
    /// sha256 of the `plugin.wasm` it was compiled from.
    pub wasm_sha256: String,
    pub worker: WorkerReport,
}

/// Instance ids of the image's metadata providers: `platform-aws`, ...
pub const PROVIDER_PREFIX: &str = "platform-";

impl std::fmt::Debug for PluginManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginManager").finish_non_exhaustive()
    }
}

impl PluginManager {
    /// [`Self::open`], then [`Self::load_after`] with nothing to wait for.
    pub fn start(
        root: &Path,
        store: &Store,
        paths: &crate::sysinfo::SystemPaths,
        volumes: Arc<dyn super::volumes::VolumeSource>,
        image_plugins: Option<PathBuf>,
        config: watch::Receiver<Option<LiveConfig>>,
        compiler: Compiler,
    ) -> anyhow::Result<Arc<PluginManager>> {
        let manager = Self::open(root, store, paths, volumes, image_plugins, config, compiler)?;
        manager.load_after(std::future::ready(()));
        Ok(manager)
    }

    /// Opens the plugin store under `root`; nothing is loaded yet.
    /// `compiler` runs every compile.
    pub fn open(
        root: &Path,
        store: &Store,
        paths: &crate::sysinfo::SystemPaths,
        volumes: Arc<dyn super::volumes::VolumeSource>,
        image_plugins: Option<PathBuf>,
        config: watch::Receiver<Option<LiveConfig>>,
        compiler: Compiler,
    ) -> anyhow::Result<Arc<PluginManager>> {
        let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("cannot create the plugin engine: {e:#}"))?;
        let (registry, index) = Registry::open(root)?;
        let facts = Facts::new(store.clone(), paths.sys.clone(), paths.cmdline.clone());
        let manager = Arc::new(PluginManager {
            arm_ctx: ArmContext { engine, facts, resolver: Arc::new(SystemResolver), volumes },
            compiler,
            registry,
            health: Arc::new(store.writer()?),
            inner: Mutex::new(Inner { index, ..Default::default() }),
            change: Arc::new(tokio::sync::Mutex::new(())),
            config,
            image_plugins,
            changes: watch::channel(0).0,
            loaded: watch::channel(false).0,
        });
        Ok(manager)
    }

    /// Loads the installed and image plugins in the background once `ready`
    /// completes and arms the instances once; returns at once. Call it once,
    /// after [`Self::open`] and once the node has read its config: loading
    /// may compile, under that config's limits. PID 1 lets its API and
    /// network start first (loading is CPU work, and a VM may have one
    /// CPU). The change lock is taken here, so an install, a removal or a
    /// config's instances asked for meanwhile wait for the load, as they
    /// would for a running one. After that, [`PluginConfigController`]
    /// follows the config.
    pub fn load_after(self: &Arc<Self>, ready: impl Future<Output = ()> + Send + 'static) {
        // Nothing holds the lock before the first load; should something,
        // the load waits its turn.
        let held = self.change.clone().try_lock_owned().ok();
        let manager = self.clone();
        tokio::spawn(async move {
            let change = match held {
                Some(change) => change,
                None => manager.change.clone().lock_owned().await,
            };
            ready.await;
            manager.load(change).await
        });
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.arm_ctx.engine
    }

    /// Loads the installed plugins and the image's, then arms instances.
    async fn load(self: Arc<Self>, _change: tokio::sync::OwnedMutexGuard<()>) {
        self.load_installed().await;
        if let Some(dir) = self.image_plugins.clone() {
            self.install_image_plugins(&dir).await;
        }
        let current = self.config.borrow().clone();
        self.reconcile(current.as_ref().map(|c| c.config.as_ref()), &[]);
        self.loaded.send_replace(true);
    }

    /// Brings the instances in line with the live config.
    pub async fn reconcile_live(&self) {
        let _change = self.change.lock().await;
        let current = self.config.borrow().clone();
        self.reconcile(current.as_ref().map(|c| c.config.as_ref()), &[]);
    }

    async fn load_installed(&self) {
        let entries: Vec<Entry> = self.inner().index.plugins.values().cloned().collect();
        for entry in entries {
            let id = entry.id.clone();
            match self.load_one(entry).await {
                Ok(plugin) => {
                    tracing::info!(plugin = %id, version = %plugin.entry.version, artifact = plugin.artifact.as_str(), "plugin loaded");
                    let plugin = Arc::new(plugin);
                    let mut inner = self.inner();
                    inner.index.plugins.insert(id.clone(), plugin.entry.clone());
                    inner.plugins.insert(id, plugin);
                }
                Err(e) => {
                    tracing::error!(plugin = %id, error = %e, "cannot load installed plugin");
                    self.inner().failed.insert(id, e);
                }
            }
        }
    }

    /// Loads one installed plugin: from the AOT cache when this engine
    /// wrote a valid artifact for it, else compiled again from the kept
    /// wasm (in a worker, like every compile) and cached again.
    async fn load_one(&self, entry: Entry) -> Result<LoadedPlugin, String> {
        let dir = self.registry.bundle_dir(&entry);
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_bytes =
            std::fs::read(&manifest_path).map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| format!("stored plugin.toml: {e}"))?;
        let engine = self.arm_ctx.engine.clone();
        // The image ships this wasm compiled by this engine, but the entry
        // records another artifact (an older bronzed's engine, or one the
        // node compiled): the image's is adopted and recorded, so this start
        // neither compiles nor checks a cached artifact, and the next maps
        // the image's unhashed.
        if let Shipped::Other(dir) = self.shipped(&entry)
            && let Some(fresh) = self.image_artifact(&entry.id, &dir, &entry.sha256).await
        {
            let imports = self.validate(&manifest, &fresh.component)?;
            let (component, memory_minimum) = (fresh.component.clone(), fresh.report.memory_minimum);
            let entry = self.record_artifact(entry, &fresh);
            return Ok(LoadedPlugin {
                entry,
                manifest,
                component,
                imports,
                artifact: ArtifactSource::Image,
                memory_minimum,
            });
        }
        // Entries older than the recorded memory minimum compile again to learn it.
        let cached = match entry.memory_minimum {
            Some(minimum) if entry.fingerprint == engine.fingerprint() => {
                self.load_compiled(&entry).await?.map(|(component, source)| (component, minimum, source))
            }
            _ => None,
        };
        let (component, memory_minimum, fresh, artifact) = match cached {
            Some((component, minimum, source)) => (component, minimum, None, source),
            None => {
                let wasm = dir.join(WASM_FILE);
                let path = wasm.clone();
                let actual = run_niced("checking the plugin", move || sha256_file(&path))
                    .await?
                    .map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
                if actual != entry.sha256 {
                    return Err(format!("stored {WASM_FILE} does not match its recorded sha256 {}", entry.sha256));
                }
                let fresh = self.compile(&entry.id, &wasm).await.map_err(|e| e.to_string())?;
                (fresh.component.clone(), fresh.report.memory_minimum, Some(fresh), ArtifactSource::Compiled)
            }
        };
        let imports = self.validate(&manifest, &component)?;
        let entry = match fresh {
            Some(fresh) => self.record_artifact(entry, &fresh),
            None => entry,
        };
        Ok(LoadedPlugin { entry, manifest, component, imports, artifact, memory_minimum })
    }

    /// An installed plugin's compiled code without compiling: the image's
    /// own artifact when the image still ships what `entry` was installed
    /// from (mapped unhashed, as on the first boot), else the cache's
    /// (checked against its recorded sha256). `None` (logged) means compile.
    async fn load_compiled(&self, entry: &Entry) -> Result<Option<(Component, ArtifactSource)>, String> {
        let engine = self.arm_ctx.engine.clone();
        if let Shipped::Recorded(path) = self.shipped(entry) {
            return match run_niced("loading the image's artifact", move || load_image_artifact(&engine, &path)).await? {
                Ok(component) => Ok(Some((component, ArtifactSource::Image))),
                Err(e) => {
                    tracing::warn!(plugin = %entry.id, error = %e, "the image's artifact does not load; recompiling");
                    Ok(None)
                }
            };
        }
        let path = self.registry.artifact_path(&entry.sha256, &entry.fingerprint);
        let sha = entry.cwasm_sha256.clone();
        let cached = run_niced("loading the plugin", move || load_cached(&engine, &path, &sha)).await?;
        Ok(cached.map(|component| (component, ArtifactSource::Cache)))
    }

    /// Compiles `input` in a worker under the live config's limits and
    /// loads what it wrote: the one way a component gets compiled (installs,
    /// image plugins, an unusable cache). `id` names the plugin in errors.
    async fn compile(&self, id: &str, input: &Path) -> Result<Fresh, PluginError> {
        let limits = CompileLimits::of(self.config.borrow().as_ref().map(|c| &c.config.machine.plugins.compile));
        let artifact = self.registry.work_file("cwasm");
        let args = WorkerArgs { input: input.to_path_buf(), output: artifact.path().to_path_buf() };
        let started = Instant::now();
        let report = self.compiler.compile(id, &args, limits).await.map_err(|e| PluginError::from_compile(id, e))?;
        let took = started.elapsed();
        let engine = self.arm_ctx.engine.clone();
        if report.fingerprint != engine.fingerprint() {
            return Err(PluginError::Internal(format!(
                "compiling plugin {id}: the worker's engine {} is not the node's {}",
                report.fingerprint,
                engine.fingerprint()
            )));
        }
        let (path, sha) = (artifact.path().to_path_buf(), report.cwasm_sha256.clone());
        let component = run_niced("loading the compiled plugin", move || load_artifact(&engine, &path, &sha))
            .await
            .map_err(PluginError::Internal)?
            .map_err(|e| PluginError::Internal(format!("compiling plugin {id}: the artifact does not load: {e}")))?;
        tracing::info!(plugin = id, ms = took.as_millis() as u64, "plugin compiled in a worker");
        Ok(Fresh { source: ArtifactSource::Compiled, component, artifact, report, took })
    }

    /// Installs the image's bundles that are new or changed. An id an
    /// operator installed is left alone: theirs wins. Image bundles are
    /// trusted as part of the image (no signature, no instance needed).
    async fn install_image_plugins(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::debug!(dir = %dir.display(), "no image plugins");
            return;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        for bundle_dir in dirs {
            let bundle = match bronze_bundle::Bundle::load(&bundle_dir) {
                Ok(bundle) => bundle,
                Err(e) => {
                    tracing::error!(dir = %bundle_dir.display(), error = %e, "unusable image plugin");
                    continue;
                }
            };
            let id = bundle.manifest.id.as_str().to_string();
            let current = self.inner().index.plugins.get(&id).cloned();
            let loaded = |id: &str| self.inner().plugins.get(id).map(|p| p.artifact);
            match &current {
                Some(entry) if entry.source == SOURCE_API => continue,
                // Loaded from this image's own artifact (checked against
                // its report): the same wasm, no need to hash it again.
                Some(_) if loaded(&id) == Some(ArtifactSource::Image) => continue,
                _ => {}
            }
            let sha256 = sha256_hex(&bundle.wasm);
            if current.is_some_and(|entry| entry.sha256 == sha256) && loaded(&id).is_some() {
                continue;
            }
            match self.store_image_plugin(&bundle_dir, bundle, sha256).await {
                Ok(entry) => tracing::info!(plugin = %id, version = %entry.version, "image plugin installed"),
                Err(e) => {
                    tracing::error!(plugin = %id, error = %e, "cannot install image plugin");
                    self.inner().failed.insert(id, e);
                }
            }
        }
    }

    async fn store_image_plugin(
        &self,
        dir: &Path,
        bundle: bronze_bundle::Bundle,
        sha256: String,
    ) -> Result<Entry, String> {
        // The image is read-only: the worker reads the very file loaded here.
        let id = bundle.manifest.id.as_str().to_string();
        let fresh = match self.image_artifact(&id, dir, &sha256).await {
            Some(fresh) => fresh,
            None => self.compile(&id, &dir.join(WASM_FILE)).await.map_err(|e| e.to_string())?,
        };
        let imports = self.validate(&bundle.manifest, &fresh.component)?;
        let engine = &self.arm_ctx.engine;
        let mut entry = new_entry(&bundle.manifest, sha256, None, &bundle.wasm, &fresh.report, engine, SOURCE_IMAGE);
        self.store_bundle(&mut entry, &bundle.manifest_bytes, &[], &bundle.wasm, fresh.artifact.path())
            .map_err(|e| format!("cannot store it: {e}"))?;
        self.swap_in(LoadedPlugin {
            entry: entry.clone(),
            manifest: bundle.manifest,
            component: fresh.component,
            imports,
            artifact: fresh.source,
            memory_minimum: fresh.report.memory_minimum,
        });
        Ok(entry)
    }

    /// The report of the artifact the image ships for plugin `id`'s bundle
    /// in `dir`, if it has a usable one.
    fn shipped_report(id: &str, dir: &Path) -> Option<ImageArtifact> {
        let bytes = std::fs::read(dir.join(IMAGE_ARTIFACT_REPORT)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::warn!(plugin = id, error = %e, "unusable {IMAGE_ARTIFACT_REPORT}: the image's artifact is not used");
                None
            }
        }
    }

    /// What the image ships for image plugin `entry`: its own artifact for
    /// the entry's wasm, made by an engine like this one, and whether that
    /// is the artifact the entry records.
    fn shipped(&self, entry: &Entry) -> Shipped {
        if entry.source != SOURCE_IMAGE {
            return Shipped::Nothing;
        }
        let Some(dir) = self.image_plugins.as_ref().map(|root| root.join(&entry.id)) else {
            return Shipped::Nothing;
        };
        let Some(report) = Self::shipped_report(&entry.id, &dir) else {
            return Shipped::Nothing;
        };
        let fingerprint = self.arm_ctx.engine.fingerprint();
        if report.wasm_sha256 != entry.sha256 || report.worker.fingerprint != fingerprint {
            return Shipped::Nothing;
        }
        if report.worker.cwasm_sha256 == entry.cwasm_sha256 && entry.fingerprint == fingerprint {
            Shipped::Recorded(dir.join(IMAGE_ARTIFACT))
        } else {
            Shipped::Other(dir)
        }
    }

    /// The artifact the image build compiled for an image plugin
    /// (`plugin.cwasm` + `plugin.cwasm.json`, the worker's report), when it
    /// was made for this wasm by an engine like this one: a first boot then
    /// compiles nothing (under emulation a compile takes seconds). Part of
    /// the image, trusted like bronzed; anything off means a compile.
    async fn image_artifact(&self, id: &str, dir: &Path, wasm_sha256: &str) -> Option<Fresh> {
        let report = Self::shipped_report(id, dir)?;
        let engine = self.arm_ctx.engine.clone();
        if report.wasm_sha256 != wasm_sha256 || report.worker.fingerprint != engine.fingerprint() {
            tracing::info!(plugin = id, "the image's precompiled artifact is for another wasm or engine; compiling");
            return None;
        }
        let started = Instant::now();
        // Mapped from the image itself, read-only and as trusted as bronzed:
        // no hashing of megabytes of code on a first boot. The copy goes to
        // the cache under the recorded sha256, which later boots check.
        let source = dir.join(IMAGE_ARTIFACT);
        let artifact = self.registry.work_file("cwasm");
        if let Err(e) = std::fs::copy(&source, artifact.path()) {
            tracing::warn!(plugin = id, error = %e, "cannot copy the image's precompiled artifact; compiling");
            return None;
        }
        match run_niced("loading the image's artifact", move || load_image_artifact(&engine, &source)).await {
            Ok(Ok(component)) => {
                let took = started.elapsed();
                tracing::info!(plugin = id, ms = took.as_millis() as u64, "image plugin loaded precompiled");
                Some(Fresh { source: ArtifactSource::Image, component, artifact, report: report.worker, took })
            }
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(plugin = id, error = %e, "the image's precompiled artifact does not load; compiling");
                None
            }
        }
    }

    /// Moves a recompiled artifact into the cache and records its hash,
    /// engine and memory minimum; returns the updated entry. Failing to
    /// cache it is only logged: the plugin runs, and compiles again next
    /// start.
    fn record_artifact(&self, mut entry: Entry, fresh: &Fresh) -> Entry {
        let fingerprint = self.arm_ctx.engine.fingerprint().to_string();
        let adopted = self.registry.adopt_artifact(fresh.artifact.path(), &entry.sha256, &fingerprint);
        if let Err(e) = adopted {
            tracing::warn!(plugin = %entry.id, error = %e, "cannot cache the recompiled artifact");
            return entry;
        }
        entry.cwasm_sha256 = fresh.report.cwasm_sha256.clone();
        entry.fingerprint = fingerprint;
        entry.memory_minimum = Some(fresh.report.memory_minimum);
        let mut inner = self.inner();
        inner.index.plugins.insert(entry.id.clone(), entry.clone());
        let index = inner.index.clone();
        drop(inner);
        if let Err(e) = self.registry.commit(&index) {
            tracing::warn!(error = %e, "cannot update the plugin index");
        }
        self.registry.collect_garbage(&index);
        entry
    }

    /// Brings instances in line with `config` and the installed plugins:
    /// the config's instances, plus one instance of every metadata
    /// provider shipped in the image ([`PROVIDER_PREFIX`]`<id>`), which runs
    /// with the grants its manifest's `[grants]` asks for, config or not:
    /// first-party providers are part of the image, trusted like bronzed.
    /// The instances named in `fresh` start with no failures (a reinstall).
    fn reconcile(&self, config: Option<&MachineConfig>, fresh: &[String]) {
        // (config path, instance, an image plugin's own instance)
        let mut wanted: Vec<(String, PluginInstance, bool)> = config
            .map(|c| {
                c.machine
                    .plugins
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, instance)| (format!("machine.plugins.instances[{i}]"), instance.clone(), false))
                    .collect()
            })
            .unwrap_or_default();
        let mut inner = self.inner();
        for plugin in inner.plugins.values() {
            let from_image = plugin.entry.source == SOURCE_IMAGE;
            let id = match plugin.manifest.world {
                bronze_bundle::World::MetadataProvider => format!("{PROVIDER_PREFIX}{}", plugin.manifest.id.as_str()),
                // The image's network configurator runs as itself.
                bronze_bundle::World::NetworkConfigurator => plugin.manifest.id.as_str().to_string(),
                _ => continue,
            };
            // An operator's instance of the same id wins.
            if !from_image || wanted.iter().any(|(_, w, _)| w.id.as_str() == id) {
                continue;
            }
            let Ok(instance_id) = id.parse() else { continue };
            let mut instance = PluginInstance::new(instance_id);
            instance.plugin = Some(plugin.manifest.id.clone());
            instance.grants = plugin.manifest.grants.clone().unwrap_or_default();
            wanted.push((format!("the [grants] of image plugin {}", plugin.manifest.id.as_str()), instance, true));
        }
        let keep: Vec<String> = wanted.iter().map(|(_, i, _)| i.id.as_str().to_string()).collect();
        let gone: Vec<String> = inner.instances.keys().filter(|id| !keep.contains(id)).cloned().collect();
        for id in gone {
            if let Some(slot) = inner.instances.remove(&id) {
                slot.task.abort();
                slot.instance.disarm(None, true);
                tracing::info!(instance = %id, "plugin instance removed");
            }
        }
        for (at, wanted, image_instance) in wanted {
            let id = wanted.id.as_str().to_string();
            let plugin_id = wanted.plugin_id().as_str().to_string();
            let stale = inner.instances.get(&id).is_some_and(|slot| slot.instance.plugin_id != plugin_id);
            if stale && let Some(slot) = inner.instances.remove(&id) {
                slot.task.abort();
                slot.instance.disarm(None, true);
            }
            if !inner.instances.contains_key(&id) {
                let log = inner.logs.entry(id.clone()).or_insert_with(|| PluginLog::new(&id)).clone();
                let instance = Instance::new(&id, &plugin_id, self.arm_ctx.engine.clone(), self.health.clone(), log);
                let task = tokio::spawn(instance.clone().schedule_loop()).abort_handle();
                inner.instances.insert(id.clone(), Slot { instance, task });
            }
            let instance = inner.instances[&id].instance.clone();
            if !wanted.enabled {
                instance.disarm(None, true);
                continue;
            }
            let Some(plugin) = inner.plugins.get(&plugin_id).cloned() else {
                let reason = match inner.failed.get(&plugin_id) {
                    Some(e) => format!("plugin {plugin_id} failed to load: {e}"),
                    None => format!("plugin {plugin_id} is not installed"),
                };
                instance.disarm(Some(reason), false);
                continue;
            };
            if let Err(reason) = signature_policy(&plugin.entry, config) {
                instance.disarm(Some(reason), false);
                continue;
            }
            match arm(&self.arm_ctx, plugin, &wanted, &at, instance.log.clone(), image_instance) {
                Ok((armed, concurrency)) => instance.arm(armed, concurrency, fresh.contains(&id)),
                Err(reason) => {
                    tracing::warn!(instance = %id, %reason, "plugin instance refused");
                    instance.disarm(Some(reason), false);
                }
            }
        }
        drop(inner);
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Follows changes of the instance set (installs, removals, config
    /// changes, loading done): the value is a generation counter.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the installed and image plugins have been loaded once.
    pub fn loaded(&self) -> watch::Receiver<bool> {
        self.loaded.subscribe()
    }

    /// An instance by id.
    pub fn instance(&self, id: &str) -> Option<Arc<Instance>> {
        self.inner().instances.get(id).map(|slot| slot.instance.clone())
    }

    /// Every armed metadata-provider instance shipped in the image, as
    /// (platform name = plugin id, instance), sorted by platform.
    pub fn image_providers(&self) -> Vec<(String, Arc<Instance>)> {
        let inner = self.inner();
        inner
            .instances
            .iter()
            .filter_map(|(id, slot)| {
                let platform = id.strip_prefix(PROVIDER_PREFIX)?;
                (slot.instance.plugin_id == platform && slot.instance.is_armed())
                    .then(|| (platform.to_string(), slot.instance.clone()))
            })
            .collect()
    }

    /// The armed network-configurator instance shipped in the image with
    /// plugin id `id` (`network-cloudinit`), if any.
    pub fn image_configurator(&self, id: &str) -> Option<Arc<Instance>> {
        let inner = self.inner();
        let slot = inner.instances.get(id)?;
        let plugin = inner.plugins.get(id)?;
        (plugin.entry.source == SOURCE_IMAGE
            && plugin.manifest.world == bronze_bundle::World::NetworkConfigurator
            && slot.instance.is_armed())
        .then(|| slot.instance.clone())
    }

    /// Validates a bundle completely, then stores it and swaps it in. A
    /// refused bundle leaves nothing behind.
    pub async fn install(
        &self,
        manifest_bytes: Vec<u8>,
        signature: Vec<u8>,
        wasm: Vec<u8>,
    ) -> Result<InstallReport, PluginError> {
        let _change = self.change.lock().await;
        let live = self.config.borrow().clone();
        let Some(live) = live else {
            return Err(PluginError::Precondition("the node has no machine config yet".into()));
        };
        let settings = &live.config.machine.plugins;
        let sha256 = sha256_hex(&wasm);
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| PluginError::Invalid(format!("{e}")))?;
        let id = manifest.id.as_str().to_string();
        let signed_by = if signature.is_empty() {
            if !settings.allow_unsigned {
                return Err(PluginError::Invalid(format!(
                    "{id}: the bundle is unsigned and machine.plugins.allowUnsigned is false; sign it with `bronzectl plugins sign` using a key listed in machine.plugins.trustedKeys"
                )));
            }
            None
        } else {
            let key = bronze_bundle::verify(&wasm, &manifest_bytes, &signature, &settings.trusted_keys)
                .map_err(|e| PluginError::Invalid(format!("{id}: plugin.sig: {e}")))?;
            Some(key.to_string())
        };
        let instances: Vec<(usize, PluginInstance)> = settings
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| i.plugin_id().as_str() == id)
            .map(|(n, i)| (n, i.clone()))
            .collect();
        if instances.is_empty() {
            return Err(PluginError::Precondition(format!(
                "no entry in machine.plugins.instances runs plugin {id}: add one (with id: {id}, or plugin: {id}) and its grants, apply the config, then install"
            )));
        }

        let upload = self.registry.work_file("wasm");
        std::fs::write(upload.path(), &wasm)
            .map_err(|e| PluginError::Internal(format!("cannot stage plugin {id} for compiling: {e}")))?;
        let fresh = self.compile(&id, upload.path()).await?;
        drop(upload);
        let imports =
            self.validate(&manifest, &fresh.component).map_err(|e| PluginError::Invalid(format!("{id}: {e}")))?;
        let engine = &self.arm_ctx.engine;

        let entry = new_entry(&manifest, sha256.clone(), signed_by.clone(), &wasm, &fresh.report, engine, SOURCE_API);
        let plugin = Arc::new(LoadedPlugin {
            entry: entry.clone(),
            manifest,
            component: fresh.component.clone(),
            imports,
            artifact: ArtifactSource::Compiled,
            memory_minimum: fresh.report.memory_minimum,
        });
        // Every enabled instance must accept it before anything is stored.
        let mut problems = Vec::new();
        for (index, instance) in instances.iter().filter(|(_, i)| i.enabled) {
            let at = format!("machine.plugins.instances[{index}]");
            if let Err(e) = arm(&self.arm_ctx, plugin.clone(), instance, &at, PluginLog::new("validation"), false) {
                problems.push(format!("instance {}: {e}", instance.id.as_str()));
            }
        }
        if !problems.is_empty() {
            return Err(PluginError::Precondition(format!("{id}: {}", problems.join("; "))));
        }

        let mut entry = entry;
        let stored = self.store_bundle(&mut entry, &manifest_bytes, &signature, &wasm, fresh.artifact.path());
        stored.map_err(|e| PluginError::Internal(format!("cannot store plugin {id}: {e}")))?;
        let (previous, index) = self.swap_in(LoadedPlugin {
            entry,
            manifest: plugin.manifest.clone(),
            component: fresh.component,
            imports: plugin.imports.clone(),
            artifact: ArtifactSource::Compiled,
            memory_minimum: fresh.report.memory_minimum,
        });
        let previous = previous.map(|e| e.version);
        // A reinstall clears its instances' failures as they are armed.
        let names: Vec<String> = instances.iter().map(|(_, i)| i.id.as_str().to_string()).collect();
        self.reconcile(Some(live.config.as_ref()), &names);
        tracing::info!(plugin = %id, version = %index.plugins[&id].version, previous = ?previous, "plugin installed");
        Ok(InstallReport {
            id: id.clone(),
            version: index.plugins[&id].version.clone(),
            previous_version: previous,
            sha256,
            signed_by,
            compile_ms: fresh.took.as_millis() as u64,
            instances: names,
        })
    }

    /// The one bundle-validation pipeline, after a compile or a cache load:
    /// the component imports nothing its manifest does not request and
    /// nothing this host lacks, and it implements the manifest's world
    /// when linked with everything it imports.
    fn validate(&self, manifest: &Manifest, component: &Component) -> Result<Imports, String> {
        let engine = &self.arm_ctx.engine;
        let imports = Imports::of(engine.engine(), component);
        check_manifest(&imports, manifest)?;
        prepare(engine, component, manifest.world, &imports.capabilities, &imports.types)?;
        Ok(imports)
    }

    /// Makes a validated, stored plugin the one that runs under its id;
    /// returns the entry it replaced and the new index.
    fn swap_in(&self, plugin: LoadedPlugin) -> (Option<Entry>, Index) {
        let id = plugin.entry.id.clone();
        let (previous, index) = {
            let mut inner = self.inner();
            inner.failed.remove(&id);
            let previous = inner.index.plugins.insert(id.clone(), plugin.entry.clone());
            inner.plugins.insert(id, Arc::new(plugin));
            (previous, inner.index.clone())
        };
        self.registry.collect_garbage(&index);
        (previous, index)
    }

    /// Writes the bundle files, moves the worker's artifact into the cache,
    /// then commits the index.
    fn store_bundle(
        &self,
        entry: &mut Entry,
        manifest: &[u8],
        signature: &[u8],
        wasm: &[u8],
        artifact: &Path,
    ) -> std::io::Result<()> {
        let (manifest_sha256, signature_sha256) = (sha256_hex(manifest), sha256_hex(signature));
        let mut files: Vec<(&str, &[u8], &str)> =
            vec![(WASM_FILE, wasm, &entry.sha256), (MANIFEST_FILE, manifest, &manifest_sha256)];
        if !signature.is_empty() {
            files.push((SIGNATURE_FILE, signature, &signature_sha256));
        }
        entry.dir = self.registry.write_bundle(&entry.id, &files)?;
        self.registry.adopt_artifact(artifact, &entry.sha256, &entry.fingerprint)?;
        let mut index = self.inner().index.clone();
        index.plugins.insert(entry.id.clone(), entry.clone());
        self.registry.commit(&index)
    }

    /// Uninstalls `id`; its instances stop and their checks disappear.
    pub async fn remove(&self, id: &str) -> Result<Entry, PluginError> {
        let _change = self.change.lock().await;
        let mut index = self.inner().index.clone();
        let Some(entry) = index.plugins.remove(id) else {
            return Err(PluginError::NotFound(format!("plugin {id} is not installed")));
        };
        self.registry.commit(&index).map_err(|e| PluginError::Internal(format!("cannot update the index: {e}")))?;
        {
            let mut inner = self.inner();
            inner.index = index.clone();
            inner.plugins.remove(id);
            inner.failed.remove(id);
        }
        self.registry.collect_garbage(&index);
        let live = self.config.borrow().clone();
        self.reconcile(live.as_ref().map(|c| c.config.as_ref()), &[]);
        tracing::info!(plugin = %id, version = %entry.version, "plugin removed");
        Ok(entry)
    }

    pub fn list(&self) -> Vec<PluginView> {
        let inner = self.inner();
        inner
            .index
            .plugins
            .values()
            .map(|entry| {
                let (imports, artifact) = match (inner.plugins.get(&entry.id), inner.failed.get(&entry.id)) {
                    (Some(p), _) => (p.imports.names(), p.artifact.as_str().to_string()),
                    (None, Some(e)) => (vec![], format!("failed: {e}")),
                    (None, None) => (vec![], "loading".to_string()),
                };
                PluginView {
                    entry: entry.clone(),
                    imports,
                    artifact,
                    instances: inner
                        .instances
                        .values()
                        .filter(|s| s.instance.plugin_id == entry.id)
                        .map(|s| s.instance.view())
                        .collect(),
                }
            })
            .collect()
    }

    /// One plugin and the recent log of its instances.
    pub fn status(&self, id: &str) -> Result<(PluginView, Vec<(String, LogLine)>), PluginError> {
        let view = self
            .list()
            .into_iter()
            .find(|p| p.entry.id == id)
            .ok_or_else(|| PluginError::NotFound(format!("plugin {id} is not installed")))?;
        let inner = self.inner();
        let mut log: Vec<(String, LogLine)> = view
            .instances
            .iter()
            .filter_map(|i| inner.logs.get(&i.id).map(|l| (i.id.clone(), l.lines())))
            .flat_map(|(instance, lines)| lines.into_iter().map(move |line| (instance.clone(), line)))
            .collect();
        log.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        Ok((view, log))
    }

    /// Calls an instance once now (clearing quarantine). `id` is an
    /// instance id, or a plugin id that has exactly one instance.
    pub async fn run(&self, id: &str) -> Result<(String, Outcome, Option<serde_json::Value>), PluginError> {
        let instance = {
            let inner = self.inner();
            match inner.instances.get(id) {
                Some(slot) => slot.instance.clone(),
                None => {
                    let of_plugin: Vec<&Slot> =
                        inner.instances.values().filter(|s| s.instance.plugin_id == id).collect();
                    match of_plugin.as_slice() {
                        [one] => one.instance.clone(),
                        [] => return Err(PluginError::NotFound(format!("no plugin instance {id}"))),
                        many => {
                            let ids: Vec<&str> = many.iter().map(|s| s.instance.id.as_str()).collect();
                            return Err(PluginError::Invalid(format!(
                                "plugin {id} has several instances ({}); name one",
                                ids.join(", ")
                            )));
                        }
                    }
                }
            }
        };
        if !instance.is_armed() {
            let view = instance.view();
            return Err(PluginError::Precondition(format!("instance {} cannot run: {}", view.id, view.reason)));
        }
        match instance.run_json().await {
            Some((outcome, result)) => Ok((instance.id.clone(), outcome, result)),
            None => Err(PluginError::Precondition(format!("instance {} cannot run now", instance.id))),
        }
    }

    /// Stops every schedule (shutdown). Calls in flight end by their deadline.
    pub fn stop(&self) {
        let mut inner = self.inner();
        for (_, slot) in std::mem::take(&mut inner.instances) {
            slot.task.abort();
        }
    }

    /// Brings back the instances [`Self::stop`] took down, from the live
    /// config: a power-off or reboot that failed leaves the node up, and
    /// its checks must run again without waiting for a config change.
    pub async fn resume(&self) {
        self.reconcile_live().await;
    }
}

/// Follows the live config: arms, re-arms and removes instances on every
/// change, once the first load is done.
pub struct PluginConfigController {
    pub manager: Arc<PluginManager>,
}

impl crate::controllers::Controller for PluginConfigController {
    fn name(&self) -> &'static str {
        "plugin-config"
    }

    fn run(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> futures::future::BoxFuture<'static, Result<(), crate::controllers::ControllerError>> {
        Box::pin(async move {
            let mut loaded = self.manager.loaded();
            tokio::select! {
                _ = loaded.wait_for(|l| *l) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            let mut config = self.manager.config.clone();
            loop {
                config.borrow_and_update();
                self.manager.reconcile_live().await;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    changed = config.changed() => if changed.is_err() { return Ok(()) },
                }
            }
        })
    }
}

/// Whether the config's signing policy still allows an installed plugin:
/// keys can be revoked and `allowUnsigned` turned off after an install.
/// Image plugins are trusted as part of the image.
fn signature_policy(entry: &Entry, config: Option<&MachineConfig>) -> Result<(), String> {
    let Some(config) = config else { return Ok(()) };
    let settings = &config.machine.plugins;
    match &entry.signed_by {
        _ if entry.source == SOURCE_IMAGE => Ok(()),
        None if settings.allow_unsigned => Ok(()),
        None => Err(format!(
            "plugin {} is unsigned and machine.plugins.allowUnsigned is now false; reinstall it signed",
            entry.id
        )),
        Some(key) if settings.trusted_keys.iter().any(|k| k.to_string() == *key) => Ok(()),
        Some(key) => {
            Err(format!("plugin {} was signed by {key}, which is no longer in machine.plugins.trustedKeys", entry.id))
        }
    }
}

/// The index entry of a bundle about to be stored (`dir` is set when it is).
fn new_entry(
    manifest: &Manifest,
    sha256: String,
    signed_by: Option<String>,
    wasm: &[u8],
    compiled: &WorkerReport,
    engine: &PluginEngine,
    source: &str,
) -> Entry {
    Entry {
        id: manifest.id.as_str().to_string(),
        version: manifest.version.to_string(),
        world: manifest.world.as_str().to_string(),
        sha256,
        signed_by,
        installed_at: crate::state::now_rfc3339(),
        dir: String::new(),
        wasm_bytes: wasm.len() as u64,
        cwasm_sha256: compiled.cwasm_sha256.clone(),
        fingerprint: engine.fingerprint().to_string(),
        memory_minimum: Some(compiled.memory_minimum),
        source: source.to_string(),
    }
}
