//! [`VolumeSource`] for PID 1: the kernel's block devices, probed for an
//! iso9660 or vfat label by reading their superblocks, and mounted read-only
//! under `/run/bronze/volumes/<label>` the first time a plugin reads from
//! one (kept mounted: later reads reuse the mount).
//!
//! Probing reads at most [`PROBE_BYTES`] per device from `/dev/<name>`
//! (the boot sector and the iso9660 primary volume descriptor), for at most
//! [`MAX_DEVICES`] devices; a device that cannot be read is logged and
//! skipped, and so, silently, are empty ones: size 0 (unattached loop
//! devices) or a CD drive without a disc (`CDROM_DRIVE_STATUS`; its size is
//! made up, and reading it only fills the kernel log with I/O errors). Reads from a mounted volume open the file with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`) below the mount point, falling
//! back to a component walk with `O_NOFOLLOW` on kernels without `openat2`,
//! so no symlink on the volume leads anywhere, and are bounded like
//! [`super::volumes::read_bounded`].
//!
//! Mounting goes through [`Mounter`], so tests run on temp trees with the
//! recording fake of [`crate::init::fake`].

use super::volumes::{BlockDevice, VolumeError, VolumeSource};
use crate::init::mounts::{KernelMounter, MountSpec, Mounter};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where PID 1 mounts config drives.
pub const MOUNT_BASE: &str = "/run/bronze/volumes";
/// At most this many block devices are listed and probed.
pub const MAX_DEVICES: usize = 64;
/// At most this many `/sys/class/block` entries are looked at (names are
/// sorted before [`MAX_DEVICES`] applies).
const MAX_ENTRIES: usize = 4096;
/// Bytes read from each device: the boot sector and one iso9660 sector.
pub const PROBE_BYTES: usize = SECTOR_BYTES + ISO_SECTOR_BYTES;
/// Filesystems a volume may be mounted as.
pub const MOUNTABLE: &[&str] = &["iso9660", "vfat"];

const SECTOR_BYTES: usize = 512;
const ISO_SECTOR_BYTES: usize = 2048;
/// The iso9660 primary volume descriptor: sector 16 of 2048 bytes.
const ISO_PVD_OFFSET: u64 = 16 * ISO_SECTOR_BYTES as u64;
/// Longest device name taken from sysfs.
const MAX_NAME_BYTES: usize = 64;
/// Longest sysfs attribute read (`size`, `uevent`).
const MAX_ATTR_BYTES: u64 = 4096;

/// A filesystem recognised from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub fs_type: &'static str,
    pub label: Option<String>,
}

/// Recognises iso9660 from its primary volume descriptor (`pvd`: the 2048
/// bytes at offset 32768) and vfat from its boot sector (`boot`: the first
/// 512 bytes). Either may be short (a small device). iso9660 wins: hybrid
/// images carry a boot sector signature too.
pub fn probe(boot: &[u8], pvd: &[u8]) -> Option<Probed> {
    probe_iso9660(pvd).or_else(|| probe_vfat(boot))
}

/// Type 1 (primary) descriptor with `CD001` at byte 1; the volume
/// identifier is bytes 40..72, space-padded.
fn probe_iso9660(pvd: &[u8]) -> Option<Probed> {
    if pvd.first() != Some(&1) || pvd.get(1..6) != Some(b"CD001") {
        return None;
    }
    Some(Probed { fs_type: "iso9660", label: pvd.get(40..72).and_then(label_text) })
}

/// A boot sector ending in 0x55AA with `FAT12   `/`FAT16   ` at 54 (label
/// at 43..54) or `FAT32   ` at 82 (label at 71..82). `NO NAME` is no label.
fn probe_vfat(boot: &[u8]) -> Option<Probed> {
    if boot.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    let label_at = if matches!(boot.get(54..62), Some(b"FAT12   " | b"FAT16   ")) {
        43
    } else if boot.get(82..90) == Some(b"FAT32   ") {
        71
    } else {
        return None;
    };
    let label = boot.get(label_at..label_at + 11).and_then(label_text).filter(|l| l != "NO NAME");
    Some(Probed { fs_type: "vfat", label })
}

/// A label field without its padding (spaces, NULs); `None` when empty.
/// Bytes outside printable ASCII become `?`: a label is shown and compared,
/// never trusted.
fn label_text(raw: &[u8]) -> Option<String> {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = raw.iter().position(|b| !pad(b))?;
    let end = raw.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
    Some(raw[start..end].iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' }).collect())
}

/// The kernel's block devices, mounted read-only on demand.
pub struct KernelVolumes {
    /// sysfs root (`/sys`): `class/block/<name>/{size,uevent}`.
    sys: PathBuf,
    /// Device nodes (`/dev`).
    dev: PathBuf,
    /// Mount points are `<mount_base>/<label>`.
    mount_base: PathBuf,
    mounter: Arc<dyn Mounter>,
    /// Label → mount point of the volumes mounted so far.
    mounted: Mutex<BTreeMap<String, PathBuf>>,
}

impl std::fmt::Debug for KernelVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelVolumes")
            .field("sys", &self.sys)
            .field("dev", &self.dev)
            .field("mount_base", &self.mount_base)
            .finish_non_exhaustive()
    }
}

impl KernelVolumes {
    /// PID 1's source: `<sys>/class/block`, `/dev`, mounts under
    /// [`MOUNT_BASE`] with `mount(2)`.
    pub fn pid1(sys: &Path, dev: &Path) -> Self {
        Self::new(sys, dev, Path::new(MOUNT_BASE), Arc::new(KernelMounter))
    }

    pub fn new(sys: &Path, dev: &Path, mount_base: &Path, mounter: Arc<dyn Mounter>) -> Self {
        Self {
            sys: sys.to_path_buf(),
            dev: dev.to_path_buf(),
            mount_base: mount_base.to_path_buf(),
            mounter,
            mounted: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sorted `class/block` entry names, at most [`MAX_DEVICES`].
    pub(crate) fn device_names(&self) -> Vec<String> {
        let class = self.sys.join("class/block");
        let entries = match std::fs::read_dir(&class) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!(dir = %class.display(), error = %e, "no block devices");
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .take(MAX_ENTRIES)
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| safe_name(n))
            .collect();
        names.sort();
        if names.len() > MAX_DEVICES {
            tracing::warn!(found = names.len(), "more than {MAX_DEVICES} block devices; probing the first");
            names.truncate(MAX_DEVICES);
        }
        names
    }

    /// One device, or why it was skipped.
    fn device(&self, name: &str) -> Result<Option<BlockDevice>, String> {
        let sys_dev = self.sys.join("class/block").join(name);
        let size = read_attr(&sys_dev.join("size"))?;
        let sectors: u64 = size.trim().parse().map_err(|_| format!("size {:?} is not a number", size.trim()))?;
        // Unattached loop devices and empty drives: nothing to read.
        if sectors == 0 {
            return Ok(None);
        }
        let node = self.dev.join(node_name(&sys_dev).unwrap_or_else(|| name.to_string()));
        let file = open_device(&node).map_err(|e| format!("{}: {e}", node.display()))?;
        // An empty CD drive reports a made-up size; reading it only fills
        // the kernel log with I/O errors.
        if is_cd_drive(&sys_dev) && !cd_has_medium(&file) {
            tracing::debug!(device = %name, "no medium in the drive");
            return Ok(None);
        }
        let probed = probe_file(&file).map_err(|e| format!("{}: {e}", node.display()))?;
        Ok(Some(BlockDevice {
            name: name.to_string(),
            size_bytes: sectors.saturating_mul(512),
            fs_type: probed.as_ref().map(|p| p.fs_type.to_string()),
            label: probed.and_then(|p| p.label),
        }))
    }

    /// The mount point of the volume labelled `label`, mounting it first
    /// if this source has not yet.
    fn mount_point(&self, label: &str) -> Result<PathBuf, VolumeError> {
        if !safe_label(label) {
            return Err(VolumeError::NotFound(format!("no volume is labelled {label:?}")));
        }
        // Held across the mount: two first reads of one label mount once.
        let mut mounted = lock(&self.mounted);
        if let Some(point) = mounted.get(label) {
            return Ok(point.clone());
        }
        let target = self.mount_base.join(label);
        // Mounted by an earlier run of the node (an in-process restart).
        if self.mounter.is_mount_point(&target).unwrap_or(false) {
            mounted.insert(label.to_string(), target.clone());
            return Ok(target);
        }
        let devices = self.devices();
        let candidates: Vec<&BlockDevice> = devices
            .iter()
            .filter(|d| d.label.as_deref() == Some(label))
            .filter(|d| d.fs_type.as_deref().is_some_and(|t| MOUNTABLE.contains(&t)))
            .collect();
        let Some(device) = candidates.first() else {
            return Err(VolumeError::NotFound(format!("no iso9660 or vfat volume is labelled {label:?}")));
        };
        if candidates.len() > 1 {
            let names: Vec<&str> = candidates.iter().map(|d| d.name.as_str()).collect();
            tracing::warn!(label, devices = ?names, "several volumes carry this label; using the first");
        }
        let sys_dev = self.sys.join("class/block").join(&device.name);
        let node = self.dev.join(node_name(&sys_dev).unwrap_or_else(|| device.name.clone()));
        std::fs::create_dir_all(&target)
            .map_err(|e| VolumeError::Io(format!("cannot create mount point {}: {e}", target.display())))?;
        let spec = mount_spec(&node, &target, device.fs_type.as_deref().unwrap_or_default());
        self.mounter.mount(&spec).map_err(|e| VolumeError::Io(format!("cannot mount {spec}: {e}")))?;
        tracing::info!(label, device = %node.display(), fs = %spec.fstype, at = %target.display(), "volume mounted read-only");
        mounted.insert(label.to_string(), target.clone());
        Ok(target)
    }
}

/// The read-only mount of a config drive.
pub fn mount_spec(node: &Path, target: &Path, fstype: &str) -> MountSpec {
    MountSpec {
        source: node.to_string_lossy().into_owned(),
        target: target.to_path_buf(),
        fstype: fstype.to_string(),
        flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: None,
    }
}

impl VolumeSource for KernelVolumes {
    fn devices(&self) -> Vec<BlockDevice> {
        self.device_names()
            .into_iter()
            .filter_map(|name| match self.device(&name) {
                Ok(device) => device,
                Err(e) => {
                    tracing::warn!(device = %name, error = %e, "block device skipped");
                    None
                }
            })
            .collect()
    }

    fn read_file(&self, label: &str, path: &Path, max: u32) -> Result<Vec<u8>, VolumeError> {
        let point = self.mount_point(label)?;
        read_beneath(&point, path, max)
    }
}

/// Reads at most `max` bytes of `path` (relative, already checked by
/// [`super::volumes::check_path`]) below `dir`, following no symlink and
/// never leaving `dir`.
pub fn read_beneath(dir: &Path, path: &Path, max: u32) -> Result<Vec<u8>, VolumeError> {
    let shown = path.display().to_string();
    if path.as_os_str().is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(VolumeError::InvalidPath(format!("{shown:?}: expected a relative path")));
    }
    let fd = open_beneath(dir, path).map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => VolumeError::NotFound(shown.clone()),
        Errno::ELOOP | Errno::EXDEV => {
            VolumeError::NotFound(format!("{shown} is a symlink; symlinks are not followed"))
        }
        e => VolumeError::Io(format!("{shown}: {}", io::Error::from(e))),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| VolumeError::Io(format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(VolumeError::NotFound(format!("{shown} is not a regular file")));
    }
    if meta.len() > u64::from(max) {
        return Err(VolumeError::TooLarge(max));
    }
    let mut out = Vec::new();
    file.take(u64::from(max) + 1).read_to_end(&mut out).map_err(|e| VolumeError::Io(format!("{shown}: {e}")))?;
    if out.len() > max as usize {
        return Err(VolumeError::TooLarge(max));
    }
    Ok(out)
}

/// Flags for the final open: read-only; non-blocking so a FIFO on a
/// Rock Ridge volume cannot stall the read.
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
}

/// `openat2(dir, path, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or the same
/// by hand on kernels before 5.6.
fn open_beneath(dir: &Path, path: &Path) -> Result<OwnedFd, Errno> {
    let base = nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let how = OpenHow::new()
        .flags(file_flags())
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(base.as_fd(), path, how) {
        Err(Errno::ENOSYS) => walk_nofollow(base, path),
        other => other,
    }
}

/// Opens each component with `O_NOFOLLOW` (directories with `O_DIRECTORY`):
/// a symlink anywhere fails with `ELOOP` (or `ENOTDIR` for a directory
/// part). `path` has only normal components, so it cannot climb out.
fn walk_nofollow(base: OwnedFd, path: &Path) -> Result<OwnedFd, Errno> {
    let parts: Vec<Component<'_>> = path.components().collect();
    let mut at = base;
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else { return Err(Errno::EINVAL) };
        let last = i + 1 == parts.len();
        let flags = if last {
            file_flags() | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        at = nix::fcntl::openat(at.as_fd(), Path::new(name), flags, Mode::empty())?;
    }
    Ok(at)
}

/// A device node, read-only. `O_NONBLOCK`: a CD drive opens without a
/// medium (and without waiting for its tray).
pub(crate) fn open_device(node: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(node)
}

/// SCSI peripheral type of CD/DVD drives (`TYPE_ROM`), in `device/type`.
const SCSI_TYPE_ROM: &str = "5";
/// `CDROM_DRIVE_STATUS` (linux/cdrom.h), its "current slot" argument and
/// the answer for a readable disc. libc does not carry them.
const CDROM_DRIVE_STATUS: libc::c_ulong = 0x5326;
const CDSL_CURRENT: libc::c_int = libc::c_int::MAX;
const CDS_DISC_OK: libc::c_int = 4;

/// A CD/DVD drive (sr*), by the SCSI type of its device.
pub(crate) fn is_cd_drive(sys_dev: &Path) -> bool {
    read_attr(&sys_dev.join("device/type")).is_ok_and(|t| t.trim() == SCSI_TYPE_ROM)
}

/// Whether the drive holds a readable disc. A drive that cannot say (the
/// ioctl fails) counts as holding one: the probe then finds out.
#[allow(unsafe_code)]
pub(crate) fn cd_has_medium(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: CDROM_DRIVE_STATUS takes a plain integer (the slot) and
    // writes no memory; the descriptor is open for the whole call
    // (borrowed `file`). The request type differs between glibc and musl,
    // hence `as _`.
    let status = unsafe { libc::ioctl(file.as_raw_fd(), CDROM_DRIVE_STATUS as _, CDSL_CURRENT) };
    status < 0 || status == CDS_DISC_OK
}

/// The boot sector and the iso9660 primary volume descriptor of a device.
fn probe_file(file: &File) -> io::Result<Option<Probed>> {
    let mut boot = [0u8; SECTOR_BYTES];
    let boot_len = read_at_most(file, &mut boot, 0)?;
    let mut pvd = [0u8; ISO_SECTOR_BYTES];
    let pvd_len = read_at_most(file, &mut pvd, ISO_PVD_OFFSET)?;
    Ok(probe(&boot[..boot_len], &pvd[..pvd_len]))
}

/// Fills `buf` from `offset` until it is full or the device ends.
pub(crate) fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A sysfs attribute, at most [`MAX_ATTR_BYTES`].
pub(crate) fn read_attr(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_ATTR_BYTES).read_to_string(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// `DEVNAME=` of the device's uevent when it differs from the sysfs name
/// (`mapper/x`); never one that climbs out of `/dev`.
pub(crate) fn node_name(sys_dev: &Path) -> Option<String> {
    let uevent = read_attr(&sys_dev.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty() && Path::new(n).components().all(|c| matches!(c, Component::Normal(_))))
        .map(str::to_owned)
}

/// A sysfs block device name we are willing to put in a path.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'!'))
}

/// A label that is one plain path component (`VolumeLabel` allows `..`).
fn safe_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 32
        && !label.bytes().all(|b| b == b'.')
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::fake::{MountCall, RecordingMounter};
    use crate::plugins::volumes::MAX_FILE_BYTES;
    use std::process::Command;

    /// An iso9660 image of `size` bytes with a primary volume descriptor
    /// whose volume identifier is `label` (space-padded).
    fn iso_image(label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 40 * 2048];
        let pvd = &mut img[32768..32768 + 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[8..40].fill(b' ');
        pvd[40..72].fill(b' ');
        pvd[40..40 + label.len()].copy_from_slice(label.as_bytes());
        // The terminator that follows the PVD in a real image.
        img[34816] = 255;
        img[34817..34822].copy_from_slice(b"CD001");
        img
    }

    /// A FAT boot sector (FAT16 or FAT32 layout) labelled `label`.
    fn fat_image(fat32: bool, label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 64 * 1024];
        img[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        img[3..11].copy_from_slice(b"mkfs.fat");
        let (sig, label_at, type_at, kind) = if fat32 { (66, 71, 82, b"FAT32   ") } else { (38, 43, 54, b"FAT16   ") };
        img[sig] = 0x29;
        img[label_at..label_at + 11].fill(b' ');
        img[label_at..label_at + label.len()].copy_from_slice(label.as_bytes());
        img[type_at..type_at + 8].copy_from_slice(kind);
        img[510] = 0x55;
        img[511] = 0xAA;
        img
    }

    #[test]
    fn probes_iso9660_and_fat_superblocks() {
        let iso = iso_image("cidata");
        assert_eq!(
            probe(&iso[..512], &iso[32768..34816]),
            Some(Probed { fs_type: "iso9660", label: Some("cidata".into()) })
        );
        let fat16 = fat_image(false, "CIDATA");
        assert_eq!(
            probe(&fat16[..512], &fat16[32768..34816]),
            Some(Probed { fs_type: "vfat", label: Some("CIDATA".into()) })
        );
        let fat32 = fat_image(true, "config-2");
        assert_eq!(probe(&fat32[..512], &[]), Some(Probed { fs_type: "vfat", label: Some("config-2".into()) }));
        // mkfs.vfat's placeholder is no label; an empty ISO identifier neither.
        assert_eq!(probe(&fat_image(false, "NO NAME")[..512], &[]).unwrap().label, None);
        assert_eq!(probe(&[], &iso_image("")[32768..34816]).unwrap().label, None);
        // A hybrid image (boot sector signature and a PVD) is iso9660.
        let mut hybrid = iso_image("cidata");
        hybrid[..512].copy_from_slice(&fat_image(false, "OTHER")[..512]);
        assert_eq!(probe(&hybrid[..512], &hybrid[32768..34816]).unwrap().fs_type, "iso9660");
        // Not a filesystem we know: ext4, zeros, a signature without a FAT type,
        // a descriptor of another type, short reads.
        assert_eq!(probe(&[0u8; 512], &[0u8; 2048]), None);
        let mut no_type = fat_image(false, "X");
        no_type[54..62].copy_from_slice(b"NTFS    ");
        assert_eq!(probe(&no_type[..512], &[]), None);
        let mut boot_record = iso_image("x");
        boot_record[32768] = 0;
        assert_eq!(probe(&[], &boot_record[32768..34816]), None);
        assert_eq!(probe(&fat16[..100], &iso[32768..32770]), None);
        // Hostile bytes are shown, not trusted.
        let mut odd = iso_image("");
        odd[32768 + 40..32768 + 44].copy_from_slice(b"a\n\x1b\xff");
        assert_eq!(probe(&[], &odd[32768..34816]).unwrap().label.as_deref(), Some("a???"));
    }

    /// A fake system: `<dir>/sys/class/block/<name>/size`, `<dir>/dev/<name>`.
    struct Tree {
        dir: tempfile::TempDir,
        mounter: Arc<RecordingMounter>,
    }

    impl Tree {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("sys/class/block")).unwrap();
            std::fs::create_dir_all(dir.path().join("dev")).unwrap();
            Tree { dir, mounter: Arc::new(RecordingMounter::default()) }
        }

        fn device(&self, name: &str, image: &[u8]) {
            let sys = self.dir.path().join("sys/class/block").join(name);
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("size"), format!("{}\n", image.len() / 512)).unwrap();
            std::fs::write(sys.join("uevent"), format!("MAJOR=11\nMINOR=0\nDEVNAME={name}\nDEVTYPE=disk\n")).unwrap();
            std::fs::write(self.dir.path().join("dev").join(name), image).unwrap();
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn volumes(&self) -> KernelVolumes {
            let p = self.dir.path();
            KernelVolumes::new(&p.join("sys"), &p.join("dev"), &p.join("run/volumes"), self.mounter.clone())
        }
    }

    #[test]
    fn lists_block_devices_with_their_labels() {
        let t = Tree::new();
        t.device("sr0", &iso_image("cidata"));
        t.device("vdb", &fat_image(true, "CIDATA"));
        t.device("vda", &[0u8; 8192]);
        // An unattached loop device: size 0, not listed, never opened.
        std::fs::create_dir_all(t.path("sys/class/block/loop0")).unwrap();
        std::fs::write(t.path("sys/class/block/loop0/size"), "0\n").unwrap();
        // A device whose node is missing: logged and skipped.
        std::fs::create_dir_all(t.path("sys/class/block/vdc")).unwrap();
        std::fs::write(t.path("sys/class/block/vdc/size"), "8\n").unwrap();
        // A device with a broken size: skipped.
        std::fs::create_dir_all(t.path("sys/class/block/vdd")).unwrap();
        std::fs::write(t.path("sys/class/block/vdd/size"), "lots\n").unwrap();
        let devices = t.volumes().devices();
        assert_eq!(
            devices,
            [
                BlockDevice {
                    name: "sr0".into(),
                    size_bytes: 40 * 2048,
                    fs_type: Some("iso9660".into()),
                    label: Some("cidata".into())
                },
                BlockDevice { name: "vda".into(), size_bytes: 8192, fs_type: None, label: None },
                BlockDevice {
                    name: "vdb".into(),
                    size_bytes: 64 * 1024,
                    fs_type: Some("vfat".into()),
                    label: Some("CIDATA".into())
                },
            ]
        );
        assert!(t.mounter.calls().is_empty(), "listing mounts nothing");
    }

    #[test]
    fn a_cd_drive_is_asked_for_its_medium_first() {
        let t = Tree::new();
        t.device("sr0", &iso_image("cidata"));
        std::fs::create_dir_all(t.path("sys/class/block/sr0/device")).unwrap();
        std::fs::write(t.path("sys/class/block/sr0/device/type"), "5\n").unwrap();
        let sr0 = File::open(t.path("dev/sr0")).unwrap();
        assert!(is_cd_drive(&t.path("sys/class/block/sr0")));
        assert!(!is_cd_drive(&t.path("sys/class/block/nothing")));
        // A file cannot answer CDROM_DRIVE_STATUS (ENOTTY): it is probed.
        assert!(cd_has_medium(&sr0));
        assert_eq!(t.volumes().devices()[0].label.as_deref(), Some("cidata"));
    }

    #[test]
    fn at_most_64_devices_are_probed() {
        let t = Tree::new();
        for i in 0..70 {
            t.device(&format!("vd{i:03}"), &[0u8; 1024]);
        }
        let devices = t.volumes().devices();
        assert_eq!(devices.len(), MAX_DEVICES);
        assert_eq!(devices.last().unwrap().name, "vd063");
        let none = KernelVolumes::new(Path::new("/nonexistent"), Path::new("/dev"), Path::new("/x"), t.mounter.clone());
        assert!(none.devices().is_empty());
    }

    #[test]
    fn a_volume_is_mounted_read_only_once_and_read_beneath_its_mount_point() {
        let t = Tree::new();
        t.device("sr0", &iso_image("cidata"));
        t.device("vdb", &fat_image(false, "CIDATA"));
        let volumes = t.volumes();
        // The recording mounter mounts nothing: files put at the mount
        // point stand for the volume's contents.
        let point = t.path("run/volumes/cidata");
        std::fs::create_dir_all(point.join("openstack/latest")).unwrap();
        std::fs::write(point.join("meta-data"), "instance-id: i-1\n").unwrap();
        std::fs::write(point.join("openstack/latest/meta_data.json"), "{}").unwrap();
        assert_eq!(volumes.read_file("cidata", Path::new("meta-data"), MAX_FILE_BYTES).unwrap(), b"instance-id: i-1\n");
        assert_eq!(volumes.read_file("cidata", Path::new("openstack/latest/meta_data.json"), 10).unwrap(), b"{}");
        assert_eq!(
            volumes.read_file("cidata", Path::new("user-data"), 10),
            Err(VolumeError::NotFound("user-data".into()))
        );
        assert_eq!(volumes.read_file("cidata", Path::new("meta-data"), 4), Err(VolumeError::TooLarge(4)));
        // One mount for all of those, read-only and with nothing to execute.
        let expected = MountSpec {
            source: t.path("dev/sr0").display().to_string(),
            target: point.clone(),
            fstype: "iso9660".into(),
            flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        };
        assert_eq!(t.mounter.calls(), [MountCall::Mount(expected)]);
        // Labels are case-sensitive: CIDATA is the vfat one.
        volumes.read_file("CIDATA", Path::new("x"), 10).unwrap_err();
        let Some(MountCall::Mount(vfat)) = t.mounter.calls().pop() else { panic!("no second mount") };
        assert_eq!((vfat.fstype.as_str(), vfat.target), ("vfat", t.path("run/volumes/CIDATA")));
        assert_eq!(t.mounter.calls().len(), 2);
    }

    #[test]
    fn unknown_labels_and_failed_mounts_are_errors() {
        let t = Tree::new();
        t.device("sr0", &iso_image("cidata"));
        t.device("vda", &[0u8; 4096]);
        let volumes = t.volumes();
        assert_eq!(
            volumes.read_file("config-2", Path::new("x"), 10),
            Err(VolumeError::NotFound("no iso9660 or vfat volume is labelled \"config-2\"".into()))
        );
        for bad in ["..", ".", "a/b", ""] {
            assert!(matches!(volumes.read_file(bad, Path::new("x"), 10), Err(VolumeError::NotFound(_))), "{bad:?}");
        }
        assert!(t.mounter.calls().is_empty());
        t.mounter.fail(&t.path("run/volumes/cidata"), libc::ENODEV);
        let err = volumes.read_file("cidata", Path::new("meta-data"), 10).unwrap_err();
        let VolumeError::Io(message) = err else { panic!("{err:?}") };
        assert!(message.starts_with("cannot mount ") && message.ends_with("No such device (os error 19)"), "{message}");
        // A failed mount is not remembered: the next read tries again.
        volumes.read_file("cidata", Path::new("meta-data"), 10).unwrap_err();
        assert_eq!(t.mounter.calls().len(), 2);
    }

    #[test]
    fn a_mount_left_by_an_earlier_run_is_reused() {
        let t = Tree::new();
        let point = t.path("run/volumes/cidata");
        std::fs::create_dir_all(&point).unwrap();
        std::fs::write(point.join("meta-data"), "x").unwrap();
        t.mounter.set_mounted(&point);
        assert_eq!(t.volumes().read_file("cidata", Path::new("meta-data"), 10).unwrap(), b"x");
        assert!(t.mounter.calls().is_empty());
    }

    #[test]
    fn no_symlink_is_followed_and_nothing_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::fs::write(vol.join("sub/file"), "ok").unwrap();
        std::os::unix::fs::symlink("../secret", vol.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("sub/file", vol.join("inside")).unwrap();
        std::os::unix::fs::symlink("sub", vol.join("subdir")).unwrap();
        std::fs::create_dir(vol.join("adir")).unwrap();
        assert_eq!(read_beneath(&vol, Path::new("sub/file"), 10).unwrap(), b"ok");
        for link in ["up", "abs", "inside", "subdir/file"] {
            let err = read_beneath(&vol, Path::new(link), 10).unwrap_err();
            assert!(matches!(err, VolumeError::NotFound(_)), "{link}: {err:?}");
        }
        assert_eq!(
            read_beneath(&vol, Path::new("adir"), 10),
            Err(VolumeError::NotFound("adir is not a regular file".into()))
        );
        for bad in ["../secret", "/etc/hostname", ""] {
            assert!(matches!(read_beneath(&vol, Path::new(bad), 10), Err(VolumeError::InvalidPath(_))), "{bad:?}");
        }
        // The fallback for kernels without openat2 refuses the same links.
        let base = || nix::fcntl::open(&vol, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert!(walk_nofollow(base(), Path::new("sub/file")).is_ok());
        for link in ["up", "abs", "inside", "subdir/file"] {
            let err = walk_nofollow(base(), Path::new(link)).unwrap_err();
            assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{link}: {err}");
        }
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 100]).unwrap();
        assert_eq!(read_beneath(dir.path(), Path::new("big"), 99), Err(VolumeError::TooLarge(99)));
        assert_eq!(read_beneath(dir.path(), Path::new("big"), 100).unwrap().len(), 100);
    }

    /// Runs `program args`; `false` (and a note) when the tool is missing.
    fn tool(program: &str, args: &[&str]) -> bool {
        match Command::new(program).args(args).output() {
            Ok(out) => {
                assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("SKIPPED part: {program} is not installed (cargo xtask test installs it)");
                false
            }
            Err(e) => panic!("{program}: {e}"),
        }
    }

    #[test]
    fn images_made_by_the_real_tools_are_recognised() {
        let t = Tree::new();
        let seed = t.path("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: i-1\n").unwrap();
        std::fs::write(seed.join("user-data"), "#cloud-config\n").unwrap();
        let iso = t.path("seed.iso");
        let (iso_s, seed_s) = (iso.display().to_string(), seed.display().to_string());
        let mut expected = Vec::new();
        if tool("genisoimage", &["-quiet", "-output", &iso_s, "-V", "cidata", "-J", "-r", &seed_s]) {
            t.device("sr0", &std::fs::read(&iso).unwrap());
            expected.push(("sr0", "iso9660", "cidata"));
        }
        let vfat = t.path("seed.vfat");
        std::fs::write(&vfat, vec![0u8; 2 << 20]).unwrap();
        if tool("mkfs.vfat", &["-n", "CIDATA", &vfat.display().to_string()]) {
            t.device("vdb", &std::fs::read(&vfat).unwrap());
            expected.push(("vdb", "vfat", "CIDATA"));
        }
        let big = t.path("big.vfat");
        std::fs::write(&big, vec![0u8; 40 << 20]).unwrap();
        if tool("mkfs.vfat", &["-F", "32", "-n", "CONFIG-2", &big.display().to_string()]) {
            // Only the first sectors matter to the probe.
            let mut head = std::fs::read(&big).unwrap();
            head.truncate(64 * 1024);
            t.device("vdc", &head);
            expected.push(("vdc", "vfat", "CONFIG-2"));
        }
        let found: Vec<(String, String, String)> = t
            .volumes()
            .devices()
            .into_iter()
            .map(|d| (d.name, d.fs_type.unwrap_or_default(), d.label.unwrap_or_default()))
            .collect();
        let expected: Vec<(String, String, String)> =
            expected.into_iter().map(|(a, b, c)| (a.into(), b.into(), c.into())).collect();
        assert_eq!(found, expected);
    }
}
