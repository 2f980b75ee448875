//! The state disk: an ext4 file system labelled [`STATE_LABEL`] that PID 1 mounts
//! at `/var/lib/bronze`, made without root by `mke2fs` on a plain file.
//!
//! It is the VM's persistent state (config, keys), so it is created once and kept
//! across image rebuilds; only an explicit fresh start replaces it.

use crate::cmd;
use crate::{Error, Result};
use std::path::Path;
use std::process::Command;

/// The ext4 label PID 1 looks for.
pub const STATE_LABEL: &str = "BRONZE_STATE";
/// The default size of the state disk.
pub const STATE_SIZE_MIB: u32 = 64;

/// Whether [`ensure_state_disk`] made a new disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAction {
    /// An existing disk was kept.
    Kept,
    /// A new empty file system was made.
    Created,
}

/// Makes `path` a raw ext4 image of `size_mib` MiB labelled [`STATE_LABEL`] unless it
/// exists already; `fresh` replaces an existing one (its state is lost).
pub fn ensure_state_disk(path: &Path, size_mib: u32, fresh: bool) -> Result<DiskAction> {
    if path.exists() && !fresh {
        return Ok(DiskAction::Kept);
    }
    let tmp = crate::initramfs::temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mke2fs = cmd::find_tool("mke2fs").unwrap_or_else(|| "mke2fs".into());
    let mut command = Command::new(mke2fs);
    command.args(["-q", "-t", "ext4", "-L", STATE_LABEL, "-F"]).arg(&tmp).arg(format!("{size_mib}M"));
    cmd::output(&mut command, "apt-get install e2fsprogs")?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
    Ok(DiskAction::Created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_disk_is_ext4_with_the_label_and_kept() {
        if cmd::find_tool("mke2fs").is_none() {
            eprintln!("skipped because mke2fs (e2fsprogs) is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("state.img");
        assert_eq!(ensure_state_disk(&disk, 8, false).unwrap(), DiskAction::Created);
        let bytes = std::fs::read(&disk).unwrap();
        assert_eq!(bytes.len(), 8 << 20);
        // ext2/3/4 superblock at 1024: magic 0xEF53 at +56, volume name at +120.
        assert_eq!(&bytes[1024 + 56..1024 + 58], &[0x53, 0xef]);
        assert_eq!(&bytes[1024 + 120..1024 + 120 + STATE_LABEL.len()], STATE_LABEL.as_bytes());
        assert_eq!(ensure_state_disk(&disk, 8, false).unwrap(), DiskAction::Kept);
        assert_eq!(ensure_state_disk(&disk, 8, true).unwrap(), DiskAction::Created);
    }
}
