//! `machine.sysctls`: kernel parameters written to `<root>/proc/sys`.
//!
//! Dotted keys (`net.ipv4.ip_forward`) map dots to directories; keys with a
//! `/` are used as paths as they are, which is how a component containing a
//! dot (`net/ipv4/conf/eth0.100/rp_filter`) is written. Each key is applied
//! on its own: one bad key is reported by name and the rest still applied.
//! Files are only written, never created: a key the kernel does not have is
//! an error, not a new file.

use bronze_config::{SysctlKey, UniqueMap};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot set sysctl {key} ({path}): {error}")]
pub struct SysctlError {
    pub key: String,
    pub path: PathBuf,
    pub error: io::Error,
}

/// The file under `<root>/proc/sys` for `key`.
pub fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    // SysctlKey already refuses `..` and leading `/`; dropping any such
    // component again keeps the write inside /proc/sys whatever the caller
    // passes.
    let rel: PathBuf = Path::new(&rel).components().filter(|c| matches!(c, Component::Normal(_))).collect();
    root.join("proc/sys").join(rel)
}

/// Writes `value` to the sysctl `key`. The value goes in one `write(2)`,
/// as procfs expects.
pub fn set_sysctl(root: &Path, key: &str, value: &str) -> Result<(), SysctlError> {
    let path = sysctl_path(root, key);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).truncate(true).open(&path)?;
        f.write_all(format!("{value}\n").as_bytes())
    };
    write().map_err(|error| SysctlError { key: key.to_string(), path: path.clone(), error })
}

/// What [`apply_sysctls`] did.
#[derive(Debug, Default)]
pub struct SysctlReport {
    pub applied: Vec<String>,
    pub errors: Vec<SysctlError>,
}

impl SysctlReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Applies every key of `machine.sysctls`, in key order, collecting errors
/// per key without stopping.
pub fn apply_sysctls(root: &Path, sysctls: &UniqueMap<SysctlKey, String>) -> SysctlReport {
    let mut report = SysctlReport::default();
    for (key, value) in sysctls {
        match set_sysctl(root, key.as_str(), value) {
            Ok(()) => report.applied.push(key.to_string()),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_sys(root: &Path, rel: &str, content: &str) {
        let p = root.join("proc/sys").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn read(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join("proc/sys").join(rel)).unwrap()
    }

    fn map(items: &[(&str, &str)]) -> UniqueMap<SysctlKey, String> {
        items.iter().map(|(k, v)| (k.parse().unwrap(), v.to_string())).collect()
    }

    #[test]
    fn dotted_and_slashed_keys_map_to_files() {
        let root = Path::new("/r");
        assert_eq!(sysctl_path(root, "net.ipv4.ip_forward"), PathBuf::from("/r/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(
            sysctl_path(root, "net/ipv4/conf/eth0.100/rp_filter"),
            PathBuf::from("/r/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(sysctl_path(root, "/../../etc/passwd"), PathBuf::from("/r/proc/sys/etc/passwd"));
    }

    #[test]
    fn applies_every_key_and_reports_each_failure_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        proc_sys(root, "net/ipv4/ip_forward", "0\n");
        proc_sys(root, "net/ipv4/conf/eth0.100/rp_filter", "1\n");
        proc_sys(root, "vm/swappiness", "60 and some long old content\n");
        let report = apply_sysctls(
            root,
            &map(&[
                ("net.ipv4.ip_forward", "1"),
                ("kernel.no_such_key", "1"),
                ("net/ipv4/conf/eth0.100/rp_filter", "2"),
                ("vm.swappiness", "10"),
            ]),
        );
        assert_eq!(read(root, "net/ipv4/ip_forward"), "1\n");
        assert_eq!(read(root, "net/ipv4/conf/eth0.100/rp_filter"), "2\n");
        assert_eq!(read(root, "vm/swappiness"), "10\n");
        assert_eq!(report.applied, ["net.ipv4.ip_forward", "net/ipv4/conf/eth0.100/rp_filter", "vm.swappiness"]);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(
            report.errors[0].to_string(),
            format!(
                "cannot set sysctl kernel.no_such_key ({}): No such file or directory (os error 2)",
                root.join("proc/sys/kernel/no_such_key").display()
            )
        );
        assert!(!root.join("proc/sys/kernel/no_such_key").exists(), "a missing key must not be created");
    }
}
