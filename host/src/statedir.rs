//! The node's state directory: an exclusive lock so two bronzed processes
//! never share one, and atomic file writes (temp file, fsync, rename, fsync
//! directory) so a crash leaves either the old or the new content.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create state dir {path}: {error}")]
    Create { path: PathBuf, error: io::Error },
    #[error("state dir {path} is in use by another bronzed{holder}")]
    Locked { path: PathBuf, holder: String },
    #[error("cannot lock state dir {path}: {error}")]
    Lock { path: PathBuf, error: io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
}

/// Prefix of temp files; anything with it is a leftover of a crash.
const TEMP_PREFIX: &str = ".tmp-";

/// A locked state directory.
pub struct StateDir {
    root: PathBuf,
    _lock: Flock<File>,
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir").field("root", &self.root).finish()
    }
}

impl StateDir {
    /// Creates (mode 0700) and locks `root`, and removes temp files a crash
    /// may have left.
    pub fn open(root: &Path) -> Result<Self, StateDirError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|error| StateDirError::Create { path: root.into(), error })?;
        let lock_path = root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|error| StateDirError::Lock { path: lock_path.clone(), error })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|pid| pid.trim().to_string())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(StateDirError::Locked { path: root.into(), holder });
            }
            Err((_, errno)) => return Err(StateDirError::Lock { path: lock_path, error: errno.into() }),
        };
        // Record the holder for the error message above; best effort.
        let _ = lock.set_len(0).and_then(|_| writeln!(&mut *lock, "{}", std::process::id()));
        let dir = Self { root: root.to_path_buf(), _lock: lock };
        dir.remove_temps();
        Ok(dir)
    }

    /// Asks the next boot to wipe this state dir ([`wipe_if_reset`]): written
    /// atomically, so a power cut leaves either no request or the whole one.
    pub fn request_reset(&self) -> Result<(), StateDirError> {
        self.write_atomic(RESET_MARKER, b"wipe\n")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Reads `name`; `Ok(None)` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateDirError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StateDirError::Read { path, error }),
        }
    }

    /// Replaces `name` atomically with `bytes` (mode 0600: files here hold keys).
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateDirError> {
        let path = self.path(name);
        write_file_atomic(&path, bytes).map_err(|error| StateDirError::Write { path: path.clone(), error })
    }

    fn remove_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                tracing::info!(file = %entry.path().display(), "removing leftover temp file");
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Replaces `path` atomically with a mode 0600 file (state files hold keys);
/// see [`write_file_atomic_with_mode`].
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_atomic_with_mode(path, bytes, 0o600)
}

/// Replaces `path` atomically with a file of permission bits `mode`: a
/// synced temp file beside it (named with the temp prefix, so leftovers are
/// recognisable), rename, sync the directory. The one atomic write of
/// bronzed: state files, the plugin registry, `/etc/resolv.conf`, `/etc/hosts`.
pub fn write_file_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let temp = dir.join(format!("{TEMP_PREFIX}{}", name.to_string_lossy()));
    write_synced(&temp, bytes, mode)?;
    fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}

/// Whether a file name is a temp file left by [`write_file_atomic`].
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(path)?;
    // A leftover temp file keeps its old mode, and the umask may narrow it.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_with_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by another bronzed"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_cleans_temps() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(".tmp-config.yaml"), b"half").unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        assert!(!tmp.path().join(".tmp-config.yaml").exists());
        dir.write_atomic("config.yaml", b"one").unwrap();
        dir.write_atomic("config.yaml", b"two").unwrap();
        assert_eq!(dir.read("config.yaml").unwrap().unwrap(), b"two");
        assert_eq!(dir.read("missing").unwrap(), None);
    }

    #[test]
    fn atomic_write_sets_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("hosts");
        write_file_atomic_with_mode(&path, b"127.0.0.1 localhost\n", 0o644).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        write_file_atomic(&path, b"secret").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
    }
}

/// The file that asks early boot to wipe the state dir (`bronzectl reset`).
pub const RESET_MARKER: &str = "reset-requested";

/// If `root` holds the reset marker, removes everything in it (the file
/// system's `lost+found` stays) and the marker last, so a wipe cut short by
/// a power cut runs again at the next boot. Returns the number of entries
/// removed, or `None` when no reset was asked for. Runs in early boot,
/// before anything opens the state dir.
pub fn wipe_if_reset(root: &Path) -> std::io::Result<Option<usize>> {
    let marker = root.join(RESET_MARKER);
    if !marker.exists() {
        return Ok(None);
    }
    let mut removed = 0;
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "lost+found" || name == RESET_MARKER {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?
        } else {
            fs::remove_file(&path)?
        }
        removed += 1;
    }
    File::open(root)?.sync_all()?;
    fs::remove_file(&marker)?;
    File::open(root)?.sync_all()?;
    Ok(Some(removed))
}

#[cfg(test)]
mod reset_tests {
    use super::*;

    #[test]
    fn a_requested_reset_wipes_everything_but_lost_and_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(wipe_if_reset(root).unwrap(), None, "no marker: nothing happens");
        fs::create_dir_all(root.join("plugins/x")).unwrap();
        fs::create_dir_all(root.join("lost+found")).unwrap();
        fs::write(root.join("config.yaml"), b"secret").unwrap();
        {
            let dir = StateDir::open(root).unwrap();
            dir.request_reset().unwrap();
        }
        assert!(root.join("config.yaml").exists(), "asking changes nothing yet");
        let removed = wipe_if_reset(root).unwrap().unwrap();
        assert!(removed >= 2, "{removed}");
        let left: Vec<_> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["lost+found"]);
        assert_eq!(wipe_if_reset(root).unwrap(), None);
    }
}
