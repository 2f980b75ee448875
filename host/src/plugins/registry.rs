//! Installed plugins on disk, under `<state dir>/plugins`:
//!
//! ```text
//! index.json                         which bundle each plugin id runs (the commit point)
//! bundles/<id>-<sha12>/plugin.wasm   the original component, always kept
//! bundles/<id>-<sha12>/plugin.toml
//! bundles/<id>-<sha12>/plugin.sig    when signed
//! cache/<sha256>-<fingerprint>.cwasm compiled artifacts
//! work/                              what compile workers read and write now
//! ```
//!
//! An install writes its bundle and moves the worker's artifact into the
//! cache first and then replaces `index.json` atomically; a crash at any
//! point leaves either the old or the new index, and [`Registry::open`]
//! removes whatever no index names and empties `work/`.

use crate::statedir::{is_temp_name, write_file_atomic};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const INDEX: &str = "index.json";
const BUNDLES: &str = "bundles";
const CACHE: &str = "cache";
const WORK: &str = "work";

/// One installed plugin, as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: String,
    pub version: String,
    pub world: String,
    /// Hex sha256 of plugin.wasm.
    pub sha256: String,
    /// Hex public key that signed it, if signed by a trusted key.
    #[serde(default)]
    pub signed_by: Option<String>,
    pub installed_at: String,
    /// Directory under `bundles/`.
    pub dir: String,
    pub wasm_bytes: u64,
    /// Hex sha256 of the cached artifact, to detect a corrupted cache.
    pub cwasm_sha256: String,
    /// The engine the artifact was compiled for.
    pub fingerprint: String,
    /// The component's largest initial memory in bytes, as the compile
    /// worker found it; absent in entries older than the field, which are
    /// compiled again at start to learn it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_minimum: Option<u64>,
    /// "api" (installed by an operator) or "image" (shipped with the image
    /// and installed at start; replaced when the image's copy changes).
    #[serde(default = "api_source")]
    pub source: String,
}

fn api_source() -> String {
    SOURCE_API.to_string()
}

pub const SOURCE_API: &str = "api";
pub const SOURCE_IMAGE: &str = "image";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub plugins: BTreeMap<String, Entry>,
}

#[derive(Debug)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Opens (creating) the plugin store and removes leftovers of
    /// interrupted installs.
    pub fn open(root: &Path) -> io::Result<(Registry, Index)> {
        fs::create_dir_all(root.join(BUNDLES))?;
        fs::create_dir_all(root.join(CACHE))?;
        match fs::remove_dir_all(root.join(WORK)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(root.join(WORK))?;
        let registry = Registry { root: root.to_path_buf() };
        let index = registry.read_index()?;
        registry.collect_garbage(&index);
        Ok((registry, index))
    }

    fn read_index(&self) -> io::Result<Index> {
        let path = self.root.join(INDEX);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(index) => Ok(index),
                Err(e) => {
                    // Written atomically, so this is damage from outside.
                    // Keep the evidence and start empty rather than not boot.
                    let aside = self.root.join("index.json.corrupt");
                    tracing::error!(path = %path.display(), error = %e, aside = %aside.display(),
                        "plugin index unreadable; moved aside, no plugins loaded");
                    fs::rename(&path, &aside)?;
                    Ok(Index::default())
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e),
        }
    }

    /// Removes temp files, bundle dirs and artifacts that the index does
    /// not name.
    pub fn collect_garbage(&self, index: &Index) {
        let dirs: BTreeSet<&str> = index.plugins.values().map(|e| e.dir.as_str()).collect();
        let artifacts: BTreeSet<String> =
            index.plugins.values().map(|e| artifact_name(&e.sha256, &e.fingerprint)).collect();
        remove_unlisted(&self.root.join(BUNDLES), |name| dirs.contains(name));
        remove_unlisted(&self.root.join(CACHE), |name| artifacts.contains(name));
        remove_unlisted(&self.root, |name| !is_temp_name(name));
    }

    pub fn bundle_dir(&self, entry: &Entry) -> PathBuf {
        self.root.join(BUNDLES).join(&entry.dir)
    }

    pub fn artifact_path(&self, sha256: &str, fingerprint: &str) -> PathBuf {
        self.root.join(CACHE).join(artifact_name(sha256, fingerprint))
    }

    /// Writes a bundle's files into their own directory, named by `id` and
    /// a hash of all the files, and returns its name. The directory appears
    /// complete or not at all. Each file comes with its sha256 (hex), which
    /// the caller has already (the wasm's is the plugin's identity): the
    /// name hashes those, not megabytes of wasm a second time.
    pub fn write_bundle(&self, id: &str, files: &[(&str, &[u8], &str)]) -> io::Result<String> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for (file, bytes, sha256) in files {
            hasher.update(file.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(sha256.as_bytes());
        }
        let name = format!("{id}-{}", &hex::encode(hasher.finalize())[..16]);
        let bundles = self.root.join(BUNDLES);
        let target = bundles.join(&name);
        if target.is_dir() {
            // Same id and the same files: a reinstall. Content-addressed,
            // so the existing directory is already right.
            return Ok(name);
        }
        let temp = bundles.join(format!(".tmp-{name}"));
        let _ = fs::remove_dir_all(&temp);
        fs::create_dir_all(&temp)?;
        for (file, bytes, _) in files {
            write_file_atomic(&temp.join(file), bytes)?;
        }
        fs::rename(&temp, &target)?;
        fs::File::open(&bundles)?.sync_all()?;
        Ok(name)
    }

    /// A new file name in `work/` for a compile's input or output.
    pub fn work_file(&self, extension: &str) -> WorkFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        WorkFile { path: self.root.join(WORK).join(format!("{n}.{extension}")) }
    }

    /// Moves an artifact a compile worker wrote (synced) into the cache.
    pub fn adopt_artifact(&self, from: &Path, sha256: &str, fingerprint: &str) -> io::Result<PathBuf> {
        let path = self.artifact_path(sha256, fingerprint);
        fs::rename(from, &path)?;
        fs::File::open(self.root.join(CACHE))?.sync_all()?;
        Ok(path)
    }

    /// The commit point of every install, upgrade and removal.
    pub fn commit(&self, index: &Index) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(index).map_err(io::Error::other)?;
        write_file_atomic(&self.root.join(INDEX), &bytes)
    }
}

/// A file in `work/`, removed when dropped unless it was moved away.
#[derive(Debug)]
pub struct WorkFile {
    path: PathBuf,
}

impl WorkFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a compile's work file");
            }
            _ => {}
        }
    }
}

pub fn artifact_name(sha256: &str, fingerprint: &str) -> String {
    format!("{sha256}-{fingerprint}.cwasm")
}

fn remove_unlisted(dir: &Path, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if [INDEX, BUNDLES, CACHE, WORK, "index.json.corrupt"].contains(&name.as_str()) || keep(&name) {
            continue;
        }
        let path = entry.path();
        tracing::info!(path = %path.display(), "removing plugin file no index names");
        let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze_bundle::sha256_hex;

    fn entry(id: &str, sha: &str, dir: &str) -> Entry {
        Entry {
            id: id.into(),
            version: "0.1.0".into(),
            world: "health-check".into(),
            sha256: sha.into(),
            signed_by: None,
            installed_at: "2026-01-01T00:00:00Z".into(),
            dir: dir.into(),
            wasm_bytes: 3,
            cwasm_sha256: "00".into(),
            fingerprint: "fp".into(),
            memory_minimum: Some(65536),
            source: SOURCE_API.into(),
        }
    }

    #[test]
    fn commit_round_trips_and_garbage_is_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let (registry, index) = Registry::open(tmp.path()).unwrap();
        assert!(index.plugins.is_empty());
        let sha = "a".repeat(64);
        let dir = registry
            .write_bundle(
                "p",
                &[("plugin.wasm", b"abc", &sha256_hex(b"abc")), ("plugin.toml", b"id", &sha256_hex(b"id"))],
            )
            .unwrap();
        let compiled = registry.work_file("cwasm");
        fs::write(compiled.path(), b"compiled").unwrap();
        registry.adopt_artifact(compiled.path(), &sha, "fp").unwrap();
        drop(compiled);
        // Leftovers of an interrupted install of something else, and of a
        // compile in flight.
        registry.write_bundle("q", &[("plugin.wasm", b"x", &sha256_hex(b"x"))]).unwrap();
        let other = registry.work_file("cwasm");
        fs::write(other.path(), b"x").unwrap();
        registry.adopt_artifact(other.path(), &"b".repeat(64), "fp").unwrap();
        fs::create_dir_all(tmp.path().join("bundles/.tmp-half")).unwrap();
        let in_flight = registry.work_file("wasm");
        fs::write(in_flight.path(), b"upload").unwrap();
        std::mem::forget(in_flight);
        let mut index = Index::default();
        index.plugins.insert("p".into(), entry("p", &sha, &dir));
        registry.commit(&index).unwrap();

        let (registry, reopened) = Registry::open(tmp.path()).unwrap();
        assert_eq!(reopened, index);
        let bundles: Vec<_> =
            fs::read_dir(tmp.path().join("bundles")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(bundles, [std::ffi::OsString::from(&dir)]);
        assert_eq!(fs::read(registry.bundle_dir(&index.plugins["p"]).join("plugin.wasm")).unwrap(), b"abc");
        let cache: Vec<_> = fs::read_dir(tmp.path().join("cache")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(cache, [std::ffi::OsString::from(artifact_name(&sha, "fp"))]);
        assert_eq!(fs::read_dir(tmp.path().join("work")).unwrap().count(), 0, "work/ is emptied at open");
    }

    #[test]
    fn a_work_file_is_removed_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(tmp.path()).unwrap();
        let (a, b) = (registry.work_file("wasm"), registry.work_file("wasm"));
        assert_ne!(a.path(), b.path());
        fs::write(a.path(), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        drop(b); // never written: nothing to remove, nothing said
    }

    #[test]
    fn a_corrupt_index_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(INDEX), b"{not json").unwrap();
        let (_, index) = Registry::open(tmp.path()).unwrap();
        assert!(index.plugins.is_empty());
        assert!(tmp.path().join("index.json.corrupt").exists());
    }
}
