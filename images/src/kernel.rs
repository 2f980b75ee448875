//! The kernel: Debian's current `linux-image-*-amd64` package, downloaded (never
//! installed) and unpacked into the cache, and its `vmlinux`.
//!
//! The package name changes with every ABI bump (security updates), so it is
//! resolved at build time from the `linux-image-amd64` metapackage. The `.deb` and
//! its unpacked tree are cached by package name under `target/images/cache/`.
//!
//! We boot the uncompressed ELF `vmlinux` through qemu's PVH entry: decompressing
//! the xz bzImage inside a TCG guest costs about 5 s; doing it once here costs one.

use crate::cmd;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The metapackage that always depends on the current kernel.
pub const METAPACKAGE: &str = "linux-image-amd64";

/// The first `linux-image-*` dependency in `apt-cache depends` output.
pub fn parse_apt_depends(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let rest = line.trim().trim_start_matches('|').strip_prefix("Depends:")?.trim();
        (rest.starts_with("linux-image-") && rest != METAPACKAGE).then(|| rest.to_string())
    })
}

/// Asks apt which kernel package [`METAPACKAGE`] currently depends on. Needs apt's
/// package lists (`apt-get update`).
pub fn resolve_package() -> Result<String> {
    let mut command = Command::new("apt-cache");
    command.args(["depends", METAPACKAGE]);
    let output = cmd::output(&mut command, "apt-cache comes with apt: build on Debian")?;
    parse_apt_depends(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| Error::KernelPackage { command: cmd::display(&command) })
}

/// The cached `.deb` of `package` in `cache_dir`, if any (the newest by name when
/// several versions were downloaded).
pub fn cached_deb(cache_dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(debs(cache_dir)?.into_iter().rev().find(|p| file_name(p).starts_with(&prefix)))
}

/// Every cached kernel `.deb`, sorted by file name.
pub fn debs(cache_dir: &Path) -> Result<Vec<PathBuf>> {
    if !cache_dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cache_dir).map_err(|e| Error::io("list", cache_dir, e))? {
        let path = entry.map_err(|e| Error::io("list", cache_dir, e))?.path();
        let name = file_name(&path);
        if name.starts_with("linux-image-") && name.ends_with(".deb") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The package name of a `.deb` file name (`name_version_arch.deb`).
pub fn package_of_deb(deb: &Path) -> String {
    file_name(deb).split('_').next().unwrap_or_default().to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Downloads `package` with `apt-get download` into `cache_dir`, unless a `.deb` of
/// it is already there. Returns the `.deb` and whether it was downloaded now.
pub fn download(package: &str, cache_dir: &Path) -> Result<(PathBuf, bool)> {
    if let Some(deb) = cached_deb(cache_dir, package)? {
        return Ok((deb, false));
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io("create", cache_dir, e))?;
    let mut command = Command::new("apt-get");
    command.arg("download").arg(package).current_dir(cache_dir);
    cmd::output(&mut command, "apt-get comes with apt: build on Debian")?;
    let deb = cached_deb(cache_dir, package)?.ok_or_else(|| Error::KernelLayout {
        path: cache_dir.to_path_buf(),
        reason: format!("`{}` left no {package}_*.deb", cmd::display(&command)),
    })?;
    Ok((deb, true))
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// The unpacked package root.
    pub root: PathBuf,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// `boot/vmlinuz-<release>`, the compressed bzImage.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// Unpacks `deb` with `dpkg -x` into `dest` (once: a finished unpack is marked and
/// reused) and finds the release, bzImage and module tree in it.
pub fn unpack(deb: &Path, dest: &Path) -> Result<KernelTree> {
    let marker = dest.join(".unpacked");
    if !marker.exists() {
        let tmp = crate::initramfs::temp_path(dest);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| Error::io("remove", dest, e))?;
        }
        let mut command = Command::new("dpkg");
        command.arg("-x").arg(deb).arg(&tmp);
        cmd::output(&mut command, "dpkg comes with Debian")?;
        std::fs::write(tmp.join(".unpacked"), format!("{}\n", deb.display()))
            .map_err(|e| Error::io("write", tmp.join(".unpacked"), e))?;
        std::fs::rename(&tmp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
    }
    locate(dest)
}

/// Finds the single release under `lib/modules` (or `usr/lib/modules`) of an
/// unpacked package and its `boot/vmlinuz-<release>`.
pub fn locate(root: &Path) -> Result<KernelTree> {
    let layout = |reason: String| Error::KernelLayout { path: root.to_path_buf(), reason };
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| root.join(dir))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| layout("no lib/modules directory".into()))?;
    let mut releases: Vec<String> = std::fs::read_dir(&modules_root)
        .map_err(|e| Error::io("list", &modules_root, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    let release = match releases.as_slice() {
        [one] => one.clone(),
        other => return Err(layout(format!("expected one release under lib/modules, found {other:?}"))),
    };
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(layout(format!("no boot/vmlinuz-{release}")));
    }
    Ok(KernelTree { root: root.to_path_buf(), modules_dir: modules_root.join(&release), release, vmlinuz })
}

/// The xz stream magic.
pub const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

/// Offsets of every xz stream header in `bytes`.
pub fn xz_offsets(bytes: &[u8]) -> Vec<usize> {
    bytes.windows(XZ_MAGIC.len()).enumerate().filter(|(_, window)| *window == XZ_MAGIC).map(|(i, _)| i).collect()
}

/// Extracts the uncompressed ELF kernel from the xz-compressed bzImage `vmlinuz`
/// into `out` and returns its size. Tries each xz header in turn (`xz -dc
/// --single-stream`, which ignores the bzImage bytes after the stream) until one
/// decompresses to an ELF file.
pub fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<u64> {
    let image = std::fs::read(vmlinuz).map_err(|e| Error::io("read", vmlinuz, e))?;
    let offsets = xz_offsets(&image);
    let tmp = crate::initramfs::temp_path(out);
    for &offset in &offsets {
        if decompress_xz(&image[offset..], &tmp).is_ok() && starts_with_elf(&tmp)? {
            std::fs::rename(&tmp, out).map_err(|e| Error::io("rename into place", out, e))?;
            return Ok(std::fs::metadata(out).map_err(|e| Error::io("inspect", out, e))?.len());
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(Error::NoVmlinux { path: vmlinuz.to_path_buf(), candidates: offsets.len() })
}

/// Pipes `data` through `xz -dc --single-stream` into the file `out`.
fn decompress_xz(data: &[u8], out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).map_err(|e| Error::io("create", out, e))?;
    let mut command = Command::new("xz");
    command.args(["-dc", "--single-stream"]).stdin(Stdio::piped()).stdout(file).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| cmd::spawn_error(&command, e, "apt-get install xz-utils"))?;
    let mut stdin = child.stdin.take();
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            // xz stops reading at the end of the stream: a broken pipe is expected.
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(data);
            }
            drop(stdin);
        });
        child.wait_with_output()
    })
    .map_err(|e| cmd::spawn_error(&command, e, ""))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: cmd::display(&command),
            status: output.status,
            stderr: cmd::tail(&output.stderr),
        });
    }
    Ok(())
}

fn starts_with_elf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    Ok(file.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_depends_output_names_the_kernel() {
        let output = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_apt_depends(output).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        let alternatives = "linux-image-amd64\n |Depends: linux-image-6.12.9-amd64\n  Depends: foo\n";
        assert_eq!(parse_apt_depends(alternatives).as_deref(), Some("linux-image-6.12.9-amd64"));
        assert_eq!(parse_apt_depends("linux-image-amd64\n"), None);
    }

    #[test]
    fn deb_names() {
        let deb = Path::new("/c/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb");
        assert_eq!(package_of_deb(deb), "linux-image-6.1.0-56-amd64");
    }

    #[test]
    fn xz_headers_are_found() {
        let mut blob = vec![0u8; 100];
        blob.extend_from_slice(XZ_MAGIC);
        blob.extend_from_slice(b"....");
        blob.extend_from_slice(XZ_MAGIC);
        assert_eq!(xz_offsets(&blob), [100, 110]);
    }

    #[test]
    fn vmlinux_is_found_behind_a_decoy_stream() {
        let Some(_) = cmd::find_tool("xz") else {
            eprintln!("skipped because xz is not installed");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let compress = |data: &[u8]| {
            let mut child = Command::new("xz")
                .args(["-c", "--check=crc32"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(data).unwrap();
            child.wait_with_output().unwrap().stdout
        };
        // A bzImage-like blob: setup code, a stream that is not ELF, the kernel, trailing data.
        let mut blob = b"MZ setup code".to_vec();
        blob.extend(compress(b"not a kernel"));
        blob.extend(compress(b"\x7fELF kernel body"));
        blob.extend_from_slice(b"trailer bytes");
        let vmlinuz = dir.path().join("vmlinuz");
        std::fs::write(&vmlinuz, &blob).unwrap();
        let out = dir.path().join("vmlinux");
        assert_eq!(extract_vmlinux(&vmlinuz, &out).unwrap(), 16);
        assert_eq!(std::fs::read(&out).unwrap(), b"\x7fELF kernel body");

        std::fs::write(&vmlinuz, b"no streams here").unwrap();
        let err = extract_vmlinux(&vmlinuz, &out).unwrap_err();
        assert!(err.to_string().ends_with("(0 xz header(s) tried)"), "{err}");
    }

    #[test]
    fn unpacked_layout_is_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib/modules/6.1.0-9-amd64/kernel")).unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        let err = locate(dir.path()).unwrap_err();
        assert!(err.to_string().ends_with("no boot/vmlinuz-6.1.0-9-amd64"), "{err}");
        std::fs::write(dir.path().join("boot/vmlinuz-6.1.0-9-amd64"), b"x").unwrap();
        let tree = locate(dir.path()).unwrap();
        assert_eq!(tree.release, "6.1.0-9-amd64");
        assert_eq!(tree.modules_dir, dir.path().join("lib/modules/6.1.0-9-amd64"));
    }
}
