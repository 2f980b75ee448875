//! Where the image outputs live (`<target-dir>/images/`), the stripping of
//! `bronzed` for `/init`, and the size report.
//!
//! Sizes are figures we track like benchmarks (how big the kernel, the initramfs
//! and PID 1 are), so they are printed and kept in `sizes.txt` next to the image.

use crate::cmd;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which kernel an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// Bronze's own: built from `linux-source-6.1` and
    /// `images/kernel/bronze.config`, every driver built in, no modules.
    #[default]
    Bronze,
    /// Debian's generic `linux-image-*-amd64`, with the modules of
    /// `images/modules.txt` in the initramfs: for hardware the fragment does
    /// not cover.
    Debian,
}

impl KernelChoice {
    /// Both, Bronze's first.
    pub const ALL: [KernelChoice; 2] = [KernelChoice::Bronze, KernelChoice::Debian];

    /// `bronze` or `debian` (the spelling of `--kernel`).
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Bronze => "bronze",
            KernelChoice::Debian => "debian",
        }
    }

    /// Parses [`KernelChoice::name`].
    pub fn parse(text: &str) -> Option<KernelChoice> {
        KernelChoice::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// The files of a built image.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    /// `<target-dir>/images` (Bronze's kernel) or `<target-dir>/images/debian`.
    pub dir: PathBuf,
    pub kernel: KernelChoice,
}

impl ImageLayout {
    /// The default image (Bronze's kernel) under a cargo target directory.
    pub fn new(target_dir: &Path) -> Self {
        Self::with_kernel(target_dir, KernelChoice::Bronze)
    }

    /// The image booting `kernel` under a cargo target directory.
    pub fn with_kernel(target_dir: &Path, kernel: KernelChoice) -> Self {
        let dir = match kernel {
            KernelChoice::Bronze => target_dir.join("images"),
            KernelChoice::Debian => target_dir.join("images/debian"),
        };
        ImageLayout { dir, kernel }
    }

    /// Downloaded and unpacked kernel packages.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The bzImage (EFI stub; Bronze's kernel only).
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }

    /// The uncompressed kernel (booted through PVH).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The newc initramfs, stored as [`crate::initramfs::IMAGE_INITRD_FORMAT`].
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// What went into the initramfs, one line per entry.
    pub fn initrd_listing(&self) -> PathBuf {
        self.dir.join("initrd.list")
    }

    /// The stripped `bronzed` that is `/init`.
    pub fn init_binary(&self) -> PathBuf {
        self.dir.join("bronzed")
    }

    /// The bootable GPT disk image (ESP with systemd-boot and slot `a`, and
    /// the state partition): what firmware boots.
    pub fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// The raw ext4 state disk (of a direct kernel boot).
    pub fn state_disk(&self) -> PathBuf {
        self.dir.join("state.img")
    }

    /// The size report.
    pub fn sizes(&self) -> PathBuf {
        self.dir.join("sizes.txt")
    }

    /// The serial console of the last `cargo xtask vm`.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Whether a kernel and an initramfs have been built.
    pub fn is_built(&self) -> bool {
        self.vmlinux().is_file() && self.initrd().is_file()
    }
}

/// How much of a binary [`strip`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    /// Debug info only (`strip --strip-debug`): the symbol table stays, so panic
    /// backtraces still name functions.
    Debug,
    /// Everything not needed to run (`strip --strip-all`).
    All,
}

/// Writes a stripped copy of `input` to `output` (the input is left alone: it is
/// cargo's build output) and returns the copy's size.
pub fn strip(input: &Path, output: &Path, how: Strip) -> Result<u64> {
    let flag = match how {
        Strip::Debug => "--strip-debug",
        Strip::All => "--strip-all",
    };
    let mut command = Command::new("strip");
    command.arg(flag).arg("-o").arg(output).arg(input);
    cmd::output(&mut command, "apt-get install binutils")?;
    file_size(output)
}

/// The size of a file in bytes.
pub fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io("inspect", path, e))?.len())
}

/// Named sizes, in the order added.
#[derive(Debug, Clone, Default)]
pub struct SizeReport {
    /// What the image was built from (kernel package, release), shown as comments.
    pub about: Vec<String>,
    /// `(name, bytes)` pairs.
    pub sizes: Vec<(String, u64)>,
}

impl SizeReport {
    /// Adds a figure.
    pub fn add(&mut self, name: &str, bytes: u64) {
        self.sizes.push((name.to_string(), bytes));
    }

    /// A table: name, bytes, MiB; `#` lines first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.about {
            let _ = writeln!(out, "# {line}");
        }
        let width = self.sizes.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (name, bytes) in &self.sizes {
            let _ = writeln!(out, "{name:<width$}  {bytes:>11}  {:>8.2} MiB", *bytes as f64 / (1024.0 * 1024.0));
        }
        out
    }

    /// Writes [`SizeReport::render`] to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.render()).map_err(|e| Error::io("write", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_report_is_a_table() {
        let mut report = SizeReport { about: vec!["kernel linux-image-x".into()], ..SizeReport::default() };
        report.add("vmlinux", 3 << 20);
        report.add("initrd.gz", 1536);
        assert_eq!(
            report.render(),
            "# kernel linux-image-x\nvmlinux        3145728      3.00 MiB\ninitrd.gz         1536      0.00 MiB\n"
        );
    }

    #[test]
    fn layout_paths() {
        let layout = ImageLayout::new(Path::new("/w/target"));
        assert_eq!(layout.initrd(), Path::new("/w/target/images/initramfs.cpio"));
        assert_eq!(layout.cache_dir(), Path::new("/w/target/images/cache"));
        assert!(!layout.is_built());
        let debian = ImageLayout::with_kernel(Path::new("/w/target"), KernelChoice::Debian);
        assert_eq!(debian.vmlinux(), Path::new("/w/target/images/debian/vmlinux"));
        assert_eq!(KernelChoice::parse("debian"), Some(KernelChoice::Debian));
        assert_eq!(KernelChoice::parse("bronze"), Some(KernelChoice::Bronze));
        assert_eq!(KernelChoice::parse("fedora"), None);
    }
}
