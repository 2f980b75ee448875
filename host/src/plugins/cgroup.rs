//! The cgroup that compile workers run in. As PID 1, bronzed gives them a
//! cgroup v2 child of the root with `memory.max`, so the kernel bounds a
//! worker's memory (page cache included) whatever it maps, and reports an
//! OOM kill in `memory.events`. In process mode, and where the memory
//! controller is missing, workers run with their rlimits only
//! ([`NoCgroup`]). The cgroup root is a parameter, so tests use a temp tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where compile workers are confined, besides their rlimits.
pub trait WorkerCgroup: Send + Sync {
    /// Sets the memory limit for the next worker and returns the
    /// `cgroup.procs` file it joins before it executes, or `None` when
    /// workers run outside a cgroup.
    fn prepare(&self, memory: u64) -> io::Result<Option<PathBuf>>;

    /// How many processes the kernel has killed in the group for exceeding
    /// `memory.max` so far.
    fn oom_kills(&self) -> u64;
}

/// Workers run with their rlimits only.
#[derive(Debug, Default)]
pub struct NoCgroup;

impl WorkerCgroup for NoCgroup {
    fn prepare(&self, _memory: u64) -> io::Result<Option<PathBuf>> {
        Ok(None)
    }

    fn oom_kills(&self) -> u64 {
        0
    }
}

/// A cgroup v2 group of its own for compile workers.
#[derive(Debug)]
pub struct CgroupV2 {
    dir: PathBuf,
}

impl CgroupV2 {
    /// The group's name under the root.
    pub const NAME: &str = "bronze-plugin-compile";

    /// Creates (or reuses) the group under `root` (`/sys/fs/cgroup`),
    /// enabling the memory controller for the root's children first.
    pub fn create(root: &Path) -> io::Result<CgroupV2> {
        if crate::cgroup::enable_controllers(root, &["memory"])?.is_empty() {
            let controllers = fs::read_to_string(root.join("cgroup.controllers"))?;
            return Err(io::Error::other(format!(
                "{} offers no memory controller (controllers: {})",
                root.display(),
                controllers.trim()
            )));
        }
        let dir = root.join(Self::NAME);
        crate::cgroup::make_group(&dir)?;
        Ok(CgroupV2 { dir })
    }
}

impl WorkerCgroup for CgroupV2 {
    fn prepare(&self, memory: u64) -> io::Result<Option<PathBuf>> {
        fs::write(self.dir.join("memory.max"), memory.to_string())?;
        // Swapping out would only make a compile over its limit slow; the
        // file is missing when the kernel has no swap accounting.
        let _ = fs::write(self.dir.join("memory.swap.max"), "0");
        Ok(Some(self.dir.join("cgroup.procs")))
    }

    fn oom_kills(&self) -> u64 {
        let events = fs::read_to_string(self.dir.join("memory.events")).unwrap_or_default();
        events.lines().find_map(|line| line.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_made_with_the_memory_controller_and_its_limit() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        let group = CgroupV2::create(root.path()).unwrap();
        // cgroupfs takes "+memory" as an edit; a plain file just holds it.
        assert_eq!(fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(), "+memory");
        let dir = root.path().join(CgroupV2::NAME);
        assert!(dir.is_dir());

        let procs = group.prepare(256 << 20).unwrap();
        assert_eq!(procs, Some(dir.join("cgroup.procs")));
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "268435456");
        assert_eq!(fs::read_to_string(dir.join("memory.swap.max")).unwrap(), "0");

        assert_eq!(group.oom_kills(), 0, "no memory.events yet");
        fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n").unwrap();
        assert_eq!(group.oom_kills(), 2);

        // Enabled already, and the group exists: both are left as they are.
        fs::write(root.path().join("cgroup.subtree_control"), "memory pids\n").unwrap();
        CgroupV2::create(root.path()).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(), "memory pids\n");
    }

    #[test]
    fn no_memory_controller_is_an_error_naming_what_there_is() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let err = CgroupV2::create(root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} offers no memory controller (controllers: cpu pids)", root.path().display())
        );
        assert!(!root.path().join(CgroupV2::NAME).exists());
        assert_eq!(NoCgroup.prepare(1).unwrap(), None);
    }
}
