//! Kernel modules for the image: which `.ko` files to ship and in what order PID 1
//! loads them.
//!
//! Debian's kernel package ships no `modules.dep` (depmod is not on the build
//! machine either), so the dependencies come from each module's own `.modinfo` ELF
//! section: `depends=` (hard: the module will not load without them) and
//! `softdep=pre:` (wanted first, often by alias: ext4 and jbd2 want
//! `crypto-crc32c`, which `crc32c_generic` provides). Without modprobe in the image
//! nothing loads a module on demand, so the order written here is the whole story.
//!
//! The image carries what depmod would have written for these modules
//! (`modules.dep`, `modules.softdep`, `modules.alias`, plus the package's
//! `modules.builtin`), so PID 1 plans its loads from a few small files instead of
//! reading every module's ELF at boot (≈70 ms under TCG). The list itself is
//! written to [`LOAD_ORDER_PATH`]: one path per line, relative to the directory
//! holding that file (`/lib/modules`), e.g.
//! `6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko`, dependencies first. PID 1
//! loads those modules (its boot defaults) in dependency order.
//!
//! Modules listed after the list's [`ON_DEMAND_MARKER`] (bonding, 802.1Q) are
//! shipped, with their dependencies checked the same way and in the depmod files,
//! but not loaded at boot (every module loaded at boot costs boot time under TCG):
//! [`ON_DEMAND_PATH`] lists them in the load order's format, dependencies first,
//! and PID 1 loads one through `modules.dep` when something first needs it (the
//! network applier, before it creates a bond or a VLAN). A module that a boot
//! module needs loads at boot even if listed on demand.

use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the load order file sits in the initramfs; its lines are relative to its
/// own directory.
pub const LOAD_ORDER_PATH: &str = "lib/modules/bronze-load-order";

/// Where the on-demand modules are listed in the initramfs, in the same format as
/// [`LOAD_ORDER_PATH`]: shipped, not loaded at boot.
pub const ON_DEMAND_PATH: &str = "lib/modules/bronze-on-demand";

/// The line of the module list after which modules are loaded on demand.
pub const ON_DEMAND_MARKER: &str = "@on-demand";

/// What a module's `.modinfo` says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    /// `name=` (canonical: `_`, never `-`), if the module records it.
    pub name: Option<String>,
    /// `depends=`: modules that must be loaded first.
    pub depends: Vec<String>,
    /// `softdep=` `pre:` names (module names or aliases) wanted first.
    pub softdep_pre: Vec<String>,
    /// `alias=` values.
    pub aliases: Vec<String>,
}

/// Module names treat `-` and `_` alike; this is the `_` spelling.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads the `.modinfo` of a `.ko` file.
pub fn read_modinfo(path: &Path) -> Result<ModInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let section = modinfo_section(&bytes).map_err(|reason| Error::BadModule { path: path.to_path_buf(), reason })?;
    Ok(parse_modinfo(section))
}

/// Parses the contents of a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in section.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        let Some((key, value)) = field.split_once('=') else { continue };
        match key {
            "name" => info.name = Some(canonical_name(value)),
            "depends" => info.depends.extend(value.split(',').filter(|d| !d.is_empty()).map(canonical_name)),
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => {
                // "pre: a b post: c"
                let mut pre = false;
                for token in value.split_whitespace() {
                    match token {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        name if pre => info.softdep_pre.push(name.to_string()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Finds the `.modinfo` section of a little-endian ELF64 object.
pub fn modinfo_section(elf: &[u8]) -> Result<&[u8], String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("no ELF magic".into());
    }
    if elf.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a little-endian ELF64 file".into());
    }
    let shoff = read_u64(elf, 0x28)?;
    let shentsize = u64::from(read_u16(elf, 0x3a)?);
    let shnum = u64::from(read_u16(elf, 0x3c)?);
    let shstrndx = u64::from(read_u16(elf, 0x3e)?);
    if shentsize < 64 {
        return Err(format!("section header size {shentsize} < 64"));
    }
    let section = |index: u64| -> Result<(u32, u64, u64), String> {
        let base = index
            .checked_mul(shentsize)
            .and_then(|off| off.checked_add(shoff))
            .and_then(|off| usize::try_from(off).ok())
            .ok_or("section header offset overflows")?;
        Ok((read_u32(elf, base)?, read_u64(elf, base + 24)?, read_u64(elf, base + 32)?))
    };
    let data = |offset: u64, size: u64| -> Result<&[u8], String> {
        let start = usize::try_from(offset).map_err(|_| "section offset overflows")?;
        let end = usize::try_from(offset.saturating_add(size)).map_err(|_| "section size overflows")?;
        elf.get(start..end).ok_or_else(|| format!("section at {offset} of {size} bytes is outside the file"))
    };
    if shstrndx >= shnum {
        return Err(format!("section name table index {shstrndx} >= {shnum} sections"));
    }
    let (_, names_off, names_size) = section(shstrndx)?;
    let names = data(names_off, names_size)?;
    for index in 0..shnum {
        let (name_off, offset, size) = section(index)?;
        let name = names.get(name_off as usize..).and_then(|rest| rest.split(|&b| b == 0).next());
        if name == Some(b".modinfo".as_slice()) {
            return data(offset, size);
        }
    }
    Err("no .modinfo section".into())
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, String> {
    let raw = bytes.get(at..at + 2).ok_or_else(|| format!("truncated at byte {at}"))?;
    Ok(u16::from_le_bytes([raw[0], raw[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, String> {
    let raw = bytes.get(at..at + 4).ok_or_else(|| format!("truncated at byte {at}"))?;
    Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, String> {
    let raw = bytes.get(at..at + 8).ok_or_else(|| format!("truncated at byte {at}"))?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(raw);
    Ok(u64::from_le_bytes(buf))
}

/// The module list: what loads at boot, and what is only shipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleList {
    /// Loaded by PID 1 at boot, in this order (dependencies first).
    pub boot: Vec<String>,
    /// After [`ON_DEMAND_MARKER`]: shipped, loaded when first needed.
    pub on_demand: Vec<String>,
}

/// Reads a module list (`images/modules.txt`): one name per line, `#` comments and
/// blank lines ignored, names canonicalised; names after a line
/// [`ON_DEMAND_MARKER`] are on demand. A name listed twice (in either part) or a
/// second marker is an error.
pub fn parse_module_list(text: &str, path: &Path) -> Result<ModuleList> {
    let mut list = ModuleList::default();
    let mut on_demand = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::ModuleList { path: path.to_path_buf(), line: index + 1, reason };
        if line == ON_DEMAND_MARKER {
            if on_demand {
                return Err(bad(format!("{ON_DEMAND_MARKER} appears twice")));
            }
            on_demand = true;
            continue;
        }
        if !line.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad(format!("{line:?} is not a module name")));
        }
        let name = canonical_name(line);
        if list.boot.contains(&name) || list.on_demand.contains(&name) {
            return Err(bad(format!("{name} is listed twice")));
        }
        if on_demand { list.on_demand.push(name) } else { list.boot.push(name) }
    }
    Ok(list)
}

/// The modules of `list` (boot and on demand) that `modules_builtin` (a
/// kernel's `modules.builtin`: one `kernel/.../name.ko` per line) does not
/// name, in list order.
pub fn not_built_in(list: &ModuleList, modules_builtin: &str) -> Vec<String> {
    let built_in: BTreeSet<String> = modules_builtin
        .lines()
        .filter_map(|line| line.trim().rsplit('/').next())
        .filter_map(|file| file.strip_suffix(".ko"))
        .map(canonical_name)
        .collect();
    list.boot.iter().chain(&list.on_demand).filter(|name| !built_in.contains(*name)).cloned().collect()
}

/// The `.ko` files of one kernel release, by canonical module name.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    /// `lib/modules/<release>` of the unpacked package.
    release_dir: PathBuf,
    /// Canonical name → path relative to `release_dir`.
    by_name: BTreeMap<String, PathBuf>,
}

impl ModuleIndex {
    /// Lists every `.ko` under `release_dir/kernel`.
    pub fn scan(release_dir: &Path) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![PathBuf::from("kernel")];
        while let Some(rel) = stack.pop() {
            let dir = release_dir.join(&rel);
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let kind = entry.file_type().map_err(|e| Error::io("inspect", entry.path(), e))?;
                let child = rel.join(entry.file_name());
                if kind.is_dir() {
                    stack.push(child);
                } else if let Some(stem) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".ko")) {
                    by_name.insert(canonical_name(stem), child);
                }
            }
        }
        Ok(ModuleIndex { release_dir: release_dir.to_path_buf(), by_name })
    }

    /// The path of a module relative to the release directory.
    pub fn find(&self, name: &str) -> Option<&Path> {
        self.by_name.get(&canonical_name(name)).map(PathBuf::as_path)
    }

    /// How many modules the release has.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the release has no modules at all.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Why a module is in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Named in the module list, loaded at boot.
    Listed,
    /// Named in the module list's on-demand part.
    OnDemand,
    /// A hard dependency of this module, missing from the list.
    DependencyOf(String),
}

/// One module of the image.
#[derive(Debug, Clone)]
pub struct Module {
    /// Canonical name.
    pub name: String,
    /// Path relative to `lib/modules/<release>`.
    pub path: PathBuf,
    /// The file in the unpacked package.
    pub source: PathBuf,
    /// Its `.modinfo`.
    pub info: ModInfo,
    /// Why it is included.
    pub origin: Origin,
}

/// The modules of the image in load order, and what the planner had to fix.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The kernel release (`uname -r`), the directory name under `lib/modules`.
    pub release: String,
    /// Dependencies first.
    pub modules: Vec<Module>,
    /// Added dependencies, unmet soft dependencies, reorderings: worth printing.
    pub notes: Vec<String>,
    /// The kernel package's `modules.builtin`, if it has one: lets PID 1 tell a
    /// built-in module (nothing to load) from a missing one.
    pub builtin: Option<String>,
}

/// The depmod index files of an image, relative to `lib/modules/<release>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepmodFiles {
    /// `path: dep-path ...`, every dependency (transitively), the one to load
    /// first last, as depmod writes it.
    pub dep: String,
    /// `softdep NAME pre: A B` for modules with soft dependencies.
    pub softdep: String,
    /// `alias ALIAS NAME` for every alias of every module.
    pub alias: String,
}

impl LoadPlan {
    /// Orders `wanted` (the module list's boot part, then its on-demand part) and
    /// their hard dependencies so that every module comes after its `depends=` and
    /// after those of its `softdep=pre:` that the image contains; otherwise the
    /// list's order is kept.
    pub fn resolve(index: &ModuleIndex, release: &str, wanted: &ModuleList) -> Result<LoadPlan> {
        let mut notes = Vec::new();
        let boot: Vec<String> = wanted.boot.iter().map(|n| canonical_name(n)).collect();
        let on_demand: Vec<String> = wanted.on_demand.iter().map(|n| canonical_name(n)).collect();
        let listed: Vec<String> = boot.iter().chain(&on_demand).cloned().collect();
        let mut modules: BTreeMap<String, Module> = BTreeMap::new();
        // Ordering priority: listed modules in list order, then added dependencies
        // in the order they were discovered.
        let mut priority: Vec<String> = listed.clone();
        let mut queue: Vec<(String, Origin)> = boot
            .iter()
            .map(|n| (n.clone(), Origin::Listed))
            .chain(on_demand.iter().map(|n| (n.clone(), Origin::OnDemand)))
            .collect();
        let mut next = 0;
        while let Some((name, origin)) = queue.get(next).cloned() {
            next += 1;
            if modules.contains_key(&name) {
                continue;
            }
            let path = index.find(&name).ok_or_else(|| Error::ModuleNotFound {
                name: name.clone(),
                needed_by: match &origin {
                    Origin::Listed | Origin::OnDemand => "the module list".into(),
                    Origin::DependencyOf(user) => user.clone(),
                },
                dir: index.release_dir.clone(),
            })?;
            let source = index.release_dir.join(path);
            let info = read_modinfo(&source)?;
            if let Origin::DependencyOf(user) = &origin {
                notes.push(format!("added {name}: {user} depends on it and the module list lacks it"));
                priority.push(name.clone());
            }
            for dep in &info.depends {
                if !listed.contains(dep) && !queue.iter().any(|(queued, _)| queued == dep) {
                    queue.push((dep.clone(), Origin::DependencyOf(name.clone())));
                }
            }
            modules.insert(name.clone(), Module { name, path: path.to_path_buf(), source, info, origin });
        }

        // Soft dependencies count when some module of the image provides them.
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in &priority {
            let module = &modules[name];
            let mut before = module.info.depends.clone();
            for soft in &module.info.softdep_pre {
                let provider = priority.iter().find(|candidate| {
                    let other = &modules[*candidate];
                    **candidate == canonical_name(soft) || other.info.aliases.iter().any(|a| a == soft)
                });
                match provider {
                    Some(provider) if provider != name => before.push(provider.clone()),
                    Some(_) => {}
                    None => notes.push(format!(
                        "{name} wants {soft} loaded first (softdep) but no module of the image provides it"
                    )),
                }
            }
            edges.insert(name.clone(), before);
        }

        let order = topological(&priority, &edges)?;
        let listed_in_order: Vec<&String> =
            order.iter().filter(|n| matches!(modules[*n].origin, Origin::Listed | Origin::OnDemand)).collect();
        if listed_in_order.iter().map(|n| n.as_str()).ne(listed.iter().map(String::as_str)) {
            notes.push(format!(
                "the module list is not in dependency order; loading as: {}",
                listed_in_order.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let modules = order.into_iter().filter_map(|name| modules.remove(&name)).collect();
        let mut plan = LoadPlan { release: release.to_string(), modules, notes, builtin: None };
        let at_boot: Vec<String> = plan.at_boot().into_iter().map(String::from).collect();
        for name in on_demand.iter().filter(|n| at_boot.contains(n)) {
            plan.notes.push(format!("{name} is listed on demand but a boot module needs it: it loads at boot"));
        }
        let builtin_path = index.release_dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", &builtin_path, e)),
        };
        plan.builtin = builtin;
        Ok(plan)
    }

    /// The modules loaded at boot: the listed boot modules and everything they
    /// need first (hard dependencies, and soft ones some module of the plan
    /// provides, by name or alias).
    pub fn at_boot(&self) -> BTreeSet<&str> {
        let provider = |wanted: &str| {
            let wanted_name = canonical_name(wanted);
            self.modules
                .iter()
                .find(|m| m.name == wanted_name || m.info.aliases.iter().any(|a| a == wanted))
                .map(|m| m.name.as_str())
        };
        let mut boot = BTreeSet::new();
        let mut todo: Vec<&str> =
            self.modules.iter().filter(|m| m.origin == Origin::Listed).map(|m| m.name.as_str()).collect();
        while let Some(name) = todo.pop() {
            if !boot.insert(name) {
                continue;
            }
            let Some(module) = self.modules.iter().find(|m| m.name == name) else { continue };
            todo.extend(module.info.depends.iter().chain(&module.info.softdep_pre).filter_map(|d| provider(d)));
        }
        boot
    }

    /// `modules.dep`, `modules.softdep` and `modules.alias` for the planned
    /// modules, in depmod's formats.
    pub fn depmod_files(&self) -> DepmodFiles {
        let position: BTreeMap<&str, usize> =
            self.modules.iter().enumerate().map(|(i, m)| (m.name.as_str(), i)).collect();
        let mut dep = String::new();
        let mut softdep = String::new();
        let mut alias = String::new();
        for module in &self.modules {
            // Every dependency, transitively: depmod's modules.dep is complete.
            let mut needed = BTreeSet::new();
            let mut todo: Vec<&str> = module.info.depends.iter().map(String::as_str).collect();
            while let Some(name) = todo.pop() {
                if let Some(&at) = position.get(name)
                    && needed.insert(at)
                {
                    todo.extend(self.modules[at].info.depends.iter().map(String::as_str));
                }
            }
            let deps: String = needed.iter().rev().map(|&at| format!(" {}", self.modules[at].path.display())).collect();
            dep.push_str(&format!("{}:{deps}\n", module.path.display()));
            if !module.info.softdep_pre.is_empty() {
                softdep.push_str(&format!("softdep {} pre: {}\n", module.name, module.info.softdep_pre.join(" ")));
            }
            for a in &module.info.aliases {
                alias.push_str(&format!("alias {a} {}\n", module.name));
            }
        }
        DepmodFiles { dep, softdep, alias }
    }

    /// The plan of a kernel with every driver built in: nothing to load, and
    /// its `modules.builtin`, so that PID 1 counts a module a config asks for
    /// as loaded when it is built in.
    pub fn built_in(release: &str, modules_builtin: String) -> LoadPlan {
        LoadPlan { release: release.into(), modules: Vec::new(), notes: Vec::new(), builtin: Some(modules_builtin) }
    }

    /// The contents of [`LOAD_ORDER_PATH`]: the modules loaded at boot, one path
    /// per line relative to `/lib/modules`, dependencies first.
    pub fn load_order(&self) -> String {
        self.lines(true)
    }

    /// The contents of [`ON_DEMAND_PATH`]: the other modules, in the same format.
    pub fn on_demand_order(&self) -> String {
        self.lines(false)
    }

    fn lines(&self, boot: bool) -> String {
        let at_boot = self.at_boot();
        self.modules
            .iter()
            .filter(|m| at_boot.contains(m.name.as_str()) == boot)
            .map(|m| format!("{}/{}\n", self.release, m.path.display()))
            .collect()
    }
}

/// Depth-first post-order over `priority`: each node after everything in its
/// `edges` list, ties broken by `priority`. Fails on a cycle.
fn topological(priority: &[String], edges: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        edges: &BTreeMap<String, Vec<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            let mut modules = path.clone();
            modules.push(name.to_string());
            return Err(Error::DependencyCycle { modules });
        }
        path.push(name.to_string());
        for dep in edges.get(name).into_iter().flatten() {
            visit(dep, edges, done, path, out)?;
        }
        path.pop();
        done.insert(name.to_string());
        out.push(name.to_string());
        Ok(())
    }
    let (mut done, mut out) = (BTreeSet::new(), Vec::new());
    for name in priority {
        visit(name, edges, &mut done, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable file with a `.modinfo` section holding `modinfo`.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len() as u64;
        elf.extend_from_slice(modinfo.as_bytes());
        let shstr_off = elf.len() as u64;
        elf.extend_from_slice(shstrtab);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let shoff = elf.len() as u64;
        let section = |name: u32, offset: u64, size: u64| {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[24..32].copy_from_slice(&offset.to_le_bytes());
            sh[32..40].copy_from_slice(&size.to_le_bytes());
            sh
        };
        elf.extend(section(0, 0, 0));
        elf.extend(section(1, modinfo_off, modinfo.len() as u64));
        elf.extend(section(10, shstr_off, shstrtab.len() as u64));
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    /// A module tree shaped like Debian 6.1's (names, paths, depends and softdeps).
    fn fake_release() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let modules: [(&str, &str); 8] = [
            ("kernel/drivers/virtio/virtio_ring.ko", "name=virtio_ring\0depends=\0"),
            ("kernel/drivers/virtio/virtio.ko", "name=virtio\0depends=virtio_ring\0"),
            ("kernel/drivers/block/virtio_blk.ko", "name=virtio_blk\0depends=virtio,virtio_ring\0"),
            ("kernel/crypto/crc32c_generic.ko", "alias=crypto-crc32c\0alias=crc32c\0depends=\0name=crc32c_generic\0"),
            ("kernel/fs/jbd2/jbd2.ko", "softdep=pre: crypto-crc32c\0depends=\0name=jbd2\0"),
            ("kernel/fs/mbcache.ko", "depends=\0name=mbcache\0"),
            ("kernel/fs/ext4/ext4.ko", "softdep=pre: crypto-crc32c\0depends=jbd2,mbcache\0name=ext4\0"),
            ("kernel/drivers/misc/pvpanic/pvpanic-pci.ko", "alias=pci:v00001B36d00000011sv*\0depends=pvpanic\0"),
        ];
        for (path, info) in modules {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, fake_ko(info)).unwrap();
        }
        dir
    }

    fn names(plan: &LoadPlan) -> Vec<&str> {
        plan.modules.iter().map(|m| m.name.as_str()).collect()
    }

    /// A list with these boot modules and nothing on demand.
    fn boot(names: &[String]) -> ModuleList {
        ModuleList { boot: names.to_vec(), on_demand: Vec::new() }
    }

    #[test]
    fn modinfo_is_read_from_the_elf_section() {
        let elf =
            fake_ko("license=GPL\0softdep=pre: crypto-crc32c post: foo\0depends=jbd2,mbcache,crc16\0name=ext4\0\0");
        let info = parse_modinfo(modinfo_section(&elf).unwrap());
        assert_eq!(info.name.as_deref(), Some("ext4"));
        assert_eq!(info.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(info.softdep_pre, ["crypto-crc32c"]);
        assert!(modinfo_section(b"\x7fELF\x01\x01").unwrap_err().contains("ELF64"));
        assert!(modinfo_section(&elf[..0x30]).unwrap_err().contains("truncated"));
    }

    #[test]
    fn dependencies_first_in_list_order() {
        let release = fake_release();
        let index = ModuleIndex::scan(release.path()).unwrap();
        assert_eq!(index.len(), 8);
        let wanted: Vec<String> = ["virtio_ring", "virtio", "virtio_blk", "mbcache", "crc32c_generic", "jbd2", "ext4"]
            .map(String::from)
            .into();
        let plan = LoadPlan::resolve(&index, "6.1.0-test", &boot(&wanted)).unwrap();
        assert_eq!(names(&plan), wanted);
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        assert_eq!(
            plan.load_order().lines().take(3).collect::<Vec<_>>(),
            [
                "6.1.0-test/kernel/drivers/virtio/virtio_ring.ko",
                "6.1.0-test/kernel/drivers/virtio/virtio.ko",
                "6.1.0-test/kernel/drivers/block/virtio_blk.ko",
            ]
        );
    }

    #[test]
    fn misordered_and_incomplete_lists_are_fixed_and_reported() {
        let release = fake_release();
        let index = ModuleIndex::scan(release.path()).unwrap();
        // ext4 before its dependencies, softdep provider last, virtio_ring missing.
        let wanted: Vec<String> =
            ["ext4", "virtio_blk", "virtio", "jbd2", "mbcache", "crc32c_generic"].map(String::from).into();
        let plan = LoadPlan::resolve(&index, "r", &boot(&wanted)).unwrap();
        assert_eq!(names(&plan), ["crc32c_generic", "jbd2", "mbcache", "ext4", "virtio_ring", "virtio", "virtio_blk"]);
        assert!(
            plan.notes.iter().any(|n| n == "added virtio_ring: virtio_blk depends on it and the module list lacks it")
        );
        assert!(plan.notes.iter().any(|n| n.starts_with("the module list is not in dependency order")));
    }

    #[test]
    fn depmod_files_list_every_dependency_softdep_and_alias() {
        let release = fake_release();
        let index = ModuleIndex::scan(release.path()).unwrap();
        let wanted: Vec<String> = ["crc32c_generic", "jbd2", "mbcache", "ext4", "virtio_blk"].map(String::from).into();
        let plan = LoadPlan::resolve(&index, "r", &boot(&wanted)).unwrap();
        assert_eq!(plan.builtin, None, "the fake release has no modules.builtin");
        let files = plan.depmod_files();
        let dep: Vec<&str> = files.dep.lines().collect();
        assert!(dep.contains(&"kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko"), "{dep:?}");
        // Transitive, the one to load first last.
        assert!(
            dep.contains(
                &"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko"
            ),
            "{dep:?}"
        );
        assert!(dep.contains(&"kernel/crypto/crc32c_generic.ko:"), "{dep:?}");
        assert_eq!(dep.len(), plan.modules.len());
        assert_eq!(files.softdep, "softdep jbd2 pre: crypto-crc32c\nsoftdep ext4 pre: crypto-crc32c\n");
        assert_eq!(files.alias, "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n");
    }

    #[test]
    fn missing_modules_and_unmet_softdeps_are_named() {
        let release = fake_release();
        let index = ModuleIndex::scan(release.path()).unwrap();
        // pvpanic-pci is found by its `_` name; its dependency pvpanic is not in the tree.
        let err = LoadPlan::resolve(&index, "r", &boot(&["pvpanic_pci".into()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("kernel module pvpanic (needed by pvpanic_pci) not found under {}", release.path().display())
        );
        let plan = LoadPlan::resolve(&index, "r", &boot(&["jbd2".into()])).unwrap();
        assert_eq!(
            plan.notes,
            ["jbd2 wants crypto-crc32c loaded first (softdep) but no module of the image provides it"]
        );
    }

    #[test]
    fn module_list_parsing() {
        let path = Path::new("modules.txt");
        let list = parse_module_list("# comment\nvirtio_ring\n\npvpanic-pci  # trailing\n", path).unwrap();
        assert_eq!(list.boot, ["virtio_ring", "pvpanic_pci"]);
        assert!(list.on_demand.is_empty());
        let list = parse_module_list("virtio\n @on-demand # shipped only\nbonding\n8021q\n", path).unwrap();
        assert_eq!((list.boot, list.on_demand), (vec!["virtio".into()], vec!["bonding".into(), "8021q".into()]));
        let err = parse_module_list("a\n@on-demand\nb\n@on-demand\n", path).unwrap_err();
        assert_eq!(err.to_string(), "modules.txt:4: @on-demand appears twice");
        let err = parse_module_list("a\n@on-demand\na\n", path).unwrap_err();
        assert_eq!(err.to_string(), "modules.txt:3: a is listed twice");
        let err = parse_module_list("a\nb c\n", path).unwrap_err();
        assert_eq!(err.to_string(), "modules.txt:2: \"b c\" is not a module name");
        let err = parse_module_list("a_b\na-b\n", path).unwrap_err();
        assert_eq!(err.to_string(), "modules.txt:2: a_b is listed twice");
    }

    #[test]
    fn on_demand_modules_ship_with_their_dependencies_but_load_only_if_a_boot_module_needs_them() {
        let release = fake_release();
        let index = ModuleIndex::scan(release.path()).unwrap();
        let list = ModuleList {
            boot: ["virtio_ring", "virtio_blk"].map(String::from).into(),
            // ext4 pulls jbd2 and mbcache (hard) and crc32c_generic (soft, by alias);
            // virtio is needed by virtio_blk, so it loads at boot anyway.
            on_demand: ["ext4", "crc32c_generic", "virtio"].map(String::from).into(),
        };
        let plan = LoadPlan::resolve(&index, "r", &list).unwrap();
        assert_eq!(plan.at_boot(), BTreeSet::from(["virtio_ring", "virtio", "virtio_blk"]));
        assert_eq!(
            plan.load_order(),
            "r/kernel/drivers/virtio/virtio_ring.ko\nr/kernel/drivers/virtio/virtio.ko\nr/kernel/drivers/block/virtio_blk.ko\n"
        );
        assert_eq!(
            plan.on_demand_order(),
            "r/kernel/crypto/crc32c_generic.ko\nr/kernel/fs/jbd2/jbd2.ko\nr/kernel/fs/mbcache.ko\nr/kernel/fs/ext4/ext4.ko\n"
        );
        assert!(
            plan.notes.iter().any(|n| n == "virtio is listed on demand but a boot module needs it: it loads at boot"),
            "{:?}",
            plan.notes
        );
        assert!(plan.notes.iter().any(|n| n == "added jbd2: ext4 depends on it and the module list lacks it"));
        // Every shipped module is in modules.dep, on demand or not.
        assert_eq!(plan.depmod_files().dep.lines().count(), 7);
        // A missing on-demand module fails the build like a boot one.
        let list = ModuleList { boot: Vec::new(), on_demand: vec!["pvpanic_pci".into()] };
        let err = LoadPlan::resolve(&index, "r", &list).unwrap_err();
        assert!(err.to_string().starts_with("kernel module pvpanic (needed by pvpanic_pci) not found"), "{err}");
    }

    #[test]
    fn cycles_are_reported() {
        let edges: BTreeMap<String, Vec<String>> = [("a", vec!["b"]), ("b", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
            .collect();
        let err = topological(&["a".into(), "b".into()], &edges).unwrap_err();
        assert_eq!(err.to_string(), "kernel module dependency cycle among: a, b, a");
    }

    #[test]
    fn modules_not_built_in_are_named() {
        let list =
            parse_module_list("virtio_net\nvirtio-rng\n@on-demand\nbonding\ntcp_diag\n", Path::new("m.txt")).unwrap();
        let builtin = "kernel/drivers/net/virtio_net.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\nkernel/drivers/net/bonding/bonding.ko\n";
        assert_eq!(not_built_in(&list, builtin), ["tcp_diag"]);
        let plan = LoadPlan::built_in("6.1.192-bronze", builtin.into());
        assert_eq!((plan.load_order(), plan.on_demand_order()), (String::new(), String::new()));
    }
}
