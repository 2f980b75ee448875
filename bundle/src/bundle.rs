//! Reading and writing bundles: a directory holding `plugin.wasm`,
//! `plugin.toml` and an optional `plugin.sig`, or a plain tar archive with
//! exactly those members. Tar members are checked by name and type before a
//! byte is read, so an archive cannot smuggle links, paths outside the
//! bundle or oversized files.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bronze_config::TrustedKey;

use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, ManifestError};
use crate::signing::{SIGNATURE_FILE, SignatureError, verify};

/// The component's file name inside a bundle.
pub const WASM_FILE: &str = "plugin.wasm";

/// Largest accepted `plugin.wasm`.
pub const MAX_WASM_BYTES: u64 = 64 << 20;

/// Largest accepted `plugin.sig`; a real one is 129 bytes, the slack only
/// lets the parser name what is wrong with a slightly bigger file.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// More tar entries than a bundle and its directory can need.
const MAX_TAR_ENTRIES: usize = 16;

/// A plugin bundle in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `plugin.toml` exactly as read: the signature covers these bytes.
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
    /// `plugin.sig` as read, when the bundle has one.
    pub signature: Option<Vec<u8>>,
}

/// Why a bundle could not be read or written. Every variant names the
/// bundle's path.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("bundle {path} has no {member}")]
    Missing { path: PathBuf, member: &'static str },
    #[error("bundle {path}: {member} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { path: PathBuf, member: &'static str, size: u64, limit: u64 },
    #[error("invalid bundle {path}: {error}")]
    Manifest { path: PathBuf, error: ManifestError },
    #[error("bundle {path}: plugin.wasm {reason}")]
    NotAComponent { path: PathBuf, reason: &'static str },
    #[error("bundle {path} is not a tar archive: {reason}")]
    NotTar { path: PathBuf, reason: String },
    #[error("bundle {path}: tar member {member:?} {reason}")]
    BadMember { path: PathBuf, member: String, reason: String },
    #[error("cannot write bundle {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
}

/// The three members a bundle may have, by file name.
fn member_of(name: &str) -> Option<&'static str> {
    [WASM_FILE, MANIFEST_FILE, SIGNATURE_FILE].into_iter().find(|m| *m == name)
}

fn limit_of(member: &str) -> u64 {
    match member {
        WASM_FILE => MAX_WASM_BYTES,
        MANIFEST_FILE => MAX_MANIFEST_BYTES as u64,
        _ => MAX_SIGNATURE_BYTES,
    }
}

/// Refuses bytes that are not a WebAssembly component, with a hint for the
/// common mistake of shipping a core module.
pub fn check_component_header(wasm: &[u8]) -> Result<(), &'static str> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err("is not a WebAssembly binary (it does not start with \\0asm)");
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    match wasm[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err("is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with \
                       `wasm-tools component new`"),
        _ => Err("has an unknown WebAssembly layer (neither a module nor a component)"),
    }
}

impl Bundle {
    /// Builds a bundle from its parts, parsing the manifest.
    pub fn from_parts(
        manifest_bytes: Vec<u8>,
        wasm: Vec<u8>,
        signature: Option<Vec<u8>>,
    ) -> Result<Bundle, ManifestError> {
        let manifest = Manifest::parse(&manifest_bytes)?;
        Ok(Bundle { manifest_bytes, manifest, wasm, signature })
    }

    /// Reads a bundle directory or tar archive.
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let io = |error| BundleError::Io { path: path.into(), error };
        let meta = std::fs::metadata(path).map_err(io)?;
        let (manifest_bytes, wasm, signature) =
            if meta.is_dir() { read_dir(path)? } else { read_tar(path, std::fs::File::open(path).map_err(io)?)? };
        let manifest_bytes = manifest_bytes.ok_or(BundleError::Missing { path: path.into(), member: MANIFEST_FILE })?;
        let wasm = wasm.ok_or(BundleError::Missing { path: path.into(), member: WASM_FILE })?;
        check_component_header(&wasm).map_err(|reason| BundleError::NotAComponent { path: path.into(), reason })?;
        Bundle::from_parts(manifest_bytes, wasm, signature)
            .map_err(|error| BundleError::Manifest { path: path.into(), error })
    }

    /// Checks the signature against `trusted_keys`; `Ok(None)` when the
    /// bundle is unsigned (whether that is acceptable is the caller's policy).
    pub fn verify(&self, trusted_keys: &[TrustedKey]) -> Result<Option<TrustedKey>, SignatureError> {
        match &self.signature {
            None => Ok(None),
            Some(sig) => verify(&self.wasm, &self.manifest_bytes, sig, trusted_keys).map(Some),
        }
    }

    /// Writes the bundle as a plain tar archive with its members at the top
    /// level. The archive is reproducible (fixed times and owners) and
    /// replaces `path` atomically.
    pub fn write_tar(&self, path: &Path) -> Result<(), BundleError> {
        let fail = |error| BundleError::Write { path: path.into(), error };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = dir.join(format!(".{name}.tmp"));
        let result = (|| {
            let mut builder = tar::Builder::new(std::fs::File::create(&temp)?);
            let mut members = vec![(MANIFEST_FILE, &self.manifest_bytes), (WASM_FILE, &self.wasm)];
            if let Some(sig) = &self.signature {
                members.push((SIGNATURE_FILE, sig));
            }
            for (name, bytes) in members {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_uid(0);
                header.set_gid(0);
                builder.append_data(&mut header, name, bytes.as_slice())?;
            }
            let mut file = builder.into_inner()?;
            file.flush()?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(fail)
    }
}

type Parts = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads at most `limit` bytes, failing if there are more.
fn read_capped(
    path: &Path,
    member: &'static str,
    reader: impl Read,
    limit: u64,
    size_hint: u64,
) -> Result<Vec<u8>, BundleError> {
    let too_large = |size| BundleError::TooLarge { path: path.into(), member, size, limit };
    if size_hint > limit {
        return Err(too_large(size_hint));
    }
    let mut bytes = Vec::with_capacity(size_hint as usize);
    reader.take(limit + 1).read_to_end(&mut bytes).map_err(|error| BundleError::Io { path: path.into(), error })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn read_dir(dir: &Path) -> Result<Parts, BundleError> {
    let read = |member: &'static str| -> Result<Option<Vec<u8>>, BundleError> {
        let file_path = dir.join(member);
        let file = match std::fs::File::open(&file_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(BundleError::Io { path: file_path, error }),
        };
        let meta = file.metadata().map_err(|error| BundleError::Io { path: file_path.clone(), error })?;
        if !meta.is_file() {
            return Err(BundleError::Io {
                path: file_path,
                error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        read_capped(dir, member, file, limit_of(member), meta.len()).map(Some)
    };
    Ok((read(MANIFEST_FILE)?, read(WASM_FILE)?, read(SIGNATURE_FILE)?))
}

/// Splits a member path into its normal components, refusing absolute
/// paths and `..`; `.` and empty components are dropped.
fn components(raw: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "has a name that is not UTF-8".to_string())?;
    if text.starts_with('/') {
        return Err("has an absolute path".into());
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("leaves the bundle with '..'".into()),
            p if p.contains('\\') || p.contains('\0') => return Err("has a backslash or NUL in its name".into()),
            p => parts.push(p.to_string()),
        }
    }
    Ok(parts)
}

fn read_tar(path: &Path, file: impl Read) -> Result<Parts, BundleError> {
    let mut file = std::io::BufReader::new(file);
    let not_tar = |reason: String| BundleError::NotTar { path: path.into(), reason };
    let head = std::io::BufRead::fill_buf(&mut file).map_err(|error| BundleError::Io { path: path.into(), error })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(not_tar("it is gzip-compressed; bundles are plain (uncompressed) tar files".into()));
    }
    if head.len() < 512 {
        return Err(not_tar(format!("it is {} bytes, shorter than one tar header", head.len())));
    }
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries().map_err(|e| not_tar(e.to_string()))?;
    let (mut manifest, mut wasm, mut signature) = (None, None, None);
    // The directory the members live in: None until the first member, then
    // Some("") for the top level or Some(dir).
    let mut prefix: Option<String> = None;
    for (index, entry) in entries.enumerate() {
        if index >= MAX_TAR_ENTRIES {
            return Err(not_tar(format!("it has more than {MAX_TAR_ENTRIES} entries")));
        }
        let entry = entry.map_err(|e| not_tar(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: String| BundleError::BadMember { path: path.into(), member: shown.clone(), reason };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let parts = components(&raw).map_err(bad)?;
        if kind.is_dir() {
            match parts.as_slice() {
                [] => continue,
                [dir] if prefix.as_deref().is_none_or(|p| p == dir) => {
                    prefix = Some(dir.clone());
                    continue;
                }
                _ => {
                    return Err(bad(
                        "is a directory; a bundle holds its files at the top level or in one directory".into()
                    ));
                }
            }
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            let what = if kind.is_symlink() || kind.is_hard_link() { "is a link" } else { "is not a regular file" };
            return Err(bad(format!("{what}; a bundle holds only regular files")));
        }
        let (dir, name) = match parts.as_slice() {
            [name] => (String::new(), name.as_str()),
            [dir, name] => (dir.clone(), name.as_str()),
            _ => {
                return Err(bad(
                    "is nested too deep; a bundle holds its files at the top level or in one directory".into()
                ));
            }
        };
        let member = member_of(name).ok_or_else(|| {
            bad(format!("is not part of a bundle (expected only {WASM_FILE}, {MANIFEST_FILE} and {SIGNATURE_FILE})"))
        })?;
        match &prefix {
            Some(p) if *p != dir => return Err(bad("is in a different directory than the other members".into())),
            _ => prefix = Some(dir),
        }
        let slot = match member {
            MANIFEST_FILE => &mut manifest,
            WASM_FILE => &mut wasm,
            _ => &mut signature,
        };
        if slot.is_some() {
            return Err(bad("appears twice".into()));
        }
        let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
        *slot = Some(read_capped(path, member, entry, limit_of(member), size)?);
    }
    Ok((manifest, wasm, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    const MANIFEST: &str = "id = \"p\"\nversion = \"1.0.0\"\nworld = \"health-check\"\n";
    const WASM: &[u8] = b"\0asm\x0d\0\x01\0fake component body";

    fn sample(signature: Option<Vec<u8>>) -> Bundle {
        Bundle::from_parts(MANIFEST.as_bytes().to_vec(), WASM.to_vec(), signature).unwrap()
    }

    fn write_dir(dir: &Path, files: &[(&str, &[u8])]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// A tar member: raw name, type, contents.
    type Member<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// A tar with raw member names and types, bypassing the tar crate's own
    /// path checks so evil names can be written.
    fn evil_tar(path: &Path, members: &[Member]) {
        let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, kind, bytes) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            let field = &mut header.as_old_mut().name;
            field.fill(0);
            field[..name.len()].copy_from_slice(name.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name("plugin.toml").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *bytes).unwrap();
        }
        builder.finish().unwrap();
    }

    #[test]
    fn loads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &[("plugin.toml", MANIFEST.as_bytes()), ("plugin.wasm", WASM), ("README", b"ignored")]);
        let bundle = Bundle::load(dir.path()).unwrap();
        assert_eq!(bundle, sample(None));
        std::fs::write(dir.path().join("plugin.sig"), b"sig").unwrap();
        assert_eq!(Bundle::load(dir.path()).unwrap().signature.as_deref(), Some(&b"sig"[..]));
    }

    #[test]
    fn directory_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert_eq!(err, format!("bundle {} has no plugin.toml", dir.path().display()));
        write_dir(dir.path(), &[("plugin.toml", MANIFEST.as_bytes())]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert_eq!(err, format!("bundle {} has no plugin.wasm", dir.path().display()));
        write_dir(dir.path(), &[("plugin.wasm", b"\0asm\x01\0\0\0")]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("plugin.wasm is a core WebAssembly module, not a component"), "{err}");
        write_dir(dir.path(), &[("plugin.wasm", b"MZ\x90\0 not wasm")]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("plugin.wasm is not a WebAssembly binary"), "{err}");
        write_dir(dir.path(), &[("plugin.wasm", WASM), ("plugin.toml", b"id = \"p\"\n")]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("invalid bundle {}: plugin.toml", dir.path().display())), "{err}");
        assert!(err.contains("missing field `version`"), "{err}");
        let missing = dir.path().join("nope");
        let err = Bundle::load(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot read bundle {}: ", missing.display())), "{err}");
    }

    #[test]
    fn oversized_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(dir.path().join("plugin.wasm")).unwrap();
        big.set_len(MAX_WASM_BYTES + 1).unwrap();
        write_dir(dir.path(), &[("plugin.toml", MANIFEST.as_bytes())]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                "plugin.wasm is {} bytes, more than the limit of {MAX_WASM_BYTES} bytes",
                MAX_WASM_BYTES + 1
            )),
            "{err}"
        );
        write_dir(dir.path(), &[("plugin.wasm", WASM), ("plugin.toml", &vec![b'#'; MAX_MANIFEST_BYTES + 1])]);
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("plugin.toml is 65537 bytes"), "{err}");
    }

    #[test]
    fn tar_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let mut bundle = sample(None);
        bundle.signature = Some(key.sign(&bundle.wasm, &bundle.manifest_bytes).to_file_bytes());
        let path = dir.path().join("p.tar");
        bundle.write_tar(&path).unwrap();
        let back = Bundle::load(&path).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.verify(&[key.public_key()]), Ok(Some(key.public_key())));
        assert_eq!(sample(None).verify(&[]), Ok(None));
        // Reproducible: the same bundle makes the same bytes.
        let again = dir.path().join("q.tar");
        bundle.write_tar(&again).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
        assert!(!dir.path().join(".p.tar.tmp").exists());
    }

    #[test]
    fn tar_may_use_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        let m = MANIFEST.as_bytes();
        evil_tar(
            &path,
            &[
                ("./", tar::EntryType::Directory, b""),
                ("p/", tar::EntryType::Directory, b""),
                ("p/plugin.toml", tar::EntryType::Regular, m),
                ("./p/plugin.wasm", tar::EntryType::Regular, WASM),
            ],
        );
        assert_eq!(Bundle::load(&path).unwrap(), sample(None));
    }

    #[test]
    fn tar_with_evil_members_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = MANIFEST.as_bytes();
        let reg = tar::EntryType::Regular;
        let cases: Vec<(Vec<Member>, &str, &str)> = vec![
            (vec![("/plugin.toml", reg, m)], "/plugin.toml", "has an absolute path"),
            (vec![("../plugin.toml", reg, m)], "../plugin.toml", "leaves the bundle with '..'"),
            (vec![("p/../../plugin.toml", reg, m)], "p/../../plugin.toml", "leaves the bundle"),
            (vec![("plugin.toml", tar::EntryType::Symlink, b"")], "plugin.toml", "is a link"),
            (vec![("plugin.wasm", tar::EntryType::Link, b"")], "plugin.wasm", "is a link"),
            (vec![("plugin.toml", tar::EntryType::Fifo, b"")], "plugin.toml", "is not a regular file"),
            (vec![("plugin.toml", tar::EntryType::Char, b"")], "plugin.toml", "is not a regular file"),
            (vec![("plugin.toml", reg, m), ("evil.sh", reg, b"rm -rf /")], "evil.sh", "is not part of a bundle"),
            (vec![("a/b/plugin.toml", reg, m)], "a/b/plugin.toml", "is nested too deep"),
            (vec![("a/plugin.toml", reg, m), ("b/plugin.wasm", reg, WASM)], "b/plugin.wasm", "different directory"),
            (vec![("a/plugin.toml", reg, m), ("plugin.wasm", reg, WASM)], "plugin.wasm", "different directory"),
            (vec![("plugin.toml", reg, m), ("plugin.toml", reg, m)], "plugin.toml", "appears twice"),
            (
                vec![("a/", tar::EntryType::Directory, b""), ("b/", tar::EntryType::Directory, b"")],
                "b/",
                "is a directory",
            ),
            (vec![("a\\..\\x", reg, m)], "a\\..\\x", "backslash"),
        ];
        for (i, (members, member, reason)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.tar"));
            evil_tar(&path, &members);
            let err = Bundle::load(&path).unwrap_err();
            match &err {
                BundleError::BadMember { member: m, reason: r, .. } => {
                    assert_eq!(m, member, "{err}");
                    assert!(r.contains(reason), "{err}");
                }
                other => panic!("case {i}: {other}"),
            }
            assert!(err.to_string().starts_with(&format!("bundle {}: tar member", path.display())), "{err}");
        }
    }

    #[test]
    fn tar_size_caps_come_from_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tar");
        let toml = vec![b'#'; MAX_MANIFEST_BYTES + 1];
        evil_tar(&path, &[("plugin.toml", tar::EntryType::Regular, &toml)]);
        let err = Bundle::load(&path).unwrap_err().to_string();
        assert!(err.contains("plugin.toml is 65537 bytes, more than the limit of 65536 bytes"), "{err}");
    }

    #[test]
    fn files_that_are_not_tar_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"\x1f\x8b\x08rest").unwrap();
        let err = Bundle::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a tar archive: it is gzip-compressed"), "{err}");
        std::fs::write(&path, b"hello").unwrap();
        let err = Bundle::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("bundle {} is not a tar archive: it is 5 bytes, shorter than one tar header", path.display())
        );
        std::fs::write(&path, vec![b'x'; 2048]).unwrap();
        let err = Bundle::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("bundle {} is not a tar archive: ", path.display())), "{err}");
        // An empty archive is a tar, just not a bundle.
        evil_tar(&path, &[]);
        let err = Bundle::load(&path).unwrap_err().to_string();
        assert_eq!(err, format!("bundle {} has no plugin.toml", path.display()));
    }

    #[test]
    fn component_header_check() {
        assert_eq!(check_component_header(WASM), Ok(()));
        assert!(check_component_header(b"\0asm\x01\0\0\0").unwrap_err().contains("core WebAssembly module"));
        assert!(check_component_header(b"\0asm").unwrap_err().contains("not a WebAssembly binary"));
        assert!(check_component_header(b"\0asm\x0d\0\x02\0").unwrap_err().contains("unknown WebAssembly layer"));
    }
}
