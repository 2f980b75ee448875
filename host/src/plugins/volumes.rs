//! `bronze:host/volumes`: block devices and single-file reads from config
//! drives. Where the volumes come from is behind [`VolumeSource`]: the
//! kernel's block devices mounted read-only (PID 1), or directories named
//! on the command line (`--volume LABEL=DIR`, process mode and tests).
//!
//! Every read is bounded ([`MAX_FILE_BYTES`]), takes a relative path
//! without `..`, and is allowed only for labels the instance was granted.

use bronze_config::VolumeLabel;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Largest file a plugin may read from a volume.
pub const MAX_FILE_BYTES: u32 = 1 << 20;
/// Longest path a plugin may ask for.
const MAX_PATH_BYTES: usize = 1024;

/// One block device as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: String,
    pub size_bytes: u64,
    pub fs_type: Option<String>,
    pub label: Option<String>,
}

/// Why a read failed (maps onto the WIT `volume-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("file larger than {0} bytes")]
    TooLarge(u32),
    #[error("i/o: {0}")]
    Io(String),
}

/// Where volumes come from.
pub trait VolumeSource: Send + Sync + std::fmt::Debug {
    /// Every block device, sorted by name.
    fn devices(&self) -> Vec<BlockDevice>;
    /// Reads `path` (already checked by [`check_path`]) from the volume
    /// labelled `label`, at most `max` bytes.
    fn read_file(&self, label: &str, path: &Path, max: u32) -> Result<Vec<u8>, VolumeError>;
}

/// A node without volumes.
#[derive(Debug)]
pub struct NoVolumes;

impl VolumeSource for NoVolumes {
    fn devices(&self) -> Vec<BlockDevice> {
        Vec::new()
    }
    fn read_file(&self, label: &str, _: &Path, _: u32) -> Result<Vec<u8>, VolumeError> {
        Err(VolumeError::NotFound(format!("no volume is labelled {label:?}")))
    }
}

/// Volumes given as directories: `--volume cidata=/tmp/seed`.
#[derive(Debug, Clone, Default)]
pub struct DirVolumes {
    dirs: Vec<(String, PathBuf)>,
}

impl DirVolumes {
    /// Parses `LABEL=DIR` arguments.
    pub fn parse(args: &[String]) -> Result<DirVolumes, String> {
        let mut dirs = Vec::new();
        for arg in args {
            let (label, dir) = arg
                .split_once('=')
                .ok_or_else(|| format!("--volume {arg:?}: expected LABEL=DIR, like cidata=/tmp/seed"))?;
            let label: VolumeLabel = label.parse().map_err(|e| format!("--volume {arg:?}: {e}"))?;
            if !Path::new(dir).is_dir() {
                return Err(format!("--volume {arg:?}: {dir} is not a directory"));
            }
            dirs.push((label.as_str().to_string(), PathBuf::from(dir)));
        }
        dirs.sort();
        Ok(DirVolumes { dirs })
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

impl VolumeSource for DirVolumes {
    fn devices(&self) -> Vec<BlockDevice> {
        self.dirs
            .iter()
            .enumerate()
            .map(|(i, (label, _))| BlockDevice {
                name: format!("dir{i}"),
                size_bytes: 0,
                fs_type: Some("dir".into()),
                label: Some(label.clone()),
            })
            .collect()
    }

    fn read_file(&self, label: &str, path: &Path, max: u32) -> Result<Vec<u8>, VolumeError> {
        let (_, dir) = self
            .dirs
            .iter()
            .find(|(l, _)| l == label)
            .ok_or_else(|| VolumeError::NotFound(format!("no volume is labelled {label:?}")))?;
        read_bounded(&dir.join(path), path, max)
    }
}

/// Reads at most `max` bytes of `full`, refusing symlinks that leave the
/// volume (any symlink, to keep it simple) and larger files.
pub fn read_bounded(full: &Path, shown: &Path, max: u32) -> Result<Vec<u8>, VolumeError> {
    let meta = std::fs::symlink_metadata(full).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VolumeError::NotFound(shown.display().to_string()),
        _ => VolumeError::Io(format!("{}: {e}", shown.display())),
    })?;
    if !meta.is_file() {
        return Err(VolumeError::NotFound(format!("{} is not a regular file", shown.display())));
    }
    if meta.len() > u64::from(max) {
        return Err(VolumeError::TooLarge(max));
    }
    let file = std::fs::File::open(full).map_err(|e| VolumeError::Io(format!("{}: {e}", shown.display())))?;
    let mut out = Vec::new();
    file.take(u64::from(max) + 1)
        .read_to_end(&mut out)
        .map_err(|e| VolumeError::Io(format!("{}: {e}", shown.display())))?;
    if out.len() > max as usize {
        return Err(VolumeError::TooLarge(max));
    }
    Ok(out)
}

/// A plugin's path: relative, `/`-separated, no `..`, `.` or empty parts.
pub fn check_path(path: &str) -> Result<PathBuf, VolumeError> {
    let invalid = |why: &str| VolumeError::InvalidPath(format!("{:?}: {why}", bronze_bundle::text::escape(path)));
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(invalid("expected 1-1024 bytes"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(invalid("NUL and '\\' are not allowed"));
    }
    let p = Path::new(path);
    for part in p.components() {
        match part {
            Component::Normal(_) => {}
            _ => return Err(invalid("expected a relative path without '.' or '..' parts")),
        }
    }
    if path.split('/').any(str::is_empty) {
        return Err(invalid("expected a relative path without empty parts"));
    }
    Ok(p.to_path_buf())
}

/// One instance's view: the source and the labels it was granted.
#[derive(Clone)]
pub struct VolumeAccess {
    pub source: Arc<dyn VolumeSource>,
    pub labels: Vec<String>,
}

impl VolumeAccess {
    pub fn read(&self, label: &str, path: &str, max: Option<u32>) -> Result<Vec<u8>, VolumeError> {
        if !self.labels.iter().any(|l| l == label) {
            return Err(VolumeError::Denied(format!(
                "volume label {:?} is not granted (granted: {})",
                bronze_bundle::text::escape(label),
                if self.labels.is_empty() { "none".to_string() } else { self.labels.join(", ") }
            )));
        }
        let path = check_path(path)?;
        let max = max.unwrap_or(MAX_FILE_BYTES).min(MAX_FILE_BYTES);
        self.source.read_file(label, &path, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(dir: &Path) -> VolumeAccess {
        let volumes = DirVolumes::parse(&[format!("cidata={}", dir.display())]).unwrap();
        VolumeAccess { source: Arc::new(volumes), labels: vec!["cidata".into()] }
    }

    #[test]
    fn reads_granted_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta-data"), "instance-id: i-1\n").unwrap();
        std::fs::create_dir(dir.path().join("openstack")).unwrap();
        std::fs::write(dir.path().join("openstack/x"), "y").unwrap();
        let a = access(dir.path());
        assert_eq!(a.read("cidata", "meta-data", None).unwrap(), b"instance-id: i-1\n");
        assert_eq!(a.read("cidata", "openstack/x", None).unwrap(), b"y");
        assert!(matches!(a.read("config-2", "meta-data", None), Err(VolumeError::Denied(_))));
        assert!(matches!(a.read("cidata", "nope", None), Err(VolumeError::NotFound(_))));
        for bad in ["../etc/passwd", "/etc/passwd", "a//b", "./meta-data", "", "a\0b"] {
            assert!(matches!(a.read("cidata", bad, None), Err(VolumeError::InvalidPath(_))), "{bad:?}");
        }
    }

    #[test]
    fn refuses_large_files_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        std::fs::write(dir.path().join("small"), b"12345").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let a = access(dir.path());
        assert_eq!(a.read("cidata", "big", None), Err(VolumeError::TooLarge(MAX_FILE_BYTES)));
        assert_eq!(a.read("cidata", "small", Some(4)), Err(VolumeError::TooLarge(4)));
        assert!(matches!(a.read("cidata", "link", None), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn parses_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let ok = DirVolumes::parse(&[format!("CIDATA={}", dir.path().display())]).unwrap();
        assert_eq!(ok.devices()[0].label.as_deref(), Some("CIDATA"));
        assert!(DirVolumes::parse(&["cidata".into()]).unwrap_err().contains("expected LABEL=DIR"));
        assert!(DirVolumes::parse(&["a b=/tmp".into()]).unwrap_err().contains("volume label"));
        assert!(DirVolumes::parse(&["cidata=/nonexistent-dir".into()]).unwrap_err().contains("not a directory"));
    }
}
