//! Bronze's own kernel, built from Debian's `linux-source-6.1` package and the
//! fragment in `images/kernel/`.
//!
//! The build is `KCONFIG_ALLCONFIG=<fragment> make allnoconfig`, `make
//! olddefconfig`, the fragment check ([`crate::kconfig`]), and `make vmlinux
//! bzImage`, out of tree. Its results are cached outside `target/` (a `cargo
//! clean` must not cost a kernel build) under [`cache_root`], keyed by the
//! source package's version, the fragment's bytes and [`RECIPE`]: a second
//! build with the same inputs is a lookup. The extracted source and one build
//! directory per source version are kept too, so a changed fragment rebuilds
//! only what it changes.

use crate::cmd;
use crate::kconfig::Fragment;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Debian package holding the kernel source (as `/usr/src/<name>.tar.xz`).
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Bumped when the build steps change, so that cached kernels built the old
/// way are not reused.
pub const RECIPE: u32 = 1;

/// Fixed build metadata (`uname -v`, `/proc/version`) so that the same inputs
/// give the same kernel.
const BUILD_ENV: [(&str, &str); 4] = [
    ("KBUILD_BUILD_USER", "bronze"),
    ("KBUILD_BUILD_HOST", "bronze"),
    ("KBUILD_BUILD_VERSION", "1"),
    ("KBUILD_BUILD_TIMESTAMP", "Thu Jan  1 00:00:00 UTC 1970"),
];

/// The installed kernel source package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// The Debian package version, e.g. `6.1.192-3`.
    pub version: String,
    /// `/usr/src/linux-source-6.1.tar.xz`.
    pub tarball: PathBuf,
}

/// Where [`SOURCE_PACKAGE`] puts the source.
pub fn source_tarball() -> PathBuf {
    PathBuf::from(format!("/usr/src/{SOURCE_PACKAGE}.tar.xz"))
}

/// The installed [`SOURCE_PACKAGE`] (`dpkg-query`), or an error saying to
/// install it.
pub fn installed_source() -> Result<KernelSource> {
    let mut command = Command::new("dpkg-query");
    command.args(["-W", "-f=${Version}", SOURCE_PACKAGE]);
    let hint = format!("apt-get install {SOURCE_PACKAGE}");
    let output = cmd::output(&mut command, &hint)?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let tarball = source_tarball();
    if version.is_empty() || !tarball.is_file() {
        return Err(Error::KernelLayout {
            path: tarball,
            reason: format!("{SOURCE_PACKAGE} is not installed ({hint})"),
        });
    }
    Ok(KernelSource { version, tarball })
}

/// Where built kernels are cached: `$BRONZE_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/bronze/kernel`, else `~/.cache/bronze/kernel`.
pub fn cache_root() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("BRONZE_KERNEL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("bronze/kernel")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/bronze/kernel")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/bronze/kernel"))
}

/// The cache key of a build: SHA-256 of the recipe, the source version and
/// the fragment, 16 hex digits.
pub fn build_key(source_version: &str, fragment: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(format!("bronze-kernel recipe {RECIPE}\nsource {SOURCE_PACKAGE} {source_version}\n"));
    hash.update(fragment);
    hex::encode(&hash.finalize()[..8])
}

/// A built kernel in the cache.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    /// `<cache>/out/<key>/`.
    pub dir: PathBuf,
    pub key: String,
    /// The source package version it was built from.
    pub source_version: String,
    /// `uname -r` of the kernel (`make kernelrelease`).
    pub release: String,
    /// Whether this call built it (else it was in the cache).
    pub built_now: bool,
}

impl BuiltKernel {
    /// The uncompressed ELF kernel (qemu's PVH entry).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The bzImage with its EFI stub (firmware boot).
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The resolved `.config`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    /// `modules.builtin`: what is built in (the module names a node's
    /// config may still ask for).
    pub fn modules_builtin(&self) -> PathBuf {
        self.dir.join("modules.builtin")
    }

    fn open(dir: PathBuf, key: &str, source_version: &str, built_now: bool) -> Result<BuiltKernel> {
        let release_path = dir.join("release");
        let release =
            std::fs::read_to_string(&release_path).map_err(|e| Error::io("read", &release_path, e))?.trim().to_string();
        Ok(BuiltKernel { dir, key: key.into(), source_version: source_version.into(), release, built_now })
    }
}

/// The kernel source of `source` extracted under `cache` (once; a finished
/// extraction is renamed into place, so an interrupted one is redone).
pub fn source_tree(source: &KernelSource, cache: &Path) -> Result<PathBuf> {
    let dest = cache.join(format!("src-{}", source.version));
    let tree = dest.join(SOURCE_PACKAGE);
    if tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    let tmp = crate::initramfs::temp_path(&dest);
    for stale in [&tmp, &dest] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(|e| Error::io("remove", stale, e))?;
        }
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let mut command = Command::new("tar");
    command.arg("-xJf").arg(&source.tarball).arg("-C").arg(&tmp);
    cmd::output(&mut command, "apt-get install tar xz-utils")?;
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename into place", &dest, e))?;
    if !tree.join("Makefile").is_file() {
        return Err(Error::KernelLayout { path: tree, reason: "no Makefile after extracting the source".into() });
    }
    Ok(tree)
}

/// The extracted source tree of `source` if it is already in `cache`.
pub fn cached_source_tree(source: &KernelSource, cache: &Path) -> Option<PathBuf> {
    let tree = cache.join(format!("src-{}", source.version)).join(SOURCE_PACKAGE);
    tree.join("Makefile").is_file().then_some(tree)
}

fn make(tree: &Path, build_dir: &Path) -> Command {
    let mut command = Command::new("make");
    command.arg("-C").arg(tree).arg(format!("O={}", build_dir.display())).envs(BUILD_ENV);
    command
}

/// Resolves `fragment` over `allnoconfig` into `build_dir/.config` and checks
/// it: every option the fragment asks for must be set as asked, or the error
/// names each one that is not. Returns the resolved config.
pub fn configure(tree: &Path, build_dir: &Path, fragment_path: &Path) -> Result<String> {
    let fragment = Fragment::read(fragment_path)?;
    std::fs::create_dir_all(build_dir).map_err(|e| Error::io("create", build_dir, e))?;
    let hint = "apt-get install make gcc flex bison bc libelf-dev libssl-dev";
    let mut allno = make(tree, build_dir);
    allno.env("KCONFIG_ALLCONFIG", fragment_path).arg("allnoconfig");
    cmd::output(&mut allno, hint)?;
    let mut olddef = make(tree, build_dir);
    olddef.arg("olddefconfig");
    cmd::output(&mut olddef, hint)?;
    let config_path = build_dir.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(|e| Error::io("read", &config_path, e))?;
    let mismatches = fragment.check(&config);
    if !mismatches.is_empty() {
        return Err(Error::KconfigMismatch {
            fragment: fragment_path.to_path_buf(),
            config: config_path,
            mismatches: mismatches.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(config)
}

/// The kernel of `fragment_path` built from `source`: from the cache when
/// this source and fragment were built before, else built now with `jobs`
/// parallel jobs (the build's output goes to `<build dir>/bronze-build.log`;
/// a failure shows its tail).
pub fn build(source: &KernelSource, fragment_path: &Path, cache: &Path, jobs: usize) -> Result<BuiltKernel> {
    let fragment = std::fs::read(fragment_path).map_err(|e| Error::io("read", fragment_path, e))?;
    let key = build_key(&source.version, &fragment);
    let out = cache.join("out").join(&key);
    if out.join("vmlinux").is_file() {
        return BuiltKernel::open(out, &key, &source.version, false);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io("create", cache, e))?;
    // One build at a time per cache (the build directory is shared).
    let lock_path = cache.join("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    if out.join("vmlinux").is_file() {
        return BuiltKernel::open(out, &key, &source.version, false);
    }
    let tree = source_tree(source, cache)?;
    let build_dir = cache.join(format!("build-{}", source.version));
    configure(&tree, &build_dir, fragment_path)?;

    let log_path = build_dir.join("bronze-build.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
    let log_err = log.try_clone().map_err(|e| Error::io("open", &log_path, e))?;
    let mut kbuild = make(&tree, &build_dir);
    kbuild.arg(format!("-j{}", jobs.max(1))).args(["vmlinux", "bzImage"]);
    kbuild.stdin(Stdio::null()).stdout(log).stderr(log_err);
    let status = kbuild.status().map_err(|e| cmd::spawn_error(&kbuild, e, "apt-get install make gcc"))?;
    if !status.success() {
        let text = std::fs::read(&log_path).unwrap_or_default();
        return Err(Error::Command { command: cmd::display(&kbuild), status, stderr: cmd::tail(&text) });
    }
    let mut release = make(&tree, &build_dir);
    release.args(["-s", "kernelrelease"]);
    let release = String::from_utf8_lossy(&cmd::output(&mut release, "")?.stdout).trim().to_string();

    let tmp = crate::initramfs::temp_path(&out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let copy = |from: &Path, name: &str| -> Result<()> {
        let to = tmp.join(name);
        std::fs::copy(from, &to).map(|_| ()).map_err(|e| Error::io("copy", from, e))
    };
    copy(&build_dir.join("vmlinux"), "vmlinux")?;
    copy(&build_dir.join("arch/x86/boot/bzImage"), "bzImage")?;
    copy(&build_dir.join(".config"), "config")?;
    let builtin = build_dir.join("modules.builtin");
    if builtin.is_file() {
        copy(&builtin, "modules.builtin")?;
    } else {
        std::fs::write(tmp.join("modules.builtin"), b"").map_err(|e| Error::io("write", &tmp, e))?;
    }
    std::fs::write(tmp.join("release"), format!("{release}\n")).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::write(tmp.join("source"), format!("{SOURCE_PACKAGE} {}\n", source.version))
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &out).map_err(|e| Error::io("rename into place", &out, e))?;
    BuiltKernel::open(out, &key, &source.version, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_keys_follow_source_and_fragment() {
        let a = build_key("6.1.192-3", b"CONFIG_A=y\n");
        assert_eq!(a.len(), 16);
        assert_eq!(a, build_key("6.1.192-3", b"CONFIG_A=y\n"));
        assert_ne!(a, build_key("6.1.192-4", b"CONFIG_A=y\n"));
        assert_ne!(a, build_key("6.1.192-3", b"CONFIG_A=y\nCONFIG_B=y\n"));
    }

    /// The real kconfig drops an option it cannot set, and the check names
    /// it: BPF_JIT depends on MODULES (off in Bronze's kernel) and the last
    /// option does not exist. Needs the source tree `cargo xtask image`
    /// extracts into the cache.
    #[test]
    fn kconfig_drops_unsettable_options_and_the_check_names_them() {
        let tree = match installed_source() {
            Ok(source) => cached_source_tree(&source, &cache_root()),
            Err(_) => None,
        };
        let Some(tree) = tree else {
            eprintln!(
                "SKIPPED: no extracted {SOURCE_PACKAGE} under {} (run `cargo xtask image` first)",
                cache_root().display()
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let repo_fragment = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/bronze.config");
        let mut text = std::fs::read_to_string(&repo_fragment).unwrap();
        // The repo's fragment resolves as asked.
        let config = configure(&tree, &dir.path().join("good"), &repo_fragment).unwrap();
        assert!(config.contains("\nCONFIG_PVH=y\n"));
        text.push_str("CONFIG_BPF_JIT=y\nCONFIG_BRONZE_NO_SUCH_OPTION=y\n");
        let fragment = dir.path().join("bad.config");
        std::fs::write(&fragment, &text).unwrap();
        let err = configure(&tree, &dir.path().join("bad"), &fragment).unwrap_err();
        let Error::KconfigMismatch { mismatches, .. } = &err else { panic!("{err}") };
        assert_eq!(mismatches.len(), 2, "{err}");
        assert!(mismatches[0].contains("CONFIG_BPF_JIT asked y, got not set"), "{err}");
        assert!(mismatches[1].contains("CONFIG_BRONZE_NO_SUCH_OPTION asked y, got not set"), "{err}");
        assert!(err.to_string().contains("bad.config"), "{err}");
    }
}
