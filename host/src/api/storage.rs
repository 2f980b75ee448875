//! `StorageService`: the mount table, the block devices and directory
//! sizes, read-only.
//!
//! Mount paths, device models, serials and labels are untrusted text (a
//! user can name a mount point or a filesystem label anything): every one
//! is escaped before it leaves the node. Block devices come from the same
//! sysfs scan and superblock probes as the plugins' volumes
//! ([`crate::plugins::volumes_kernel`]) and the state disk
//! ([`crate::init::mounts::ext4_label`]). `usage` walks one allowed root,
//! never following a symlink or entering another filesystem, bounded in
//! entries, depth and time.

use crate::api::context::ApiContext;
use crate::plugins::volumes_kernel::{self, KernelVolumes};
use bronze_api::v1 as pb;
use bronze_api::v1::storage_service_server::StorageService;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// At most this many mounts are listed.
pub const MAX_MOUNTS: usize = 4096;
/// Largest mountinfo read.
const MAX_MOUNTINFO_BYTES: u64 = 4 << 20;
/// Longest mount path or source shown (after escaping).
const MAX_TEXT: usize = 1024;
/// All statvfs calls of one listing together (a hung network filesystem
/// must not hang the RPC); mounts not asked by then say so.
const STATVFS_BUDGET: Duration = Duration::from_secs(3);
/// `usage`: entries visited, directory levels walked, time spent.
pub const USAGE_MAX_ENTRIES: u64 = 200_000;
const USAGE_MAX_WALK_DEPTH: usize = 64;
pub const USAGE_MAX_REPORT_DEPTH: u32 = 8;
const USAGE_BUDGET: Duration = Duration::from_secs(5);
/// `usage`: at most this many directories are reported.
const USAGE_MAX_REPORTED: usize = 10_000;
/// Fixed roots `usage` may walk (the state dir is added by the node).
pub const USAGE_ROOTS: &[&str] = &["/var/lib/bronze", "/var/log", "/run", "/tmp"];

pub struct StorageApi {
    pub node: Arc<ApiContext>,
}

/// The service, for [`super::serve`].
pub fn server(node: Arc<ApiContext>) -> bronze_api::v1::storage_service_server::StorageServiceServer<StorageApi> {
    bronze_api::v1::storage_service_server::StorageServiceServer::new(StorageApi { node })
}

/// Untrusted text made safe to show: one line, escaped, capped.
fn shown(text: &str) -> String {
    bronze_bundle::text::escape_within(text, MAX_TEXT).into_owned()
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// Raw bytes of the mount point (octal escapes decoded), for statvfs.
    pub target: PathBuf,
    pub source: String,
    pub filesystem: String,
    pub options: String,
}

/// Decodes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`) of a mountinfo field.
fn unescape_octal(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses mountinfo (`proc(5)`): `id parent major:minor root target
/// options [optional fields...] - fstype source super-options`. Malformed
/// lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mut h = head.split(' ');
            let mount_id = h.next()?.parse().ok()?;
            let parent_id = h.next()?.parse().ok()?;
            let _devno = h.next()?;
            let _root = h.next()?;
            let target = h.next()?;
            let mount_opts = h.next()?;
            let mut t = tail.split(' ');
            let filesystem = t.next()?;
            let source = t.next()?;
            let super_opts = t.next().unwrap_or("");
            let mut options: Vec<&str> = mount_opts.split(',').filter(|o| !o.is_empty()).collect();
            for o in super_opts.split(',').filter(|o| !o.is_empty()) {
                if !options.contains(&o) {
                    options.push(o);
                }
            }
            let source_bytes = unescape_octal(source);
            Some(MountEntry {
                mount_id,
                parent_id,
                target: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(target))),
                source: String::from_utf8_lossy(&source_bytes).into_owned(),
                filesystem: filesystem.to_string(),
                options: options.join(","),
            })
        })
        .collect()
}

/// Size, used and available bytes, or why `statvfs` failed.
type StatResult = Result<(u64, u64, u64), String>;

/// Size, used and available bytes of the filesystem mounted at `target`.
pub(crate) fn statvfs(target: &Path) -> StatResult {
    let s = nix::sys::statvfs::statvfs(target).map_err(|e| format!("statvfs: {}", io::Error::from(e)))?;
    let frag = s.fragment_size() as u64;
    let size = (s.blocks() as u64).saturating_mul(frag);
    let free = (s.blocks_free() as u64).saturating_mul(frag);
    let avail = (s.blocks_available() as u64).saturating_mul(frag);
    Ok((size, size.saturating_sub(free), avail))
}

/// The mount table of `<proc>/self/mountinfo` with statvfs figures: at most
/// [`MAX_MOUNTS`] (the flag says if more were left out), all statvfs calls
/// within [`STATVFS_BUDGET`].
pub async fn mounts(proc: &Path) -> Result<(Vec<pb::Mount>, bool), String> {
    let path = proc.join("self/mountinfo");
    let mut text = String::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_MOUNTINFO_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entries = parse_mountinfo(&text);
    let truncated = entries.len() > MAX_MOUNTS;
    entries.truncate(MAX_MOUNTS);
    let targets: Vec<PathBuf> = entries.iter().map(|e| e.target.clone()).collect();
    // One thread asks every mount in turn; whatever it has not answered by
    // the deadline is reported as timed out (the thread is left to finish).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for (i, t) in targets.iter().enumerate() {
            if tx.send((i, statvfs(t))).is_err() {
                return;
            }
        }
    });
    let mut stats: Vec<Option<StatResult>> = vec![None; entries.len()];
    let deadline = tokio::time::Instant::now() + STATVFS_BUDGET;
    while let Ok(Some((i, r))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        stats[i] = Some(r);
    }
    let mounts = entries
        .into_iter()
        .zip(stats)
        .map(|(e, stat)| {
            let (size, used, avail, err) = match stat {
                Some(Ok((s, u, a))) => (s, u, a, String::new()),
                Some(Err(e)) => (0, 0, 0, e),
                None => (0, 0, 0, format!("statvfs did not answer within {} s", STATVFS_BUDGET.as_secs())),
            };
            pb::Mount {
                source: shown(&e.source),
                target: shown(&e.target.to_string_lossy()),
                filesystem: shown(&e.filesystem),
                options: shown(&e.options),
                size_bytes: size,
                used_bytes: used,
                available_bytes: avail,
                mount_id: e.mount_id,
                parent_id: e.parent_id,
                stat_error: err,
            }
        })
        .collect();
    Ok((mounts, truncated))
}

/// The partition table a device starts with: GPT (the "EFI PART" header
/// in LBA 1, 512-byte sectors) or an MBR ("dos": the 0x55AA signature with
/// at least one partition entry whose boot flag is 0x00 or 0x80 and whose
/// type is set). `head` is the device's first 1024 bytes. A FAT boot
/// sector also ends in 0x55AA: the caller asks the filesystem probe first.
pub fn partition_table(head: &[u8]) -> Option<&'static str> {
    if head.get(512..520) == Some(b"EFI PART") {
        return Some("gpt");
    }
    if head.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    let entries = head.get(446..510)?;
    let mut any = false;
    for entry in entries.chunks(16) {
        let (flag, kind) = (entry[0], entry[4]);
        if flag != 0 && flag != 0x80 {
            return None;
        }
        if kind == 0xEE {
            // A protective MBR without a readable GPT header.
            return Some("gpt");
        }
        any |= kind != 0;
    }
    any.then_some("dos")
}

/// What the first bytes of a device say: partition table, filesystem and label.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskProbe {
    pub partition_table: Option<&'static str>,
    pub filesystem: Option<String>,
    pub label: Option<String>,
}

/// Probes `file`: the boot sector, the ext superblock (offset 1024) and the
/// iso9660 descriptor (offset 32768), through the volumes' and the state
/// disk's probes. At most 36 KiB are read.
fn probe_device(file: &File) -> io::Result<DiskProbe> {
    let mut head = [0u8; 2048];
    let head_len = volumes_kernel::read_at_most(file, &mut head, 0)?;
    let head = &head[..head_len];
    let mut pvd = [0u8; 2048];
    let pvd_len = volumes_kernel::read_at_most(file, &mut pvd, 16 * 2048)?;
    let boot = &head[..head.len().min(512)];
    if let Some(p) = volumes_kernel::probe(boot, &pvd[..pvd_len]) {
        return Ok(DiskProbe { partition_table: None, filesystem: Some(p.fs_type.to_string()), label: p.label });
    }
    if let Some(label) = head.get(1024..2048).and_then(crate::init::mounts::ext4_label) {
        let label = Some(label).filter(|l| !l.is_empty());
        return Ok(DiskProbe { partition_table: None, filesystem: Some("ext4".into()), label });
    }
    Ok(DiskProbe { partition_table: partition_table(head), ..DiskProbe::default() })
}

/// A sysfs attribute, trimmed and escaped; empty when absent.
fn attr(dir: &Path, name: &str) -> String {
    volumes_kernel::read_attr(&dir.join(name)).map(|t| shown(t.trim())).unwrap_or_default()
}

/// Every block device of `<sys>/class/block` (the volumes' scan: sorted,
/// at most [`volumes_kernel::MAX_DEVICES`]), with its sysfs attributes and,
/// where its node under `dev` can be read, what its first bytes say.
/// Empty devices (size 0) and CD drives without a disc are listed but not
/// read.
pub fn disks(sys: &Path, dev: &Path) -> Vec<pb::Disk> {
    let scan = KernelVolumes::pid1(sys, dev);
    scan.device_names()
        .into_iter()
        .map(|name| {
            let sys_dev = sys.join("class/block").join(&name);
            let sectors: u64 = attr(&sys_dev, "size").parse().unwrap_or(0);
            let partition = sys_dev.join("partition").exists();
            // A partition's sysfs directory sits inside its disk's.
            let parent = if partition {
                std::fs::canonicalize(&sys_dev)
                    .ok()
                    .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| shown(&n.to_string_lossy())))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let (model, serial) = if partition {
                (String::new(), String::new())
            } else {
                let serial = [attr(&sys_dev, "serial"), attr(&sys_dev, "device/serial"), attr(&sys_dev, "device/wwid")]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or_default();
                (attr(&sys_dev, "device/model"), serial)
            };
            let node = dev.join(volumes_kernel::node_name(&sys_dev).unwrap_or_else(|| name.clone()));
            let mut disk = pb::Disk {
                name: shown(&name),
                parent,
                size_bytes: sectors.saturating_mul(512),
                model,
                serial,
                read_only: attr(&sys_dev, "ro") == "1",
                removable: attr(&sys_dev, "removable") == "1",
                dev_path: shown(&node.to_string_lossy()),
                ..Default::default()
            };
            if sectors == 0 {
                return disk;
            }
            let probed = volumes_kernel::open_device(&node).and_then(|file| {
                if volumes_kernel::is_cd_drive(&sys_dev) && !volumes_kernel::cd_has_medium(&file) {
                    return Ok(DiskProbe::default());
                }
                probe_device(&file)
            });
            match probed {
                Ok(p) => {
                    disk.partition_table = p.partition_table.unwrap_or_default().into();
                    disk.filesystem = p.filesystem.unwrap_or_default();
                    disk.label = p.label.map(|l| shown(&l)).unwrap_or_default();
                }
                Err(e) => disk.error = format!("{}: {e}", disk.dev_path),
            }
            disk
        })
        .collect()
}

/// Why a `usage` request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("path: expected an absolute path without \"..\", got {0:?}")]
    NotAbsolute(String),
    #[error("path {path:?} is not under an allowed root ({roots})")]
    NotAllowed { path: String, roots: String },
    #[error("path {path:?}: {error}")]
    Io { path: String, error: String },
}

/// Totals of one directory subtree.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    allocated: u64,
    apparent: u64,
    files: u64,
    dirs: u64,
}

struct Walk {
    device: u64,
    report_depth: u32,
    entries: u64,
    deadline: Instant,
    stopped: Option<String>,
    notes: Vec<String>,
    reported: Vec<pb::UsageEntry>,
}

impl Walk {
    /// Walks `dir` (already known to be a directory on `self.device`),
    /// pushing a report entry for it when `depth` is within the report
    /// depth; returns its totals.
    fn dir(&mut self, dir: &Path, depth: usize) -> Totals {
        let slot = (depth as u32 <= self.report_depth && self.reported.len() < USAGE_MAX_REPORTED).then(|| {
            self.reported.push(pb::UsageEntry {
                path: shown(&dir.to_string_lossy()),
                depth: depth as u32,
                ..Default::default()
            });
            self.reported.len() - 1
        });
        let mut t = Totals { dirs: 0, ..Totals::default() };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                if self.notes.len() < 32 {
                    self.notes.push(format!("{}: {e}", shown(&dir.to_string_lossy())));
                }
                return t;
            }
        };
        for entry in entries {
            if self.stopped.is_some() {
                break;
            }
            self.entries += 1;
            if self.entries > USAGE_MAX_ENTRIES {
                self.stopped = Some(format!("stopped after {USAGE_MAX_ENTRIES} entries"));
                break;
            }
            if self.entries.is_multiple_of(1024) && Instant::now() > self.deadline {
                self.stopped = Some(format!("stopped after {} s", USAGE_BUDGET.as_secs()));
                break;
            }
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            // symlink_metadata: a symlink counts as itself, never its target.
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            t.allocated += meta.blocks() * 512;
            t.apparent += meta.len();
            if meta.is_dir() {
                t.dirs += 1;
                if meta.dev() != self.device {
                    // Another filesystem mounted here: not entered.
                    continue;
                }
                if depth + 1 >= USAGE_MAX_WALK_DEPTH {
                    if self.notes.len() < 32 {
                        self.notes.push(format!(
                            "{}: deeper than {USAGE_MAX_WALK_DEPTH} levels, not entered",
                            shown(&path.to_string_lossy())
                        ));
                    }
                    continue;
                }
                let sub = self.dir(&path, depth + 1);
                t.allocated += sub.allocated;
                t.apparent += sub.apparent;
                t.files += sub.files;
                t.dirs += sub.dirs;
            } else {
                t.files += 1;
            }
        }
        if let Some(i) = slot {
            let e = &mut self.reported[i];
            e.size_bytes = t.allocated;
            e.apparent_bytes = t.apparent;
            e.files = t.files;
            e.directories = t.dirs;
        }
        t
    }
}

/// Directory sizes under `path`, which must resolve (symlinks in the
/// request resolved first) to one of `roots` or below it. Directories down
/// to `max_depth` (0 means 1, at most [`USAGE_MAX_REPORT_DEPTH`]) are
/// reported with the totals of their whole subtree, on the filesystem of
/// `path` only.
pub fn usage(path: &str, max_depth: u32, roots: &[PathBuf]) -> Result<pb::UsageResponse, UsageError> {
    let requested = Path::new(path);
    if !requested.is_absolute() || requested.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(UsageError::NotAbsolute(shown(path)));
    }
    let real =
        std::fs::canonicalize(requested).map_err(|e| UsageError::Io { path: shown(path), error: e.to_string() })?;
    let allowed: Vec<PathBuf> = roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).collect();
    if !allowed.iter().any(|r| real.starts_with(r)) {
        let roots = roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(UsageError::NotAllowed { path: shown(path), roots });
    }
    let meta =
        std::fs::symlink_metadata(&real).map_err(|e| UsageError::Io { path: shown(path), error: e.to_string() })?;
    if !meta.is_dir() {
        return Err(UsageError::Io { path: shown(path), error: "not a directory".into() });
    }
    let mut walk = Walk {
        device: meta.dev(),
        report_depth: max_depth.clamp(1, USAGE_MAX_REPORT_DEPTH),
        entries: 0,
        deadline: Instant::now() + USAGE_BUDGET,
        stopped: None,
        notes: Vec::new(),
        reported: Vec::new(),
    };
    walk.dir(&real, 0);
    let truncated = walk.stopped.is_some();
    let mut notes = walk.notes;
    if let Some(why) = walk.stopped {
        notes.insert(0, format!("{why}: figures are lower bounds"));
    }
    Ok(pb::UsageResponse { entries: walk.reported, truncated, notes })
}

impl StorageApi {
    /// The roots `usage` may walk: the state dir and [`USAGE_ROOTS`].
    pub fn usage_roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.node.config.state_dir().to_path_buf()];
        roots.extend(USAGE_ROOTS.iter().map(PathBuf::from));
        roots
    }
}

#[tonic::async_trait]
impl StorageService for StorageApi {
    async fn mounts(&self, _req: Request<pb::MountsRequest>) -> Result<Response<pb::MountsResponse>, Status> {
        let (mounts, truncated) = mounts(&self.node.paths.proc).await.map_err(Status::unavailable)?;
        Ok(Response::new(pb::MountsResponse { mounts, truncated }))
    }

    async fn disks(&self, _req: Request<pb::DisksRequest>) -> Result<Response<pb::DisksResponse>, Status> {
        let (sys, dev) = (self.node.paths.sys.clone(), self.node.paths.dev.clone());
        let disks = tokio::task::spawn_blocking(move || disks(&sys, &dev))
            .await
            .map_err(|e| Status::internal(format!("disk scan: {e}")))?;
        Ok(Response::new(pb::DisksResponse { disks }))
    }

    async fn usage(&self, req: Request<pb::UsageRequest>) -> Result<Response<pb::UsageResponse>, Status> {
        let req = req.into_inner();
        let roots = self.usage_roots();
        let answer = tokio::task::spawn_blocking(move || usage(&req.path, req.max_depth, &roots))
            .await
            .map_err(|e| Status::internal(format!("usage walk: {e}")))?;
        match answer {
            Ok(r) => Ok(Response::new(r)),
            Err(e @ (UsageError::NotAbsolute(_) | UsageError::NotAllowed { .. })) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => Err(Status::not_found(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_with_escapes_and_optional_fields() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n\
                    30 22 0:5 / /mnt/a\\040b rw,nosuid master:2 shared:3 - tmpfs my\\011src rw,size=10k\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, Path::new("/"));
        assert_eq!((m[0].source.as_str(), m[0].filesystem.as_str()), ("/dev/sda1", "ext4"));
        assert_eq!(m[0].options, "rw,relatime,errors=remount-ro");
        assert_eq!(m[1].target, Path::new("/mnt/a b"));
        assert_eq!(m[1].source, "my\tsrc");
        assert_eq!((m[1].mount_id, m[1].parent_id), (30, 22));
        assert_eq!(shown(&m[1].source), "my\\tsrc");
    }

    #[test]
    fn partition_tables() {
        let mut mbr = vec![0u8; 1024];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(partition_table(&mbr), None, "a signature without entries");
        mbr[446 + 4] = 0x83;
        assert_eq!(partition_table(&mbr), Some("dos"));
        mbr[446 + 4] = 0xEE;
        assert_eq!(partition_table(&mbr), Some("gpt"));
        mbr[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&mbr), Some("gpt"));
        assert_eq!(partition_table(&[0u8; 100]), None);
        let mut bad = vec![0u8; 512];
        bad[510] = 0x55;
        bad[511] = 0xAA;
        bad[446] = 0x12;
        bad[446 + 4] = 0x83;
        assert_eq!(partition_table(&bad), None, "a boot flag that is neither 0 nor 0x80");
    }

    #[test]
    fn disks_from_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        let disk = sys.join("devices/virtual/block/vdz");
        std::fs::create_dir_all(disk.join("vdz1")).unwrap();
        std::fs::create_dir_all(disk.join("device")).unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::os::unix::fs::symlink(&disk, sys.join("class/block/vdz")).unwrap();
        std::os::unix::fs::symlink(disk.join("vdz1"), sys.join("class/block/vdz1")).unwrap();
        std::fs::write(disk.join("size"), "16\n").unwrap();
        std::fs::write(disk.join("serial"), "SER\x1b1\n").unwrap();
        std::fs::write(disk.join("device/model"), "Fake Disk\n").unwrap();
        std::fs::write(disk.join("ro"), "0\n").unwrap();
        std::fs::write(disk.join("vdz1/size"), "8\n").unwrap();
        std::fs::write(disk.join("vdz1/partition"), "1\n").unwrap();
        let mut image = vec![0u8; 8192];
        image[446 + 4] = 0x83;
        image[510] = 0x55;
        image[511] = 0xAA;
        std::fs::write(dev.join("vdz"), &image).unwrap();
        let mut part = vec![0u8; 4096];
        part[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        part[1024 + 120..1024 + 125].copy_from_slice(b"STATE");
        std::fs::write(dev.join("vdz1"), &part).unwrap();
        let d = disks(&sys, &dev);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].name.as_str(), d[0].size_bytes, d[0].partition_table.as_str()), ("vdz", 8192, "dos"));
        assert_eq!((d[0].model.as_str(), d[0].serial.as_str()), ("Fake Disk", "SER\\x1b1"));
        assert_eq!((d[1].name.as_str(), d[1].parent.as_str()), ("vdz1", "vdz"));
        assert_eq!((d[1].filesystem.as_str(), d[1].label.as_str()), ("ext4", "STATE"));
        std::fs::remove_file(dev.join("vdz1")).unwrap();
        let d = disks(&sys, &dev);
        assert!(d[1].error.contains("vdz1"), "{:?}", d[1]);
    }

    #[test]
    fn usage_stays_under_its_roots_and_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 10_000]).unwrap();
        std::fs::write(root.join("top"), b"x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = vec![root.clone()];
        let r = usage(root.to_str().unwrap(), 2, &roots).unwrap();
        let paths: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
        let real = std::fs::canonicalize(&root).unwrap();
        assert_eq!(paths[0], real.to_str().unwrap());
        assert!(paths.iter().any(|p| p.ends_with("/a/b")), "{paths:?}");
        assert!(r.entries[0].apparent_bytes < 1 << 20, "the symlink was followed: {:?}", r.entries[0]);
        assert!(r.entries[0].apparent_bytes >= 10_001);
        assert_eq!(r.entries[0].files, 3, "f, top and the link itself");
        assert!(!r.truncated);
        for bad in ["relative", "/etc", &format!("{}/../outside", root.display()), &format!("{}/link", root.display())]
        {
            assert!(usage(bad, 1, &roots).is_err(), "{bad} allowed");
        }
    }
}
