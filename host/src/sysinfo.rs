//! Memory and load figures read from procfs. The procfs root is a parameter
//! so tests read a temp tree.

use std::io;
use std::path::{Path, PathBuf};

/// Where the node's system files are. Everything hangs off these roots so
/// tests can point them at temp trees.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub proc: PathBuf,
    pub dev: PathBuf,
    /// sysfs: DMI fields and block devices.
    pub sys: PathBuf,
    /// The kernel command line plugins and the platform controller see.
    pub cmdline: PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            dev: PathBuf::from("/dev"),
            sys: PathBuf::from("/sys"),
            cmdline: PathBuf::from("/proc/cmdline"),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Parses `/proc/meminfo` (values in kB) into bytes.
pub fn parse_meminfo(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else { continue };
        let Ok(kb) = value.parse::<u64>() else { continue };
        let bytes = kb * 1024;
        match key {
            "MemTotal:" => m.total = bytes,
            "MemFree:" => m.free = bytes,
            "MemAvailable:" => m.available = bytes,
            "Buffers:" => m.buffers = bytes,
            "Cached:" => m.cached = bytes,
            "SwapTotal:" => m.swap_total = bytes,
            "SwapFree:" => m.swap_free = bytes,
            _ => {}
        }
    }
    m
}

pub fn memory(proc_root: &Path) -> io::Result<Memory> {
    Ok(parse_meminfo(&std::fs::read_to_string(proc_root.join("meminfo"))?))
}

/// Resident set size of this process, from `<proc>/self/status` (kB → bytes).
pub fn own_rss(proc_root: &Path) -> io::Result<u64> {
    let status = std::fs::read_to_string(proc_root.join("self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in self/status"))
}

/// Parses the first three fields of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some((a, b, c)),
        _ => None,
    }
}

pub fn loadavg(proc_root: &Path) -> io::Result<(f64, f64, f64)> {
    let text = std::fs::read_to_string(proc_root.join("loadavg"))?;
    parse_loadavg(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected loadavg {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes() {
        let m = parse_meminfo("MemTotal:       16 kB\nMemFree: 4 kB\nMemAvailable: 8 kB\nbogus\nSwapTotal: 0 kB\n");
        assert_eq!((m.total, m.free, m.available, m.swap_total), (16384, 4096, 8192, 0));
    }

    #[test]
    fn own_rss_is_read() {
        assert!(own_rss(Path::new("/proc")).unwrap() > 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::write(dir.path().join("self/status"), "Name: x\nVmRSS:\t  2048 kB\n").unwrap();
        assert_eq!(own_rss(dir.path()).unwrap(), 2 << 20);
    }

    #[test]
    fn loadavg_fields() {
        assert_eq!(parse_loadavg("0.50 1.25 2.00 1/123 456\n"), Some((0.5, 1.25, 2.0)));
        assert_eq!(parse_loadavg("x"), None);
    }

    #[test]
    fn reads_from_a_temp_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "1.00 2.00 3.00 1/1 1").unwrap();
        assert_eq!(loadavg(dir.path()).unwrap(), (1.0, 2.0, 3.0));
        assert!(memory(dir.path()).is_err());
    }
}
