//! Block devices and config drives through `bronze:host/volumes`
//! (manifest: `volumes = true`; the operator grants volume labels).

pub use crate::host::bronze::host::volumes::{BlockDevice, VolumeError};

/// Every block device, sorted by name, with the filesystem the host found.
pub fn devices() -> Vec<BlockDevice> {
    crate::host::bronze::host::volumes::devices()
}

/// Whether a block device carries the filesystem label `label`.
pub fn has_label(label: &str) -> bool {
    devices().iter().any(|d| d.label.as_deref() == Some(label))
}

/// Reads `path` from the volume labelled `label` (the host's 1 MiB cap).
pub fn read_file(label: &str, path: &str) -> Result<Vec<u8>, VolumeError> {
    crate::host::bronze::host::volumes::read_file(label, path, None)
}

impl VolumeError {
    /// One line for a log or an error, like `not found: meta-data`.
    pub fn describe(&self) -> String {
        match self {
            VolumeError::Denied(why) => format!("denied: {why}"),
            VolumeError::NotFound(why) => format!("not found: {why}"),
            VolumeError::InvalidPath(why) => format!("invalid path: {why}"),
            VolumeError::TooLarge(cap) => format!("file larger than {cap} bytes"),
            VolumeError::Io(why) => format!("i/o: {why}"),
        }
    }
}
