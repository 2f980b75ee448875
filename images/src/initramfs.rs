//! The initramfs as a tree of entries, written as a reproducible newc archive.
//!
//! Reproducible means the same inputs give the same bytes on any machine: entries
//! are written in byte order of their paths (which also puts every directory before
//! its contents), inode numbers count up from 1 in that order, owners are 0:0, every
//! mtime is the one given (0 or `SOURCE_DATE_EPOCH`), permission bits are normalised
//! (0755 if any execute bit is set, else 0644: umask and checkout modes must not
//! leak in) and gzip's header carries no time or file name. Entries are only
//! described when added; file contents are streamed from disk when written.

use crate::cpio::{Header, NewcWriter, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::kmod::LoadPlan;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The mtime for every entry: `SOURCE_DATE_EPOCH` when set to a valid number, else 0.
pub fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with these permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Where the contents come from.
        source: Source,
    },
    /// A symbolic link.
    Symlink {
        /// The link target.
        target: String,
    },
    /// A character device node (made in the archive: no root needed).
    CharDevice {
        /// Permission bits.
        mode: u32,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// The contents of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this file when the archive is written.
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// The file tree of an initramfs. Paths are relative to its root (a leading `/` is
/// accepted and dropped); missing parent directories are added as 0755.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Node>,
}

impl Initramfs {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents). Adding an existing directory again only
    /// sets its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let name = normalize(path)?;
        self.insert(name, Node::Dir { mode: mode & 0o7777 })?;
        Ok(self)
    }

    /// Adds a regular file whose contents are read from `source` when the archive is
    /// written. `mode` is taken as given (use [`normalized_mode`] for copied trees).
    pub fn file(&mut self, path: &str, source: impl Into<PathBuf>, mode: u32) -> Result<&mut Self> {
        let name = normalize(path)?;
        self.insert(name, Node::File { mode: mode & 0o7777, source: Source::Path(source.into()) })?;
        Ok(self)
    }

    /// Adds a regular file with these contents.
    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Result<&mut Self> {
        let name = normalize(path)?;
        self.insert(name, Node::File { mode: mode & 0o7777, source: Source::Bytes(data.into()) })?;
        Ok(self)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let name = normalize(path)?;
        self.insert(name, Node::Symlink { target: target.to_string() })?;
        Ok(self)
    }

    /// Adds a character device node, e.g. `dev/console` (5, 1) that the kernel needs
    /// to open the console for `/init` before anything mounts devtmpfs.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<&mut Self> {
        let name = normalize(path)?;
        self.insert(name, Node::CharDevice { mode: mode & 0o7777, major, minor })?;
        Ok(self)
    }

    /// Copies the directory tree `dir` to `prefix`: directories, regular files (mode
    /// normalised) and symlinks. Other file types are refused. Contents are read at
    /// write time.
    pub fn tree(&mut self, prefix: &str, dir: &Path) -> Result<&mut Self> {
        let prefix = normalize(prefix)?;
        self.insert(prefix.clone(), Node::Dir { mode: 0o755 })?;
        let mut listing: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("list", dir, e))?;
        listing.sort_by_key(|entry| entry.file_name());
        for entry in listing {
            let path = entry.path();
            let file_name = entry.file_name();
            let file_name = file_name.to_str().ok_or_else(|| Error::Entry {
                name: path.display().to_string(),
                reason: "file name is not UTF-8".into(),
            })?;
            let name = format!("{prefix}/{file_name}");
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &path, e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.tree(&name, &path)?;
            } else if kind.is_file() {
                use std::os::unix::fs::PermissionsExt;
                self.file(&name, &path, normalized_mode(meta.permissions().mode()))?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| Error::Entry { name: name.clone(), reason: "symlink target is not UTF-8".into() })?;
                self.symlink(&name, target)?;
            } else {
                return Err(Error::Entry {
                    name,
                    reason: format!("{} is not a file, directory or symlink", path.display()),
                });
            }
        }
        Ok(self)
    }

    /// The entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(name, node)| (name.as_str(), node))
    }

    /// Writes the uncompressed newc archive.
    pub fn write_newc<W: Write>(&self, out: W, mtime: u32) -> Result<W> {
        let mut writer = NewcWriter::new(out);
        for (ino, (name, node)) in (1u32..).zip(&self.entries) {
            let mut header = Header { ino, nlink: 1, mtime, ..Header::default() };
            match node {
                Node::Dir { mode } => {
                    header.mode = S_IFDIR | mode;
                    header.nlink = 2;
                    writer.append(name, &header, 0, &mut std::io::empty())?;
                }
                Node::File { mode, source: Source::Bytes(data) } => {
                    header.mode = S_IFREG | mode;
                    writer.append(name, &header, data.len() as u64, &mut data.as_slice())?;
                }
                Node::File { mode, source: Source::Path(path) } => {
                    header.mode = S_IFREG | mode;
                    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
                    let size = file.metadata().map_err(|e| Error::io("inspect", path, e))?.len();
                    let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut file);
                    writer.append(name, &header, size, &mut reader as &mut dyn Read)?;
                }
                Node::Symlink { target } => {
                    header.mode = S_IFLNK | 0o777;
                    writer.append(name, &header, target.len() as u64, &mut target.as_bytes())?;
                }
                Node::CharDevice { mode, major, minor } => {
                    header.mode = S_IFCHR | mode;
                    header.rdev_major = *major;
                    header.rdev_minor = *minor;
                    writer.append(name, &header, 0, &mut std::io::empty())?;
                }
            }
        }
        writer.finish()
    }

    /// The size of the uncompressed archive (reads every file once).
    pub fn newc_size(&self, mtime: u32) -> Result<u64> {
        /// Counts bytes and keeps none.
        struct Count(u64);
        impl Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        Ok(self.write_newc(Count(0), mtime)?.0)
    }

    /// Writes the archive to `out` as `format` (through a temporary file renamed
    /// into place, so a failed build never leaves a half-written initrd) and
    /// returns its size in bytes.
    pub fn write(&self, out: &Path, mtime: u32, format: InitrdFormat) -> Result<u64> {
        let tmp = temp_path(out);
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let file = BufWriter::with_capacity(1 << 20, file);
        let writer = match format {
            InitrdFormat::None => self.write_newc(file, mtime)?,
            InitrdFormat::Gzip => {
                // No file name, mtime 0 and a fixed OS byte: gzip's header adds
                // nothing that varies between machines.
                let encoder =
                    flate2::GzBuilder::new().mtime(0).operating_system(3).write(file, flate2::Compression::best());
                let encoder = self.write_newc(encoder, mtime)?;
                encoder.finish().map_err(|e| Error::io("compress into", &tmp, e))?
            }
        };
        let file = writer.into_inner().map_err(|e| Error::io("write", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, out).map_err(|e| Error::io("rename into place", out, e))?;
        Ok(std::fs::metadata(out).map_err(|e| Error::io("inspect", out, e))?.len())
    }

    /// [`Initramfs::write`] as gzip.
    pub fn write_gzip(&self, out: &Path, mtime: u32) -> Result<u64> {
        self.write(out, mtime, InitrdFormat::Gzip)
    }

    /// One line per entry (`mode size path [-> target]`), in archive order: a
    /// reviewable listing of what went into the image.
    pub fn listing(&self) -> Result<String> {
        let mut out = String::new();
        for (name, node) in &self.entries {
            let line = match node {
                Node::Dir { mode } => format!("d {mode:04o} {:>10} {name}\n", "-"),
                Node::File { mode, source } => {
                    let size = match source {
                        Source::Bytes(data) => data.len() as u64,
                        Source::Path(path) => std::fs::metadata(path).map_err(|e| Error::io("inspect", path, e))?.len(),
                    };
                    format!("f {mode:04o} {size:>10} {name}\n")
                }
                Node::Symlink { target } => format!("l 0777 {:>10} {name} -> {target}\n", "-"),
                Node::CharDevice { mode, major, minor } => {
                    format!("c {mode:04o} {:>10} {name}\n", format!("{major},{minor}"))
                }
            };
            out.push_str(&line);
        }
        Ok(out)
    }

    fn insert(&mut self, name: String, node: Node) -> Result<()> {
        // Parents first: each must be (or become) a directory.
        let mut parent = name.as_str();
        let mut parents = Vec::new();
        while let Some((up, _)) = parent.rsplit_once('/') {
            parents.push(up.to_string());
            parent = up;
        }
        for dir in parents.into_iter().rev() {
            match self.entries.get(&dir) {
                None => {
                    self.entries.insert(dir, Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(Error::Entry { name, reason: format!("parent {dir} is not a directory") });
                }
            }
        }
        match (self.entries.get(&name), &node) {
            (None, _) | (Some(Node::Dir { .. }), Node::Dir { .. }) => {
                self.entries.insert(name, node);
                Ok(())
            }
            (Some(existing), _) => {
                Err(Error::Entry { name, reason: format!("already added as {}", kind_name(existing)) })
            }
        }
    }
}

/// How the image's initramfs is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdFormat {
    /// The newc archive as is.
    None,
    /// gzip, best compression.
    Gzip,
}

/// The format the images ship, chosen by total boot time (kernel start → API
/// answering) under TCG, not by size: unpacking in the guest costs more than
/// reading a bigger file (`cargo xtask bench-vm`; figures in
/// docs/benchmarks.md).
pub const IMAGE_INITRD_FORMAT: InitrdFormat = InitrdFormat::None;

/// Where first-party plugin bundles (`target/plugins/<id>/`) go in the image.
pub const PLUGINS_DIR: &str = "usr/lib/bronze/plugins";

/// Where the image's release name is (one line), which `bronzed` reports as
/// its version when it runs as PID 1: the release of the system, not only of
/// the binary. An upgrade bundle's initramfs may carry another; an archive
/// appended to an initramfs overrides it ([`release_overlay`]).
pub const RELEASE_PATH: &str = "etc/bronze-release";

/// A newc archive holding only [`RELEASE_PATH`] = `release`: appended to an
/// initramfs (the kernel unpacks concatenated archives in order, later files
/// replacing earlier ones), it makes that system report `release`.
pub fn release_overlay(release: &str, mtime: u32) -> Result<Vec<u8>> {
    let mut image = Initramfs::new();
    image.dir("etc", 0o755)?;
    image.bytes(RELEASE_PATH, format!("{release}\n"), 0o644)?;
    image.write_newc(Vec::new(), mtime)
}

/// Mount points and state directories PID 1 expects to find, with their modes.
pub const EMPTY_DIRS: [(&str, u32); 7] = [
    ("proc", 0o755),
    ("sys", 0o755),
    ("dev", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("var/lib/bronze", 0o755),
    ("etc", 0o755),
];

/// The Bronze initramfs: `init` (the static `bronzed`), `dev/console` (5, 1),
/// [`EMPTY_DIRS`], the modules of `modules` under `lib/modules/<release>/` with
/// depmod's index files beside them, the boot modules' load order at
/// [`crate::kmod::LOAD_ORDER_PATH`] and the others' at
/// [`crate::kmod::ON_DEMAND_PATH`], and the plugin bundles of
/// `plugins` (if given) under [`PLUGINS_DIR`], and `release` at
/// [`RELEASE_PATH`].
pub fn bronze_initramfs(init: &Path, modules: &LoadPlan, plugins: Option<&Path>, release: &str) -> Result<Initramfs> {
    let mut image = Initramfs::new();
    image.file("init", init, 0o755)?;
    for (dir, mode) in EMPTY_DIRS {
        image.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for /init's stdio before anything can mount
    // devtmpfs; without the node, PID 1 starts with no stdin/stdout/stderr.
    image.char_device("dev/console", 0o600, 5, 1)?;
    image.bytes(RELEASE_PATH, format!("{release}\n"), 0o644)?;
    for module in &modules.modules {
        let path = module.path.to_str().ok_or_else(|| Error::Entry {
            name: module.path.display().to_string(),
            reason: "module path is not UTF-8".into(),
        })?;
        image.file(&format!("lib/modules/{}/{path}", modules.release), &module.source, 0o644)?;
    }
    image.bytes(crate::kmod::LOAD_ORDER_PATH, modules.load_order(), 0o644)?;
    image.bytes(crate::kmod::ON_DEMAND_PATH, modules.on_demand_order(), 0o644)?;
    let depmod = modules.depmod_files();
    let release_dir = format!("lib/modules/{}", modules.release);
    image.bytes(&format!("{release_dir}/modules.dep"), depmod.dep, 0o644)?;
    image.bytes(&format!("{release_dir}/modules.softdep"), depmod.softdep, 0o644)?;
    image.bytes(&format!("{release_dir}/modules.alias"), depmod.alias, 0o644)?;
    if let Some(builtin) = &modules.builtin {
        image.bytes(&format!("{release_dir}/modules.builtin"), builtin.clone(), 0o644)?;
    }
    if let Some(plugins) = plugins {
        image.tree(PLUGINS_DIR, plugins)?;
    }
    Ok(image)
}

/// 0755 if any execute bit of `mode` is set, else 0644.
pub fn normalized_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 { 0o755 } else { 0o644 }
}

/// The file type name of a node, for messages.
fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Dir { .. } => "a directory",
        Node::File { .. } => "a file",
        Node::Symlink { .. } => "a symlink",
        Node::CharDevice { .. } => "a device",
    }
}

/// Checks an archive path and drops a leading `/`: no empty, `.` or `..` components.
fn normalize(path: &str) -> Result<String> {
    let trimmed = path.trim_start_matches('/');
    let ok = !trimmed.is_empty()
        && !trimmed.contains('\0')
        && trimmed.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !ok {
        return Err(Error::Entry { name: path.to_string(), reason: "not a clean relative path".into() });
    }
    Ok(trimmed.to_string())
}

/// `out` with `.tmp` appended to its file name.
pub(crate) fn temp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    out.with_file_name(name)
}

/// The file type of a newc mode, for tests and listings.
pub fn file_type(mode: u32) -> u32 {
    mode & S_IFMT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio;
    use std::os::unix::fs::PermissionsExt;

    /// A small source tree: nested dirs, an executable, a symlink.
    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/data.bin"), vec![7u8; 1001]).unwrap();
        std::fs::write(root.join("a.txt"), "hello\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o664)).unwrap();
        std::os::unix::fs::symlink("b/c/data.bin", root.join("link")).unwrap();
        dir
    }

    fn sample_image(tree: &Path) -> Initramfs {
        let mut image = Initramfs::new();
        image.file("/init", tree.join("run.sh"), 0o755).unwrap();
        image.char_device("/dev/console", 0o600, 5, 1).unwrap();
        for dir in ["/proc", "/sys", "/run", "/tmp", "/var/lib/bronze", "/etc"] {
            image.dir(dir, 0o755).unwrap();
        }
        image.tree("usr/lib/bronze/plugins", tree).unwrap();
        image
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let tree = sample_tree();
        let out = tempfile::tempdir().unwrap();
        let first = out.path().join("one.gz");
        let second = out.path().join("two.gz");
        sample_image(tree.path()).write_gzip(&first, 0).unwrap();
        // Touch the inputs: new mtimes must not change the output.
        std::fs::write(tree.path().join("a.txt"), "hello\n").unwrap();
        sample_image(tree.path()).write_gzip(&second, 0).unwrap();
        let (a, b) = (std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
        assert!(!a.is_empty());
        assert_eq!(a, b, "two builds from the same tree differ");
        assert_eq!(sample_image(tree.path()).write_newc(Vec::new(), 0).unwrap(), {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&a[..]).read_to_end(&mut raw).unwrap();
            raw
        });
        // Uncompressed: the same archive, byte for byte, and no temp file left.
        let plain = out.path().join("initramfs.cpio");
        let size = sample_image(tree.path()).write(&plain, 0, InitrdFormat::None).unwrap();
        let bytes = std::fs::read(&plain).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes, sample_image(tree.path()).write_newc(Vec::new(), 0).unwrap());
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 3);
    }

    #[test]
    fn archive_parses_back_with_fixed_metadata() {
        let tree = sample_tree();
        let raw = sample_image(tree.path()).write_newc(Vec::new(), 1_700_000_000).unwrap();
        let entries = cpio::parse(&raw).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "entries are in byte order");
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "etc",
                "init",
                "proc",
                "run",
                "sys",
                "tmp",
                "usr",
                "usr/lib",
                "usr/lib/bronze",
                "usr/lib/bronze/plugins",
                "usr/lib/bronze/plugins/a.txt",
                "usr/lib/bronze/plugins/b",
                "usr/lib/bronze/plugins/b/c",
                "usr/lib/bronze/plugins/b/c/data.bin",
                "usr/lib/bronze/plugins/link",
                "usr/lib/bronze/plugins/run.sh",
                "var",
                "var/lib",
                "var/lib/bronze",
            ]
        );
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.header.ino as usize, i + 1, "{}", entry.name);
            assert_eq!((entry.header.uid, entry.header.gid), (0, 0), "{}", entry.name);
            assert_eq!(entry.header.mtime, 1_700_000_000, "{}", entry.name);
        }
        let by_name = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        let console = by_name("dev/console");
        assert_eq!(console.header.mode, S_IFCHR | 0o600);
        assert_eq!((console.header.rdev_major, console.header.rdev_minor), (5, 1));
        assert_eq!(by_name("init").header.mode, S_IFREG | 0o755);
        assert_eq!(by_name("init").data, b"#!/bin/sh\n");
        assert_eq!(by_name("usr/lib/bronze/plugins/a.txt").header.mode, S_IFREG | 0o644, "0664 normalised");
        assert_eq!(by_name("usr/lib/bronze/plugins/run.sh").header.mode, S_IFREG | 0o755, "0700 normalised");
        assert_eq!(by_name("usr/lib/bronze/plugins/b/c/data.bin").data.len(), 1001);
        let link = by_name("usr/lib/bronze/plugins/link");
        assert_eq!(file_type(link.header.mode), S_IFLNK);
        assert_eq!(link.data, b"b/c/data.bin");
        assert_eq!(by_name("var/lib/bronze").header.mode, S_IFDIR | 0o755);
    }

    #[test]
    fn bronze_layout_has_init_console_dirs_modules_and_plugins() {
        let tree = sample_tree();
        let ko = tree.path().join("b/c/data.bin");
        let module = |name: &str, path: &str| crate::kmod::Module {
            name: name.into(),
            path: path.into(),
            source: ko.clone(),
            info: crate::kmod::ModInfo::default(),
            origin: crate::kmod::Origin::Listed,
        };
        let plan = LoadPlan {
            release: "6.1.0-9-amd64".into(),
            modules: vec![
                module("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"),
                module("virtio", "kernel/drivers/virtio/virtio.ko"),
            ],
            notes: vec![],
            builtin: Some("kernel/lib/crc32.ko\n".into()),
        };
        let image = bronze_initramfs(&tree.path().join("run.sh"), &plan, Some(tree.path()), "v0.1.0-test").unwrap();
        let raw = image.write_newc(Vec::new(), 0).unwrap();
        assert_eq!(image.newc_size(0).unwrap(), raw.len() as u64);
        let entries = cpio::parse(&raw).unwrap();
        let by_name = |name: &str| entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(by_name("init").header.mode, S_IFREG | 0o755);
        assert_eq!(by_name("tmp").header.mode, S_IFDIR | 0o1777);
        assert_eq!(by_name("dev/console").header.mode, S_IFCHR | 0o600);
        assert_eq!(by_name("lib/modules/6.1.0-9-amd64/kernel/drivers/virtio/virtio.ko").data.len(), 1001);
        assert_eq!(
            String::from_utf8(by_name("lib/modules/bronze-load-order").data.clone()).unwrap(),
            "6.1.0-9-amd64/kernel/drivers/virtio/virtio_ring.ko\n6.1.0-9-amd64/kernel/drivers/virtio/virtio.ko\n"
        );
        let text = |name: &str| String::from_utf8(by_name(name).data.clone()).unwrap();
        assert_eq!(text("lib/modules/bronze-on-demand"), "", "every module of the plan loads at boot");
        assert_eq!(
            text("lib/modules/6.1.0-9-amd64/modules.dep"),
            "kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko:\n"
        );
        assert_eq!(text("lib/modules/6.1.0-9-amd64/modules.builtin"), "kernel/lib/crc32.ko\n");
        by_name("lib/modules/6.1.0-9-amd64/modules.softdep");
        by_name("lib/modules/6.1.0-9-amd64/modules.alias");
        assert_eq!(by_name("usr/lib/bronze/plugins/a.txt").data, b"hello\n");
        for (dir, _) in EMPTY_DIRS {
            assert_eq!(file_type(by_name(dir).header.mode), S_IFDIR, "{dir}");
        }
        assert_eq!(text(RELEASE_PATH), "v0.1.0-test\n");
    }

    #[test]
    fn a_release_overlay_is_an_archive_of_the_release_file_alone() {
        let raw = release_overlay("v0.2.0-test", 0).unwrap();
        let entries = cpio::parse(&raw).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["etc", RELEASE_PATH]);
        assert_eq!(entries[1].data, b"v0.2.0-test\n");
        assert_eq!(entries[1].header.mode, S_IFREG | 0o644);
        assert_eq!(raw.len() % 4, 0, "another archive can follow it");
    }

    #[test]
    fn conflicts_and_bad_paths_are_refused() {
        let mut image = Initramfs::new();
        image.bytes("etc/hostname", "node\n", 0o644).unwrap();
        let err = image.dir("etc/hostname", 0o755).unwrap_err();
        assert_eq!(err.to_string(), "initramfs entry etc/hostname: already added as a file");
        let err = image.bytes("etc/hostname/x", "", 0o644).unwrap_err();
        assert_eq!(err.to_string(), "initramfs entry etc/hostname/x: parent etc/hostname is not a directory");
        for bad in ["", "/", "a/../b", "a//b", "./a"] {
            assert!(image.dir(bad, 0o755).is_err(), "{bad:?} accepted");
        }
        image.dir("etc", 0o700).unwrap();
        assert_eq!(image.entries().next(), Some(("etc", &Node::Dir { mode: 0o700 })));
    }
}
