//! Kernel modules: find them under `<root>/lib/modules/<release>`, work out
//! a load order (dependencies first, each once), and load them with
//! `finit_module` through a [`ModuleLoader`].
//!
//! Dependencies come from `modules.dep` when the image ships one (depmod's
//! output, or a hand-written file of the same format), else from each
//! module's own `.modinfo` ELF section (`depends=`, `softdep=`), read with
//! the small parser in [`super::elf`] — the Debian kernel package ships no
//! modules.dep and the image has no depmod. Soft dependencies (ext4's
//! `pre: crc32c`) are loaded when present and skipped when not. Names treat
//! `-` and `_` alike, as the kernel does; a name that is no file may be an
//! alias (`crc32c` is provided by `crc32c_generic`) or built into the kernel.
//!
//! Planning is pure over a directory tree, so it is tested on temp trees;
//! only [`KernelModuleLoader`] touches the kernel. This module never
//! unloads anything.
//!
//! Besides its boot modules ([`IMAGE_LOAD_ORDER`]) the image ships modules
//! that load on demand ([`IMAGE_ON_DEMAND`]: bonding, 8021q): the network
//! applier asks an [`OnDemandModules`] before it creates a bond or a VLAN,
//! and [`OnDemandLoader`] plans and loads the module here, through the
//! image's `modules.dep`, once per name.

use super::elf;
use super::sys;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// A module to load, with the parameters the machine config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRequest {
    pub name: String,
    /// `key=value` items, passed to the kernel joined by spaces.
    pub parameters: Vec<String>,
}

impl ModuleRequest {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), parameters: Vec::new() }
    }
}

impl From<&bronze_config::KernelModule> for ModuleRequest {
    fn from(m: &bronze_config::KernelModule) -> Self {
        Self { name: m.name.as_str().to_string(), parameters: m.parameters.clone() }
    }
}

/// One `finit_module` call of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep {
    /// Normalised name (`_`, never `-`).
    pub name: String,
    pub path: PathBuf,
    pub parameters: String,
    /// `.ko.xz` / `.ko.zst` / `.ko.gz`: loaded with the kernel's in-kernel
    /// decompression flag.
    pub compressed: bool,
    /// Hard dependencies that are steps of the same plan (built-ins
    /// excluded): if one fails, this step is skipped.
    pub depends: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("cannot read the kernel release from {path}: {error}")]
    Release { path: PathBuf, error: io::Error },
    #[error("cannot read module directory {path}: {error}")]
    Dir { path: PathBuf, error: io::Error },
    #[error("module {name} not found under {dir}{}", .needed_by.as_ref().map(|n| format!(" (needed by {n})")).unwrap_or_default())]
    NotFound { name: String, needed_by: Option<String>, dir: PathBuf },
    #[error("cannot read .modinfo of module {name} ({path}): {reason}")]
    ModInfo { name: String, path: PathBuf, reason: String },
    #[error("module dependency cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("cannot load module {name} ({path}): {error}")]
    Load { name: String, path: PathBuf, error: io::Error },
    #[error("module {name} not loaded: its dependency {dependency} failed to load")]
    DependencyFailed { name: String, dependency: String },
}

/// The kernel's view of a module name: `-` and `_` are the same.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Module file suffixes, and whether the kernel must decompress them.
const SUFFIXES: &[(&str, bool)] = &[(".ko", false), (".ko.xz", true), (".ko.zst", true), (".ko.gz", true)];

/// `(normalised module name, compressed)` of a module file name.
fn module_file_name(file: &str) -> Option<(String, bool)> {
    SUFFIXES.iter().find_map(|(suffix, compressed)| {
        file.strip_suffix(suffix).filter(|stem| !stem.is_empty()).map(|stem| (normalize(stem), *compressed))
    })
}

/// What a module's `.modinfo` says about its relations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
    /// `softdep=pre: a b post: c`: load before / after, if present.
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    pub aliases: Vec<String>,
}

/// Parses a `.modinfo` section: NUL-separated `key=value` strings (padding
/// NULs between them are skipped).
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for item in section.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let item = String::from_utf8_lossy(item);
        let Some((key, value)) = item.split_once('=') else { continue };
        match key {
            "name" => info.name = Some(value.to_string()),
            "depends" => info.depends.extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "softdep" => {
                let (pre, post) = parse_softdep(value);
                info.softdep_pre.extend(pre);
                info.softdep_post.extend(post);
            }
            "alias" => info.aliases.push(value.to_string()),
            _ => {}
        }
    }
    info
}

/// `pre: a b post: c` (either part optional) into normalised names.
fn parse_softdep(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut into: Option<&mut Vec<String>> = None;
    for word in text.split_whitespace() {
        match word {
            "pre:" => into = Some(&mut pre),
            "post:" => into = Some(&mut post),
            name => {
                if let Some(list) = into.as_deref_mut() {
                    list.push(normalize(name));
                }
            }
        }
    }
    (pre, post)
}

/// Reads the `.modinfo` of an uncompressed module file.
pub fn read_modinfo(path: &Path) -> Result<ModInfo, KmodError> {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let name = module_file_name(&file).map(|(n, _)| n).unwrap_or(file);
    let err = |reason: String| KmodError::ModInfo { name: name.clone(), path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    match elf::section(&bytes, ".modinfo") {
        Ok(Some(section)) => Ok(parse_modinfo(section)),
        Ok(None) => Err(err("no .modinfo section".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// `(pre, post)` soft dependencies of one module.
type SoftDeps = (Vec<String>, Vec<String>);

#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    compressed: bool,
    /// From modules.dep; `None`: read `.modinfo`.
    depends: Option<Vec<String>>,
}

/// The modules of one kernel release, indexed by normalised name.
#[derive(Debug)]
pub struct ModuleDir {
    dir: PathBuf,
    modules: BTreeMap<String, Entry>,
    builtin: BTreeSet<String>,
    /// From modules.softdep, when present.
    softdeps: Option<BTreeMap<String, SoftDeps>>,
    /// Exact aliases (no wildcards) → module, from modules.alias or, failing
    /// that, from every module's `.modinfo` (built on first need).
    aliases: OnceLock<BTreeMap<String, String>>,
    from_modules_dep: bool,
}

/// Where a requested name leads.
enum Resolved {
    Module(String),
    Builtin,
    Missing,
}

/// A module's relations as planning needs them.
#[derive(Debug, Clone, Default)]
struct Relations {
    depends: Vec<String>,
    pre: Vec<String>,
    post: Vec<String>,
}

/// The load order for a set of requests, and what could not be planned.
#[derive(Debug, Default)]
pub struct LoadPlan {
    pub steps: Vec<LoadStep>,
    pub errors: Vec<KmodError>,
}

struct PlanState {
    steps: Vec<LoadStep>,
    done: BTreeSet<String>,
    stack: Vec<String>,
    relations: BTreeMap<String, Relations>,
    parameters: BTreeMap<String, String>,
}

impl ModuleDir {
    /// The modules of the running kernel: `<root>/lib/modules/<release>`,
    /// the release read from `<root>/proc/sys/kernel/osrelease`.
    pub fn for_running_kernel(root: &Path) -> Result<Self, KmodError> {
        let path = root.join("proc/sys/kernel/osrelease");
        let release = std::fs::read_to_string(&path).map_err(|error| KmodError::Release { path, error })?;
        Self::open(root, release.trim())
    }

    pub fn open(root: &Path, release: &str) -> Result<Self, KmodError> {
        Self::at(&root.join("lib/modules").join(release))
    }

    /// Indexes `dir` from its modules.dep if there is one, else by walking
    /// it for module files.
    pub fn at(dir: &Path) -> Result<Self, KmodError> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let dir_err = |error| KmodError::Dir { path: dir.to_path_buf(), error };
        let (modules, from_modules_dep) = match read("modules.dep") {
            Some(text) => (parse_modules_dep(dir, &text), true),
            None => {
                let mut files = BTreeMap::new();
                walk(dir, dir, &mut files).map_err(dir_err)?;
                (files, false)
            }
        };
        let builtin = read("modules.builtin")
            .map(|t| t.lines().filter_map(|l| module_file_name(base_name(l.trim()))).map(|(n, _)| n).collect())
            .unwrap_or_default();
        let softdeps = read("modules.softdep").map(|t| parse_softdep_file(&t));
        let aliases = OnceLock::new();
        if let Some(text) = read("modules.alias") {
            let _ = aliases.set(parse_alias_file(&text));
        }
        Ok(Self { dir: dir.to_path_buf(), modules, builtin, softdeps, aliases, from_modules_dep })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether dependencies come from modules.dep rather than `.modinfo`.
    pub fn uses_modules_dep(&self) -> bool {
        self.from_modules_dep
    }

    /// The load order for `requests`: every module after its dependencies,
    /// each once, in request order otherwise. A request that cannot be
    /// planned (missing module, cycle, unreadable `.modinfo`) is left out
    /// whole, with its error, and the others still planned. A dependency's
    /// parameters are those of its own request, if any.
    pub fn plan(&self, requests: &[ModuleRequest]) -> LoadPlan {
        let mut st = PlanState {
            steps: Vec::new(),
            done: BTreeSet::new(),
            stack: Vec::new(),
            relations: BTreeMap::new(),
            // Keyed by the module a name resolves to, so parameters given
            // under an alias reach the module.
            parameters: requests
                .iter()
                .map(|r| (self.step_name(&r.name).unwrap_or_else(|| normalize(&r.name)), r.parameters.join(" ")))
                .collect(),
        };
        let mut errors = Vec::new();
        for r in requests {
            if let Err(e) = self.visit_rolling_back(&normalize(&r.name), None, &mut st) {
                errors.push(e);
            }
        }
        LoadPlan { steps: st.steps, errors }
    }

    /// Visits `name`; on error, undoes whatever the visit added.
    fn visit_rolling_back(&self, name: &str, needed_by: Option<&str>, st: &mut PlanState) -> Result<(), KmodError> {
        let mark = st.steps.len();
        let stack = st.stack.len();
        let result = self.visit(name, needed_by, st);
        if result.is_err() {
            for s in st.steps.drain(mark..) {
                st.done.remove(&s.name);
            }
            st.stack.truncate(stack);
        }
        result
    }

    /// Depth-first: dependencies, soft `pre:`, the module, soft `post:`.
    fn visit(&self, name: &str, needed_by: Option<&str>, st: &mut PlanState) -> Result<(), KmodError> {
        let key = match self.resolve(name) {
            Resolved::Module(key) => key,
            Resolved::Builtin => return Ok(()),
            Resolved::Missing => {
                return Err(KmodError::NotFound {
                    name: name.to_string(),
                    needed_by: needed_by.map(str::to_string),
                    dir: self.dir.clone(),
                });
            }
        };
        if st.done.contains(&key) {
            return Ok(());
        }
        if let Some(at) = st.stack.iter().position(|s| *s == key) {
            let mut cycle = st.stack[at..].to_vec();
            cycle.push(key);
            return Err(KmodError::Cycle { cycle });
        }
        let rel = self.relations(&key, st)?;
        st.stack.push(key.clone());
        for dep in &rel.depends {
            self.visit(dep, Some(&key), st)?;
        }
        for dep in &rel.pre {
            self.visit_soft(dep, &key, st);
        }
        st.stack.pop();
        let Some(entry) = self.modules.get(&key) else {
            return Err(KmodError::NotFound {
                name: key,
                needed_by: needed_by.map(str::to_string),
                dir: self.dir.clone(),
            });
        };
        let depends = rel.depends.iter().filter_map(|d| self.step_name(d)).collect();
        st.done.insert(key.clone());
        st.steps.push(LoadStep {
            parameters: st.parameters.get(&key).cloned().unwrap_or_default(),
            name: key.clone(),
            path: entry.path.clone(),
            compressed: entry.compressed,
            depends,
        });
        for dep in &rel.post {
            self.visit_soft(dep, &key, st);
        }
        Ok(())
    }

    /// A soft dependency: planned if it can be, else skipped with a note.
    fn visit_soft(&self, name: &str, of: &str, st: &mut PlanState) {
        if let Err(e) = self.visit_rolling_back(name, Some(of), st) {
            tracing::debug!(module = of, softdep = name, error = %e, "soft dependency skipped");
        }
    }

    /// The step name a dependency resolves to, if it is a module file.
    fn step_name(&self, name: &str) -> Option<String> {
        match self.resolve(name) {
            Resolved::Module(key) => Some(key),
            Resolved::Builtin | Resolved::Missing => None,
        }
    }

    fn resolve(&self, name: &str) -> Resolved {
        let name = normalize(name);
        if self.modules.contains_key(&name) {
            return Resolved::Module(name);
        }
        if self.builtin.contains(&name) {
            return Resolved::Builtin;
        }
        match self.aliases().get(&name) {
            Some(target) if self.modules.contains_key(target) => Resolved::Module(target.clone()),
            Some(target) if self.builtin.contains(target) => Resolved::Builtin,
            _ => Resolved::Missing,
        }
    }

    /// Exact aliases. Without modules.alias this reads every module's
    /// `.modinfo` once; only reached for a name that is not a file.
    fn aliases(&self) -> &BTreeMap<String, String> {
        self.aliases.get_or_init(|| {
            let mut map = BTreeMap::new();
            for (name, entry) in &self.modules {
                if entry.compressed {
                    continue;
                }
                let Ok(info) = read_modinfo(&entry.path) else { continue };
                for alias in info.aliases.iter().filter(|a| is_exact_alias(a)) {
                    map.entry(normalize(alias)).or_insert_with(|| name.clone());
                }
            }
            map
        })
    }

    fn relations(&self, key: &str, st: &mut PlanState) -> Result<Relations, KmodError> {
        if let Some(rel) = st.relations.get(key) {
            return Ok(rel.clone());
        }
        let Some(entry) = self.modules.get(key) else { return Ok(Relations::default()) };
        let modinfo = || -> Result<ModInfo, KmodError> {
            if entry.compressed {
                return Err(KmodError::ModInfo {
                    name: key.to_string(),
                    path: entry.path.clone(),
                    reason: "compressed module: its dependencies must come from modules.dep".into(),
                });
            }
            read_modinfo(&entry.path).map_err(|e| match e {
                KmodError::ModInfo { path, reason, .. } => KmodError::ModInfo { name: key.to_string(), path, reason },
                other => other,
            })
        };
        let rel = match &entry.depends {
            Some(depends) => {
                let (pre, post) = match &self.softdeps {
                    Some(map) => map.get(key).cloned().unwrap_or_default(),
                    // A hand-written modules.dep without modules.softdep:
                    // soft dependencies are best effort from .modinfo.
                    None => modinfo().map(|i| (i.softdep_pre, i.softdep_post)).unwrap_or_default(),
                };
                Relations { depends: depends.clone(), pre, post }
            }
            None => {
                let info = modinfo()?;
                let (pre, post) = match self.softdeps.as_ref().and_then(|m| m.get(key)) {
                    Some(soft) => soft.clone(),
                    None => (info.softdep_pre, info.softdep_post),
                };
                Relations { depends: info.depends, pre, post }
            }
        };
        st.relations.insert(key.to_string(), rel.clone());
        Ok(rel)
    }
}

/// Device aliases (`pci:v00001AF4d*`) are patterns; only plain names can
/// stand for a module name.
fn is_exact_alias(alias: &str) -> bool {
    !alias.contains(['*', '?', '[', ':'])
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A modules.dep path (relative to the module dir, or absolute
/// `/lib/modules/<release>/...` from old depmod) as a path under `dir`.
fn dep_path(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    match p.strip_prefix("/lib/modules") {
        Ok(rest) => dir.join(rest.components().skip(1).collect::<PathBuf>()),
        Err(_) => dir.join(p.components().filter(|c| matches!(c, Component::Normal(_))).collect::<PathBuf>()),
    }
}

/// `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko ...`
/// Lines that do not parse are skipped.
fn parse_modules_dep(dir: &Path, text: &str) -> BTreeMap<String, Entry> {
    let mut modules = BTreeMap::new();
    for line in text.lines() {
        let Some((module, deps)) = line.split_once(':') else { continue };
        let module = module.trim();
        let Some((name, compressed)) = module_file_name(base_name(module)) else { continue };
        let depends = deps.split_whitespace().filter_map(|d| module_file_name(base_name(d))).map(|(n, _)| n).collect();
        modules.entry(name).or_insert(Entry { path: dep_path(dir, module), compressed, depends: Some(depends) });
    }
    modules
}

/// `softdep ext4 pre: crc32c` lines of modules.softdep.
fn parse_softdep_file(text: &str) -> BTreeMap<String, SoftDeps> {
    let mut map: BTreeMap<String, SoftDeps> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(3, char::is_whitespace);
        let (Some("softdep"), Some(module), Some(rest)) = (words.next(), words.next(), words.next()) else { continue };
        let (pre, post) = parse_softdep(rest);
        let e = map.entry(normalize(module)).or_default();
        e.0.extend(pre);
        e.1.extend(post);
    }
    map
}

/// `alias crc32c crc32c_generic` lines of modules.alias.
fn parse_alias_file(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(alias), Some(module)) = (words.next(), words.next(), words.next())
            && is_exact_alias(alias)
        {
            map.entry(normalize(alias)).or_insert_with(|| normalize(module));
        }
    }
    map
}

/// Collects module files under `path`. Symlinked directories are not
/// followed (`build` and `source` point into kernel sources); on a name
/// clash the first in path order wins, except that `updates/` beats the
/// rest, as depmod does.
fn walk(top: &Path, path: &Path, out: &mut BTreeMap<String, Entry>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(path)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            walk(top, &p, out)?;
            continue;
        }
        let is_file = kind.is_file() || (kind.is_symlink() && p.is_file());
        let Some((name, compressed)) = module_file_name(&e.file_name().to_string_lossy()).filter(|_| is_file) else {
            continue;
        };
        let in_updates = p.strip_prefix(top).is_ok_and(|r| r.starts_with("updates"));
        let entry = Entry { path: p, compressed, depends: None };
        if in_updates {
            out.insert(name, entry);
        } else {
            out.entry(name).or_insert(entry);
        }
    }
    Ok(())
}

/// `finit_module(2)`, so plans run against a fake in tests.
pub trait ModuleLoader: Send + Sync {
    /// Loads one module. `EEXIST` (already loaded) is returned as is; the
    /// caller counts it as success.
    fn load(&self, step: &LoadStep) -> io::Result<()>;
}

/// The kernel's `finit_module`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelModuleLoader;

impl ModuleLoader for KernelModuleLoader {
    fn load(&self, step: &LoadStep) -> io::Result<()> {
        let file = File::open(&step.path)?;
        let params = CString::new(step.parameters.as_str())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "module parameters contain a NUL byte"))?;
        if step.compressed {
            sys::finit_module_compressed(&file, &params)
        } else {
            nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()).map_err(io::Error::from)
        }
    }
}

/// What loading did: planning errors come first in `errors`.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub already_loaded: Vec<String>,
    pub errors: Vec<KmodError>,
    /// How long each `finit_module` call took, in load order: module
    /// loading is most of init's share of the boot, so it is reported.
    pub timings: Vec<(String, std::time::Duration)>,
}

impl LoadReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Runs `plan` in order. A module whose dependency failed is not tried (it
/// would only fail with unknown symbols) but everything else is.
pub fn load_plan(loader: &dyn ModuleLoader, plan: LoadPlan) -> LoadReport {
    let mut report = LoadReport { errors: plan.errors, ..LoadReport::default() };
    let mut failed = BTreeSet::new();
    for step in plan.steps {
        if let Some(dep) = step.depends.iter().find(|d| failed.contains(*d)) {
            report.errors.push(KmodError::DependencyFailed { name: step.name.clone(), dependency: dep.clone() });
            failed.insert(step.name);
            continue;
        }
        let started = std::time::Instant::now();
        let result = loader.load(&step);
        report.timings.push((step.name.clone(), started.elapsed()));
        match result {
            Ok(()) => report.loaded.push(step.name),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => report.already_loaded.push(step.name),
            Err(error) => {
                failed.insert(step.name.clone());
                report.errors.push(KmodError::Load { name: step.name, path: step.path, error });
            }
        }
    }
    report
}

/// Where a Bronze image lists the modules it ships (its boot defaults): one
/// path per line relative to `/lib/modules`, dependencies first.
pub const IMAGE_LOAD_ORDER: &str = "lib/modules/bronze-load-order";

/// The image's boot modules from [`IMAGE_LOAD_ORDER`] under `root`, by
/// name; `None` if the file is absent (not a Bronze image).
pub fn image_boot_modules(root: &Path) -> Option<Vec<ModuleRequest>> {
    let text = std::fs::read_to_string(root.join(IMAGE_LOAD_ORDER)).ok()?;
    Some(
        text.lines()
            .filter_map(|line| module_file_name(base_name(line.trim())))
            .map(|(name, _)| ModuleRequest::new(name))
            .collect(),
    )
}

/// Where a Bronze image lists the modules it ships but does not load at
/// boot, in [`IMAGE_LOAD_ORDER`]'s format (informational: they are planned
/// through `modules.dep` like any module).
pub const IMAGE_ON_DEMAND: &str = "lib/modules/bronze-on-demand";

/// Loads a kernel module (with its dependencies) the first time something
/// needs it. The network applier asks before it creates a bond
/// (`bonding`) or a VLAN (`8021q`); the module's owner is this one.
pub trait OnDemandModules: Send + Sync {
    /// Makes sure module `name` is loaded. Blocks (`finit_module`); call it
    /// off the async threads. Nothing is returned: a module that is not
    /// shipped or fails to load is logged, and whatever needed it then
    /// fails with the kernel's own error.
    fn ensure(&self, name: &str);
}

/// Loads nothing: a process uses the host's modules (the kernel's own
/// `modprobe` autoload), and tests that do not care.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoModules;

impl OnDemandModules for NoModules {
    fn ensure(&self, _name: &str) {}
}

/// PID 1's [`OnDemandModules`]: plans the module for the running kernel of
/// `root` (the image's `modules.dep`, else `.modinfo`) and loads it and its
/// dependencies in order, each name once per bronzed (already loaded and
/// built in count as loaded; a failure is not retried).
pub struct OnDemandLoader {
    root: PathBuf,
    loader: std::sync::Arc<dyn ModuleLoader>,
    asked: std::sync::Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for OnDemandLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemandLoader").field("root", &self.root).finish_non_exhaustive()
    }
}

impl OnDemandLoader {
    pub fn new(root: impl Into<PathBuf>, loader: std::sync::Arc<dyn ModuleLoader>) -> Self {
        Self { root: root.into(), loader, asked: std::sync::Mutex::new(BTreeSet::new()) }
    }

    /// The real kernel's modules under `/`.
    pub fn kernel() -> Self {
        Self::new("/", std::sync::Arc::new(KernelModuleLoader))
    }

    /// Loads `name` unless it was asked for before; `None` then. The lock
    /// is held while loading, so a second caller waits for the first.
    pub fn load_once(&self, name: &str) -> Option<LoadReport> {
        let name = normalize(name);
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if !asked.insert(name.clone()) {
            return None;
        }
        Some(load_modules(self.loader.as_ref(), &self.root, &[ModuleRequest::new(name)]))
    }
}

impl OnDemandModules for OnDemandLoader {
    fn ensure(&self, name: &str) {
        let Some(report) = self.load_once(name) else { return };
        if !report.loaded.is_empty() {
            let ms: f64 = report.timings.iter().map(|(_, t)| t.as_secs_f64() * 1000.0).sum();
            tracing::info!(module = name, loaded = ?report.loaded, ms = format!("{ms:.1}"), "kernel module loaded on demand");
        }
        for e in &report.errors {
            match e {
                KmodError::NotFound { .. } => {
                    tracing::info!(module = name, error = %e, "kernel module not shipped; going on without it")
                }
                _ => tracing::warn!(module = name, error = %e, "kernel module on demand"),
            }
        }
    }
}

/// Loads `requests` (and their dependencies) for the running kernel of
/// `root`. Nothing requested: nothing read, empty report.
pub fn load_modules(loader: &dyn ModuleLoader, root: &Path, requests: &[ModuleRequest]) -> LoadReport {
    if requests.is_empty() {
        return LoadReport::default();
    }
    match ModuleDir::for_running_kernel(root) {
        Ok(dir) => load_plan(loader, dir.plan(requests)),
        Err(e) => LoadReport { errors: vec![e], ..LoadReport::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::elf::tests::elf64;
    use crate::init::fake::RecordingLoader;

    fn modinfo(items: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in items {
            out.extend_from_slice(i.as_bytes());
            out.push(0);
            // Real modules pad items with extra NULs.
            out.push(0);
        }
        out
    }

    /// Writes `<dir>/<rel>` as a tiny module with these `.modinfo` items.
    fn ko(dir: &Path, rel: &str, items: &[&str]) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let info = modinfo(items);
        std::fs::write(path, elf64(&[(".text", b"\xc3"), (".modinfo", &info), (".data", b"\0\0\0\0")])).unwrap();
    }

    /// The 6.1 virtio/ext4 set, laid out like a Debian module tree.
    fn virtio_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let release = "6.1.0-test-amd64";
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(root.path().join("proc/sys/kernel/osrelease"), format!("{release}\n")).unwrap();
        let dir = root.path().join("lib/modules").join(release);
        let k = |rel: &str, items: &[&str]| ko(&dir, rel, items);
        k("kernel/drivers/virtio/virtio_ring.ko", &["name=virtio_ring", "depends="]);
        k("kernel/drivers/virtio/virtio.ko", &["name=virtio", "depends="]);
        k("kernel/drivers/virtio/virtio_pci_modern_dev.ko", &["depends="]);
        k("kernel/drivers/virtio/virtio_pci_legacy_dev.ko", &["depends="]);
        k(
            "kernel/drivers/virtio/virtio_pci.ko",
            &["depends=virtio_pci_modern_dev,virtio_ring,virtio_pci_legacy_dev,virtio", "alias=pci:v00001AF4d*sv*"],
        );
        k("kernel/net/core/failover.ko", &["depends="]);
        k("kernel/drivers/net/net_failover.ko", &["depends=failover"]);
        k("kernel/drivers/net/virtio_net.ko", &["license=GPL", "depends=net_failover,virtio_ring,virtio"]);
        k("kernel/drivers/block/virtio_blk.ko", &["depends=virtio_ring,virtio"]);
        k("kernel/fs/ext4/ext4.ko", &["softdep=pre: crc32c", "depends=mbcache,jbd2,crc16"]);
        k("kernel/fs/mbcache.ko", &["depends="]);
        k("kernel/fs/jbd2/jbd2.ko", &["depends="]);
        k("kernel/lib/crc16.ko", &["depends="]);
        k("kernel/crypto/crc32c_generic.ko", &["alias=crypto-crc32c", "alias=crc32c", "depends="]);
        k("kernel/drivers/misc/dash-mod.ko", &["depends="]);
        k("kernel/drivers/misc/uses_dash.ko", &["depends=dash_mod"]);
        k("kernel/drivers/misc/cycle_a.ko", &["depends=cycle_b"]);
        k("kernel/drivers/misc/cycle_b.ko", &["depends=cycle_c"]);
        k("kernel/drivers/misc/cycle_c.ko", &["depends=cycle_a"]);
        k("kernel/drivers/misc/needs_cycle.ko", &["depends=virtio,cycle_a"]);
        k("kernel/drivers/misc/needs_ghost.ko", &["depends=virtio_ring,ghost"]);
        std::fs::write(dir.join("kernel/drivers/misc/not_a_module.txt"), "x").unwrap();
        std::fs::write(dir.join("kernel/drivers/misc/broken.ko"), "not an elf").unwrap();
        root
    }

    fn names(plan: &LoadPlan) -> Vec<&str> {
        plan.steps.iter().map(|s| s.name.as_str()).collect()
    }

    fn requests(names: &[&str]) -> Vec<ModuleRequest> {
        names.iter().map(|n| ModuleRequest::new(*n)).collect()
    }

    fn open(root: &Path) -> ModuleDir {
        ModuleDir::for_running_kernel(root).unwrap()
    }

    #[test]
    fn modinfo_items_are_split_on_nul() {
        let info = parse_modinfo(&modinfo(&[
            "license=GPL",
            "depends=net-failover,virtio_ring",
            "softdep=pre: crc32c post: fancy-thing",
            "alias=crc32c",
            "name=virtio_net",
            "garbage",
        ]));
        assert_eq!(info.depends, ["net_failover", "virtio_ring"]);
        assert_eq!(info.softdep_pre, ["crc32c"]);
        assert_eq!(info.softdep_post, ["fancy_thing"]);
        assert_eq!(info.aliases, ["crc32c"]);
        assert_eq!(info.name.as_deref(), Some("virtio_net"));
        assert_eq!(parse_modinfo(b"depends=\0"), ModInfo::default());
    }

    #[test]
    fn reads_modinfo_from_an_elf_file() {
        let root = virtio_tree();
        let dir = open(root.path());
        assert!(!dir.uses_modules_dep());
        let info = read_modinfo(&dir.path().join("kernel/drivers/net/virtio_net.ko")).unwrap();
        assert_eq!(info.depends, ["net_failover", "virtio_ring", "virtio"]);
        let err = read_modinfo(&dir.path().join("kernel/drivers/misc/broken.ko")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read .modinfo of module broken ({}): not an ELF file",
                dir.path().join("kernel/drivers/misc/broken.ko").display()
            )
        );
    }

    #[test]
    fn virtio_net_and_blk_load_after_their_dependencies_each_once() {
        let root = virtio_tree();
        let plan = open(root.path()).plan(&requests(&["virtio_net", "virtio_blk", "virtio_pci", "virtio_net"]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            names(&plan),
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci"
            ]
        );
        let net = plan.steps.iter().find(|s| s.name == "virtio_net").unwrap();
        assert_eq!(net.depends, ["net_failover", "virtio_ring", "virtio"]);
        assert!(net.path.ends_with("kernel/drivers/net/virtio_net.ko"));
        assert!(!net.compressed);
    }

    #[test]
    fn ext4_pulls_its_soft_dependency_through_an_alias() {
        let root = virtio_tree();
        let plan = open(root.path()).plan(&requests(&["ext4"]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(names(&plan), ["mbcache", "jbd2", "crc16", "crc32c_generic", "ext4"]);
        // crc32c is a soft dependency, not one that would block ext4.
        assert_eq!(plan.steps[4].depends, ["mbcache", "jbd2", "crc16"]);
    }

    #[test]
    fn dash_and_underscore_are_the_same_name() {
        let root = virtio_tree();
        let plan = open(root.path()).plan(&requests(&["uses-dash", "dash_mod"]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(names(&plan), ["dash_mod", "uses_dash"]);
        assert!(plan.steps[0].path.ends_with("dash-mod.ko"));
    }

    #[test]
    fn a_cycle_is_an_error_naming_it_and_the_rest_still_plans() {
        let root = virtio_tree();
        let plan = open(root.path()).plan(&requests(&["needs_cycle", "virtio_blk"]));
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].to_string(), "module dependency cycle: cycle_a -> cycle_b -> cycle_c -> cycle_a");
        // needs_cycle's partial work (virtio) was rolled back, then planned
        // again for virtio_blk.
        assert_eq!(names(&plan), ["virtio_ring", "virtio", "virtio_blk"]);
    }

    #[test]
    fn missing_modules_name_who_needed_them() {
        let root = virtio_tree();
        let dir = open(root.path());
        let plan = dir.plan(&requests(&["needs_ghost", "nonesuch", "broken"]));
        let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
        let d = dir.path().display();
        assert_eq!(errors[0], format!("module ghost not found under {d} (needed by needs_ghost)"));
        assert_eq!(errors[1], format!("module nonesuch not found under {d}"));
        assert!(errors[2].starts_with("cannot read .modinfo of module broken ("), "{}", errors[2]);
        assert!(plan.steps.is_empty(), "{:?}", names(&plan));
    }

    #[test]
    fn parameters_follow_the_module_even_as_a_dependency() {
        let root = virtio_tree();
        let reqs = vec![
            ModuleRequest::new("virtio_net"),
            ModuleRequest { name: "virtio-ring".into(), parameters: vec!["a=1".into(), "b=x,y".into()] },
        ];
        let plan = open(root.path()).plan(&reqs);
        let ring = plan.steps.iter().find(|s| s.name == "virtio_ring").unwrap();
        assert_eq!(ring.parameters, "a=1 b=x,y");
        assert_eq!(plan.steps.iter().find(|s| s.name == "virtio_net").unwrap().parameters, "");
        // Given under an alias, the parameters still reach the module.
        let plan = open(root.path()).plan(&[ModuleRequest { name: "crc32c".into(), parameters: vec!["p=1".into()] }]);
        assert_eq!(plan.steps[0].name, "crc32c_generic");
        assert_eq!(plan.steps[0].parameters, "p=1");
    }

    #[test]
    fn modules_dep_is_preferred_and_handles_compressed_and_builtin() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/6.12.0");
        // .modinfo says otherwise: modules.dep must win.
        ko(&dir, "kernel/drivers/net/virtio_net.ko", &["depends=bogus"]);
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.zst\n\
             kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.zst\n\
             kernel/net/core/failover.ko.zst:\n\
             /lib/modules/6.12.0/kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\n\
             this line is junk\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/lib/crc16.ko\n").unwrap();
        std::fs::write(dir.join("modules.softdep"), "# comment\nsoftdep ext4 pre: crc32c post: virtio-net\n").unwrap();
        let mdir = ModuleDir::open(root.path(), "6.12.0").unwrap();
        assert!(mdir.uses_modules_dep());
        let plan = mdir.plan(&requests(&["ext4", "virtio_net"]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(names(&plan), ["ext4", "failover", "net_failover", "virtio_net"]);
        assert_eq!(plan.steps[0].path, dir.join("kernel/fs/ext4/ext4.ko"));
        assert!(plan.steps[0].depends.is_empty(), "crc16 is built in");
        assert!(plan.steps[1].compressed && plan.steps[2].compressed && !plan.steps[3].compressed);
    }

    #[test]
    fn an_image_listing_its_modules_with_depmod_files_plans_without_reading_them() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/6.1.0");
        // Module files that cannot be parsed: planning must not need them.
        for rel in [
            "kernel/crypto/crc32c_generic.ko",
            "kernel/fs/jbd2/jbd2.ko",
            "kernel/fs/mbcache.ko",
            "kernel/fs/ext4/ext4.ko",
        ] {
            std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
            std::fs::write(dir.join(rel), b"not an ELF file").unwrap();
        }
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/crypto/crc32c_generic.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\n\
             kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.softdep"),
            "softdep jbd2 pre: crypto-crc32c\nsoftdep ext4 pre: crypto-crc32c\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.alias"),
            "alias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d* virtio_pci\n",
        )
        .unwrap();
        // The image lists ext4 first: the plan still loads its dependencies first.
        std::fs::write(
            root.path().join(IMAGE_LOAD_ORDER),
            "6.1.0/kernel/fs/ext4/ext4.ko\n6.1.0/kernel/fs/jbd2/jbd2.ko\n6.1.0/kernel/fs/mbcache.ko\n",
        )
        .unwrap();
        let requests = image_boot_modules(root.path()).unwrap();
        assert_eq!(requests.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["ext4", "jbd2", "mbcache"]);
        let plan = ModuleDir::open(root.path(), "6.1.0").unwrap().plan(&requests);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        // modules.dep order, each soft `pre:` right before its user.
        assert_eq!(names(&plan), ["mbcache", "crc32c_generic", "jbd2", "ext4"]);
        assert_eq!(plan.steps[3].depends, ["mbcache", "jbd2"]);
    }

    #[test]
    fn no_load_order_file_means_no_image_list() {
        let root = tempfile::tempdir().unwrap();
        assert!(image_boot_modules(root.path()).is_none());
    }

    #[test]
    fn compressed_modules_without_modules_dep_say_why() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/6.12.0");
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("kernel/virtio_net.ko.xz"), b"\xfd7zXZ").unwrap();
        let plan = ModuleDir::open(root.path(), "6.12.0").unwrap().plan(&requests(&["virtio_net"]));
        assert_eq!(
            plan.errors[0].to_string(),
            format!(
                "cannot read .modinfo of module virtio_net ({}): compressed module: its dependencies must come from modules.dep",
                dir.join("kernel/virtio_net.ko.xz").display()
            )
        );
    }

    #[test]
    fn updates_override_and_build_symlinks_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/r");
        ko(&dir, "kernel/a/thing.ko", &["depends="]);
        ko(&dir, "updates/thing.ko", &["depends="]);
        ko(&root.path().join("src"), "other.ko", &["depends="]);
        std::os::unix::fs::symlink(root.path().join("src"), dir.join("build")).unwrap();
        let plan = ModuleDir::open(root.path(), "r").unwrap().plan(&requests(&["thing", "other"]));
        assert_eq!(names(&plan), ["thing"]);
        assert!(plan.steps[0].path.ends_with("updates/thing.ko"));
        assert!(plan.errors[0].to_string().starts_with("module other not found"));
    }

    #[test]
    fn loading_counts_eexist_as_success_and_skips_dependents_of_failures() {
        let root = virtio_tree();
        let plan = open(root.path()).plan(&requests(&["virtio_net", "virtio_blk", "ext4", "ghost"]));
        let loader = RecordingLoader::default();
        loader.fail("virtio", libc::EEXIST);
        loader.fail("net_failover", libc::ENOEXEC);
        let report = load_plan(&loader, plan);
        assert_eq!(
            loader.names(),
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "mbcache",
                "jbd2",
                "crc16",
                "crc32c_generic",
                "ext4"
            ]
        );
        assert_eq!(report.already_loaded, ["virtio"]);
        assert!(report.loaded.contains(&"virtio_blk".to_string()) && report.loaded.contains(&"ext4".to_string()));
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert!(errors[0].starts_with("module ghost not found under "), "{errors:?}");
        assert!(errors[1].starts_with("cannot load module net_failover ("), "{errors:?}");
        assert!(errors[1].ends_with("Exec format error (os error 8)"), "{errors:?}");
        assert_eq!(errors[2], "module virtio_net not loaded: its dependency net_failover failed to load");
        assert_eq!(errors.len(), 3);
    }

    /// The image's on-demand modules, laid out as the image ships them:
    /// modules.dep, no readable `.modinfo` needed.
    fn on_demand_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(root.path().join("proc/sys/kernel/osrelease"), "6.1.0-t\n").unwrap();
        let dir = root.path().join("lib/modules/6.1.0-t");
        let dep = "kernel/net/tls/tls.ko:\n\
                   kernel/drivers/net/bonding/bonding.ko: kernel/net/tls/tls.ko\n\
                   kernel/net/llc/llc.ko:\n\
                   kernel/net/802/stp.ko: kernel/net/llc/llc.ko\n\
                   kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n\
                   kernel/net/802/mrp.ko:\n\
                   kernel/net/8021q/8021q.ko: kernel/net/802/mrp.ko kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko\n";
        for line in dep.lines() {
            let file = dir.join(line.split(':').next().unwrap());
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"not read when planning").unwrap();
        }
        std::fs::write(dir.join("modules.dep"), dep).unwrap();
        root
    }

    #[test]
    fn on_demand_modules_load_with_their_dependencies_each_once() {
        let root = on_demand_tree();
        let recording = std::sync::Arc::new(RecordingLoader::default());
        let loader = OnDemandLoader::new(root.path(), recording.clone());
        let report = loader.load_once("bonding").expect("first ask loads");
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.loaded, ["tls", "bonding"]);
        assert!(loader.load_once("bonding").is_none(), "asked once only");
        // llc is already loaded (EEXIST): fine, and the rest goes on.
        recording.fail("llc", libc::EEXIST);
        let report = loader.load_once("8021q").unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.already_loaded, ["llc"]);
        assert_eq!(report.loaded, ["mrp", "stp", "garp", "8021q"]);
        loader.ensure("8021q");
        assert_eq!(recording.names(), ["tls", "bonding", "mrp", "llc", "stp", "garp", "8021q"]);
        // Not shipped: an error to log, not retried.
        let report = loader.load_once("dummy").unwrap();
        assert!(report.errors[0].to_string().starts_with("module dummy not found under "), "{:?}", report.errors);
        loader.ensure("dummy");
        assert_eq!(recording.names().len(), 7);
        // A failing dependency keeps its user from loading, and is reported.
        let root = on_demand_tree();
        let recording = std::sync::Arc::new(RecordingLoader::default());
        recording.fail("tls", libc::ENOEXEC);
        let report = OnDemandLoader::new(root.path(), recording.clone()).load_once("bonding").unwrap();
        assert_eq!(recording.names(), ["tls"]);
        assert_eq!(report.errors[1].to_string(), "module bonding not loaded: its dependency tls failed to load");
    }

    #[test]
    fn nothing_requested_reads_nothing() {
        let root = tempfile::tempdir().unwrap();
        let report = load_modules(&RecordingLoader::default(), root.path(), &[]);
        assert!(report.is_ok() && report.loaded.is_empty());
        let report = load_modules(&RecordingLoader::default(), root.path(), &requests(&["x"]));
        assert!(report.errors[0].to_string().starts_with("cannot read the kernel release from "));
    }

    #[test]
    fn reads_a_real_module_of_this_machine() {
        let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
            println!("skipped because /proc/sys/kernel/osrelease is unreadable");
            return;
        };
        let dir = Path::new("/lib/modules").join(release.trim());
        if !dir.is_dir() {
            println!("skipped because {} does not exist on this machine", dir.display());
            return;
        }
        let mut files = BTreeMap::new();
        walk(&dir, &dir, &mut files).unwrap();
        let Some((name, entry)) = files.iter().find(|(_, e)| !e.compressed) else {
            println!("skipped because {} has no uncompressed .ko", dir.display());
            return;
        };
        let info = read_modinfo(&entry.path).unwrap();
        if let Some(n) = &info.name {
            assert_eq!(&normalize(n), name);
        }
        println!("{name}: depends {:?}", info.depends);
    }

    proptest::proptest! {
        #[test]
        fn modinfo_parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_modinfo(&bytes);
        }
    }
}
