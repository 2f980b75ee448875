//! cgroup v2 as bronzed uses it as PID 1, in one place: enabling
//! controllers, the services' slice (`/sys/fs/cgroup/bronze.slice`, one
//! group per service with `cpu.max`/`memory.max` from its `resources`),
//! joining a group between fork and exec, and reading a group's figures
//! for `stats` and the metrics endpoint.
//!
//! bronzed itself stays in the root group (which the kernel exempts from
//! the no-internal-processes rule); the slice holds no process of its own,
//! only its children. In process mode nothing here is used:
//! [`NoServiceCgroups`] runs services as ordinary children. The cgroup root
//! is a parameter, so tests use a temp tree.

use bronze_config::Resources;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The mount point of the unified hierarchy.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The group that holds one group per service.
pub const SLICE: &str = "bronze.slice";
/// Controllers the slice's children get, those the kernel offers.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// A group's figures, read from its interface files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `cpu.stat` usage_usec: CPU time of every process that ran in it.
    pub cpu_usec: u64,
    /// `memory.current`: memory charged to it, page cache included.
    pub memory_bytes: u64,
    /// `memory.peak` where the kernel has it (6.8 and later).
    pub memory_peak_bytes: Option<u64>,
    /// Lines of `cgroup.procs`: processes in it now.
    pub processes: u32,
    /// `memory.events` oom_kill.
    pub oom_kills: u64,
    /// `cpu.max` and `memory.max` as the kernel shows them (`max` when
    /// unlimited).
    pub cpu_max: String,
    pub memory_max: String,
}

/// The services' groups.
pub trait ServiceCgroups: Send + Sync {
    /// Creates (or reuses) `service`'s group and sets its limits; returns
    /// the `cgroup.procs` file the service's process joins before it
    /// executes, or `None` when services run outside cgroups.
    fn prepare(&self, service: &str, resources: &Resources) -> io::Result<Option<PathBuf>>;

    /// The group's figures; `None` without a group.
    fn usage(&self, service: &str) -> Option<Usage>;

    /// The pids in the group now (`cgroup.procs`); empty without a group.
    fn members(&self, service: &str) -> Vec<i32>;

    /// Kills every process left in the group (`cgroup.kill`): those that
    /// left the service's process group or were reparented still die.
    fn kill(&self, service: &str);

    /// Kills what is left and removes the group of a service that is gone.
    fn remove(&self, service: &str);

    /// "cgroup" or "process": where `stats` takes services' figures from.
    fn source(&self) -> &'static str;
}

/// Services run as plain children (process mode, or a kernel without
/// cgroup v2); their `resources` are not enforced.
#[derive(Debug, Default)]
pub struct NoServiceCgroups;

impl ServiceCgroups for NoServiceCgroups {
    fn prepare(&self, _service: &str, _resources: &Resources) -> io::Result<Option<PathBuf>> {
        Ok(None)
    }

    fn usage(&self, _service: &str) -> Option<Usage> {
        None
    }

    fn members(&self, _service: &str) -> Vec<i32> {
        Vec::new()
    }

    fn kill(&self, _service: &str) {}

    fn remove(&self, _service: &str) {}

    fn source(&self) -> &'static str {
        "process"
    }
}

/// `bronze.slice` under a cgroup v2 root.
#[derive(Debug)]
pub struct Slice {
    dir: PathBuf,
    /// Controllers enabled for the services' groups.
    controllers: Vec<String>,
}

/// Enables each of `wanted` that `dir` offers for its children; returns
/// those enabled.
pub fn enable_controllers(dir: &Path, wanted: &[&str]) -> io::Result<Vec<String>> {
    let offered = fs::read_to_string(dir.join("cgroup.controllers"))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree)?;
    let mut out = Vec::new();
    for c in wanted {
        if !offered.split_whitespace().any(|o| o == *c) {
            continue;
        }
        if !enabled.split_whitespace().any(|e| e == *c) {
            fs::write(&subtree, format!("+{c}"))
                .map_err(|e| io::Error::new(e.kind(), format!("enabling {c} in {}: {e}", subtree.display())))?;
        }
        out.push((*c).to_string());
    }
    Ok(out)
}

/// Creates `dir` unless it exists.
pub fn make_group(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
    }
}

/// The `cgroup.procs` path as a C string, made before a fork so the child
/// allocates nothing.
pub fn procs_cstring(procs: &Path) -> io::Result<CString> {
    CString::new(procs.as_os_str().as_bytes()).map_err(|_| io::Error::other("a cgroup path holds a NUL byte"))
}

/// Moves the calling process into the group whose `cgroup.procs` is
/// `procs` ("0" means the writer itself). For a `pre_exec` hook: plain
/// system calls on a path prepared before the fork, no allocation.
#[allow(unsafe_code)]
pub fn join_in_child(procs: &CString) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; the buffer written is
    // a static byte; the descriptor is ours and closed once.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Reads a group's figures; `None` when the group does not exist.
pub fn read_usage(dir: &Path) -> Option<Usage> {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let cpu_stat = read("cpu.stat")?;
    let keyed = |text: &str, key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
    };
    let number = |name: &str| read(name).and_then(|t| t.trim().parse::<u64>().ok());
    Some(Usage {
        cpu_usec: keyed(&cpu_stat, "usage_usec").unwrap_or(0),
        memory_bytes: number("memory.current").unwrap_or(0),
        memory_peak_bytes: number("memory.peak"),
        processes: read("cgroup.procs").map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count() as u32),
        oom_kills: read("memory.events").and_then(|t| keyed(&t, "oom_kill")).unwrap_or(0),
        cpu_max: read("cpu.max").map(|t| t.trim().to_string()).unwrap_or_default(),
        memory_max: read("memory.max").map(|t| t.trim().to_string()).unwrap_or_default(),
    })
}

impl Slice {
    /// Enables the controllers in `root` and in the slice it creates (or
    /// reuses) under it. Fails when `root` is not a cgroup v2 hierarchy.
    pub fn create(root: &Path) -> io::Result<Slice> {
        let at_root = enable_controllers(root, &CONTROLLERS)?;
        let dir = root.join(SLICE);
        make_group(&dir)?;
        let wanted: Vec<&str> = at_root.iter().map(String::as_str).collect();
        let controllers = enable_controllers(&dir, &wanted)?;
        Ok(Slice { dir, controllers })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// A service's group. Service names are validated by the config
    /// (lowercase letters, digits, '-'), so one is a single path component;
    /// this refuses anything else anyway.
    fn group(&self, service: &str) -> io::Result<PathBuf> {
        if service.is_empty() || service.starts_with('.') || service.contains(['/', '\0']) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{service:?} cannot name a cgroup")));
        }
        Ok(self.dir.join(service))
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

impl ServiceCgroups for Slice {
    fn prepare(&self, service: &str, resources: &Resources) -> io::Result<Option<PathBuf>> {
        let dir = self.group(service)?;
        make_group(&dir)?;
        let write = |name: &str, value: String| {
            fs::write(dir.join(name), &value).map_err(|e| {
                io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", dir.join(name).display()))
            })
        };
        // Written every start, so a limit the config dropped is lifted.
        if self.has("memory") {
            write("memory.max", resources.memory.map_or("max".into(), |m| m.as_u64().to_string()))?;
        } else if resources.memory.is_some() {
            return Err(io::Error::other("the kernel offers no memory controller for resources.memory"));
        }
        if self.has("cpu") {
            write("cpu.max", resources.cpu.as_ref().map_or("max 100000".into(), |c| c.cpu_max()))?;
        } else if resources.cpu.is_some() {
            return Err(io::Error::other("the kernel offers no cpu controller for resources.cpu"));
        }
        Ok(Some(dir.join("cgroup.procs")))
    }

    fn usage(&self, service: &str) -> Option<Usage> {
        read_usage(&self.group(service).ok()?)
    }

    fn members(&self, service: &str) -> Vec<i32> {
        let Ok(dir) = self.group(service) else { return Vec::new() };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn kill(&self, service: &str) {
        let Ok(dir) = self.group(service) else { return };
        // cgroup.kill is 5.14 and later; older kernels keep the process-group
        // signals the runner sent.
        let write = || -> io::Result<()> {
            use std::io::Write;
            // Not created: the kernel makes the file, or it has none.
            fs::OpenOptions::new().write(true).open(dir.join("cgroup.kill"))?.write_all(b"1")
        };
        if dir.is_dir()
            && let Err(e) = write()
        {
            tracing::debug!(service, error = %e, "cgroup.kill");
        }
    }

    fn remove(&self, service: &str) {
        let Ok(dir) = self.group(service) else { return };
        if !dir.is_dir() {
            return;
        }
        self.kill(service);
        // The killed processes leave the group once the reaper has them:
        // a few tries over a second.
        for _ in 0..20 {
            match fs::remove_dir(&dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        tracing::warn!(service, dir = %dir.display(), "the service's cgroup is still busy; left in place");
    }

    fn source(&self) -> &'static str {
        "cgroup"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_config::{ByteSize, CpuQuota};

    /// A temp tree that looks like cgroupfs to the reads and writes here
    /// (cgroupfs takes "+cpu" as an edit; a plain file just holds the last
    /// write).
    fn root(controllers: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        root
    }

    fn fake_slice(root: &Path) {
        let slice = root.join(SLICE);
        fs::create_dir_all(&slice).unwrap();
        fs::write(slice.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(slice.join("cgroup.subtree_control"), "").unwrap();
    }

    #[test]
    fn the_slice_enables_what_the_kernel_offers_and_groups_get_the_limits() {
        let root = root("cpuset cpu io memory pids\n");
        fake_slice(root.path());
        let slice = Slice::create(root.path()).unwrap();
        assert_eq!(slice.controllers(), ["cpu", "memory", "pids"]);
        assert_eq!(slice.dir(), root.path().join(SLICE));

        let resources = Resources {
            cpu: Some("500m".parse::<CpuQuota>().unwrap()),
            memory: Some("64MiB".parse::<ByteSize>().unwrap()),
        };
        let procs = slice.prepare("web", &resources).unwrap().unwrap();
        let dir = root.path().join(SLICE).join("web");
        assert_eq!(procs, dir.join("cgroup.procs"));
        assert_eq!(fs::read_to_string(dir.join("cpu.max")).unwrap(), "50000 100000");
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), (64u64 << 20).to_string());
        // A later start without limits lifts them.
        slice.prepare("web", &Resources::default()).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cpu.max")).unwrap(), "max 100000");
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "max");

        for bad in ["", "..", ".hidden", "a/b"] {
            assert!(slice.prepare(bad, &Resources::default()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_limit_without_its_controller_is_an_error_naming_it() {
        let root = root("pids\n");
        let slice = root.path().join(SLICE);
        fs::create_dir_all(&slice).unwrap();
        fs::write(slice.join("cgroup.controllers"), "pids\n").unwrap();
        fs::write(slice.join("cgroup.subtree_control"), "").unwrap();
        let slice = Slice::create(root.path()).unwrap();
        assert_eq!(slice.controllers(), ["pids"]);
        let resources = Resources { cpu: None, memory: Some(ByteSize::mib(8)) };
        let err = slice.prepare("web", &resources).unwrap_err().to_string();
        assert!(err.contains("no memory controller"), "{err}");
        // Without limits it runs in its group all the same.
        assert!(slice.prepare("web", &Resources::default()).unwrap().is_some());
    }

    #[test]
    fn usage_is_read_from_the_interface_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_usage(&dir.path().join("missing")), None);
        let d = dir.path();
        fs::write(d.join("cpu.stat"), "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n").unwrap();
        fs::write(d.join("memory.current"), "8388608\n").unwrap();
        fs::write(d.join("cgroup.procs"), "12\n13\n").unwrap();
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n").unwrap();
        fs::write(d.join("cpu.max"), "50000 100000\n").unwrap();
        fs::write(d.join("memory.max"), "max\n").unwrap();
        let u = read_usage(d).unwrap();
        let slice = Slice { dir: dir.path().to_path_buf(), controllers: Vec::new() };
        fs::create_dir(d.join("web")).unwrap();
        fs::write(d.join("web/cgroup.procs"), "12\n13\n").unwrap();
        assert_eq!(slice.members("web"), [12, 13]);
        assert_eq!(slice.members("gone"), Vec::<i32>::new());
        assert_eq!(
            u,
            Usage {
                cpu_usec: 1_234_567,
                memory_bytes: 8 << 20,
                memory_peak_bytes: None,
                processes: 2,
                oom_kills: 1,
                cpu_max: "50000 100000".into(),
                memory_max: "max".into(),
            }
        );
    }

    #[test]
    fn process_mode_runs_services_outside_cgroups() {
        let none = NoServiceCgroups;
        assert_eq!(none.prepare("web", &Resources::default()).unwrap(), None);
        assert_eq!(none.usage("web"), None);
        assert_eq!(none.source(), "process");
    }

    #[test]
    fn a_removed_service_loses_its_group() {
        let root = root("cpu memory pids\n");
        fake_slice(root.path());
        let slice = Slice::create(root.path()).unwrap();
        let procs = slice.prepare("web", &Resources::default()).unwrap().unwrap();
        // A real group's interface files vanish with it; here they are
        // plain files, so clear them first.
        for entry in fs::read_dir(procs.parent().unwrap()).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        slice.remove("web");
        assert!(!root.path().join(SLICE).join("web").exists());
    }
}
