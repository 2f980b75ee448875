//! The bootable disk image: GPT with Bronze's EFI system partition (systemd-boot
//! at the firmware's fallback path, `loader.conf`, slot `a` holding the kernel
//! and the initramfs, and its entry) and the `BRONZE_STATE` ext4 partition.
//!
//! Built without root from plain files: the ESP is a FAT32 image made by
//! `mkfs.vfat` and filled by mtools' `mcopy`, the state partition an ext4
//! image made by `mke2fs`, the partition table written by `sfdisk` on the disk
//! file, and both partitions copied in at their offsets (sparse: runs of zeros
//! are skipped, so a 320 MiB disk costs what its files do). The partition
//! table's and partitions' ids and the FAT volume id are fixed, so two builds
//! of the same files differ only in the FAT timestamps mtools writes.
//!
//! Slot `b` starts empty; `bronzed` writes it on the first upgrade. The entry
//! names are [`bronze_boot`]'s: the image and the node share one grammar.

use crate::cmd;
use crate::{Error, Result};
use bronze_boot::{Entry, Esp, INITRD_FILE, KERNEL_FILE, Slot};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `systemd-boot-efi` installs the boot loader.
pub const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The ESP's size: two slots of kernel + initramfs and the loader.
pub const ESP_SIZE_MIB: u32 = 256;
/// The kernel command line of the disk's entries (before `bronze.slot=`):
/// the serial console, and a reboot 5 s after a panic, so a kernel or a PID 1
/// that dies runs its entry's tries down instead of hanging.
pub const DISK_OPTIONS: &str = "console=ttyS0 panic=5";
/// Sector size of the disk image.
const SECTOR: u64 = 512;
/// Where the first partition starts (1 MiB, the usual alignment).
const FIRST_LBA: u64 = 2048;
/// GPT partition type of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT partition type of a Linux file system.
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Fixed ids: the disk's, the ESP's, the state partition's (GPT), and the
/// FAT volume id.
const DISK_GUID: &str = "B7042E00-0000-4000-8000-000000000001";
const ESP_GUID: &str = "B7042E00-0000-4000-8000-000000000002";
const STATE_GUID: &str = "B7042E00-0000-4000-8000-000000000003";
const FAT_VOLUME_ID: &str = "B7042E00";

/// What goes into a disk image.
#[derive(Debug, Clone)]
pub struct BootDiskSpec {
    /// The EFI-stub kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The Bronze version slot `a` holds (its entry's title).
    pub release: String,
    /// The kernel command line before `bronze.slot=a`.
    pub options: String,
    /// The boot loader ([`SYSTEMD_BOOT_EFI`]).
    pub systemd_boot: PathBuf,
    /// The ESP's size in MiB.
    pub esp_mib: u32,
    /// The state partition's size in MiB.
    pub state_mib: u32,
}

impl BootDiskSpec {
    /// A disk of `kernel` and `initrd` with the default sizes, loader and options.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, release: impl Into<String>) -> BootDiskSpec {
        BootDiskSpec {
            kernel: kernel.into(),
            initrd: initrd.into(),
            release: release.into(),
            options: DISK_OPTIONS.to_string(),
            systemd_boot: PathBuf::from(SYSTEMD_BOOT_EFI),
            esp_mib: ESP_SIZE_MIB,
            state_mib: crate::disk::STATE_SIZE_MIB,
        }
    }
}

/// The most a slot's kernel and initramfs may take on an ESP of `esp_mib`:
/// half of it, less 8 MiB for the loader, the entries and FAT's own tables.
pub fn slot_capacity(esp_mib: u32) -> u64 {
    (u64::from(esp_mib) << 20) / 2 - (8 << 20)
}

/// Where the partitions of a built disk are, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDiskLayout {
    pub esp_offset: u64,
    pub esp_size: u64,
    pub state_offset: u64,
    pub state_size: u64,
    pub disk_size: u64,
}

impl BootDiskLayout {
    /// The layout of a disk with an ESP of `esp_mib` and a state partition
    /// of `state_mib`, 1 MiB aligned, with room for the backup GPT at the end.
    pub fn new(esp_mib: u32, state_mib: u32) -> BootDiskLayout {
        let esp_offset = FIRST_LBA * SECTOR;
        let esp_size = u64::from(esp_mib) << 20;
        let state_offset = esp_offset + esp_size;
        let state_size = u64::from(state_mib) << 20;
        BootDiskLayout {
            esp_offset,
            esp_size,
            state_offset,
            state_size,
            disk_size: state_offset + state_size + (1 << 20),
        }
    }

    /// The `sfdisk` script of this layout.
    pub fn sfdisk_script(&self) -> String {
        format!(
            "label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: {FIRST_LBA}\n\n\
             start={}, size={}, type={ESP_TYPE}, uuid={ESP_GUID}, name=\"{}\"\n\
             start={}, size={}, type={LINUX_TYPE}, uuid={STATE_GUID}, name=\"{}\"\n",
            self.esp_offset / SECTOR,
            self.esp_size / SECTOR,
            bronze_boot::ESP_LABEL,
            self.state_offset / SECTOR,
            self.state_size / SECTOR,
            crate::disk::STATE_LABEL,
        )
    }
}

/// Builds the disk image at `out` (replaced atomically), using `work` for
/// the partition images. Fails, naming the file, if the kernel and the
/// initramfs do not fit in a slot.
pub fn build(spec: &BootDiskSpec, out: &Path, work: &Path) -> Result<BootDiskLayout> {
    let layout = BootDiskLayout::new(spec.esp_mib, spec.state_mib);
    let kernel_size = crate::layout::file_size(&spec.kernel)?;
    let initrd_size = crate::layout::file_size(&spec.initrd)?;
    let capacity = slot_capacity(spec.esp_mib);
    if kernel_size + initrd_size > capacity {
        return Err(Error::Entry {
            name: format!("{} + {}", spec.kernel.display(), spec.initrd.display()),
            reason: format!(
                "{} bytes do not fit in a boot slot of {capacity} bytes (ESP of {} MiB)",
                kernel_size + initrd_size,
                spec.esp_mib
            ),
        });
    }
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| Error::io("remove", work, e))?;
    }
    // The ESP's tree, staged as files with bronze_boot's own writer.
    let stage = work.join("esp");
    std::fs::create_dir_all(&stage).map_err(|e| Error::io("create", &stage, e))?;
    let esp = Esp::new(&stage);
    esp.install_loader(&spec.systemd_boot).map_err(boot_error)?;
    let slot = esp.slot_dir(Slot::A);
    std::fs::create_dir_all(&slot).map_err(|e| Error::io("create", &slot, e))?;
    copy_file(&spec.kernel, &slot.join(KERNEL_FILE))?;
    copy_file(&spec.initrd, &slot.join(INITRD_FILE))?;
    let empty = esp.slot_dir(Slot::B);
    std::fs::create_dir_all(&empty).map_err(|e| Error::io("create", &empty, e))?;
    let entry = Entry { slot: Slot::A, generation: 1, release: spec.release.clone(), options: spec.options.clone() };
    esp.write_entry(&entry, None).map_err(boot_error)?;

    // The FAT32 image, filled from the stage.
    let esp_img = work.join("esp.img");
    let mut mkfs = Command::new(cmd::find_tool("mkfs.vfat").unwrap_or_else(|| "mkfs.vfat".into()));
    mkfs.args(["-C", "-F", "32", "-n", bronze_boot::ESP_LABEL, "-i", FAT_VOLUME_ID, "--invariant"])
        .arg(&esp_img)
        .arg((layout.esp_size / 1024).to_string());
    cmd::output(&mut mkfs, "apt-get install dosfstools")?;
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-m", "-i"]).arg(&esp_img);
    for top in ["EFI", "loader", "a", "b"] {
        mcopy.arg(stage.join(top));
    }
    mcopy.arg("::/").env("MTOOLS_SKIP_CHECK", "1");
    cmd::output(&mut mcopy, "apt-get install mtools")?;

    let state_img = work.join("state.img");
    crate::disk::ensure_state_disk(&state_img, spec.state_mib, true)?;

    let tmp = crate::initramfs::temp_path(out);
    {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.set_len(layout.disk_size).map_err(|e| Error::io("size", &tmp, e))?;
    }
    let mut sfdisk = Command::new(cmd::find_tool("sfdisk").unwrap_or_else(|| "sfdisk".into()));
    sfdisk.args(["--quiet", "--no-reread", "--no-tell-kernel"]).arg(&tmp);
    run_with_stdin(&mut sfdisk, layout.sfdisk_script().as_bytes(), "apt-get install fdisk")?;
    copy_into(&esp_img, &tmp, layout.esp_offset, layout.esp_size)?;
    copy_into(&state_img, &tmp, layout.state_offset, layout.state_size)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", &tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io("rename into place", out, e))?;
    // The partition images are in the disk now.
    std::fs::remove_dir_all(work).map_err(|e| Error::io("remove", work, e))?;
    Ok(layout)
}

/// The ESP inside a disk image file, through mtools at its offset: for
/// tests that read what the node or the boot loader wrote there (entry
/// names), or prepare a slot before a boot. The disk must not be in use.
#[derive(Debug, Clone)]
pub struct EspImage {
    /// `file@@offset`, mtools' spelling of a partition inside a disk image.
    target: String,
}

impl EspImage {
    /// The ESP of a disk built by [`build`] with an ESP of `esp_mib` MiB.
    pub fn open(disk: &Path, esp_mib: u32) -> EspImage {
        let layout = BootDiskLayout::new(esp_mib, crate::disk::STATE_SIZE_MIB);
        EspImage { target: format!("{}@@{}", disk.display(), layout.esp_offset) }
    }

    fn mtool(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>> {
        let mut command = Command::new(tool);
        command.arg("-i").arg(&self.target).args(args).env("MTOOLS_SKIP_CHECK", "1");
        Ok(cmd::output(&mut command, "apt-get install mtools")?.stdout)
    }

    /// The file names in `dir` (`loader/entries`), sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let out = self.mtool("mdir", &["-b", &format!("::/{dir}")])?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.trim_end_matches('/').rsplit('/').next().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The bytes of `path` (`loader/entries/bronze-a.conf`).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.mtool("mtype", &[&format!("::/{path}")])
    }

    /// Copies the local file `from` to `path` on the ESP, replacing it.
    pub fn put(&self, from: &Path, path: &str) -> Result<()> {
        let from = from.to_string_lossy();
        self.mtool("mcopy", &["-o", "-m", &from, &format!("::/{path}")]).map(|_| ())
    }

    /// Removes `path`.
    pub fn remove(&self, path: &str) -> Result<()> {
        self.mtool("mdel", &[&format!("::/{path}")]).map(|_| ())
    }
}

fn boot_error(e: bronze_boot::BootError) -> Error {
    match e {
        bronze_boot::BootError::Io { action, path, error } => Error::io(action, path, error),
        bronze_boot::BootError::Malformed { path, reason } => Error::Entry { name: path.display().to_string(), reason },
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| Error::io("copy", from, e))
}

/// Runs `cmd` with `input` on its stdin; fails unless it exits 0.
fn run_with_stdin(command: &mut Command, input: &[u8], hint: &str) -> Result<()> {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cmd::spawn_error(command, e, hint))?;
    child.stdin.take().expect("piped").write_all(input).map_err(|e| Error::io("write to", cmd::display(command), e))?;
    let output = child.wait_with_output().map_err(|e| Error::io("wait for", cmd::display(command), e))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: cmd::display(command),
            status: output.status,
            stderr: cmd::tail(&output.stderr),
        });
    }
    Ok(())
}

/// Copies the partition image `part` into `disk` at `offset`, skipping
/// blocks of zeros (the disk file is sparse); fails if `part` is larger than
/// the partition (`size`).
fn copy_into(part: &Path, disk: &Path, offset: u64, size: u64) -> Result<()> {
    const BLOCK: usize = 1 << 20;
    let len = crate::layout::file_size(part)?;
    if len > size {
        return Err(Error::Entry {
            name: part.display().to_string(),
            reason: format!("{len} bytes do not fit in its partition of {size} bytes"),
        });
    }
    let mut input = std::fs::File::open(part).map_err(|e| Error::io("open", part, e))?;
    let mut output = std::fs::OpenOptions::new().write(true).open(disk).map_err(|e| Error::io("open", disk, e))?;
    let mut buf = vec![0u8; BLOCK];
    let mut at = offset;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            let n = input.read(&mut buf[filled..]).map_err(|e| Error::io("read", part, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().any(|&b| b != 0) {
            output.seek(SeekFrom::Start(at)).map_err(|e| Error::io("seek in", disk, e))?;
            output.write_all(&buf[..filled]).map_err(|e| Error::io("write", disk, e))?;
        }
        at += filled as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_aligned_and_the_script_names_both_partitions() {
        let layout = BootDiskLayout::new(256, 64);
        assert_eq!(layout.esp_offset, 1 << 20);
        assert_eq!(layout.state_offset, 257 << 20);
        assert_eq!(layout.disk_size, 322 << 20);
        let script = layout.sfdisk_script();
        assert!(script.contains("start=2048, size=524288, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{script}");
        assert!(script.contains("name=\"BRONZE_EFI\"") && script.contains("name=\"BRONZE_STATE\""), "{script}");
        assert_eq!(slot_capacity(256), 120 << 20);
    }

    /// The real tools on real files: the GPT that `sfdisk --dump` reads back,
    /// the FAT volume `mdir` lists (loader, entry, slot files), the ext4 label.
    #[test]
    fn a_disk_built_from_files_has_the_gpt_the_esp_and_the_state_partition() {
        let missing: Vec<&str> = ["sfdisk", "mkfs.vfat", "mcopy", "mdir", "mke2fs"]
            .into_iter()
            .filter(|t| cmd::find_tool(t).is_none())
            .collect();
        if !missing.is_empty() {
            eprintln!("\n!!!!!!!! SKIPPED bootdisk build: {} not installed !!!!!!!!\n", missing.join(", "));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        let initrd = dir.path().join("initramfs.cpio");
        let loader = dir.path().join("systemd-bootx64.efi");
        std::fs::write(&kernel, vec![0x4du8; 300_000]).unwrap();
        std::fs::write(&initrd, b"070701 an initramfs").unwrap();
        std::fs::write(&loader, b"MZ a boot loader").unwrap();
        let mut spec = BootDiskSpec::new(&kernel, &initrd, "0.1.0-test");
        spec.systemd_boot = loader;
        spec.esp_mib = 64;
        spec.state_mib = 16;
        let out = dir.path().join("disk.img");
        let layout = build(&spec, &out, &dir.path().join("work")).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), layout.disk_size);

        let dump = Command::new(cmd::find_tool("sfdisk").unwrap()).arg("--dump").arg(&out).output().unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.contains("label: gpt") && dump.contains(&format!("label-id: {DISK_GUID}")), "{dump}");
        assert!(dump.contains("name=\"BRONZE_EFI\"") && dump.contains("name=\"BRONZE_STATE\""), "{dump}");

        // mtools reads the FAT at its offset in the disk.
        let esp = EspImage { target: format!("{}@@{}", out.display(), layout.esp_offset) };
        assert_eq!(esp.list("EFI/BOOT").unwrap(), ["BOOTX64.EFI"]);
        assert_eq!(esp.list("loader/entries").unwrap(), ["bronze-a.conf"]);
        assert_eq!(esp.list("a").unwrap(), ["initrd", "vmlinuz"]);
        assert_eq!(esp.list("b").unwrap(), [] as [String; 0]);
        assert_eq!(esp.read("a/initrd").unwrap(), b"070701 an initramfs");
        let entry = String::from_utf8(esp.read("loader/entries/bronze-a.conf").unwrap()).unwrap();
        let parsed = Entry::parse(&entry, Slot::A, Path::new("bronze-a.conf")).unwrap();
        assert_eq!((parsed.release.as_str(), parsed.generation), ("0.1.0-test", 1));
        assert!(entry.contains("options console=ttyS0 panic=5 bronze.slot=a"), "{entry}");
        // A test prepares a slot the same way.
        esp.put(&initrd, "b/initrd").unwrap();
        assert_eq!(esp.list("b").unwrap(), ["initrd"]);
        esp.remove("b/initrd").unwrap();
        assert!(esp.list("b").unwrap().is_empty());

        let mut superblock = vec![0u8; 2048];
        let mut file = std::fs::File::open(&out).unwrap();
        file.seek(SeekFrom::Start(layout.state_offset)).unwrap();
        file.read_exact(&mut superblock).unwrap();
        assert_eq!(&superblock[1024 + 120..1024 + 132], b"BRONZE_STATE");

        // A kernel and initramfs larger than a slot are refused, naming both.
        std::fs::write(&initrd, vec![1u8; slot_capacity(64) as usize]).unwrap();
        let err = build(&spec, &dir.path().join("big.img"), &dir.path().join("work2")).unwrap_err().to_string();
        assert!(err.contains("do not fit in a boot slot") && err.contains("initramfs.cpio"), "{err}");
        assert!(!dir.path().join("big.img").exists());
    }
}
