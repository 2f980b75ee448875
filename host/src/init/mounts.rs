//! The early-boot mount plan as data, the [`Mounter`] that performs it, and
//! the state disk (the ext4 filesystem labelled `BRONZE_STATE`).
//!
//! Mount targets are absolute paths of the running system (`/proc`); every
//! function that touches the filesystem takes a `root` they hang off, so the
//! plan runs against a temp tree with a recording mounter in tests. Nothing
//! here decides policy beyond "already mounted is fine": callers log the
//! [`MountReport`].

use nix::mount::{MntFlags, MsFlags};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Label of the ext4 filesystem that holds `/var/lib/bronze`.
pub const STATE_LABEL: &str = "BRONZE_STATE";
/// The GPT partition name of Bronze's EFI system partition.
pub const ESP_LABEL: &str = bronze_boot::ESP_LABEL;

/// Where the state disk is mounted.
pub const STATE_MOUNT_POINT: &str = "/var/lib/bronze";

/// One mount: what `mount(2)` takes, with `target` absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    /// Filesystem options (`mode=1777`), passed as `mount(2)`'s data.
    pub data: Option<String>,
}

impl MountSpec {
    fn new(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Self {
        Self { source: source.into(), target: target.into(), fstype: fstype.into(), flags, data: data.map(Into::into) }
    }

    /// The same mount with its target moved under `root`.
    pub fn under(&self, root: &Path) -> MountSpec {
        MountSpec { target: rooted(root, &self.target), ..self.clone() }
    }
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} type {}", self.source, self.target.display(), self.fstype)?;
        let mut opts: Vec<&str> =
            FLAG_NAMES.iter().filter(|(fl, _)| self.flags.contains(*fl)).map(|(_, n)| *n).collect();
        if let Some(data) = &self.data {
            opts.push(data);
        }
        if !opts.is_empty() {
            write!(f, " ({})", opts.join(","))?;
        }
        Ok(())
    }
}

const FLAG_NAMES: &[(MsFlags, &str)] = &[
    (MsFlags::MS_RDONLY, "ro"),
    (MsFlags::MS_NOSUID, "nosuid"),
    (MsFlags::MS_NODEV, "nodev"),
    (MsFlags::MS_NOEXEC, "noexec"),
    (MsFlags::MS_RELATIME, "relatime"),
];

/// `path` (absolute or not) re-based under `root`.
pub fn rooted(root: &Path, path: &Path) -> PathBuf {
    let rel: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    root.join(rel)
}

/// The kernel filesystems PID 1 mounts, parents before children. `/dev`
/// keeps exec (some device files are mapped executable) but not suid; the
/// pseudo filesystems with no device or program files get all three flags.
pub fn early_mounts() -> Vec<MountSpec> {
    let strict = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    vec![
        MountSpec::new("proc", "/proc", "proc", strict, None),
        MountSpec::new("sysfs", "/sys", "sysfs", strict, None),
        MountSpec::new("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
        // gid 5 is the conventional `tty` group; ptmxmode lets unprivileged
        // programs open /dev/pts/ptmx.
        MountSpec::new(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        MountSpec::new("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, Some("mode=1777")),
        MountSpec::new("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=755")),
        MountSpec::new("tmpfs", "/tmp", "tmpfs", nosuid_nodev, Some("mode=1777")),
        // nsdelegate: cgroup namespaces become delegation boundaries, so a
        // container cannot write its parent's controls.
        MountSpec::new("cgroup2", "/sys/fs/cgroup", "cgroup2", strict, Some("nsdelegate")),
    ]
}

/// The state disk's mount. Not noexec: services may run programs kept there.
pub fn state_mount(device: &Path) -> MountSpec {
    MountSpec {
        source: device.to_string_lossy().into_owned(),
        target: PathBuf::from(STATE_MOUNT_POINT),
        fstype: "ext4".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME,
        data: None,
    }
}

/// Where the EFI system partition is mounted (Bronze's boot slots).
pub const ESP_MOUNT_POINT: &str = "/boot";

/// The ESP's mount: vfat, nothing executable or special on it, files
/// readable by root only, and remounted read-only on a FAT error instead of
/// spreading it.
pub fn esp_mount(device: &Path) -> MountSpec {
    MountSpec {
        source: device.to_string_lossy().into_owned(),
        target: PathBuf::from(ESP_MOUNT_POINT),
        fstype: "vfat".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME,
        data: Some("fmask=0077,dmask=0077,shortname=mixed,errors=remount-ro".into()),
    }
}

/// The device node of the GPT partition named `name` (its `PARTNAME=` in
/// `<root>/sys/class/block/*/uevent`), in name order; the first if several.
pub fn find_partition(root: &Path, name: &str) -> Option<PathBuf> {
    let class = root.join("sys/class/block");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&class)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let uevent = std::fs::read_to_string(entry.path().join("uevent")).ok()?;
            uevent.lines().any(|l| l.strip_prefix("PARTNAME=") == Some(name)).then_some(())?;
            let node = device_node_name(&entry.path())?;
            Some(root.join("dev").join(node))
        })
        .collect();
    found.sort();
    if found.len() > 1 {
        tracing::warn!(devices = ?found, "several partitions are named {name}; using the first");
    }
    found.into_iter().next()
}

/// `mount(2)` and friends, so the plan runs against a fake in tests.
pub trait Mounter: Send + Sync {
    /// Mounts `m` at `m.target` as given (already rooted).
    fn mount(&self, m: &MountSpec) -> io::Result<()>;

    fn unmount(&self, target: &Path) -> io::Result<()>;

    /// Whether something is already mounted at `target`, so a second boot
    /// step (or a kernel that auto-mounts devtmpfs) does not stack a second
    /// mount on top: proc and tmpfs happily mount twice without `EBUSY`.
    fn is_mount_point(&self, _target: &Path) -> io::Result<bool> {
        Ok(false)
    }

    /// Remounts `target` read-only: the fallback when a busy filesystem
    /// cannot be unmounted at shutdown, so it is clean before reboot(2).
    fn remount_read_only(&self, _target: &Path) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// The kernel's `mount(2)`/`umount2(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelMounter;

impl Mounter for KernelMounter {
    fn mount(&self, m: &MountSpec) -> io::Result<()> {
        nix::mount::mount(Some(m.source.as_str()), &m.target, Some(m.fstype.as_str()), m.flags, m.data.as_deref())
            .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, MntFlags::empty()).map_err(io::Error::from)
    }

    /// A mount point sits on another device than its parent. (A bind mount
    /// of the same filesystem would be missed; the early mounts are all
    /// fresh kernel filesystems.)
    fn is_mount_point(&self, target: &Path) -> io::Result<bool> {
        let meta = match std::fs::metadata(target) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(parent) = target.parent() else { return Ok(true) };
        let parent = std::fs::metadata(parent)?;
        Ok(meta.dev() != parent.dev())
    }

    fn remount_read_only(&self, target: &Path) -> io::Result<()> {
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
            .map_err(io::Error::from)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}: {error}")]
    CreateTarget { path: PathBuf, error: io::Error },
    #[error("cannot mount {fstype} on {target}: {error}")]
    Mount { fstype: String, target: PathBuf, error: io::Error },
    #[error("cannot unmount {target}: {error}")]
    Unmount { target: PathBuf, error: io::Error },
}

/// What [`mount_all`] did. Mounts are rooted (their targets under `root`).
#[derive(Debug, Default)]
pub struct MountReport {
    /// Mounted by this call, in order: what [`unmount_plan`] takes.
    pub mounted: Vec<MountSpec>,
    /// Found already mounted (or `EBUSY`): left alone, not unmounted later.
    pub already_mounted: Vec<MountSpec>,
    pub errors: Vec<MountError>,
}

impl MountReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Mounts the [`early_mounts`] under `root`.
pub fn mount_all(mounter: &dyn Mounter, root: &Path) -> MountReport {
    mount_each(mounter, root, &early_mounts())
}

/// Mounts `plan` under `root` in order. Each target directory is created
/// just before its mount (so `/dev/pts` is made inside the new devtmpfs). A
/// failure is recorded and the rest still mounted: a node without
/// `/dev/shm` is better than one that stops booting.
pub fn mount_each(mounter: &dyn Mounter, root: &Path, plan: &[MountSpec]) -> MountReport {
    let mut report = MountReport::default();
    for spec in plan {
        let m = spec.under(root);
        if let Err(error) = std::fs::create_dir_all(&m.target) {
            report.errors.push(MountError::CreateTarget { path: m.target.clone(), error });
            continue;
        }
        if mounter.is_mount_point(&m.target).unwrap_or(false) {
            report.already_mounted.push(m);
            continue;
        }
        match mounter.mount(&m) {
            Ok(()) => report.mounted.push(m),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => report.already_mounted.push(m),
            Err(error) => report.errors.push(MountError::Mount { fstype: m.fstype.clone(), target: m.target, error }),
        }
    }
    report
}

/// The order to unmount `mounted` in: the reverse of mounting, and children
/// before parents even if `mounted` came in another order (`/dev/pts`
/// before `/dev`).
pub fn unmount_plan(mounted: &[MountSpec]) -> Vec<PathBuf> {
    let mut targets: Vec<PathBuf> = mounted.iter().rev().map(|m| m.target.clone()).collect();
    // Stable: equal depths keep reverse-mount order.
    targets.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
    targets
}

/// Byte offset of the ext4 superblock on the device.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// Offsets inside the superblock.
const MAGIC_AT: usize = 56;
const LABEL_AT: usize = 120;
const LABEL_LEN: usize = 16;
const EXT_MAGIC: u16 = 0xEF53;

/// The volume label of an ext2/3/4 superblock (the 1024 bytes at device
/// offset 1024), or `None` if `superblock` is not one.
pub fn ext4_label(superblock: &[u8]) -> Option<String> {
    let magic = superblock.get(MAGIC_AT..MAGIC_AT + 2)?;
    if u16::from_le_bytes([magic[0], magic[1]]) != EXT_MAGIC {
        return None;
    }
    let raw = superblock.get(LABEL_AT..LABEL_AT + LABEL_LEN)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Reads the ext4 label of the device or image at `path`.
pub fn read_ext4_label(path: &Path) -> io::Result<Option<String>> {
    let mut sb = [0u8; 1024];
    File::open(path)?.read_exact_at(&mut sb, SUPERBLOCK_OFFSET)?;
    Ok(ext4_label(&sb))
}

/// The device node (under `root`) of the block device holding the ext4
/// filesystem labelled [`STATE_LABEL`], looking at every entry of
/// `<root>/sys/class/block` (disks and partitions) in name order, except
/// optical drives (a CD-ROM cannot hold a writable state disk, and opening
/// an empty one costs a round of ATAPI commands). Devices that cannot be
/// read are skipped. If several carry the label, the first
/// wins and the others are logged: the image builder should make one.
pub fn find_state_disk(root: &Path) -> Option<PathBuf> {
    let found = labelled_devices(root, STATE_LABEL);
    if found.len() > 1 {
        tracing::warn!(devices = ?found, "several block devices are labelled {STATE_LABEL}; using the first");
    }
    found.into_iter().next()
}

/// Device nodes under `root` whose ext4 label is `label`.
pub fn labelled_devices(root: &Path, label: &str) -> Vec<PathBuf> {
    let class = root.join("sys/class/block");
    let Ok(entries) = std::fs::read_dir(&class) else { return Vec::new() };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|name| may_hold_state(&class.join(name)))
        .map(|name| root.join("dev").join(device_node_name(&class.join(&name)).unwrap_or(name)))
        .filter(|node| match read_ext4_label(node) {
            Ok(l) => l.as_deref() == Some(label),
            Err(e) => {
                tracing::debug!(device = %node.display(), error = %e, "cannot read superblock");
                false
            }
        })
        .collect()
}

/// Whether `<root>/sys/class/block` lists any device that could hold the
/// state disk (unattached loop devices have size 0; an optical drive is
/// read-only): with none, no state disk is coming. A diskless VM with a
/// config drive does not wait for one.
pub fn has_block_devices(root: &Path) -> bool {
    let class = root.join("sys/class/block");
    std::fs::read_dir(&class).is_ok_and(|entries| entries.flatten().any(|e| may_hold_state(&e.path())))
}

/// A device worth reading a superblock from: not empty, not an optical drive.
fn may_hold_state(sys_dev: &Path) -> bool {
    !is_empty_device(sys_dev) && !is_optical_drive(sys_dev)
}

/// The block major of SCSI CD-ROM drives (`srN`: ATAPI, SATA, USB and
/// virtio-scsi optical drives alike), from the kernel's devices.txt.
const SCSI_CDROM_MAJOR: u32 = 11;

/// An optical drive: its `dev` attribute (`MAJOR:MINOR`) has the CD-ROM
/// major. An empty drive reports a non-zero size (the kernel's guess).
fn is_optical_drive(sys_dev: &Path) -> bool {
    std::fs::read_to_string(sys_dev.join("dev"))
        .ok()
        .and_then(|s| s.trim().split_once(':').and_then(|(major, _)| major.parse::<u32>().ok()))
        == Some(SCSI_CDROM_MAJOR)
}

/// `DEVNAME=` of the device's uevent (`vda1`, `mapper/x`), which can differ
/// from the sysfs entry name.
fn device_node_name(sys_dev: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(sys_dev.join("uevent")).ok()?;
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(str::to_owned).filter(|n| !n.contains(".."))
}

/// Size 0 (an unattached loop device, an empty drive): nothing to read.
fn is_empty_device(sys_dev: &Path) -> bool {
    std::fs::read_to_string(sys_dev.join("size")).ok().and_then(|s| s.trim().parse::<u64>().ok()) == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::fake::{MountCall, RecordingMounter};

    fn targets(specs: &[MountSpec]) -> Vec<String> {
        specs.iter().map(|m| m.target.display().to_string()).collect()
    }

    #[test]
    fn plan_has_every_kernel_filesystem_parents_first() {
        let plan = early_mounts();
        assert_eq!(targets(&plan), ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"]);
        for (i, m) in plan.iter().enumerate() {
            for parent in m.target.ancestors().skip(1) {
                if let Some(j) = plan.iter().position(|p| p.target == parent) {
                    assert!(j < i, "{} mounted before its parent {}", m.target.display(), parent.display());
                }
            }
        }
        let by_target = |t: &str| plan.iter().find(|m| m.target == Path::new(t)).unwrap().clone();
        assert_eq!(by_target("/dev/pts").data.as_deref(), Some("gid=5,mode=620,ptmxmode=666"));
        assert_eq!(by_target("/dev/shm").data.as_deref(), Some("mode=1777"));
        assert_eq!(by_target("/tmp").data.as_deref(), Some("mode=1777"));
        assert_eq!(by_target("/run").data.as_deref(), Some("mode=755"));
        assert_eq!(by_target("/dev").fstype, "devtmpfs");
        assert_eq!(by_target("/sys/fs/cgroup").fstype, "cgroup2");
        assert!(by_target("/proc").flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC));
        assert!(!by_target("/dev").flags.contains(MsFlags::MS_NODEV), "/dev must keep device nodes");
        for m in &plan {
            assert!(m.flags.contains(MsFlags::MS_NOSUID), "{m}");
        }
    }

    #[test]
    fn display_reads_like_proc_mounts() {
        let m = &early_mounts()[3];
        assert_eq!(m.to_string(), "devpts on /dev/pts type devpts (nosuid,noexec,gid=5,mode=620,ptmxmode=666)");
    }

    #[test]
    fn mount_all_creates_targets_under_root_and_mounts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let fake = RecordingMounter::default();
        let report = mount_all(&fake, dir.path());
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.mounted.len(), 8);
        for m in &report.mounted {
            assert!(m.target.starts_with(dir.path()));
            assert!(m.target.is_dir(), "{} not created", m.target.display());
        }
        let calls: Vec<PathBuf> = fake
            .calls()
            .into_iter()
            .map(|c| match c {
                MountCall::Mount(m) => m.target,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let expect: Vec<PathBuf> = early_mounts().iter().map(|m| rooted(dir.path(), &m.target)).collect();
        assert_eq!(calls, expect);
    }

    #[test]
    fn ebusy_and_existing_mounts_count_as_done_other_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fake = RecordingMounter::default();
        fake.fail(&dir.path().join("dev"), libc::EBUSY);
        fake.fail(&dir.path().join("tmp"), libc::EPERM);
        fake.set_mounted(&dir.path().join("proc"));
        let report = mount_all(&fake, dir.path());
        assert_eq!(
            targets(&report.already_mounted),
            [dir.path().join("proc").display().to_string(), dir.path().join("dev").display().to_string()]
        );
        assert_eq!(report.mounted.len(), 5);
        assert_eq!(report.errors.len(), 1);
        let msg = report.errors[0].to_string();
        assert!(msg.starts_with(&format!("cannot mount tmpfs on {}/tmp: ", dir.path().display())), "{msg}");
    }

    #[test]
    fn a_target_that_cannot_be_created_is_reported_and_the_rest_mounted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run"), "a file, not a dir").unwrap();
        let fake = RecordingMounter::default();
        let report = mount_all(&fake, dir.path());
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].to_string().starts_with("cannot create mount point "), "{}", report.errors[0]);
        assert_eq!(report.mounted.len(), 7);
    }

    #[test]
    fn unmount_order_is_reverse_and_children_first() {
        let plan = early_mounts();
        let order = unmount_plan(&plan);
        let order: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(order, ["/sys/fs/cgroup", "/dev/shm", "/dev/pts", "/tmp", "/run", "/dev", "/sys", "/proc"]);

        // Given out of order, a child still comes first.
        let shuffled = vec![plan[3].clone(), plan[2].clone(), state_mount(Path::new("/dev/vda"))];
        let order = unmount_plan(&shuffled);
        assert_eq!(order, [PathBuf::from("/var/lib/bronze"), PathBuf::from("/dev/pts"), PathBuf::from("/dev")]);
    }

    #[test]
    fn rooted_ignores_leading_slash_and_dotdot() {
        let root = Path::new("/tmp/x");
        assert_eq!(rooted(root, Path::new("/proc")), PathBuf::from("/tmp/x/proc"));
        assert_eq!(rooted(root, Path::new("/../etc")), PathBuf::from("/tmp/x/etc"));
        assert_eq!(rooted(Path::new("/"), Path::new("/dev/pts")), PathBuf::from("/dev/pts"));
    }

    fn superblock(label: &[u8], magic: u16) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[MAGIC_AT..MAGIC_AT + 2].copy_from_slice(&magic.to_le_bytes());
        sb[LABEL_AT..LABEL_AT + label.len()].copy_from_slice(label);
        sb
    }

    #[test]
    fn label_needs_the_ext_magic() {
        assert_eq!(ext4_label(&superblock(b"BRONZE_STATE", EXT_MAGIC)).as_deref(), Some("BRONZE_STATE"));
        assert_eq!(ext4_label(&superblock(b"BRONZE_STATE", 0x1234)), None);
        assert_eq!(ext4_label(&superblock(b"SIXTEEN_BYTES_LB", EXT_MAGIC)).as_deref(), Some("SIXTEEN_BYTES_LB"));
        assert_eq!(ext4_label(&[0u8; 100]), None);
    }

    /// A sysfs + dev tree: `sys/class/block/<name>` with optional uevent
    /// and size, and `dev/<node>` holding `image`.
    fn add_device(root: &Path, name: &str, devname: Option<&str>, size: Option<u64>, image: &[u8]) {
        let sys = root.join("sys/class/block").join(name);
        std::fs::create_dir_all(&sys).unwrap();
        if let Some(d) = devname {
            std::fs::write(sys.join("uevent"), format!("MAJOR=254\nMINOR=0\nDEVNAME={d}\nDEVTYPE=disk\n")).unwrap();
        }
        if let Some(s) = size {
            std::fs::write(sys.join("size"), format!("{s}\n")).unwrap();
        }
        let node = root.join("dev").join(devname.unwrap_or(name));
        std::fs::create_dir_all(node.parent().unwrap()).unwrap();
        std::fs::write(node, image).unwrap();
    }

    fn image_with(sb: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 1024];
        img.extend_from_slice(sb);
        img.resize(4096, 0);
        img
    }

    #[test]
    fn finds_the_labelled_device_among_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        add_device(root, "loop0", None, Some(0), &image_with(&superblock(b"BRONZE_STATE", EXT_MAGIC)));
        add_device(root, "vda", Some("vda"), Some(131072), &image_with(&superblock(b"OTHER", EXT_MAGIC)));
        add_device(root, "vdb", Some("vdb"), Some(131072), &[0u8; 100]); // too short to read
        add_device(root, "vdc", Some("disk/vdc"), None, &image_with(&superblock(b"BRONZE_STATE", EXT_MAGIC)));
        add_device(root, "vdd", None, None, &image_with(&superblock(b"BRONZE_STATE", EXT_MAGIC)));
        assert_eq!(labelled_devices(root, STATE_LABEL), [root.join("dev/disk/vdc"), root.join("dev/vdd")]);
        assert_eq!(find_state_disk(root), Some(root.join("dev/disk/vdc")));
        assert_eq!(labelled_devices(root, "NOPE"), Vec::<PathBuf>::new());
    }

    #[test]
    fn optical_drives_are_never_state_disks_and_do_not_make_the_boot_wait() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // An empty drive reports the kernel's guessed size; even a labelled
        // image in one is not opened.
        add_device(root, "sr0", Some("sr0"), Some(8388604), &image_with(&superblock(b"BRONZE_STATE", EXT_MAGIC)));
        std::fs::write(root.join("sys/class/block/sr0/dev"), "11:0\n").unwrap();
        assert_eq!(find_state_disk(root), None);
        assert!(!has_block_devices(root), "a CD-ROM alone is no reason to wait for a state disk");
        add_device(root, "vda", Some("vda"), Some(131072), &image_with(&superblock(b"BRONZE_STATE", EXT_MAGIC)));
        std::fs::write(root.join("sys/class/block/vda/dev"), "254:0\n").unwrap();
        assert!(has_block_devices(root));
        assert_eq!(find_state_disk(root), Some(root.join("dev/vda")));
    }

    #[test]
    fn no_sysfs_means_no_state_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_state_disk(dir.path()), None);
        assert!(!has_block_devices(dir.path()));
        add_device(dir.path(), "loop0", None, Some(0), &[]);
        assert!(!has_block_devices(dir.path()), "an unattached loop device holds nothing");
        add_device(dir.path(), "vda", None, Some(8), &[]);
        assert!(has_block_devices(dir.path()));
    }

    #[test]
    fn finds_a_real_mke2fs_image() {
        let mke2fs = Path::new("/usr/sbin/mke2fs");
        if !mke2fs.exists() {
            println!("skipped because /usr/sbin/mke2fs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/class/block/vdb")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        let image = root.join("dev/vdb");
        let out = std::process::Command::new(mke2fs)
            .args(["-q", "-F", "-L", STATE_LABEL, "-t", "ext4"])
            .arg(&image)
            .arg("8M")
            .output()
            .unwrap();
        assert!(out.status.success(), "mke2fs: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(read_ext4_label(&image).unwrap().as_deref(), Some(STATE_LABEL));
        let found = find_state_disk(root).unwrap();
        assert_eq!(found, image);
        let m = state_mount(&found);
        assert_eq!((m.target.as_path(), m.fstype.as_str()), (Path::new("/var/lib/bronze"), "ext4"));
        assert_eq!(m.source, image.display().to_string());
    }

    proptest::proptest! {
        #[test]
        fn label_parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1100)) {
            let _ = ext4_label(&bytes);
        }
    }
}
